package sealing_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
	"github.com/winrmd/winrmd/authn/ntlm/ntlmtest"
	"github.com/winrmd/winrmd/authn/sealing"
)

const (
	vectorFlags = 0xE28A8233 // MS-NLMP 4.2.4
	spnegoCT    = `multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary"`
)

var vectorKey = bytes.Repeat([]byte{0x55}, 16)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// clientSealer adapts the spec-derived test client to authn.Sealer.
type clientSealer struct{ s *ntlmtest.Session }

func (c clientSealer) Seal(p []byte) ([]byte, []byte, error) {
	sig, d := c.s.Seal(p)
	return sig, d, nil
}
func (c clientSealer) Unseal(sig, d []byte) ([]byte, error) { return c.s.Unseal(sig, d) }

// pywinrmBody frames one part exactly as pywinrm/pypsrp do.
func pywinrmBody(protocol string, length int, wire []byte) []byte {
	return []byte(fmt.Sprintf("--Encrypted Boundary\r\n\tContent-Type: %s\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=%d\r\n--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n%s--Encrypted Boundary--\r\n",
		protocol, length, wire))
}

// TestVectorPart decodes the WinRM part of PROTOCOL 6.2.
func TestVectorPart(t *testing.T) {
	wire := unhex("10000000 010000007fb38ec5c55d497600000000 54e50165bf1936dc996020c1811b0f06fb5f")
	body := pywinrmBody(sealing.ProtocolSPNEGO, 18, wire)
	plain, proto, err := sealing.Decode(spnegoCT, body, 1000, ntlm.NewServerSession(vectorFlags, vectorKey))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, ntlmtest.UTF16("Plaintext")) || proto != sealing.ProtocolSPNEGO {
		t.Fatalf("plain %q proto %q", plain, proto)
	}
}

// TestEncodeExact checks the emitted bytes byte for byte: the client side
// of the same vector, framed, must be what pywinrm would send.
func TestEncodeExact(t *testing.T) {
	body, ct, err := sealing.Encode(sealing.ProtocolSPNEGO, ntlmtest.UTF16("Plaintext"), clientSealer{ntlmtest.NewSession(vectorFlags, vectorKey)})
	if err != nil {
		t.Fatal(err)
	}
	if ct != spnegoCT {
		t.Errorf("content type %q", ct)
	}
	want := pywinrmBody(sealing.ProtocolSPNEGO, 18, unhex("10000000 010000007fb38ec5c55d497600000000 54e50165bf1936dc996020c1811b0f06fb5f"))
	if !bytes.Equal(body, want) {
		t.Fatalf("body\n%q\nwant\n%q", body, want)
	}
	if !bytes.HasSuffix(body, []byte("--Encrypted Boundary--\r\n")) || cap(body) != len(body) {
		t.Errorf("trailer or capacity: len %d cap %d", len(body), cap(body))
	}
}

// pair returns a server sealer and the matching client session.
func pair() (authn.Sealer, *ntlmtest.Session) {
	return ntlm.NewServerSession(vectorFlags, vectorKey), ntlmtest.NewSession(vectorFlags, vectorKey)
}

