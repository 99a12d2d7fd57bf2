package e2e

import (
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// Conformance with Windows where real clients notice (issue 15): cmd's
// quote rule, exit codes with the last output, faults as the cmd shell
// plugin writes them, the Create echo and winrm/config for administrators
// only. Windows' texts below are the ones recorded from Windows hosts
// (and pypsrp's recorded responses).

// conformanceShell: a shell over one NTLM-sealed connection of w.admin.
func conformanceShell(t *testing.T, d *Daemon) (*ntlmConn, *winrsShell) {
	t.Helper()
	nc, r, err := dialNTLM(d.HTTP, false, w.admin.Name, w.admin.Password, ntlmOpts{})
	if err != nil || r.Status != 200 {
		t.Fatalf("NTLM logon: %v %s", err, r)
	}
	t.Cleanup(nc.Close)
	sh, err := createShell(nc)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { sh.delete() })
	return nc, sh
}

// commandLineXML is a Command with the elements exactly as given: Command
// and each Arguments element verbatim (escaped), options name=value.
func commandLineXML(shellID, command string, args []string, options ...string) string {
	var b strings.Builder
	b.WriteString(`<rsp:CommandLine><rsp:Command>` + xmlEscape(command) + `</rsp:Command>`)
	for _, a := range args {
		b.WriteString(`<rsp:Arguments>` + xmlEscape(a) + `</rsp:Arguments>`)
	}
	b.WriteString(`</rsp:CommandLine>`)
	if len(options) == 0 {
		options = []string{"WINRS_CONSOLEMODE_STDIN=TRUE", "WINRS_SKIP_CMD_SHELL=FALSE"}
	}
	return env(actCmd, uriCmd, shellID, b.String(), options...)
}

// firstReceive runs one command and returns its first answered Receive
// (timeouts skipped) and that response's facts.
type receiveFacts struct {
	stdout, stderr []byte
	done           bool
	exitCode       int
	hasExitCode    bool
}

func startCommand(t *testing.T, c soapClient, body string) string {
	t.Helper()
	root, err := okBody(c.Post(body))
	if err != nil {
		t.Fatalf("Command: %v", err)
	}
	n := root.first("CommandId")
	if n == nil {
		t.Fatal("CommandResponse without CommandId")
	}
	return strings.TrimSpace(n.Text)
}

func receiveOnce(t *testing.T, sh *winrsShell, cid string) receiveFacts {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		r, err := sh.c.Post(receiveXML(sh.ID, cid))
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		if r.Status != 200 {
			if f := r.fault(); f != nil && f.WSMan == codeTimedOut {
				continue
			}
			t.Fatalf("Receive: %s", r)
		}
		root, err := parseXML(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		var f receiveFacts
		for _, st := range root.all("Stream") {
			data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(st.Text))
			if err != nil {
				t.Fatalf("stream base64: %v", err)
			}
			if st.Attr["Name"] == "stderr" {
				f.stderr = append(f.stderr, data...)
			} else {
				f.stdout = append(f.stdout, data...)
			}
		}
		if cs := root.first("CommandState"); cs != nil && strings.HasSuffix(cs.Attr["State"], "/Done") {
			f.done = true
			if ec := cs.first("ExitCode"); ec != nil {
				f.exitCode, err = strconv.Atoi(strings.TrimSpace(ec.Text))
				f.hasExitCode = err == nil
			}
		}
		return f
	}
	t.Fatal("no Receive answered within 60 s")
	return receiveFacts{}
}

