package wsman

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

const ctUTF8 = "application/soap+xml;charset=UTF-8"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "requests", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureCase describes what Parse must extract from a recorded-shape request.
type fixtureCase struct {
	file        string
	action      string
	resource    string
	messageID   string
	to          string
	sessionID   string
	timeout     time.Duration
	maxEnv      int
	selectors   map[string]string
	options     map[string]Option
	bodyNS      string // "" for an empty body
	bodyLocal   string
	identify    bool
	compression string
	dataLocale  string
}

func fixtureCases() []fixtureCase {
	const (
		pwShell = "5F0B39A4-2E61-4D7C-9B14-0C8E7A3D21F6"
		psShell = "9C3E5A71-2B8D-4F60-A1E2-7D4C6B8F0A13"
		wrShell = "1D2C3B4A-5F6E-4D8C-9B0A-1F2E3D4C5B6A"
		mzShell = "7A8B9C0D-1E2F-4A3B-8C4D-5E6F7A8B9C0D"
		psRes   = PowerShellPrefix + "Microsoft.PowerShell"
		pwTo    = "http://windows-host:5985/wsman"
		ppTo    = "https://192.0.2.10:5986/wsman"
		mzTo    = "http://localhost:5985/wsman"
		ppSess  = "uuid:0E4A8C2B-6D1F-4A3E-9B7C-5F2D8E1A4C60"
	)
	sel := func(id string) map[string]string { return map[string]string{"ShellId": id} }
	return []fixtureCase{
		// pywinrm
		{file: "pywinrm_create.xml", action: ActionCreate, resource: ResourceCmdShell, messageID: "uuid:3d9f1c2e-7b4a-4e61-9a0d-5c8b2f7e1a34", to: pwTo, timeout: 20 * time.Second, maxEnv: 153600,
			options: map[string]Option{"winrs_noprofile": {Value: "FALSE"}, "winrs_codepage": {Value: "437"}}, bodyNS: NsShell, bodyLocal: "Shell", dataLocale: "en-US"},
		{file: "pywinrm_command.xml", action: ActionCommand, resource: ResourceCmdShell, messageID: "uuid:b2c4e6f8-1a3c-4e5f-8a9b-0c1d2e3f4a5b", to: pwTo, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(pwShell),
			options: map[string]Option{"winrs_consolemode_stdin": {Value: "TRUE"}, "winrs_skip_cmd_shell": {Value: "FALSE"}}, bodyNS: NsShell, bodyLocal: "CommandLine", dataLocale: "en-US"},
		{file: "pywinrm_send.xml", action: ActionSend, resource: ResourceCmdShell, messageID: "uuid:c7d8e9f0-2b3c-4d5e-9f60-718293a4b5c6", to: pwTo, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(pwShell), bodyNS: NsShell, bodyLocal: "Send", dataLocale: "en-US"},
		{file: "pywinrm_receive.xml", action: ActionReceive, resource: ResourceCmdShell, messageID: "uuid:d4e5f6a7-3c4d-4e5f-a071-8293a4b5c6d7", to: pwTo, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(pwShell), bodyNS: NsShell, bodyLocal: "Receive", dataLocale: "en-US"},
		{file: "pywinrm_signal.xml", action: ActionSignal, resource: ResourceCmdShell, messageID: "uuid:e1f2a3b4-4d5e-4f60-b182-93a4b5c6d7e8", to: pwTo, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(pwShell), bodyNS: NsShell, bodyLocal: "Signal", dataLocale: "en-US"},
		{file: "pywinrm_delete.xml", action: ActionDelete, resource: ResourceCmdShell, messageID: "uuid:f0a1b2c3-5e6f-4071-8293-a4b5c6d7e8f9", to: pwTo, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(pwShell), dataLocale: "en-US"},
		// pypsrp
		{file: "pypsrp_create_psrp.xml", action: ActionCreate, resource: psRes, messageID: "uuid:6A1D3F5B-7C9E-4A2B-8D0F-1E3A5C7B9D2F", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600,
			options: map[string]Option{"protocolversion": {Value: "2.3", MustComply: true}}, bodyNS: NsShell, bodyLocal: "Shell", dataLocale: "en-US"},
		{file: "pypsrp_command_psrp.xml", action: ActionCommand, resource: psRes, messageID: "uuid:7B2E4A6C-8D0F-4B3C-9E1A-2F4B6D8C0E3A", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(psShell), bodyNS: NsShell, bodyLocal: "CommandLine", dataLocale: "en-US"},
		{file: "pypsrp_receive_psrp.xml", action: ActionReceive, resource: psRes, messageID: "uuid:8C3F5B7D-9E1A-4C4D-AF2B-3A5C7E9D1F4B", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(psShell),
			options: map[string]Option{"wsman_cmdshell_option_keepalive": {Value: "True"}}, bodyNS: NsShell, bodyLocal: "Receive", dataLocale: "en-US"},
		{file: "pypsrp_send_psrp.xml", action: ActionSend, resource: psRes, messageID: "uuid:9D4A6C8E-0F2B-4D5E-B03C-4B6D8F0E2A5C", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(psShell), bodyNS: NsShell, bodyLocal: "Send", dataLocale: "en-US"},
		{file: "pypsrp_signal_psrp.xml", action: ActionSignal, resource: psRes, messageID: "uuid:AE5B7D9F-1A3C-4E6F-8C4D-5C7E9A1F3B6D", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(psShell), bodyNS: NsShell, bodyLocal: "Signal", dataLocale: "en-US"},
		{file: "pypsrp_create_winrs.xml", action: ActionCreate, resource: ResourceCmdShell, messageID: "uuid:BF6C8E0A-2B4D-4F7A-9D5E-6D8F0B2A4C7E", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600,
			options: map[string]Option{"winrs_noprofile": {Value: "True", MustComply: true}, "winrs_codepage": {Value: "65001"}}, bodyNS: NsShell, bodyLocal: "Shell", dataLocale: "en-US"},
		{file: "pypsrp_command_winrs.xml", action: ActionCommand, resource: ResourceCmdShell, messageID: "uuid:C07D9F1B-3C5E-4A8B-AE6F-7E9A1C3B5D8F", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(wrShell),
			options: map[string]Option{"winrs_skip_cmd_shell": {Value: "False"}}, bodyNS: NsShell, bodyLocal: "CommandLine", dataLocale: "en-US"},
		{file: "pypsrp_signal_winrs.xml", action: ActionSignal, resource: ResourceCmdShell, messageID: "uuid:D18E0A2C-4D6F-4B9C-BF7A-8F0B2D4C6E9A", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(wrShell), bodyNS: NsShell, bodyLocal: "Signal", dataLocale: "en-US"},
		{file: "pypsrp_delete.xml", action: ActionDelete, resource: ResourceCmdShell, messageID: "uuid:E3A02C4E-6F8B-4DAE-9B9C-0B2D4F6E8A1C", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, selectors: sel(wrShell), dataLocale: "en-US"},
		{file: "pypsrp_get_config.xml", action: ActionGet, resource: ResourceConfig, messageID: "uuid:F4B13D5F-7A9C-4EBF-AC0D-1C3E5A7F9B2D", to: "https://127.0.0.1:5986/wsman", sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, dataLocale: "en-US"},
		{file: "pypsrp_enumerate_shells.xml", action: ActionEnumerate, resource: ResourceShell, messageID: "uuid:05C24E6A-8B0D-4FC0-BD1E-2D4F6B8A0C3E", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, bodyNS: NsEnumeration, bodyLocal: "Enumerate", dataLocale: "en-US"},
		{file: "pypsrp_enumerate_commands.xml", action: ActionEnumerate, resource: ResourceCommand, messageID: "uuid:16D35F7B-9C1E-40D1-8E2F-3E5A7C9B1D4F", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, bodyNS: NsEnumeration, bodyLocal: "Enumerate", dataLocale: "en-US"},
		{file: "pypsrp_pull.xml", action: ActionPull, resource: ResourceShell, messageID: "uuid:27E46A8C-0D2F-41E2-9F3A-4F6B8D0C2E5A", to: ppTo, sessionID: ppSess, timeout: 20 * time.Second, maxEnv: 153600, bodyNS: NsEnumeration, bodyLocal: "Pull", dataLocale: "en-US"},
		// masterzen/winrm
		{file: "masterzen_create.xml", action: ActionCreate, resource: ResourceCmdShell, messageID: "uuid:1b2c3d4e-5f60-4718-692a-3b4c5d6e7f80", to: mzTo, timeout: 60 * time.Second, maxEnv: 153600,
			options: map[string]Option{"winrs_noprofile": {Value: "FALSE"}, "winrs_codepage": {Value: "65001"}}, bodyNS: NsShell, bodyLocal: "Shell", dataLocale: "en-US"},
		{file: "masterzen_command.xml", action: ActionCommand, resource: ResourceCmdShell, messageID: "uuid:2c3d4e5f-6071-4829-7a3b-4c5d6e7f8091", to: mzTo, timeout: 60 * time.Second, maxEnv: 153600, selectors: sel(mzShell),
			options: map[string]Option{"winrs_consolemode_stdin": {Value: "TRUE"}, "winrs_skip_cmd_shell": {Value: "FALSE"}}, bodyNS: NsShell, bodyLocal: "CommandLine", dataLocale: "en-US"},
		{file: "masterzen_send.xml", action: ActionSend, resource: ResourceCmdShell, messageID: "uuid:3d4e5f60-7182-493a-8b4c-5d6e7f8091a2", to: mzTo, timeout: 60 * time.Second, maxEnv: 153600, selectors: sel(mzShell), bodyNS: NsShell, bodyLocal: "Send", dataLocale: "en-US"},
		{file: "masterzen_receive.xml", action: ActionReceive, resource: ResourceCmdShell, messageID: "uuid:4e5f6071-8293-4a4b-9c5d-6e7f8091a2b3", to: mzTo, timeout: 60 * time.Second, maxEnv: 153600, selectors: sel(mzShell), bodyNS: NsShell, bodyLocal: "Receive", dataLocale: "en-US"},
		{file: "masterzen_signal.xml", action: ActionSignal, resource: ResourceCmdShell, messageID: "uuid:5f607182-93a4-4b5c-ad6e-7f8091a2b3c4", to: mzTo, timeout: 5 * time.Minute, maxEnv: 153600, selectors: sel(mzShell), bodyNS: NsShell, bodyLocal: "Signal", dataLocale: "en-US"},
		{file: "masterzen_delete.xml", action: ActionDelete, resource: ResourceCmdShell, messageID: "uuid:60718293-a4b5-4c6d-be7f-8091a2b3c4d5", to: mzTo, timeout: 60 * time.Second, maxEnv: 153600, selectors: sel(mzShell), dataLocale: "en-US"},
		// Test-WSMan and the Windows PowerShell client
		{file: "identify.xml", bodyNS: NsIdentity, bodyLocal: "Identify", identify: true},
		{file: "windows_create_psrp.xml", action: ActionCreate, resource: psRes, messageID: "uuid:38C1A5E7-2F4B-4D6A-9E8C-0B1D3F5A7C9E", to: "http://linuxhost:5985/wsman?PSVersion=5.1.17763.1",
			sessionID: "uuid:49D2B6F8-3A5C-4E7B-AF9D-1C2E4A6B8D0F", timeout: 180 * time.Second, maxEnv: 512000,
			options: map[string]Option{"protocolversion": {Value: "2.3", MustComply: true}}, bodyNS: NsShell, bodyLocal: "Shell", compression: "xpress", dataLocale: "de-DE"},
	}
}

