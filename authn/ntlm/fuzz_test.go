package ntlm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"
	"unsafe"

	"github.com/winrmd/winrmd/authn"
)

var fuzzNegotiate = []byte("NTLMSSP\x00\x01\x00\x00\x00\x33\x82\x8a\xe2")

// negotiateRows are the table of first messages; they seed FuzzParseNegotiate.
var negotiateRows = []struct {
	name string
	msg  []byte
	ok   bool
}{
	{"16 bytes", []byte("NTLMSSP\x00\x01\x00\x00\x00\x00\x00\x00\x00"), true},
	{"curl 32 bytes", append([]byte("NTLMSSP\x00\x01\x00\x00\x00\x06\x82\x08\x00"), make([]byte, 16)...), true},
	{"windows 40 bytes", []byte("NTLMSSP\x00\x01\x00\x00\x00\xb7\x82\x08\xe2\x00\x00\x00\x00\x28\x00\x00\x00\x00\x00\x00\x00\x28\x00\x00\x00\x0a\x00\x61\x4a\x00\x00\x00\x0f"), true},
	{"domain field", append([]byte("NTLMSSP\x00\x01\x00\x00\x00\x07\x32\x00\x00\x06\x00\x06\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), "DOMAIN"...), true},
	{"domain field out of range", []byte("NTLMSSP\x00\x01\x00\x00\x00\x07\x32\x00\x00\x06\x00\x06\x00\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), false},
	{"domain field offset overflow", []byte("NTLMSSP\x00\x01\x00\x00\x00\x07\x32\x00\x00\x06\x00\x06\x00\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00"), false},
	{"12 bytes", []byte("NTLMSSP\x00\x01\x00\x00\x00"), false},
	{"wrong signature", []byte("NTLMSSX\x00\x01\x00\x00\x00\x00\x00\x00\x00"), false},
	{"type 3 first", []byte("NTLMSSP\x00\x03\x00\x00\x00\x00\x00\x00\x00"), false},
	{"empty", nil, false},
	{"too big", append([]byte("NTLMSSP\x00\x01\x00\x00\x00\x00\x00\x00\x00"), make([]byte, MaxMessageSize)...), false},
}

func TestParseNegotiateTable(t *testing.T) {
	for _, r := range negotiateRows {
		_, err := parseNegotiate(r.msg)
		if (err == nil) != r.ok {
			t.Errorf("%s: err = %v", r.name, err)
		}
		if err != nil && !errors.Is(err, authn.ErrMalformed) {
			t.Errorf("%s: error %v does not wrap ErrMalformed", r.name, err)
		}
	}
}

func FuzzParseNegotiate(f *testing.F) {
	for _, r := range negotiateRows {
		f.Add(r.msg)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		a := NewAcceptor(Config{Verifier: NewNTHashVerifier(mapSource{}), NetBIOSComputer: "S", DNSComputer: "s"})
		out, done, err := a.Step(context.Background(), authn.ConnInfo{}, msg)
		if err != nil {
			if out != nil || done {
				t.Fatal("output with error")
			}
			return
		}
		// Whatever the client asked, the challenge is well formed and has
		// exactly one character set.
		f := binary.LittleEndian.Uint32(out[20:])
		if (f&FlagUnicode != 0) == (f&FlagOEM != 0) || f&FlagLMKey != 0 {
			t.Fatalf("challenge flags %#x", f)
		}
		ti, _, err := field(out, 40, challengeHeader, MaxMessageSize, "ti")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := parseAVPairs(ti); err != nil {
			t.Fatal(err)
		}
	})
}

// fuzzAcceptor is deterministic: fixed challenge and time.
func fuzzAcceptor() *Acceptor {
	a := NewAcceptor(Config{
		Verifier:        NewNTHashVerifier(mapSource{vUser: NTHash(vPassword)}),
		NetBIOSComputer: "SERVER",
		DNSComputer:     "server",
		Now:             func() time.Time { return time.Unix(1700000000, 0) },
	})
	a.rand = fixedReader(vServerChallenge)
	return a
}

// micAuthenticate is vectorAuthenticate with MsvAvFlags=MIC and a valid MIC
// for fuzzAcceptor's CHALLENGE.
func micAuthenticate(t testing.TB) []byte {
	a := fuzzAcceptor()
	ch, _, err := a.Step(context.Background(), authn.ConnInfo{}, fuzzNegotiate)
	if err != nil {
		t.Fatal(err)
	}
	respKey := NTOWFv2(NTHash(vPassword), vUser, vDomain)
	var temp []byte
	temp = append(temp, 1, 1, 0, 0, 0, 0, 0, 0)
	temp = append(temp, make([]byte, 8)...)
	temp = append(temp, vClientChallenge...)
	temp = append(temp, 0, 0, 0, 0)
	temp = appendAV(temp, avFlags, []byte{2, 0, 0, 0})
	temp = appendAV(temp, avChannelBindings, make([]byte, 16))
	temp = appendAV(temp, avTargetName, encodeUTF16("HTTP/server"))
	temp = appendAV(temp, avEOL, nil)
	temp = append(temp, 0, 0, 0, 0)
	proof := ntProofStr(respKey, vServerChallenge, temp)
	nt := append(proof, temp...)
	sbk := sessionBaseKeyV2(respKey, proof)
	enc := rc4Once(sbk, vRandomKey)
	payload := [][]byte{make([]byte, 24), nt, encodeUTF16(vDomain), encodeUTF16(vUser), encodeUTF16("WS"), enc}
	msg := make([]byte, 88)
	copy(msg, signature)
	binary.LittleEndian.PutUint32(msg[8:], typeAuthenticate)
	off := 88
	for i, p := range payload {
		putField(msg[12+8*i:], len(p), off)
		off += len(p)
	}
	binary.LittleEndian.PutUint32(msg[60:], vFlags)
	for _, p := range payload {
		msg = append(msg, p...)
	}
	copy(msg[72:], computeMIC(vRandomKey, fuzzNegotiate, ch, msg, 72))
	return msg
}

// authenticateRows seed FuzzParseAuthenticate.
func authenticateRows(t testing.TB) []struct {
	name string
	msg  []byte
	err  error // nil = success
} {
	valid := vectorAuthenticate(t)
	withMIC := micAuthenticate(t)
	mut := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	return []struct {
		name string
		msg  []byte
		err  error
	}{
		{"vector", valid, nil},
		{"vector with MIC", withMIC, nil},
		{"MIC flipped", mut(withMIC, func(b []byte) []byte { b[80] ^= 1; return b }), authn.ErrBadCredentials},
		{"truncated header", valid[:63], authn.ErrMalformed},
		{"truncated payload", valid[:len(valid)-1], authn.ErrMalformed},
		{"nt offset overflow", mut(valid, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[24:], 0xffffffff); return b }), authn.ErrMalformed},
		{"nt offset inside header", mut(valid, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[24:], 8); return b }), authn.ErrMalformed},
		{"user odd length", mut(valid, func(b []byte) []byte { b[36]--; return b }), authn.ErrMalformed},
		{"NTLMv1", mut(valid, func(b []byte) []byte { b[20], b[21] = 24, 0; return b }), authn.ErrUnsupported},
		{"LM only", mut(valid, func(b []byte) []byte { b[20], b[21] = 0, 0; return b }), authn.ErrUnsupported},
		{"anonymous flag", mut(valid, func(b []byte) []byte { b[61] |= 0x08; return b }), authn.ErrUnsupported},
		{"short blob", mut(valid, func(b []byte) []byte { b[20], b[21] = 40, 0; return b }), authn.ErrMalformed},
		{"KEY_EXCH short key", mut(valid, func(b []byte) []byte { b[52], b[53] = 8, 0; return b }), authn.ErrMalformed},
		{"type 1", mut(valid, func(b []byte) []byte { b[8] = 1; return b }), authn.ErrMalformed},
		{"flipped proof", mut(valid, func(b []byte) []byte {
			o := binary.LittleEndian.Uint32(b[24:])
			b[o] ^= 1
			return b
		}), authn.ErrBadCredentials},
	}
}

