package session

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beevik/etree"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/session/wsman"
)

// The test binary doubles as the worker, so these tests use the real spawn
// path: a re-executed process speaking the real protocol.
func TestMain(m *testing.M) {
	if isolation.IsWorker() {
		isolation.WorkerMain()
		return
	}
	os.Exit(m.Run())
}

type harness struct {
	t  *testing.T
	m  *Manager
	id *authn.Identity
}

func newHarness(t *testing.T, mut func(*Config)) *harness {
	t.Helper()
	sp, err := isolation.NewSpawner(isolation.SpawnerOptions{Lab: true, AllowRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() }) // after the Manager's Shutdown below
	w := configs.Default().Winrs
	cfg := Config{Winrs: w, MaxTimeout: 60 * time.Second, Spawner: sp, ReapInterval: 50 * time.Millisecond}
	if mut != nil {
		mut(&cfg)
	}
	m := NewManager(cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Shutdown(ctx)
	})
	az, err := authn.NewAuthorizer(authn.AuthorizerConfig{Lab: true, AllowRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	id, err := az.Authorize(authn.Principal{Name: "tester", Mechanism: "basic"}, authn.SchemeBasic)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, m: m, id: id}
}

const envHead = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration"><s:Header>`

func envelope(action, resource, shellID, extraHeader, body string, timeout string, maxEnv int) string {
	var b strings.Builder
	b.WriteString(envHead)
	fmt.Fprintf(&b, `<a:Action s:mustUnderstand="true">%s</a:Action>`, action)
	fmt.Fprintf(&b, `<w:ResourceURI s:mustUnderstand="true">%s</w:ResourceURI>`, resource)
	fmt.Fprintf(&b, `<a:MessageID>uuid:%s</a:MessageID>`, wsman.NewGUID())
	if maxEnv == 0 {
		maxEnv = 153600
	}
	fmt.Fprintf(&b, `<w:MaxEnvelopeSize s:mustUnderstand="true">%d</w:MaxEnvelopeSize>`, maxEnv)
	if timeout == "" {
		timeout = "PT20S"
	}
	fmt.Fprintf(&b, `<w:OperationTimeout>%s</w:OperationTimeout>`, timeout)
	if shellID != "" {
		fmt.Fprintf(&b, `<w:SelectorSet><w:Selector Name="ShellId">%s</w:Selector></w:SelectorSet>`, shellID)
	}
	b.WriteString(extraHeader)
	b.WriteString(`</s:Header><s:Body>`)
	b.WriteString(body)
	b.WriteString(`</s:Body></s:Envelope>`)
	return b.String()
}

func (h *harness) do(xml string) (*etree.Document, error) {
	h.t.Helper()
	env, err := wsman.Parse([]byte(xml), "application/soap+xml;charset=UTF-8", wsman.DefaultLimits())
	if err != nil {
		h.t.Fatalf("test envelope does not parse: %v", err)
	}
	msg, err := wsman.Decode(env)
	if err != nil {
		return nil, err
	}
	out, err := h.m.Handle(context.Background(), &Request{Msg: msg, Identity: h.id, RemoteAddr: "127.0.0.1", ListenerURL: "http://127.0.0.1:5985/wsman"})
	if err != nil {
		return nil, err
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(out); err != nil {
		h.t.Fatalf("response is not XML: %v\n%s", err, out)
	}
	return doc, nil
}

func (h *harness) must(xml string) *etree.Document {
	h.t.Helper()
	doc, err := h.do(xml)
	if err != nil {
		h.t.Fatalf("unexpected fault: %v", err)
	}
	return doc
}

func (h *harness) createShell(body string, options string) string {
	h.t.Helper()
	if body == "" {
		body = `<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>`
	}
	extra := ""
	if options != "" {
		extra = `<w:OptionSet>` + options + `</w:OptionSet>`
	}
	doc := h.must(envelope(wsman.ActionCreate, wsman.ResourceCmdShell, "", extra, body, "", 0))
	sel := doc.FindElement("//Selector[@Name='ShellId']")
	if sel == nil {
		h.t.Fatalf("CreateResponse has no ShellId selector")
	}
	if doc.FindElement("//ResourceCreated") == nil || doc.FindElement("//Shell/ShellId") == nil {
		h.t.Fatalf("CreateResponse needs both x:ResourceCreated and rsp:Shell")
	}
	return sel.Text()
}

func (h *harness) run(shell, cmd string, args ...string) string {
	h.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `<rsp:CommandLine><rsp:Command>%s</rsp:Command>`, xmlEscape(cmd))
	for _, a := range args {
		fmt.Fprintf(&b, `<rsp:Arguments>%s</rsp:Arguments>`, xmlEscape(a))
	}
	b.WriteString(`</rsp:CommandLine>`)
	doc := h.must(envelope(wsman.ActionCommand, wsman.ResourceCmdShell, shell, "", b.String(), "", 0))
	id := doc.FindElement("//CommandResponse/CommandId")
	if id == nil {
		h.t.Fatal("no CommandId")
	}
	return id.Text()
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	doc := etree.NewDocument()
	doc.CreateElement("x").SetText(s)
	doc.WriteTo(&b)
	out := b.String()
	return strings.TrimSuffix(strings.TrimPrefix(out, "<x>"), "</x>")
}