func TestParseFixtures(t *testing.T) {
	for _, tc := range fixtureCases() {
		t.Run(tc.file, func(t *testing.T) {
			env, err := Parse(readFixture(t, tc.file), ctUTF8, DefaultLimits())
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			h := env.Header
			check := func(field, got, want string) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %q, want %q", field, got, want)
				}
			}
			check("Action", h.Action, tc.action)
			check("ResourceURI", h.ResourceURI, tc.resource)
			check("MessageID", h.MessageID, tc.messageID)
			check("To", h.To, tc.to)
			check("SessionID", h.SessionID, tc.sessionID)
			check("CompressionType", h.CompressionType, tc.compression)
			check("DataLocale", h.DataLocale, tc.dataLocale)
			if !tc.identify {
				check("Locale", h.Locale, "en-US")
			}
			if h.OperationTimeout != tc.timeout {
				t.Errorf("OperationTimeout = %v, want %v", h.OperationTimeout, tc.timeout)
			}
			if h.MaxEnvelopeSize != tc.maxEnv {
				t.Errorf("MaxEnvelopeSize = %d, want %d", h.MaxEnvelopeSize, tc.maxEnv)
			}
			if env.IsIdentify != tc.identify {
				t.Errorf("IsIdentify = %v, want %v", env.IsIdentify, tc.identify)
			}
			if len(h.Selectors) != len(tc.selectors) {
				t.Errorf("Selectors = %v, want %v", h.Selectors, tc.selectors)
			}
			for k, v := range tc.selectors {
				if got, ok := h.Selector(strings.ToLower(k)); !ok || got != v {
					t.Errorf("Selector(%q) = %q, %v; want %q", k, got, ok, v)
				}
			}
			if len(h.Options) != len(tc.options) {
				t.Errorf("Options = %v, want %v", h.Options, tc.options)
			}
			for k, v := range tc.options {
				if got, ok := h.Option(strings.ToUpper(k)); !ok || got != v {
					t.Errorf("Option(%q) = %+v, %v; want %+v", k, got, ok, v)
				}
			}
			if tc.bodyNS == "" {
				if env.Body != nil {
					t.Errorf("Body = %s, want nil", env.Body.FullTag())
				}
			} else if !Is(env.Body, tc.bodyNS, tc.bodyLocal) {
				t.Errorf("Body is not {%s}%s", tc.bodyNS, tc.bodyLocal)
			}
			if env.HeaderElement == nil {
				t.Error("HeaderElement is nil")
			}
		})
	}
}

