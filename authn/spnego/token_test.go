package spnego

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/internal/der"
	"github.com/winrmd/winrmd/authn/ntlm"
)

// DER identifier octets the table rows are written with (untyped, so that
// they also fit in a []byte literal).
const (
	tagInteger     = 0x02
	tagBitString   = 0x03
	tagOctetString = 0x04
	tagOID         = 0x06
	tagEnumerated  = 0x0a
	tagSequence    = 0x30
	tagApp0        = 0x60
)

var ctx = der.Context

var wrap = der.Element

func h(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// initWith builds a SPNEGO initial token from a MechTypeList and further
// NegTokenInit fields, so that table rows stay valid except where meant.
func initWith(mechTypes []byte, fields ...[]byte) []byte {
	body := [][]byte{wrap(ctx(0), mechTypes)}
	body = append(body, fields...)
	return wrap(tagApp0, wrap(tagOID, oidSPNEGO), wrap(ctx(0), wrap(tagSequence, body...)))
}

var (
	ntlmNegotiate = []byte("NTLMSSP\x00\x01\x00\x00\x00\x00\x00\x00\x00")
	mechNTLM      = wrap(tagSequence, wrap(tagOID, oidNTLM))
	goodInit      = initWith(mechNTLM, wrap(ctx(2), wrap(tagOctetString, ntlmNegotiate)))
)

// tokenRows are first tokens; they seed FuzzSPNEGO.
var tokenRows = []struct {
	name string
	tok  []byte
	err  error // nil = accepted
}{
	{"good init", goodInit, nil},
	{"init without mechToken", initWith(mechNTLM), nil},
	{"init with reqFlags", initWith(mechNTLM, wrap(ctx(1), []byte{tagBitString, 2, 7, 0x80}), wrap(ctx(2), wrap(tagOctetString, ntlmNegotiate))), nil},
	{"init with MIC before completion", initWith(mechNTLM, wrap(ctx(2), wrap(tagOctetString, ntlmNegotiate)), wrap(ctx(3), wrap(tagOctetString, []byte{1}))), authn.ErrMalformed},
	{"raw NTLM", ntlmNegotiate, nil},
	{"long-form lengths, junk mechToken", initWith(wrap(tagSequence, wrap(tagOID, oidNTLM)), wrap(ctx(2), wrap(tagOctetString, bytes.Repeat([]byte{0}, 300)))), authn.ErrMalformed},
	{"indefinite length", h("6080"), authn.ErrMalformed},
	{"non-minimal length", h("60810506032a0304"), authn.ErrMalformed},
	{"length with leading zero", h("6082000506032a0304"), authn.ErrMalformed},
	{"length of 4 octets", h("608400000005"), authn.ErrMalformed},
	{"length overruns", h("607f0603"), authn.ErrMalformed},
	{"trailing bytes after token", append(append([]byte(nil), goodInit...), 0), authn.ErrMalformed},
	{"high tag number", h("7f810100"), authn.ErrMalformed},
	{"empty", nil, authn.ErrMalformed},
	{"one byte", []byte{0x60}, authn.ErrMalformed},
	{"NegTokenResp first", h("a1053003a00100"), authn.ErrMalformed},
	{"unknown first byte", []byte("hello"), authn.ErrMalformed},
	{"bad OID encoding", h("6004060280"), authn.ErrMalformed},
	{"OID not minimal", h("600506038001ff"), authn.ErrMalformed},
	{"unknown mech", h("600506032a0304"), authn.ErrUnsupported},
	{"no mechTypes", wrap(tagApp0, wrap(tagOID, oidSPNEGO), wrap(ctx(0), wrap(tagSequence))), authn.ErrMalformed},
	{"empty mechTypes", initWith(wrap(tagSequence)), authn.ErrMalformed},
	{"mechTypes not OIDs", initWith(wrap(tagSequence, wrap(tagOctetString, oidNTLM))), authn.ErrMalformed},
	{"too many mechTypes", initWith(wrap(tagSequence, bytes.Repeat(wrap(tagOID, oidNEGOEX), 40))), authn.ErrMalformed},
	{"fields out of order", wrap(tagApp0, wrap(tagOID, oidSPNEGO), wrap(ctx(0), wrap(tagSequence, wrap(ctx(2), wrap(tagOctetString, ntlmNegotiate)), wrap(ctx(0), mechNTLM)))), authn.ErrMalformed},
	{"duplicate field", initWith(mechNTLM, wrap(ctx(2), wrap(tagOctetString, ntlmNegotiate)), wrap(ctx(2), wrap(tagOctetString, ntlmNegotiate))), authn.ErrMalformed},
	{"unknown field [4]", initWith(mechNTLM, wrap(ctx(4), wrap(tagOctetString, nil))), authn.ErrMalformed},
	{"mechToken not OCTET STRING", initWith(mechNTLM, wrap(ctx(2), wrap(tagSequence, ntlmNegotiate))), authn.ErrMalformed},
	{"mechToken with trailing element", initWith(mechNTLM, wrap(ctx(2), wrap(tagOctetString, ntlmNegotiate), wrap(tagOctetString, nil))), authn.ErrMalformed},
	{"reqFlags not BIT STRING", initWith(mechNTLM, wrap(ctx(1), wrap(tagInteger, []byte{1}))), authn.ErrMalformed},
	{"NegTokenResp inside GSS framing", wrap(tagApp0, wrap(tagOID, oidSPNEGO), wrap(ctx(1), wrap(tagSequence))), authn.ErrMalformed},
	{"mechToken is not NTLM", initWith(mechNTLM, wrap(ctx(2), wrap(tagOctetString, []byte("junk")))), authn.ErrMalformed},
}

func newTestAcceptor() *Acceptor {
	return NewAcceptor(Config{NTLM: func() *ntlm.Acceptor {
		return ntlm.NewAcceptor(ntlm.Config{Verifier: ntlm.NewNTHashVerifier(nil), NetBIOSComputer: "S", DNSComputer: "s"})
	}}).(*Acceptor)
}

func TestTokenTable(t *testing.T) {
	for _, r := range tokenRows {
		_, _, err := newTestAcceptor().Step(context.Background(), authn.ConnInfo{}, r.tok)
		if r.err == nil && err != nil || r.err != nil && !errors.Is(err, r.err) {
			t.Errorf("%s: got %v, want %v", r.name, err, r.err)
		}
	}
}

// respRows are second-leg tokens after goodInit.
var respRows = []struct {
	name string
	tok  []byte
	err  error
}{
	{"negState out of range", wrap(ctx(1), wrap(tagSequence, wrap(ctx(0), []byte{tagEnumerated, 1, 9}))), authn.ErrMalformed},
	{"negState two bytes", wrap(ctx(1), wrap(tagSequence, wrap(ctx(0), []byte{tagEnumerated, 2, 0, 1}))), authn.ErrMalformed},
	{"reject", wrap(ctx(1), wrap(tagSequence, wrap(ctx(0), []byte{tagEnumerated, 1, 2}))), authn.ErrBadCredentials},
	{"no responseToken", wrap(ctx(1), wrap(tagSequence)), authn.ErrMalformed},
	{"other supportedMech", wrap(ctx(1), wrap(tagSequence, wrap(ctx(1), wrap(tagOID, oidKRB5)), wrap(ctx(2), wrap(tagOctetString, []byte("x"))))), authn.ErrMalformed},
	{"GSS framing again", goodInit, authn.ErrMalformed},
	{"responseToken junk", wrap(ctx(1), wrap(tagSequence, wrap(ctx(2), wrap(tagOctetString, []byte("NTLMSSP\x00\x03\x00\x00\x00"))))), authn.ErrMalformed},
	{"trailing garbage", append(wrap(ctx(1), wrap(tagSequence)), 0, 0), authn.ErrMalformed},
}

func TestRespTable(t *testing.T) {
	for _, r := range respRows {
		a := newTestAcceptor()
		if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, goodInit); err != nil {
			t.Fatal(err)
		}
		_, _, err := a.Step(context.Background(), authn.ConnInfo{}, r.tok)
		if !errors.Is(err, r.err) {
			t.Errorf("%s: got %v, want %v", r.name, err, r.err)
		}
	}
}

