package session

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beevik/etree"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/isolation/isolationtest"
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
	return newHarnessWith(t, isolation.SpawnerOptions{Lab: true, AllowRoot: true}, mut)
}

// newHarnessWith is newHarness with the spawner's options.
func newHarnessWith(t *testing.T, opts isolation.SpawnerOptions, mut func(*Config)) *harness {
	t.Helper()
	sp, err := isolation.NewSpawner(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() }) // after the Manager's Shutdown below
	lim := LimitsFor(configs.Default())
	lim.ReapInterval = 50 * time.Millisecond
	cfg := Config{Limits: lim, Winrs: configs.Default().Winrs, Spawner: sp}
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

// req is a typed request: the harness drives shells with plain structs
// (wsman.Message), no XML; the wire's own decoding is tested in wsman.
// Options are name=value pairs.
type req struct {
	action, resource, shellID string
	body                      any
	timeout                   time.Duration // OperationTimeout; default 20 s
	maxEnv                    int           // MaxEnvelopeSize; default 153600
	options                   []string
}

func (r req) msg() *wsman.Message {
	h := wsman.Header{Action: r.action, ResourceURI: r.resource, MessageID: "uuid:" + wsman.NewGUID(),
		MaxEnvelopeSize: r.maxEnv, OperationTimeout: r.timeout}
	if h.ResourceURI == "" {
		h.ResourceURI = wsman.ResourceCmdShell
	}
	if h.MaxEnvelopeSize == 0 {
		h.MaxEnvelopeSize = 153600
	}
	if h.OperationTimeout == 0 {
		h.OperationTimeout = 20 * time.Second
	}
	if r.shellID != "" {
		h.Selectors = map[string]string{"ShellId": r.shellID}
	}
	for _, o := range r.options {
		k, v, _ := strings.Cut(o, "=")
		if h.Options == nil {
			h.Options = map[string]wsman.Option{}
		}
		h.Options[strings.ToLower(k)] = wsman.Option{Value: v}
	}
	return &wsman.Message{Header: h, Body: r.body}
}

