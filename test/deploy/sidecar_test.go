package deploytest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// busyboxRoot makes a minimal container root: busybox-static and its
// applets, an /etc/passwd and /etc/group whose account exists only there,
// and an /etc/os-release of its own. (It takes milliseconds, so it is made
// per test rather than cached.)
func busyboxRoot(t *testing.T, dir, user string, uid int) string {
	t.Helper()
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "home/" + user, "root"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	os.Chown(filepath.Join(root, "home", user), uid, uid)
	if out, err := exec.Command("cp", "/bin/busybox", filepath.Join(root, "bin", "busybox")).CombinedOutput(); err != nil {
		t.Fatalf("busybox-static is not installed (make test installs it): %v %s", err, out)
	}
	list, err := exec.Command(filepath.Join(root, "bin", "busybox"), "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" {
			os.Symlink("busybox", filepath.Join(root, "bin", a))
		}
	}
	files := map[string]string{
		"etc/passwd":     fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\n%s:x:%d:%d:sidecar test:/home/%s:/bin/sh\n", user, uid, uid, user),
		"etc/group":      fmt.Sprintf("root:x:0:\nwinrm-remote-users:x:999:%s\n%s:x:%d:\n", user, user, uid),
		"etc/os-release": "PRETTY_NAME=\"winrmd sidecar test container\"\nNAME=wrmd-busybox\nID=wrmd-busybox\n",
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// staticBinary builds winrmd without cgo, as the image does (sidecar mode
// needs a static binary).
func staticBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "winrmd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/winrmd")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build (static): %v\n%s", err, out)
	}
	return bin
}

// procsMatching lists host pids whose command line contains s.
func procsMatching(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s) {
			out = append(out, pid)
		}
	}
	return out
}

func procsOfUID(uid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d", pid), &st) == nil && int(st.Uid) == uid {
			out = append(out, pid)
		}
	}
	return out
}

// sidecarContainer is a busybox container run by runc from one bundle; it
// can be stopped and started again (a restart: new namespaces, same root).
type sidecarContainer struct {
	t      *testing.T
	bundle string
	state  string
	id     string
	log    syncBuffer
	done   chan error
	up     bool
}

// newSidecarContainer writes the bundle: a busybox root whose account
// exists only there, the host name wrmd-sidecar, and args as its process.
func newSidecarContainer(t *testing.T, work, user string, uid int, args []string) *sidecarContainer {
	t.Helper()
	bundle := filepath.Join(work, "bundle")
	os.MkdirAll(bundle, 0o755)
	busyboxRoot(t, bundle, user, uid)
	if out, err := exec.Command("runc", "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v %s", err, out)
	}
	cfgPath := filepath.Join(bundle, "config.json")
	var spec map[string]any
	b, _ := os.ReadFile(cfgPath)
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = args
	spec["hostname"] = "wrmd-sidecar"
	spec["root"] = map[string]any{"path": "rootfs", "readonly": false}
	b, _ = json.MarshalIndent(spec, "", " ")
	os.WriteFile(cfgPath, b, 0o644)
	c := &sidecarContainer{t: t, bundle: bundle, state: filepath.Join(work, "runc"), id: fmt.Sprintf("wrmde2e-sidecar-%d-%s", os.Getpid(), filepath.Base(work))}
	t.Cleanup(c.stop)
	return c
}