func TestDERWriterMinimal(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 255, 256, 65535, 65536} {
		b := wrap(tagOctetString, make([]byte, n))
		v, err := rd.Only(b, tagOctetString, "test")
		if err != nil || len(v) != n {
			t.Errorf("length %d: %v", n, err)
		}
	}
	// The mechListMIC is computed over the MechTypeList exactly as received.
	_, inner, _ := rd.InitialContextToken(goodInit, authn.MaxTokenSize)
	ti, err := parseNegTokenInit(inner)
	if err != nil || !bytes.Equal(ti.mechTypesDER, mechNTLM) {
		t.Fatalf("mechTypesDER %x, %v", ti.mechTypesDER, err)
	}
}

func FuzzSPNEGO(f *testing.F) {
	for _, r := range tokenRows {
		f.Add(r.tok, []byte(nil))
	}
	for _, r := range respRows {
		f.Add(goodInit, r.tok)
	}
	f.Fuzz(func(t *testing.T, first, second []byte) {
		a := newTestAcceptor()
		out, done, err := a.Step(context.Background(), authn.ConnInfo{}, first)
		if err != nil {
			if out != nil || done || a.Principal() != (authn.Principal{}) || a.Sealer() != nil {
				t.Fatal("failed step leaks state")
			}
			return
		}
		if a.mode == modeSPNEGO {
			if _, err := parseNegTokenResp(out); err != nil {
				t.Fatalf("our own reply does not parse: %v", err)
			}
		}
		if second == nil {
			return
		}
		out, done, err = a.Step(context.Background(), authn.ConnInfo{}, second)
		if err != nil {
			return
		}
		if done && a.Principal().Name == "" {
			t.Fatal("done without principal")
		}
		if out != nil && a.mode == modeSPNEGO {
			if _, err := parseNegTokenResp(out); err != nil {
				t.Fatalf("our own reply does not parse: %v", err)
			}
		}
	})
}

// Refusals name the field at fault: the log is all an operator has.
func TestErrorsNameTheField(t *testing.T) {
	fields := map[string]string{
		"mechToken not OCTET STRING": "spnego: mechToken: tag 0x30",
		"reqFlags not BIT STRING":    "spnego: reqFlags: tag 0x2",
		"mechTypes not OIDs":         "spnego: mechTypes: tag 0x4",
		"fields out of order":        "spnego: NegTokenInit: unexpected element 0xa0",
		"unknown field [4]":          "spnego: NegTokenInit: unexpected element 0xa4",
		"trailing bytes after token": "spnego: InitialContextToken: 1 trailing bytes",
		"OID not minimal":            "spnego: InitialContextToken mechanism: OID",
		"non-minimal length":         "spnego: InitialContextToken: not a DER element",
	}
	for _, r := range tokenRows {
		want, ok := fields[r.name]
		if !ok {
			continue
		}
		delete(fields, r.name)
		_, _, err := newTestAcceptor().Step(context.Background(), authn.ConnInfo{}, r.tok)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want it to start %q", r.name, err, want)
		}
	}
	for name := range fields {
		t.Errorf("no row %q", name)
	}
}