// TestParseFixtureBodies spot-checks that handlers can read bodies through
// the helpers, whatever prefixes the client used.
func TestParseFixtureBodies(t *testing.T) {
	parse := func(name string) *Envelope {
		t.Helper()
		env, err := Parse(readFixture(t, name), ctUTF8, DefaultLimits())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return env
	}

	// masterzen wraps the command in CDATA.
	env := parse("masterzen_command.xml")
	if got, want := Text(Child(env.Body, NsShell, "Command")), `echo "a & b" > /tmp/x && cat /tmp/x`; got != want {
		t.Errorf("masterzen Command = %q, want %q", got, want)
	}
	if got := Text(Child(env.Body, NsShell, "Arguments")); got != "<literal>" {
		t.Errorf("masterzen Arguments = %q", got)
	}

	// pypsrp sends one Arguments element per argument.
	env = parse("pypsrp_command_winrs.xml")
	var args []string
	for _, a := range Children(env.Body, NsShell, "Arguments") {
		args = append(args, Text(a))
	}
	if got := strings.Join(args, "|"); got != "/c|echo|a & b" {
		t.Errorf("pypsrp Arguments = %q", got)
	}

	// pywinrm environment variables with escaped text.
	env = parse("pywinrm_create.xml")
	vars := Children(Child(env.Body, NsShell, "Environment"), NsShell, "Variable")
	if len(vars) != 2 || Attr(vars[1], "Name") != "GREETING" || Text(vars[1]) != "fish & chips <3" {
		t.Errorf("pywinrm Variables wrong: %d", len(vars))
	}
	if v, present := env.Header.BoolOption("WINRS_NOPROFILE"); v || !present {
		t.Errorf("BoolOption(WINRS_NOPROFILE) = %v, %v", v, present)
	}

	// pywinrm Send: Stream redeclares rsp; End="true".
	env = parse("pywinrm_send.xml")
	st := Child(env.Body, NsShell, "Stream")
	if Attr(st, "Name") != "stdin" || Attr(st, "End") != "true" || Attr(st, "CommandId") != "A81C2D3E-64F0-4B9A-8E7D-1F2A3B4C5D6E" {
		t.Errorf("pywinrm Stream attrs wrong: %v", st.Attr)
	}

	// PSRP creationXml lives in the default PowerShell namespace.
	env = parse("pypsrp_create_psrp.xml")
	if Child(env.Body, NsPowerShell, "creationXml") == nil {
		t.Error("creationXml not found in the PowerShell namespace")
	}
	if Attr(env.Body, "ShellId") != "9C3E5A71-2B8D-4F60-A1E2-7D4C6B8F0A13" {
		t.Error("rsp:Shell/@ShellId not read")
	}

	// Enumerate with a selector filter.
	env = parse("pypsrp_enumerate_commands.xml")
	filter := Child(env.Body, NsWsman, "Filter")
	if Attr(filter, "Dialect") != DialectSelectorFilter {
		t.Error("filter dialect not read")
	}
	if Child(env.Body, NsWsman, "OptimizeEnumeration") == nil {
		t.Error("OptimizeEnumeration not found")
	}

	// Signal codes differ in case between clients.
	for name, want := range map[string]string{"pywinrm_signal.xml": SignalTerminate, "pypsrp_signal_winrs.xml": SignalTerminate, "pypsrp_signal_psrp.xml": SignalPSCtrlC} {
		env = parse(name)
		if got := Text(Child(env.Body, NsShell, "Code")); !strings.EqualFold(got, want) {
			t.Errorf("%s: Code = %q, want %q (case-insensitive)", name, got, want)
		}
	}
}