type result struct {
	stdout, stderr []byte
	code           string
	receives       int
}

func (h *harness) collect(shell, cmd string, maxEnv int) result {
	h.t.Helper()
	var r result
	for i := 0; i < 10000; i++ {
		body := fmt.Sprintf(`<rsp:Receive><rsp:DesiredStream CommandId="%s">stdout stderr</rsp:DesiredStream></rsp:Receive>`, cmd)
		x := envelope(wsman.ActionReceive, wsman.ResourceCmdShell, shell, "", body, "", maxEnv)
		doc, err := h.do(x)
		if err != nil {
			if f, ok := err.(*wsman.Fault); ok && f.Code == wsman.CodeTimedOut {
				continue
			}
			h.t.Fatalf("receive: %v", err)
		}
		r.receives++
		raw, _ := doc.WriteToBytes()
		if maxEnv > 0 && len(raw) > maxEnv {
			h.t.Fatalf("response of %d bytes exceeds the client's MaxEnvelopeSize %d", len(raw), maxEnv)
		}
		for _, s := range doc.FindElements("//ReceiveResponse/Stream") {
			data, err := base64.StdEncoding.DecodeString(s.Text())
			if err != nil {
				h.t.Fatal(err)
			}
			if s.SelectAttrValue("Name", "") == "stderr" {
				r.stderr = append(r.stderr, data...)
			} else {
				r.stdout = append(r.stdout, data...)
			}
		}
		st := doc.FindElement("//CommandState")
		if st != nil && strings.HasSuffix(st.SelectAttrValue("State", ""), "/Done") {
			ec := st.FindElement("ExitCode")
			if ec == nil {
				h.t.Fatal("Done without ExitCode")
			}
			r.code = ec.Text()
			return r
		}
	}
	h.t.Fatal("command never finished")
	return r
}

func TestRunCommandStdoutStderrExitCode(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell("", "")
	cmd := h.run(sh, "echo", "out; echo err >&2; exit 3")
	r := h.collect(sh, cmd, 0)
	if string(r.stdout) != "out\n" || string(r.stderr) != "err\n" || r.code != "3" {
		t.Fatalf("got stdout %q stderr %q code %s", r.stdout, r.stderr, r.code)
	}
}

func TestLargeOutputSplitsWithinEnvelope(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell("", "")
	// 3 MB of varied bytes; the client accepts 8 KiB... 150 KB envelopes.
	cmd := h.run(sh, "head", "-c 3000000 /dev/urandom | tee /tmp/.winrmd-session-test-$$ | cat; sha256sum /tmp/.winrmd-session-test-$$ >&2; rm -f /tmp/.winrmd-session-test-$$")
	r := h.collect(sh, cmd, 153600)
	if len(r.stdout) != 3000000 {
		t.Fatalf("got %d bytes", len(r.stdout))
	}
	sum := fmt.Sprintf("%x", sha256.Sum256(r.stdout))
	if !strings.HasPrefix(string(r.stderr), sum) {
		t.Fatalf("sha256 mismatch: got %s, command saw %s", sum, r.stderr)
	}
	if r.receives < 3000000/153600 {
		t.Fatalf("only %d receives for 3 MB at 150 KB envelopes", r.receives)
	}
}

