package ntlm

// Wire format of the three NTLM messages (MS-NLMP 2.2.1), little-endian.
// Every length and offset read from the wire is checked against the message
// before it is used; every variable field has its own upper bound.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/winrmd/winrmd/authn"
)

// Negotiate flags (MS-NLMP 2.2.2.5).
const (
	FlagUnicode        uint32 = 0x00000001
	FlagOEM            uint32 = 0x00000002
	FlagRequestTarget  uint32 = 0x00000004
	FlagSign           uint32 = 0x00000010
	FlagSeal           uint32 = 0x00000020
	FlagDatagram       uint32 = 0x00000040
	FlagLMKey          uint32 = 0x00000080
	FlagNTLM           uint32 = 0x00000200
	FlagAnonymous      uint32 = 0x00000800
	FlagDomainSupplied uint32 = 0x00001000
	FlagWorkstation    uint32 = 0x00002000
	FlagAlwaysSign     uint32 = 0x00008000
	FlagTypeDomain     uint32 = 0x00010000
	FlagTypeServer     uint32 = 0x00020000
	FlagESS            uint32 = 0x00080000 // extended session security
	FlagIdentify       uint32 = 0x00100000
	FlagNonNTKey       uint32 = 0x00400000
	FlagTargetInfo     uint32 = 0x00800000
	FlagVersion        uint32 = 0x02000000
	Flag128            uint32 = 0x20000000
	FlagKeyExch        uint32 = 0x40000000
	Flag56             uint32 = 0x80000000
)

// AV pair ids (MS-NLMP 2.2.2.1).
const (
	avEOL             uint16 = 0
	avNbComputerName  uint16 = 1
	avNbDomainName    uint16 = 2
	avDNSComputerName uint16 = 3
	avDNSDomainName   uint16 = 4
	avDNSTreeName     uint16 = 5
	avFlags           uint16 = 6
	avTimestamp       uint16 = 7
	avSingleHost      uint16 = 8
	avTargetName      uint16 = 9
	avChannelBindings uint16 = 10
)

// MsvAvFlags bits.
const (
	avFlagConstrained uint32 = 0x1
	avFlagMIC         uint32 = 0x2
	avFlagUntrustedSP uint32 = 0x4
)

// Limits. A real AUTHENTICATE message is well under 2 KiB.
const (
	MaxMessageSize   = 64 << 10 // any NTLM message
	maxNameBytes     = 1024     // user, domain, workstation (512 UTF-16 units)
	maxNtResponse    = 16 << 10 // NTLMv2 response incl. client AV pairs
	maxLmResponse    = 64       // LMv2 is 24 bytes
	maxAVPairs       = 64       // in a client NTLMv2 blob
	sessionKeyLength = 16
	challengeHeader  = 56 // fixed part of our CHALLENGE
	authFixedLength  = 64 // through NegotiateFlags
	micOffset        = 72 // MIC after the 8-byte Version
	micLength        = 16
	ntProofLength    = 16
	blobHeaderLength = 28 // RespType, HiRespType, reserved, time, client challenge, reserved
	ntlmV1Length     = 24
)

var signature = []byte("NTLMSSP\x00")

const (
	typeNegotiate    = 1
	typeChallenge    = 2
	typeAuthenticate = 3
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("ntlm: "+format+": %w", append(args, authn.ErrMalformed)...)
}

// IsNTLMToken reports whether b starts like an NTLMSSP message.
func IsNTLMToken(b []byte) bool {
	return len(b) >= len(signature) && string(b[:len(signature)]) == string(signature)
}

// messageType returns the type of an NTLMSSP message or an error.
func messageType(b []byte) (uint32, error) {
	if len(b) > MaxMessageSize {
		return 0, malformed("message of %d bytes exceeds %d", len(b), MaxMessageSize)
	}
	if len(b) < 12 || !IsNTLMToken(b) {
		return 0, malformed("not an NTLMSSP message")
	}
	return binary.LittleEndian.Uint32(b[8:12]), nil
}

// field reads a Len/MaxLen/Offset triple at off and returns the bytes it
// points to (a sub-slice of msg). minOff is the first byte a payload may use.
func field(msg []byte, off, minOff, maxLen int, name string) ([]byte, int, error) {
	if off+8 > len(msg) {
		return nil, 0, malformed("%s: field header truncated", name)
	}
	l := int(binary.LittleEndian.Uint16(msg[off:]))
	o := int(binary.LittleEndian.Uint32(msg[off+4:]))
	if l == 0 {
		return nil, 0, nil
	}
	if l > maxLen {
		return nil, 0, malformed("%s: length %d exceeds %d", name, l, maxLen)
	}
	if o < minOff || o > len(msg) || l > len(msg)-o {
		return nil, 0, malformed("%s: offset %d length %d outside the message (%d bytes)", name, o, l, len(msg))
	}
	return msg[o : o+l : o+l], o, nil
}

