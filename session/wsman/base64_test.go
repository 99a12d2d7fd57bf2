package wsman

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"testing"
)

// appendBase64 must give exactly the standard encoding, for every length
// around the 8-byte step and its tail, and append after what dst holds.
func TestAppendBase64(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(r.UintN(256))
		}
		for _, prefix := range [][]byte{nil, []byte("<rsp:Stream>"), make([]byte, 3, 3+base64.StdEncoding.EncodedLen(n))} {
			want := base64.StdEncoding.AppendEncode(bytes.Clone(prefix), src)
			if got := appendBase64(bytes.Clone(prefix), src); !bytes.Equal(got, want) {
				t.Fatalf("len %d prefix %q: got %q, want %q", n, prefix, got, want)
			}
		}
	}
	// Every 12-bit pair, at every position of the 6-byte step.
	all := make([]byte, 0, 3*4096)
	for i := 0; i < 4096; i += 2 {
		v := i<<12 | (i + 1)
		all = append(all, byte(v>>16), byte(v>>8), byte(v))
	}
	for off := 0; off < 6; off++ {
		if got, want := appendBase64(nil, all[off:]), base64.StdEncoding.AppendEncode(nil, all[off:]); !bytes.Equal(got, want) {
			t.Fatalf("all pairs at offset %d differ", off)
		}
	}
}

func FuzzAppendBase64(f *testing.F) {
	f.Add([]byte(""), []byte("hello, world"))
	f.Add([]byte("x"), []byte{0, 0xff, 0x10, 0x83, 0xfe, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, prefix, src []byte) {
		got := appendBase64(bytes.Clone(prefix), src)
		if want := base64.StdEncoding.AppendEncode(bytes.Clone(prefix), src); !bytes.Equal(got, want) {
			t.Fatalf("appendBase64(%q, %q) = %q, want %q", prefix, src, got, want)
		}
		dec, err := base64.StdEncoding.DecodeString(string(got[len(prefix):]))
		if err != nil || !bytes.Equal(dec, src) {
			t.Fatalf("round trip of %q: %q, %v", src, dec, err)
		}
	})
}

// BenchmarkBase64 compares the encoder with the standard library's on a
// full ReceiveResponse's payload (MaxEnvelopeSize 512000: 382 KB).
func BenchmarkBase64(b *testing.B) {
	src := make([]byte, 382<<10)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(src), func(i, j int) { src[i] = byte(i * j) })
	dst := make([]byte, 0, base64.StdEncoding.EncodedLen(len(src)))
	b.Run("appendBase64", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		for b.Loop() {
			dst = appendBase64(dst[:0], src)
		}
	})
	b.Run("stdlib", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		for b.Loop() {
			dst = base64.StdEncoding.AppendEncode(dst[:0], src)
		}
	})
}