func TestRoundTrips(t *testing.T) {
	for _, proto := range []string{sealing.ProtocolSPNEGO, sealing.ProtocolKerberos, sealing.ProtocolCredSSP} {
		for _, size := range []int{0, 1, 16384, 16385, 40000, 100000} {
			srv, cl := pair()
			msg := bytes.Repeat([]byte("<s:Envelope/>"), size/13+1)[:size]
			// client -> server
			body, ct, err := sealing.Encode(proto, msg, clientSealer{cl})
			if err != nil {
				t.Fatal(err)
			}
			multi := proto == sealing.ProtocolCredSSP && size > sealing.ChunkSize
			if multi != strings.HasPrefix(ct, "multipart/x-multi-encrypted;") {
				t.Errorf("%s %d: content type %q", proto, size, ct)
			}
			if !sealing.IsEncrypted(ct) {
				t.Errorf("IsEncrypted(%q) false", ct)
			}
			if want := (size + sealing.ChunkSize - 1) / sealing.ChunkSize; multi && bytes.Count(body, []byte("OriginalContent")) != want {
				t.Errorf("%d parts, want %d", bytes.Count(body, []byte("OriginalContent")), want)
			}
			plain, got, err := sealing.Decode(ct, body, 200000, srv)
			if err != nil || !bytes.Equal(plain, msg) || got != proto {
				t.Fatalf("%s %d: decode: %v (%q)", proto, size, err, got)
			}
			// server -> client
			body, ct, err = sealing.Encode(proto, msg, srv)
			if err != nil {
				t.Fatal(err)
			}
			plain, _, err = sealing.Decode(ct, body, 200000, clientSealer{cl})
			if err != nil || !bytes.Equal(plain, msg) {
				t.Fatalf("%s %d: client decode: %v", proto, size, err)
			}
			// AppendEncode into a buffer that held an earlier body (the
			// server's bodyPool), both ways; after a prefix, which it
			// leaves alone.
			reuse := bytes.Repeat([]byte{0xee}, 2*len(body)+64)
			body, ct, err = sealing.AppendEncode(reuse[:0], proto, msg, srv)
			if err != nil {
				t.Fatal(err)
			}
			if plain, _, err = sealing.Decode(ct, body, 200000, clientSealer{cl}); err != nil || !bytes.Equal(plain, msg) {
				t.Fatalf("%s %d: client decode of a reused buffer: %v", proto, size, err)
			}
			body, ct, err = sealing.AppendEncode(append(reuse[:0], "prefix"...), proto, msg, clientSealer{cl})
			if err != nil || string(body[:6]) != "prefix" {
				t.Fatalf("%s %d: AppendEncode after a prefix: %q, %v", proto, size, body[:min(6, len(body))], err)
			}
			if plain, _, err = sealing.Decode(ct, body[6:], 200000, srv); err != nil || !bytes.Equal(plain, msg) {
				t.Fatalf("%s %d: decode of a body appended after a prefix: %v", proto, size, err)
			}
		}
	}
}

// fakeSealer "encrypts" by copying and appends extra bytes to the data, as
// a TLS record is longer than its plaintext.
type fakeSealer struct{ extra int }

func (f fakeSealer) Seal(p []byte) ([]byte, []byte, error) {
	return []byte("SIG!"), append(append([]byte(nil), p...), bytes.Repeat([]byte{'~'}, f.extra)...), nil
}

func (f fakeSealer) Unseal(sig, d []byte) ([]byte, error) {
	if string(sig) != "SIG!" || len(d) < f.extra || !bytes.Equal(d[len(d)-f.extra:], bytes.Repeat([]byte{'~'}, f.extra)) {
		return nil, errors.New("fake: bad signature")
	}
	return d[:len(d)-f.extra], nil
}

// TestBoundaryInsideCiphertext: ciphertext that contains the delimiter does
// not cut the part short.
func TestBoundaryInsideCiphertext(t *testing.T) {
	evil := []byte("a--Encrypted Boundary\r\nb--Encrypted Boundary--\r\nc-- Encrypted Boundary\r\n")
	for _, extra := range []int{0, 29} {
		for _, proto := range []string{sealing.ProtocolSPNEGO, sealing.ProtocolCredSSP} {
			msg := bytes.Repeat(evil, 500) // > 16 KiB: several CredSSP parts
			body, ct, err := sealing.Encode(proto, msg, fakeSealer{extra})
			if err != nil {
				t.Fatal(err)
			}
			// The data is found by its Length first, so lookalikes inside
			// it do not matter, with or without extra bytes after it.
			plain, _, err := sealing.Decode(ct, body, 1<<20, fakeSealer{extra})
			if err != nil || !bytes.Equal(plain, msg) {
				t.Errorf("extra=%d %s: %v", extra, proto, err)
			}
		}
	}
	// Data longer than Length with no boundary lookalike: found by search.
	msg := []byte(strings.Repeat("x", 40000))
	body, ct, _ := sealing.Encode(sealing.ProtocolCredSSP, msg, fakeSealer{29})
	if plain, _, err := sealing.Decode(ct, body, 1<<20, fakeSealer{29}); err != nil || !bytes.Equal(plain, msg) {
		t.Errorf("longer data: %v", err)
	}
}

