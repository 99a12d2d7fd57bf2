package wsman

import (
	"strconv"
	"strings"
)

// Fault is a SOAP 1.2 / WS-Management fault. Every error Parse returns is a
// *Fault; handlers return them too, and the HTTP layer renders them with
// FaultEnvelope in one place.
type Fault struct {
	Status   int    // HTTP status, 500 unless set (see HTTPStatus)
	Sender   bool   // s:Sender (client error) vs s:Receiver
	Subcode  string // qualified, e.g. "w:TimedOut", "a:ActionNotSupported", "s:MustUnderstand"
	Code     uint32 // f:WSManFault/@Code
	Reason   string // s:Reason/s:Text
	Detail   string // optional w:FaultDetail URI (a bare name gets FaultDetailPrefix)
	Provider string // optional f:ProviderFault/@provider (Message goes inside it)
	Message  string // f:Message text; defaults to Reason

	// ProviderPath is the optional f:ProviderFault/@path.
	ProviderPath string
	// NotUnderstood names the header of a MustUnderstand fault in Clark
	// notation ("{uri}local"); FaultEnvelope reports it in s:NotUnderstood.
	NotUnderstood string
	// RelatesTo is the request's MessageID when Parse got that far before
	// failing; FaultEnvelope uses it when its relatesTo argument is empty.
	RelatesTo string
	// ReasonLang is s:Reason/s:Text's xml:lang: "en-US" unless
	// NoReasonLang, which renders xml:lang="" as Windows does for the
	// faults its shell plugin raises (recorded).
	NoReasonLang bool
	// Internal is the daemon's own account of the failure (which program,
	// which errno). It is never rendered: the server logs it beside the
	// fault, so a client sees only what Windows would say.
	Internal string
}

// Error implements error.
func (f *Fault) Error() string {
	sub := f.Subcode
	if sub == "" {
		sub = f.codeValue()
	}
	return "wsman fault " + sub + " (" + strconv.FormatUint(uint64(f.Code), 10) + "): " + strings.TrimSpace(f.Reason)
}

// HTTPStatus is Status, or 500 when unset: Windows answers every fault,
// timeouts included, with 500.
func (f *Fault) HTTPStatus() int {
	if f.Status == 0 {
		return 500
	}
	return f.Status
}

// codeValue is the s:Code/s:Value QName.
func (f *Fault) codeValue() string {
	if isSoapCode(f.Subcode) {
		return f.Subcode
	}
	if f.Sender {
		return "s:Sender"
	}
	return "s:Receiver"
}

// isSoapCode reports whether sub is one of SOAP 1.2's own top-level fault
// codes, which go in s:Code/s:Value rather than in a subcode.
func isSoapCode(sub string) bool {
	switch sub {
	case "s:MustUnderstand", "s:VersionMismatch", "s:DataEncodingUnknown":
		return true
	}
	return false
}

func orDefault(msg, def string) string {
	if msg == "" {
		return def
	}
	return msg
}

// TimedOut is the fault for a Receive (or other operation) that found nothing
// to return within OperationTimeout. Clients retry on it: pywinrm and pypsrp
// match the code, masterzen/winrm the word "OperationTimeout" in the body.
func TimedOut() *Fault {
	return &Fault{
		Subcode: "w:TimedOut",
		Code:    CodeTimedOut,
		Reason:  "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  ",
	}
}

// InvalidSelectors is the fault for an unknown ShellId or CommandId.
func InvalidSelectors(msg string) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "w:InvalidSelectors",
		Code:    CodeInvalidSelectors,
		Reason:  orDefault(msg, "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. "),
		Detail:  DetailUnexpectedSelectors,
	}
}

// AccessDenied is the fault for an authenticated but unauthorised request.
func AccessDenied(msg string) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "w:AccessDenied",
		Code:    CodeAccessDenied,
		Reason:  orDefault(msg, "Access is denied. "),
	}
}

// EncodingLimit is the fault for a request over a size, depth, count or
// charset limit (code e.g. CodeEncodingLimit, CodeEnvelopeTooLarge,
// CodeMaxEnvelopeSizeExceeded).
func EncodingLimit(code uint32, msg string) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "w:EncodingLimit",
		Code:    code,
		Reason:  orDefault(msg, "The WS-Management service cannot process the request because it exceeds an encoding limit. "),
	}
}