// start runs the container and returns its init's pid once it runs.
func (c *sidecarContainer) start() int {
	t := c.t
	t.Helper()
	run := exec.Command("runc", "--root", c.state, "run", "--bundle", c.bundle, c.id)
	run.Stdout, run.Stderr = &c.log, &c.log
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	c.done = make(chan error, 1)
	c.up = true
	go func(done chan error) { done <- run.Wait() }(c.done)
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := exec.Command("runc", "--root", c.state, "state", c.id).Output()
		var st struct {
			Status string `json:"status"`
			Pid    int    `json:"pid"`
		}
		if err == nil && json.Unmarshal(out, &st) == nil && st.Status == "running" && st.Pid > 0 {
			return st.Pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("container not running after 30s: %v %s\n%s", err, out, c.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop kills the container (its whole pid namespace goes) and deletes it.
func (c *sidecarContainer) stop() {
	if !c.up {
		return
	}
	c.up = false
	exec.Command("runc", "--root", c.state, "kill", c.id, "KILL").Run()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.t.Errorf("container did not stop")
	}
	exec.Command("runc", "--root", c.state, "delete", "--force", c.id).Run()
}

// sidecarDaemon is winrmd serve on the host in sidecar mode.
type sidecarDaemon struct {
	addr string
	pid  int
	log  *syncBuffer
	stop func()
}

// startSidecarDaemon starts the static winrmd in sidecar mode for target,
// with user (in its own account store) allowed over NTLM.
func startSidecarDaemon(t *testing.T, work, user, password, target string) *sidecarDaemon {
	t.Helper()
	bin := staticBinary(t)
	store := filepath.Join(work, "accounts")
	uc := exec.Command(bin, "user", "add", "--store", store, user)
	uc.Stdin = strings.NewReader(password + "\n")
	if out, err := uc.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v %s", err, out)
	}
	cfg := fmt.Sprintf(`listeners:
  - {transport: http, address: 127.0.0.1, port: 0}
service:
  auth: {basic: false, negotiate: true, kerberos: false}
accounts:
  pam_service: ""
  store_file: %s
logging: {level: debug, format: json}
metrics: {address: ""}
sidecar:
  target: "%s"
`, store, target)
	cfgFile := filepath.Join(work, "winrmd.yaml")
	os.WriteFile(cfgFile, []byte(cfg), 0o600)
	ready := filepath.Join(work, "ready.json")
	dlog := &syncBuffer{}
	daemon := exec.Command(bin, "serve", "--config", cfgFile, "--ready-file", ready)
	daemon.Stdout, daemon.Stderr = dlog, dlog
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	ddone := make(chan error, 1)
	go func() { ddone <- daemon.Wait() }()
	daemonGone := false
	stopDaemon := func() {
		if daemonGone {
			return
		}
		daemonGone = true
		syscall.Kill(daemon.Process.Pid, syscall.SIGTERM)
		select {
		case err := <-ddone:
			if err != nil {
				t.Errorf("daemon exited badly after SIGTERM: %v", err)
			}
		case <-time.After(30 * time.Second):
			syscall.Kill(-daemon.Process.Pid, syscall.SIGKILL)
			<-ddone
			t.Errorf("daemon did not stop within 30s")
		}
	}
	t.Cleanup(stopDaemon)
	var info struct {
		Listeners []struct{ Transport, Address string } `json:"listeners"`
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		b, err := os.ReadFile(ready)
		if err == nil && json.Unmarshal(b, &info) == nil && len(info.Listeners) > 0 {
			break
		}
		select {
		case err := <-ddone:
			ddone <- err
			t.Fatalf("daemon exited before it was ready: %v\n%s", err, dlog.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready\n%s", dlog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &sidecarDaemon{addr: info.Listeners[0].Address, pid: daemon.Process.Pid, log: dlog, stop: stopDaemon}
}

// TestSidecar: a busybox container started with runc (its own pid, mount,
// uts, ipc and network namespaces, its own hostname), winrmd on the host in
// sidecar mode targeting it, and pywinrm running commands that must run
// inside the container as an account that exists only there; a process
// started in a shell does not survive the shell's Delete; once the
// container is gone the next shell is refused with a fault that says why.
func TestSidecar(t *testing.T) {
	needRoot(t)
	t.Parallel() // independent roots, containers and namespaces
	for _, tool := range []string{"runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make test installs it): %v", tool, err)
		}
	}
	const user, uid, password = "wrmde2ecnt", 47311, "Side-Pw-7c1e2f9a!x"
	if _, err := exec.Command("getent", "passwd", user).Output(); err == nil {
		t.Fatalf("%s exists on the host: the test needs an account that exists only in the container", user)
	}
	work := t.TempDir()
	os.Chmod(work, 0o755)
	ctr := newSidecarContainer(t, work, user, uid, []string{"/bin/sh", "-c", "exec sleep 1000000"})
	target := ctr.start()
	stopContainer := ctr.stop
	hostHost, _ := os.Hostname()

	// The daemon, on the host, in sidecar mode.
	d := startSidecarDaemon(t, work, user, password, strconv.Itoa(target))
	addr, dlog, stopDaemon := d.addr, d.log, d.stop
	defer func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s\ncontainer log:\n%s", tail([]byte(dlog.String()), 60), ctr.log.String())
		}
	}()
	runIn := func(command string) pyResult {
		return pywinrmSpec(t, "", "http", addr, "ntlm", user, password, map[string]any{"op": "run", "command": command})
	}
	check := func(what string, r pyResult, want *regexp.Regexp) {
		t.Helper()
		if !r.OK || r.ExitCode == nil || *r.ExitCode != 0 || !want.Match(r.Stdout) {
			t.Errorf("%s: ok=%v exit=%v stdout=%q stderr=%q error=%s %s", what, r.OK, r.ExitCode, r.Stdout, r.Stderr, r.ErrorType, r.Error)
		} else {
			t.Logf("%s: %q", what, r.Stdout)
		}
	}

	check("hostname", runIn("hostname"), regexp.MustCompile(`^wrmd-sidecar\n$`))
	if hostHost == "wrmd-sidecar" {
		t.Fatalf("the host is called wrmd-sidecar too: the hostname check proves nothing")
	}
	check("cat /etc/os-release", runIn("cat /etc/os-release"), regexp.MustCompile(`^PRETTY_NAME="winrmd sidecar test container"\nNAME=wrmd-busybox\nID=wrmd-busybox\n$`))
	check("id", runIn("id"), regexp.MustCompile(`^uid=47311\(wrmde2ecnt\) gid=47311\(wrmde2ecnt\) groups=.*999\(winrm-remote-users\)`))
	// The container's own pid namespace: its init is pid 1 there.
	check("pid namespace", runIn("cat /proc/1/cmdline | tr '\\0' ' '"), regexp.MustCompile(`^sleep 1000000 $`))

	// 5 MB, byte-exact.
	const size = 5 << 20
	line := []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-sidecar\n")
	var want []byte
	for len(want) < size {
		want = append(want, line...)
	}
	want = want[:size]
	sum := sha256.Sum256(want)
	r := pywinrmSpec(t, "", "http", addr, "ntlm", user, password, map[string]any{"op": "run",
		"command": fmt.Sprintf("yes '%s' | head -c %d", strings.TrimSuffix(string(line), "\n"), size), "digest": true})
	if !r.OK || r.Len != size || r.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("5 MB output: ok=%v len=%d sha256=%s (want %d %x) error=%s %s", r.OK, r.Len, r.SHA256, size, sum, r.ErrorType, r.Error)
	} else {
		t.Logf("5 MB output byte-exact (sha256 %s)", r.SHA256[:16])
	}

	// A process that must not survive the shell's Delete (the run op
	// deletes its shell before returning), even when it leaves the
	// command's session.
	r = runIn("setsid sleep 31337 </dev/null >/dev/null 2>&1 & echo started")
	check("background process", r, regexp.MustCompile(`^started\n$`))
	for deadline := time.Now().Add(10 * time.Second); ; {
		left := procsMatching("sleep 31337")
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range left {
				syscall.Kill(p, syscall.SIGKILL)
			}
			t.Errorf("a process started in the shell survived its Delete: %v", left)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if left := procsOfUID(uid); len(left) > 0 {
		t.Errorf("processes of the container account left after the shells ended: %v", left)
	}

	// The container goes away: the next shell is refused, saying why.
	stopContainer()
	r = runIn("hostname")
	if r.OK {
		t.Errorf("a shell was created although the sidecar target is gone: %q", r.Stdout)
	} else if !strings.Contains(r.Error, "sidecar target") {
		t.Errorf("the fault does not say the sidecar target is gone: %s %s (wsman %d)", r.ErrorType, r.Error, r.WSMan)
	} else {
		t.Logf("after the container stopped: %s: %s", r.ErrorType, r.Error)
	}
	stopDaemon()
	if left := procsOfUID(uid); len(left) > 0 {
		t.Errorf("processes of the container account left: %v", left)
	}
	if strings.Contains(dlog.String(), password) {
		t.Errorf("the daemon logged the password")
	}
}

