package main

// The environment: the bench user, winrmd and a private sshd, and cleanup
// that leaves nothing behind.

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
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
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/winrmd/winrmd/authn/kerberos/krbtest"
	"github.com/winrmd/winrmd/server"
)

const (
	benchUser  = "wrmdbench"
	benchGroup = "winrm-remote-users"
	benchUID   = 59990
)

// cleanups run in reverse order, once, on exit, error or signal.
type cleanups struct {
	mu    sync.Mutex
	fns   []func()
	runMu sync.Mutex // held for a whole run: a signal during the deferred run waits for it
}

func (c *cleanups) add(f func()) {
	c.mu.Lock()
	c.fns = append(c.fns, f)
	c.mu.Unlock()
}

func (c *cleanups) run() {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	c.mu.Lock()
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// userProcs lists the pids owned by uid.
func userProcs(uid int) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name(), &st) == nil && int(st.Uid) == uid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeBenchUser kills what the bench user still runs, by pid, and removes
// the account and its home.
func removeBenchUser() {
	u, err := user.Lookup(benchUser)
	if err != nil {
		return
	}
	uid, _ := strconv.Atoi(u.Uid)
	for i := 0; i < 20; i++ {
		pids := userProcs(uid)
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := run("userdel", "-r", benchUser); err != nil && !strings.Contains(out, "does not exist") {
		// userdel -r complains about a missing mail spool; the account is gone anyway.
		if _, lerr := user.Lookup(benchUser); lerr == nil {
			warnf("removing %s: %v", benchUser, err)
		}
	}
}

func randomPassword() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return "Wb1-" + hex.EncodeToString(b[:])
}

