package wsman

import (
	"encoding/base64"
	"encoding/binary"
)

// b64Alphabet is the standard base64 alphabet (RFC 4648), the one WS-Man's
// streams use; the encoder's, the decoder's and the lift check's tables
// are made from it.
const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

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
	for i := range t {
		t[i] = uint16(b64Alphabet[i>>6]) | uint16(b64Alphabet[i&0x3f])<<8
	}
	return t
}()

// decodeBase64Body decodes, over itself, the leading whole quanta of b that
// hold no padding and no character outside the base64 alphabet, two quanta
// (8 characters, 6 bytes) per step, stopping short of the last quantum
// (which may hold padding) and at the first step with a character it does
// not decode. It returns how many bytes it wrote at b[0:] and how many
// characters it read: the caller decodes b[read:] the standard library's
// way, which also gives the error for what stopped this loop.
//
// Why: a stdin Send is decoded here, on the request's critical path, and
// the standard library's decoder (about 1 GB/s of text here, 12% of the
// daemon's CPU in the NTLM stdin row, BENCH.md) checks every character and
// stores one byte at a time. Here each character's 6 bits come from a table
// already shifted to their place in the quantum, an invalid character sets
// bits above the 24 a quantum holds (so one test per step catches any), and
// the 6 bytes go out as one 8-byte store. Writing over the text is safe: a
// step's store ends at 6k+8 bytes while it has read 8k+8 characters.
func decodeBase64Body(b []byte) (written, read int) {
	d0, d1, d2, d3 := &b64Dec[0], &b64Dec[1], &b64Dec[2], &b64Dec[3]
	for ; len(b)-read >= 12; read, written = read+8, written+6 {
		s := b[read : read+8]
		v := d0[s[0]] | d1[s[1]] | d2[s[2]] | d3[s[3]]
		u := d0[s[4]] | d1[s[5]] | d2[s[6]] | d3[s[7]]
		if (v|u)>>24 != 0 {
			break
		}
		binary.BigEndian.PutUint64(b[written:], uint64(v)<<40|uint64(u)<<16)
	}
	return written, read
}

// b64Dec[k][c] is character c's 6 bits at position k of a quantum (shifted
// left by 18, 12, 6, 0), or all ones for a character outside the alphabet,
// padding included.
var b64Dec = func() (t [4][256]uint32) {
	for k := range t {
		for c := range t[k] {
			t[k][c] = ^uint32(0)
		}
		for v, c := range []byte(b64Alphabet) {
			t[k][c] = uint32(v) << (18 - 6*k)
		}
	}
	return t
}()