func TestSmallEnvelopeStillProgresses(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell("", "")
	cmd := h.run(sh, "seq", "1 20000")
	r := h.collect(sh, cmd, 8192)
	if got := strings.Count(string(r.stdout), "\n"); got != 20000 {
		t.Fatalf("got %d lines", got)
	}
}

func TestReceiveTimesOutThenCompletes(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell("", "")
	cmd := h.run(sh, "sleep 2; echo done")
	body := fmt.Sprintf(`<rsp:Receive><rsp:DesiredStream CommandId="%s">stdout stderr</rsp:DesiredStream></rsp:Receive>`, cmd)
	start := time.Now()
	_, err := h.do(envelope(wsman.ActionReceive, wsman.ResourceCmdShell, sh, "", body, "PT0.5S", 0))
	f, ok := err.(*wsman.Fault)
	if !ok || f.Code != wsman.CodeTimedOut || !strings.Contains(f.Reason+f.Message, "OperationTimeout") {
		t.Fatalf("want TimedOut fault mentioning OperationTimeout, got %v", err)
	}
	if time.Since(start) > 1500*time.Millisecond {
		t.Fatalf("Receive waited %v for a 0.5 s OperationTimeout", time.Since(start))
	}
	r := h.collect(sh, cmd, 0)
	if string(r.stdout) != "done\n" || r.code != "0" {
		t.Fatalf("got %q %s", r.stdout, r.code)
	}
}

func TestStdinAndEnd(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell("", "")
	cmd := h.run(sh, "tr", "a-z A-Z")
	data := base64.StdEncoding.EncodeToString([]byte("hello winrm\n"))
	body := fmt.Sprintf(`<rsp:Send><rsp:Stream Name="stdin" CommandId="%s" End="TRUE">%s</rsp:Stream></rsp:Send>`, cmd, data)
	h.must(envelope(wsman.ActionSend, wsman.ResourceCmdShell, sh, "", body, "", 0))
	r := h.collect(sh, cmd, 0)
	if string(r.stdout) != "HELLO WINRM\n" {
		t.Fatalf("got %q", r.stdout)
	}
}

func TestEnvironmentAndWorkingDirectory(t *testing.T) {
	h := newHarness(t, nil)
	dir := t.TempDir()
	sh := h.createShell(`<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams><rsp:WorkingDirectory>`+dir+`</rsp:WorkingDirectory><rsp:Environment><rsp:Variable Name="WINRMD_T">v &amp; w</rsp:Variable></rsp:Environment></rsp:Shell>`, "")
	cmd := h.run(sh, `printf '%s|%s' "$WINRMD_T" "$(pwd)"`)
	r := h.collect(sh, cmd, 0)
	if string(r.stdout) != "v & w|"+dir {
		t.Fatalf("got %q", r.stdout)
	}
}

func TestSkipCmdShellRunsArgvDirectly(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell("", "")
	doc := h.must(envelope(wsman.ActionCommand, wsman.ResourceCmdShell, sh,
		`<w:OptionSet><w:Option Name="WINRS_SKIP_CMD_SHELL">TRUE</w:Option></w:OptionSet>`,
		`<rsp:CommandLine><rsp:Command>printf</rsp:Command><rsp:Arguments>%s;</rsp:Arguments><rsp:Arguments>$HOME</rsp:Arguments></rsp:CommandLine>`, "", 0))
	cmd := doc.FindElement("//CommandId").Text()
	r := h.collect(sh, cmd, 0)
	if string(r.stdout) != "$HOME;" { // no shell: no expansion
		t.Fatalf("got %q", r.stdout)
	}
}

func TestStartFailureFault(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell("", "")
	_, err := h.do(envelope(wsman.ActionCommand, wsman.ResourceCmdShell, sh,
		`<w:OptionSet><w:Option Name="WINRS_SKIP_CMD_SHELL">TRUE</w:Option></w:OptionSet>`,
		`<rsp:CommandLine><rsp:Command>/nonexistent/program</rsp:Command></rsp:CommandLine>`, "", 0))
	f, ok := err.(*wsman.Fault)
	if !ok || f.Code != wsman.CodeFileNotFound {
		t.Fatalf("want 0x80070002 fault, got %v", err)
	}
}

