package wsman

import (
	"crypto/rand"
	"encoding/hex"
	"strings"

	"github.com/beevik/etree"
)

// Response is a SOAP response envelope under construction. Handlers append
// their payload to Body(); the Envelope declares the prefixes s a x w rsp p,
// so elements in those namespaces can be created with them directly
// (body.CreateElement("rsp:ReceiveResponse")); any other namespace must be
// declared on the element that uses it.
type Response struct {
	doc       *etree.Document
	header    *etree.Element
	body      *etree.Element
	messageID string
}

// newDocument returns a document with the write settings every envelope uses:
// text and attribute values escaped canonically, so carriage returns, tabs
// and newlines survive a round trip; characters XML cannot carry are replaced
// by U+FFFD.
func newDocument() *etree.Document {
	doc := etree.NewDocument()
	doc.WriteSettings = etree.WriteSettings{
		CanonicalText:    true,
		CanonicalAttrVal: true,
	}
	return doc
}

// newEnvelope builds the Windows response skeleton (MS-WSMV) with the
// given prefixes declared on the Envelope.
func newEnvelope(action, relatesTo string, prefixes []string) *Response {
	doc := newDocument()
	env := doc.CreateElement("s:Envelope")
	env.CreateAttr("xml:lang", "en-US")
	for _, p := range prefixes {
		env.CreateAttr("xmlns:"+p, prefixURI(p))
	}
	r := &Response{doc: doc, messageID: NewMessageID()}
	r.header = env.CreateElement("s:Header")
	r.header.CreateElement("a:Action").SetText(action)
	r.header.CreateElement("a:MessageID").SetText(r.messageID)
	r.header.CreateElement("a:To").SetText(AddressAnonymous)
	if relatesTo != "" {
		r.header.CreateElement("a:RelatesTo").SetText(relatesTo)
	}
	r.body = env.CreateElement("s:Body")
	// An empty text node makes an empty body serialise as <s:Body></s:Body>,
	// as Windows sends it, rather than <s:Body/>.
	r.body.CreateText("")
	return r
}

// NewResponse starts a response with a:Action = action (the request Action
// plus "Response"), a new upper-case MessageID, a:To anonymous and
// a:RelatesTo = relatesTo byte for byte (omitted when empty).
func NewResponse(action, relatesTo string) *Response {
	return newEnvelope(action, relatesTo, []string{"s", "a", "x", "w", "rsp", "p"})
}

// Body returns the s:Body element; append the payload to it.
func (r *Response) Body() *etree.Element { return r.body }

// Header returns the s:Header element, for the rare extra header.
func (r *Response) Header() *etree.Element { return r.header }

// MessageID returns the response's a:MessageID.
func (r *Response) MessageID() string { return r.messageID }

// Bytes serialises the envelope (UTF-8, no XML declaration).
func (r *Response) Bytes() []byte {
	b, _ := r.doc.WriteToBytes() // writing to memory cannot fail
	return b
}

// IdentifyResponse renders the answer to wsmid:Identify (DSP0226).
// Unauthenticated answers always report "OS: 0.0.0 SP: 0.0 Stack: 3.0";
// authenticated ones report productVersion (e.g. "OS: 10.0.17763 SP: 0.0
// Stack: 3.0"). Use IdentifyResponseProfiles to add security profiles.
func IdentifyResponse(authenticated bool, productVersion string) []byte {
	if !authenticated {
		productVersion = ""
	}
	return IdentifyResponseProfiles(productVersion, nil)
}

// IdentifyResponseProfiles renders an Identify answer with the given
// ProductVersion (empty: the unauthenticated one) and, when profiles is not
// empty, a wsmid:SecurityProfiles list (SecProfile* constants).
func IdentifyResponseProfiles(productVersion string, profiles []string) []byte {
	if productVersion == "" {
		productVersion = IdentifyUnauthenticatedVers
	}
	doc := newDocument()
	env := doc.CreateElement("s:Envelope")
	env.CreateAttr("xmlns:s", NsSoap)
	env.CreateElement("s:Header")
	ir := env.CreateElement("s:Body").CreateElement("wsmid:IdentifyResponse")
	ir.CreateAttr("xmlns:wsmid", NsIdentity)
	ir.CreateElement("wsmid:ProtocolVersion").SetText(IdentifyProtocolVersion)
	ir.CreateElement("wsmid:ProductVendor").SetText(IdentifyProductVendor)
	ir.CreateElement("wsmid:ProductVersion").SetText(productVersion)
	if len(profiles) > 0 {
		sp := ir.CreateElement("wsmid:SecurityProfiles")
		for _, p := range profiles {
			sp.CreateElement("wsmid:SecurityProfileName").SetText(p)
		}
	}
	b, _ := doc.WriteToBytes()
	return b
}

// NewMessageID returns "uuid:" and a random (version 4) UUID in upper case,
// as Windows writes them.
func NewMessageID() string {
	return "uuid:" + NewGUID()
}

// NewGUID returns a random (version 4) UUID in upper case, the form Windows
// uses for ShellId and CommandId.
func NewGUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (Go >= 1.24)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var buf [36]byte
	hex.Encode(buf[0:8], u[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], u[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], u[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], u[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:36], u[10:16])
	return strings.ToUpper(string(buf[:]))
}
