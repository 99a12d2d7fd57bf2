package wsman

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/beevik/etree"
)

// Option is one w:OptionSet/w:Option.
type Option struct {
	Value      string // trimmed text
	MustComply bool   // MustComply="true"
}

// Header holds the request headers the server acts on. Text values are
// trimmed of XML whitespace.
type Header struct {
	Action, To, ResourceURI, MessageID, SessionID, Locale, DataLocale string
	OperationTimeout                                                  time.Duration     // 0 when absent
	MaxEnvelopeSize                                                   int               // 0 when absent
	Selectors                                                         map[string]string // key = Selector Name as sent (e.g. "ShellId"); nil when none
	Options                                                           map[string]Option // key = Option Name, lower-cased; nil when none

	// CompressionType is rsp:CompressionType ("xpress" from the Windows
	// PowerShell client on Create), "" when absent.
	CompressionType string

	// selectorsFold indexes Selectors by lower-cased name (set by Parse).
	selectorsFold map[string]string
}

// Selector returns the selector called name, compared case-insensitively.
func (h *Header) Selector(name string) (string, bool) {
	if v, ok := h.Selectors[name]; ok {
		return v, true
	}
	if h.selectorsFold != nil {
		v, ok := h.selectorsFold[strings.ToLower(name)]
		return v, ok
	}
	for k, v := range h.Selectors {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// Option returns the option called name, compared case-insensitively.
func (h *Header) Option(name string) (Option, bool) {
	o, ok := h.Options[strings.ToLower(name)]
	return o, ok
}

// BoolOption returns the boolean value of the option called name: val is
// true for TRUE/True/true/1; present reports whether the option was sent
// (an unparseable value gives val false, present true).
func (h *Header) BoolOption(name string) (val, present bool) {
	o, ok := h.Option(name)
	if !ok {
		return false, false
	}
	v, _ := ParseBool(o.Value)
	return v, true
}

// Envelope is a parsed request.
type Envelope struct {
	Header     Header
	Body       *etree.Element // the first element child of s:Body, nil for an empty body
	IsIdentify bool           // no Action and body is wsmid:Identify

	// HeaderElement is the s:Header element (nil when absent), for headers
	// Header does not model.
	HeaderElement *etree.Element

	doc *etree.Document
	// streams holds the text of the rsp:Stream elements that read left in
	// the body (see streamText), in document order.
	streams []streamText
}

// streamText is the text of an rsp:Stream element that read did not copy
// into the tree: a lifted run of base64 (lift.go) that is the element's
// whole content, the payload of a Send. The element's only child then holds
// the placeholder, and the text stays where it is in the bytes Parse read,
// which Decode decodes from (decodeSend). Only decodeSend reads a request's
// rsp:Stream text.
type streamText struct {
	elem *etree.Element
	cd   *etree.CharData // elem's only child, holding the placeholder
	text []byte          // the base64, aliasing the bytes Parse read
	// data is the decoded text once DecodeInPlace has decoded it over
	// text (done); text is no longer base64 then.
	data []byte
	done bool
}

// streamOf returns the text read left in the body for element e, or nil.
func (env *Envelope) streamOf(e *etree.Element) *streamText {
	for i := range env.streams {
		if env.streams[i].elem == e {
			return &env.streams[i]
		}
	}
	return nil
}

// Parse parses and validates a request body (bytes as received, already
// decrypted); contentType is the request's Content-Type, used only for its
// charset parameter. Errors are always *Fault:
//   - w:EncodingLimit for size, depth, element count, attribute count, name
//     length, charset and encoding problems, and a MaxEnvelopeSize < 8192;
//   - w:SchemaValidationError for malformed XML, DTDs, entity declarations,
//     processing instructions and anything that is not a SOAP 1.2 envelope;
//   - a:InvalidMessageInformationHeader for invalid header values (e.g. a
//     negative OperationTimeout) or a missing Action on a non-Identify
//     request;
//   - s:MustUnderstand for a header in an unknown namespace flagged
//     s:mustUnderstand="true" (the un-namespaced attribute pywinrm and
//     masterzen send is tolerated and never faults);
//   - w:InvalidSelectors for nameless or duplicate selectors.
//
// Limits are enforced on the token stream, as the tree is built.
func Parse(body []byte, contentType string, lim Limits) (*Envelope, error) {
	env, f := parse(body, contentType, lim)
	if f != nil {
		return nil, f
	}
	return env, nil
}

func parse(body []byte, contentType string, lim Limits) (*Envelope, *Fault) {
	return parseWith(body, contentType, lim, liftMin)
}

// parseWith is parse lifting text nodes of at least minLift bytes (none
// when minLift < 1).
func parseWith(body []byte, contentType string, lim Limits, minLift int) (*Envelope, *Fault) {
	lim = lim.normalized()
	if len(body) > lim.MaxBytes {
		return nil, limitFault(CodeEnvelopeTooLarge, DetailServiceEnvelopeLimit,
			"The WS-Management service cannot process the request because the envelope exceeds "+
				strconv.Itoa(lim.MaxBytes)+" bytes. ")
	}
	data, f := decodeCharset(body, contentType, lim.MaxBytes)
	if f != nil {
		return nil, f
	}
	doc, streams, f := readDocument(data, lim, minLift)
	if f != nil {
		return nil, f
	}
	env, f := build(doc)
	if env != nil {
		env.streams = streams
	}
	return env, f
}

func limitFault(code uint32, detail, msg string) *Fault {
	f := EncodingLimit(code, msg)
	f.Detail = detail
	return f
}

func schemaFault(why string) *Fault {
	if len(why) > 256 {
		why = why[:256] + "..."
	}
	return SchemaValidation("The WS-Management service cannot process the request because " + why + " ")
}

// passThroughCharset lets etree read documents whose XML declaration names a
// charset; the bytes are UTF-8 by then (decodeCharset).
func passThroughCharset(_ string, r io.Reader) (io.Reader, error) { return r, nil }

// charsetParam extracts the charset parameter of a Content-Type value,
// lower-cased, without quotes; "" when absent.
func charsetParam(contentType string) string {
	parts := strings.Split(contentType, ";")
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "charset") {
			continue
		}
		v = strings.TrimSpace(v)
		v = strings.Trim(v, `"'`)
		return strings.ToLower(strings.TrimSpace(v))
	}
	return ""
}