// --- envelopes built for the table tests ---------------------------------

const testNS = `xmlns:s="` + NsSoap + `" xmlns:a="` + NsAddressing + `" xmlns:w="` + NsWsman + `" xmlns:p="` + NsWsmanMS + `" xmlns:rsp="` + NsShell + `"`

const stdHeaders = `<a:Action s:mustUnderstand="true">` + ActionReceive + `</a:Action>` +
	`<a:MessageID>uuid:11111111-2222-4333-8444-555555555555</a:MessageID>` +
	`<w:ResourceURI s:mustUnderstand="true">` + ResourceCmdShell + `</w:ResourceURI>` +
	`<w:SelectorSet><w:Selector Name="ShellId">AAAA</w:Selector></w:SelectorSet>`

// soapEnv wraps headers and body in a SOAP 1.2 envelope.
func soapEnv(headers, body string) string {
	return `<s:Envelope ` + testNS + `><s:Header>` + headers + `</s:Header><s:Body>` + body + `</s:Body></s:Envelope>`
}

// withStd builds an envelope with the standard headers plus extra ones.
func withStd(extra, body string) string { return soapEnv(stdHeaders+extra, body) }

// nested returns n nested <rsp:X> elements.
func nested(n int) string {
	return strings.Repeat("<rsp:X>", n) + strings.Repeat("</rsp:X>", n)
}

func utf16Bytes(s string, bigEndian, bom bool) []byte {
	var out []byte
	if bom {
		if bigEndian {
			out = append(out, 0xFE, 0xFF)
		} else {
			out = append(out, 0xFF, 0xFE)
		}
	}
	for _, u := range utf16.Encode([]rune(s)) {
		if bigEndian {
			out = append(out, byte(u>>8), byte(u))
		} else {
			out = append(out, byte(u), byte(u>>8))
		}
	}
	return out
}

type parseCase struct {
	name    string
	body    []byte
	ct      string
	lim     Limits // zero: DefaultLimits
	subcode string // "" = must succeed
	code    uint32
}

func attrs(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(` a`)
		b.WriteString(strings.Repeat("x", i%5))
		b.WriteString(string(rune('0' + i/10%10)))
		b.WriteString(string(rune('0' + i%10)))
		b.WriteString(`="v"`)
	}
	return b.String()
}