// QuotaLimit is the fault for a per-user or service quota (code e.g.
// CodeQuotaMaxShells, CodeQuotaMaxOperations).
func QuotaLimit(code uint32, msg string) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "w:QuotaLimit",
		Code:    code,
		Reason:  orDefault(msg, "The WS-Management service cannot process the request because a quota was exceeded. "),
	}
}

// InvalidParameter is the fault for a bad value in a request body or option.
func InvalidParameter(msg string) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "w:InvalidParameter",
		Code:    CodeInvalidParameter,
		Reason:  orDefault(msg, "The parameter is incorrect. "),
		Detail:  DetailInvalidValue,
	}
}

// InvalidHeader is the fault for an invalid addressing or WS-Management
// header value, e.g. a negative OperationTimeout.
func InvalidHeader(msg string) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "a:InvalidMessageInformationHeader",
		Code:    CodeInvalidHeader,
		Reason:  orDefault(msg, "The WS-Management service cannot process a SOAP header in the request because its value is not valid. "),
	}
}

// SchemaValidation is the fault for malformed XML or an envelope that does
// not follow the SOAP 1.2 / WS-Management schema.
func SchemaValidation(msg string) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "w:SchemaValidationError",
		Code:    CodeSchemaValidation,
		Reason:  orDefault(msg, "The WS-Management service cannot process the request because the XML is not valid. "),
	}
}

// ActionNotSupported is the fault for an Action the resource does not handle.
func ActionNotSupported(action string) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "a:ActionNotSupported",
		Code:    CodeActionNotSupported,
		Reason:  "The WS-Management service cannot process the request because the action is not supported: " + action + " ",
	}
}

// DestinationUnreachable is the fault for an unknown ResourceURI.
func DestinationUnreachable(uri string) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "w:DestinationUnreachable",
		Code:    CodeInvalidResourceURI,
		Reason:  "The WS-Management service cannot process the request because the resource URI is not valid or was not found: " + uri + " ",
		Detail:  DetailInvalidResourceURI,
	}
}

// InternalError is a server-side failure, e.g. CodeFileNotFound with
// provider "Shell cmd plugin" when a command cannot start. provider may be
// empty.
func InternalError(code uint32, provider, msg string) *Fault {
	return &Fault{
		Subcode:  "w:InternalError",
		Code:     code,
		Reason:   orDefault(msg, "The WS-Management service encountered an internal error. "),
		Provider: provider,
	}
}

// InvalidEnumerationContext is the fault for an unknown or expired
// enumeration context in Pull or Release.
func InvalidEnumerationContext() *Fault {
	return &Fault{
		Subcode: "n:InvalidEnumerationContext",
		Code:    CodeInvalidEnumerationContext,
		Reason:  "The WS-Management service cannot process the request because the enumeration context is not valid or has expired. ",
	}
}

// OperationAborted is the fault for an operation cut short because its shell
// or command went away (e.g. a Receive pending while the shell is deleted).
// The PowerShell client stops on this code rather than retrying.
func OperationAborted(msg string) *Fault {
	return &Fault{
		Subcode: "w:InternalError",
		Code:    CodeOperationAborted,
		Reason:  orDefault(msg, "The I/O operation has been aborted because of either a thread exit or an application request. "),
	}
}

// ServiceStreamDisconnected is the fault for a Receive on a disconnected
// shell (subcode unverified).
func ServiceStreamDisconnected() *Fault {
	return &Fault{
		Subcode: "w:InternalError",
		Code:    CodeServiceStreamDisconnected,
		Reason:  "The WS-Management service cannot process the request because the shell is disconnected. ",
	}
}

// MustUnderstand is the fault for a header flagged s:mustUnderstand="true"
// that this server does not implement. qname is the header's name, ideally in
// Clark notation ("{uri}local"), which is then also reported in an
// s:NotUnderstood header.
func MustUnderstand(qname string) *Fault {
	f := &Fault{
		Subcode: "s:MustUnderstand",
		Code:    CodeMustUnderstand,
		Reason:  "The WS-Management service cannot process a SOAP header in the request that is marked as mustUnderstand: " + qname + " ",
	}
	if strings.HasPrefix(qname, "{") && strings.Contains(qname, "}") {
		f.NotUnderstood = qname
	}
	return f
}

