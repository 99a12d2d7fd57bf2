package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/server"
)

// launchExtra, when set, are handed to the next launched daemon as
// descriptors 3, 4, ... (nil entries stay closed): what a careless wrapper
// leaves open (test/security_test.go).
var (
	launchExtraMu sync.Mutex
	launchExtra   []*os.File
)

func takeLaunchExtraFiles() []*os.File {
	launchExtraMu.Lock()
	defer launchExtraMu.Unlock()
	f := launchExtra
	launchExtra = nil
	return f
}

// Daemon is one running `winrmd serve`.
type Daemon struct {
	t       testing.TB
	Dir     string
	Config  *configs.Config
	cfgPath string
	cmd     *exec.Cmd
	PID     int
	HTTP    string // host:port of the HTTP listener ("" if none)
	HTTPS   string // host:port of the HTTPS listener ("" if none)
	Metrics string // host:port of the metrics listener
	Audit   string // audit log path
	Stderr  string // daemon log path

	done       chan struct{}
	waitErr    error
	stopped    bool
	expectExit bool // the test kills or crashes it on purpose
}

var (
	daemonsMu sync.Mutex
	daemons   = map[*Daemon]bool{}
	extraMu   sync.Mutex
	extraUID  []int
)

func daemonPIDs() map[int]bool {
	daemonsMu.Lock()
	defer daemonsMu.Unlock()
	m := map[int]bool{}
	for d := range daemons {
		m[d.PID] = true
	}
	return m
}

func extraUIDs() []int {
	extraMu.Lock()
	defer extraMu.Unlock()
	return append([]int(nil), extraUID...)
}

func addExtraUID(uid int) {
	extraMu.Lock()
	extraUID = append(extraUID, uid)
	extraMu.Unlock()
}

func stopAllDaemons() {
	daemonsMu.Lock()
	var ds []*Daemon
	for d := range daemons {
		ds = append(ds, d)
	}
	daemonsMu.Unlock()
	for _, d := range ds {
		d.stop()
	}
}

// baseConfig is what the tests run with unless they say otherwise: both
// listeners on 127.0.0.1:0, Basic and Negotiate (NTLM), no Kerberos, only the
// local store, an audit file, metrics on loopback.
func (w *world) baseConfig(dir string) *configs.Config {
	c := configs.Default()
	c.Listeners = []configs.Listener{
		{Transport: "http", Address: "127.0.0.1", Port: 0},
		{Transport: "https", Address: "127.0.0.1", Port: 0, CertFile: w.cert, KeyFile: w.key},
	}
	c.Service.AllowUnencrypted = false
	c.Service.Auth.Basic = true
	c.Service.Auth.Negotiate = true
	c.Service.Auth.Kerberos = false
	c.Service.Auth.CBTHardeningLevel = "relaxed"
	// A short refusal floor keeps the suite's many refused logons quick;
	// TestSecurityTimingOracle runs with a real one.
	c.Service.Auth.FailureDelayMS = 200
	c.Authorization.AllowedGroups = nil // the defaults: admin groups + winrm-remote-users
	c.Authorization.AllowRoot = false
	c.Accounts.PAMService = ""
	c.Accounts.StoreFile = w.store
	c.Logging.Level = "debug"
	c.Logging.Format = "json"
	c.Logging.AuditFile = filepath.Join(dir, "audit.log")
	c.Metrics.Address = "127.0.0.1:0"
	return c
}

// startDaemon starts a daemon with the base configuration changed by mutate,
// waits for its ready file and registers its teardown, which also checks that
// nothing of the test users is left running.
func startDaemon(t testing.TB, mutate func(*configs.Config)) *Daemon {
	t.Helper()
	return startDaemonWrapped(t, nil, mutate)
}