func parseCases() []parseCase {
	const (
		sub = "w:SchemaValidationError"
		enc = "w:EncodingLimit"
		hdr = "a:InvalidMessageInformationHeader"
	)
	ok := func(name, body string) parseCase { return parseCase{name: name, body: []byte(body), ct: ctUTF8} }
	bad := func(name, body, subcode string, code uint32) parseCase {
		return parseCase{name: name, body: []byte(body), ct: ctUTF8, subcode: subcode, code: code}
	}
	receive := `<rsp:Receive><rsp:DesiredStream CommandId="C">stdout stderr</rsp:DesiredStream></rsp:Receive>`
	base := withStd("", receive)

	// Sizes around the limits.
	pad := func(total int) string {
		// <!-- ... --> inside the body, sized so the whole envelope is total bytes.
		skel := withStd("", "<!---->")
		return withStd("", "<!--"+strings.Repeat("x", total-len(skel))+"-->")
	}
	manyElems := func(n int) string { // n elements in total
		skel := withStd("", "")
		used := strings.Count(skel, "<") - strings.Count(skel, "</")
		return withStd("", strings.Repeat("<rsp:E/>", n-used))
	}
	laughs := `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">` +
		`<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>` + withStd("", "<rsp:X>&lol3;</rsp:X>")

	cases := []parseCase{
		ok("minimal receive", base),
		ok("xml declaration", `<?xml version="1.0" encoding="utf-8"?>`+base),
		ok("utf-8 bom", "\xEF\xBB\xBF"+base),
		ok("comments", "<!-- hi -->"+withStd("<!-- in header -->", "<!-- c -->"+receive)+"<!-- bye -->"),
		ok("no header identify", `<s:Envelope xmlns:s="`+NsSoap+`"><s:Body><i:Identify xmlns:i="`+NsIdentity+`"/></s:Body></s:Envelope>`),
		ok("identify misspelled ns", `<s:Envelope xmlns:s="`+NsSoap+`"><s:Header/><s:Body><i:Identify xmlns:i="`+nsIdentityAlt+`"/></s:Body></s:Envelope>`),
		ok("default namespace envelope", `<Envelope xmlns="`+NsSoap+`"><Header><Action xmlns="`+NsAddressing+`">`+ActionGet+`</Action></Header><Body/></Envelope>`),
		ok("size at limit", pad(DefaultMaxBytes)),
		ok("depth 32", withStd("", nested(32-2))),
		ok("10000 elements", manyElems(DefaultMaxElements)),
		ok("64 attributes", withStd("", "<rsp:X"+attrs(64)+"/>")),
		ok("name at limit", withStd("", "<rsp:"+strings.Repeat("n", 256-4)+"/>")),
		ok("unnamespaced mustUnderstand on unknown header", withStd(`<z:Foo xmlns:z="urn:unknown" mustUnderstand="true">x</z:Foo>`, receive)),
		ok("s:mustUnderstand false on unknown header", withStd(`<z:Foo xmlns:z="urn:unknown" s:mustUnderstand="false">x</z:Foo>`, receive)),
		ok("s:mustUnderstand true on unknown header in known ns", withStd(`<w:FragmentTransfer s:mustUnderstand="true">x</w:FragmentTransfer>`, receive)),
		ok("robust connection headers ignored", withStd(`<p:OperationID s:mustUnderstand="false">uuid:X</p:OperationID><p:SequenceId>1</p:SequenceId>`, receive)),
		ok("timeout zero", withStd(`<w:OperationTimeout>PT0S</w:OperationTimeout>`, receive)),
		ok("timeout fractional", withStd(`<w:OperationTimeout>P0DT0H0M1.5S</w:OperationTimeout>`, receive)),
		ok("max envelope size 8192", withStd(`<w:MaxEnvelopeSize>8192</w:MaxEnvelopeSize>`, receive)),
		ok("max envelope size huge is clamped", withStd(`<w:MaxEnvelopeSize>99999999999999999999999</w:MaxEnvelopeSize>`, receive)),
		ok("charset utf-16 with bom", ""), // body filled below
		ok("empty body", withStd("", "")),
		ok("CRLF and entities", withStd("", "<rsp:X a=\"&#9;&#xA;&quot;\">a&#xD;\r\nb&amp;&lt;&gt;</rsp:X>")),

		// Limits.
		bad("over MaxBytes", pad(DefaultMaxBytes+1), enc, CodeEnvelopeTooLarge),
		bad("depth 33", withStd("", nested(33-2)), enc, CodeEncodingLimit),
		bad("depth 10000", withStd("", nested(10000)), enc, CodeEncodingLimit),
		bad("10001 elements", manyElems(DefaultMaxElements+1), enc, CodeEncodingLimit),
		bad("attribute flood", withStd("", "<rsp:X"+attrs(65)+"/>"), enc, CodeEncodingLimit),
		bad("long element name", withStd("", "<rsp:"+strings.Repeat("n", 256-3)+"/>"), enc, CodeEncodingLimit),
		bad("long attribute name", withStd("", "<rsp:X "+strings.Repeat("n", 257)+`="v"/>`), enc, CodeEncodingLimit),

		// DTDs, entities, processing instructions.
		bad("doctype", `<!DOCTYPE s:Envelope>`+base, sub, CodeSchemaValidation),
		bad("doctype after declaration", `<?xml version="1.0"?><!DOCTYPE s:Envelope SYSTEM "http://example.com/x.dtd">`+base, sub, CodeSchemaValidation),
		bad("internal entity", `<!DOCTYPE x [<!ENTITY e "boom">]>`+withStd("", "<rsp:X>&e;</rsp:X>"), sub, CodeSchemaValidation),
		bad("external entity", `<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>`+withStd("", "<rsp:X>&xxe;</rsp:X>"), sub, CodeSchemaValidation),
		bad("billion laughs", laughs, sub, CodeSchemaValidation),
		bad("undefined entity", withStd("", "<rsp:X>&nbsp;</rsp:X>"), sub, CodeSchemaValidation),
		bad("entity declaration in body", withStd("", `<!ENTITY e "x">`), sub, CodeSchemaValidation),
		bad("processing instruction before root", `<?xml-stylesheet href="x"?>`+base, sub, CodeSchemaValidation),
		bad("processing instruction in body", withStd("", `<?php echo 1; ?>`), sub, CodeSchemaValidation),
		bad("declaration not first", " "+`<?xml version="1.0"?>`+base, sub, CodeSchemaValidation),
		bad("second declaration", `<?xml version="1.0"?>`+withStd("", `<?xml version="1.0"?>`), sub, CodeSchemaValidation),
		bad("xml 1.1", `<?xml version="1.1"?>`+base, sub, CodeSchemaValidation),

		// Encodings.
		bad("invalid utf-8", withStd("", "<rsp:X>\xff\xfe</rsp:X>"), enc, CodeEncodingLimit),
		bad("truncated utf-8", withStd("", "<rsp:X>\xe2\x82</rsp:X>"), enc, CodeEncodingLimit),
		{name: "bad charset", body: []byte(base), ct: "application/soap+xml;charset=ISO-8859-1", subcode: enc, code: CodeEncodingLimit},
		{name: "bad quoted charset", body: []byte(base), ct: `application/soap+xml; charset="windows-1252"`, subcode: enc, code: CodeEncodingLimit},
		bad("declared encoding latin1", `<?xml version="1.0" encoding="ISO-8859-1"?>`+base, enc, CodeEncodingLimit),
		{name: "utf-16 odd length", body: append(utf16Bytes(base, false, true), 0x20), ct: "application/soap+xml;charset=utf-16", subcode: enc, code: CodeEncodingLimit},
		{name: "utf-16 unpaired surrogate", body: append(utf16Bytes(withStd("", "<rsp:X>"), false, true), append([]byte{0x00, 0xD8, 0x41, 0x00}, utf16Bytes("</rsp:X>", false, false)...)...), ct: "", subcode: enc, code: CodeEncodingLimit},
		bad("NUL character", withStd("", "<rsp:X>\x00</rsp:X>"), sub, CodeSchemaValidation),
		bad("control character reference", withStd("", "<rsp:X>&#1;</rsp:X>"), sub, CodeSchemaValidation),

		// Malformed XML and SOAP structure.
		bad("empty", "", sub, CodeSchemaValidation),
		bad("whitespace only", " \n", sub, CodeSchemaValidation),
		bad("not xml", "hello", sub, CodeSchemaValidation),
		bad("truncated", base[:len(base)-5], sub, CodeSchemaValidation),
		bad("mismatched tags", withStd("", "<rsp:X></rsp:Y>"), sub, CodeSchemaValidation),
		bad("two roots", base+base, sub, CodeSchemaValidation),
		bad("text after root", base+"junk", sub, CodeSchemaValidation),
		bad("undeclared prefix", withStd("", "<q:X/>"), sub, CodeSchemaValidation),
		bad("undeclared attribute prefix", withStd("", `<rsp:X q:a="1"/>`), sub, CodeSchemaValidation),
		bad("duplicate attribute", withStd("", `<rsp:X a="1" a="2"/>`), sub, CodeSchemaValidation),
		bad("duplicate expanded attribute", withStd("", `<rsp:X xmlns:r2="`+NsShell+`" rsp:a="1" r2:a="2"/>`), sub, CodeSchemaValidation),
		bad("empty prefix binding", withStd("", `<rsp:X xmlns:q=""/>`), sub, CodeSchemaValidation),
		bad("rebinding xml", withStd("", `<rsp:X xmlns:xml="urn:x"/>`), sub, CodeSchemaValidation),
		bad("double colon name", withStd("", `<rsp:X:Y/>`), sub, CodeSchemaValidation),
		bad("soap 1.1", `<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>`, sub, CodeSchemaValidation),
		bad("not an envelope", `<rsp:Shell xmlns:rsp="`+NsShell+`"/>`, sub, CodeSchemaValidation),
		bad("envelope without namespace", `<Envelope><Body/></Envelope>`, sub, CodeSchemaValidation),
		bad("missing body", `<s:Envelope `+testNS+`><s:Header>`+stdHeaders+`</s:Header></s:Envelope>`, sub, CodeSchemaValidation),
		bad("two bodies", `<s:Envelope `+testNS+`><s:Header>`+stdHeaders+`</s:Header><s:Body/><s:Body/></s:Envelope>`, sub, CodeSchemaValidation),
		bad("header after body", `<s:Envelope `+testNS+`><s:Body/><s:Header>`+stdHeaders+`</s:Header></s:Envelope>`, sub, CodeSchemaValidation),
		bad("foreign element in envelope", `<s:Envelope `+testNS+`><s:Header>`+stdHeaders+`</s:Header><s:Body/><rsp:X/></s:Envelope>`, sub, CodeSchemaValidation),

		// Header values.
		bad("negative timeout PT-1S", withStd(`<w:OperationTimeout>PT-1S</w:OperationTimeout>`, receive), hdr, CodeInvalidHeader),
		bad("negative timeout -PT1S", withStd(`<w:OperationTimeout>-PT1S</w:OperationTimeout>`, receive), hdr, CodeInvalidHeader),
		bad("garbage timeout", withStd(`<w:OperationTimeout>60</w:OperationTimeout>`, receive), hdr, CodeInvalidHeader),
		bad("empty timeout", withStd(`<w:OperationTimeout></w:OperationTimeout>`, receive), hdr, CodeInvalidHeader),
		bad("max envelope size 100", withStd(`<w:MaxEnvelopeSize s:mustUnderstand="true">100</w:MaxEnvelopeSize>`, receive), enc, CodeMaxEnvelopeSizeTooSmall),
		bad("max envelope size 8191", withStd(`<w:MaxEnvelopeSize>8191</w:MaxEnvelopeSize>`, receive), enc, CodeMaxEnvelopeSizeTooSmall),
		bad("max envelope size text", withStd(`<w:MaxEnvelopeSize>lots</w:MaxEnvelopeSize>`, receive), hdr, CodeInvalidHeader),
		bad("max envelope size negative", withStd(`<w:MaxEnvelopeSize>-1</w:MaxEnvelopeSize>`, receive), hdr, CodeInvalidHeader),
		bad("duplicate action", withStd(`<a:Action>`+ActionSend+`</a:Action>`, receive), hdr, CodeInvalidHeader),
		bad("duplicate timeout", withStd(`<w:OperationTimeout>PT1S</w:OperationTimeout><w:OperationTimeout>PT2S</w:OperationTimeout>`, receive), hdr, CodeInvalidHeader),
		bad("missing action", soapEnv(`<a:MessageID>uuid:1</a:MessageID>`, receive), hdr, CodeInvalidHeader),
		bad("missing action empty body", soapEnv("", ""), hdr, CodeInvalidHeader),
		bad("identify in wrong namespace", soapEnv("", `<rsp:Identify/>`), hdr, CodeInvalidHeader),
		bad("duplicate selector", withStd(`<w:SelectorSet><w:Selector Name="shellid">B</w:Selector></w:SelectorSet>`, receive), "w:InvalidSelectors", CodeInvalidSelectors),
		bad("nameless selector", withStd(`<w:SelectorSet><w:Selector>B</w:Selector></w:SelectorSet>`, receive), "w:InvalidSelectors", CodeInvalidSelectors),

		// mustUnderstand.
		bad("s:mustUnderstand true on unknown header", withStd(`<z:Foo xmlns:z="urn:unknown" s:mustUnderstand="true">x</z:Foo>`, receive), "s:MustUnderstand", CodeMustUnderstand),
		bad("s:mustUnderstand 1 on unknown header", withStd(`<z:Foo xmlns:z="urn:unknown" s:mustUnderstand="1">x</z:Foo>`, receive), "s:MustUnderstand", CodeMustUnderstand),
		bad("soap ns under another prefix", withStd(`<z:Foo xmlns:z="urn:unknown" xmlns:soap="`+NsSoap+`" soap:mustUnderstand="true"/>`, receive), "s:MustUnderstand", CodeMustUnderstand),
		bad("no-namespace header mustUnderstand", withStd(`<Foo s:mustUnderstand="true"/>`, receive), "s:MustUnderstand", CodeMustUnderstand),
		bad("unprefixed unknown header mustUnderstand", withStd(`<Foo xmlns="urn:unknown" s:mustUnderstand="true"/>`, receive), "s:MustUnderstand", CodeMustUnderstand),
	}

	// Fill in the UTF-16 cases.
	for i := range cases {
		if cases[i].name == "charset utf-16 with bom" {
			cases[i].body = utf16Bytes(`<?xml version="1.0" encoding="UTF-16"?>`+withStd("", "<rsp:X>ünïcødé 😀</rsp:X>"), false, true)
			cases[i].ct = "application/soap+xml;charset=UTF-16"
		}
	}
	cases = append(cases,
		parseCase{name: "utf-16 BE with bom, no charset", body: utf16Bytes(base, true, true), ct: "application/soap+xml"},
		parseCase{name: "utf-16 LE with bom, charset utf-8 (bom wins)", body: utf16Bytes(base, false, true), ct: ctUTF8},
		parseCase{name: "utf-16le without bom", body: utf16Bytes(base, false, false), ct: "application/soap+xml; charset=utf-16le"},
		parseCase{name: "utf-16 without bom is big-endian", body: utf16Bytes(base, true, false), ct: "application/soap+xml;charset=utf-16"},
		parseCase{name: "utf-16 without bom sniffed little-endian", body: utf16Bytes(base, false, false), ct: "application/soap+xml;charset=utf-16"},
		parseCase{name: "utf-16 over MaxBytes after transcoding", body: utf16Bytes(withStd("", "<rsp:X>"+strings.Repeat("€", 2000)+"</rsp:X>"), false, true),
			lim: Limits{MaxBytes: 5000}, subcode: "w:EncodingLimit", code: CodeEnvelopeTooLarge},
		parseCase{name: "content type with extra params", body: []byte(base), ct: `application/soap+xml; action="x"; charset=utf-8; q=1`},
		parseCase{name: "tight element limit", body: []byte(base), lim: Limits{MaxElements: 5}, subcode: "w:EncodingLimit", code: CodeEncodingLimit},
		parseCase{name: "tight depth limit", body: []byte(base), lim: Limits{MaxDepth: 3}, subcode: "w:EncodingLimit", code: CodeEncodingLimit},
		parseCase{name: "tight byte limit", body: []byte(base), lim: Limits{MaxBytes: 100}, subcode: "w:EncodingLimit", code: CodeEnvelopeTooLarge},
	)
	return cases
}

