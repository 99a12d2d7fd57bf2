package wsman

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"unicode/utf8"
)

// A scanner for the envelopes clients actually send.
//
// encoding/xml reads a byte at a time through an io.ByteReader, copies every
// name and text into a bytes.Buffer and checks each name rune against
// Unicode tables: two thirds of a Receive's parse (pprof of
// BenchmarkParseReceive, 47 µs for a 1.7 KB envelope). scanner tokenizes a
// deliberately small subset of XML over the bytes in place:
//
//	document  = [decl] { text | element-tag }
//	decl      = "<?xml " one of declContent "?>"      (first token only)
//	start tag = "<" name { S name S? "=" S? quoted } S? ( ">" | "/>" )
//	end tag   = "</" name S? ">"
//	name      = ASCII: [A-Za-z_] [A-Za-z0-9_.-]* with at most one ":",
//	            neither first nor last
//	quoted    = '"' value '"' | "'" value "'"; value has no "<"
//	text      = any run up to "<" without "]]>" and without CR
//	cdata     = "<![CDATA[" any run without CR "]]>"   (masterzen's command)
//	entities  = &lt; &gt; &amp; &apos; &quot; only
//	S         = space, tab, LF, CR
//
// Anything outside it (comments, DOCTYPE, other processing
// instructions, character references, other entities, CR in values,
// non-ASCII names, characters outside XML's Char production, truncated
// markup) makes next return errUnsure, and the document is then read by
// encoding/xml exactly as before. The scanner never reports a syntax error
// of its own, so every fault a client sees still comes from encoding/xml's
// reading (see readDocument, which also rereads on any fault).
//
// What it does return is, token for token and offset for offset, what
// encoding/xml's RawToken returns for the same bytes in strict mode:
// FuzzScanMatchesEncodingXML holds it to that on every input, and to
// reaching EOF only where encoding/xml does.

// errUnsure is next's answer to input outside the scanner's subset.
var errUnsure = errors.New("wsman: input outside the scanner's subset")

// declContent lists the XML declarations the scanner takes (the text
// between "<?xml " and "?>"): what pywinrm, pypsrp and masterzen send. Any
// other declaration goes to encoding/xml, which checks version and
// encoding.
var declContent = [...]string{
	`version="1.0" encoding="utf-8"`,
	`version="1.0" encoding="UTF-8"`,
	`version="1.0"`,
}

// byteClass marks the bytes the text and value loops must look at: 0 for a
// byte copied as it is.
const (
	clsPlain   = iota
	clsLT      // '<'
	clsAmp     // '&'
	clsCR      // '\r': encoding/xml rewrites it
	clsBracket // ']': may start "]]>"
	clsBad     // a C0 control other than tab and LF: outside XML's Char
	clsHigh    // >= 0x80: a UTF-8 sequence to check against Char
	clsQuote   // '"' and '\'': ends a value of the same quote
)

var byteClass = func() (t [256]uint8) {
	for c := 0; c < 0x20; c++ {
		t[c] = clsBad
	}
	t['\t'], t['\n'] = clsPlain, clsPlain
	t['\r'] = clsCR
	t['<'] = clsLT
	t['&'] = clsAmp
	t[']'] = clsBracket
	t['"'], t['\''] = clsQuote, clsQuote
	for c := 0x80; c < 0x100; c++ {
		t[c] = clsHigh
	}
	return t
}()

// nameByte marks the bytes of a name after its first: encoding/xml's
// isNameByte, all of which its Unicode tables accept after the first.
var nameByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['_'], t[':'], t['.'], t['-'] = true, true, true, true
	return t
}()

