// Package pac verifies the Privilege Attribute Certificate an Active
// Directory KDC puts in service tickets (MS-PAC) and returns the SIDs the
// authorizer decides on.
//
// The Kerberos acceptor calls Verify with the PAC from the decrypted
// ticket's authorization data (FromAuthorizationData finds it inside
// AD-IF-RELEVANT), the service key the ticket was decrypted with, and the
// ticket's client name and authtime. Verify:
//
//  1. parses the PACTYPE container itself, within fixed limits (every
//     buffer inside the PAC, offsets 8-aligned, at most MaxBuffers, the
//     whole PAC at most MaxPACBytes);
//  2. checks the server signature (MS-PAC 2.8.1): the keyed checksum with
//     key usage 17 over the PAC with the server and KDC signature values
//     zeroed, of the checksum type that belongs to the service key's
//     enctype (no unkeyed or weaker checksum is accepted);
//  3. only then decodes the NDR logon information (KERB_VALIDATION_INFO,
//     with gokrb5's decoder under a recover: after step 2 its input was
//     made by the KDC), and checks PAC_CLIENT_INFO against the ticket
//     (name and authtime, MS-PAC 2.7), so a PAC cannot be moved to
//     another client's ticket.
//
// A PAC whose signature does not verify is refused with ErrSignature; the
// caller must then refuse the logon (the ticket may carry forged groups).
//
// The server signature proves the PAC came from someone holding the
// service key: the KDC, or the service itself. The KDC signature (krbtgt
// key) cannot be checked here; a Windows server would ask its DC to
// (MS-APDS 3.2.5.2) only for tickets not issued by its own domain.
package pac

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/adtype"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	gokrbpac "github.com/jcmturner/gokrb5/v8/pac"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
)

// Limits. A PAC for a user in ~1,000 groups is ~10 KiB; Windows' default
// MaxTokenSize is 48 KiB for the whole token.
const (
	MaxPACBytes  = 256 << 10
	MaxBuffers   = 64
	MaxSIDs      = 4096 // group, extra and resource SIDs together
	maxADEntries = 64
	maxADDepth   = 4
)

// Buffer types (MS-PAC 2.4).
const (
	typeLogonInfo       = 1
	typeServerSignature = 6
	typeKDCSignature    = 7
	typeClientInfo      = 10
)

// Errors Verify wraps.
var (
	ErrMalformed = errors.New("malformed PAC")
	ErrSignature = errors.New("PAC server signature invalid")
	ErrMismatch  = errors.New("PAC does not belong to this ticket")
	ErrNoPAC     = errors.New("ticket carries no PAC")
)

// Info is what a verified PAC says about the user. All fields are empty
// for a PAC without logon information (an MIT KDC's).
type Info struct {
	UserName       string // the PAC's EffectiveName (sAMAccountName)
	LogonDomain    string // NetBIOS domain name
	LogonDomainSID string // S-1-5-21-…
	UserSID        string
	// GroupSIDs: the primary group, the global groups (GroupIds), the
	// extra SIDs (universal groups, other domains, well-known SIDs such as
	// S-1-18-1) and the resource groups, without duplicates, in that order.
	GroupSIDs []string
}

// SIDs is the user SID followed by GroupSIDs.
func (i *Info) SIDs() []string { return append([]string{i.UserSID}, i.GroupSIDs...) }

type buffer struct {
	typ       uint32
	off, size int
	sigOff    int // for signature buffers: where the signature value starts
	sigLen    int
	sigType   int32
}