func TestParseAuthenticateTable(t *testing.T) {
	for _, r := range authenticateRows(t) {
		a := fuzzAcceptor()
		if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, fuzzNegotiate); err != nil {
			t.Fatal(err)
		}
		_, done, err := a.Step(context.Background(), authn.ConnInfo{}, r.msg)
		if r.err == nil {
			if err != nil || !done {
				t.Errorf("%s: %v", r.name, err)
			}
			continue
		}
		if !errors.Is(err, r.err) {
			t.Errorf("%s: got %v, want %v", r.name, err, r.err)
		}
	}
}

func FuzzParseAuthenticate(f *testing.F) {
	for _, r := range authenticateRows(f) {
		f.Add(r.msg)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if m, err := parseAuthenticate(msg); err == nil {
			for _, s := range [][]byte{m.lm, m.nt, m.domain, m.user, m.workstation, m.encKey, m.mic} {
				if len(s) > 0 && !within(msg, s) {
					t.Fatal("field outside message")
				}
			}
		}
		a := fuzzAcceptor()
		if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, fuzzNegotiate); err != nil {
			t.Fatal(err)
		}
		_, done, err := a.Step(context.Background(), authn.ConnInfo{}, msg)
		if (err == nil) != done {
			t.Fatalf("done=%v err=%v", done, err)
		}
		if err != nil {
			if a.Sealer() != nil || a.Session() != nil || a.Principal() != (authn.Principal{}) {
				t.Fatal("failed context leaks state")
			}
			return
		}
		if a.Principal().Name == "" {
			t.Fatal("empty principal")
		}
		if s := a.Sealer(); s != nil {
			sig, data, err := s.Seal([]byte("x"))
			if err != nil || len(sig) != SignatureSize || len(data) != 1 {
				t.Fatal("seal after fuzzed handshake")
			}
		}
	})
}

// within reports whether s lies inside buf's memory.
func within(buf, s []byte) bool {
	b0 := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	s0 := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	return s0 >= b0 && s0+uintptr(len(s)) <= b0+uintptr(len(buf))
}

func BenchmarkSeal64K(b *testing.B) {
	s := newSession(vFlags, vRandomKey, true)
	msg := bytes.Repeat([]byte("<s:Envelope/>"), 64<<10/13)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := s.Seal(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnseal64K(b *testing.B) {
	c := newSession(vFlags, vRandomKey, false)
	s := newSession(vFlags, vRandomKey, true)
	msg := bytes.Repeat([]byte("<s:Envelope/>"), 64<<10/13)
	type pair struct{ sig, data []byte }
	const batch = 64
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.StopTimer()
	for i := 0; i < b.N; i += batch {
		n := min(batch, b.N-i)
		ps := make([]pair, n)
		for j := range ps {
			ps[j].sig, ps[j].data, _ = c.Seal(msg)
		}
		b.StartTimer()
		for _, p := range ps {
			if _, err := s.Unseal(p.sig, p.data); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
	}
}

func BenchmarkHandshake(b *testing.B) {
	auth := micAuthenticate(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		a := fuzzAcceptor()
		if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, fuzzNegotiate); err != nil {
			b.Fatal(err)
		}
		if _, done, err := a.Step(context.Background(), authn.ConnInfo{}, auth); err != nil || !done {
			b.Fatal(err)
		}
	}
}