func (h *harness) do(r req) (*etree.Document, error) {
	h.t.Helper()
	out, err := h.m.Handle(context.Background(), &Request{Msg: r.msg(), Identity: h.id, RemoteAddr: "127.0.0.1", ListenerURL: "http://127.0.0.1:5985/wsman"})
	if err != nil {
		return nil, err
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(out); err != nil {
		h.t.Fatalf("response is not XML: %v\n%s", err, out)
	}
	return doc, nil
}

// cmdShell is the rsp:Shell of a plain cmd shell.
func cmdShell() *wsman.Shell {
	return &wsman.Shell{InputStreams: "stdin", OutputStreams: "stdout stderr"}
}

// receive is a Receive of the command's stdout and stderr.
func receive(shell, cmd string) req {
	return req{action: wsman.ActionReceive, shellID: shell, body: &wsman.Receive{CommandID: cmd, Streams: []string{"stdout", "stderr"}}}
}

func (h *harness) must(r req) *etree.Document {
	h.t.Helper()
	doc, err := h.do(r)
	if err != nil {
		h.t.Fatalf("unexpected fault: %v", err)
	}
	return doc
}

// createShell creates a shell from sh (nil: cmdShell) with options.
func (h *harness) createShell(sh *wsman.Shell, options ...string) string {
	h.t.Helper()
	if sh == nil {
		sh = cmdShell()
	}
	doc := h.must(req{action: wsman.ActionCreate, body: sh, options: options})
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
	doc := h.must(req{action: wsman.ActionCommand, shellID: shell, body: &wsman.CommandLine{Command: cmd, Arguments: args}})
	id := doc.FindElement("//CommandResponse/CommandId")
	if id == nil {
		h.t.Fatal("no CommandId")
	}
	return id.Text()
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
		r1 := receive(shell, cmd)
		r1.maxEnv = maxEnv
		doc, err := h.do(r1)
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
	sh := h.createShell(nil)
	cmd := h.run(sh, "echo", "out; echo err >&2; exit 3")
	r := h.collect(sh, cmd, 0)
	if string(r.stdout) != "out\n" || string(r.stderr) != "err\n" || r.code != "3" {
		t.Fatalf("got stdout %q stderr %q code %s", r.stdout, r.stderr, r.code)
	}
}

func TestLargeOutputSplitsWithinEnvelope(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell(nil)
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
	sh := h.createShell(nil)
	cmd := h.run(sh, "seq", "1 20000")
	r := h.collect(sh, cmd, 8192)
	if got := strings.Count(string(r.stdout), "\n"); got != 20000 {
		t.Fatalf("got %d lines", got)
	}
}

func TestReceiveTimesOutThenCompletes(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell(nil)
	cmd := h.run(sh, "sleep 2; echo done")
	r0 := receive(sh, cmd)
	r0.timeout = 500 * time.Millisecond
	start := time.Now()
	_, err := h.do(r0)
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
	sh := h.createShell(nil)
	cmd := h.run(sh, "tr", "a-z A-Z")
	h.must(req{action: wsman.ActionSend, shellID: sh, body: &wsman.Send{Streams: []wsman.StreamData{{Name: "stdin", CommandID: cmd, Data: []byte("hello winrm\n"), End: true}}}})
	r := h.collect(sh, cmd, 0)
	if string(r.stdout) != "HELLO WINRM\n" {
		t.Fatalf("got %q", r.stdout)
	}
}

func TestEnvironmentAndWorkingDirectory(t *testing.T) {
	h := newHarness(t, nil)
	dir := t.TempDir()
	shell := cmdShell()
	shell.WorkingDirectory, shell.Environment = dir, []wsman.EnvVar{{Name: "WINRMD_T", Value: "v & w"}}
	sh := h.createShell(shell)
	cmd := h.run(sh, `printf '%s|%s' "$WINRMD_T" "$(pwd)"`)
	r := h.collect(sh, cmd, 0)
	if string(r.stdout) != "v & w|"+dir {
		t.Fatalf("got %q", r.stdout)
	}
}

func TestSkipCmdShellRunsArgvDirectly(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell(nil)
	doc := h.must(req{action: wsman.ActionCommand, shellID: sh, options: []string{"WINRS_SKIP_CMD_SHELL=TRUE"},
		body: &wsman.CommandLine{Command: "printf", Arguments: []string{"%s;", "$HOME"}}})
	cmd := doc.FindElement("//CommandId").Text()
	r := h.collect(sh, cmd, 0)
	if string(r.stdout) != "$HOME;" { // no shell: no expansion
		t.Fatalf("got %q", r.stdout)
	}
}

func TestStartFailureFault(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell(nil)
	_, err := h.do(req{action: wsman.ActionCommand, shellID: sh, options: []string{"WINRS_SKIP_CMD_SHELL=TRUE"},
		body: &wsman.CommandLine{Command: "/nonexistent/program"}})
	f, ok := err.(*wsman.Fault)
	if !ok || f.Code != wsman.CodeFileNotFound {
		t.Fatalf("want 0x80070002 fault, got %v", err)
	}
}

func TestSignalCtrlCAndTerminate(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell(nil)
	cmd := h.run(sh, "exec sleep 100")
	time.Sleep(200 * time.Millisecond)
	sig := func(code string) {
		h.must(req{action: wsman.ActionSignal, shellID: sh, body: &wsman.Signal{CommandID: cmd, Code: code}})
	}
	sig("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/CTRL_C")
	r := h.collect(sh, cmd, 0)
	if r.code != "130" {
		t.Fatalf("ctrl_c: exit code %s, want 130", r.code)
	}
	sig("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate")
	// The command is gone now.
	_, err := h.do(req{action: wsman.ActionReceive, shellID: sh, body: &wsman.Receive{CommandID: cmd, Streams: []string{"stdout"}}})
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeInvalidSelectors {
		t.Fatalf("receive after terminate: want InvalidSelectors, got %v", err)
	}
}

func TestUnknownShellAndCommand(t *testing.T) {
	h := newHarness(t, nil)
	_, err := h.do(req{action: wsman.ActionDelete, shellID: "11111111-2222-3333-4444-555555555555"})
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeInvalidSelectors {
		t.Fatalf("unknown shell: got %v", err)
	}
	sh := h.createShell(nil)
	_, err = h.do(req{action: wsman.ActionReceive, shellID: sh, body: &wsman.Receive{CommandID: "11111111-2222-3333-4444-555555555555", Streams: []string{"stdout"}}})
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeInvalidSelectors {
		t.Fatalf("unknown command: got %v", err)
	}
}

func TestShellQuotaAndDelete(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Limits.MaxShellsPerUser = 2 })
	a := h.createShell(nil)
	h.createShell(nil)
	_, err := h.do(req{action: wsman.ActionCreate, body: cmdShell()})
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeQuotaMaxShells {
		t.Fatalf("third shell: want QuotaMaxShells, got %v", err)
	}
	h.must(req{action: wsman.ActionDelete, shellID: a})
	h.createShell(nil)
	if n := h.m.ShellCount(); n != 2 {
		t.Fatalf("%d shells, want 2", n)
	}
}

