package credssp

// The CredSSP messages (MS-CSSP 2.2.1), DER inside the TLS channel:
//
//	TSRequest ::= SEQUENCE {
//	    version     [0] INTEGER,                       -- 2..6 here
//	    negoTokens  [1] NegoData        OPTIONAL,
//	    authInfo    [2] OCTET STRING    OPTIONAL,      -- Wrap(TSCredentials)
//	    pubKeyAuth  [3] OCTET STRING    OPTIONAL,      -- Wrap(binding value)
//	    errorCode   [4] INTEGER         OPTIONAL,      -- NTSTATUS, v3+
//	    clientNonce [5] OCTET STRING    OPTIONAL       -- 32 bytes, v5+
//	}
//	NegoData ::= SEQUENCE OF SEQUENCE { negoToken [0] OCTET STRING }
//
//	TSCredentials ::= SEQUENCE {
//	    credType    [0] INTEGER,                       -- 1: password
//	    credentials [1] OCTET STRING                   -- DER TSPasswordCreds
//	}
//	TSPasswordCreds ::= SEQUENCE {
//	    domainName  [0] OCTET STRING,                  -- UTF-16LE
//	    userName    [1] OCTET STRING,                  -- UTF-16LE
//	    password    [2] OCTET STRING                   -- UTF-16LE
//	}
//
// The decoder is strict and bounded: definite minimal lengths, context tags
// in increasing order and each at most once, no trailing bytes anywhere,
// INTEGERs minimal and at most 4 octets, every field within the limits
// below. Anything else is ErrMalformed. (Smart-card credentials, credType 2,
// and remote-guard credentials, 6, are refused: only passwords delegate.)

import (
	"fmt"
	"unicode/utf16"

	"github.com/winrmd/winrmd/authn"
)

// Limits of the decoder.
const (
	// MaxMessage bounds one TSRequest (an NTLM AUTHENTICATE with its AV
	// pairs is ~1 KiB; a Kerberos AP-REQ with a PAC can reach ~12 KiB).
	MaxMessage = 48 << 10
	// MaxNegoTokens bounds NegoData's SEQUENCE OF (clients send one).
	MaxNegoTokens = 1
	// NonceSize is clientNonce's only legal size.
	NonceSize = 32
	// MaxNameBytes bounds domainName and userName (UTF-16LE bytes).
	MaxNameBytes = 512
	// MaxPasswordBytes bounds password (UTF-16LE bytes): 256 characters,
	// Windows' own limit.
	MaxPasswordBytes = 512
)

// Versions this acceptor speaks.
const (
	MinVersion = 2
	MaxVersion = 6
)

// DER identifiers.
const (
	tagInteger     = 0x02
	tagOctetString = 0x04
	tagSequence    = 0x30
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("credssp: "+format+": %w", append(args, authn.ErrMalformed)...)
}

// TSRequest is one decoded TSRequest. Absent optional fields are nil.
type TSRequest struct {
	Version     int
	NegoToken   []byte // the first (only) negoToken, nil when absent
	AuthInfo    []byte
	PubKeyAuth  []byte
	ErrorCode   *uint32
	ClientNonce []byte
}

// ParseTSRequest decodes b strictly.
func ParseTSRequest(b []byte) (*TSRequest, error) {
	if len(b) > MaxMessage {
		return nil, malformed("TSRequest of %d bytes (limit %d)", len(b), MaxMessage)
	}
	seq, err := readOnly(b, tagSequence, "TSRequest")
	if err != nil {
		return nil, err
	}
	f, err := readFields(seq.content, 5, "TSRequest")
	if err != nil {
		return nil, err
	}
	if f[0] == nil {
		return nil, malformed("TSRequest without version")
	}
	r := &TSRequest{}
	v, err := readInt(f[0], "TSRequest.version")
	if err != nil {
		return nil, err
	}
	if v < 1 || v > 255 {
		return nil, malformed("TSRequest.version %d", v)
	}
	r.Version = int(v)
	if f[1] != nil {
		nd, err := readOnly(f[1], tagSequence, "negoTokens")
		if err != nil {
			return nil, err
		}
		rest := nd.content
		n := 0
		for len(rest) > 0 {
			var item tlv
			item, rest, err = readTLV(rest)
			if err != nil {
				return nil, err
			}
			if item.tag != tagSequence {
				return nil, malformed("NegoData item: tag %#x", item.tag)
			}
			if n++; n > MaxNegoTokens {
				return nil, malformed("NegoData with more than %d tokens", MaxNegoTokens)
			}
			nf, err := readFields(item.content, 0, "NegoData item")
			if err != nil {
				return nil, err
			}
			if nf[0] == nil {
				return nil, malformed("NegoData item without negoToken")
			}
			tok, err := readOnly(nf[0], tagOctetString, "negoToken")
			if err != nil {
				return nil, err
			}
			r.NegoToken = tok.content
		}
		if n == 0 {
			return nil, malformed("empty NegoData")
		}
	}
	octets := []struct {
		i    int
		dst  *[]byte
		name string
	}{{2, &r.AuthInfo, "authInfo"}, {3, &r.PubKeyAuth, "pubKeyAuth"}, {5, &r.ClientNonce, "clientNonce"}}
	for _, o := range octets {
		if f[o.i] == nil {
			continue
		}
		v, err := readOnly(f[o.i], tagOctetString, o.name)
		if err != nil {
			return nil, err
		}
		*o.dst = v.content
	}
	if r.ClientNonce != nil && len(r.ClientNonce) != NonceSize {
		return nil, malformed("clientNonce of %d bytes, want %d", len(r.ClientNonce), NonceSize)
	}
	if f[4] != nil {
		c, err := readInt(f[4], "errorCode")
		if err != nil {
			return nil, err
		}
		u := uint32(c)
		r.ErrorCode = &u
	}
	return r, nil
}