// Verify checks the PAC and returns its Info; see the package comment.
// client is the ticket's client name ("alice" or "alice@REALM"; only the
// part before @ is compared), authTime the ticket's authtime.
func Verify(raw []byte, key types.EncryptionKey, client string, authTime time.Time) (*Info, error) {
	bufs, err := parse(raw)
	if err != nil {
		return nil, err
	}
	var server, kdc, logon, cinfo *buffer
	for i := range bufs {
		b := &bufs[i]
		// The first buffer of each type counts (MS-PAC 2.4: duplicates are
		// ignored), as Windows does.
		switch b.typ {
		case typeServerSignature:
			if server == nil {
				server = b
			}
		case typeKDCSignature:
			if kdc == nil {
				kdc = b
			}
		case typeLogonInfo:
			if logon == nil {
				logon = b
			}
		case typeClientInfo:
			if cinfo == nil {
				cinfo = b
			}
		}
	}
	switch {
	case server == nil:
		return nil, fmt.Errorf("%w: no server signature", ErrMalformed)
	case kdc == nil:
		return nil, fmt.Errorf("%w: no KDC signature", ErrMalformed)
	case cinfo == nil:
		return nil, fmt.Errorf("%w: no client information", ErrMalformed)
	}
	for _, s := range []*buffer{server, kdc} {
		if err := signature(raw, s); err != nil {
			return nil, err
		}
	}
	// Step 2: the server signature.
	et, err := crypto.GetChksumEtype(server.sigType)
	if err != nil {
		return nil, fmt.Errorf("%w: server signature type %d: %v", ErrSignature, server.sigType, err)
	}
	if et.GetETypeID() != key.KeyType {
		return nil, fmt.Errorf("%w: server signature type %d does not belong to the service key's enctype %d", ErrSignature, server.sigType, key.KeyType)
	}
	if server.sigLen != et.GetHMACBitLength()/8 {
		return nil, fmt.Errorf("%w: server signature of %d bytes for type %d", ErrSignature, server.sigLen, server.sigType)
	}
	zeroed := bytes.Clone(raw)
	clear(zeroed[server.sigOff : server.sigOff+server.sigLen])
	clear(zeroed[kdc.sigOff : kdc.sigOff+kdc.sigLen])
	sig := raw[server.sigOff : server.sigOff+server.sigLen]
	if !et.VerifyChecksum(key.KeyValue, zeroed, sig, keyusage.KERB_NON_KERB_CKSUM_SALT) {
		return nil, ErrSignature
	}
	// Step 3: the contents, now known to come from the KDC.
	if err := checkClientInfo(raw[cinfo.off:cinfo.off+cinfo.size], client, authTime); err != nil {
		return nil, err
	}
	if logon == nil {
		// MIT krb5 KDCs (1.20+) sign a PAC without logon information: it
		// proves nothing about groups.
		return &Info{}, nil
	}
	return logonInfo(raw[logon.off : logon.off+logon.size])
}

// parse reads the PACTYPE header and checks every buffer lies inside raw.
func parse(raw []byte) ([]buffer, error) {
	if len(raw) > MaxPACBytes {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrMalformed, len(raw), MaxPACBytes)
	}
	if len(raw) < 8 {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(raw))
	}
	n := binary.LittleEndian.Uint32(raw)
	if v := binary.LittleEndian.Uint32(raw[4:]); v != 0 {
		return nil, fmt.Errorf("%w: version %d", ErrMalformed, v)
	}
	if n == 0 || n > MaxBuffers {
		return nil, fmt.Errorf("%w: %d buffers (limit %d)", ErrMalformed, n, MaxBuffers)
	}
	hdr := 8 + 16*int(n)
	if len(raw) < hdr {
		return nil, fmt.Errorf("%w: %d buffers in %d bytes", ErrMalformed, n, len(raw))
	}
	bufs := make([]buffer, n)
	for i := range bufs {
		e := raw[8+16*i:]
		typ := binary.LittleEndian.Uint32(e)
		size := uint64(binary.LittleEndian.Uint32(e[4:]))
		off := binary.LittleEndian.Uint64(e[8:])
		if off%8 != 0 || off < uint64(hdr) || off > uint64(len(raw)) || size > uint64(len(raw))-off {
			return nil, fmt.Errorf("%w: buffer %d (type %d) at %d+%d outside the %d-byte PAC", ErrMalformed, i, typ, off, size, len(raw))
		}
		bufs[i] = buffer{typ: typ, off: int(off), size: int(size)}
	}
	return bufs, nil
}

// signature locates a PAC_SIGNATURE_DATA's value: u32 type, then the
// checksum, of the length the type implies, then an optional RODC id.
func signature(raw []byte, b *buffer) error {
	if b.size < 4 {
		return fmt.Errorf("%w: signature buffer of %d bytes", ErrMalformed, b.size)
	}
	b.sigType = int32(binary.LittleEndian.Uint32(raw[b.off:]))
	var n int
	switch b.sigType {
	case 15, 16: // HMAC_SHA1_96_AES128, HMAC_SHA1_96_AES256
		n = 12
	case 19: // HMAC_SHA256_128_AES128 (RFC 8009)
		n = 16
	case 20: // HMAC_SHA384_192_AES256
		n = 24
	case -138: // KERB_CHECKSUM_HMAC_MD5
		n = 16
	default:
		return fmt.Errorf("%w: signature type %d", ErrSignature, b.sigType)
	}
	if b.size < 4+n {
		return fmt.Errorf("%w: signature buffer of %d bytes for type %d", ErrMalformed, b.size, b.sigType)
	}
	b.sigOff, b.sigLen = b.off+4, n
	return nil
}