// RemoteShellsNotAllowed is the fault when remote shell access is disabled
// (Winrs AllowRemoteShellAccess=false).
func RemoteShellsNotAllowed() *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "w:AccessDenied",
		Code:    CodeRemoteShellsNotAllowed,
		Reason:  "The WS-Management service cannot process the request. The service is configured to not accept any remote shell requests. ",
	}
}

// The faults Windows' cmd shell plugin (winrscmd.dll) raises, as Windows
// writes them: one table of code, subcode, reason and message, so every
// WinRS failure a client can see reads as it would from a Windows host
// (texts from recorded Windows traffic; the Win32 ones are
// FormatMessage's, which WinRM ends with a space where the message had its
// line break). The daemon's own detail goes into Fault.Internal, for its
// log only.

// ShellFaultKind names one fault of the table.
type ShellFaultKind uint8

const (
	// ShellBadParameter: a request the plugin rejects (a Receive, Send or
	// Signal without CommandId on a cmd shell, an unsupported stream, a
	// CommandId or ShellId that is not a GUID or is taken, a bad option
	// value) — ERROR_INVALID_PARAMETER. Recorded for Signal and Receive.
	ShellBadParameter ShellFaultKind = iota + 1
	// ShellFileNotFound: the program of a command, or the shell's own
	// process, could not be started (ENOENT) — 0x80070002. Recorded.
	ShellFileNotFound
	// ShellStartDenied: the program exists but may not be executed by the
	// user (EACCES, EPERM) — 0x80070005.
	ShellStartDenied
	// ShellBadDirectory: the shell's WorkingDirectory cannot be entered —
	// 0x8007010B ERROR_DIRECTORY.
	ShellBadDirectory
	// ShellAborted: the plugin lost the command or shell it was serving
	// (our worker process ended, input or a signal could not be delivered)
	// — 995 ERROR_OPERATION_ABORTED.
	ShellAborted
	// ShellUnknownCommand: a CommandId the shell does not know, or one
	// that has completed — the service's UNEXPECTED_SELECTORS with the
	// shell's own message. Recorded.
	ShellUnknownCommand
)

// Provider and path of Windows' cmd shell plugin, as f:ProviderFault
// carries them (recorded).
const (
	ShellProvider     = "Shell cmd plugin"
	ShellProviderPath = `%systemroot%\system32\winrscmd.dll`
)

type shellFaultText struct {
	sender   bool
	subcode  string
	code     uint32
	detail   string // w:FaultDetail
	reason   string
	message  string // f:Message when it differs from reason
	provider bool   // inside f:ProviderFault, Reason with xml:lang=""
}

var shellFaults = map[ShellFaultKind]shellFaultText{
	ShellBadParameter: {sender: true, subcode: "w:InvalidParameter", code: CodeInvalidParameter, detail: DetailInvalidValue,
		reason: "The parameter is incorrect. ", provider: true},
	ShellFileNotFound: {subcode: "w:InternalError", code: CodeFileNotFound,
		reason: "The system cannot find the file specified. ", provider: true},
	ShellStartDenied: {subcode: "w:InternalError", code: CodeStartAccessDenied,
		reason: "Access is denied. ", provider: true},
	ShellBadDirectory: {subcode: "w:InternalError", code: CodeDirectoryInvalid,
		reason: "The directory name is invalid. ", provider: true},
	ShellAborted: {subcode: "w:InternalError", code: CodeOperationAborted,
		reason: "The I/O operation has been aborted because of either a thread exit or an application request. ", provider: true},
	ShellUnknownCommand: {sender: true, subcode: "w:InvalidSelectors", code: CodeInvalidSelectors, detail: DetailUnexpectedSelectors,
		reason: "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. ",
		message: "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. " +
			"Either the command has completed execution or the client specified an invalid command identifier. "},
}