// Lenient parsing of what other implementations send.
func TestLenientShapes(t *testing.T) {
	srvCT := spnegoCT
	mk := func(f func(wire []byte) []byte, ct string) (string, []byte, *ntlmtest.Session) {
		_, cl := pair()
		sig, data := cl.Seal([]byte("<s:Envelope>hello</s:Envelope>"))
		wire := binary.LittleEndian.AppendUint32(nil, uint32(len(sig)))
		wire = append(append(wire, sig...), data...)
		return ct, f(wire), cl
	}
	for _, tc := range []struct {
		name string
		ct   string
		body func(wire []byte) []byte
	}{
		{"pywinrm", srvCT, func(w []byte) []byte { return pywinrmBody(sealing.ProtocolSPNEGO, 30, w) }},
		{"OMI: no TABs, CRLF after trailer", srvCT, func(w []byte) []byte {
			return []byte("--Encrypted Boundary\r\nContent-Type: application/HTTP-SPNEGO-session-encrypted\r\nOriginalContent: type=application/soap+xml;charset=UTF-8;Length=30\r\n--Encrypted Boundary\r\nContent-Type: application/octet-stream\r\n" + string(w) + "--Encrypted Boundary--\r\n\r\n")
		}},
		{"Exchange: space after --", srvCT, func(w []byte) []byte {
			return []byte("-- Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=30\r\n-- Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n" + string(w) + "-- Encrypted Boundary--\r\n")
		}},
		{"case and spacing", `Multipart/Encrypted ; Protocol = "application/http-spnego-session-encrypted" ; boundary=Encrypted Boundary ;`, func(w []byte) []byte {
			return []byte("--Encrypted Boundary\r\n  content-type:application/http-spnego-session-encrypted\r\n originalcontent: type=application/soap+xml; charset=UTF-8; length=30\r\n--Encrypted Boundary\r\n content-type:  Application/Octet-Stream\r\n" + string(w) + "--Encrypted Boundary--")
		}},
		{"LF line ends, no boundary param", `multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted"`, func(w []byte) []byte {
			return []byte("--Encrypted Boundary\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=30\n--Encrypted Boundary\n\tContent-Type: application/octet-stream\n" + string(w) + "--Encrypted Boundary--\r\n")
		}},
		{"CRLF between data and trailer", `multipart/encrypted;boundary="Encrypted Boundary"`, func(w []byte) []byte {
			b := pywinrmBody(sealing.ProtocolSPNEGO, 30, w)
			return bytes.Replace(b, []byte("--Encrypted Boundary--"), []byte("\r\n--Encrypted Boundary--"), 1)
		}},
		{"leading CRLF", srvCT, func(w []byte) []byte { return append([]byte("\r\n"), pywinrmBody(sealing.ProtocolSPNEGO, 30, w)...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, body, _ := mk(tc.body, tc.ct)
			plain, proto, err := sealing.Decode(ct, body, 1000, ntlm.NewServerSession(vectorFlags, vectorKey))
			if err != nil || string(plain) != "<s:Envelope>hello</s:Envelope>" || proto != sealing.ProtocolSPNEGO {
				t.Fatalf("%q %q %v", plain, proto, err)
			}
		})
	}
}

// decodeErrRows are bodies Decode must refuse; they seed FuzzDecode.
func decodeErrRows() []struct {
	name string
	ct   string
	body []byte
	want error
} {
	_, cl := pair()
	sig, data := cl.Seal([]byte("<s:Envelope>hello</s:Envelope>"))
	wire := binary.LittleEndian.AppendUint32(nil, uint32(len(sig)))
	wire = append(append(wire, sig...), data...)
	good := pywinrmBody(sealing.ProtocolSPNEGO, 30, wire)
	repl := func(old, new string) []byte {
		return bytes.Replace(append([]byte(nil), good...), []byte(old), []byte(new), 1)
	}
	return []struct {
		name string
		ct   string
		body []byte
		want error
	}{
		{"good", spnegoCT, good, nil},
		{"truncated body", spnegoCT, good[:len(good)-30], authn.ErrMalformed},
		{"truncated in header", spnegoCT, good[:60], authn.ErrMalformed},
		{"no trailer", spnegoCT, good[:len(good)-len("--Encrypted Boundary--\r\n")], authn.ErrMalformed},
		{"sig_len zero", spnegoCT, repl("octet-stream\r\n\x10\x00\x00\x00", "octet-stream\r\n\x00\x00\x00\x00"), authn.ErrMalformed},
		{"sig_len huge", spnegoCT, repl("octet-stream\r\n\x10\x00\x00\x00", "octet-stream\r\n\xff\xff\xff\x7f"), authn.ErrMalformed},
		{"sig_len 12", spnegoCT, repl("octet-stream\r\n\x10\x00\x00\x00", "octet-stream\r\n\x0c\x00\x00\x00"), ntlm.ErrIntegrity},
		{"wrong boundary", strings.Replace(spnegoCT, "Encrypted Boundary", "Other", 1), good, authn.ErrMalformed},
		{"Length mismatch", spnegoCT, repl("Length=30", "Length=29"), authn.ErrMalformed},
		{"Length not a number", spnegoCT, repl("Length=30", "Length=3x"), authn.ErrMalformed},
		{"Length negative", spnegoCT, repl("Length=30", "Length=-1"), authn.ErrMalformed},
		{"Length missing", spnegoCT, repl("Length=30", "Size=30"), authn.ErrMalformed},
		{"over maxPlain", spnegoCT, repl("Length=30", "Length=2000"), sealing.ErrTooLarge},
		{"unknown protocol param", strings.Replace(spnegoCT, "SPNEGO", "Basic", 1), good, authn.ErrUnsupported},
		{"unknown part protocol", spnegoCT, repl("Type: application/HTTP-SPNEGO", "Type: application/HTTP-Basic"), authn.ErrUnsupported},
		{"protocol mismatch", spnegoCT, repl("Type: application/HTTP-SPNEGO", "Type: application/HTTP-Kerberos"), authn.ErrMalformed},
		{"missing octet-stream", spnegoCT, repl("\tContent-Type: application/octet-stream\r\n", ""), authn.ErrMalformed},
		{"unknown part header", spnegoCT, repl("\tOriginalContent", "\tX-Evil: 1\r\n\tOriginalContent"), authn.ErrMalformed},
		{"trailing junk", spnegoCT, append(append([]byte(nil), good...), "junk"...), authn.ErrMalformed},
		{"only trailer", spnegoCT, []byte("--Encrypted Boundary--\r\n"), authn.ErrMalformed},
		{"empty", spnegoCT, nil, authn.ErrMalformed},
		{"not encrypted", "application/soap+xml;charset=UTF-8", good, authn.ErrMalformed},
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, r := range decodeErrRows() {
		t.Run(r.name, func(t *testing.T) {
			_, _, err := sealing.Decode(r.ct, r.body, 1000, ntlm.NewServerSession(vectorFlags, vectorKey))
			if r.want == nil && err != nil || r.want != nil && !errors.Is(err, r.want) {
				t.Fatalf("got %v, want %v", err, r.want)
			}
		})
	}
	// A flipped ciphertext byte fails the signature.
	_, cl := pair()
	sig, data := cl.Seal([]byte("0123456789"))
	data[3] ^= 1
	body := pywinrmBody(sealing.ProtocolSPNEGO, 10, append(append(binary.LittleEndian.AppendUint32(nil, 16), sig...), data...))
	if _, _, err := sealing.Decode(spnegoCT, body, 1000, ntlm.NewServerSession(vectorFlags, vectorKey)); !errors.Is(err, ntlm.ErrIntegrity) {
		t.Fatalf("tampered: %v", err)
	}
	// Too many (empty) parts.
	one := "--Encrypted Boundary\r\n\tContent-Type: application/HTTP-CredSSP-session-encrypted\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=0\r\n--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n\x04\x00\x00\x00SIG!"
	many := []byte(strings.Repeat(one, sealing.MaxParts) + "--Encrypted Boundary--\r\n")
	multiCT := `multipart/x-multi-encrypted;protocol="application/HTTP-CredSSP-session-encrypted";boundary="Encrypted Boundary"`
	if _, _, err := sealing.Decode(multiCT, many, 1000, fakeSealer{}); err != nil {
		t.Fatalf("%d parts: %v", sealing.MaxParts, err)
	}
	many = []byte(strings.Repeat(one, sealing.MaxParts+1) + "--Encrypted Boundary--\r\n")
	if _, _, err := sealing.Decode(multiCT, many, 1000, fakeSealer{}); !errors.Is(err, authn.ErrMalformed) {
		t.Fatalf("%d parts: %v", sealing.MaxParts+1, err)
	}
	if _, _, err := sealing.Decode(spnegoCT, body, 1000, nil); !errors.Is(err, authn.ErrUnsupported) {
		t.Fatalf("nil sealer: %v", err)
	}
}

func TestEncodeErrors(t *testing.T) {
	if _, _, err := sealing.Encode("application/HTTP-Basic", nil, fakeSealer{}); !errors.Is(err, authn.ErrUnsupported) {
		t.Error(err)
	}
	if _, _, err := sealing.Encode(strings.ToLower(sealing.ProtocolSPNEGO), nil, fakeSealer{}); err == nil {
		t.Error("non-canonical protocol accepted")
	}
	if _, _, err := sealing.Encode(sealing.ProtocolSPNEGO, nil, nil); err == nil {
		t.Error("nil sealer accepted")
	}
}

func TestIsEncrypted(t *testing.T) {
	for ct, want := range map[string]bool{
		spnegoCT:                               true,
		"multipart/x-multi-encrypted;protocol": true,
		" MULTIPART/ENCRYPTED ":                true,
		"application/soap+xml;charset=UTF-8":   false,
		"multipart/encryptedx":                 false,
		"":                                     false,
	} {
		if sealing.IsEncrypted(ct) != want {
			t.Errorf("IsEncrypted(%q) != %v", ct, want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, r := range decodeErrRows() {
		f.Add(r.ct, r.body)
	}
	body, ct, _ := sealing.Encode(sealing.ProtocolCredSSP, bytes.Repeat([]byte("--Encrypted Boundary\r\n"), 2000), fakeSealer{3})
	f.Add(ct, body)
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		const max = 1 << 16
		plain, proto, err := sealing.Decode(ct, body, max, fakeSealer{3})
		if err != nil {
			return
		}
		if len(plain) > max || proto == "" {
			t.Fatalf("decoded %d bytes, protocol %q", len(plain), proto)
		}
		// What decodes re-encodes and decodes to the same.
		b2, ct2, err := sealing.Encode(proto, plain, fakeSealer{3})
		if err != nil {
			t.Fatal(err)
		}
		p2, _, err := sealing.Decode(ct2, b2, max, fakeSealer{3})
		if err != nil || !bytes.Equal(p2, plain) {
			t.Fatalf("re-encode round trip: %v", err)
		}
	})
}

func BenchmarkEncode64K(b *testing.B) {
	s := ntlm.NewServerSession(vectorFlags, vectorKey)
	msg := bytes.Repeat([]byte("<s:Envelope/>"), 64<<10/13)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := sealing.Encode(sealing.ProtocolSPNEGO, msg, s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode64K(b *testing.B) {
	msg := bytes.Repeat([]byte("<s:Envelope/>"), 64<<10/13)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	cl := clientSealer{ntlmtest.NewSession(vectorFlags, vectorKey)}
	srv := ntlm.NewServerSession(vectorFlags, vectorKey)
	const batch = 32
	b.StopTimer()
	for i := 0; i < b.N; i += batch {
		n := min(batch, b.N-i)
		bodies := make([][]byte, n)
		for j := range bodies {
			bodies[j], _, _ = sealing.Encode(sealing.ProtocolSPNEGO, msg, cl)
		}
		b.StartTimer()
		for _, body := range bodies {
			if _, _, err := sealing.Decode(spnegoCT, body, 1<<20, srv); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
	}
}