// createBenchUser makes the Linux account (in winrm-remote-users, no usable
// password, so neither PAM nor sshd's password path can log it on).
func createBenchUser() (*user.User, error) {
	removeBenchUser() // a crashed earlier run
	if _, err := user.LookupGroup(benchGroup); err != nil {
		if _, err := run("groupadd", "--system", benchGroup); err != nil {
			return nil, err
		}
	}
	// A fixed, high uid: test harnesses on the same machine create and
	// delete users in the low range and kill what a deleted user's uid
	// still runs; a reused low uid would make the bench's workers and sshd
	// sessions their targets.
	uid := benchUID
	for ; uid > benchUID-100; uid-- {
		if _, err := user.LookupId(strconv.Itoa(uid)); err != nil {
			break
		}
	}
	if _, err := run("useradd", "--create-home", "--shell", "/bin/sh", "--groups", benchGroup,
		"--uid", strconv.Itoa(uid), "--comment", "winrmd-bench (temporary)", benchUser); err != nil {
		return nil, err
	}
	// "*" is not a lock ("!"): sshd with UsePAM no refuses locked accounts.
	if _, err := run("usermod", "-p", "*", benchUser); err != nil {
		return nil, err
	}
	return user.Lookup(benchUser)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// daemon is a started winrmd.
type daemon struct {
	cmd       *exec.Cmd
	pid       int
	http      string
	https     string
	metrics   string
	logFile   string
	cpu       *cpuMeter
	exited    chan struct{}
	exitError error
}

// startBenchKDC runs a throwaway MIT KDC (krbtest) with the bench user as
// a principal and HTTP/localhost in a keytab for the daemon, and returns a
// service ticket for the client side of the Kerberos rows.
func startBenchKDC(dir, password string, cl *cleanups) (string, *krbtest.Ticket, error) {
	k, err := krbtest.Start(filepath.Join(dir, "kdc"))
	if err != nil {
		return "", nil, err
	}
	cl.add(k.Stop)
	spn := "HTTP/" + krbtest.Host
	kt := filepath.Join(dir, "kdc", "winrmd.keytab")
	for _, f := range []func() error{
		func() error { return k.AddUser(benchUser, password) },
		func() error { return k.AddService(spn) },
		func() error { return k.Keytab(kt, spn) },
	} {
		if err := f(); err != nil {
			return "", nil, err
		}
	}
	c, err := k.Login(benchUser, password, 0)
	if err != nil {
		return "", nil, err
	}
	t, err := c.Ticket(spn)
	if err != nil {
		return "", nil, err
	}
	return kt, t, nil
}

// extraYAML is appended to the configuration (top-level sections the base
// one does not have, e.g. the psrp rows' powershell). lab serves in lab
// mode (`serve --lab`: every shell runs as the daemon's own user, root
// allowed), for the package's tests, which create no account.
func startDaemon(bin, dir, password, keytab string, lab bool, cl *cleanups, extraYAML ...string) (*daemon, error) {
	store := filepath.Join(dir, "accounts")
	cmd := exec.Command(bin, "user", "add", "--store", store, benchUser)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("winrmd user add: %w: %s", err, out)
	}
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := run(bin, "cert", "generate", "--cert", cert, "--key", key, "--host", "localhost", "--host", "127.0.0.1"); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`listeners:
  - {transport: http, address: "127.0.0.1", port: 0}
  - {transport: https, address: "127.0.0.1", port: 0, cert_file: %q, key_file: %q}
service:
  allow_unencrypted: false
  max_envelope_size_kb: 500
  max_timeout_ms: 60000
  max_connections: 1000
  max_concurrent_operations_per_user: 100000
  auth:
    basic: true
    negotiate: true
    kerberos: %t
    certificate: false
    credssp: true  # the credssp-http rows; it is off by default
    cbt_hardening_level: relaxed
winrs:
  allow_remote_shell_access: true
  idle_timeout_ms: 7200000
  max_concurrent_users: 2147483647
  max_shells_per_user: 2147483647
  max_processes_per_shell: 2147483647
  max_memory_per_shell_mb: 2147483647
  max_shell_run_time_ms: 2147483647
authorization:
  allowed_groups: [%s]
  allow_root: %t
accounts:
  pam_service: ""
  store_file: %q
logging:
  level: warn
  format: json
metrics:
  address: "127.0.0.1:0"
kerberos:
  keytab: %q
`, cert, key, keytab != "", benchGroup, lab, store, keytab) + strings.Join(extraYAML, "")
	cfgPath := filepath.Join(dir, "winrmd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "ready.json")
	d := &daemon{logFile: filepath.Join(dir, "winrmd.log"), exited: make(chan struct{})}
	logf, err := os.Create(d.logFile)
	if err != nil {
		return nil, err
	}
	d.cpu = newCPUMeter("winrmd", false, cl)
	args := []string{"serve", "--config", cfgPath, "--ready-file", ready}
	if lab {
		args = append(args, "--lab")
	}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	d.pid = d.cmd.Process.Pid
	d.cpu.attach(d.pid)
	go func() { d.exitError = d.cmd.Wait(); logf.Close(); close(d.exited) }()
	cl.add(func() { d.stop() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-d.exited:
			return nil, fmt.Errorf("winrmd exited at start (%v); log:\n%s", d.exitError, tail(d.logFile, 30))
		default:
		}
		if rf, err := server.ReadReady(ready); err == nil {
			d.http, d.https, d.metrics = rf.Address("http"), rf.Address("https"), rf.Metrics
			if rf.PID != 0 && rf.PID != d.pid {
				return nil, fmt.Errorf("ready file pid %d, started %d", rf.PID, d.pid)
			}
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("winrmd not ready after 30s; log:\n%s", tail(d.logFile, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d.http == "" || d.https == "" {
		return nil, fmt.Errorf("ready file lacks http/https listeners")
	}
	return d, nil
}

func (d *daemon) stop() {
	if d == nil || d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		warnf("winrmd did not stop on SIGTERM; killing pid %d", d.pid)
		_ = syscall.Kill(-d.pid, syscall.SIGKILL)
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sshServer is the private OpenSSH server.
type sshServer struct {
	cmd        *exec.Cmd
	pid        int
	addr       string
	port       int
	clientKey  string // private key file for the real ssh client
	knownHosts string
	signer     ssh.Signer
	hostKey    ssh.PublicKey
	cpu        *cpuMeter
	exited     chan struct{}
}

func writeKeyPair(path string, comment string) (ssh.Signer, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, err
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(spub), 0o644); err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

func startSSHD(dir string, u *user.User, cl *cleanups) (*sshServer, error) {
	s := &sshServer{exited: make(chan struct{})}
	hostKeyPath := filepath.Join(dir, "ssh_host_ed25519_key")
	hs, err := writeKeyPair(hostKeyPath, "winrmd-bench host")
	if err != nil {
		return nil, err
	}
	s.hostKey = hs.PublicKey()
	s.clientKey = filepath.Join(dir, "id_ed25519")
	if s.signer, err = writeKeyPair(s.clientKey, "winrmd-bench client"); err != nil {
		return nil, err
	}
	// authorized_keys in the bench user's home, owned by it (StrictModes).
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	sshDir := filepath.Join(u.HomeDir, ".ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return nil, err
	}
	ak := filepath.Join(sshDir, "authorized_keys")
	if err := os.WriteFile(ak, ssh.MarshalAuthorizedKey(s.signer.PublicKey()), 0o600); err != nil {
		return nil, err
	}
	for _, p := range []string{sshDir, ak} {
		if err := os.Chown(p, uid, gid); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // privilege separation directory
		return nil, err
	}
	if s.port, err = freePort(); err != nil {
		return nil, err
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	cfg := fmt.Sprintf(`# winrmd-bench private sshd
ListenAddress %s
HostKey %s
PidFile %s
UsePAM no
UseDNS no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
AllowUsers %s
PermitRootLogin no
MaxSessions 1000
MaxStartups 1000:100:1000
MaxAuthTries 6
LoginGraceTime 30
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
PrintMotd no
PrintLastLog no
PermitUserEnvironment no
Compression no
LogLevel ERROR
`, s.addr, hostKeyPath, filepath.Join(dir, "sshd.pid"), benchUser)
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	if out, err := run("/usr/sbin/sshd", "-t", "-f", cfgPath); err != nil {
		return nil, fmt.Errorf("sshd config: %v %s", err, out)
	}
	s.knownHosts = filepath.Join(dir, "known_hosts")
	kh := fmt.Sprintf("[127.0.0.1]:%d %s", s.port, ssh.MarshalAuthorizedKey(s.hostKey))
	if err := os.WriteFile(s.knownHosts, []byte(kh), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		return nil, err
	}
	s.cpu = newCPUMeter("sshd", true, cl)
	s.cmd = exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfgPath)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s.pid = s.cmd.Process.Pid
	s.cpu.attach(s.pid)
	go func() { _ = s.cmd.Wait(); logf.Close(); close(s.exited) }()
	cl.add(func() { s.stop() })
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("sshd exited at start; log:\n%s", tail(filepath.Join(dir, "sshd.log"), 20))
		default:
		}
		if time.Now().After(deadline) {
			return nil, errors.New("sshd not listening after 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, nil
}

func (s *sshServer) stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	// The listener's per-connection children, then the listener.
	for _, p := range descendants(s.pid) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.pid, syscall.SIGKILL)
		<-s.exited
	}
}

// sshArgs are the real OpenSSH client's arguments for one command.
func (s *sshServer) sshArgs(extra ...string) []string {
	a := []string{"-F", "/dev/null", "-T",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", s.clientKey,
		"-o", "UserKnownHostsFile=" + s.knownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ControlMaster=no", "-o", "ControlPath=none",
		"-p", strconv.Itoa(s.port), "-l", benchUser}
	a = append(a, "127.0.0.1")
	return append(a, extra...)
}

// muxArgs runs cmd through an open ControlMaster connection: the mux
// client hands its own stdin/stdout to the master (SCM_RIGHTS), so data
// does not take an extra hop, and no connection is set up per sample.
func (s *sshServer) muxArgs(ctl string, cmd string) []string {
	a := s.sshArgs(cmd)
	for i := range a {
		if a[i] == "ControlPath=none" {
			a[i] = "ControlPath=" + ctl
		}
	}
	return a
}

// startMaster opens a ControlMaster connection (a child of the bench) and
// returns its socket path and a stop function.
func (s *sshServer) startMaster(dir string) (string, func(), error) {
	ctl := filepath.Join(dir, "ctl-"+strconv.Itoa(int(time.Now().UnixNano()%1e9)))
	a := s.sshArgs()
	for i := range a {
		switch a[i] {
		case "ControlPath=none":
			a[i] = "ControlPath=" + ctl
		case "ControlMaster=no":
			a[i] = "ControlMaster=yes"
		}
	}
	a = append([]string{"-N"}, a...)
	cmd := exec.Command("ssh", a...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		os.Remove(ctl)
	}
	for t0 := time.Now(); ; {
		if _, err := os.Stat(ctl); err == nil {
			return ctl, stop, nil
		}
		select {
		case <-done:
			return "", func() {}, errors.New("ssh ControlMaster exited")
		default:
		}
		if time.Since(t0) > 15*time.Second {
			stop()
			return "", nil, errors.New("ssh ControlMaster: no socket after 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *sshServer) dial() (*ssh.Client, error) {
	return ssh.Dial("tcp", s.addr, &ssh.ClientConfig{
		User:            benchUser,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s.signer)},
		HostKeyCallback: ssh.FixedHostKey(s.hostKey),
		Timeout:         15 * time.Second,
	})
}

// ---- /proc helpers ----

type procInfo struct {
	pid, ppid int
	comm      string
	cpuTicks  int64 // utime+stime+cutime+cstime
}

func readStat(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	s := string(b)
	l, r := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if l < 0 || r < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(s[r+2:])
	// f[0]=state f[1]=ppid ... f[11]=utime f[12]=stime f[13]=cutime f[14]=cstime
	if len(f) < 15 {
		return procInfo{}, false
	}
	pi := procInfo{pid: pid, comm: s[l+1 : r]}
	pi.ppid, _ = strconv.Atoi(f[1])
	for _, k := range []int{11, 12, 13, 14} {
		v, _ := strconv.ParseInt(f[k], 10, 64)
		pi.cpuTicks += v
	}
	return pi, true
}

func allProcs() map[int]procInfo {
	m := map[int]procInfo{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pi, ok := readStat(pid); ok {
			m[pid] = pi
		}
	}
	return m
}

func descendantsOf(m map[int]procInfo, root int) []int {
	kids := map[int][]int{}
	for _, p := range m {
		kids[p.ppid] = append(kids[p.ppid], p.pid)
	}
	var out []int
	stack := []int{root}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, k := range kids[p] {
			out = append(out, k)
			stack = append(stack, k)
		}
	}
	return out
}

// descendants lists root's descendants. It follows the kernel's per-thread
// children lists (/proc/PID/task/TID/children), which read only the tree's
// own processes: the walk over all of /proc it replaces took 70% of a CPU
// between the warm row's samples (perf sched, 3000 samples), on the
// machine both sides share. Where the lists do not exist (a kernel without
// CONFIG_PROC_CHILDREN), it walks /proc as before.
func descendants(root int) []int {
	if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children"); err != nil {
		return descendantsOf(allProcs(), root)
	}
	var out []int
	stack := []int{root}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(p) + "/task")
		for _, t := range tasks {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/task/" + t.Name() + "/children")
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if k, err := strconv.Atoi(f); err == nil {
					out = append(out, k)
					stack = append(stack, k)
				}
			}
		}
	}
	return out
}