// Marshal encodes r (fields in order, absent ones omitted).
func (r *TSRequest) Marshal() []byte {
	var parts [][]byte
	parts = append(parts, wrap(ctx(0), marshalInt(int64(r.Version))))
	if r.NegoToken != nil {
		parts = append(parts, wrap(ctx(1), wrap(tagSequence, wrap(tagSequence, wrap(ctx(0), wrap(tagOctetString, r.NegoToken))))))
	}
	if r.AuthInfo != nil {
		parts = append(parts, wrap(ctx(2), wrap(tagOctetString, r.AuthInfo)))
	}
	if r.PubKeyAuth != nil {
		parts = append(parts, wrap(ctx(3), wrap(tagOctetString, r.PubKeyAuth)))
	}
	if r.ErrorCode != nil {
		parts = append(parts, wrap(ctx(4), marshalInt(int64(int32(*r.ErrorCode)))))
	}
	if r.ClientNonce != nil {
		parts = append(parts, wrap(ctx(5), wrap(tagOctetString, r.ClientNonce)))
	}
	return wrap(tagSequence, parts...)
}

// PasswordCreds is a decoded TSPasswordCreds. Password holds the UTF-16LE
// bytes as received; Zero overwrites them.
type PasswordCreds struct {
	Domain   string
	User     string
	Password []byte // UTF-16LE
}

// Zero overwrites the password bytes.
func (p *PasswordCreds) Zero() {
	clear(p.Password)
	p.Password = nil
}

// CredTypePassword is TSCredentials.credType for TSPasswordCreds.
const CredTypePassword = 1

// ParseTSCredentials decodes a TSCredentials carrying TSPasswordCreds. The
// returned Password aliases b: the caller zeroes b (or calls Zero) after use.
func ParseTSCredentials(b []byte) (*PasswordCreds, error) {
	if len(b) > MaxMessage {
		return nil, malformed("TSCredentials of %d bytes", len(b))
	}
	seq, err := readOnly(b, tagSequence, "TSCredentials")
	if err != nil {
		return nil, err
	}
	f, err := readFields(seq.content, 1, "TSCredentials")
	if err != nil {
		return nil, err
	}
	if f[0] == nil || f[1] == nil {
		return nil, malformed("TSCredentials without credType or credentials")
	}
	ct, err := readInt(f[0], "credType")
	if err != nil {
		return nil, err
	}
	if ct != CredTypePassword {
		return nil, fmt.Errorf("credssp: credType %d (only passwords, 1, are accepted): %w", ct, authn.ErrUnsupported)
	}
	inner, err := readOnly(f[1], tagOctetString, "credentials")
	if err != nil {
		return nil, err
	}
	pseq, err := readOnly(inner.content, tagSequence, "TSPasswordCreds")
	if err != nil {
		return nil, err
	}
	pf, err := readFields(pseq.content, 2, "TSPasswordCreds")
	if err != nil {
		return nil, err
	}
	var raw [3][]byte
	for i, name := range []string{"domainName", "userName", "password"} {
		if pf[i] == nil {
			return nil, malformed("TSPasswordCreds without %s", name)
		}
		v, err := readOnly(pf[i], tagOctetString, name)
		if err != nil {
			return nil, err
		}
		limit := MaxNameBytes
		if i == 2 {
			limit = MaxPasswordBytes
		}
		if len(v.content) > limit || len(v.content)%2 != 0 {
			return nil, malformed("%s of %d bytes (even, at most %d)", name, len(v.content), limit)
		}
		raw[i] = v.content
	}
	dom, err := utf16String(raw[0], "domainName")
	if err != nil {
		return nil, err
	}
	user, err := utf16String(raw[1], "userName")
	if err != nil {
		return nil, err
	}
	if user == "" {
		return nil, malformed("empty userName")
	}
	return &PasswordCreds{Domain: dom, User: user, Password: raw[2]}, nil
}

