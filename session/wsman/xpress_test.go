package wsman

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand"
	"strings"
	"testing"
)

// xpressSamples covers the encoder's paths: tiny chunks, literals only
// (random bytes, stored raw), short and long matches (the byte and u16
// length escapes), overlapping matches and several chunks.
func xpressSamples() map[string][]byte {
	rnd := rand.New(rand.NewSource(10))
	random := make([]byte, 70000)
	rnd.Read(random)
	clixml := strings.Repeat(`<Obj RefId="0"><TN RefId="0"><T>System.String</T><T>System.Object</T></TN><ToString>line</ToString><S>output line</S></Obj>`, 900)
	mixed := make([]byte, 0, 150000)
	for len(mixed) < 150000 {
		n := rnd.Intn(300)
		if rnd.Intn(2) == 0 {
			mixed = append(mixed, bytes.Repeat([]byte{byte(rnd.Intn(256))}, n)...)
		} else {
			b := make([]byte, n)
			rnd.Read(b)
			mixed = append(mixed, b...)
		}
	}
	return map[string][]byte{
		"one":      {'x'},
		"two":      []byte("ab"),
		"three":    []byte("aaa"),
		"short":    []byte("abcabcabcabcabcabcabcabcabcabcabcabcabcabc"),
		"zeros":    make([]byte, 65536),
		"zeros+1":  make([]byte, 65537),
		"random":   random,
		"clixml":   []byte(clixml),
		"mixed":    mixed,
		"len270":   append(bytes.Repeat([]byte("q"), 1+273), 'z'),
		"len17":    []byte("0123456789abcdefgh0123456789abcdefgh!"),
		"bigchunk": bytes.Repeat([]byte("The quick brown fox. "), 20000),
	}
}

func TestXpressRoundTrip(t *testing.T) {
	for name, in := range xpressSamples() {
		c := CompressStream(nil, in)
		if len(c) > len(in)+XpressOverhead(len(in)) {
			t.Errorf("%s: %d bytes compressed to %d, more than the stored form", name, len(in), len(c))
		}
		out, err := DecompressStream(c, len(in))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("%s: round trip changed the data (%d -> %d bytes)", name, len(in), len(out))
		}
		t.Logf("%s: %d -> %d bytes", name, len(in), len(c))
	}
	// Compressible data is really compressed (not stored raw).
	in := xpressSamples()["clixml"]
	if c := CompressStream(nil, in); len(c) > len(in)/4 {
		t.Errorf("CLIXML compressed only to %d of %d bytes", len(c), len(in))
	}
}

func TestXpressStoredChunks(t *testing.T) {
	// A client may store every chunk (sizes equal): that is read as is.
	var c []byte
	for _, part := range []string{"hello ", "stored ", "chunks"} {
		c = binary.LittleEndian.AppendUint16(c, uint16(len(part)-1))
		c = binary.LittleEndian.AppendUint16(c, uint16(len(part)-1))
		c = append(c, part...)
	}
	out, err := DecompressStream(c, 100)
	if err != nil || string(out) != "hello stored chunks" {
		t.Fatalf("got %q, %v", out, err)
	}
}

func TestXpressRejects(t *testing.T) {
	good := CompressStream(nil, []byte(strings.Repeat("abcdefgh", 100)))
	over := append([]byte(nil), good...)
	for i := 4; i < 4+xcaTable; i++ {
		over[i] = 0x11 // 512 one-bit codes: far more than the code space
	}
	empty := append([]byte(nil), good...)
	clear(empty[4 : 4+xcaTable])
	cases := map[string]struct {
		in  []byte
		max int
	}{
		"short header":    {[]byte{1, 0, 1}, 100},
		"truncated data":  {good[:len(good)-1], 1000},
		"over the cap":    {good, 799},
		"comp > orig":     {[]byte{0, 0, 1, 0, 'a', 'b'}, 100},
		"over-full code":  {over, 1000},
		"empty code":      {empty, 1000},
		"block too short": {[]byte{9, 0, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 100},
	}
	for name, c := range cases {
		if _, err := DecompressStream(c.in, c.max); !errors.Is(err, ErrBadCompression) {
			t.Errorf("%s: err = %v, want ErrBadCompression", name, err)
		}
	}
	// A match reaching before the block's start is refused.
	tbl := make([]byte, xcaTable+8)
	for s := 0; s < 512; s++ {
		tbl[s/2] |= 9 << (4 * (s & 1)) // every symbol 9 bits: a complete code
	}
	// First symbol: 0x100+0x10 (match, offset bits 1) = code 0x110 in 9 bits.
	binary.BigEndian.PutUint16(tbl[xcaTable:], 0x110<<7)
	bad := binary.LittleEndian.AppendUint16(nil, 99)
	bad = binary.LittleEndian.AppendUint16(bad, uint16(len(tbl)-1))
	bad = append(bad, tbl...)
	// The bit words are little-endian: swap the one written big-endian.
	bad[4+xcaTable], bad[4+xcaTable+1] = bad[4+xcaTable+1], bad[4+xcaTable]
	if _, err := DecompressStream(bad, 1000); !errors.Is(err, ErrBadCompression) {
		t.Errorf("offset before start: err = %v", err)
	}
}

// FuzzXpressDecompress feeds hostile stream payloads to the decoder: it must
// return data within its cap or ErrBadCompression, never panic or hang; and
// whatever it accepts survives a round trip through the encoder.
func FuzzXpressDecompress(f *testing.F) {
	for _, in := range xpressSamples() {
		if len(in) < 5000 {
			f.Add(CompressStream(nil, in))
		}
	}
	f.Add([]byte{0, 0, 0, 0, 'a'})
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := DecompressStream(data, 1<<20)
		if err != nil {
			if !errors.Is(err, ErrBadCompression) {
				t.Fatalf("error %v does not wrap ErrBadCompression", err)
			}
			return
		}
		if len(out) > 1<<20 {
			t.Fatalf("%d bytes past the cap", len(out))
		}
		back, err := DecompressStream(CompressStream(nil, out), len(out))
		if err != nil || !bytes.Equal(back, out) {
			t.Fatalf("round trip of accepted output failed: %v", err)
		}
	})
}

// FuzzXpressRoundTrip compresses arbitrary data and decompresses it again.
func FuzzXpressRoundTrip(f *testing.F) {
	f.Add([]byte("abcabcabcabc"))
	f.Add(bytes.Repeat([]byte{0}, 300))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := DecompressStream(CompressStream(nil, data), len(data))
		if err != nil || !bytes.Equal(out, data) {
			t.Fatalf("round trip of %d bytes: %v", len(data), err)
		}
	})
}