// decodeCharset returns the body as UTF-8 without a byte-order mark. A BOM
// wins over the charset parameter; without one, "utf-16" means big-endian
// (RFC 2781) unless the first character shows otherwise.
func decodeCharset(body []byte, contentType string, maxBytes int) ([]byte, *Fault) {
	charset := charsetParam(contentType)
	switch charset {
	case "", "utf-8", "utf8", "utf-16", "utf-16le", "utf-16be":
	default:
		return nil, limitFault(CodeEncodingLimit, DetailCharacterSet,
			"The WS-Management service cannot process the request because the character set "+
				strconv.Quote(truncate(charset, 40))+" is not supported; use UTF-8 or UTF-16. ")
	}
	var bigEndian, utf16In bool
	switch {
	case bytes.HasPrefix(body, []byte{0xEF, 0xBB, 0xBF}):
		body = body[3:]
	case bytes.HasPrefix(body, []byte{0xFE, 0xFF}):
		body, utf16In, bigEndian = body[2:], true, true
	case bytes.HasPrefix(body, []byte{0xFF, 0xFE}):
		body, utf16In = body[2:], true
	case charset == "utf-16be":
		utf16In, bigEndian = true, true
	case charset == "utf-16le":
		utf16In = true
	case charset == "utf-16":
		utf16In = true
		bigEndian = !(len(body) >= 2 && body[0] != 0 && body[1] == 0)
	}
	if !utf16In {
		if !utf8.Valid(body) {
			return nil, limitFault(CodeEncodingLimit, DetailUnsupportedCharacter,
				"The WS-Management service cannot process the request because it is not valid UTF-8. ")
		}
		return body, nil
	}
	out, ok := utf16ToUTF8(body, bigEndian)
	if !ok {
		return nil, limitFault(CodeEncodingLimit, DetailUnsupportedCharacter,
			"The WS-Management service cannot process the request because it is not valid UTF-16. ")
	}
	if len(out) > maxBytes {
		return nil, limitFault(CodeEnvelopeTooLarge, DetailServiceEnvelopeLimit,
			"The WS-Management service cannot process the request because the envelope exceeds "+
				strconv.Itoa(maxBytes)+" bytes. ")
	}
	return out, nil
}

