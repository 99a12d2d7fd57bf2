package wsman

import (
	"encoding/base64"
	"encoding/binary"
)

// appendBase64 appends the standard, padded base64 encoding of src to dst:
// the same bytes as base64.StdEncoding.AppendEncode, in about a third of
// its time. Every byte of command output a ReceiveResponse carries is
// encoded here, and on the HTTPS stdout row the encoder was the daemon's
// largest single cost (16% of its CPU, perf, BENCH.md); the 2-core bench
// machine is CPU-bound, so the daemon's CPU per MB is the row's speed.
//
// The standard library encodes 3 bytes per step with four table look-ups
// and four single-byte stores. Here each step reads 8 bytes as one
// big-endian word, encodes the top 6 of them as four 12-bit indices into a
// table of character pairs, and stores the 8 characters as one word. The
// tail (fewer than 14 bytes left: a round reads 8 bytes at 0 and at 6)
// goes to the standard library.
func appendBase64(dst, src []byte) []byte {
	n := base64.StdEncoding.EncodedLen(len(src))
	if cap(dst)-len(dst) < n {
		grown := make([]byte, len(dst), len(dst)+n)
		copy(grown, dst)
		dst = grown
	}
	out := dst[len(dst) : len(dst)+n]
	si, di := 0, 0
	// Two steps per round: their look-ups are independent, so the CPU
	// overlaps them.
	for ; len(src)-si >= 14; si, di = si+12, di+16 {
		s, o := src[si:si+14], out[di:di+16]
		v := binary.BigEndian.Uint64(s)
		u := binary.BigEndian.Uint64(s[6:])
		binary.LittleEndian.PutUint64(o, uint64(b64Pairs[v>>52])|
			uint64(b64Pairs[v>>40&0xfff])<<16|
			uint64(b64Pairs[v>>28&0xfff])<<32|
			uint64(b64Pairs[v>>16&0xfff])<<48)
		binary.LittleEndian.PutUint64(o[8:], uint64(b64Pairs[u>>52])|
			uint64(b64Pairs[u>>40&0xfff])<<16|
			uint64(b64Pairs[u>>28&0xfff])<<32|
			uint64(b64Pairs[u>>16&0xfff])<<48)
	}
	base64.StdEncoding.Encode(out[di:], src[si:])
	return dst[:len(dst)+n]
}

// b64Pairs maps 12 bits to their two base64 characters, the first in the
// low byte (stored little-endian, it comes first).
var b64Pairs = func() (t [4096]uint16) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := range t {
		t[i] = uint16(alphabet[i>>6]) | uint16(alphabet[i&0x3f])<<8
	}
	return t
}()
