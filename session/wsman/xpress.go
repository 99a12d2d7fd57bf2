package wsman

// Stream compression of a WinRS shell created with
// <rsp:CompressionType>xpress</rsp:CompressionType> (MS-WSMV 3.1.4.1.31.6,
// 3.2.4.1.19): every rsp:Stream payload the client Sends is compressed, and
// every rsp:Stream payload of a ReceiveResponse must be. The CreateResponse
// says so with <rsp:CompressionMode>XpressCompression</rsp:CompressionMode>.
// Only stream payloads are compressed: creationXml, a Command's Arguments and
// everything else stay as they are.
//
// One stream payload (after base64) is a sequence of chunks, each holding at
// most 65536 bytes of the original data:
//
//	u16 LE  originalSize - 1     ; the on-the-wire sizes are one less than
//	u16 LE  compressedSize - 1   ; the real ones (a quirk kept for compatibility)
//	compressedSize bytes         ; stored as is when the sizes are equal,
//	                             ; else one MS-XCA LZ77+Huffman block
//
// LZ77+Huffman (MS-XCA 2.1, 2.2): a 256-byte table of 4-bit code lengths for
// 512 symbols (even symbol in the low nibble), then a bit stream of 16-bit
// little-endian words read MSB first. Symbols 0-255 are literals; 256-511 are
// matches: low nibble = length-3 (15 = the length continues in a byte, 255
// there = in a u16), high nibble = the bit length of the offset, whose low bits
// follow in the bit stream. The extra length bytes sit between the 16-bit words
// exactly where the decoder is when it reads them, which is why the encoder
// reserves each word's place before it knows its bits. A chunk is one block
// (65536 output bytes), ended by symbol 256.
//
// The decoder reads hostile data: the table must be a valid prefix code, every
// offset must point inside what was already decoded, every chunk must produce
// exactly its original size, and the total output is capped by the caller
// (MaxDecompressed): a ratio bomb is refused at its header, before any work.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
)

// CompressionXpress is the rsp:CompressionType value that asks for stream
// compression, and CompressionModeXpress the CreateResponse's answer.
const (
	CompressionXpress     = "xpress"
	CompressionModeXpress = "XpressCompression"
)

// xpressChunk is the most original bytes one chunk holds (its size minus one
// must fit the u16 header field).
const xpressChunk = 65536

// xcaTable is the size of a block's code-length table: 512 symbols × 4 bits.
const xcaTable = 256

// ErrBadCompression: a stream payload is not valid xpress data.
var ErrBadCompression = errors.New("invalid xpress-compressed stream")

// XpressOverhead is the most that compressing n bytes can add: the 4-byte
// header of each chunk (a chunk that does not shrink is stored raw).
func XpressOverhead(n int) int { return 4 * ((n + xpressChunk - 1) / xpressChunk) }

// CompressStream appends the compressed form of src to dst: one chunk per
// 65536 bytes, each LZ77+Huffman-coded when that is smaller, else stored.
// An empty src gives no chunks.
func CompressStream(dst, src []byte) []byte {
	c := encoders.Get().(*xcaEncoder)
	defer encoders.Put(c)
	for len(src) > 0 {
		n := min(len(src), xpressChunk)
		hdr := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		dst = c.encode(dst, src[:n])
		if size := len(dst) - hdr - 4; size >= n {
			// Compression did not pay: store the chunk.
			dst = append(dst[:hdr+4], src[:n]...)
		}
		binary.LittleEndian.PutUint16(dst[hdr:], uint16(n-1))
		binary.LittleEndian.PutUint16(dst[hdr+2:], uint16(len(dst)-hdr-4-1))
		src = src[n:]
	}
	return dst
}

