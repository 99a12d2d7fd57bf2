package wsman

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"
)

// sendEnvelope is a Send request whose rsp:Send holds streams.
func sendEnvelope(streams string) []byte {
	return []byte(soapEnv(`<a:Action s:mustUnderstand="true">`+ActionSend+`</a:Action>`+
		`<a:MessageID>uuid:11111111-2222-4333-8444-555555555555</a:MessageID>`+
		`<w:ResourceURI s:mustUnderstand="true">`+ResourceCmdShell+`</w:ResourceURI>`+
		`<w:SelectorSet><w:Selector Name="ShellId">AAAA</w:Selector></w:SelectorSet>`,
		`<rsp:Send>`+streams+`</rsp:Send>`))
}

// stdinStream is an rsp:Stream of stdin carrying text.
func stdinStream(text string, end bool) string {
	e := ""
	if end {
		e = ` End="true"`
	}
	return `<rsp:Stream Name="stdin" CommandId="C1"` + e + `>` + text + `</rsp:Stream>`
}

// testData is n bytes that differ with seed.
func testData(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>9 + seed*31)
	}
	return b
}

// lineBreaks breaks s into lines of n characters ending in nl, as MIME
// encoders do.
func lineBreaks(s string, n int, nl string) string {
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + nl)
		s = s[n:]
	}
	b.WriteString(s)
	return b.String()
}

// within reports whether p lies inside buf's memory.
func within(p, buf []byte) bool {
	if len(p) == 0 || len(buf) == 0 {
		return false
	}
	a, lo := uintptr(unsafe.Pointer(&p[0])), uintptr(unsafe.Pointer(&buf[0]))
	return a >= lo && a < lo+uintptr(len(buf))
}

