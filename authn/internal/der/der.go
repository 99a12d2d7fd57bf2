// Package der is the strict DER reading the authentication tokens share:
// SPNEGO's NegTokenInit and NegTokenResp (authn/spnego), CredSSP's
// TSRequest and TSCredentials (authn/credssp) and the GSS-API
// InitialContextToken framing of RFC 2743 3.1 around SPNEGO and krb5 tokens
// (authn/spnego, authn/kerberos).
//
// The element reader is golang.org/x/crypto/cryptobyte, which refuses what
// DER forbids (X.690 10.1): indefinite lengths, lengths not in their
// shortest form, high tag numbers, and any length that overruns its input.
// This package adds only what the token parsers have in common, so that
// each of them states its structure and nothing else:
//
//   - Only: exactly one element of the expected tag filling its bytes (no
//     trailing bytes where a structure must end);
//   - Fields: a SEQUENCE body of explicitly tagged fields [0]..[max], each
//     at most once and in increasing order, nothing else;
//   - Int32: an INTEGER in its minimal encoding of at most four octets;
//   - ReadOID: an OBJECT IDENTIFIER of at most MaxOIDBytes content octets
//     whose sub-identifiers are minimal (kept as its content octets, which
//     is how the mechanisms compare them);
//   - InitialContextToken: the GSS-API framing, bounded by the caller's
//     token limit.
//
// Every error names the protocol and the field and wraps authn.ErrMalformed.
// Returned slices alias the input (a CredSSP password is zeroed in place by
// its caller) with their capacity clipped, so an append never writes into
// the input. Depth needs no limit of its own: the structures are fixed, and
// each parser descends only as deep as its own ASN.1 does (at most five
// levels, TSRequest's negoTokens), never by recursion on the input.
package der