func TestSignalCtrlCAndTerminate(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell("", "")
	cmd := h.run(sh, "exec sleep 100")
	time.Sleep(200 * time.Millisecond)
	sig := func(code string) {
		h.must(envelope(wsman.ActionSignal, wsman.ResourceCmdShell, sh, "",
			fmt.Sprintf(`<rsp:Signal CommandId="%s"><rsp:Code>%s</rsp:Code></rsp:Signal>`, cmd, code), "", 0))
	}
	sig("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/CTRL_C")
	r := h.collect(sh, cmd, 0)
	if r.code != "130" {
		t.Fatalf("ctrl_c: exit code %s, want 130", r.code)
	}
	sig("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate")
	// The command is gone now.
	_, err := h.do(envelope(wsman.ActionReceive, wsman.ResourceCmdShell, sh, "",
		fmt.Sprintf(`<rsp:Receive><rsp:DesiredStream CommandId="%s">stdout</rsp:DesiredStream></rsp:Receive>`, cmd), "", 0))
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeInvalidSelectors {
		t.Fatalf("receive after terminate: want InvalidSelectors, got %v", err)
	}
}

func TestUnknownShellAndCommand(t *testing.T) {
	h := newHarness(t, nil)
	_, err := h.do(envelope(wsman.ActionDelete, wsman.ResourceCmdShell, "11111111-2222-3333-4444-555555555555", "", "", "", 0))
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeInvalidSelectors {
		t.Fatalf("unknown shell: got %v", err)
	}
	sh := h.createShell("", "")
	_, err = h.do(envelope(wsman.ActionReceive, wsman.ResourceCmdShell, sh, "",
		`<rsp:Receive><rsp:DesiredStream CommandId="11111111-2222-3333-4444-555555555555">stdout</rsp:DesiredStream></rsp:Receive>`, "", 0))
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeInvalidSelectors {
		t.Fatalf("unknown command: got %v", err)
	}
}

func TestShellQuotaAndDelete(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Winrs.MaxShellsPerUser = 2 })
	a := h.createShell("", "")
	h.createShell("", "")
	_, err := h.do(envelope(wsman.ActionCreate, wsman.ResourceCmdShell, "", "", `<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>`, "", 0))
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeQuotaMaxShells {
		t.Fatalf("third shell: want QuotaMaxShells, got %v", err)
	}
	h.must(envelope(wsman.ActionDelete, wsman.ResourceCmdShell, a, "", "", "", 0))
	h.createShell("", "")
	if n := h.m.ShellCount(); n != 2 {
		t.Fatalf("%d shells, want 2", n)
	}
}