// parseDecode parses body and decodes it with decode, which must succeed.
func parseDecode(t *testing.T, body []byte, decode func(*Envelope) (*Message, error)) (*Envelope, *Message) {
	t.Helper()
	env, err := Parse(body, ctUTF8, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	m, err := decode(env)
	if err != nil {
		t.Fatal(err)
	}
	return env, m
}

// TestDecodeInPlace decodes Sends of every shape clients send, and some
// they might, with Decode and with DecodeInPlace: the same bytes come out;
// Decode leaves the request bytes alone and shares nothing with them;
// DecodeInPlace decodes a large plain stream over its text and gives Data
// inside the request bytes; and decoding again gives the same Data.
func TestDecodeInPlace(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	big, other := testData(375000, 1), testData(100000, 2)
	type want struct {
		data []byte
		end  bool
	}
	cases := []struct {
		name    string
		streams string
		want    []want
		inPlace int // streams decoded over their text
	}{
		{"one Send of make bench's rows", stdinStream(b64(big), false), []want{{big, false}}, 1},
		{"End with data", stdinStream(b64(other), true), []want{{other, true}}, 1},
		{"End alone", stdinStream("", true), []want{{[]byte{}, true}}, 0},
		{"short (not lifted)", stdinStream(b64(big[:300]), false), []want{{big[:300], false}}, 0},
		{"one chunk of in-place decoding", stdinStream(b64(big[:3072]), false), []want{{big[:3072], false}}, 1},
		{"one chunk and a byte", stdinStream(b64(big[:3073]), false), []want{{big[:3073], false}}, 1},
		{"one chunk less a byte", stdinStream(b64(big[:3071]), false), []want{{big[:3071], false}}, 1},
		{"two streams", stdinStream(b64(big[:250000]), false) + stdinStream(b64(other), true), []want{{big[:250000], false}, {other, true}}, 2},
		{"CRLF every 76 characters", stdinStream(lineBreaks(b64(big[:300000]), 76, "\r\n"), false), []want{{big[:300000], false}}, 0},
		{"LF every 64 characters", stdinStream(lineBreaks(b64(other), 64, "\n"), true), []want{{other, true}}, 0},
		{"surrounding whitespace", stdinStream("\n\t "+b64(big)+" \r\n", false), []want{{big, false}}, 0},
		{"split by a comment", stdinStream(b64(big[:30000])+"<!-- x -->"+b64(big[30000:]), false), []want{{big, false}}, 0},
		{"split by CDATA", stdinStream(b64(big[:30000])+"<![CDATA["+b64(big[30000:])+"]]>", false), []want{{big, false}}, 0},
		{"prefix declared on the Stream", `<x:Stream xmlns:x="` + NsShell + `" Name="stdin" CommandId="C1">` + b64(other) + `</x:Stream>`, []want{{other, false}}, 1},
		{"a Stream of another namespace is no stream", `<x:Stream xmlns:x="urn:other">` + b64(other) + `</x:Stream>` + stdinStream(b64(big[:250000]), false), []want{{big[:250000], false}}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := sendEnvelope(tc.streams)
			orig := bytes.Clone(body)
			check := func(m *Message, how string) {
				t.Helper()
				s, ok := m.Body.(*Send)
				if !ok || len(s.Streams) != len(tc.want) {
					t.Fatalf("%s: body %#v", how, m.Body)
				}
				for i, w := range tc.want {
					got := s.Streams[i]
					if !bytes.Equal(got.Data, w.data) || got.End != w.end || got.Name != "stdin" {
						t.Fatalf("%s: stream %d: %d bytes end=%v name=%q, want %d bytes end=%v", how, i, len(got.Data), got.End, got.Name, len(w.data), w.end)
					}
				}
			}

			_, m := parseDecode(t, body, Decode)
			check(m, "Decode")
			if !bytes.Equal(body, orig) {
				t.Fatal("Decode changed the request bytes")
			}
			for _, s := range m.Body.(*Send).Streams {
				if within(s.Data, body) {
					t.Fatal("Decode's Data aliases the request bytes")
				}
			}

			env, m := parseDecode(t, body, DecodeInPlace)
			check(m, "DecodeInPlace")
			inPlace := 0
			for _, s := range m.Body.(*Send).Streams {
				if within(s.Data, body) {
					inPlace++
				}
			}
			if inPlace != tc.inPlace {
				t.Fatalf("%d streams decoded in place, want %d", inPlace, tc.inPlace)
			}
			if (tc.inPlace == 0) != bytes.Equal(body, orig) {
				t.Fatalf("request bytes changed: %v, with %d streams decoded in place", !bytes.Equal(body, orig), tc.inPlace)
			}
			// Again: the text is gone, the decoded data stays.
			again, err := DecodeInPlace(env)
			if err != nil {
				t.Fatal(err)
			}
			check(again, "DecodeInPlace again")
			copied, err := Decode(env)
			if err != nil {
				t.Fatal(err)
			}
			check(copied, "Decode after DecodeInPlace")
			for _, s := range copied.Body.(*Send).Streams {
				if within(s.Data, body) {
					t.Fatal("Decode after DecodeInPlace aliases the request bytes")
				}
			}
		})
	}
}

// TestDecodeInPlaceSequence is a stdin stream as the server reads it: one
// buffer, reused for Send after Send of different sizes and data, each
// decoded in place and consumed (copied) before the next is read into the
// buffer. What comes out is byte for byte what went in.
func TestDecodeInPlaceSequence(t *testing.T) {
	buf := make([]byte, 0, 600<<10)
	var in, out []byte
	for i, n := range []int{375000, 375000, 1000, 374999, 0, 4096, 375000} {
		data := testData(n, i)
		in = append(in, data...)
		buf = append(buf[:0], sendEnvelope(stdinStream(base64.StdEncoding.EncodeToString(data), i == 6))...)
		_, m := parseDecode(t, buf, DecodeInPlace)
		s := m.Body.(*Send).Streams[0]
		if s.End != (i == 6) {
			t.Fatalf("Send %d: End %v", i, s.End)
		}
		out = append(out, s.Data...)
	}
	if !bytes.Equal(in, out) {
		t.Fatalf("%d bytes out, want %d, or different", len(out), len(in))
	}
}