func TestIdleShellIsReaped(t *testing.T) {
	h := newHarness(t, nil)
	shell := cmdShell()
	shell.IdleTimeout = 300 * time.Millisecond
	sh := h.createShell(shell)
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
	a := h.createShell(nil)
	b := h.createShell(nil)
	doc := h.must(req{action: wsman.ActionEnumerate, resource: wsman.ResourceShell, body: &wsman.Enumerate{Optimize: true}})
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
	doc = h.must(req{action: wsman.ActionEnumerate, resource: wsman.ResourceShell, body: &wsman.Enumerate{}})
	ctxID := doc.FindElement("//EnumerationContext").Text()
	doc = h.must(req{action: wsman.ActionPull, resource: wsman.ResourceShell, body: &wsman.Pull{Context: ctxID, HasContext: true, MaxElements: 1}})
	if len(doc.FindElements("//Items/Shell")) != 1 || doc.FindElement("//EndOfSequence") != nil {
		t.Fatal("first Pull should return one shell and no EndOfSequence")
	}
	doc = h.must(req{action: wsman.ActionPull, resource: wsman.ResourceShell, body: &wsman.Pull{Context: ctxID, HasContext: true}})
	if len(doc.FindElements("//Items/Shell")) != 1 || doc.FindElement("//EndOfSequence") == nil {
		t.Fatal("second Pull should finish the sequence")
	}
	_, err := h.do(req{action: wsman.ActionPull, resource: wsman.ResourceShell, body: &wsman.Pull{Context: ctxID, HasContext: true}})
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
	doc := h.must(req{action: wsman.ActionGet, resource: wsman.ResourceConfig})
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
			sh := h.createShell(nil)
			cmd := h.run(sh, fmt.Sprintf("echo shell-%d", i))
			r := h.collect(sh, cmd, 0)
			if string(r.stdout) != fmt.Sprintf("shell-%d\n", i) {
				errs <- fmt.Sprintf("shell %d: %q", i, r.stdout)
			}
			h.must(req{action: wsman.ActionDelete, shellID: sh})
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
	h := newHarness(t, func(c *Config) { c.Limits.MaxOperationsPerUser = 1 })
	sh := h.createShell(nil)
	cmd := h.run(sh, "exec sleep 100")
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.do(req{action: wsman.ActionReceive, shellID: sh, timeout: 2 * time.Second, body: &wsman.Receive{CommandID: cmd, Streams: []string{"stdout"}}})
	}()
	time.Sleep(300 * time.Millisecond)
	_, err := h.do(req{action: wsman.ActionGet, resource: wsman.ResourceConfig})
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeQuotaMaxOperations {
		t.Fatalf("want QuotaMaxOperations while a Receive is pending, got %v", err)
	}
	<-done
}

func TestInvalidIdentityRefused(t *testing.T) {
	h := newHarness(t, nil)
	_, err := h.m.Handle(context.Background(), &Request{Msg: req{action: wsman.ActionGet, resource: wsman.ResourceConfig}.msg(), Identity: &authn.Identity{}})
	if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeAccessDenied {
		t.Fatalf("zero Identity must be refused, got %v", err)
	}
}

