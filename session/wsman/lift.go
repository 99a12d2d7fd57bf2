package wsman

import (
	"bytes"
	"encoding/base64"
	"errors"
)

// Lifting large text nodes.
//
// encoding/xml copies character data one byte at a time, which made a Send
// carrying 500 KB of base64 in rsp:Stream cost tens of milliseconds to parse.
// Before tokenizing, findLifts picks out text nodes that are long runs of the
// base64 alphabet, and withPlaceholders replaces each with a one-byte
// placeholder; read restores the original text when the tokenizer returns a
// placeholder as a whole text token.
//
// Why this is exact: the two inputs are the same up to the first
// placeholder, so the tokenizer reaches it in the same state. If it then
// returns the placeholder by itself as a text token, the original run, which
// is plain text to the tokenizer (no '<', '&', "]]>", CR or LF), would have
// come back by itself as one text token too, ending at the same '<', on the
// same line. Every check sees the same tokens either way, and the tree
// differs only in the text read back into it. The same holds from there to
// the next placeholder, and so on. A fault met before the tokenizer has read
// the next placeholder is the one the original gives.
//
// findLifts only has to be right about which runs are text nodes, and read
// verifies it: if a placeholder turns up inside any other token, or a fault
// comes once the tokenizer may have read one, that result is discarded and
// the original is read as it is.

// placeholder stands in for a lifted text node. It is not valid base64, so
// one that escaped restoration could not pass for data.
const placeholder = "*"

// liftMin is the shortest text node worth lifting.
const liftMin = 512

// lift is one lifted text node: orig[start:end], at offset at in the
// placeholder document.
type lift struct{ start, end, at int }

// base64Char marks the standard base64 alphabet with padding, as 1s for
// branch-free testing. It is read-only.
var base64Char = func() (t [256]byte) {
	for _, c := range []byte(b64Alphabet + "=") {
		t[c] = 1
	}
	return t
}()

// isBase64Run reports whether b consists only of base64 characters.
func isBase64Run(b []byte) bool {
	t := &base64Char
	for len(b) >= 8 {
		if t[b[0]]&t[b[1]]&t[b[2]]&t[b[3]]&t[b[4]]&t[b[5]]&t[b[6]]&t[b[7]] == 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if t[c] == 0 {
			return false
		}
	}
	return true
}

// hasPrefix is bytes.HasPrefix for a string prefix.
func hasPrefix(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == prefix
}

// findLifts returns the text nodes of data that are at least minLen bytes
// of base64 (minLen >= 1), in document order. It follows XML's lexical
// structure just far enough to tell text from markup: tags with quoted
// attribute values, comments, CDATA sections and processing instructions.
// It stops at anything else (a DTD, which read refuses anyway) and at
// unterminated markup.
func findLifts(data []byte, minLen int) []lift {
	var out []lift
	shrink := 0 // how much shorter the placeholder document is so far
	i := 0
	for i < len(data) {
		// Text, up to the next markup.
		j := bytes.IndexByte(data[i:], '<')
		if j < 0 {
			break // trailing text is never a whole element's content
		}
		if j >= minLen && isBase64Run(data[i:i+j]) {
			out = append(out, lift{start: i, end: i + j, at: i - shrink})
			shrink += j - len(placeholder)
		}
		i += j
		// Markup at data[i] == '<'.
		rest := data[i:]
		var n int
		switch {
		case hasPrefix(rest, "<!--"):
			n = endAfter(rest, len("<!--"), "-->")
		case hasPrefix(rest, "<![CDATA["):
			n = endAfter(rest, len("<![CDATA["), "]]>")
		case len(rest) > 1 && rest[1] == '?':
			n = endAfter(rest, 2, "?>")
		case len(rest) > 1 && rest[1] == '!':
			return out
		default:
			n = tagEnd(rest)
		}
		if n < 0 {
			return out
		}
		i += n
	}
	return out
}

// endAfter returns the length of b up to and including the first end at or
// after from, or -1.
func endAfter(b []byte, from int, end string) int {
	k := bytes.Index(b[from:], []byte(end))
	if k < 0 {
		return -1
	}
	return from + k + len(end)
}

// tagEnd returns the length of the tag at the start of b, up to and
// including the '>' outside quotes that closes it, or -1.
func tagEnd(b []byte) int {
	var quote byte
	for k := 1; k < len(b); k++ {
		switch c := b[k]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '>':
			return k + 1
		}
	}
	return -1
}

// withPlaceholders returns a copy of data with each lifted text node
// replaced by the placeholder.
func withPlaceholders(data []byte, lifts []lift) []byte {
	n := len(data)
	for _, l := range lifts {
		n -= l.end - l.start - len(placeholder)
	}
	out := make([]byte, 0, n)
	prev := 0
	for _, l := range lifts {
		out = append(out, data[prev:l.start]...)
		out = append(out, placeholder...)
		prev = l.end
	}
	return append(out, data[prev:]...)
}

// inPlaceChunk is how much base64 DecodeBase64InPlace decodes at a time: a
// multiple of 4, so that every chunk but the last is whole quanta.
const inPlaceChunk = 4 << 10

var errPaddingInside = errors.New("base64 padding before the end")

// DecodeBase64InPlace decodes standard, padded base64 without line breaks
// (a lifted text: isBase64Run; a stream's text in a ReceiveResponse) over
// itself and returns the decoded prefix of b. The daemon decodes stdin's
// Sends with it; the bench's client (cmd/winrmd-bench) its
// ReceiveResponses, so that it decodes as fast as the daemon does. It
// accepts exactly what base64.StdEncoding.Decode accepts for such input.
// decodeBase64Body decodes all but the last quantum of plain base64; the
// rest goes in chunks through the standard library: each chunk is decoded
// into a buffer on the stack and then copied down: the output of a chunk
// ends before the chunk does (3 bytes for every 4), so it overwrites only
// base64 already read, whatever Decode does with overlapping buffers.
func DecodeBase64InPlace(b []byte) ([]byte, error) {
	// All but the last quantum, unless something in them is not plain
	// base64: then from there on, as the standard library decodes.
	n, start := decodeBase64Body(b)
	var tmp [inPlaceChunk / 4 * 3]byte
	for i := start; i < len(b); i += inPlaceChunk {
		chunk := b[i:min(i+inPlaceChunk, len(b))]
		if i+inPlaceChunk < len(b) && bytes.IndexByte(chunk, '=') >= 0 {
			// Decode of the whole would refuse data after padding.
			return nil, errPaddingInside
		}
		k, err := base64.StdEncoding.Decode(tmp[:], chunk)
		if err != nil {
			return nil, err
		}
		n += copy(b[n:], tmp[:k])
	}
	return b[:n], nil
}
