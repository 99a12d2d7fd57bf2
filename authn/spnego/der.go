package spnego

// A small, strict DER reader and writer for the few SPNEGO structures:
// definite minimal lengths only, low tag numbers only, no trailing bytes
// where a structure must end, sizes bounded by the token limit.

import (
	"bytes"
	"fmt"

	"github.com/winrmd/winrmd/authn"
)

// DER identifier octets used here.
const (
	tagInteger     = 0x02
	tagBitString   = 0x03
	tagOctetString = 0x04
	tagOID         = 0x06
	tagEnumerated  = 0x0a
	tagSequence    = 0x30
	tagApp0        = 0x60 // [APPLICATION 0] constructed: the GSS-API framing
)

// ctx returns the identifier of [n] constructed, context-specific.
func ctx(n int) byte { return 0xa0 | byte(n) }

func malformed(format string, args ...any) error {
	return fmt.Errorf("spnego: "+format+": %w", append(args, authn.ErrMalformed)...)
}

// tlv is one decoded element. content and raw alias the input.
type tlv struct {
	tag     byte
	content []byte
	raw     []byte // identifier, length and content
}

// readTLV reads one element from b and returns it and the rest.
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
		if n > 3 { // 16 MiB: far above any token we accept
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
	return tlv{tag: tag, content: b[hdr:end:end], raw: b[:end:end]}, b[end:], nil
}

// readOnly reads exactly one element of the expected tag filling b.
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

// readFields reads the context-tagged fields [0]..[max] of a SEQUENCE body,
// each at most once and in increasing order. fields[i] is nil when absent.
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
		b = rest
	}
	return fields, nil
}

// checkOID validates the content octets of an OBJECT IDENTIFIER.
func checkOID(b []byte) error {
	if len(b) == 0 || len(b) > 64 {
		return malformed("OID of %d octets", len(b))
	}
	if b[len(b)-1]&0x80 != 0 {
		return malformed("OID truncated")
	}
	start := true
	for _, c := range b {
		if start && c == 0x80 {
			return malformed("OID sub-identifier not minimal")
		}
		start = c&0x80 == 0
	}
	return nil
}

// appendLength appends a minimal DER length.
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

// wrap returns tag || length || concatenated parts.
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

func oidEqual(a, b []byte) bool { return bytes.Equal(a, b) }
