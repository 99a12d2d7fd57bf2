package spnego

// SPNEGO tokens (RFC 4178 4.2, MS-SPNG): parsing of the client's
// NegTokenInit (inside the GSS-API framing) and NegTokenResp, building of
// our NegTokenResp. The DER is read with authn/internal/der (cryptobyte
// underneath): definite minimal lengths, low tag numbers, fields in order
// and at most once, no trailing bytes where a structure must end, sizes
// bounded by authn.MaxTokenSize.

import (
	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/internal/der"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Mechanism OIDs as DER content octets.
var (
	oidSPNEGO = []byte{0x2b, 0x06, 0x01, 0x05, 0x05, 0x02}                         // 1.3.6.1.5.5.2
	oidNTLM   = []byte{0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a} // 1.3.6.1.4.1.311.2.2.10
	oidKRB5   = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02}       // 1.2.840.113554.1.2.2
	oidMSKRB5 = []byte{0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02}       // 1.2.840.48018.1.2.2
	oidNEGOEX = []byte{0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x1e} // 1.3.6.1.4.1.311.2.2.30
)

// negState values.
const (
	acceptCompleted  = 0
	acceptIncomplete = 1
	reject           = 2
	requestMIC       = 3
)

// maxMechTypes bounds NegTokenInit's mechTypes (Windows offers four:
// NEGOEX, MS-KRB5, KRB5, NTLM). Tokens are bounded by authn.MaxTokenSize.
const maxMechTypes = 32

// negTokenInit is the client's first SPNEGO token.
type negTokenInit struct {
	mechTypes    [][]byte // OID content octets, in client preference order
	mechTypesDER []byte   // the MechTypeList SEQUENCE exactly as received
	mechToken    []byte
	mechListMIC  []byte
}

// negTokenResp is a NegTokenResp from either side.
type negTokenResp struct {
	negState      int // -1 when absent
	supportedMech []byte
	responseToken []byte
	mechListMIC   []byte
}

// rd reads this package's DER (authn/internal/der, on cryptobyte).
const rd der.Reader = "spnego"

func malformed(format string, args ...any) error { return rd.Errorf(format, args...) }

// isGSSToken reports whether b is a GSS-API initial-context token (0x60).
func isGSSToken(b []byte) bool { return len(b) > 0 && b[0] == byte(der.TagApp0) }

// isNegTokenResp reports whether b starts as a NegotiationToken's [1].
func isNegTokenResp(b []byte) bool { return len(b) > 0 && b[0] == byte(der.Context(1)) }

// parseNegTokenInit parses the inner token of a SPNEGO initial token:
// [0] NegTokenInit.
func parseNegTokenInit(inner []byte) (*negTokenInit, error) {
	choice, err := rd.Only(inner, der.Context(0), "NegotiationToken")
	if err != nil {
		return nil, err
	}
	seq, err := rd.Only(choice, asn1.SEQUENCE, "NegTokenInit")
	if err != nil {
		return nil, err
	}
	f, err := rd.Fields(seq, 3, "NegTokenInit")
	if err != nil {
		return nil, err
	}
	t := &negTokenInit{}
	if f[0] == nil {
		return nil, malformed("NegTokenInit without mechTypes")
	}
	list, err := rd.Only(f[0], asn1.SEQUENCE, "mechTypes")
	if err != nil {
		return nil, err
	}
	t.mechTypesDER = f[0] // the MechTypeList element, which fills [0] exactly
	for s := cryptobyte.String(list); !s.Empty(); {
		o, err := rd.ReadOID(&s, "mechTypes")
		if err != nil {
			return nil, err
		}
		if len(t.mechTypes) == maxMechTypes {
			return nil, malformed("more than %d mechTypes", maxMechTypes)
		}
		t.mechTypes = append(t.mechTypes, o)
	}
	if len(t.mechTypes) == 0 {
		return nil, malformed("empty mechTypes")
	}
	if f[1] != nil { // reqFlags: ignored, but must be a BIT STRING
		if _, err := rd.Only(f[1], asn1.BIT_STRING, "reqFlags"); err != nil {
			return nil, err
		}
	}
	if f[2] != nil {
		if t.mechToken, err = rd.Only(f[2], asn1.OCTET_STRING, "mechToken"); err != nil {
			return nil, err
		}
	}
	if f[3] != nil {
		if t.mechListMIC, err = rd.Only(f[3], asn1.OCTET_STRING, "mechListMIC"); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// parseNegTokenResp parses [1] NegTokenResp (the client's later legs).
func parseNegTokenResp(b []byte) (*negTokenResp, error) {
	if len(b) > authn.MaxTokenSize {
		return nil, malformed("token of %d bytes exceeds %d", len(b), authn.MaxTokenSize)
	}
	choice, err := rd.Only(b, der.Context(1), "NegotiationToken")
	if err != nil {
		return nil, err
	}
	seq, err := rd.Only(choice, asn1.SEQUENCE, "NegTokenResp")
	if err != nil {
		return nil, err
	}
	f, err := rd.Fields(seq, 3, "NegTokenResp")
	if err != nil {
		return nil, err
	}
	t := &negTokenResp{negState: -1}
	if f[0] != nil {
		v, err := rd.Only(f[0], asn1.ENUM, "negState")
		if err != nil {
			return nil, err
		}
		if len(v) != 1 || v[0] > requestMIC {
			return nil, malformed("negState %x", v)
		}
		t.negState = int(v[0])
	}
	if f[1] != nil {
		s := cryptobyte.String(f[1])
		if t.supportedMech, err = rd.ReadOID(&s, "supportedMech"); err != nil {
			return nil, err
		}
		if !s.Empty() {
			return nil, malformed("supportedMech: %d trailing bytes", len(s))
		}
	}
	if f[2] != nil {
		if t.responseToken, err = rd.Only(f[2], asn1.OCTET_STRING, "responseToken"); err != nil {
			return nil, err
		}
	}
	if f[3] != nil {
		if t.mechListMIC, err = rd.Only(f[3], asn1.OCTET_STRING, "mechListMIC"); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// marshal encodes a NegTokenResp; negState -1 and nil fields are omitted.
func (t *negTokenResp) marshal() []byte {
	var b cryptobyte.Builder
	b.AddASN1(der.Context(1), func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			if t.negState >= 0 {
				b.AddASN1(der.Context(0), func(b *cryptobyte.Builder) { b.AddASN1Enum(int64(t.negState)) })
			}
			if t.supportedMech != nil {
				b.AddASN1(der.Context(1), func(b *cryptobyte.Builder) {
					b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(t.supportedMech) })
				})
			}
			if t.responseToken != nil {
				b.AddASN1(der.Context(2), func(b *cryptobyte.Builder) { b.AddASN1OctetString(t.responseToken) })
			}
			if t.mechListMIC != nil {
				b.AddASN1(der.Context(3), func(b *cryptobyte.Builder) { b.AddASN1OctetString(t.mechListMIC) })
			}
		})
	})
	return b.BytesOrPanic()
}