// MarshalTSCredentials encodes password credentials (tests and the fuzz
// round trip; the acceptor never sends credentials).
func MarshalTSCredentials(domain, user string, passwordUTF16 []byte) []byte {
	pc := wrap(tagSequence,
		wrap(ctx(0), wrap(tagOctetString, utf16LE(domain))),
		wrap(ctx(1), wrap(tagOctetString, utf16LE(user))),
		wrap(ctx(2), wrap(tagOctetString, passwordUTF16)))
	return wrap(tagSequence, wrap(ctx(0), marshalInt(CredTypePassword)), wrap(ctx(1), wrap(tagOctetString, pc)))
}

func utf16LE(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		b[2*i], b[2*i+1] = byte(c), byte(c>>8)
	}
	return b
}

// utf16String decodes UTF-16LE, refusing unpaired surrogates, NUL and
// other control characters (names reach NSS and logs).
func utf16String(b []byte, what string) (string, error) {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
	}
	rs := utf16.Decode(u)
	for _, r := range rs {
		if r == 0xfffd || r < 0x20 || r == 0x7f {
			return "", malformed("%s: invalid UTF-16 or control character", what)
		}
	}
	return string(rs), nil
}

// ---- DER primitives ---------------------------------------------------

func ctx(n int) byte { return 0xa0 | byte(n) }

type tlv struct {
	tag     byte
	content []byte
}

func readTLV(b []byte) (tlv, []byte, error) {
	if len(b) < 2 {
		return tlv{}, nil, malformed("DER element truncated")
	}
	tag := b[0]
	if tag&0x1f == 0x1f {
		return tlv{}, nil, malformed("DER high tag number form")
	}
	l := int(b[1])
	hdr := 2
	switch {
	case l < 0x80:
	case l == 0x80:
		return tlv{}, nil, malformed("DER indefinite length")
	default:
		n := l & 0x7f
		if n > 3 {
			return tlv{}, nil, malformed("DER length of %d octets", n)
		}
		if len(b) < 2+n {
			return tlv{}, nil, malformed("DER length truncated")
		}
		if b[2] == 0 {
			return tlv{}, nil, malformed("DER length not minimal")
		}
		l = 0
		for _, c := range b[2 : 2+n] {
			l = l<<8 | int(c)
		}
		if l < 0x80 {
			return tlv{}, nil, malformed("DER length not minimal")
		}
		hdr += n
	}
	if l > len(b)-hdr {
		return tlv{}, nil, malformed("DER length %d overruns %d bytes", l, len(b)-hdr)
	}
	end := hdr + l
	return tlv{tag: tag, content: b[hdr:end:end]}, b[end:], nil
}

func readOnly(b []byte, tag byte, what string) (tlv, error) {
	v, rest, err := readTLV(b)
	if err != nil {
		return tlv{}, err
	}
	if v.tag != tag {
		return tlv{}, malformed("%s: tag %#x, want %#x", what, v.tag, tag)
	}
	if len(rest) != 0 {
		return tlv{}, malformed("%s: %d trailing bytes", what, len(rest))
	}
	return v, nil
}

// readFields reads [0]..[max] context fields of a SEQUENCE body, each at
// most once and in increasing order; fields[i] is the field's content.
func readFields(b []byte, max int, what string) ([][]byte, error) {
	fields := make([][]byte, max+1)
	last := -1
	for len(b) > 0 {
		v, rest, err := readTLV(b)
		if err != nil {
			return nil, err
		}
		n := int(v.tag) - 0xa0
		if v.tag&0xe0 != 0xa0 || n > max {
			return nil, malformed("%s: unexpected element %#x", what, v.tag)
		}
		if n <= last {
			return nil, malformed("%s: element [%d] out of order or repeated", what, n)
		}
		last = n
		fields[n] = v.content
		if fields[n] == nil {
			fields[n] = []byte{}
		}
		b = rest
	}
	return fields, nil
}

// readInt reads one INTEGER filling b: minimal, at most 4 octets (an
// NTSTATUS errorCode is a signed 32-bit value, as Windows encodes it).
func readInt(b []byte, what string) (int64, error) {
	v, err := readOnly(b, tagInteger, what)
	if err != nil {
		return 0, err
	}
	c := v.content
	if len(c) == 0 || len(c) > 4 {
		return 0, malformed("%s: INTEGER of %d octets", what, len(c))
	}
	if len(c) > 1 && ((c[0] == 0 && c[1]&0x80 == 0) || (c[0] == 0xff && c[1]&0x80 != 0)) {
		return 0, malformed("%s: INTEGER not minimal", what)
	}
	var n int64
	if c[0]&0x80 != 0 {
		n = -1
	}
	for _, x := range c {
		n = n<<8 | int64(x)
	}
	return n, nil
}

func marshalInt(n int64) []byte {
	var c []byte
	for {
		c = append([]byte{byte(n)}, c...)
		if (n < 128 && n >= -128) || len(c) == 8 {
			break
		}
		n >>= 8
	}
	return wrap(tagInteger, c)
}

func appendLength(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n < 0x100:
		return append(b, 0x81, byte(n))
	case n < 0x10000:
		return append(b, 0x82, byte(n>>8), byte(n))
	default:
		return append(b, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
}

func wrap(tag byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n+5)
	b = append(b, tag)
	b = appendLength(b, n)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}