// utf16ToUTF8 transcodes, rejecting odd lengths and unpaired surrogates.
func utf16ToUTF8(b []byte, bigEndian bool) ([]byte, bool) {
	if len(b)%2 != 0 {
		return nil, false
	}
	out := make([]byte, 0, len(b)/2+len(b)/4)
	unit := func(i int) rune {
		if bigEndian {
			return rune(b[i])<<8 | rune(b[i+1])
		}
		return rune(b[i+1])<<8 | rune(b[i])
	}
	for i := 0; i < len(b); i += 2 {
		r := unit(i)
		if utf16.IsSurrogate(r) {
			if r >= 0xDC00 || i+3 >= len(b) {
				return nil, false
			}
			r = utf16.DecodeRune(r, unit(i+2))
			if r == utf8.RuneError {
				return nil, false
			}
			i += 2
		}
		out = utf8.AppendRune(out, r)
	}
	return out, true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// isXMLSpace reports whether b is only XML whitespace.
func isXMLSpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

func xmlTrim(s string) string { return strings.Trim(s, " \t\r\n") }

// nsUndo records a namespace binding to restore when its element ends.
type nsUndo struct {
	prefix, prev string
	had          bool
}

// readDocument validates data and builds its tree in one pass over a strict
// token stream (see readTokens). Text nodes of at least minLift bytes of
// base64 are first lifted out of the bytes the tokenizer sees (see
// lift.go), which spares it most of a Send's payload; should the lifted
// read not prove equivalent to a read of data itself, data is read again as
// it is. minLift < 1 disables lifting.
//
// The scanner (scan.go) reads first. Only a tree it builds in full, with
// no fault and every lift exact, is kept; anything else (input outside its
// subset, a fault, an inexact lift) is read again by encoding/xml exactly
// as it was before the scanner existed, so faults and their messages come
// only from that reading.
func readDocument(data []byte, lim Limits, minLift int) (*etree.Document, []streamText, *Fault) {
	var lifts []lift
	if minLift >= 1 {
		lifts = findLifts(data, minLift)
	}
	src := data
	if len(lifts) > 0 {
		src = withPlaceholders(data, lifts)
	}
	if doc, streams, f, exact := readTokens(newScanner(src), lim, data, lifts); f == nil && exact {
		return doc, streams, nil
	}
	if len(lifts) > 0 {
		doc, streams, f, exact := read(src, lim, data, lifts)
		if exact {
			return doc, streams, f
		}
	}
	doc, _, f, _ := read(data, lim, nil, nil)
	return doc, nil, f
}

// tokKind is the kind of a token.
type tokKind uint8

const (
	tokStart tokKind = iota + 1
	tokEnd
	tokText
	tokComment
	tokProcInst
	tokDirective
)

// token is one token of a tokenSource: encoding/xml's RawToken, without
// an interface value per token. name is the element name, or the target of
// a processing instruction; data is the text, comment, directive or
// instruction. Slices are valid until the source's next call.
type token struct {
	kind tokKind
	name xml.Name
	attr []xml.Attr
	data []byte
}

// tokenSource yields tokens until io.EOF; offset is where the last one
// ended, as encoding/xml's InputOffset.
type tokenSource interface {
	next(t *token) error
	offset() int64
}

// xmlSource is encoding/xml's strict tokenizer as a tokenSource.
type xmlSource struct {
	dec        *xml.Decoder
	badCharset string // set when the XML declaration names an unsupported encoding
}

func newXMLSource(data []byte) *xmlSource {
	s := &xmlSource{dec: xml.NewDecoder(bytes.NewReader(data))}
	s.dec.Strict = true
	s.dec.CharsetReader = func(label string, r io.Reader) (io.Reader, error) {
		switch strings.ToLower(label) {
		case "utf-16", "utf-16le", "utf-16be", "utf8", "utf-8":
			return r, nil // already transcoded to UTF-8
		}
		s.badCharset = label
		return nil, errors.New("unsupported charset")
	}
	return s
}

func (s *xmlSource) offset() int64 { return s.dec.InputOffset() }

func (s *xmlSource) next(t *token) error {
	tok, err := s.dec.RawToken()
	if err != nil {
		return err
	}
	switch x := tok.(type) {
	case xml.StartElement:
		*t = token{kind: tokStart, name: x.Name, attr: x.Attr}
	case xml.EndElement:
		*t = token{kind: tokEnd, name: x.Name}
	case xml.CharData:
		*t = token{kind: tokText, data: x}
	case xml.Comment:
		*t = token{kind: tokComment, data: x}
	case xml.ProcInst:
		*t = token{kind: tokProcInst, name: xml.Name{Local: x.Target}, data: x.Inst}
	case xml.Directive:
		*t = token{kind: tokDirective, data: x}
	default:
		*t = token{}
	}
	return nil
}

// read is readTokens over encoding/xml's strict tokenizer.
func read(data []byte, lim Limits, orig []byte, lifts []lift) (doc *etree.Document, streams []streamText, f *Fault, exact bool) {
	return readTokens(newXMLSource(data), lim, orig, lifts)
}

// readTokens validates src's token stream and builds the tree as it goes:
// limits, no DTD/entity declarations/processing instructions, one root
// element, matching tags, declared prefixes, no duplicate attributes.
// Memory use is bounded by the input size.
//
// When lifts is not empty, the input is the output of withPlaceholders(orig,
// lifts), and each placeholder that the tokenizer returns as a whole text
// token is replaced by its original text. exact reports whether the result
// (tree or fault) is the one reading orig would give: it is false as soon as
// a lifted span was not read as a whole text token, since the lexer that
// chose it was then wrong about the context, and false when src is the
// scanner and the input is outside its subset.
//
// A restored text that is the whole content of an rsp:Stream element is
// not copied into the tree: streams maps the element to it (streamText),
// and the tree holds the placeholder. The tree is otherwise the one reading
// orig gives.
func readTokens(src tokenSource, lim Limits, orig []byte, lifts []lift) (doc *etree.Document, streams []streamText, f *Fault, exact bool) {
	doc = newDocument() // canonical write settings: re-serialises faithfully
	doc.ReadSettings = etree.ReadSettings{
		CharsetReader: passThroughCharset,
		MaxDepth:      lim.MaxDepth,
	}

	type attrKey struct{ space, local string }
	// The stacks start in these arrays: a request nests a few levels deep
	// and declares a few prefixes.
	var (
		openBuf  [16]*etree.Element
		marksBuf [16]int
		undoBuf  [16]nsUndo
		keysBuf  [8]attrKey
	)
	var (
		open     = openBuf[:0]  // open elements, innermost last
		top      = &doc.Element // where the next token goes
		marks    = marksBuf[:0]
		undo     = undoBuf[:0]
		bindings = make(map[string]string, 8)
		keys     = keysBuf[:0]
		elements int
		first    = true
		sawRoot  bool
		rootDone bool
		next     int // lifts[next] is the next placeholder to meet
		t        token
	)
	bind := func(prefix, uri string) {
		prev, had := bindings[prefix]
		undo = append(undo, nsUndo{prefix, prev, had})
		bindings[prefix] = uri
	}
	resolve := func(prefix string) (string, bool) {
		if prefix == "xml" {
			return NsXML, true
		}
		uri, ok := bindings[prefix]
		return uri, ok
	}
	// fail returns a fault, which is exact unless the tokenizer may have
	// looked at a placeholder it did not return as a text token. It reads
	// a byte too many at times, and puts it back: the offset is then that
	// byte's, so only an offset short of the placeholder proves it unread.
	fail := func(f *Fault) (*etree.Document, []streamText, *Fault, bool) {
		return nil, nil, f, next == len(lifts) || src.offset() < int64(lifts[next].at)
	}

	for {
		start := src.offset()
		err := src.next(&t)
		if err == io.EOF {
			break
		}
		if err == errUnsure {
			return nil, nil, nil, false
		}
		if err != nil {
			if xs, ok := src.(*xmlSource); ok && xs.badCharset != "" {
				badCharset := xs.badCharset
				return fail(limitFault(CodeEncodingLimit, DetailCharacterSet,
					"The WS-Management service cannot process the request because the declared encoding "+
						strconv.Quote(truncate(badCharset, 40))+" is not supported. "))
			}
			return fail(schemaFault("the XML is not well-formed: " + err.Error()))
		}
		var lifted []byte // the original text of a placeholder CharData token
		if next < len(lifts) {
			l := lifts[next]
			end := src.offset()
			if t.kind == tokText && start == int64(l.at) && end == int64(l.at+len(placeholder)) {
				lifted = orig[l.start:l.end]
				next++
			} else if end > int64(l.at) {
				return nil, nil, nil, false // the placeholder is part of another token
			}
		}
		isFirst := first
		first = false
		switch t.kind {
		case tokStart:
			if rootDone {
				return fail(schemaFault("the document has more than one root element."))
			}
			sawRoot = true
			if len(open) >= lim.MaxDepth {
				return fail(limitFault(CodeEncodingLimit, "", "The WS-Management service cannot process the request because elements are nested deeper than "+strconv.Itoa(lim.MaxDepth)+" levels. "))
			}
			elements++
			if elements > lim.MaxElements {
				return fail(limitFault(CodeEncodingLimit, "", "The WS-Management service cannot process the request because it has more than "+strconv.Itoa(lim.MaxElements)+" elements. "))
			}
			if len(t.attr) > lim.MaxAttrs {
				return fail(limitFault(CodeEncodingLimit, "", "The WS-Management service cannot process the request because an element has more than "+strconv.Itoa(lim.MaxAttrs)+" attributes. "))
			}
			if f := checkName(t.name, lim); f != nil {
				return fail(f)
			}
			if t.name.Space == "xmlns" {
				return fail(schemaFault("an element uses the reserved prefix xmlns."))
			}
			marks = append(marks, len(undo))
			// Namespace declarations first: they apply to the element's own
			// name and attributes.
			for _, a := range t.attr {
				if f := checkName(a.Name, lim); f != nil {
					return fail(f)
				}
				switch {
				case a.Name.Space == "xmlns":
					switch {
					case a.Name.Local == "xmlns":
						return fail(schemaFault("the prefix xmlns cannot be declared."))
					case a.Name.Local == "xml":
						if a.Value != NsXML {
							return fail(schemaFault("the prefix xml cannot be rebound."))
						}
						continue
					case a.Value == "":
						return fail(schemaFault("a namespace prefix is bound to an empty URI."))
					case a.Value == NsXML || a.Value == "http://www.w3.org/2000/xmlns/":
						return fail(schemaFault("a reserved namespace is bound to another prefix."))
					}
					bind(a.Name.Local, a.Value)
				case a.Name.Space == "" && a.Name.Local == "xmlns":
					if a.Value == NsXML || a.Value == "http://www.w3.org/2000/xmlns/" {
						return fail(schemaFault("a reserved namespace is declared as default."))
					}
					bind("", a.Value)
				}
			}
			if t.name.Space != "" {
				if _, ok := resolve(t.name.Space); !ok {
					return fail(schemaFault("the namespace prefix " + strconv.Quote(t.name.Space) + " is not declared."))
				}
			}
			keys = keys[:0]
			for _, a := range t.attr {
				k := attrKey{a.Name.Space, a.Name.Local}
				if a.Name.Space != "" && a.Name.Space != "xmlns" {
					uri, ok := resolve(a.Name.Space)
					if !ok {
						return fail(schemaFault("the namespace prefix " + strconv.Quote(a.Name.Space) + " is not declared."))
					}
					k.space = "{" + uri + "}"
				}
				for _, o := range keys {
					if o == k {
						return fail(schemaFault("an element has a duplicate attribute " + strconv.Quote(a.Name.Local) + "."))
					}
				}
				keys = append(keys, k)
			}
			// Valid: add it to the tree as etree's reader would. Names have
			// been checked to hold at most one colon, between prefix and
			// local part, so Space and Tag (Key) come out as parsed.
			e := top.CreateElement(t.name.Local)
			e.Space = t.name.Space
			if len(t.attr) > 0 {
				// CreateAttr is the only way to tie an Attr to its element,
				// but it first looks for an attribute of the same key to
				// replace, which makes n attributes cost n² (and would
				// need "prefix:local" strings built). There are no
				// duplicates here, so hand it an empty view of the slice
				// for each one: it appends in place, as the capacity
				// suffices, and the slice is then extended over the new
				// attribute.
				all := make([]etree.Attr, 0, len(t.attr))
				for i, a := range t.attr {
					e.Attr = all[i:i]
					e.CreateAttr(a.Name.Local, a.Value).Space = a.Name.Space
					all = all[:i+1]
				}
				e.Attr = all
			}
			open = append(open, e)
			top = e
		case tokEnd:
			if len(open) == 0 || top.Space != t.name.Space || top.Tag != t.name.Local {
				return fail(schemaFault("the XML is not well-formed: mismatched end tag."))
			}
			if len(streams) > 0 && len(top.Child) > 1 {
				// A stream's lifted text and more: the tree gets it all.
				for i := len(streams) - 1; i >= 0; i-- {
					if st := &streams[i]; st.elem == top {
						st.cd.SetData(string(st.text))
						streams = append(streams[:i], streams[i+1:]...)
						break
					}
				}
			}
			open = open[:len(open)-1]
			m := marks[len(marks)-1]
			marks = marks[:len(marks)-1]
			for len(undo) > m {
				u := undo[len(undo)-1]
				undo = undo[:len(undo)-1]
				if u.had {
					bindings[u.prefix] = u.prev
				} else {
					delete(bindings, u.prefix)
				}
			}
			if len(open) == 0 {
				rootDone = true
				top = &doc.Element
			} else {
				top = open[len(open)-1]
			}
		case tokText:
			if len(open) == 0 && !isXMLSpace(t.data) {
				return fail(schemaFault("there is text outside the root element."))
			}
			if lifted != nil && len(top.Child) == 0 && top.Tag == "Stream" {
				if uri, _ := resolve(top.Space); uri == NsShell {
					streams = append(streams, streamText{elem: top, cd: top.CreateText(placeholder), text: lifted})
					break
				}
			}
			var text string
			if lifted != nil {
				text = string(lifted)
			} else if len(t.data) <= 128 {
				text = intern(t.data) // an Action, a ResourceURI, "true"
			} else {
				text = string(t.data)
			}
			top.CreateText(text).SetData(text) // SetData flags whitespace, as etree's reader does
		case tokComment:
			// Harmless; kept in the tree and ignored.
			top.CreateComment(string(t.data))
		case tokProcInst:
			if !(isFirst && t.name.Local == "xml") {
				return fail(schemaFault("processing instructions are not allowed."))
			}
			top.CreateProcInst(t.name.Local, string(t.data))
		case tokDirective:
			return fail(schemaFault("DTDs and entity declarations are not allowed."))
		default:
			return fail(schemaFault("the XML contains an unexpected token."))
		}
	}
	if next != len(lifts) {
		return nil, nil, nil, false
	}
	if len(open) != 0 {
		return fail(schemaFault("the XML is not well-formed: unexpected end of document."))
	}
	if !sawRoot {
		return fail(schemaFault("the request has no root element."))
	}
	return doc, streams, nil, true
}

// checkName enforces the name length limit and XML namespace
// well-formedness (at most one colon, non-empty prefix and local part).
func checkName(n xml.Name, lim Limits) *Fault {
	l := len(n.Local)
	if n.Space != "" {
		l += len(n.Space) + 1
	}
	if l > lim.MaxNameLen {
		return limitFault(CodeEncodingLimit, "", "The WS-Management service cannot process the request because a name is longer than "+strconv.Itoa(lim.MaxNameLen)+" characters. ")
	}
	if strings.Contains(n.Local, ":") || n.Local == "" {
		return schemaFault("a name is not a valid qualified name.")
	}
	return nil
}

// build checks the SOAP structure of a scanned document and extracts the
// headers.
func build(doc *etree.Document) (*Envelope, *Fault) {
	root := doc.Root()
	if root == nil {
		return nil, schemaFault("the request has no root element.")
	}
	if !Is(root, NsSoap, "Envelope") {
		if Is(root, nsSoap11, "Envelope") {
			return nil, schemaFault("SOAP 1.1 envelopes are not supported; use SOAP 1.2.")
		}
		return nil, schemaFault("the root element is not a SOAP 1.2 Envelope.")
	}
	env := &Envelope{doc: doc}
	var hdr, body *etree.Element
	for _, c := range root.ChildElements() {
		switch {
		case hdr == nil && body == nil && Is(c, NsSoap, "Header"):
			hdr = c
		case body == nil && Is(c, NsSoap, "Body"):
			body = c
		default:
			return nil, schemaFault("the element " + strconv.Quote(truncate(c.FullTag(), 64)) + " is not allowed in the SOAP Envelope.")
		}
	}
	if body == nil {
		return nil, schemaFault("the SOAP Envelope has no Body.")
	}
	env.HeaderElement = hdr
	if hdr != nil {
		if f := parseHeader(hdr, &env.Header); f != nil {
			// Let the fault relate to the request when its id is readable.
			if id := Child(hdr, NsAddressing, "MessageID"); id != nil {
				f.RelatesTo = xmlTrim(id.Text())
			}
			return nil, f
		}
	}
	if kids := body.ChildElements(); len(kids) > 0 {
		env.Body = kids[0]
	}
	if env.Header.Action == "" {
		if env.Body != nil && env.Body.Tag == "Identify" {
			if ns := elemNS(env.Body); ns == NsIdentity || ns == nsIdentityAlt {
				env.IsIdentify = true
				return env, nil
			}
		}
		f := InvalidHeader("The WS-Management service cannot process the request because the a:Action header is missing. ")
		f.RelatesTo = env.Header.MessageID
		return nil, f
	}
	return env, nil
}

// knownHeaderNS reports whether ns is a namespace whose headers this server
// recognises; unknown headers in these namespaces are ignored even when
// flagged mustUnderstand.
func knownHeaderNS(ns string) bool {
	switch ns {
	case NsSoap, NsAddressing, NsWsman, NsWsmanMS, NsTransfer, NsEnumeration,
		NsEventing, NsShell, NsFault, NsConfig, NsIdentity, NsCimBinding, NsPowerShell:
		return true
	}
	return false
}

// soapMustUnderstand reports whether e carries s:mustUnderstand="true" (or
// "1") with the SOAP 1.2 namespace. The un-namespaced attribute some clients
// send does not count.
func soapMustUnderstand(e *etree.Element) bool {
	for i := range e.Attr {
		a := &e.Attr[i]
		if a.Key == "mustUnderstand" && a.Space != "" && a.NamespaceURI() == NsSoap {
			v, _ := ParseBool(a.Value)
			return v
		}
	}
	return false
}

// xmlLang returns e's xml:lang attribute.
func xmlLang(e *etree.Element) string {
	for _, a := range e.Attr {
		if a.Space == "xml" && a.Key == "lang" {
			return xmlTrim(a.Value)
		}
	}
	return ""
}

// Header singletons, for duplicate detection.
const (
	seenAction = 1 << iota
	seenTo
	seenMessageID
	seenResourceURI
	seenTimeout
	seenMaxEnv
)

func parseHeader(hdr *etree.Element, h *Header) *Fault {
	kids := hdr.ChildElements()
	// SOAP 1.2: mustUnderstand faults come before any other processing.
	for _, c := range kids {
		ns := elemNS(c)
		if !knownHeaderNS(ns) && soapMustUnderstand(c) {
			return MustUnderstand("{" + ns + "}" + c.Tag)
		}
	}
	seen := 0
	once := func(bit int, name string) *Fault {
		if seen&bit != 0 {
			return InvalidHeader("The WS-Management service cannot process the request because the " + name + " header appears more than once. ")
		}
		seen |= bit
		return nil
	}
	for _, c := range kids {
		switch elemNS(c) {
		case NsAddressing:
			switch c.Tag {
			case "Action":
				if f := once(seenAction, "a:Action"); f != nil {
					return f
				}
				h.Action = xmlTrim(c.Text())
			case "To":
				if f := once(seenTo, "a:To"); f != nil {
					return f
				}
				h.To = xmlTrim(c.Text())
			case "MessageID":
				if f := once(seenMessageID, "a:MessageID"); f != nil {
					return f
				}
				h.MessageID = xmlTrim(c.Text())
			}
		case NsWsman:
			switch c.Tag {
			case "ResourceURI":
				if f := once(seenResourceURI, "w:ResourceURI"); f != nil {
					return f
				}
				h.ResourceURI = xmlTrim(c.Text())
			case "SelectorSet":
				if f := parseSelectors(c, h); f != nil {
					return f
				}
			case "OptionSet":
				parseOptions(c, h)
			case "OperationTimeout":
				if f := once(seenTimeout, "w:OperationTimeout"); f != nil {
					return f
				}
				d, err := ParseDuration(c.Text())
				if err != nil || d < 0 {
					return InvalidHeader("The WS-Management service cannot process the request because the w:OperationTimeout value " +
						strconv.Quote(truncate(xmlTrim(c.Text()), 64)) + " is not a valid non-negative xs:duration. ")
				}
				h.OperationTimeout = d
			case "MaxEnvelopeSize":
				if f := once(seenMaxEnv, "w:MaxEnvelopeSize"); f != nil {
					return f
				}
				v := xmlTrim(c.Text())
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil && !errors.Is(err, strconv.ErrRange) {
					return InvalidHeader("The WS-Management service cannot process the request because the w:MaxEnvelopeSize value " +
						strconv.Quote(truncate(v, 64)) + " is not a number. ")
				}
				if err != nil || n > math.MaxInt32 {
					n = math.MaxInt32
				}
				if n < MinMaxEnvelopeSize {
					return limitFault(CodeMaxEnvelopeSizeTooSmall, DetailMinimumEnvelopeLimit,
						"The WS-Management service cannot process the request because w:MaxEnvelopeSize is smaller than "+
							strconv.Itoa(MinMaxEnvelopeSize)+" bytes. ")
				}
				h.MaxEnvelopeSize = int(n)
			case "Locale":
				h.Locale = xmlLang(c)
			}
		case NsWsmanMS:
			switch c.Tag {
			case "DataLocale":
				h.DataLocale = xmlLang(c)
			case "SessionId":
				h.SessionID = xmlTrim(c.Text())
			}
		case NsShell:
			if c.Tag == "CompressionType" {
				h.CompressionType = xmlTrim(c.Text())
			}
		}
	}
	return nil
}

func parseSelectors(set *etree.Element, h *Header) *Fault {
	for _, s := range Children(set, NsWsman, "Selector") {
		name := xmlTrim(Attr(s, "Name"))
		if name == "" {
			return InvalidSelectors("The WS-Management service cannot process the request because a selector has no Name. ")
		}
		fold := strings.ToLower(name)
		if _, dup := h.selectorsFold[fold]; dup {
			f := InvalidSelectors("The WS-Management service cannot process the request because the selector " +
				strconv.Quote(truncate(name, 64)) + " appears more than once. ")
			f.Detail = DetailDuplicateSelectors
			return f
		}
		if h.Selectors == nil {
			h.Selectors = make(map[string]string)
			h.selectorsFold = make(map[string]string)
		}
		v := xmlTrim(s.Text())
		h.Selectors[name] = v
		h.selectorsFold[fold] = v
	}
	return nil
}

// parseOptions records options; nameless ones are ignored and for a repeated
// name the first wins.
func parseOptions(set *etree.Element, h *Header) {
	for _, o := range Children(set, NsWsman, "Option") {
		name := strings.ToLower(xmlTrim(Attr(o, "Name")))
		if name == "" {
			continue
		}
		if _, dup := h.Options[name]; dup {
			continue
		}
		mc, _ := ParseBool(Attr(o, "MustComply"))
		if h.Options == nil {
			h.Options = make(map[string]Option)
		}
		h.Options[name] = Option{Value: xmlTrim(o.Text()), MustComply: mc}
	}
}
