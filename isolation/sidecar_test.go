package isolation

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startNamespaced starts `sleep` in new uts, ipc, net, pid and mount
// namespaces with its own hostname (util-linux unshare), and returns the
// sleep's pid as we see it.
func startNamespaced(t *testing.T, hostname string) int {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skipf("unshare (util-linux) not installed: %v", err)
	}
	cmd := exec.Command("unshare", "--uts", "--ipc", "--net", "--pid", "--mount", "--fork", "--mount-proc",
		"sh", "-c", "hostname "+hostname+" && exec sleep 1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	// The sleep is unshare's child, in the new namespaces.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if strings.TrimSpace(string(comm)) == "sleep" {
				return pid
			}
		}
	}
	t.Fatal("the namespaced sleep did not start")
	return 0
}

// TestSidecarJoin: a thread joins a target's namespaces, verified, and a
// process forked from it is inside them (hostname, pid 1, network).
func TestSidecarJoin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("requires root: setns")
	}
	if inChroot() {
		t.Skip("the test runs in a chroot: a chrooted unshare target has no root of its own to join")
	}
	pid := startNamespaced(t, "wrmd-join-test")
	sc := &sidecar{spec: strconv.Itoa(pid)}
	t.Cleanup(func() { sc.mu.Lock(); sc.retireCurrent(); sc.mu.Unlock() })
	th, got, err := sc.thread()
	if err != nil {
		t.Fatal(err)
	}
	if got != pid {
		t.Fatalf("resolved pid %d, want %d", got, pid)
	}
	var out []byte
	err = th.run(func() error {
		var err error
		out, err = exec.Command("/bin/sh", "-c", "hostname; cat /proc/1/comm; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").Output()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "wrmd-join-test\nsleep\nlo\n"; string(out) != want {
		t.Errorf("inside the target: %q, want %q", out, want)
	}
	// The same namespaces: the same thread.
	th2, _, err := sc.thread()
	if err != nil || th2 != th {
		t.Errorf("second lookup: %v, same thread %v", err, th2 == th)
	}
	th.release()
	if th2 != nil {
		th2.release()
	}
	// The daemon's own threads are untouched.
	if h, _ := os.Hostname(); h == "wrmd-join-test" {
		t.Errorf("the test process's hostname changed")
	}
}

// inChroot reports whether the test runs in a chroot (make fresh-check
// ran the tests in one once): a chrooted unshare target has no root of its
// own, and setns into its mount namespace lands at the namespace's real
// root, which enterNamespaces refuses. Real containers pivot_root into their
// own root.
func inChroot() bool {
	var here, init unix.Stat_t
	return unix.Stat("/", &here) == nil && unix.Stat("/proc/1/root", &init) == nil && (here.Dev != init.Dev || here.Ino != init.Ino)
}

// threadTid runs on th and returns the OS thread's id.
func threadTid(t *testing.T, th *sidecarThread) int {
	t.Helper()
	var tid int
	if err := th.run(func() error { tid = unix.Gettid(); return nil }); err != nil {
		t.Fatal(err)
	}
	return tid
}

// waitThreadGone waits until the test process has no thread tid (the
// runtime terminates a locked thread whose goroutine returned; how soon is
// the scheduler's business, so this waits for the event, not a duration).
func waitThreadGone(t *testing.T, tid int) bool {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); errors.Is(err, os.ErrNotExist) {
			return true
		}
	}
	return false
}