// interned holds the names and attribute values every envelope repeats, so
// that a lookup by their bytes (which does not allocate) replaces a new
// string. It is read-only after init.
var interned = func() map[string]string {
	m := map[string]string{}
	for _, s := range []string{
		"s", "a", "w", "p", "b", "n", "x", "rsp", "wsman", "env", "cfg", "xml", "xmlns", "lang",
		"env", "Envelope", "Header", "Body", "To", "Action", "MessageID", "ReplyTo", "Address",
		"ResourceURI", "MaxEnvelopeSize", "Locale", "DataLocale", "SessionId", "OperationID",
		"SequenceId", "OperationTimeout", "SelectorSet", "Selector", "OptionSet", "Option",
		"Name", "MustComply", "mustUnderstand", "Shell", "InputStreams", "OutputStreams",
		"Receive", "DesiredStream", "CommandId", "Send", "Stream", "Signal", "Code",
		"CommandLine", "Command", "Arguments", "End", "ShellId", "WorkingDirectory",
		"Environment", "Variable", "Lifetime", "IdleTimeOut", "CompressionType",
		"WINRS_NOPROFILE", "WINRS_CODEPAGE", "WINRS_CONSOLEMODE_STDIN", "WINRS_SKIP_CMD_SHELL",
		"protocolversion", "Identify", "creationXml", "Delete", "Create",
		"true", "false", "TRUE", "FALSE", "en-US", "stdin", "stdout", "stderr", "stdin pr",
		"stdout stderr", "437", "65001", "http://www.w3.org/2005/08/addressing/anonymous",
		"http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous",
		NsSoap, NsAddressing, NsWsman, NsWsmanMS, NsTransfer, NsEnumeration, NsEventing,
		NsShell, NsConfig, NsIdentity, NsCimBinding, NsPowerShell, NsXML,
		"http://schemas.xmlsoap.org/ws/2004/08/addressing",
		"http://www.w3.org/2001/XMLSchema", "http://www.w3.org/2001/XMLSchema-instance",
		"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
		"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate",
		"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c",
		"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command",
		"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive",
		"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send",
		"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal",
		"http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
		"http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete",
		"http://schemas.microsoft.com/powershell/Microsoft.PowerShell",
	} {
		m[s] = s
	}
	return m
}()

// intern returns b as a string, without allocating when it is a known one.
func intern(b []byte) string {
	if s, ok := interned[string(b)]; ok {
		return s
	}
	return string(b)
}

// scanner tokenizes b (see the top of this file). Its zero value is not
// usable; newScanner makes one.
type scanner struct {
	b    []byte
	pos  int
	toks int // tokens returned, for the declaration's first-only rule

	needClose bool // the last start tag was empty: its end comes next
	toClose   xml.Name

	attr []xml.Attr // reused: readTokens copies out of it before next
	text []byte     // reused: a text or value with entities replaced
}

func newScanner(b []byte) *scanner { return &scanner{b: b} }

func (s *scanner) offset() int64 { return int64(s.pos) }

// next reads one token into t: io.EOF at the end, errUnsure outside the
// subset. t's slices alias the input or the scanner's buffers and are valid
// until the next call.
func (s *scanner) next(t *token) error {
	if s.needClose {
		s.needClose = false
		*t = token{kind: tokEnd, name: s.toClose}
		return nil
	}
	b := s.b
	if s.pos >= len(b) {
		return io.EOF
	}
	s.toks++
	if b[s.pos] != '<' {
		data, end, ok := s.chars(s.pos, 0)
		if !ok {
			return errUnsure
		}
		*t = token{kind: tokText, data: data}
		s.pos = end
		return nil
	}
	i := s.pos + 1
	if i >= len(b) {
		return errUnsure
	}
	switch b[i] {
	case '/':
		name, j, ok := scanName(b, i+1)
		if !ok {
			return errUnsure
		}
		j = skipSpace(b, j)
		if j >= len(b) || b[j] != '>' {
			return errUnsure
		}
		*t = token{kind: tokEnd, name: name}
		s.pos = j + 1
		return nil
	case '?':
		if s.toks != 1 || !hasPrefix(b[i:], "?xml ") {
			return errUnsure
		}
		j := skipSpace(b, i+len("?xml"))
		for _, d := range declContent {
			if hasPrefix(b[j:], d) && hasPrefix(b[j+len(d):], "?>") {
				*t = token{kind: tokProcInst, name: xml.Name{Local: "xml"}, data: b[j : j+len(d)]}
				s.pos = j + len(d) + len("?>")
				return nil
			}
		}
		return errUnsure
	case '!':
		// A CDATA section, as masterzen sends a command line: text
		// without entities, up to the first "]]>".
		if !hasPrefix(b[i:], "![CDATA[") {
			return errUnsure
		}
		from := i + len("![CDATA[")
		k := bytes.Index(b[from:], []byte("]]>"))
		if k < 0 || !plainChars(b[from:from+k]) {
			return errUnsure
		}
		*t = token{kind: tokText, data: b[from : from+k]}
		s.pos = from + k + len("]]>")
		return nil
	}
	name, j, ok := scanName(b, i)
	if !ok {
		return errUnsure
	}
	attr := s.attr[:0]
	for {
		j = skipSpace(b, j)
		if j >= len(b) {
			return errUnsure
		}
		if b[j] == '>' {
			j++
			break
		}
		if b[j] == '/' {
			if j+1 >= len(b) || b[j+1] != '>' {
				return errUnsure
			}
			j += 2
			s.needClose, s.toClose = true, name
			break
		}
		an, k, ok := scanName(b, j)
		if !ok {
			return errUnsure
		}
		k = skipSpace(b, k)
		if k >= len(b) || b[k] != '=' {
			return errUnsure
		}
		k = skipSpace(b, k+1)
		if k >= len(b) || (b[k] != '"' && b[k] != '\'') {
			return errUnsure
		}
		val, end, ok := s.chars(k+1, b[k])
		if !ok {
			return errUnsure
		}
		attr = append(attr, xml.Attr{Name: an, Value: intern(val)})
		j = end
	}
	s.attr = attr
	*t = token{kind: tokStart, name: name, attr: attr}
	s.pos = j
	return nil
}