// DecompressStream decodes one compressed stream payload, refusing more
// than maxOut bytes of output (checked at each chunk header, before its
// data is decoded).
func DecompressStream(src []byte, maxOut int) ([]byte, error) {
	var out []byte
	d := decoders.Get().(*xcaDecoder)
	defer decoders.Put(d)
	for off := 0; off < len(src); {
		if len(src)-off < 4 {
			return nil, fmt.Errorf("%w: truncated chunk header at byte %d", ErrBadCompression, off)
		}
		orig := int(binary.LittleEndian.Uint16(src[off:])) + 1
		comp := int(binary.LittleEndian.Uint16(src[off+2:])) + 1
		off += 4
		if comp > orig {
			return nil, fmt.Errorf("%w: chunk at byte %d claims %d compressed bytes for %d original ones", ErrBadCompression, off-4, comp, orig)
		}
		if len(src)-off < comp {
			return nil, fmt.Errorf("%w: chunk at byte %d needs %d bytes, %d left", ErrBadCompression, off-4, comp, len(src)-off)
		}
		if len(out)+orig > maxOut {
			return nil, fmt.Errorf("%w: more than %d bytes once decompressed", ErrBadCompression, maxOut)
		}
		data := src[off : off+comp]
		off += comp
		if comp == orig {
			out = append(out, data...)
			continue
		}
		var err error
		if out, err = d.decode(out, data, orig); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// The coders' tables (320 KiB and 64 KiB) are reused, not allocated per
// Receive.
var (
	encoders = sync.Pool{New: func() any { return new(xcaEncoder) }}
	decoders = sync.Pool{New: func() any { return new(xcaDecoder) }}
)

// xcaEncoder compresses one block; its tables are reused across chunks.
type xcaEncoder struct {
	head  [1 << 14]int32 // last position of each 3-byte hash, +1 (0 = none)
	prev  [xpressChunk]int32
	freq  [512]int
	codes [512]uint16
	lens  [512]uint8
	items []uint64 // literal (<256) or match: 1<<40 | (length-3)<<16 | offset
}

// xcaMaxChain bounds the match search per position (speed over ratio: PSRP
// CLIXML repeats itself at short distances).
const xcaMaxChain = 32

func xcaHash(b []byte) int {
	return int((uint32(b[0])<<16|uint32(b[1])<<8|uint32(b[2]))*2654435761>>18) & (1<<14 - 1)
}

// encode appends one LZ77+Huffman block holding src (1..65536 bytes).
func (c *xcaEncoder) encode(dst, src []byte) []byte {
	clear(c.head[:])
	clear(c.freq[:])
	c.items = c.items[:0]
	for i := 0; i < len(src); {
		bestLen, bestOff := 0, 0
		if i+3 <= len(src) {
			h := xcaHash(src[i:])
			for cand, n := int(c.head[h])-1, 0; cand >= 0 && n < xcaMaxChain; cand, n = int(c.prev[cand])-1, n+1 {
				off := i - cand
				if off > 65535 {
					break
				}
				l := matchLen(src[cand:], src[i:])
				if l > bestLen {
					bestLen, bestOff = l, off
				}
			}
			c.prev[i] = c.head[h]
			c.head[h] = int32(i + 1)
		}
		if bestLen < 3 {
			c.items = append(c.items, uint64(src[i]))
			c.freq[src[i]]++
			i++
			continue
		}
		c.items = append(c.items, 1<<40|uint64(bestLen-3)<<16|uint64(bestOff))
		c.freq[matchSymbol(bestLen-3, bestOff)]++
		// Index the positions the match covers, so later matches find them.
		for j := i + 1; j < i+bestLen && j+3 <= len(src); j++ {
			h := xcaHash(src[j:])
			c.prev[j] = c.head[h]
			c.head[h] = int32(j + 1)
		}
		i += bestLen
	}
	c.freq[256]++ // the end-of-block symbol
	c.buildCodes()

	base := len(dst)
	dst = append(dst, make([]byte, xcaTable)...)
	for s := 0; s < 512; s += 2 {
		dst[base+s/2] = c.lens[s] | c.lens[s+1]<<4
	}
	w := bitWriter{out: dst, slot: [2]int{len(dst), len(dst) + 2}}
	w.out = append(w.out, 0, 0, 0, 0)
	for _, it := range c.items {
		if it < 256 {
			w.bits(uint32(c.codes[it]), int(c.lens[it]))
			continue
		}
		m, off := int(it>>16&0xffff), int(it&0xffff)
		s := matchSymbol(m, off)
		w.bits(uint32(c.codes[s]), int(c.lens[s]))
		if m >= 15 {
			if m-15 < 255 {
				w.out = append(w.out, byte(m-15))
			} else {
				w.out = append(w.out, 255, byte(m), byte(m>>8))
			}
		}
		if ob := bits.Len16(uint16(off)) - 1; ob > 0 {
			w.bits(uint32(off)&(1<<ob-1), ob)
		}
	}
	w.bits(uint32(c.codes[256]), int(c.lens[256]))
	return w.finish()
}

// matchSymbol is the Huffman symbol of a match of length m+3 at off.
func matchSymbol(m, off int) int {
	return 256 | (bits.Len16(uint16(off))-1)<<4 | min(m, 15)
}

func matchLen(a, b []byte) int {
	n := min(len(a), len(b), 65535+3)
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// buildCodes makes canonical Huffman codes of at most 15 bits from c.freq:
// a Huffman tree, and if it is too deep, again with the counts halved
// (rounded up) until it fits, as MS-XCA's reference encoder does.
func (c *xcaEncoder) buildCodes() {
	freq := c.freq
	for {
		if depthsFit(freq[:], c.lens[:]) {
			break
		}
		for s := range freq {
			if freq[s] > 0 {
				freq[s] = (freq[s] + 1) / 2
			}
		}
	}
	// Canonical codes: by length, then by symbol value.
	code := uint16(0)
	for l := uint8(1); l <= 15; l++ {
		for s := 0; s < 512; s++ {
			if c.lens[s] == l {
				c.codes[s] = code
				code++
			}
		}
		code <<= 1
	}
}

// depthsFit computes Huffman code lengths for freq into lens and reports
// whether none exceeds 15 bits.
func depthsFit(freq []int, lens []uint8) bool {
	type node struct {
		w           int
		left, right int // children (-1 for a leaf)
		sym         int
	}
	nodes := make([]node, 0, 1024)
	var live []int
	for s, f := range freq {
		lens[s] = 0
		if f > 0 {
			nodes = append(nodes, node{w: f, left: -1, right: -1, sym: s})
			live = append(live, len(nodes)-1)
		}
	}
	if len(live) == 1 {
		// One symbol still needs a 1-bit code; pair it with an unused one.
		s := nodes[live[0]].sym ^ 1
		nodes = append(nodes, node{w: 1, left: -1, right: -1, sym: s})
		live = append(live, len(nodes)-1)
	}
	for len(live) > 1 {
		slices.SortFunc(live, func(a, b int) int {
			if nodes[a].w != nodes[b].w {
				return nodes[a].w - nodes[b].w
			}
			return a - b
		})
		a, b := live[0], live[1]
		nodes = append(nodes, node{w: nodes[a].w + nodes[b].w, left: a, right: b})
		live = append(live[2:], len(nodes)-1)
	}
	ok := true
	var walk func(n, depth int)
	walk = func(n, depth int) {
		if nodes[n].left < 0 {
			if depth > 15 {
				ok = false
				return
			}
			lens[nodes[n].sym] = uint8(depth)
			return
		}
		walk(nodes[n].left, depth+1)
		walk(nodes[n].right, depth+1)
	}
	walk(live[0], 0)
	return ok
}

// bitWriter writes the bit stream: bits gather MSB first; each full 16-bit
// word goes to the oldest reserved slot, and a new slot is reserved at the
// current end of the output, where the decoder will be when it needs that
// word. A word is written only once more than 16 bits are pending, which is
// exactly when the decoder refills (it keeps at least 16 bits ahead).
type bitWriter struct {
	out  []byte
	slot [2]int
	acc  uint32 // pending bits, left-aligned
	n    int    // pending bit count, 0..16 between calls
}

func (w *bitWriter) bits(v uint32, n int) {
	if n == 0 {
		return
	}
	w.acc |= v << (32 - w.n - n)
	w.n += n
	if w.n > 16 {
		binary.LittleEndian.PutUint16(w.out[w.slot[0]:], uint16(w.acc>>16))
		w.acc <<= 16
		w.n -= 16
		w.slot[0], w.slot[1] = w.slot[1], len(w.out)
		w.out = append(w.out, 0, 0)
	}
}

// finish writes the pending bits (zero-padded) into the reserved slots.
func (w *bitWriter) finish() []byte {
	binary.LittleEndian.PutUint16(w.out[w.slot[0]:], uint16(w.acc>>16))
	binary.LittleEndian.PutUint16(w.out[w.slot[1]:], uint16(w.acc))
	return w.out
}

// xcaDecoder decodes one block; its table is reused across chunks.
type xcaDecoder struct {
	// table maps the next 15 bits to symbol<<4 | length (0 = no code).
	table [1 << 15]uint16
}

// decode appends the n bytes that the LZ77+Huffman block src holds.
func (d *xcaDecoder) decode(out, src []byte, n int) ([]byte, error) {
	if len(src) < xcaTable+4 {
		return nil, fmt.Errorf("%w: a %d-byte block is shorter than its code table", ErrBadCompression, len(src))
	}
	if err := d.build(src[:xcaTable]); err != nil {
		return nil, err
	}
	start := len(out)
	end := start + n
	pos := xcaTable
	word := func() uint32 {
		// Words past the end read as zero: an encoder need not write the
		// padding after its last symbol.
		if pos+2 > len(src) {
			pos += 2
			return 0
		}
		v := uint32(binary.LittleEndian.Uint16(src[pos:]))
		pos += 2
		return v
	}
	next := word()<<16 | word()
	extra := 16 // valid bits beyond the 16 always kept
	consume := func(k int) {
		next <<= k
		extra -= k
		if extra < 0 {
			next |= word() << -extra
			extra += 16
		}
	}
	for len(out) < end {
		e := d.table[next>>17]
		if e == 0 {
			return nil, fmt.Errorf("%w: no symbol has the code at byte %d", ErrBadCompression, pos)
		}
		sym, l := int(e>>4), int(e&15)
		consume(l)
		if sym < 256 {
			out = append(out, byte(sym))
			continue
		}
		sym -= 256
		length, ob := sym&15, sym>>4
		if length == 15 {
			if pos >= len(src) {
				return nil, fmt.Errorf("%w: match length runs past the block", ErrBadCompression)
			}
			length = int(src[pos])
			pos++
			if length == 255 {
				if pos+2 > len(src) {
					return nil, fmt.Errorf("%w: match length runs past the block", ErrBadCompression)
				}
				length = int(binary.LittleEndian.Uint16(src[pos:]))
				pos += 2
				if length < 15 {
					return nil, fmt.Errorf("%w: long match length %d under 15", ErrBadCompression, length)
				}
				length -= 15
			}
			length += 15
		}
		length += 3
		off := 1 << ob
		if ob > 0 {
			off += int(next >> (32 - ob))
			consume(ob)
		}
		if off > len(out)-start {
			return nil, fmt.Errorf("%w: match offset %d before the start of the block", ErrBadCompression, off)
		}
		if len(out)+length > end {
			return nil, fmt.Errorf("%w: match of %d bytes runs past the chunk's %d bytes", ErrBadCompression, length, n)
		}
		from := len(out) - off
		for k := 0; k < length; k++ { // byte by byte: matches may overlap
			out = append(out, out[from+k])
		}
	}
	return out, nil
}

// build fills the decoding table from a block's code lengths (canonical
// codes: by length, then by symbol value), refusing an over-full code.
func (d *xcaDecoder) build(t []byte) error {
	clear(d.table[:])
	var count [16]int
	for s := 0; s < 512; s++ {
		count[t[s/2]>>(4*(s&1))&15]++
	}
	if count[0] == 512 {
		return fmt.Errorf("%w: empty code table", ErrBadCompression)
	}
	next := 0 // next free table index
	for l := 1; l <= 15; l++ {
		span := 1 << (15 - l)
		for s := 0; s < 512; s++ {
			if int(t[s/2]>>(4*(s&1))&15) != l {
				continue
			}
			if next+span > len(d.table) {
				return fmt.Errorf("%w: the code lengths over-fill the code space", ErrBadCompression)
			}
			e := uint16(s)<<4 | uint16(l)
			for k := next; k < next+span; k++ {
				d.table[k] = e
			}
			next += span
		}
	}
	return nil
}