// negotiateMsg is what the acceptor needs from a NEGOTIATE message.
type negotiateMsg struct {
	flags uint32
}

// parseNegotiate accepts every NEGOTIATE shape seen from clients: with or
// without Domain/Workstation fields and Version (curl sends 32 bytes, some
// 16), with or without the UNICODE and NTLM flags.
func parseNegotiate(b []byte) (*negotiateMsg, error) {
	t, err := messageType(b)
	if err != nil {
		return nil, err
	}
	if t != typeNegotiate {
		return nil, malformed("expected NEGOTIATE, got message type %d", t)
	}
	if len(b) < 16 {
		return nil, malformed("NEGOTIATE truncated")
	}
	m := &negotiateMsg{flags: binary.LittleEndian.Uint32(b[12:16])}
	// The supplied domain and workstation are informational; only check
	// that the fields, when present and non-empty, point inside the message.
	for i, name := range []string{"negotiate domain", "negotiate workstation"} {
		off := 16 + 8*i
		if off+8 > len(b) {
			break
		}
		if _, _, err := field(b, off, 16, maxNameBytes, name); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// authenticateMsg is a parsed AUTHENTICATE message; byte slices alias raw.
type authenticateMsg struct {
	raw         []byte
	lm, nt      []byte
	domain      []byte
	user        []byte
	workstation []byte
	encKey      []byte
	flags       uint32
	mic         []byte // nil when the message has no MIC slot
	micAt       int
}

func parseAuthenticate(b []byte) (*authenticateMsg, error) {
	t, err := messageType(b)
	if err != nil {
		return nil, err
	}
	if t != typeAuthenticate {
		return nil, malformed("expected AUTHENTICATE, got message type %d", t)
	}
	if len(b) < authFixedLength {
		return nil, malformed("AUTHENTICATE truncated (%d bytes)", len(b))
	}
	m := &authenticateMsg{raw: b, flags: binary.LittleEndian.Uint32(b[60:64])}
	type spec struct {
		dst  *[]byte
		off  int
		max  int
		name string
	}
	specs := []spec{
		{&m.lm, 12, maxLmResponse, "LmChallengeResponse"},
		{&m.nt, 20, maxNtResponse, "NtChallengeResponse"},
		{&m.domain, 28, maxNameBytes, "DomainName"},
		{&m.user, 36, maxNameBytes, "UserName"},
		{&m.workstation, 44, maxNameBytes, "Workstation"},
		{&m.encKey, 52, sessionKeyLength, "EncryptedRandomSessionKey"},
	}
	payloadStart := len(b)
	for _, s := range specs {
		v, o, err := field(b, s.off, authFixedLength, s.max, s.name)
		if err != nil {
			return nil, err
		}
		*s.dst = v
		if v != nil && o < payloadStart {
			payloadStart = o
		}
	}
	// The MIC slot exists when the payload leaves room for Version and MIC
	// (MS-NLMP 2.2.1.3); a client without Version puts it right after the
	// flags.
	switch {
	case payloadStart >= micOffset+micLength:
		m.micAt = micOffset
	case m.flags&FlagVersion == 0 && payloadStart >= authFixedLength+micLength:
		m.micAt = authFixedLength
	default:
		m.micAt = -1
	}
	if m.micAt >= 0 {
		m.mic = b[m.micAt : m.micAt+micLength : m.micAt+micLength]
	}
	return m, nil
}

// decodeString decodes a name field per the message's character set.
func decodeString(b []byte, unicode bool, name string) (string, error) {
	if !unicode {
		if utf8.Valid(b) {
			return string(b), nil
		}
		// OEM code page unknown: treat as Latin-1.
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		return string(r), nil
	}
	if len(b)%2 != 0 {
		return "", malformed("%s: odd UTF-16 length %d", name, len(b))
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	s := string(utf16.Decode(u))
	if strings.ContainsRune(s, 0) {
		return "", malformed("%s: contains NUL", name)
	}
	return s, nil
}

// encodeUTF16 returns s as UTF-16LE.
func encodeUTF16(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// avPair is one AV pair; value aliases the message.
type avPair struct {
	id    uint16
	value []byte
}

var errNoEOL = errors.New("missing MsvAvEOL")

// parseAVPairs reads AV pairs until MsvAvEOL. It returns the pairs and the
// number of bytes consumed including EOL.
func parseAVPairs(b []byte) ([]avPair, int, error) {
	var pairs []avPair
	off := 0
	for {
		if off+4 > len(b) {
			return nil, 0, malformed("AV pairs: %v", errNoEOL)
		}
		id := binary.LittleEndian.Uint16(b[off:])
		l := int(binary.LittleEndian.Uint16(b[off+2:]))
		off += 4
		if id == avEOL {
			if l != 0 {
				return nil, 0, malformed("AV pairs: MsvAvEOL with length %d", l)
			}
			return pairs, off, nil
		}
		if l > len(b)-off {
			return nil, 0, malformed("AV pair %d: length %d overruns", id, l)
		}
		if len(pairs) >= maxAVPairs {
			return nil, 0, malformed("more than %d AV pairs", maxAVPairs)
		}
		pairs = append(pairs, avPair{id: id, value: b[off : off+l : off+l]})
		off += l
	}
}

// clientBlob is the parsed NTLMv2 client challenge ("temp") of an
// NtChallengeResponse.
type clientBlob struct {
	timestamp       uint64
	clientChallenge []byte
	pairs           []avPair
	avFlags         uint32
	hasAVFlags      bool
	channelBindings []byte // nil when absent
	targetName      string
}

// parseClientBlob parses temp (NtChallengeResponse without NTProofStr).
// Duplicate security-relevant pairs are refused.
func parseClientBlob(temp []byte) (*clientBlob, error) {
	if len(temp) < blobHeaderLength {
		return nil, malformed("NTLMv2 client blob truncated (%d bytes)", len(temp))
	}
	if temp[0] != 1 || temp[1] != 1 {
		return nil, malformed("NTLMv2 client blob version %d.%d", temp[0], temp[1])
	}
	cb := &clientBlob{
		timestamp:       binary.LittleEndian.Uint64(temp[8:16]),
		clientChallenge: temp[16:24],
	}
	pairs, _, err := parseAVPairs(temp[blobHeaderLength:])
	if err != nil {
		return nil, err
	}
	cb.pairs = pairs
	for _, p := range pairs {
		switch p.id {
		case avFlags:
			if cb.hasAVFlags {
				return nil, malformed("duplicate MsvAvFlags")
			}
			if len(p.value) != 4 {
				return nil, malformed("MsvAvFlags of %d bytes", len(p.value))
			}
			cb.hasAVFlags = true
			cb.avFlags = binary.LittleEndian.Uint32(p.value)
		case avChannelBindings:
			if cb.channelBindings != nil {
				return nil, malformed("duplicate MsvAvChannelBindings")
			}
			if len(p.value) != 16 {
				return nil, malformed("MsvAvChannelBindings of %d bytes", len(p.value))
			}
			cb.channelBindings = p.value
		case avTargetName:
			if s, err := decodeString(p.value, true, "MsvAvTargetName"); err == nil {
				cb.targetName = s
			}
		}
	}
	return cb, nil
}

// appendAV appends one AV pair.
func appendAV(b []byte, id uint16, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, id)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// challengeParams is what buildChallenge writes.
type challengeParams struct {
	flags      uint32
	challenge  [8]byte
	targetName string
	targetInfo []byte
	version    [8]byte
}

func buildChallenge(p challengeParams) []byte {
	var name []byte
	if p.flags&FlagUnicode != 0 {
		name = encodeUTF16(p.targetName)
	} else {
		name = []byte(p.targetName)
	}
	msg := make([]byte, challengeHeader, challengeHeader+len(name)+len(p.targetInfo))
	copy(msg, signature)
	binary.LittleEndian.PutUint32(msg[8:], typeChallenge)
	putField(msg[12:], len(name), challengeHeader)
	binary.LittleEndian.PutUint32(msg[20:], p.flags)
	copy(msg[24:32], p.challenge[:])
	putField(msg[40:], len(p.targetInfo), challengeHeader+len(name))
	copy(msg[48:56], p.version[:])
	msg = append(msg, name...)
	msg = append(msg, p.targetInfo...)
	return msg
}

func putField(b []byte, l, off int) {
	binary.LittleEndian.PutUint16(b[0:], uint16(l))
	binary.LittleEndian.PutUint16(b[2:], uint16(l))
	binary.LittleEndian.PutUint32(b[4:], uint32(off))
}
