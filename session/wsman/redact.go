package wsman

import (
	"bytes"
	"strconv"
)

// Redaction for the operator's wire trace (logging.trace_wire): a SOAP body
// as the daemon saw it after unsealing, or is about to seal, with the parts
// that can carry secrets replaced by their length.
//
// What goes: the text of every element whose local name is in traceSecret,
// whatever its prefix and on both directions —
//   - Stream: rsp:Send input (what a user types, passwords for sudo or
//     runas, PSRP fragments with SecureStrings) and rsp:ReceiveResponse
//     output (a command that prints a key);
//   - Variable: the values of rsp:Environment (names stay, as attributes);
//   - creationXml, connectXml: PSRP's opening fragments, base64 like a
//     Stream and able to carry credentials the same way.
//
// Command lines, selectors, options and headers stay: they are what an
// operator needs to see to understand a client. The scanner is linear in
// the input and never parses XML: text it cannot place (an unterminated
// secret element, a stray '<') is redacted to the end rather than shown.

var traceSecret = map[string]bool{
	"Stream":      true,
	"Variable":    true,
	"creationXml": true,
	"connectXml":  true,
}

// RedactForTrace returns body with secrets removed, cut at max bytes of
// output (max <= 0: no cut), and how many bytes of the redacted text the
// cut dropped.
func RedactForTrace(body []byte, max int) (string, int) {
	var out bytes.Buffer
	out.Grow(min(len(body), max+64))
	i := 0
	for i < len(body) {
		lt := bytes.IndexByte(body[i:], '<')
		if lt < 0 {
			out.Write(body[i:])
			break
		}
		lt += i
		out.Write(body[i:lt])
		// A CDATA section is text and may hold '<' and '>' (a command
		// line's redirection): copied whole. Comments never carry anything
		// a client means; their text goes.
		if open, close := literal(body[lt:]); close != "" {
			from := lt + len(open)
			n := bytes.Index(body[from:], []byte(close))
			if n < 0 {
				out.WriteString(redactedMark(len(body) - lt))
				break
			}
			if open == "<!--" {
				out.WriteString(open)
				out.WriteString(redactedMark(n))
				out.WriteString(close)
			} else {
				out.Write(body[lt : from+n+len(close)])
			}
			i = from + n + len(close)
			continue
		}
		gt := bytes.IndexByte(body[lt:], '>')
		if gt < 0 {
			out.WriteString(redactedMark(len(body) - lt))
			break
		}
		gt += lt
		if bytes.IndexByte(body[lt+1:gt], '<') >= 0 {
			// A '<' inside a tag is not XML; a start tag hidden behind it
			// (<x a="<rsp:Stream>…) must not let its text through.
			out.WriteString(redactedMark(len(body) - lt))
			break
		}
		tag := body[lt : gt+1]
		out.Write(tag)
		i = gt + 1
		qname, local, selfClosing, isStart := tagNames(tag)
		if !isStart || selfClosing || !traceSecret[string(local)] {
			continue
		}
		// The text up to the matching end tag (elements of these names
		// never nest, so the first one closes it).
		end := bytes.Index(body[i:], append(append([]byte("</"), qname...), '>'))
		if end < 0 {
			out.WriteString(redactedMark(len(body) - i))
			break
		}
		if end > 0 {
			out.WriteString(redactedMark(end))
		}
		i += end
	}
	s := out.String()
	if max > 0 && len(s) > max {
		return s[:max], len(s) - max
	}
	return s, 0
}

// literal: the opening and closing of the CDATA section or comment b
// starts with, or "", "".
func literal(b []byte) (string, string) {
	switch {
	case bytes.HasPrefix(b, []byte("<![CDATA[")):
		return "<![CDATA[", "]]>"
	case bytes.HasPrefix(b, []byte("<!--")):
		return "<!--", "-->"
	}
	return "", ""
}

func redactedMark(n int) string { return "[redacted " + strconv.Itoa(n) + " bytes]" }

// tagNames reads "<p:Name attr…>" or "</p:Name>": the qualified and local
// names, whether it closes itself, and whether it opens an element (not an
// end tag, comment, declaration or processing instruction).
func tagNames(tag []byte) (qname, local []byte, selfClosing, isStart bool) {
	if len(tag) < 3 {
		return nil, nil, false, false
	}
	switch tag[1] {
	case '/', '!', '?':
		return nil, nil, false, false
	}
	j := 1
	for j < len(tag) && !isNameEnd(tag[j]) {
		j++
	}
	qname = tag[1:j]
	local = qname
	if k := bytes.LastIndexByte(qname, ':'); k >= 0 {
		local = qname[k+1:]
	}
	return qname, local, tag[len(tag)-2] == '/', true
}

func isNameEnd(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '/' || c == '>'
}