// The Ruby WinRM library (Vagrant, Test Kitchen, knife-windows, InSpec)
// quotes the whole Command and sends Arguments bare; cmd /c strips the
// first and last quote. Output and exit code come back as from Windows.
func TestRubyQuotedCommand(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	nc, sh := conformanceShell(t, d)
	cases := []struct {
		command string
		args    []string
		stdout  string
		exit    int
	}{
		{`"echo 'hello world'"`, nil, "hello world\n", 0},
		{`"echo 'hello world'"`, []string{"and", "more"}, "hello world and more\n", 0},
		{`"sh -c 'echo x; exit 3'"`, nil, "x\n", 3},
		{`"printf '%s|' "a b" c"`, nil, "a b|c|", 0},
		{`"no-such-command-wrmde2e"`, nil, "", 127},
		// Not quoted: untouched.
		{`echo "a  b"`, nil, "a  b\n", 0},
		// An empty command line exits 0, as cmd /c does.
		{`""`, nil, "", 0},
		{``, nil, "", 0},
	}
	for _, c := range cases {
		cid := startCommand(t, nc, commandLineXML(sh.ID, c.command, c.args))
		res, err := sh.receiveAll(cid, 60*time.Second)
		if err != nil {
			t.Fatalf("%q %q: %v", c.command, c.args, err)
		}
		if string(res.Stdout) != c.stdout || res.ExitCode != c.exit {
			t.Errorf("%q %q: stdout %q exit %d (stderr %q), want %q exit %d", c.command, c.args, res.Stdout, res.ExitCode, res.Stderr, c.stdout, c.exit)
		}
	}
	// WINRS_SKIP_CMD_SHELL: no cmd, so no quote rule (the quoted name is
	// one argv word that does not exist).
	r, err := nc.Post(commandLineXML(sh.ID, `"echo"`, []string{"x"}, "WINRS_SKIP_CMD_SHELL=TRUE"))
	if err != nil {
		t.Fatal(err)
	}
	if f := r.fault(); r.Status == 200 || f == nil || f.WSMan != 2147942402 {
		t.Errorf(`SKIP_CMD_SHELL with "echo": %s, want the file-not-found fault`, r)
	}
}

// Commands that write and exit at once answer their first Receive with the
// output, the End markers, Done and the ExitCode together, every time: the
// Ruby library reads ExitCode only from a response that carries stream data.
func TestShortCommandsOneResponse(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	nc, sh := conformanceShell(t, d)
	const n = 200
	split := 0
	for i := 0; i < n; i++ {
		line, wantOut, wantExit := "ls /", "", 0
		if i%2 == 1 {
			line, wantOut, wantExit = "sh -c 'echo x; exit 3'", "x\n", 3
		}
		cid := startCommand(t, nc, commandLineXML(sh.ID, line, nil))
		f := receiveOnce(t, sh, cid)
		if len(f.stdout) == 0 || !f.done || !f.hasExitCode || f.exitCode != wantExit || (wantOut != "" && string(f.stdout) != wantOut) {
			split++
			if split <= 5 {
				t.Errorf("command %d %q: first Receive had stdout %q done %v exit %d (has %v); want output, Done and exit %d together",
					i, line, clip(f.stdout, 80), f.done, f.exitCode, f.hasExitCode, wantExit)
			}
			if !f.done {
				if _, err := sh.receiveAll(cid, 30*time.Second); err != nil {
					t.Fatalf("command %d: %v", i, err)
				}
			}
		}
		nc.Post(signalXML(sh.ID, cid, sigTerm))
	}
	if split > 0 {
		t.Errorf("%d of %d short commands split their output from Done", split, n)
	}
	recordStat("short_commands_one_response", int64(n-split))
}

// A command that keeps writing still streams: its first output arrives
// while it runs.
func TestStreamingStillStreams(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	nc, sh := conformanceShell(t, d)
	cid := startCommand(t, nc, commandLineXML(sh.ID, "echo first; sleep 3; echo second", nil))
	f := receiveOnce(t, sh, cid)
	if string(f.stdout) != "first\n" || f.done {
		t.Fatalf("first Receive: stdout %q done %v; want \"first\\n\" while the command runs", f.stdout, f.done)
	}
	res, err := sh.receiveAll(cid, 30*time.Second)
	if err != nil || string(res.Stdout) != "second\n" || res.ExitCode != 0 {
		t.Fatalf("rest: %+v %v", res, err)
	}
}

// windowsFault is one fault as Windows' cmd shell plugin writes it.
type windowsFault struct {
	subcode, detail, reason, provider, path, message string
	code                                             int64
}

const (
	winrsProvider = "Shell cmd plugin"
	winrsPath     = `%systemroot%\system32\winrscmd.dll`
)