// ShellFault returns the fault of kind k as Windows writes it; internal is
// the daemon's own detail, for its log.
func ShellFault(k ShellFaultKind, internal string) *Fault {
	t, ok := shellFaults[k]
	if !ok {
		t = shellFaults[ShellAborted]
	}
	f := &Fault{Sender: t.sender, Subcode: t.subcode, Code: t.code, Detail: t.detail, Reason: t.reason, Message: t.message, Internal: internal}
	if t.provider {
		f.Provider, f.ProviderPath, f.NoReasonLang = ShellProvider, ShellProviderPath, true
	}
	return f
}

// prefixURI maps the prefixes this package emits to their namespaces.
func prefixURI(prefix string) string {
	switch prefix {
	case "s":
		return NsSoap
	case "a":
		return NsAddressing
	case "x":
		return NsTransfer
	case "e":
		return NsEventing
	case "n":
		return NsEnumeration
	case "w":
		return NsWsman
	case "p":
		return NsWsmanMS
	case "rsp":
		return NsShell
	case "f":
		return NsFault
	case "cfg":
		return NsConfig
	case "b":
		return NsCimBinding
	case "wsmid":
		return NsIdentity
	}
	return ""
}

// FaultEnvelope renders f as Windows does (MS-WSMV): the wsman fault
// Action, a new MessageID, a:RelatesTo = relatesTo (or f.RelatesTo when
// relatesTo is empty; omitted when both are), and an s:Fault whose
// f:WSManFault carries Code and Machine.
func FaultEnvelope(f *Fault, relatesTo, machine string) []byte {
	if f == nil {
		f = InternalError(CodeInvalidParameter, "", "")
	}
	if relatesTo == "" {
		relatesTo = f.RelatesTo
	}
	r := newEnvelope(ActionFault, relatesTo, []string{"s", "a", "x", "e", "n", "w", "p"})
	env := r.doc.Root()

	// Declare the subcode's prefix if the fixed set above lacks it.
	if p, _, ok := strings.Cut(f.Subcode, ":"); ok && env.SelectAttr("xmlns:"+p) == nil {
		if uri := prefixURI(p); uri != "" {
			env.CreateAttr("xmlns:"+p, uri)
		}
	}

	if f.NotUnderstood != "" {
		uri, local, _ := strings.Cut(strings.TrimPrefix(f.NotUnderstood, "{"), "}")
		nu := r.header.CreateElement("s:NotUnderstood")
		if uri == "" {
			nu.CreateAttr("qname", local) // no namespace: unprefixed
		} else {
			nu.CreateAttr("qname", "nu:"+local)
			nu.CreateAttr("xmlns:nu", uri)
		}
	}

	fault := r.body.CreateElement("s:Fault")
	code := fault.CreateElement("s:Code")
	code.CreateElement("s:Value").SetText(f.codeValue())
	if f.Subcode != "" && !isSoapCode(f.Subcode) {
		code.CreateElement("s:Subcode").CreateElement("s:Value").SetText(f.Subcode)
	}
	text := fault.CreateElement("s:Reason").CreateElement("s:Text")
	if f.NoReasonLang {
		text.CreateAttr("xml:lang", "")
	} else {
		text.CreateAttr("xml:lang", "en-US")
	}
	text.SetText(f.Reason)

	detail := fault.CreateElement("s:Detail")
	if f.Detail != "" {
		d := f.Detail
		if !strings.Contains(d, "://") {
			d = FaultDetailPrefix + d
		}
		detail.CreateElement("w:FaultDetail").SetText(d)
	}
	wf := detail.CreateElement("f:WSManFault")
	wf.CreateAttr("xmlns:f", NsFault)
	wf.CreateAttr("Code", strconv.FormatUint(uint64(f.Code), 10))
	wf.CreateAttr("Machine", machine)
	msg := wf.CreateElement("f:Message")
	m := orDefault(f.Message, f.Reason)
	if f.Provider != "" {
		pf := msg.CreateElement("f:ProviderFault")
		pf.CreateAttr("provider", f.Provider)
		if f.ProviderPath != "" {
			pf.CreateAttr("path", f.ProviderPath)
		}
		pf.SetText(m)
	} else {
		msg.SetText(m)
	}
	return r.Bytes()
}
