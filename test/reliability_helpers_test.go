package e2e

// Helpers shared by the reliability tests (issue 4 §3-5): fault_test.go,
// load_test.go, soak_test.go and privilege_test.go. Every name here starts
// with "rel" so it cannot collide with the harness's helpers.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/server"
)

// ---------------------------------------------------------------- figures

// relStat records one figure for the summary at the end of `make test`.
// Metric names used by the reliability tests:
//
//	faults_injected, faults_survived      per fault test
//	requests_held                         requests (shells, Receives, connections) held open at once
//	load_clients, load_errors             load and soak (clients run, requests that failed)
//	load_shells, load_commands            load and soak (the harness also counts every
//	                                      daemon's audited shells and commands)
//	bytes_verified                        output and stdin bytes compared byte-exact or by sha256
//	rss_before_kb, rss_after_kb           daemon RSS from /proc around a load or soak run
//	goroutines_before, goroutines_after   daemon go_goroutines around a load or soak run
//	privilege_checks, privilege_refused   privilege checks made / refusals observed
func relStat(t testing.TB, metric string, n int64) { recordStatFor(t.Name(), metric, n) }

// ---------------------------------------------------------------- users and groups

// relGroup creates a Linux group (name must start with the test prefix) and
// removes it when the test ends. Create groups before the users in them:
// cleanups run last-in first-out, so the users go first.
func relGroup(t testing.TB, name string) string {
	t.Helper()
	if !strings.HasPrefix(name, userPrefix) {
		t.Fatalf("test group %q lacks the %s prefix", name, userPrefix)
	}
	if out, err := exec.Command("groupadd", name).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("groupdel", name).CombinedOutput(); err != nil && groupExists(name) {
			t.Errorf("groupdel %s: %v: %s", name, err, out)
		}
	})
	return name
}

// relUsers creates n users named userPrefix+tag+<random>+<i>, members of the
// administrators' group when admin, plus extra groups. They count for the
// leftover-process checks and are removed (with their processes) when the
// test ends.
func relUsers(t testing.TB, tag string, n int, admin bool, extra ...string) []*testUser {
	t.Helper()
	need(t)
	suffix := randHex(2)
	var out []*testUser
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s%s%s%d", userPrefix, tag, suffix, i)
		u, err := createUser(name, admin)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			killUserProcesses(u.Name, 5*time.Second)
			if err := deleteUser(u.Name); err != nil {
				t.Errorf("removing test user: %v", err)
			}
			relForgetUID(u.UID)
		})
		addExtraUID(u.UID)
		if len(extra) > 0 {
			if o, err := exec.Command("usermod", "-a", "-G", strings.Join(extra, ","), name).CombinedOutput(); err != nil {
				t.Fatalf("usermod -aG %v %s: %v: %s", extra, name, err, o)
			}
		}
		out = append(out, u)
	}
	return out
}

// relForgetUID drops a deleted user's uid from the leftover checks:
// useradd hands uids out again, and a later check must not take (and kill)
// the processes of whoever gets the uid next — another test's user, or
// another run's on a shared machine.
func relForgetUID(uid int) {
	extraMu.Lock()
	defer extraMu.Unlock()
	for i, u := range extraUID {
		if u == uid {
			extraUID = append(extraUID[:i], extraUID[i+1:]...)
			return
		}
	}
}