func TestParseTable(t *testing.T) {
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Parse(tc.body, tc.ct, tc.lim)
			if tc.subcode == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if env.Header.Action == "" && !env.IsIdentify {
					t.Errorf("accepted without Action or Identify")
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded, want %s", tc.subcode)
			}
			f, ok := err.(*Fault)
			if !ok {
				t.Fatalf("error %T is not a *Fault", err)
			}
			if f.Subcode != tc.subcode || f.Code != tc.code {
				t.Errorf("fault = %s/%d (%s), want %s/%d", f.Subcode, f.Code, f.Reason, tc.subcode, tc.code)
			}
			if f.HTTPStatus() != 500 {
				t.Errorf("HTTPStatus = %d", f.HTTPStatus())
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	receive := `<rsp:Receive><rsp:DesiredStream CommandId="C">stdout</rsp:DesiredStream></rsp:Receive>`

	t.Run("utf-16 content survives", func(t *testing.T) {
		body := utf16Bytes(withStd("", "<rsp:X>ünïcødé 😀</rsp:X>"), true, true)
		env, err := Parse(body, "", DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		if got := Text(env.Body); got != "ünïcødé 😀" {
			t.Errorf("text = %q", got)
		}
	})

	t.Run("whitespace trimmed, MessageID exact", func(t *testing.T) {
		env, err := Parse([]byte(soapEnv(
			"<a:Action>\n  "+ActionSend+"\t</a:Action><a:MessageID> uuid:abc-DEF </a:MessageID>"+
				`<w:OperationTimeout> PT180.000S </w:OperationTimeout><w:MaxEnvelopeSize>
			512000 </w:MaxEnvelopeSize><p:SessionId>uuid:S</p:SessionId>`, receive)), ctUTF8, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		h := env.Header
		if h.Action != ActionSend || h.MessageID != "uuid:abc-DEF" || h.OperationTimeout != 180*time.Second || h.MaxEnvelopeSize != 512000 || h.SessionID != "uuid:S" {
			t.Errorf("header = %+v", h)
		}
	})

	t.Run("options", func(t *testing.T) {
		env, err := Parse([]byte(withStd(`<w:OptionSet s:mustUnderstand="true">`+
			`<w:Option Name="A">TRUE</w:Option><w:Option Name="b">True</w:Option><w:Option Name="C">1</w:Option>`+
			`<w:Option Name="D">FALSE</w:Option><w:Option Name="E">maybe</w:Option><w:Option Name="F" MustComply="TRUE"> 2.3 </w:Option>`+
			`<w:Option Name="a">false</w:Option><w:Option>nameless</w:Option></w:OptionSet>`, receive)), ctUTF8, DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		h := &env.Header
		for name, want := range map[string][2]bool{"a": {true, true}, "B": {true, true}, "c": {true, true}, "d": {false, true}, "e": {false, true}, "missing": {false, false}} {
			v, p := h.BoolOption(name)
			if v != want[0] || p != want[1] {
				t.Errorf("BoolOption(%q) = %v, %v; want %v", name, v, p, want)
			}
		}
		if o, ok := h.Option("f"); !ok || o.Value != "2.3" || !o.MustComply {
			t.Errorf("Option(f) = %+v, %v", o, ok)
		}
		if len(h.Options) != 6 {
			t.Errorf("Options = %v", h.Options)
		}
	})

	t.Run("selectors case-insensitive", func(t *testing.T) {
		env, err := Parse([]byte(soapEnv(`<a:Action>`+ActionSignal+`</a:Action><w:SelectorSet><w:Selector Name="ShellId"> G </w:Selector></w:SelectorSet>`, "")), ctUTF8, DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"ShellId", "shellid", "SHELLID"} {
			if v, ok := env.Header.Selector(n); !ok || v != "G" {
				t.Errorf("Selector(%q) = %q, %v", n, v, ok)
			}
		}
		if _, ok := env.Header.Selector("CommandId"); ok {
			t.Error("unexpected CommandId selector")
		}
		if env.Body != nil {
			t.Error("empty body not nil")
		}
	})

	t.Run("fault relates to request", func(t *testing.T) {
		_, err := Parse([]byte(soapEnv(`<w:OperationTimeout>PT-1S</w:OperationTimeout><a:Action>`+ActionReceive+`</a:Action><a:MessageID>uuid:REL</a:MessageID>`, receive)), ctUTF8, DefaultLimits())
		f, ok := err.(*Fault)
		if !ok || f.RelatesTo != "uuid:REL" || f.Code != CodeInvalidHeader {
			t.Fatalf("err = %#v", err)
		}
		if !bytes.Contains(FaultEnvelope(f, "", "m"), []byte("<a:RelatesTo>uuid:REL</a:RelatesTo>")) {
			t.Error("fault envelope does not relate to the request")
		}
	})

	t.Run("mustUnderstand fault names the header", func(t *testing.T) {
		_, err := Parse([]byte(withStd(`<z:Foo xmlns:z="urn:unknown" s:mustUnderstand="true"/>`, receive)), ctUTF8, DefaultLimits())
		f, _ := err.(*Fault)
		if f == nil || f.NotUnderstood != "{urn:unknown}Foo" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("mustUnderstand checked before header values", func(t *testing.T) {
		_, err := Parse([]byte(withStd(`<w:OperationTimeout>bad</w:OperationTimeout><z:Foo xmlns:z="urn:unknown" s:mustUnderstand="true"/>`, receive)), ctUTF8, DefaultLimits())
		if f, _ := err.(*Fault); f == nil || f.Subcode != "s:MustUnderstand" {
			t.Fatalf("err = %v", err)
		}
	})
}