import (
	encoding_asn1 "encoding/asn1"
	"fmt"

	"github.com/winrmd/winrmd/authn"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// TagApp0 is [APPLICATION 0] constructed, the GSS-API InitialContextToken.
const TagApp0 = asn1.Tag(0x60)

// MaxOIDBytes bounds an OBJECT IDENTIFIER's content octets (the longest a
// token carries, NEGOEX's 1.3.6.1.4.1.311.2.2.30, is 10).
const MaxOIDBytes = 64

// Context returns the tag of the explicit context-specific field [n].
func Context(n int) asn1.Tag { return asn1.Tag(n).ContextSpecific().Constructed() }

// A Reader reads the DER of one protocol; its value ("spnego", "credssp",
// "kerberos") begins every error it returns.
type Reader string

// Errorf returns an error "<protocol>: <message>" wrapping authn.ErrMalformed.
func (r Reader) Errorf(format string, args ...any) error {
	return fmt.Errorf(string(r)+": "+format+": %w", append(args, authn.ErrMalformed)...)
}

// clip returns b as a non-nil slice whose capacity ends at its length.
func clip(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b[:len(b):len(b)]
}

// bad explains why s does not start with an element of tag: another tag, or
// an encoding DER forbids.
func (r Reader) bad(s cryptobyte.String, tag asn1.Tag, what string) error {
	var any cryptobyte.String
	var got asn1.Tag
	if !s.ReadAnyASN1Element(&any, &got) {
		if len(s) == 0 {
			return r.Errorf("%s missing", what)
		}
		return r.Errorf("%s: not a DER element (truncated, indefinite or non-minimal length, or high tag number)", what)
	}
	return r.Errorf("%s: tag %#x, want %#x", what, uint8(got), uint8(tag))
}

// Only reads exactly one element of tag filling b and returns its content.
func (r Reader) Only(b []byte, tag asn1.Tag, what string) ([]byte, error) {
	s := cryptobyte.String(b)
	var content cryptobyte.String
	if !s.ReadASN1(&content, tag) { // (which consumes an element of another tag)
		return nil, r.bad(b, tag, what)
	}
	if !s.Empty() {
		return nil, r.Errorf("%s: %d trailing bytes", what, len(s))
	}
	return clip(content), nil
}

// Fields reads the explicitly tagged fields [0]..[max] of a SEQUENCE body,
// each at most once and in increasing order. fields[i] is the content of
// [i] (non-nil, possibly empty) or nil when absent.
func (r Reader) Fields(body []byte, max int, what string) ([][]byte, error) {
	s := cryptobyte.String(body)
	fields := make([][]byte, max+1)
	for i := range fields {
		var v cryptobyte.String
		var present bool
		if !s.ReadOptionalASN1(&v, &present, Context(i)) {
			return nil, r.bad(s, Context(i), fmt.Sprintf("%s [%d]", what, i))
		}
		if present {
			fields[i] = clip(v)
		}
	}
	if s.Empty() {
		return fields, nil
	}
	var any cryptobyte.String
	var got asn1.Tag
	if !s.ReadAnyASN1Element(&any, &got) {
		return nil, r.bad(s, 0, what)
	}
	return nil, r.Errorf("%s: unexpected element %#x (unknown, repeated or out of order)", what, uint8(got))
}

// Int32 reads exactly one INTEGER filling b: minimal, at most four octets
// (an NTSTATUS is a signed 32-bit value as Windows encodes it).
func (r Reader) Int32(b []byte, what string) (int32, error) {
	s := cryptobyte.String(b)
	if !s.PeekASN1Tag(asn1.INTEGER) {
		return 0, r.bad(s, asn1.INTEGER, what)
	}
	var n int32
	if !s.ReadASN1Integer(&n) {
		return 0, r.Errorf("%s: not a minimal INTEGER of at most 4 octets", what)
	}
	if !s.Empty() {
		return 0, r.Errorf("%s: %d trailing bytes", what, len(s))
	}
	return n, nil
}

// ReadOID reads one OBJECT IDENTIFIER from s and returns its content octets.
// Sub-identifiers must be minimal and below 2^31 (cryptobyte's bound; every
// mechanism OID is far below it).
func (r Reader) ReadOID(s *cryptobyte.String, what string) ([]byte, error) {
	var elem cryptobyte.String
	if start := *s; !s.ReadASN1Element(&elem, asn1.OBJECT_IDENTIFIER) {
		*s = start
		return nil, r.bad(start, asn1.OBJECT_IDENTIFIER, what)
	}
	check := elem
	var content cryptobyte.String
	elem.ReadASN1(&content, asn1.OBJECT_IDENTIFIER) // the element just read: cannot fail
	if len(content) > MaxOIDBytes {
		return nil, r.Errorf("%s: OID of %d octets (limit %d)", what, len(content), MaxOIDBytes)
	}
	var oid encoding_asn1.ObjectIdentifier
	if !check.ReadASN1ObjectIdentifier(&oid) {
		return nil, r.Errorf("%s: OID empty, truncated or with a sub-identifier not minimal", what)
	}
	return clip(content), nil
}

// Element returns the DER element tag { content... }, written by
// cryptobyte's Builder (minimal lengths). For flat structures and test
// tables; nested ones read better as a Builder of their own.
func Element(tag asn1.Tag, content ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, c := range content {
			b.AddBytes(c)
		}
	})
	return b.BytesOrPanic()
}

// InitialContextToken splits a GSS-API InitialContextToken (RFC 2743 3.1:
// [APPLICATION 0] { thisMech OID, innerToken ANY }) of at most max bytes
// into its mechanism OID's content octets and the inner token.
func (r Reader) InitialContextToken(b []byte, max int) (oid, inner []byte, err error) {
	if len(b) > max {
		return nil, nil, r.Errorf("token of %d bytes exceeds %d", len(b), max)
	}
	body, err := r.Only(b, TagApp0, "InitialContextToken")
	if err != nil {
		return nil, nil, err
	}
	s := cryptobyte.String(body)
	if oid, err = r.ReadOID(&s, "InitialContextToken mechanism"); err != nil {
		return nil, nil, err
	}
	return oid, clip(s), nil
}