// relStore writes an account store holding users (and any name:password
// pairs in more) and returns its path.
func relStore(t testing.TB, dir string, users []*testUser, more ...[2]string) string {
	t.Helper()
	wd := need(t)
	p := filepath.Join(dir, "accounts-"+randHex(3))
	type job struct{ name, pass string }
	var jobs []job
	for _, u := range users {
		jobs = append(jobs, job{u.Name, u.Password})
	}
	for _, m := range more {
		jobs = append(jobs, job{m[0], m[1]})
	}
	// One writer at a time: the CLI rewrites the whole file.
	for _, j := range jobs {
		if err := wd.storeAdd(p, j.name, j.pass); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// relDir makes a directory for one test under the shared work directory.
func relDir(t testing.TB) string {
	t.Helper()
	wd := need(t)
	d, err := os.MkdirTemp(wd.work, "rel-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o755)
	return d
}

// ---------------------------------------------------------------- /proc

// relStatus returns /proc/PID/status as key → value.
func relStatus(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}

// relRSSKB is VmRSS of pid in KiB (0 if unreadable).
func relRSSKB(pid int) int64 {
	st, err := relStatus(pid)
	if err != nil {
		return 0
	}
	f := strings.Fields(st["VmRSS"])
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return n
}

// relFDs counts /proc/PID/fd.
func relFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// relWorkerPID finds the worker of a shell through the audit log's
// shell_create event (field worker_pid).
func relWorkerPID(d *Daemon, shellID string, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		for _, e := range d.AuditEvents() {
			if e.Event == "shell_create" && strings.EqualFold(e.ShellID, shellID) {
				var m map[string]any
				if json.Unmarshal([]byte(e.Raw), &m) == nil {
					if v, ok := m["worker_pid"].(float64); ok {
						return int(v)
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// relProcsOf lists the processes of a uid, as text for error messages.
func relProcsOf(uids ...int) []proc {
	want := map[int]bool{}
	for _, u := range uids {
		want[u] = true
	}
	var out []proc
	for _, p := range listProcs() {
		if want[p.UID] {
			out = append(out, p)
		}
	}
	return out
}

func relProcList(ps []proc) string {
	var s []string
	for _, p := range ps {
		s = append(s, "  "+p.String())
	}
	return strings.Join(s, "\n")
}

func relWait(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// relLogHas tells whether the daemon log contains s (case-insensitive).
func relLogHas(d *Daemon, s string) bool {
	b, _ := os.ReadFile(d.Stderr)
	return bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(s)))
}

// ---------------------------------------------------------------- clients

// relBasic is HTTPS (or HTTP) Basic over one keep-alive connection, as real
// clients send it: the password is verified once per connection, not per
// request. A reply that closes the connection makes the next request dial a
// new one; a request is never retried.
type relBasic struct {
	addr       string
	tls        bool
	user, pass string
	src        string
	mu         sync.Mutex
	rc         *rawConn
}

// relAlive tells whether a kept-alive connection is still open: the server
// closes idle keep-alive connections (service.idle_connection_timeout_ms),
// and a client must then dial again rather than write into a closed one, as
// HTTP client libraries do. A peer that closed has sent its FIN: a read
// returns at once.
func relAlive(rc *rawConn) bool {
	rc.c.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := rc.br.Peek(1)
	rc.c.SetReadDeadline(time.Time{})
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}

func (b *relBasic) Post(soap string) (*reply, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rc != nil && !relAlive(b.rc) {
		b.rc.Close()
		b.rc = nil
	}
	if b.rc == nil {
		rc, err := dialRawFrom(b.src, b.addr, b.tls)
		if err != nil {
			return nil, err
		}
		b.rc = rc
	}
	r, err := b.rc.request("POST", "/wsman", map[string]string{"Authorization": basicAuth(b.user, b.pass)}, []byte(soap), 90*time.Second)
	if err != nil || r.Closed || strings.EqualFold(r.Header.Get("Connection"), "close") {
		b.rc.Close()
		b.rc = nil
	}
	if err == nil && r.Closed {
		return r, errors.New("connection closed without an answer")
	}
	return r, err
}

func (b *relBasic) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rc != nil {
		b.rc.Close()
		b.rc = nil
	}
}

// relNTLM dials an NTLM-authenticated, sealed HTTP connection.
func relNTLM(addr, user, pass string) (*ntlmConn, error) {
	nc, r, err := dialNTLM(addr, false, user, pass, ntlmOpts{})
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, err
	}
	if r.Status != 200 {
		nc.Close()
		return nil, fmt.Errorf("NTLM handshake: %s", r)
	}
	return nc, nil
}

// relNTLMKeep is an NTLM-sealed HTTP client that authenticates a new
// connection when the server has closed the idle one (shells belong to the
// identity, not the connection).
type relNTLMKeep struct {
	addr, user, pass string
	mu               sync.Mutex
	nc               *ntlmConn
}

func (k *relNTLMKeep) Post(soap string) (*reply, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.nc != nil && !relAlive(k.nc.rc) {
		k.nc.Close()
		k.nc = nil
	}
	if k.nc == nil {
		nc, err := relNTLM(k.addr, k.user, k.pass)
		if err != nil {
			return nil, err
		}
		k.nc = nc
	}
	r, err := k.nc.Post(soap)
	if err != nil || r.Closed {
		k.nc.Close()
		k.nc = nil
		if err == nil {
			err = errors.New("connection closed without an answer")
		}
	}
	return r, err
}

func (k *relNTLMKeep) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.nc != nil {
		k.nc.Close()
		k.nc = nil
	}
}

// relLatency collects Receive round-trip times.
type relLatency struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *relLatency) add(d time.Duration) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// take returns and resets the samples.
func (l *relLatency) take() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.d
	l.d = nil
	return d
}

func relPercentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	p := func(q float64) time.Duration { return s[int(q*float64(len(s)-1))] }
	r := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s", len(s), r(p(0.5)), r(p(0.9)), r(p(0.99)), r(s[len(s)-1]))
}

// relShellCreate creates a cmd shell with an optional Environment and
// WorkingDirectory.
func relShellCreate(c soapClient, envVars map[string]string, dir string) (*winrsShell, error) {
	var b strings.Builder
	b.WriteString(`<rsp:Shell>`)
	if len(envVars) > 0 {
		b.WriteString(`<rsp:Environment>`)
		keys := make([]string, 0, len(envVars))
		for k := range envVars {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString(`<rsp:Variable Name="` + xmlEscape(k) + `">` + xmlEscape(envVars[k]) + `</rsp:Variable>`)
		}
		b.WriteString(`</rsp:Environment>`)
	}
	if dir != "" {
		b.WriteString(`<rsp:WorkingDirectory>` + xmlEscape(dir) + `</rsp:WorkingDirectory>`)
	}
	b.WriteString(`<rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>`)
	root, err := okBody(c.Post(env(actCreate, uriCmd, "", b.String(), "WINRS_NOPROFILE=FALSE", "WINRS_CODEPAGE=65001")))
	if err != nil {
		return nil, err
	}
	for _, sel := range root.all("Selector") {
		if sel.Attr["Name"] == "ShellId" {
			return &winrsShell{c: c, ID: strings.TrimSpace(sel.Text)}, nil
		}
	}
	return nil, errors.New("CreateResponse without ShellId")
}

// relSend sends stdin in chunks, the last with End=true.
func relSend(sh *winrsShell, cmdID string, data []byte, chunk int) error {
	if chunk <= 0 {
		chunk = 32 << 10
	}
	for off := 0; ; off += chunk {
		end := off + chunk
		if end > len(data) {
			end = len(data)
		}
		last := end == len(data)
		if _, err := okBody(sh.c.Post(sendXML(sh.ID, cmdID, data[off:end], last))); err != nil {
			return fmt.Errorf("Send: %w", err)
		}
		if last {
			return nil
		}
	}
}

// relReceiveAll is receiveAll that also times every Receive round trip.
func relReceiveAll(sh *winrsShell, cmdID string, timeout time.Duration, lat *relLatency) (*result, error) {
	return sh.receiveAllObserved(cmdID, timeout, lat.add)
}

// relRun runs one command in sh with optional stdin and returns its output.
func relRun(sh *winrsShell, cmd string, stdin []byte, lat *relLatency) (*result, error) {
	id, err := sh.command(cmd)
	if err != nil {
		return nil, fmt.Errorf("Command: %w", err)
	}
	if stdin != nil {
		if err := relSend(sh, id, stdin, 0); err != nil {
			return nil, err
		}
	}
	return relReceiveAll(sh, id, 3*time.Minute, lat)
}

// ---------------------------------------------------------------- daemons

// relStartDaemonWrapped starts `winrmd serve` through a wrapper command line
// that ends by exec'ing its arguments (so the daemon keeps the wrapper's
// pid), e.g. `unshare -m sh -c 'mount ... && exec "$@"' sh`. Otherwise it is
// startDaemon: same base config, ready file, registration and teardown.
func relStartDaemonWrapped(t testing.TB, wrap []string, mutate func(*configs.Config)) *Daemon {
	t.Helper()
	wd := need(t)
	dir, err := os.MkdirTemp(wd.work, "d-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	c := wd.baseConfig(dir)
	if mutate != nil {
		mutate(c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	y, err := configs.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{t: t, Dir: dir, Config: c, cfgPath: filepath.Join(dir, "winrmd.yaml"),
		Audit: c.Logging.AuditFile, Stderr: filepath.Join(dir, "daemon.log"), done: make(chan struct{})}
	if err := os.WriteFile(d.cfgPath, y, 0o600); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(dir, "ready.json")
	logf, err := os.Create(d.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string(nil), wrap[1:]...), wd.bin, "serve", "--config", d.cfgPath, "--ready-file", ready)
	d.cmd = exec.Command(wrap[0], args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	d.PID = d.cmd.Process.Pid
	recordStat("daemons_started", 1)
	daemonsMu.Lock()
	daemons[d] = true
	daemonsMu.Unlock()
	go func() {
		d.waitErr = d.cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		if !d.stopped {
			checkNoLeftovers(t, "after the test, daemon running", 5*time.Second)
		}
		// The audit log lives in the daemon's mount namespace: count it
		// before the daemon (and the namespace) go.
		ex := d.executions()
		d.stop()
		if d.waitErr != nil && !d.expectExit {
			t.Errorf("daemon exited badly after SIGTERM: %v", d.waitErr)
		} else {
			recordStat("daemons_clean_stop", 1)
		}
		recordStat("shells", int64(ex.shellCreates))
		recordStat("commands", int64(ex.commandStarts))
		checkNoLeftovers(t, "after daemon stop", 5*time.Second)
		if bad := d.logProblems(); bad != "" {
			t.Errorf("daemon log:\n%s", bad)
		}
		if t.Failed() {
			t.Logf("daemon log tail (%s):\n%s", d.Stderr, tail(d.Stderr, 60))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r, err := server.ReadReady(ready); err == nil {
			if err := d.adopt(r); err != nil {
				t.Fatal(err)
			}
			return d
		}
		select {
		case <-d.done:
			d.stopped = true
			d.unregister()
			t.Fatalf("winrmd serve exited before it was ready: %v\n%s", d.waitErr, tail(d.Stderr, 40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("winrmd serve not ready after 30s\n%s", tail(d.Stderr, 40))
		}
	}
}

// relPort returns the port of a host:port.
func relPort(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// relSignalAndWait sends sig to the daemon and waits for it to exit; it
// marks the daemon stopped so the harness's teardown does not signal it
// again. It reports whether it exited within the time given, and its exit
// error (nil: exit status 0).
func relSignalAndWait(d *Daemon, sig syscall.Signal, within time.Duration) (bool, error) {
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
		d.stopped = true
		d.unregister()
		return true, d.waitErr
	case <-time.After(within):
		return false, nil
	}
}
