package wsman

import (
	"strings"
	"testing"
)

// Golden: the s:Fault element of the cmd shell plugin's faults, byte for
// byte as recorded from Windows hosts (Server 2016: a Signal without
// CommandId; a Receive of an unknown CommandId), Machine aside.
func TestShellFaultGolden(t *testing.T) {
	cases := []struct {
		name    string
		f       *Fault
		machine string
		want    string
	}{
		{"no CommandId", ShellFault(ShellBadParameter, "Signal without CommandId"), "SERVER2016.domain.local",
			`<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>w:InvalidParameter</s:Value></s:Subcode></s:Code>` +
				`<s:Reason><s:Text xml:lang="">The parameter is incorrect. </s:Text></s:Reason><s:Detail>` +
				`<w:FaultDetail>http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue</w:FaultDetail>` +
				`<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="87" Machine="SERVER2016.domain.local">` +
				`<f:Message><f:ProviderFault provider="Shell cmd plugin" path="%systemroot%\system32\winrscmd.dll">The parameter is incorrect. </f:ProviderFault>` +
				`</f:Message></f:WSManFault></s:Detail></s:Fault>`},
		{"unknown CommandId", ShellFault(ShellUnknownCommand, "no command 87E77BEB"), "192.168.56.15",
			`<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>w:InvalidSelectors</s:Value></s:Subcode></s:Code>` +
				`<s:Reason><s:Text xml:lang="en-US">The WS-Management service cannot process the request because the request contained invalid selectors for the resource. </s:Text></s:Reason>` +
				`<s:Detail><w:FaultDetail>http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors</w:FaultDetail>` +
				`<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858843" Machine="192.168.56.15">` +
				`<f:Message>The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. ` +
				`Either the command has completed execution or the client specified an invalid command identifier. </f:Message></f:WSManFault></s:Detail></s:Fault>`},
	}
	for _, c := range cases {
		env := string(FaultEnvelope(c.f, "uuid:1", c.machine))
		i, j := strings.Index(env, "<s:Fault>"), strings.Index(env, "</s:Fault>")
		if i < 0 || j < 0 {
			t.Fatalf("%s: no s:Fault in %s", c.name, env)
		}
		if got := env[i : j+len("</s:Fault>")]; got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
		if strings.Contains(env, c.f.Internal) {
			t.Errorf("%s: the daemon's own detail %q went to the client", c.name, c.f.Internal)
		}
		if !strings.Contains(env, `<a:Action>`+ActionFault+`</a:Action>`) {
			t.Errorf("%s: not the wsman fault Action", c.name)
		}
	}
}

// Every kind of the table: Windows' code, subcode and text, the provider
// where Windows names it, and the Internal detail never rendered.
func TestShellFaultTable(t *testing.T) {
	want := map[ShellFaultKind]struct {
		code     uint32
		subcode  string
		reason   string
		provider bool
	}{
		ShellBadParameter:   {87, "w:InvalidParameter", "The parameter is incorrect. ", true},
		ShellFileNotFound:   {2147942402, "w:InternalError", "The system cannot find the file specified. ", true},
		ShellStartDenied:    {2147942405, "w:InternalError", "Access is denied. ", true},
		ShellBadDirectory:   {2147942667, "w:InternalError", "The directory name is invalid. ", true},
		ShellAborted:        {995, "w:InternalError", "The I/O operation has been aborted because of either a thread exit or an application request. ", true},
		ShellUnknownCommand: {2150858843, "w:InvalidSelectors", "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. ", false},
	}
	if len(want) != len(shellFaults) {
		t.Fatalf("table has %d kinds, test knows %d", len(shellFaults), len(want))
	}
	for k, w := range want {
		f := ShellFault(k, "secret-internal-detail")
		if f.Code != w.code || f.Subcode != w.subcode || f.Reason != w.reason || (f.Provider == ShellProvider) != w.provider {
			t.Errorf("kind %d: %+v, want %+v", k, f, w)
		}
		if w.provider && (f.ProviderPath != `%systemroot%\system32\winrscmd.dll` || !f.NoReasonLang) {
			t.Errorf("kind %d: provider path %q, NoReasonLang %v", k, f.ProviderPath, f.NoReasonLang)
		}
		env := FaultEnvelope(f, "uuid:1", "m")
		if strings.Contains(string(env), "secret-internal-detail") {
			t.Errorf("kind %d: Internal rendered", k)
		}
		wellFormed(t, env)
	}
}