func checkWindowsFault(t *testing.T, what string, r *reply, want windowsFault) {
	t.Helper()
	if r.Status != 500 {
		t.Errorf("%s: HTTP %d, want 500", what, r.Status)
	}
	root, err := parseXML(r.Body)
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, r.Body)
	}
	got := windowsFault{}
	if sc := root.first("Subcode"); sc != nil {
		got.subcode = strings.TrimSpace(sc.first("Value").Text)
	}
	if fd := root.first("FaultDetail"); fd != nil {
		got.detail = fd.Text
	}
	if rs := root.first("Reason"); rs != nil {
		got.reason = rs.first("Text").Text
	}
	if wf := root.first("WSManFault"); wf != nil {
		got.code, _ = strconv.ParseInt(wf.Attr["Code"], 10, 64)
		if wf.Attr["Machine"] == "" {
			t.Errorf("%s: WSManFault without Machine", what)
		}
	}
	if pf := root.first("ProviderFault"); pf != nil {
		got.provider, got.path, got.message = pf.Attr["provider"], pf.Attr["path"], pf.Text
	} else if m := root.first("Message"); m != nil {
		got.message = m.Text
	}
	if got != want {
		t.Errorf("%s:\n got %+v\nwant %+v\n%s", what, got, want, r.Body)
	}
}

// The faults the cmd shell plugin raises, byte for byte as Windows writes
// their texts and provider details.
func TestWindowsFaults(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	nc, sh := conformanceShell(t, d)
	invalidParameter := windowsFault{subcode: "w:InvalidParameter", code: 87,
		detail: "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue",
		reason: "The parameter is incorrect. ", provider: winrsProvider, path: winrsPath, message: "The parameter is incorrect. "}

	// Receive and Signal without a CommandId on a cmd shell.
	r, _ := nc.Post(env(actRecv, uriCmd, sh.ID, `<rsp:Receive><rsp:DesiredStream>stdout stderr</rsp:DesiredStream></rsp:Receive>`))
	checkWindowsFault(t, "Receive without CommandId", r, invalidParameter)
	r, _ = nc.Post(env(actSignal, uriCmd, sh.ID, `<rsp:Signal><rsp:Code>`+sigTerm+`</rsp:Code></rsp:Signal>`))
	checkWindowsFault(t, "Signal without CommandId", r, invalidParameter)

	// A program that cannot be started.
	r, _ = nc.Post(commandLineXML(sh.ID, "/nonexistent/wrmde2e-program", nil, "WINRS_SKIP_CMD_SHELL=TRUE"))
	checkWindowsFault(t, "program not found", r, windowsFault{subcode: "w:InternalError", code: 2147942402,
		reason: "The system cannot find the file specified. ", provider: winrsProvider, path: winrsPath,
		message: "The system cannot find the file specified. "})

	// An unknown CommandId.
	unknown := strings.ToUpper(newUUID())
	r, _ = nc.Post(receiveXML(sh.ID, unknown))
	checkWindowsFault(t, "Receive of an unknown command", r, windowsFault{subcode: "w:InvalidSelectors", code: codeInvalidSelectors,
		detail: "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
		reason: "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. ",
		message: "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. " +
			"Either the command has completed execution or the client specified an invalid command identifier. "})

	// Our own detail stays in the daemon's log.
	log, _ := os.ReadFile(d.Stderr)
	if !strings.Contains(string(log), "wrmde2e-program") {
		t.Errorf("daemon log does not say which program failed to start")
	}
}

// Create echoes Environment and WorkingDirectory, as Windows does.
func TestCreateEchoesEnvironment(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	nc, r, err := dialNTLM(d.HTTP, false, w.admin.Name, w.admin.Password, ntlmOpts{})
	if err != nil || r.Status != 200 {
		t.Fatalf("NTLM logon: %v %s", err, r)
	}
	defer nc.Close()
	body := `<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams>` +
		`<rsp:WorkingDirectory>/tmp</rsp:WorkingDirectory><rsp:Environment><rsp:Variable Name="A1">one</rsp:Variable>` +
		`<rsp:Variable Name="B2">two &amp; &lt;three&gt;</rsp:Variable></rsp:Environment></rsp:Shell>`
	root, err := okBody(nc.Post(env(actCreate, uriCmd, "", body)))
	if err != nil {
		t.Fatal(err)
	}
	shell := root.first("Shell")
	if shell == nil {
		t.Fatal("CreateResponse without rsp:Shell")
	}
	var order []string
	for _, c := range shell.Children {
		order = append(order, c.Name.Local)
	}
	got := map[string]string{}
	for _, v := range shell.all("Variable") {
		got[v.Attr["Name"]] = v.Text
	}
	if got["A1"] != "one" || got["B2"] != "two & <three>" || len(got) != 2 {
		t.Errorf("echoed Environment %v, want A1=one B2=\"two & <three>\"", got)
	}
	if wd := shell.first("WorkingDirectory"); wd == nil || wd.Text != "/tmp" {
		t.Errorf("WorkingDirectory not echoed: %v", order)
	}
	// Windows' order: ... ClientIP, Environment, WorkingDirectory, IdleTimeOut ...
	want := []string{"ShellId", "ResourceUri", "Owner", "ClientIP", "Environment", "WorkingDirectory", "IdleTimeOut"}
	j := 0
	for _, n := range order {
		if j < len(want) && n == want[j] {
			j++
		}
	}
	if j != len(want) {
		t.Errorf("rsp:Shell children %v, want %v in that order", order, want)
	}
	if sel := root.all("Selector"); len(sel) > 0 {
		(&winrsShell{c: nc, ID: strings.TrimSpace(sel[0].Text)}).delete()
	}
}