// chars reads a text (quote 0) from b[i:], up to '<' or the end, or a
// quoted value up to its closing quote, and returns it with its entities
// replaced, and where the token ends (after the closing quote of a value).
// ok is false outside the subset: CR, a control character, a character
// outside Char, a character or unknown entity reference, "]]>" in text,
// '<' or the end of input in a value.
func (s *scanner) chars(i int, quote byte) (data []byte, end int, ok bool) {
	b := s.b
	start := i
	var out []byte // nil while the run needs no rewriting
	for i < len(b) {
		c := b[i]
		switch byteClass[c] {
		case clsPlain:
			i++
			continue
		case clsQuote:
			if c == quote {
				if out == nil {
					return b[start:i], i + 1, true
				}
				return append(out, b[start:i]...), i + 1, true
			}
			i++
			continue
		case clsLT:
			if quote != 0 {
				return nil, 0, false
			}
			if out == nil {
				return b[start:i], i, true
			}
			return append(out, b[start:i]...), i, true
		case clsBracket:
			if quote == 0 && hasPrefix(b[i:], "]]>") {
				return nil, 0, false
			}
			i++
			continue
		case clsHigh:
			r, n := utf8.DecodeRune(b[i:])
			if !isHighChar(r, n) {
				return nil, 0, false
			}
			i += n
			continue
		case clsAmp:
			var r byte
			var n int
			switch {
			case hasPrefix(b[i:], "&lt;"):
				r, n = '<', 4
			case hasPrefix(b[i:], "&gt;"):
				r, n = '>', 4
			case hasPrefix(b[i:], "&amp;"):
				r, n = '&', 5
			case hasPrefix(b[i:], "&apos;"):
				r, n = '\'', 6
			case hasPrefix(b[i:], "&quot;"):
				r, n = '"', 6
			default:
				return nil, 0, false
			}
			if out == nil {
				out = s.text[:0]
			}
			out = append(append(out, b[start:i]...), r)
			s.text = out
			i += n
			start = i
			continue
		default: // clsCR, clsBad
			return nil, 0, false
		}
	}
	if quote != 0 {
		return nil, 0, false
	}
	if out == nil {
		return b[start:i], i, true
	}
	return append(out, b[start:i]...), i, true
}

// plainChars reports whether b is all characters of XML's Char production
// without CR (which encoding/xml rewrites).
func plainChars(b []byte) bool {
	for i := 0; i < len(b); {
		switch byteClass[b[i]] {
		case clsBad, clsCR:
			return false
		case clsHigh:
			r, n := utf8.DecodeRune(b[i:])
			if !isHighChar(r, n) {
				return false
			}
			i += n
		default:
			i++
		}
	}
	return true
}

// isHighChar reports whether the rune r, decoded from n bytes that start
// with one >= 0x80, is in XML's Char production.
func isHighChar(r rune, n int) bool {
	if r == utf8.RuneError && n == 1 {
		return false
	}
	return r >= 0x80 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

// scanName reads a name at b[i:] and splits it at its colon as
// encoding/xml's nsname does; ok is false for a name outside the subset.
func scanName(b []byte, i int) (name xml.Name, end int, ok bool) {
	if i >= len(b) {
		return name, 0, false
	}
	if c := b[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_') {
		return name, 0, false
	}
	start, colon := i, -1
	for i++; i < len(b) && nameByte[b[i]]; i++ {
		if b[i] == ':' {
			if colon >= 0 {
				return name, 0, false
			}
			colon = i
		}
	}
	if i < len(b) && b[i] >= utf8.RuneSelf {
		return name, 0, false // a non-ASCII name: encoding/xml's tables decide
	}
	switch {
	case colon < 0:
		name.Local = intern(b[start:i])
	case colon == i-1:
		return name, 0, false
	default:
		name.Space, name.Local = intern(b[start:colon]), intern(b[colon+1:i])
	}
	return name, i, true
}

// skipSpace returns the index of the first byte at or after i that is not
// XML white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}