// checkClientInfo: PAC_CLIENT_INFO is FILETIME ClientId (the authtime),
// u16 NameLength (bytes), UTF-16LE Name.
func checkClientInfo(b []byte, client string, authTime time.Time) error {
	if len(b) < 10 {
		return fmt.Errorf("%w: client info of %d bytes", ErrMalformed, len(b))
	}
	ft := binary.LittleEndian.Uint64(b)
	nl := int(binary.LittleEndian.Uint16(b[8:]))
	if nl%2 != 0 || 10+nl > len(b) {
		return fmt.Errorf("%w: client name of %d bytes in a %d-byte buffer", ErrMalformed, nl, len(b))
	}
	u := make([]uint16, nl/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[10+2*i:])
	}
	name := string(utf16.Decode(u))
	// FILETIME: 100 ns since 1601-01-01.
	const epochDelta = 116444736000000000
	if !authTime.IsZero() {
		if ft < epochDelta || (int64(ft)-epochDelta)/1e7 != authTime.Unix() {
			return fmt.Errorf("%w: client info time %d is not the ticket's authtime %v", ErrMismatch, ft, authTime.UTC())
		}
	}
	want := client
	if i := strings.IndexByte(want, '@'); i >= 0 {
		want = want[:i]
	}
	got := name
	if i := strings.IndexByte(got, '@'); i >= 0 {
		got = got[:i]
	}
	if !strings.EqualFold(got, want) {
		return fmt.Errorf("%w: client info names %q, the ticket %q", ErrMismatch, name, client)
	}
	return nil
}

func logonInfo(b []byte) (info *Info, err error) {
	defer func() {
		if r := recover(); r != nil {
			info, err = nil, fmt.Errorf("%w: logon information: %v", ErrMalformed, r)
		}
	}()
	var k gokrbpac.KerbValidationInfo
	if err := k.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	dom := k.LogonDomainID.String()
	if !strings.HasPrefix(dom, "S-1-") {
		return nil, fmt.Errorf("%w: logon domain SID %q", ErrMalformed, dom)
	}
	if len(k.GroupIDs)+len(k.ExtraSIDs)+len(k.ResourceGroupIDs) > MaxSIDs {
		return nil, fmt.Errorf("%w: more than %d SIDs", ErrMalformed, MaxSIDs)
	}
	info = &Info{
		UserName:       k.EffectiveName.Value,
		LogonDomain:    k.LogonDomainName.Value,
		LogonDomainSID: dom,
		UserSID:        fmt.Sprintf("%s-%d", dom, k.UserID),
	}
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			info.GroupSIDs = append(info.GroupSIDs, s)
		}
	}
	add(fmt.Sprintf("%s-%d", dom, k.PrimaryGroupID))
	for _, g := range k.GroupIDs {
		add(fmt.Sprintf("%s-%d", dom, g.RelativeID))
	}
	for _, s := range k.ExtraSIDs {
		add(s.SID.String())
	}
	if len(k.ResourceGroupIDs) > 0 {
		rdom := k.ResourceGroupDomainSID.String()
		for _, g := range k.ResourceGroupIDs {
			add(fmt.Sprintf("%s-%d", rdom, g.RelativeID))
		}
	}
	return info, nil
}

// FromAuthorizationData returns the PAC (AD-WIN2K-PAC) inside the ticket's
// authorization data (where the KDC puts it: inside AD-IF-RELEVANT), or
// ErrNoPAC. More than one PAC is refused.
func FromAuthorizationData(ad types.AuthorizationData) ([]byte, error) {
	var found [][]byte
	if err := walkAD(ad, 0, &found); err != nil {
		return nil, err
	}
	switch len(found) {
	case 0:
		return nil, ErrNoPAC
	case 1:
		return found[0], nil
	default:
		return nil, fmt.Errorf("%w: %d PACs in one ticket", ErrMalformed, len(found))
	}
}

func walkAD(ad types.AuthorizationData, depth int, found *[][]byte) error {
	if depth > maxADDepth || len(ad) > maxADEntries {
		return fmt.Errorf("%w: authorization data nested %d deep with %d entries", ErrMalformed, depth, len(ad))
	}
	for _, e := range ad {
		switch e.ADType {
		case adtype.ADWin2KPAC:
			if depth == 0 {
				// A PAC outside AD-IF-RELEVANT is not where a KDC puts it.
				return fmt.Errorf("%w: PAC outside AD-IF-RELEVANT", ErrMalformed)
			}
			*found = append(*found, e.ADData)
		case adtype.ADIfRelevant:
			var inner types.AuthorizationData
			if err := inner.Unmarshal(e.ADData); err != nil {
				return fmt.Errorf("%w: AD-IF-RELEVANT: %v", ErrMalformed, err)
			}
			if err := walkAD(inner, depth+1, found); err != nil {
				return err
			}
		}
	}
	return nil
}

// Principal is the verified identity in the form the authorizer matches
// (authn.Principal.SIDs); nil for a PAC without logon information.
func (i *Info) Principal() *authn.SIDs {
	if i.UserSID == "" {
		return nil
	}
	return &authn.SIDs{User: i.UserSID, Domain: i.LogonDomainSID, Groups: slices.Clone(i.GroupSIDs)}
}