// daemonThreads counts the threads of pid, and those of them inside a mount
// namespace other than its main thread's (the sidecar threads: the main
// thread never joins a target).
func daemonThreads(pid int) (all, joined int) {
	own, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range tasks {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/task/%s/ns/mnt", pid, e.Name()))
		if err != nil {
			continue
		}
		all++
		if l != own {
			joined++
		}
	}
	return all, joined
}

// TestSidecarRestarts: the target container (named by its process name, as
// in Kubernetes) restarts several times under a running daemon; each
// restart's shell runs in the new container, and the daemon's threads come
// back to a bound: one thread inside the current container and none left
// in the earlier ones (each was parked for good before), and none once the
// container is gone.
func TestSidecarRestarts(t *testing.T) {
	needRoot(t)
	t.Parallel()
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("runc is not installed (make test installs it): %v", err)
	}
	const user, uid, password = "wrmde2ecnr", 47312, "Side-Pw-3d8b1a6e!r"
	const restarts = 5
	if _, err := exec.Command("getent", "passwd", user).Output(); err == nil {
		t.Fatalf("%s exists on the host: the test needs an account that exists only in the container", user)
	}
	work := t.TempDir()
	os.Chmod(work, 0o755)
	// The container's init is a script whose name (its comm) is the target.
	name := fmt.Sprintf("wrmdsc%d", os.Getpid()%10000000)
	ctr := newSidecarContainer(t, work, user, uid, []string{"/bin/" + name})
	if err := os.WriteFile(filepath.Join(ctr.bundle, "rootfs", "bin", name), []byte("#!/bin/sh\nsleep 1000000\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctr.start()
	d := startSidecarDaemon(t, work, user, password, name)
	defer func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s\ncontainer log:\n%s", tail([]byte(d.log.String()), 60), ctr.log.String())
		}
	}()
	// A shell in the current container: its pid namespace's init is the
	// target script, started at the container's start (its boot marker).
	shell := func(round int) {
		t.Helper()
		r := pywinrmSpec(t, "", "http", d.addr, "ntlm", user, password, map[string]any{"op": "run", "command": "hostname; cat /proc/1/comm; cat /proc/1/stat | cut -d' ' -f22"})
		if !r.OK || r.ExitCode == nil || *r.ExitCode != 0 || !regexp.MustCompile(`^wrmd-sidecar\n`+name+`\n[0-9]+\n$`).Match(r.Stdout) {
			t.Fatalf("round %d: ok=%v exit=%v stdout=%q stderr=%q error=%s %s", round, r.OK, r.ExitCode, r.Stdout, r.Stderr, r.ErrorType, r.Error)
		}
	}
	// waitJoined waits until the daemon has at most want threads inside a
	// container (a worker is reaped, and its thread ended, after the run
	// op's shell Delete has been answered).
	waitJoined := func(what string, want int) (all int) {
		t.Helper()
		var joined int
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			all, joined = daemonThreads(d.pid)
			if joined <= want {
				return all
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the daemon has %d threads inside containers, want at most %d (%d threads in all)", what, joined, want, all)
			}
		}
	}
	shell(0)
	shell(0) // the runtime's threads for a shell exist after the first
	base := waitJoined("first container", 1)
	t.Logf("after two shells in the first container: %d threads, one inside it", base)
	for i := 1; i <= restarts; i++ {
		ctr.stop()
		ctr.start()
		shell(i)
		all := waitJoined(fmt.Sprintf("restart %d", i), 1)
		t.Logf("restart %d: %d threads", i, all)
	}
	// One thread per restart would be base+restarts; the runtime's own
	// threads may grow by one or two for blocking system calls.
	if all, _ := daemonThreads(d.pid); all > base+2 {
		t.Errorf("after %d restarts the daemon has %d threads, %d after the first container: threads pile up", restarts, all, base)
	}
	// The container goes away: the next shell is refused and the thread
	// inside the last container ends.
	ctr.stop()
	r := pywinrmSpec(t, "", "http", d.addr, "ntlm", user, password, map[string]any{"op": "run", "command": "hostname"})
	if r.OK || !strings.Contains(r.Error, "sidecar target") {
		t.Errorf("after the container stopped: ok=%v %s %s", r.OK, r.ErrorType, r.Error)
	}
	waitJoined("after the container stopped", 0)
	d.stop()
	if left := procsOfUID(uid); len(left) > 0 {
		t.Errorf("processes of the container account left: %v", left)
	}
}
