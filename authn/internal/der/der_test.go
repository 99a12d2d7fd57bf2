package der

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/winrmd/winrmd/authn"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

const rd Reader = "test"

func h(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

var elem = Element

// refused checks that err is ErrMalformed and names the protocol and field.
func refused(t *testing.T, name string, err error, field string) {
	t.Helper()
	switch {
	case !errors.Is(err, authn.ErrMalformed):
		t.Errorf("%s: %v, want ErrMalformed", name, err)
	case !strings.HasPrefix(err.Error(), "test: "+field):
		t.Errorf("%s: %q does not start with the protocol and field %q", name, err, field)
	}
}

func TestOnly(t *testing.T) {
	big := elem(asn1.OCTET_STRING, make([]byte, 70000))
	for _, ok := range [][]byte{h("0400"), h("0401ff"), elem(asn1.OCTET_STRING, make([]byte, 200)), big} {
		v, err := rd.Only(ok, asn1.OCTET_STRING, "f")
		if err != nil || len(v) != len(ok)-2-int(ok[1]&0x7f)*int(ok[1]>>7) || v == nil || cap(v) != len(v) {
			t.Errorf("%x...: %d bytes, %v", ok[:min(len(ok), 6)], len(v), err)
		}
	}
	for name, b := range map[string][]byte{
		"empty":                  nil,
		"one byte":               h("04"),
		"wrong tag":              h("0500"),
		"trailing byte":          h("040100ff"),
		"indefinite length":      h("048000000000"),
		"length not minimal":     h("04810100"),
		"length with zero octet": h("0482000100"),
		"length of 5 octets":     h("04850000000001"),
		"overrun":                h("0405ff"),
		"high tag number":        h("1f810100"),
	} {
		_, err := rd.Only(b, asn1.OCTET_STRING, "f")
		refused(t, name, err, "f")
	}
	// A wrong tag is named as such (cryptobyte's reader consumes the
	// element before comparing tags; the message must still say why).
	if _, err := rd.Only(h("0500"), asn1.OCTET_STRING, "f"); err == nil || !strings.HasPrefix(err.Error(), "test: f: tag 0x5, want 0x4") {
		t.Errorf("wrong tag: %v", err)
	}
	s := cryptobyte.String(h("0400"))
	if _, err := rd.ReadOID(&s, "oid"); err == nil || !strings.HasPrefix(err.Error(), "test: oid: tag 0x4, want 0x6") || len(s) != 2 {
		t.Errorf("wrong tag for an OID: %v, %d bytes left", err, len(s))
	}
}

func TestFields(t *testing.T) {
	f0, f2 := elem(Context(0), h("020101")), elem(Context(2), h("0400"))
	f, err := rd.Fields(append(append([]byte{}, f0...), f2...), 3, "Seq")
	if err != nil || !bytes.Equal(f[0], h("020101")) || f[1] != nil || !bytes.Equal(f[2], h("0400")) || f[3] != nil {
		t.Fatalf("%x %v", f, err)
	}
	if f, err := rd.Fields(elem(Context(1)), 1, "Seq"); err != nil || f[1] == nil || len(f[1]) != 0 {
		t.Errorf("an empty field is present: %#v %v", f, err)
	}
	if f, err := rd.Fields(nil, 2, "Seq"); err != nil || len(f) != 3 {
		t.Errorf("empty body: %v %v", f, err)
	}
	for name, b := range map[string][]byte{
		"out of order":   append(append([]byte{}, f2...), f0...),
		"repeated":       append(append([]byte{}, f0...), f0...),
		"beyond max":     elem(Context(4), h("0400")),
		"not a context":  h("0400"),
		"primitive [0]":  h("800100"),
		"broken element": h("a005"),
		"trailing junk":  append(append([]byte{}, f0...), 0xa1),
	} {
		_, err := rd.Fields(b, 3, "Seq")
		refused(t, name, err, "Seq")
	}
}

func TestInt32(t *testing.T) {
	for _, n := range []int64{0, 1, 127, 128, 255, 256, -1, -128, -129, 1<<31 - 1, -1 << 31} {
		var b cryptobyte.Builder
		b.AddASN1Int64(n)
		got, err := rd.Int32(b.BytesOrPanic(), "n")
		if err != nil || int64(got) != n {
			t.Errorf("%d: %d %v", n, got, err)
		}
	}
	for name, b := range map[string][]byte{
		"not minimal (00)":  h("02020006"),
		"not minimal (ff)":  h("0202ff80"),
		"five octets":       h("02050080000000"),
		"empty content":     h("0200"),
		"wrong tag":         h("0a0101"),
		"trailing":          h("02010100"),
		"truncated element": h("0202"),
	} {
		_, err := rd.Int32(b, "n")
		refused(t, name, err, "n")
	}
}

func TestReadOID(t *testing.T) {
	ntlm := h("2b06010401823702020a")
	s := cryptobyte.String(append(elem(asn1.OBJECT_IDENTIFIER, ntlm), 0x05, 0x00))
	o, err := rd.ReadOID(&s, "mech")
	if err != nil || !bytes.Equal(o, ntlm) || !bytes.Equal(s, h("0500")) {
		t.Fatalf("%x %v rest %x", o, err, []byte(s))
	}
	long := bytes.Repeat([]byte{0x01}, MaxOIDBytes+1)
	for name, b := range map[string][]byte{
		"empty":              h("0600"),
		"truncated":          h("06022a86"),
		"not minimal":        h("0603802a01"),
		"longer than limit":  elem(asn1.OBJECT_IDENTIFIER, long),
		"wrong tag":          h("0400"),
		"nothing":            nil,
		"sub-identifier big": h("06072a8fffffffff7f"),
	} {
		s := cryptobyte.String(b)
		_, err := rd.ReadOID(&s, "mech")
		refused(t, name, err, "mech")
	}
}

func TestInitialContextToken(t *testing.T) {
	oid := h("2b0601050502")
	tok := elem(TagApp0, elem(asn1.OBJECT_IDENTIFIER, oid), h("a000"))
	o, inner, err := rd.InitialContextToken(tok, 100)
	if err != nil || !bytes.Equal(o, oid) || !bytes.Equal(inner, h("a000")) {
		t.Fatalf("%x %x %v", o, inner, err)
	}
	if _, _, err := rd.InitialContextToken(tok, len(tok)-1); !errors.Is(err, authn.ErrMalformed) {
		t.Errorf("over the limit: %v", err)
	}
	for name, b := range map[string][]byte{
		"trailing": append(append([]byte{}, tok...), 0),
		"no OID":   elem(TagApp0, h("0400")),
		"empty":    elem(TagApp0),
		"not 0x60": elem(asn1.SEQUENCE, elem(asn1.OBJECT_IDENTIFIER, oid)),
	} {
		_, _, err := rd.InitialContextToken(b, 100)
		refused(t, name, err, "InitialContextToken")
	}
}

// FuzzDER feeds every reader the same bytes: none may panic, every refusal
// is ErrMalformed naming the protocol, and whatever is accepted encodes
// back to exactly the input (DER has one encoding per value).
func FuzzDER(f *testing.F) {
	for _, s := range []string{"0400", "0401ff", "a003020101", "a0030201ffa2020400", "06062b0601050502",
		"600a06062b0601050502a000", "02020006", "048000", "04810100", "1f810100", "a1053003a00100"} {
		f.Add(h(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(err error) bool {
			if err == nil {
				return true
			}
			if !errors.Is(err, authn.ErrMalformed) || !strings.HasPrefix(err.Error(), "test: ") {
				t.Fatalf("error %q", err)
			}
			return false
		}
		if len(b) > 0 && b[0]&0x1f != 0x1f {
			tag := asn1.Tag(b[0])
			if v, err := rd.Only(b, tag, "only"); check(err) && !bytes.Equal(elem(tag, v), b) {
				t.Fatalf("Only: %x re-encodes as %x", b, elem(tag, v))
			}
		}
		if fs, err := rd.Fields(b, 5, "fields"); check(err) {
			var out []byte
			for i, v := range fs {
				if v != nil {
					out = append(out, elem(Context(i), v)...)
				}
			}
			if !bytes.Equal(out, b) {
				t.Fatalf("Fields: %x re-encodes as %x", b, out)
			}
		}
		if n, err := rd.Int32(b, "int"); check(err) {
			var e cryptobyte.Builder
			e.AddASN1Int64(int64(n))
			if !bytes.Equal(e.BytesOrPanic(), b) {
				t.Fatalf("Int32: %x re-encodes differently", b)
			}
		}
		s := cryptobyte.String(b)
		if o, err := rd.ReadOID(&s, "oid"); check(err) {
			if got := append(elem(asn1.OBJECT_IDENTIFIER, o), s...); !bytes.Equal(got, b) || len(o) > MaxOIDBytes {
				t.Fatalf("ReadOID: %x re-encodes as %x", b, got)
			}
		}
		if o, inner, err := rd.InitialContextToken(b, 1<<16); check(err) {
			if got := elem(TagApp0, elem(asn1.OBJECT_IDENTIFIER, o), inner); !bytes.Equal(got, b) {
				t.Fatalf("InitialContextToken: %x re-encodes as %x", b, got)
			}
		}
	})
}
