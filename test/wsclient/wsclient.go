// Package wsclient is the WinRM client code the tools and the tests share:
// the bench's lean client (cmd/winrmd-bench) and the Go end-to-end helpers
// (test/) build their request envelopes, seal and unseal their bodies and
// compute their channel bindings here, so a change to what a client sends
// is made once for both.
//
// It is written from the protocol as MS-WSMV, MS-WSMV's encryption (2.2.9.1)
// and the clients (pywinrm, masterzen/winrm) use it, not from the daemon: it
// imports nothing of winrmd, so the daemon's wire code is checked against
// an independent writer. Transport stays with each caller (the bench frames
// HTTP for speed, the e2e harness byte by byte for the attack rows). The
// independent spec client in authn/ntlm/ntlmtest stays separate on purpose:
// it checks the NTLM acceptor against MS-NLMP without sharing a line with
// anything else.
package wsclient

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"hash"
	"sort"
	"strconv"
	"strings"
)

// Namespaces, resource URIs and actions of the WinRS operations.
const (
	NsSOAP       = "http://www.w3.org/2003/05/soap-envelope"
	NsAddressing = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
	NsWSMan      = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
	NsShell      = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"

	ResourceShell = NsShell
	ResourceCmd   = NsShell + "/cmd"

	ActionCreate    = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
	ActionDelete    = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
	ActionGet       = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
	ActionEnumerate = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
	ActionCommand   = NsShell + "/Command"
	ActionSend      = NsShell + "/Send"
	ActionReceive   = NsShell + "/Receive"
	ActionSignal    = NsShell + "/Signal"

	SignalTerminate = NsShell + "/signal/terminate"
	SignalCtrlC     = NsShell + "/signal/ctrl_c"

	// SOAPContentType is a plain request's Content-Type.
	SOAPContentType = "application/soap+xml;charset=UTF-8"
)

// NewUUID returns a random (version 4) UUID in lower case, as clients write
// MessageIDs and command ids.
func NewUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Header is what a request's SOAP header says.
type Header struct {
	To               string // the listener URL
	Action           string
	ResourceURI      string
	ShellID          string // "" omits the selector
	MaxEnvelopeSize  int    // the largest response the client accepts
	OperationTimeout string // xs:duration, e.g. "PT60S"
	// Options are w:OptionSet entries as "NAME=value"; none omits the set.
	Options []string
}

// AppendEnvelope appends a request envelope up to and including <s:Body>;
// the caller appends the body and EnvelopeEnd.
func AppendEnvelope(b []byte, h Header) []byte {
	b = append(b, `<s:Envelope xmlns:s="`+NsSOAP+`" xmlns:a="`+NsAddressing+`" xmlns:w="`+NsWSMan+`" xmlns:rsp="`+NsShell+`">`+
		`<s:Header><a:To>`...)
	b = append(b, h.To...)
	b = append(b, `</a:To><a:ReplyTo><a:Address s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>`+
		`<w:MaxEnvelopeSize s:mustUnderstand="true">`...)
	b = strconv.AppendInt(b, int64(h.MaxEnvelopeSize), 10)
	b = append(b, `</w:MaxEnvelopeSize><a:MessageID>uuid:`...)
	b = append(b, NewUUID()...)
	b = append(b, `</a:MessageID><w:Locale xml:lang="en-US" s:mustUnderstand="false"/><w:OperationTimeout>`...)
	b = append(b, h.OperationTimeout...)
	b = append(b, `</w:OperationTimeout><w:ResourceURI s:mustUnderstand="true">`...)
	b = append(b, h.ResourceURI...)
	b = append(b, `</w:ResourceURI><a:Action s:mustUnderstand="true">`...)
	b = append(b, h.Action...)
	b = append(b, `</a:Action>`...)
	if h.ShellID != "" {
		b = append(b, `<w:SelectorSet><w:Selector Name="ShellId">`...)
		b = append(b, h.ShellID...)
		b = append(b, `</w:Selector></w:SelectorSet>`...)
	}
	if len(h.Options) > 0 {
		b = append(b, `<w:OptionSet>`...)
		for _, o := range h.Options {
			k, v, _ := strings.Cut(o, "=")
			b = append(b, `<w:Option Name="`...)
			b = append(b, k...)
			b = append(b, `">`...)
			b = append(b, v...)
			b = append(b, `</w:Option>`...)
		}
		b = append(b, `</w:OptionSet>`...)
	}
	return append(b, `</s:Header><s:Body>`...)
}

// EnvelopeEnd closes what AppendEnvelope opened.
const EnvelopeEnd = `</s:Body></s:Envelope>`

