package ntlm

import (
	"encoding/binary"
	"fmt"
)

// RC4, the cipher of NTLM sealing (MS-NLMP 3.4.3), written for speed: it is
// the largest cost of an NTLM-sealed stream. In the NTLM stdout row of
// `make bench` crypto/rc4 took 37% of the daemon's CPU (perf, BENCH.md),
// more than HMAC-MD5's 24%, and 32% of the bench client's: every byte
// of every message is enciphered once on each side, about 1.35 MB per MB of
// command output (base64 and the envelope around it).
//
// The algorithm is RC4's (the key schedule, then per byte: i += 1; j +=
// S[i]; swap S[i], S[j]; out S[S[i]+S[j]]); what differs from crypto/rc4
// (about 560 MB/s on the bench machine) is how the loop is laid out for the
// CPU, 870 MB/s of keystream here (BenchmarkRC4):
//   - the state is 256 bytes, not 256 words: four cache lines, not sixteen;
//   - S[i+1], the next step's x, is loaded before this step's stores, so
//     the next j does not wait for them; when this step's swap writes that
//     very entry (j == i+1), the value just stored is taken instead;
//   - eight steps are written out per round and their output goes out as
//     one 8-byte word (XORed with one 8-byte word of the input), instead of
//     eight byte loads and stores. Written out, because Go does not unroll
//     loops: the same round as a loop of eight, shifting by its counter,
//     ran at 590 MB/s.
//
// Like crypto/rc4, its table look-ups depend on the key: RC4 offers no
// constant-time form. TestRC4MatchesStdlib and FuzzRC4 check it byte for
// byte against crypto/rc4 for every split of a stream; ntlmtest, the spec
// client the acceptor is tested against, seals with crypto/rc4.
type rc4Cipher struct {
	s    [256]uint8
	i, j uint8
}

// newRC4 runs RC4's key schedule. key is 5 to 16 bytes here (the sealing
// keys of MS-NLMP 3.4.5.3, RC4K's key-exchange key); RC4 allows 1 to 256.
func newRC4(key []byte) *rc4Cipher {
	if len(key) < 1 || len(key) > 256 {
		panic(fmt.Sprintf("ntlm: rc4 key of %d bytes", len(key)))
	}
	c := &rc4Cipher{}
	for k := range c.s {
		c.s[k] = uint8(k)
	}
	var j uint8
	for k := range c.s {
		j += c.s[k] + key[k%len(key)]
		c.s[k], c.s[j] = c.s[j], c.s[k]
	}
	return c
}

// rc4Step is one step with i already advanced; x is S[i], loaded ahead.
// It returns the new j, S[i+1] (loaded ahead for the next step) and the
// output byte.
func rc4Step(s *[256]uint8, i, j, x uint8) (uint8, uint8, uint64) {
	j += x
	y := s[j]
	next := s[i+1]
	if i+1 == j {
		next = x // the swap below stores x there
	}
	s[i], s[j] = y, x
	return j, next, uint64(s[x+y])
}

// xorKeyStream sets dst to src XOR the next len(dst) bytes of keystream,
// or to the keystream itself when src is nil. src, when given, is as long
// as dst and either dst itself or not overlapping it (every 8-byte word is
// read before it is written).
func (c *rc4Cipher) xorKeyStream(dst, src []byte) {
	if src != nil && len(src) != len(dst) {
		panic("ntlm: rc4 input and output of different lengths")
	}
	s := &c.s
	i, j := c.i, c.j
	x := s[i+1]
	for len(dst) >= 8 {
		var w, o uint64
		i++
		j, x, w = rc4Step(s, i, j, x)
		i++
		j, x, o = rc4Step(s, i, j, x)
		w |= o << 8
		i++
		j, x, o = rc4Step(s, i, j, x)
		w |= o << 16
		i++
		j, x, o = rc4Step(s, i, j, x)
		w |= o << 24
		i++
		j, x, o = rc4Step(s, i, j, x)
		w |= o << 32
		i++
		j, x, o = rc4Step(s, i, j, x)
		w |= o << 40
		i++
		j, x, o = rc4Step(s, i, j, x)
		w |= o << 48
		i++
		j, x, o = rc4Step(s, i, j, x)
		w |= o << 56
		if src != nil {
			w ^= binary.LittleEndian.Uint64(src)
			src = src[8:]
		}
		binary.LittleEndian.PutUint64(dst, w)
		dst = dst[8:]
	}
	for k := range dst {
		var o uint64
		i++
		j, x, o = rc4Step(s, i, j, x)
		if src != nil {
			o ^= uint64(src[k])
		}
		dst[k] = uint8(o)
	}
	c.i, c.j = i, j
}
