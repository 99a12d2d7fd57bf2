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
// The decoder is strict and bounded (authn/internal/der, on cryptobyte):
// definite minimal lengths, context tags in increasing order and each at
// most once, no trailing bytes anywhere, INTEGERs minimal and at most 4
// octets, every field within the limits below. Anything else is ErrMalformed. (Smart-card credentials, credType 2,
// and remote-guard credentials, 6, are refused: only passwords delegate.)

import (
	"fmt"
	"unicode/utf16"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/internal/der"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Limits of the decoder.
const (
	// MaxMessage bounds one TSRequest (an NTLM AUTHENTICATE with its AV
	// pairs is ~1 KiB; a Kerberos AP-REQ with a PAC can reach ~12 KiB):
	// authn.MaxTokenSize, the bound of every token. Through the server a
	// TSRequest arrives whole within one leg's token (readDER), inside TLS
	// records, so it stays a few dozen bytes below this; the check is the
	// TLS stream's own, for any other carrier.
	MaxMessage = authn.MaxTokenSize
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

// rd reads this package's DER (authn/internal/der, on cryptobyte).
const rd der.Reader = "credssp"

func malformed(format string, args ...any) error { return rd.Errorf(format, args...) }

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
	seq, err := rd.Only(b, asn1.SEQUENCE, "TSRequest")
	if err != nil {
		return nil, err
	}
	f, err := rd.Fields(seq, 5, "TSRequest")
	if err != nil {
		return nil, err
	}
	if f[0] == nil {
		return nil, malformed("TSRequest without version")
	}
	r := &TSRequest{}
	v, err := rd.Int32(f[0], "TSRequest.version")
	if err != nil {
		return nil, err
	}
	if v < 1 || v > 255 {
		return nil, malformed("TSRequest.version %d", v)
	}
	r.Version = int(v)
	if f[1] != nil {
		nd, err := rd.Only(f[1], asn1.SEQUENCE, "negoTokens")
		if err != nil {
			return nil, err
		}
		n := 0
		for s := cryptobyte.String(nd); !s.Empty(); {
			var item cryptobyte.String
			if !s.ReadASN1(&item, asn1.SEQUENCE) {
				return nil, malformed("NegoData item: not a DER SEQUENCE")
			}
			if n++; n > MaxNegoTokens {
				return nil, malformed("NegoData with more than %d tokens", MaxNegoTokens)
			}
			nf, err := rd.Fields(item, 0, "NegoData item")
			if err != nil {
				return nil, err
			}
			if nf[0] == nil {
				return nil, malformed("NegoData item without negoToken")
			}
			if r.NegoToken, err = rd.Only(nf[0], asn1.OCTET_STRING, "negoToken"); err != nil {
				return nil, err
			}
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
		if *o.dst, err = rd.Only(f[o.i], asn1.OCTET_STRING, o.name); err != nil {
			return nil, err
		}
	}
	if r.ClientNonce != nil && len(r.ClientNonce) != NonceSize {
		return nil, malformed("clientNonce of %d bytes, want %d", len(r.ClientNonce), NonceSize)
	}
	if f[4] != nil {
		c, err := rd.Int32(f[4], "errorCode")
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
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(der.Context(0), func(b *cryptobyte.Builder) { b.AddASN1Int64(int64(r.Version)) })
		if r.NegoToken != nil {
			b.AddASN1(der.Context(1), func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(der.Context(0), func(b *cryptobyte.Builder) { b.AddASN1OctetString(r.NegoToken) })
					})
				})
			})
		}
		octets(b, 2, r.AuthInfo)
		octets(b, 3, r.PubKeyAuth)
		if r.ErrorCode != nil {
			b.AddASN1(der.Context(4), func(b *cryptobyte.Builder) { b.AddASN1Int64(int64(int32(*r.ErrorCode))) })
		}
		octets(b, 5, r.ClientNonce)
	})
	return b.BytesOrPanic()
}

// octets adds [n] OCTET STRING v, unless v is nil.
func octets(b *cryptobyte.Builder, n int, v []byte) {
	if v != nil {
		field(b, n, v)
	}
}

// field adds [n] OCTET STRING v.
func field(b *cryptobyte.Builder, n int, v []byte) {
	b.AddASN1(der.Context(n), func(b *cryptobyte.Builder) { b.AddASN1OctetString(v) })
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
	seq, err := rd.Only(b, asn1.SEQUENCE, "TSCredentials")
	if err != nil {
		return nil, err
	}
	f, err := rd.Fields(seq, 1, "TSCredentials")
	if err != nil {
		return nil, err
	}
	if f[0] == nil || f[1] == nil {
		return nil, malformed("TSCredentials without credType or credentials")
	}
	ct, err := rd.Int32(f[0], "credType")
	if err != nil {
		return nil, err
	}
	if ct != CredTypePassword {
		return nil, fmt.Errorf("credssp: credType %d (only passwords, 1, are accepted): %w", ct, authn.ErrUnsupported)
	}
	inner, err := rd.Only(f[1], asn1.OCTET_STRING, "credentials")
	if err != nil {
		return nil, err
	}
	pseq, err := rd.Only(inner, asn1.SEQUENCE, "TSPasswordCreds")
	if err != nil {
		return nil, err
	}
	pf, err := rd.Fields(pseq, 2, "TSPasswordCreds")
	if err != nil {
		return nil, err
	}
	var raw [3][]byte
	for i, name := range []string{"domainName", "userName", "password"} {
		if pf[i] == nil {
			return nil, malformed("TSPasswordCreds without %s", name)
		}
		v, err := rd.Only(pf[i], asn1.OCTET_STRING, name)
		if err != nil {
			return nil, err
		}
		limit := MaxNameBytes
		if i == 2 {
			limit = MaxPasswordBytes
		}
		if len(v) > limit || len(v)%2 != 0 {
			return nil, malformed("%s of %d bytes (even, at most %d)", name, len(v), limit)
		}
		raw[i] = v
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
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(der.Context(0), func(b *cryptobyte.Builder) { b.AddASN1Int64(CredTypePassword) })
		b.AddASN1(der.Context(1), func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.OCTET_STRING, func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					field(b, 0, utf16LE(domain))
					field(b, 1, utf16LE(user))
					field(b, 2, passwordUTF16)
				})
			})
		})
	})
	return b.BytesOrPanic()
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