func TestUnservedResourceURIs(t *testing.T) {
	h := newHarness(t, nil)
	body := &wsman.Shell{InputStreams: "stdin pr", OutputStreams: "stdout"}
	for uri, mention := range map[string]string{
		"http://schemas.microsoft.com/powershell/NoSuchEndpoint": "",
		"http://example.com/not/a/shell":                         "",
	} {
		_, err := h.do(req{action: wsman.ActionCreate, resource: uri, body: body})
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

// MaxProcessesPerShell also caps the shell's processes in the kernel
// (pids.max), children included. A command's fork the session's count
// allowed but the kernel refused is the quota fault, not Windows'
// file-not-found.
func TestKernelProcessLimitFault(t *testing.T) {
	v2, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if _, v1 := os.Stat("/sys/fs/cgroup/pids/cgroup.procs"); !strings.Contains(string(v2), "pids") && v1 != nil {
		t.Skip("no pids cgroup controller (v2 or v1) on this machine")
	}
	h := newHarnessWith(t, isolation.SpawnerOptions{Lab: true, AllowRoot: true},
		func(c *Config) { c.Limits.MaxProcessesPerShell = 4 })
	sh := h.createShell(nil)
	// One command keeps every slot of the kernel's limit taken: a fork the
	// limit refuses is tried again, so a slot the limit gains (the worker's
	// threads are recounted before each Start, and the worker may have
	// made one since) is taken again within milliseconds. The session's
	// count is 1 meanwhile.
	both := h.run(sh, isolationtest.ProcessFiller)
	// Each probe either meets the full limit, which must answer the quota
	// fault, or found a slot the filler had not retaken yet; then it ends,
	// and the next one tries again.
	var fault error
	for i := 0; i < 50 && fault == nil; i++ {
		time.Sleep(50 * time.Millisecond)
		doc, err := h.do(req{action: wsman.ActionCommand, shellID: sh, body: &wsman.CommandLine{Command: "true"}})
		if err != nil {
			fault = err
			break
		}
		h.collect(sh, doc.FindElement("//CommandResponse/CommandId").Text(), 0)
	}
	if f, ok := fault.(*wsman.Fault); !ok || f.Code != wsman.CodeQuotaLimit {
		t.Fatalf("a command past the kernel's limit: want the quota fault, got %v", fault)
	}
	// Terminating the filler, its children with it, frees the slots.
	h.must(req{action: wsman.ActionSignal, shellID: sh, body: &wsman.Signal{CommandID: both, Code: wsman.SignalTerminate}})
	var last error
	ok := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !ok; time.Sleep(50 * time.Millisecond) {
		var doc *etree.Document
		if doc, last = h.do(req{action: wsman.ActionCommand, shellID: sh, body: &wsman.CommandLine{Command: "exit 7"}}); last == nil {
			if r := h.collect(sh, doc.FindElement("//CommandResponse/CommandId").Text(), 0); r.code != "7" {
				t.Fatalf("after terminate: exit code %s, want 7", r.code)
			}
			ok = true
		}
	}
	if !ok {
		t.Fatalf("no command started after terminate: %v", last)
	}
}

// MaxProcessesPerShell counts the commands still running: exited and
// terminated ones free their place, a refused start takes none, and a
// shell that runs command after command forgets finished ones beyond
// MaxRetainedCommands but never a running one.
//
// This is the session's count, so the shell runs without cgroups; the
// kernel's limit the same setting puts on the shell's processes has its own
// tests (TestKernelProcessLimitFault below; isolation's TestProcessLimit).
func TestRunningCommandsAndRetention(t *testing.T) {
	h := newHarnessWith(t, isolation.SpawnerOptions{Lab: true, AllowRoot: true, CgroupRoot: "off"},
		func(c *Config) { c.Limits.MaxProcessesPerShell, c.Limits.MaxRetainedCommands = 2, 8 })
	sh := h.createShell(nil)
	quota := func() error {
		_, err := h.do(req{action: wsman.ActionCommand, shellID: sh, body: &wsman.CommandLine{Command: "true"}})
		return err
	}
	long := h.run(sh, "exec sleep 100")
	// A start that fails takes no place.
	for i := 0; i < 3; i++ {
		_, err := h.do(req{action: wsman.ActionCommand, shellID: sh, options: []string{"WINRS_SKIP_CMD_SHELL=TRUE"},
			body: &wsman.CommandLine{Command: "/nonexistent/program"}})
		if f, ok := err.(*wsman.Fault); !ok || f.Code != wsman.CodeFileNotFound {
			t.Fatalf("start failure %d: %v", i, err)
		}
	}
	second := h.run(sh, "exec sleep 100")
	if f, ok := quota().(*wsman.Fault); !ok || f.Code != wsman.CodeQuotaLimit {
		t.Fatalf("a third running command: want the quota fault, got %v", f)
	}
	// Its exit frees its place. (Terminate frees it in the count at once;
	// with a pids cgroup, though, the killed process keeps its pid until
	// it is gone, so a test of the count waits for the exit.)
	h.must(req{action: wsman.ActionSignal, shellID: sh, body: &wsman.Signal{CommandID: second, Code: wsman.SignalCtrlC}})
	if r := h.collect(sh, second, 0); r.code != "130" {
		t.Fatalf("second command after ctrl_c: exit code %s, want 130", r.code)
	}
	h.must(req{action: wsman.ActionSignal, shellID: sh, body: &wsman.Signal{CommandID: second, Code: wsman.SignalTerminate}})
	// Twenty commands that finish, one after another, next to the
	// running one: each is delivered, none is refused.
	for i := 0; i < 20; i++ {
		id := h.run(sh, "exit", strconv.Itoa(i))
		if r := h.collect(sh, id, 0); r.code != strconv.Itoa(i) {
			t.Fatalf("command %d: exit code %s", i, r.code)
		}
	}
	h.m.mu.Lock()
	s := h.m.shells[strings.ToUpper(sh)]
	h.m.mu.Unlock()
	s.mu.Lock()
	retained, kept := len(s.commands), s.commands[long]
	s.mu.Unlock()
	if retained > 8 || kept == nil {
		t.Fatalf("%d commands retained (limit 8), the running one kept: %v", retained, kept != nil)
	}
	if n := s.running.Load(); n != 1 {
		t.Fatalf("%d commands counted as running, want 1", n)
	}
	// The running one still answers.
	h.must(req{action: wsman.ActionSignal, shellID: sh, body: &wsman.Signal{CommandID: long, Code: wsman.SignalCtrlC}})
	if r := h.collect(sh, long, 0); r.code != "130" {
		t.Fatalf("the long command after ctrl_c: exit code %s, want 130", r.code)
	}
	if n := s.running.Load(); n != 0 {
		t.Fatalf("%d commands counted as running after the last exit, want 0", n)
	}
}
