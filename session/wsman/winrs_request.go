package wsman

import (
	"encoding/base64"
	"sort"
	"strconv"

	"github.com/beevik/etree"
)

// EncodeRequest renders a request envelope for m: the addressing headers
// (Action, To, MessageID, ReplyTo anonymous), w:ResourceURI, selectors,
// options, OperationTimeout, MaxEnvelopeSize, and the typed body. It is the
// client side of Decode: Decode(Parse(EncodeRequest(m))) gives m back for
// every field this file encodes (tested by FuzzDecode).
func EncodeRequest(m *Message) []byte {
	h := &m.Header
	doc := newDocument()
	env := doc.CreateElement("s:Envelope")
	for _, p := range []string{"s", "a", "w", "p", "rsp", "n"} {
		env.CreateAttr("xmlns:"+p, prefixURI(p))
	}
	hdr := env.CreateElement("s:Header")
	addText(hdr, "a:Action", h.Action)
	addText(hdr, "a:To", h.To)
	addText(hdr, "a:MessageID", h.MessageID)
	addText(hdr.CreateElement("a:ReplyTo"), "a:Address", AddressAnonymous)
	if h.ResourceURI != "" {
		addText(hdr, "w:ResourceURI", h.ResourceURI)
	}
	if len(h.Selectors) > 0 {
		set := hdr.CreateElement("w:SelectorSet")
		for _, k := range sortedKeys(h.Selectors) {
			addText(set, "w:Selector", h.Selectors[k]).CreateAttr("Name", k)
		}
	}
	if len(h.Options) > 0 {
		set := hdr.CreateElement("w:OptionSet")
		for _, k := range sortedKeys(h.Options) {
			o := addText(set, "w:Option", h.Options[k].Value)
			o.CreateAttr("Name", k)
			if h.Options[k].MustComply {
				o.CreateAttr("MustComply", "true")
			}
		}
	}
	if h.OperationTimeout > 0 {
		addText(hdr, "w:OperationTimeout", FormatDuration(h.OperationTimeout))
	}
	if h.MaxEnvelopeSize > 0 {
		addText(hdr, "w:MaxEnvelopeSize", strconv.Itoa(h.MaxEnvelopeSize))
	}
	if h.SessionID != "" {
		addText(hdr, "p:SessionId", h.SessionID)
	}
	if h.CompressionType != "" {
		addText(hdr, "rsp:CompressionType", h.CompressionType)
	}
	body := env.CreateElement("s:Body")
	switch b := m.Body.(type) {
	case *Shell:
		b.appendTo(body)
	case *CommandLine:
		b.appendTo(body)
	case *Send:
		e := body.CreateElement("rsp:Send")
		for _, s := range b.Streams {
			se := addText(e, "rsp:Stream", base64.StdEncoding.EncodeToString(s.Data))
			se.CreateAttr("Name", s.Name)
			se.CreateAttr("CommandId", s.CommandID)
			if s.End {
				se.CreateAttr("End", "true")
			}
		}
	case *Receive:
		ds := addText(body.CreateElement("rsp:Receive"), "rsp:DesiredStream", joinSpace(b.Streams))
		ds.CreateAttr("CommandId", b.CommandID)
	case *Signal:
		e := body.CreateElement("rsp:Signal")
		e.CreateAttr("CommandId", b.CommandID)
		addText(e, "rsp:Code", b.Code)
	case *Enumerate:
		e := body.CreateElement("n:Enumerate")
		if b.Optimize {
			e.CreateElement("w:OptimizeEnumeration")
		}
		if b.FilterShellID != "" {
			f := e.CreateElement("w:Filter")
			f.CreateAttr("Dialect", DialectSelectorFilter)
			addText(f.CreateElement("w:SelectorSet"), "w:Selector", b.FilterShellID).CreateAttr("Name", "ShellId")
		}
	case *Pull:
		e := body.CreateElement("n:Pull")
		if b.HasContext {
			addText(e, "n:EnumerationContext", b.Context)
		}
		if b.MaxElements > 0 {
			addText(e, "n:MaxElements", strconv.Itoa(b.MaxElements))
		}
	case *Release:
		e := body.CreateElement("n:Release")
		if b.HasContext {
			addText(e, "n:EnumerationContext", b.Context)
		}
	}
	out, _ := doc.WriteToBytes()
	return out
}

func (s *Shell) appendTo(parent *etree.Element) {
	e := parent.CreateElement("rsp:Shell")
	if s.ShellID != "" {
		e.CreateAttr("ShellId", s.ShellID)
	}
	if s.InputStreams != "" {
		addText(e, "rsp:InputStreams", s.InputStreams)
	}
	if s.OutputStreams != "" {
		addText(e, "rsp:OutputStreams", s.OutputStreams)
	}
	if s.IdleTimeout > 0 {
		addText(e, "rsp:IdleTimeOut", FormatDuration(s.IdleTimeout))
	}
	if s.WorkingDirectory != "" {
		addText(e, "rsp:WorkingDirectory", s.WorkingDirectory)
	}
	if s.Environment != nil {
		env := e.CreateElement("rsp:Environment")
		for _, v := range s.Environment {
			addText(env, "rsp:Variable", v.Value).CreateAttr("Name", v.Name)
		}
	}
	if s.CreationXML != "" {
		c := addText(e, "creationXml", s.CreationXML)
		c.CreateAttr("xmlns", NsPowerShell)
	}
}

func (c *CommandLine) appendTo(parent *etree.Element) {
	e := parent.CreateElement("rsp:CommandLine")
	if c.CommandID != "" {
		e.CreateAttr("CommandId", c.CommandID)
	}
	addText(e, "rsp:Command", c.Command)
	for _, a := range c.Arguments {
		addText(e, "rsp:Arguments", a)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func joinSpace(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out
}
