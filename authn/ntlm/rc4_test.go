package ntlm

import (
	"bytes"
	"crypto/rc4"
	"testing"
)

// rc4Split enciphers src with a fresh cipher for key, in pieces that end
// at the offsets in cuts (each piece is XORed, or drawn as keystream and
// XORed afterwards when asKeystream), and returns the result with the
// cipher's final state.
func rc4Split(key, src []byte, cuts []int, asKeystream bool) ([]byte, *rc4Cipher) {
	c := newRC4(key)
	out := make([]byte, len(src))
	from := 0
	for _, to := range append(cuts, len(src)) {
		if to < from || to > len(src) {
			continue
		}
		if asKeystream {
			c.xorKeyStream(out[from:to], nil)
			for k := from; k < to; k++ {
				out[k] ^= src[k]
			}
		} else {
			c.xorKeyStream(out[from:to], src[from:to])
		}
		from = to
	}
	return out, c
}

// stdlibRC4 is crypto/rc4 over the same input, and its state after it.
func stdlibRC4(t testing.TB, key, src []byte) ([]byte, *rc4.Cipher) {
	c, err := rc4.NewCipher(key)
	if err != nil {
		t.Fatalf("crypto/rc4 refuses a %d-byte key: %v", len(key), err)
	}
	out := make([]byte, len(src))
	c.XORKeyStream(out, src)
	return out, c
}

// TestRC4MatchesStdlib: the package's RC4 gives crypto/rc4's bytes for
// the key lengths NTLM uses (5, 7, 8, 16) and RC4's extremes, lengths on
// both sides of the 8-byte rounds, streams cut anywhere (the state
// carries over), XOR in place and keystream alone, and it goes on from the
// same state (the next 300 bytes agree too).
func TestRC4MatchesStdlib(t *testing.T) {
	for _, klen := range []int{1, 5, 7, 8, 16, 255, 256} {
		key := make([]byte, klen)
		for k := range key {
			key[k] = byte(k*37 + klen)
		}
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 255, 256, 257, 4096, 65539} {
			src := make([]byte, n)
			for k := range src {
				src[k] = byte(k * 131)
			}
			want, std := stdlibRC4(t, key, src)
			for _, cuts := range [][]int{nil, {1}, {3, 11}, {n / 2}, {7, 8, 9, 24, n - 1}} {
				for _, ks := range []bool{false, true} {
					got, c := rc4Split(key, src, cuts, ks)
					if !bytes.Equal(got, want) {
						t.Fatalf("key %d bytes, %d bytes cut at %v (keystream %v): output differs from crypto/rc4", klen, n, cuts, ks)
					}
					more, wantMore := make([]byte, 300), make([]byte, 300)
					c.xorKeyStream(more, nil)
					s := *std
					s.XORKeyStream(wantMore, wantMore)
					if !bytes.Equal(more, wantMore) {
						t.Fatalf("key %d bytes, %d bytes cut at %v: the state after differs from crypto/rc4's", klen, n, cuts)
					}
				}
			}
			inPlace := append([]byte(nil), src...)
			newRC4(key).xorKeyStream(inPlace, inPlace)
			if !bytes.Equal(inPlace, want) {
				t.Fatalf("key %d bytes, %d bytes: in place differs from crypto/rc4", klen, n)
			}
		}
	}
}

// TestRC4NextEntryStored covers the load-ahead fix-up (j == i+1: the swap
// writes the entry the next step reads). A stream long enough meets it
// about once in 256 steps; this counts that it did, so a stream that never
// took the branch cannot pass as a check of it.
func TestRC4NextEntryStored(t *testing.T) {
	c := newRC4([]byte("0123456789abcdef"))
	hits := 0
	for range 1 << 16 {
		i := c.i + 1
		if c.j+c.s[i] == i+1 {
			hits++
		}
		var b [1]byte
		c.xorKeyStream(b[:], nil)
	}
	if hits < 100 {
		t.Fatalf("only %d steps with j == i+1 in 65536: the case is not exercised", hits)
	}
	src := make([]byte, 1<<16)
	want, _ := stdlibRC4(t, []byte("0123456789abcdef"), src)
	got, _ := rc4Split([]byte("0123456789abcdef"), src, nil, true)
	if !bytes.Equal(got, want) {
		t.Fatal("the stream that meets j == i+1 differs from crypto/rc4")
	}
}

func TestRC4RefusesBadKeysAndLengths(t *testing.T) {
	for _, f := range []func(){
		func() { newRC4(nil) },
		func() { newRC4(make([]byte, 257)) },
		func() { newRC4([]byte("key")).xorKeyStream(make([]byte, 4), make([]byte, 3)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f()
		}()
	}
}

// FuzzRC4: any key, input and cut agree with crypto/rc4.
func FuzzRC4(f *testing.F) {
	f.Add([]byte("0123456789abcdef"), []byte("the quick brown fox jumps over the lazy dog"), uint16(5), false)
	f.Add([]byte{0xff, 0, 1, 2, 3}, make([]byte, 300), uint16(255), true)
	f.Fuzz(func(t *testing.T, key, src []byte, cut uint16, asKeystream bool) {
		if len(key) < 1 || len(key) > 256 || len(src) > 1<<16 {
			return
		}
		want, _ := stdlibRC4(t, key, src)
		got, _ := rc4Split(key, src, []int{int(cut)}, asKeystream)
		if !bytes.Equal(got, want) {
			t.Fatalf("key %x, %d bytes cut at %d: differs from crypto/rc4", key, len(src), cut)
		}
	})
}

const rc4BenchSize = 500 << 10 // a full ReceiveResponse's envelope

// BenchmarkRC4 draws keystream as the session's prepared keystream does,
// BenchmarkRC4XOR enciphers in place; BenchmarkRC4Stdlib is crypto/rc4
// drawing keystream (clear, then XOR), what the package did before.
func BenchmarkRC4(b *testing.B) {
	c := newRC4([]byte("0123456789abcdef"))
	benchRC4(b, func(buf []byte) { c.xorKeyStream(buf, nil) })
}

func BenchmarkRC4XOR(b *testing.B) {
	c := newRC4([]byte("0123456789abcdef"))
	benchRC4(b, func(buf []byte) { c.xorKeyStream(buf, buf) })
}

func BenchmarkRC4Stdlib(b *testing.B) {
	c, _ := rc4.NewCipher([]byte("0123456789abcdef"))
	benchRC4(b, func(buf []byte) { clear(buf); c.XORKeyStream(buf, buf) })
}

// benchRC4 runs f over a full response's envelope per iteration.
func benchRC4(b *testing.B, f func([]byte)) {
	buf := make([]byte, rc4BenchSize)
	b.SetBytes(rc4BenchSize)
	for b.Loop() {
		f(buf)
	}
}
