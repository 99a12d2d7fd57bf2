package wsman

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/beevik/etree"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

var (
	messageIDRe = regexp.MustCompile(`<a:MessageID>uuid:[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}</a:MessageID>`)
	anyIDRe     = regexp.MustCompile(`<a:MessageID>[^<]*</a:MessageID>`)
)

const zeroMessageID = "<a:MessageID>uuid:00000000-0000-0000-0000-000000000000</a:MessageID>"

// normalise replaces the random response MessageID, checking first that
// there is exactly one and that it has the Windows shape (upper-case v4).
func normalise(t *testing.T, b []byte) []byte {
	t.Helper()
	if n := len(anyIDRe.FindAll(b, -1)); n > 1 {
		t.Fatalf("%d MessageIDs in %s", n, b)
	}
	if anyIDRe.Match(b) && !messageIDRe.Match(b) {
		t.Fatalf("MessageID not an upper-case uuid: %s", anyIDRe.Find(b))
	}
	return messageIDRe.ReplaceAll(b, []byte(zeroMessageID))
}

// wellFormed decodes b with encoding/xml (strict, namespaces resolved) and
// fails on any error or unresolved prefix.
func wellFormed(t testing.TB, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, b)
		}
		if se, ok := tok.(xml.StartElement); ok && !strings.Contains(se.Name.Space, ":") {
			t.Fatalf("element %s:%s has no namespace URI\n%s", se.Name.Space, se.Name.Local, b)
		}
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	wellFormed(t, got)
	got = normalise(t, got)
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden (go test -update to accept):\n got: %s\nwant: %s", name, got, want)
	}
}

const goldenRequestID = "uuid:0b2d8f6a-1c3e-4a5b-9d7f-2e4c6a8b0d1f"

func TestGoldenFaults(t *testing.T) {
	provider := InternalError(CodeFileNotFound, "Shell cmd plugin", "The system cannot find the file specified. ")
	provider.ProviderPath = "%systemroot%\\system32\\winrscmd.dll"
	escaped := InvalidParameter("bad <value> & \"quotes\" 'here'\r\nline\ttab \x00\x1b end")
	escaped.Message = "message ]]> <![CDATA[ x"
	custom := &Fault{Sender: true, Subcode: "rsp:Custom", Code: 1, Reason: "r", Detail: "Bare", Status: 400}
	for _, tc := range []struct {
		name      string
		f         *Fault
		relatesTo string
		machine   string
	}{
		{"fault_timedout.xml", TimedOut(), goldenRequestID, "192.0.2.11"},
		{"fault_invalid_selectors.xml", InvalidSelectors(""), goldenRequestID, "host"},
		{"fault_internal_provider.xml", provider, goldenRequestID, "host"},
		{"fault_invalid_header.xml", InvalidHeader(""), goldenRequestID, "host"},
		{"fault_action_not_supported.xml", ActionNotSupported("urn:x/<Bogus>"), goldenRequestID, "host"},
		{"fault_destination_unreachable.xml", DestinationUnreachable("http://schemas.example/none"), goldenRequestID, "host"},
		{"fault_enumeration_context.xml", InvalidEnumerationContext(), goldenRequestID, "host"},
		{"fault_must_understand.xml", MustUnderstand("{urn:unknown}Foo"), goldenRequestID, "host"},
		{"fault_quota_shells.xml", QuotaLimit(CodeQuotaMaxShells, ""), goldenRequestID, "host"},
		{"fault_encoding_limit.xml", EncodingLimit(CodeEncodingLimit, ""), "", "host"},
		{"fault_schema.xml", SchemaValidation(""), "", ""},
		{"fault_access_denied.xml", AccessDenied(""), goldenRequestID, "host"},
		{"fault_remote_shells.xml", RemoteShellsNotAllowed(), goldenRequestID, "host"},
		{"fault_aborted.xml", OperationAborted(""), goldenRequestID, "host"},
		{"fault_stream_disconnected.xml", ServiceStreamDisconnected(), goldenRequestID, "host"},
		{"fault_escaping.xml", escaped, "uuid:<&\">", "m\"<&>'"},
		{"fault_custom_prefix.xml", custom, goldenRequestID, "host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, tc.name, FaultEnvelope(tc.f, tc.relatesTo, tc.machine))
		})
	}
}