// TestDecodeInPlaceRefuses: base64 that Decode refuses, DecodeInPlace
// refuses too, with the same fault, wherever the fault is relative to its
// chunks.
func TestDecodeInPlaceRefuses(t *testing.T) {
	good := base64.StdEncoding.EncodeToString(testData(30000, 3))
	for _, text := range []string{
		good[:4092] + "QQ==" + good[4096:],   // padding ending the first chunk
		good[:8] + "QQ==" + good[12:],        // padding inside the first chunk
		good[:len(good)-8] + "QQ==" + "QUJD", // padding inside the last chunk
		good + "Q",                           // not whole quanta
		good[:len(good)-4] + "Q===",          // too much padding
	} {
		var faults [2]*Fault
		for i, decode := range []func(*Envelope) (*Message, error){Decode, DecodeInPlace} {
			env, err := Parse(sendEnvelope(stdinStream(text, false)), ctUTF8, DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			if len(env.streams) != 1 {
				t.Fatal("stream text not left in the body")
			}
			_, err = decode(env)
			f, ok := err.(*Fault)
			if !ok {
				t.Fatalf("decoder %d accepted bad base64: %v", i, err)
			}
			faults[i] = f
		}
		if faults[0].Code != faults[1].Code || faults[0].Reason != faults[1].Reason {
			t.Fatalf("faults differ: %+v / %+v", faults[0], faults[1])
		}
	}
}

// FuzzDecodeBase64InPlace: DecodeBase64InPlace accepts and gives what
// base64.StdEncoding.Decode does, for text of the base64 alphabet with
// padding (what a lifted text is made of).
func FuzzDecodeBase64InPlace(f *testing.F) {
	good := base64.StdEncoding.EncodeToString(testData(9000, 4))
	for _, s := range []string{"", "QQ==", "QUJD", "QQ=", good, good[:4096] + "QQ==" + good[4100:], good[:4092] + "QQ==" + good[4096:], good + "QQ=="} {
		f.Add([]byte(s))
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
	f.Fuzz(func(t *testing.T, in []byte) {
		text := make([]byte, len(in))
		for i, c := range in {
			if strings.IndexByte(alphabet, c) >= 0 {
				text[i] = c
			} else {
				text[i] = alphabet[int(c)%len(alphabet)]
			}
		}
		decodesLikeStdlib(t, text)
	})
}

// decodesLikeStdlib fails t unless DecodeBase64InPlace accepts text exactly
// when base64.StdEncoding.Decode does, and gives the same bytes.
func decodesLikeStdlib(t *testing.T, text []byte) {
	t.Helper()
	want := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, errWant := base64.StdEncoding.Decode(want, text)
	got, errGot := DecodeBase64InPlace(bytes.Clone(text))
	if (errWant == nil) != (errGot == nil) {
		t.Fatalf("Decode: %v, in place: %v, for %q", errWant, errGot, text)
	}
	if errWant == nil && !bytes.Equal(got, want[:n]) {
		t.Fatalf("in place gives %x, Decode %x, for %q", got, want[:n], text)
	}
}

// DecodeBase64InPlace against the standard library on many short texts of
// the alphabet with padding, with padding and stray characters at every
// place the fast body (decodeBase64Body) may meet them, and on lengths
// around its 12-character bound.
func TestDecodeBase64InPlaceMatchesStdlib(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	rng := rand.New(rand.NewPCG(13, 5))
	for i := 0; i < 50000; i++ {
		n := rng.IntN(64)
		text := make([]byte, n)
		for j := range text {
			text[j] = alphabet[rng.IntN(len(alphabet))]
		}
		switch rng.IntN(4) {
		case 0: // valid padding at the end
			if n >= 4 {
				text[n-1] = '='
				if rng.IntN(2) == 0 {
					text[n-2] = '='
				}
			}
		case 1: // padding anywhere
			if n > 0 {
				text[rng.IntN(n)] = '='
			}
		case 2: // a character outside the alphabet
			if n > 0 {
				text[rng.IntN(n)] = "=\n\r* -_"[rng.IntN(7)]
			}
		}
		decodesLikeStdlib(t, text)
	}
}

// BenchmarkDecodeBase64InPlace is a stdin Send's 500000 characters.
func BenchmarkDecodeBase64InPlace(b *testing.B) {
	text := []byte(base64.StdEncoding.EncodeToString(testData(375000, 7)))
	buf := make([]byte, len(text))
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		copy(buf, text)
		if out, err := DecodeBase64InPlace(buf); err != nil || len(out) != 375000 {
			b.Fatal(len(out), err)
		}
	}
}