// Options of the operations as pywinrm sends them.
var (
	CreateOptions = []string{"WINRS_NOPROFILE=FALSE", "WINRS_CODEPAGE=65001"}
)

// AppendCreateBody appends a cmd shell's rsp:Shell: stdin in, stdout and
// stderr out, with an Environment (in key order) and a WorkingDirectory
// when given.
func AppendCreateBody(b []byte, env map[string]string, dir string) []byte {
	b = append(b, `<rsp:Shell>`...)
	if len(env) > 0 {
		b = append(b, `<rsp:Environment>`...)
		for _, k := range sortedKeys(env) {
			b = append(b, `<rsp:Variable Name="`...)
			b = AppendEscaped(b, k)
			b = append(b, `">`...)
			b = AppendEscaped(b, env[k])
			b = append(b, `</rsp:Variable>`...)
		}
		b = append(b, `</rsp:Environment>`...)
	}
	if dir != "" {
		b = append(b, `<rsp:WorkingDirectory>`...)
		b = AppendEscaped(b, dir)
		b = append(b, `</rsp:WorkingDirectory>`...)
	}
	return append(b, `<rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>`...)
}

// AppendCommandBody appends a Command's rsp:CommandLine.
func AppendCommandBody(b []byte, cmdline string) []byte {
	b = append(b, `<rsp:CommandLine><rsp:Command>`...)
	b = AppendEscaped(b, cmdline)
	return append(b, `</rsp:Command></rsp:CommandLine>`...)
}

// AppendSendBody appends a Send of data on the command's stdin; end is
// written as End="true", or as End="false" when explicitEnd (pywinrm
// leaves it out, some clients do not).
func AppendSendBody(b []byte, cmdID string, data []byte, end, explicitEnd bool) []byte {
	b = append(b, `<rsp:Send><rsp:Stream Name="stdin" CommandId="`...)
	b = append(b, cmdID...)
	b = append(b, '"')
	switch {
	case end:
		b = append(b, ` End="true"`...)
	case explicitEnd:
		b = append(b, ` End="false"`...)
	}
	b = append(b, '>')
	b = base64.StdEncoding.AppendEncode(b, data)
	return append(b, `</rsp:Stream></rsp:Send>`...)
}

// AppendReceiveBody appends a Receive of stdout and stderr of the command.
func AppendReceiveBody(b []byte, cmdID string) []byte {
	b = append(b, `<rsp:Receive><rsp:DesiredStream CommandId="`...)
	b = append(b, cmdID...)
	return append(b, `">stdout stderr</rsp:DesiredStream></rsp:Receive>`...)
}

// AppendSignalBody appends a Signal of code to the command.
func AppendSignalBody(b []byte, cmdID, code string) []byte {
	b = append(b, `<rsp:Signal CommandId="`...)
	b = append(b, cmdID...)
	b = append(b, `"><rsp:Code>`...)
	b = append(b, code...)
	return append(b, `</rsp:Code></rsp:Signal>`...)
}

// AppendEscaped appends s escaped as encoding/xml.EscapeText escapes text
// (quotes, tab, newline and carriage return included, so a command's \r
// survives XML's end-of-line handling and it also serves in attributes).
func AppendEscaped(b []byte, s string) []byte {
	a := appender{b}
	_ = xml.EscapeText(&a, []byte(s))
	return a.b
}

type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) { a.b = append(a.b, p...); return len(p), nil }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TLSServerEndPoint is RFC 5929's tls-server-end-point channel binding
// application data for the server's certificate: the hash of its signature
// algorithm, SHA-256 for MD5 and SHA-1.
func TLSServerEndPoint(cert *x509.Certificate) []byte {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.SHA384WithRSA, x509.ECDSAWithSHA384, x509.SHA384WithRSAPSS:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.ECDSAWithSHA512, x509.SHA512WithRSAPSS:
		h = sha512.New()
	default:
		h = sha256.New()
	}
	h.Write(cert.Raw)
	return append([]byte("tls-server-end-point:"), h.Sum(nil)...)
}

// Token returns the decoded token of the first WWW-Authenticate value (of
// values) whose scheme is one of schemes (compared case-insensitively), as
// a client reads a challenge or the final leg of a handshake; false when
// there is none or it is not base64.
func Token(values []string, schemes ...string) ([]byte, bool) {
	for _, v := range values {
		scheme, tok, ok := strings.Cut(v, " ")
		if !ok {
			continue
		}
		for _, s := range schemes {
			if strings.EqualFold(scheme, s) {
				b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(tok))
				if err == nil && len(b) > 0 {
					return b, true
				}
			}
		}
	}
	return nil, false
}