func TestGoldenResponses(t *testing.T) {
	const cid = "CF84C20A-0A35-43FA-AF78-0B4711DA5F30"

	r := NewResponse(ActionReceive+ResponseSuffix, goldenRequestID)
	rr := r.Body().CreateElement("rsp:ReceiveResponse")
	s := rr.CreateElement("rsp:Stream")
	s.CreateAttr("Name", "stdout")
	s.CreateAttr("CommandId", cid)
	s.SetText("aGkNCg==")
	for _, name := range []string{"stdout", "stderr"} {
		e := rr.CreateElement("rsp:Stream")
		e.CreateAttr("Name", name)
		e.CreateAttr("CommandId", cid)
		e.CreateAttr("End", "true")
	}
	cs := rr.CreateElement("rsp:CommandState")
	cs.CreateAttr("CommandId", cid)
	cs.CreateAttr("State", StateDone)
	cs.CreateElement("rsp:ExitCode").SetText("0")
	golden(t, "response_receive.xml", r.Bytes())

	golden(t, "response_delete.xml", NewResponse(ActionDelete+ResponseSuffix, goldenRequestID).Bytes())

	r = NewResponse(ActionSignal+ResponseSuffix, "")
	r.Body().CreateElement("rsp:SignalResponse")
	golden(t, "response_signal_no_relates.xml", r.Bytes())

	r = NewResponse(ActionGet+ResponseSuffix, goldenRequestID)
	cfg := r.Body().CreateElement("cfg:Config")
	cfg.CreateAttr("xmlns:cfg", NsConfig)
	cfg.CreateElement("cfg:MaxEnvelopeSizekb").SetText("500")
	golden(t, "response_get_config.xml", r.Bytes())

	r = NewResponse("urn:weird<&>\"'", "id with <&> and \r\n\t")
	golden(t, "response_escaping.xml", r.Bytes())
}

func TestGoldenIdentify(t *testing.T) {
	golden(t, "identify_unauthenticated.xml", IdentifyResponse(false, "OS: 10.0.17763 SP: 0.0 Stack: 3.0"))
	golden(t, "identify_authenticated.xml", IdentifyResponse(true, "OS: 10.0.17763 SP: 0.0 Stack: 3.0"))
	golden(t, "identify_authenticated_empty_version.xml", IdentifyResponse(true, ""))
	golden(t, "identify_profiles.xml", IdentifyResponseProfiles("OS: 6.1.0 SP: 0.0 Stack: 3.0", []string{SecProfileHTTPSpnegoKerb, SecProfileHTTPSBasic}))
}