// winrm/config: the whole tree Windows answers, with the daemon's values,
// to administrators; a member of winrm-remote-users alone gets Access
// Denied, as a Remote Management Users member does on Windows.
func TestGetConfigAdministratorsOnly(t *testing.T) {
	need(t)
	group := fmt.Sprintf("wrmde2eadm%d", os.Getpid()%100000)
	if out, err := exec.Command("groupadd", group).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v %s", group, err, out)
	}
	defer exec.Command("groupdel", group).Run()
	if out, err := exec.Command("gpasswd", "-a", w.admin2.Name, group).CombinedOutput(); err != nil {
		t.Fatalf("gpasswd: %v %s", err, out)
	}
	defer exec.Command("gpasswd", "-d", w.admin2.Name, group).Run()
	d := startDaemon(t, func(c *configs.Config) {
		c.Authorization.AllowedGroups = []string{group, configs.RemoteUsersGroup}
		c.Service.MaxTimeoutMS = 45000
		c.Winrs.MaxShellsPerUser = 17
	})
	get := env(actGet, "http://schemas.microsoft.com/wbem/wsman/1/config", "", "")

	admin := basicClient{addr: d.HTTPS, tls: true, user: w.admin2.Name, pass: w.admin2.Password}
	root, err := okBody(admin.Post(get))
	if err != nil {
		t.Fatalf("administrator Get winrm/config: %v", err)
	}
	cfg := root.first("Config")
	if cfg == nil {
		t.Fatal("no cfg:Config")
	}
	var top []string
	for _, c := range cfg.Children {
		top = append(top, c.Name.Local)
	}
	if strings.Join(top, ",") != "MaxEnvelopeSizekb,MaxTimeoutms,MaxBatchItems,MaxProviderRequests,Client,Service,Winrs" {
		t.Errorf("cfg:Config children %v", top)
	}
	want := map[string]string{
		"MaxEnvelopeSizekb": strconv.Itoa(d.Config.Service.MaxEnvelopeSizeKB),
		"MaxTimeoutms":      "45000",
		"MaxShellsPerUser":  "17",
		"HTTP":              "5985",
		"HTTPS":             "5986",
		"CbtHardeningLevel": "Relaxed",
	}
	for k, v := range want {
		if n := cfg.first(k); n == nil || n.Text != v {
			t.Errorf("cfg:%s = %v, want %q", k, n, v)
		}
	}
	svc := cfg.first("Service")
	if svc == nil || svc.first("Auth") == nil || svc.first("Auth").first("Basic").Text != "true" || svc.first("AllowUnencrypted").Text != "false" {
		t.Errorf("Service/Auth does not say what the daemon serves: %+v", svc)
	}

	// w.admin is in winrm-remote-users only.
	remote := basicClient{addr: d.HTTPS, tls: true, user: w.admin.Name, pass: w.admin.Password}
	r, err := remote.Post(get)
	if err != nil {
		t.Fatal(err)
	}
	if f := r.fault(); r.Status == 200 || !f.isAccessDenied() {
		t.Errorf("winrm-remote-users member reading winrm/config: %s, want Access Denied", r)
	}
	// ... and may still run shells.
	sh, err := createShell(remote)
	if err != nil {
		t.Fatalf("remote-users member cannot open a shell: %v", err)
	}
	sh.delete()
}