// TestSidecarThreadEndsAfterRestart: when the target's namespaces change (a
// container restart) the old thread ends once nothing holds it (no spawn in
// progress, no live worker forked from it), and not before; a target that
// is gone retires the current thread too. So restarts leave no threads.
func TestSidecarThreadEndsAfterRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("requires root: setns")
	}
	if inChroot() {
		t.Skip("the test runs in a chroot: a chrooted unshare target has no root of its own to join")
	}
	first := startNamespaced(t, "wrmd-restart-1")
	sc := &sidecar{spec: strconv.Itoa(first)}
	held, _, err := sc.thread() // as a live worker holds it
	if err != nil {
		t.Fatal(err)
	}
	heldTid := threadTid(t, held)
	idle, _, err := sc.thread()
	if err != nil || idle != held {
		t.Fatalf("second lookup: %v, same thread %v", err, idle == held)
	}
	idle.release() // that spawn is over; the other hold remains

	// The container "restarts": the same spec now names other namespaces.
	second := startNamespaced(t, "wrmd-restart-2")
	sc.spec = strconv.Itoa(second)
	next, _, err := sc.thread()
	if err != nil {
		t.Fatal(err)
	}
	if next == held {
		t.Fatal("a restarted target got the old thread")
	}
	nextTid := threadTid(t, next)
	if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", heldTid)); err != nil {
		t.Errorf("the old thread ended while a worker still held it: %v", err)
	}
	held.release() // its last worker is reaped
	if !waitThreadGone(t, heldTid) {
		t.Errorf("the old target's thread %d did not end once released", heldTid)
	}
	next.release()
	if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", nextTid)); err != nil {
		t.Errorf("the current thread ended while its target still runs: %v", err)
	}

	// The target goes away: the next lookup fails and retires the thread.
	sc.spec = "999999999"
	if _, _, err := sc.thread(); !errors.Is(err, ErrSidecarTarget) {
		t.Fatalf("lookup of a gone target: %v", err)
	}
	if !waitThreadGone(t, nextTid) {
		t.Errorf("the thread of a gone target (%d) did not end", nextTid)
	}
	// No thread of this process is left in either target's namespaces, and
	// the main thread never joined one.
	targets := []string{held.ids[len(held.ids)-1], next.ids[len(next.ids)-1]}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, e := range tasks {
		if l, err := os.Readlink(fmt.Sprintf("/proc/self/task/%s/ns/mnt", e.Name())); err == nil && slices.Contains(targets, l) {
			t.Errorf("thread %s is still in a target's mount namespace %s", e.Name(), l)
		}
	}
	if slices.Contains([]int{heldTid, nextTid}, os.Getpid()) {
		t.Errorf("a target was joined on the process's main thread")
	}
}

// TestSidecarJoinRefusesChangedNamespaces: ids that are not the target's
// make the join fail loudly (the thread is discarded).
func TestSidecarJoinRefusesChangedNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("requires root: setns")
	}
	pid := startNamespaced(t, "wrmd-join-bad")
	ids, err := nsIDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	ids[2] = "net:[1]"
	if _, err := joinTarget(pid, ids); err == nil || !errors.Is(err, ErrSidecarTarget) || !strings.Contains(err.Error(), "changed while joining") {
		t.Errorf("join with a wrong net id: %v", err)
	}
}

func TestResolveSidecarTarget(t *testing.T) {
	self := os.Getpid()
	if got, err := ResolveSidecarTarget(strconv.Itoa(self)); err != nil || got != self {
		t.Errorf("pid: %d %v", got, err)
	}
	for _, spec := range []string{"", "0", "-3", "999999999", "no-such-process-name-wrmd", "/no/such/cgroup/wrmd"} {
		if _, err := ResolveSidecarTarget(spec); !errors.Is(err, ErrSidecarTarget) {
			t.Errorf("%q: %v, want ErrSidecarTarget", spec, err)
		}
	}
	comm, _ := os.ReadFile("/proc/1/comm")
	if got, err := ResolveSidecarTarget(strings.TrimSpace(string(comm))); err != nil || got != 1 {
		t.Errorf("by name %q: %d %v, want 1 (the lowest pid of that name)", strings.TrimSpace(string(comm)), got, err)
	}
}

func TestCheckStaticSelf(t *testing.T) {
	// /bin/sh is dynamically linked on Debian.
	if err := checkStaticSelf("/bin/sh"); err == nil || !strings.Contains(err.Error(), "static") {
		t.Errorf("/bin/sh: %v", err)
	}
	if _, err := os.Stat("/bin/busybox"); err == nil {
		if out, _ := exec.Command("ldd", "/bin/busybox").CombinedOutput(); strings.Contains(string(out), "not a dynamic") {
			if err := checkStaticSelf("/bin/busybox"); err != nil {
				t.Errorf("static busybox: %v", err)
			}
		}
	}
}

// TestResolveSidecarTargetCgroup: a cgroup path resolves to a process of
// that cgroup (v2: the path under /sys/fs/cgroup; v1: prefixed by the
// controller's directory, e.g. /pids/...).
func TestResolveSidecarTargetCgroup(t *testing.T) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skipf("no /proc/self/cgroup: %v", err)
	}
	var spec string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			spec = f[2] // v2
		case f[1] == "pids":
			spec = "/pids" + strings.TrimSuffix(f[2], "/")
		}
		if spec != "" {
			break
		}
	}
	if spec == "" {
		t.Skip("no cgroup v2 path and no v1 pids controller for this process")
	}
	if _, err := os.Stat(filepath.Join(cgroupFS, spec, "cgroup.procs")); err != nil {
		t.Skipf("cgroup %s not visible under %s: %v", spec, cgroupFS, err)
	}
	pid, err := ResolveSidecarTarget(spec)
	if err != nil {
		t.Fatalf("%s: %v", spec, err)
	}
	procs, _ := os.ReadFile(filepath.Join(cgroupFS, spec, "cgroup.procs"))
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(pid)) {
		t.Errorf("%s resolved to pid %d, which is not in the cgroup", spec, pid)
	}
}