const clkTck = 100 // USER_HZ on Linux

// treeCPU is the CPU time (seconds) of root and its live descendants,
// including what reaped children already added to cutime/cstime.
func treeCPU(root int) float64 {
	m := allProcs()
	t := m[root].cpuTicks
	for _, p := range descendantsOf(m, root) {
		t += m[p].cpuTicks
	}
	return float64(t) / clkTck
}

// pssKB reads Pss from /proc/PID/smaps_rollup.
func pssKB(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// treePSS returns root's PSS and the sum over its descendants (kB).
func treePSS(root int) (self, kids int64, nkids int) {
	self = pssKB(root)
	for _, p := range descendants(root) {
		kids += pssKB(p)
		nkids++
	}
	return
}

// procs reads the daemon's GOMAXPROCS and how often it has changed
// (winrmd_gomaxprocs, winrmd_gomaxprocs_changes_total; the latter is absent
// when the governor does not run) from its metrics listener: one scrape,
// taken between rows.
func (d *daemon) procs() (procs, changes int, err error) {
	if d.metrics == "" {
		return 0, 0, errors.New("no metrics listener")
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, 0, err
	}
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, perr := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if perr != nil {
			continue
		}
		switch name {
		case "winrmd_gomaxprocs":
			procs, found = int(v), true
		case "winrmd_gomaxprocs_changes_total":
			changes = int(v)
		}
	}
	if !found {
		return 0, 0, errors.New("no winrmd_gomaxprocs in the daemon's metrics")
	}
	return procs, changes, nil
}