func TestIdleShellIsReaped(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell(`<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams><rsp:IdleTimeOut>PT0.3S</rsp:IdleTimeOut></rsp:Shell>`, "")
	h.run(sh, "exec sleep 100")
	deadline := time.Now().Add(5 * time.Second)
	for h.m.ShellCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle shell was not reaped")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEnumerateOwnShells(t *testing.T) {
	h := newHarness(t, nil)
	a := h.createShell("", "")
	b := h.createShell("", "")
	doc := h.must(envelope(wsman.ActionEnumerate, wsman.ResourceShell, "", "",
		`<n:Enumerate><w:OptimizeEnumeration/><w:MaxElements>32000</w:MaxElements></n:Enumerate>`, "", 0))
	var ids []string
	for _, e := range doc.FindElements("//Items/Shell/ShellId") {
		ids = append(ids, e.Text())
	}
	if len(ids) != 2 || !(contains(ids, a) && contains(ids, b)) {
		t.Fatalf("enumerated %v, want %s and %s", ids, a, b)
	}
	if doc.FindElement("//EndOfSequence") == nil {
		t.Fatal("no EndOfSequence")
	}
	// Non-optimized: a context, then Pull.
	doc = h.must(envelope(wsman.ActionEnumerate, wsman.ResourceShell, "", "", `<n:Enumerate/>`, "", 0))
	ctxID := doc.FindElement("//EnumerationContext").Text()
	doc = h.must(envelope(wsman.ActionPull, wsman.ResourceShell, "", "",
		`<n:Pull><n:EnumerationContext>`+ctxID+`</n:EnumerationContext><n:MaxElements>1</n:MaxElements></n:Pull>`, "", 0))
	if len(doc.FindElements("//Items/Shell")) != 1 || doc.FindElement("//EndOfSequence") != nil {
		t.Fatal("first Pull should return one shell and no EndOfSequence")
	}
	doc = h.must(envelope(wsman.ActionPull, wsman.ResourceShell, "", "",
		`<n:Pull><n:EnumerationContext>`+ctxID+`</n:EnumerationContext></n:Pull>`, "", 0))
	if len(doc.FindElements("//Items/Shell")) != 1 || doc.FindElement("//EndOfSequence") == nil {
		t.Fatal("second Pull should finish the sequence")
	}
	_, err := h.do(envelope(wsman.ActionPull, wsman.ResourceShell, "", "",
		`<n:Pull><n:EnumerationContext>`+ctxID+`</n:EnumerationContext></n:Pull>`, "", 0))
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeInvalidEnumerationContext {
		t.Fatalf("pull after end: got %v", err)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestConfigGet(t *testing.T) {
	h := newHarness(t, nil)
	doc := h.must(envelope(wsman.ActionGet, wsman.ResourceConfig, "", "", "", "", 0))
	if e := doc.FindElement("//Config/MaxEnvelopeSizekb"); e == nil || e.Text() != "500" {
		t.Fatalf("MaxEnvelopeSizekb missing or wrong")
	}
}

func TestConcurrentShells(t *testing.T) {
	h := newHarness(t, nil)
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sh := h.createShell("", "")
			cmd := h.run(sh, fmt.Sprintf("echo shell-%d", i))
			r := h.collect(sh, cmd, 0)
			if string(r.stdout) != fmt.Sprintf("shell-%d\n", i) {
				errs <- fmt.Sprintf("shell %d: %q", i, r.stdout)
			}
			h.must(envelope(wsman.ActionDelete, wsman.ResourceCmdShell, sh, "", "", "", 0))
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := h.m.ShellCount(); n != 0 {
		t.Fatalf("%d shells left", n)
	}
}

func TestOperationQuota(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxOperationsPerUser = 1 })
	sh := h.createShell("", "")
	cmd := h.run(sh, "exec sleep 100")
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.do(envelope(wsman.ActionReceive, wsman.ResourceCmdShell, sh, "",
			fmt.Sprintf(`<rsp:Receive><rsp:DesiredStream CommandId="%s">stdout</rsp:DesiredStream></rsp:Receive>`, cmd), "PT2S", 0))
	}()
	time.Sleep(300 * time.Millisecond)
	_, err := h.do(envelope(wsman.ActionGet, wsman.ResourceConfig, "", "", "", "", 0))
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeQuotaMaxOperations {
		t.Fatalf("want QuotaMaxOperations while a Receive is pending, got %v", err)
	}
	<-done
}

func TestInvalidIdentityRefused(t *testing.T) {
	h := newHarness(t, nil)
	env, _ := wsman.Parse([]byte(envelope(wsman.ActionGet, wsman.ResourceConfig, "", "", "", "", 0)), "", wsman.DefaultLimits())
	msg, _ := wsman.Decode(env)
	_, err := h.m.Handle(context.Background(), &Request{Msg: msg, Identity: &authn.Identity{}})
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeAccessDenied {
		t.Fatalf("zero Identity must be refused, got %v", err)
	}
}

func TestUnservedResourceURIs(t *testing.T) {
	h := newHarness(t, nil)
	body := `<rsp:Shell><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams></rsp:Shell>`
	for uri, mention := range map[string]string{
		"http://schemas.microsoft.com/powershell/NoSuchEndpoint": "",
		"http://example.com/not/a/shell":                         "",
	} {
		_, err := h.do(envelope(wsman.ActionCreate, uri, "", "", body, "", 0))
		f, ok := err.(*wsman.Fault)
		if !ok || f.Code != wsman.CodeInvalidResourceURI {
			t.Fatalf("%s: want DestinationUnreachable, got %v", uri, err)
		}
		if mention != "" && !strings.Contains(f.Message, mention) {
			t.Fatalf("%s: fault does not say why: %q", uri, f.Message)
		}
	}
	if h.m.ShellCount() != 0 {
		t.Fatal("a shell was created for an unserved resource")
	}
}
