package wsman

import (
	"strings"

	"github.com/beevik/etree"
)

// elemNS returns the namespace URI of e, resolving its prefix through the
// xmlns declarations in scope.
func elemNS(e *etree.Element) string {
	if e.Space == "xml" {
		return NsXML
	}
	return e.NamespaceURI()
}

// Is reports whether e is the element {ns}local. A nil e is never a match.
func Is(e *etree.Element, ns, local string) bool {
	return e != nil && e.Tag == local && elemNS(e) == ns
}

// Child returns the first child element of e named {ns}local, or nil. A nil
// e has no children.
func Child(e *etree.Element, ns, local string) *etree.Element {
	if e == nil {
		return nil
	}
	for _, c := range e.ChildElements() {
		if Is(c, ns, local) {
			return c
		}
	}
	return nil
}

// Children returns the child elements of e named {ns}local.
func Children(e *etree.Element, ns, local string) []*etree.Element {
	if e == nil {
		return nil
	}
	var out []*etree.Element
	for _, c := range e.ChildElements() {
		if Is(c, ns, local) {
			out = append(out, c)
		}
	}
	return out
}

// Attr returns the value of e's un-namespaced attribute local ("" if absent
// or e is nil). Names are case-sensitive, as in XML.
func Attr(e *etree.Element, local string) string {
	if e == nil {
		return ""
	}
	for _, a := range e.Attr {
		if a.Space == "" && a.Key == local {
			return a.Value
		}
	}
	return ""
}

// Text returns the character data (CDATA included) directly inside e up to
// its first child element, or "" for a nil e. It is not trimmed.
func Text(e *etree.Element) string {
	if e == nil {
		return ""
	}
	return e.Text()
}

// ParseBool parses the boolean spellings clients send: true/false in any
// case, and 1/0 (xs:boolean). Surrounding whitespace is ignored.
func ParseBool(s string) (val, ok bool) {
	s = strings.TrimSpace(s)
	switch {
	case strings.EqualFold(s, "true") || s == "1":
		return true, true
	case strings.EqualFold(s, "false") || s == "0":
		return false, true
	}
	return false, false
}