// startDaemonWrapped is startDaemon with the daemon started through wrap
// (an argv prefix that must exec the daemon, so its pid stays the one
// started: e.g. `unshare -m sh -c 'mount ... && exec "$@"' sh`, see
// test/addc and TestFaultAuditDiskFull).
func startDaemonWrapped(t testing.TB, wrap []string, mutate func(*configs.Config)) *Daemon {
	t.Helper()
	w := need(t)
	dir, err := os.MkdirTemp(w.work, "d-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	c := w.baseConfig(dir)
	if mutate != nil {
		mutate(c)
	}
	d, err := launchWrapped(t, dir, c, wrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Leftovers are checked while the daemon still runs (the test's
		// clients deleted their shells: nothing may remain), then again after
		// a graceful stop.
		if !d.stopped {
			checkNoLeftovers(t, "after the test, daemon running", 5*time.Second)
		}
		// Counted before the stop: with a wrapper the audit log may live
		// in the daemon's own mount namespace, which goes with it.
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
			t.Logf("audit log tail:\n%s", tail(d.Audit, 30))
		}
	})
	return d
}

func launchWrapped(t testing.TB, dir string, c *configs.Config, wrap []string) (*Daemon, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("test config invalid: %v", err)
	}
	y, err := configs.Marshal(c)
	if err != nil {
		return nil, err
	}
	d := &Daemon{t: t, Dir: dir, Config: c, cfgPath: filepath.Join(dir, "winrmd.yaml"),
		Audit: c.Logging.AuditFile, Stderr: filepath.Join(dir, "daemon.log"), done: make(chan struct{})}
	if err := os.WriteFile(d.cfgPath, y, 0o600); err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "ready.json")
	logf, err := os.Create(d.Stderr)
	if err != nil {
		return nil, err
	}
	argv := append(slices.Clone(wrap), w.bin, "serve", "--config", d.cfgPath, "--ready-file", ready)
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d.cmd.ExtraFiles = takeLaunchExtraFiles()
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
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

	deadline := time.Now().Add(30 * time.Second)
	for {
		if r, err := server.ReadReady(ready); err == nil {
			if err := d.adopt(r); err != nil {
				d.stop()
				return nil, err
			}
			return d, nil
		}
		select {
		case <-d.done:
			d.unregister()
			return nil, fmt.Errorf("winrmd serve exited before it was ready: %v\n%s", d.waitErr, tail(d.Stderr, 40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("winrmd serve not ready after 30s\n%s", tail(d.Stderr, 40))
		}
	}
}

// adopt takes the bound addresses from a ready file; the pid must be the
// process that was started (a wrapper must exec the daemon).
func (d *Daemon) adopt(r *server.Ready) error {
	d.HTTP, d.HTTPS, d.Metrics = r.Address("http"), r.Address("https"), r.Metrics
	if r.PID != 0 && r.PID != d.PID {
		return fmt.Errorf("ready file pid %d, started pid %d (the wrapper must exec the daemon)", r.PID, d.PID)
	}
	return nil
}

func (d *Daemon) unregister() {
	daemonsMu.Lock()
	delete(daemons, d)
	daemonsMu.Unlock()
}

// stop sends SIGTERM, waits up to 15 s for a graceful exit, then SIGKILLs.
func (d *Daemon) stop() {
	if d.stopped {
		return
	}
	d.stopped = true
	defer d.unregister()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return
	case <-time.After(15 * time.Second):
	}
	d.cmd.Process.Kill()
	<-d.done
	if d.waitErr == nil {
		d.waitErr = errors.New("did not exit within 15s of SIGTERM (killed)")
	} else {
		d.waitErr = fmt.Errorf("did not exit within 15s of SIGTERM (killed): %v", d.waitErr)
	}
}