// TestFaultReadable checks fault envelopes the way the clients read them
// (as Windows sends them): pywinrm's and pypsrp's element paths, masterzen's
// substring match.
func TestFaultReadable(t *testing.T) {
	b := FaultEnvelope(TimedOut(), goldenRequestID, "host")
	if !bytes.Contains(b, []byte("OperationTimeout")) {
		t.Error("TimedOut fault lacks the word OperationTimeout (masterzen)")
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(b); err != nil {
		t.Fatal(err)
	}
	root := doc.Root()
	hdr := Child(root, NsSoap, "Header")
	if got := Text(Child(hdr, NsAddressing, "Action")); got != ActionFault {
		t.Errorf("Action = %q", got)
	}
	if got := Text(Child(hdr, NsAddressing, "RelatesTo")); got != goldenRequestID {
		t.Errorf("RelatesTo = %q", got)
	}
	fault := Child(Child(root, NsSoap, "Body"), NsSoap, "Fault")
	code := Child(fault, NsSoap, "Code")
	if got := Text(Child(code, NsSoap, "Value")); got != "s:Receiver" {
		t.Errorf("Code/Value = %q", got)
	}
	if got := Text(Child(Child(code, NsSoap, "Subcode"), NsSoap, "Value")); got != "w:TimedOut" {
		t.Errorf("Subcode/Value = %q", got)
	}
	wf := Child(Child(fault, NsSoap, "Detail"), NsFault, "WSManFault")
	if Attr(wf, "Code") != "2150858793" || Attr(wf, "Machine") != "host" {
		t.Errorf("WSManFault attrs = %v", wf.Attr)
	}
	if got := Text(Child(wf, NsFault, "Message")); !strings.Contains(got, "OperationTimeout") {
		t.Errorf("Message = %q", got)
	}

	// Every subcode prefix resolves.
	for _, f := range []*Fault{InvalidEnumerationContext(), ActionNotSupported("x"), InvalidHeader(""), MustUnderstand("{u}l"), MustUnderstand("plain")} {
		wellFormed(t, FaultEnvelope(f, "", "m"))
	}
	wellFormed(t, FaultEnvelope(nil, "", "m"))
}

func TestFaultError(t *testing.T) {
	f := TimedOut()
	if got := f.Error(); !strings.Contains(got, "w:TimedOut") || !strings.Contains(got, "2150858793") {
		t.Errorf("Error() = %q", got)
	}
	if (&Fault{Sender: true}).Error() == "" {
		t.Error("empty Error()")
	}
	var err error = InvalidSelectors("")
	if _, ok := err.(*Fault); !ok {
		t.Error("not a *Fault")
	}
	if (&Fault{Status: 400}).HTTPStatus() != 400 || (&Fault{}).HTTPStatus() != 500 {
		t.Error("HTTPStatus")
	}
	// Constructor shapes of the faults Windows sends.
	for _, tc := range []struct {
		f       *Fault
		sender  bool
		subcode string
		code    uint32
		detail  string
	}{
		{TimedOut(), false, "w:TimedOut", 2150858793, ""},
		{InvalidSelectors("x"), true, "w:InvalidSelectors", 2150858843, DetailUnexpectedSelectors},
		{AccessDenied("x"), true, "w:AccessDenied", 5, ""},
		{EncodingLimit(CodeMaxEnvelopeSizeExceeded, "x"), true, "w:EncodingLimit", 2150858824, ""},
		{QuotaLimit(CodeQuotaMaxOperations, "x"), true, "w:QuotaLimit", 2150859174, ""},
		{InvalidParameter("x"), true, "w:InvalidParameter", 87, DetailInvalidValue},
		{InvalidHeader("x"), true, "a:InvalidMessageInformationHeader", 2150858767, ""},
		{SchemaValidation("x"), true, "w:SchemaValidationError", 2150858817, ""},
		{ActionNotSupported("x"), true, "a:ActionNotSupported", 2150858753, ""},
		{DestinationUnreachable("x"), true, "w:DestinationUnreachable", 2150858811, DetailInvalidResourceURI},
		{InternalError(2147942402, "p", "x"), false, "w:InternalError", 2147942402, ""},
		{InvalidEnumerationContext(), false, "n:InvalidEnumerationContext", 2150858779, ""},
		{OperationAborted("x"), false, "w:InternalError", 995, ""},
		{MustUnderstand("x"), false, "s:MustUnderstand", CodeMustUnderstand, ""},
		{RemoteShellsNotAllowed(), true, "w:AccessDenied", 2150859180, ""},
	} {
		if tc.f.Sender != tc.sender || tc.f.Subcode != tc.subcode || tc.f.Code != tc.code || tc.f.Detail != tc.detail || tc.f.Reason == "" {
			t.Errorf("%s: got %+v", tc.subcode, tc.f)
		}
	}
}

func TestResponseBasics(t *testing.T) {
	r := NewResponse(ActionCommand+ResponseSuffix, goldenRequestID)
	if !messageIDRe.MatchString("<a:MessageID>" + r.MessageID() + "</a:MessageID>") {
		t.Errorf("MessageID %q", r.MessageID())
	}
	r.Body().CreateElement("rsp:CommandResponse").CreateElement("rsp:CommandId").SetText("X")
	env, err := Parse(append(r.Bytes(), '\n'), "", DefaultLimits())
	if err != nil {
		t.Fatalf("response does not parse as a request envelope: %v", err)
	}
	if env.Header.Action != ActionCommand+ResponseSuffix || env.Header.MessageID != r.MessageID() || !Is(env.Body, NsShell, "CommandResponse") {
		t.Errorf("round trip: %+v", env.Header)
	}
	if r.Header() == nil || Child(r.Header(), NsAddressing, "RelatesTo") == nil {
		t.Error("Header()/RelatesTo missing")
	}
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewMessageID()
		if seen[id] {
			t.Fatal("duplicate MessageID")
		}
		seen[id] = true
	}
}

func TestMustUnderstandNoNamespace(t *testing.T) {
	_, err := Parse([]byte(withStd(`<Foo s:mustUnderstand="true"/>`, "")), ctUTF8, DefaultLimits())
	f, ok := err.(*Fault)
	if !ok || f.NotUnderstood != "{}Foo" {
		t.Fatalf("err = %v", err)
	}
	b := FaultEnvelope(f, "", "m")
	wellFormed(t, b)
	if !bytes.Contains(b, []byte(`<s:NotUnderstood qname="Foo"/>`)) {
		t.Errorf("NotUnderstood missing: %s", b)
	}
}