// Alive tells whether the daemon process still runs.
func (d *Daemon) Alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// logProblems returns daemon log lines that no test should ever cause.
func (d *Daemon) logProblems() string {
	b, _ := os.ReadFile(d.Stderr)
	var bad []string
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(line, "WARNING: DATA RACE"),
			strings.HasPrefix(line, "panic:"),
			strings.HasPrefix(line, "fatal error:"):
			bad = append(bad, line)
		}
	}
	for _, u := range w.users() {
		if u != nil && u.Password != "" && strings.Contains(string(b), u.Password) {
			bad = append(bad, "a test user's password appears in the daemon log")
		}
	}
	return strings.Join(bad, "\n")
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkNoLeftovers polls until no process of a test user and no worker of
// ours remains, then fails the test (and kills them) if some still do.
func checkNoLeftovers(t testing.TB, when string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var left []proc
	for {
		left = ourProcs()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	recordStat("leftover_processes", int64(len(left)))
	var s []string
	for _, p := range left {
		s = append(s, "  "+p.String())
		syscall.Kill(p.PID, syscall.SIGKILL)
	}
	t.Errorf("%s: %d process(es) left behind:\n%s", when, len(left), strings.Join(s, "\n"))
}

// AuditEvent is one line of the audit log.
type AuditEvent struct {
	Event      string `json:"event"`
	User       string `json:"user"`
	RemoteAddr string `json:"remote_addr"`
	ShellID    string `json:"shell_id"`
	CommandID  string `json:"command_id"`
	Scheme     string `json:"scheme"`
	Principal  string `json:"principal"`
	Raw        string `json:"-"`
}

// AuditEvents reads the audit log (missing file: none).
func (d *Daemon) AuditEvents() []AuditEvent {
	f, err := os.Open(d.Audit)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e AuditEvent
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			e.Raw = sc.Text()
			out = append(out, e)
		}
	}
	return out
}

// AuditCount counts events of a kind, for one user if user != "".
func (d *Daemon) AuditCount(event, user string) int {
	n := 0
	for _, e := range d.AuditEvents() {
		if e.Event == event && (user == "" || auditUserIs(e.User, user)) {
			n++
		}
	}
	return n
}

// auditUserIs matches "name", "DOMAIN\name" and "name@REALM".
func auditUserIs(got, want string) bool {
	g := strings.ToLower(got)
	if i := strings.LastIndexByte(g, '\\'); i >= 0 {
		g = g[i+1:]
	}
	if i := strings.IndexByte(g, '@'); i >= 0 {
		g = g[:i]
	}
	return g == strings.ToLower(want)
}

// executions counts what "something ran" means: shells created, commands
// started, and worker processes alive.
type executions struct {
	shellCreates, commandStarts, workers int
}

func (d *Daemon) executions() executions {
	var e executions
	for _, ev := range d.AuditEvents() {
		switch ev.Event {
		case "shell_create":
			e.shellCreates++
		case "command_start":
			e.commandStarts++
		}
	}
	e.workers = len(workerProcs())
	return e
}

// waitAudit waits until the audit log has at least n events of a kind.
func (d *Daemon) waitAudit(event, user string, n int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for {
		if d.AuditCount(event, user) >= n {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)`)

// MetricsSnapshot fetches /metrics: series text (name{labels}) → value.
func (d *Daemon) MetricsSnapshot() (map[string]float64, error) {
	if d.Metrics == "" {
		return nil, errors.New("no metrics listener")
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + d.Metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("metrics: HTTP %d", resp.StatusCode)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if mm := metricLine.FindStringSubmatch(line); mm != nil {
			v, err := strconv.ParseFloat(mm[3], 64)
			if err == nil {
				m[mm[1]+mm[2]] = v
			}
		}
	}
	return m, nil
}

// Metric sums the series of name whose labels contain every given
// `key="value"` pair.
func Metric(m map[string]float64, name string, labels ...string) (float64, bool) {
	sum, found := 0.0, false
	for k, v := range m {
		n := k
		if i := strings.IndexByte(k, '{'); i >= 0 {
			n = k[:i]
		}
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(k, l) {
				ok = false
			}
		}
		if ok {
			sum += v
			found = true
		}
	}
	return sum, found
}

// cli runs the winrmd binary with args and stdin, returning combined output.
func cli(t testing.TB, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(w.bin, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// portOf returns the port of a host:port.
func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// signalAndWait sends sig to the daemon and waits for it to exit; it
// marks the daemon stopped so the harness's teardown does not signal it
// again. It reports whether it exited within the time given, and its exit
// error (nil: exit status 0).
func signalAndWait(d *Daemon, sig syscall.Signal, within time.Duration) (bool, error) {
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
