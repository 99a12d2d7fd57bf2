package isolation

// Sidecar mode: workers are born inside another container's namespaces.
//
// The daemon keeps, per target, one OS thread that has joined the target's
// ipc, uts, net, pid and mount namespaces, and forks that target's workers
// from it, so each worker starts inside the container before it reads a
// byte of Setup, and long before its privilege drop (drop.go). Joining on a
// daemon thread rather than in the worker: a Go process cannot setns into a
// mount namespace from a thread that shares its filesystem state with other
// threads, and the worker's runtime has several threads by the time any Go
// code runs; the daemon's thread first leaves that sharing
// (unshare(CLONE_FS)) and is never handed back to the Go scheduler.
//
// A thread lives as long as it is the target's current one or a worker it
// forked is alive (the worker's parent-death signal fires when the forking
// thread ends, not the daemon). When the container restarts (new namespace
// ids) or its process exits (watched through a pidfd), its thread is
// retired: it ends, still locked, so the Go runtime terminates it, once its
// last worker has been reaped. So a daemon
// whose target restarts N times holds one sidecar thread, plus one per
// earlier container that still has a live worker, not N.
//
// Small and loud, as drop.go: the namespace files are opened before any
// setns (the mount namespace changes what /proc is), joined in a fixed
// order with the mount namespace last, and verified: each namespace id of
// the thread (pid: pid_for_children) must equal the target's, and after the
// mount namespace "/" must be the target's root. Any mismatch discards the
// thread (it exits, locked) and fails the shell with the reason.
//
// The worker executes /proc/self/exe from inside the target's mount
// namespace: a magic link to the daemon's binary, so the binary need not
// exist in the container, but it must be static (a dynamic one would load
// its C library from the container): NewSpawner refuses otherwise.
//
// Accounts are resolved by the daemon in the target's /etc/passwd and
// /etc/group (cmd/winrmd/sidecar.go, over /proc/<pid>/root) before the
// session layer asks for a shell; the target is resolved
// again for every shell, so a stopped container makes the next Create fail
// with a fault that says so.

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrSidecarTarget means the sidecar target container cannot be found or
// entered.
var ErrSidecarTarget = errors.New("sidecar target unavailable")

// cgroupFS is where the cgroup paths of sidecar targets are resolved.
var cgroupFS = "/sys/fs/cgroup"

// sidecarNamespaces in the order they are joined: the mount namespace last,
// because it changes what /proc (and so /proc/<pid>/ns) is.
var sidecarNamespaces = []struct {
	name  string // /proc/<pid>/ns/<name>
	self  string // how this thread's membership reads after setns
	clone int
}{
	{"ipc", "ipc", unix.CLONE_NEWIPC},
	{"uts", "uts", unix.CLONE_NEWUTS},
	{"net", "net", unix.CLONE_NEWNET},
	{"pid", "pid_for_children", unix.CLONE_NEWPID},
	{"mnt", "", unix.CLONE_NEWNS},
}

// ResolveSidecarTarget finds the pid (as the daemon sees it) of the target
// container's process: spec is a pid, an absolute cgroup path (its first
// process) or a process name (the lowest-numbered process with that comm).
func ResolveSidecarTarget(spec string) (int, error) {
	if spec == "" {
		return 0, fmt.Errorf("%w: no target", ErrSidecarTarget)
	}
	if n, err := strconv.Atoi(spec); err == nil {
		if n <= 0 {
			return 0, fmt.Errorf("%w: pid %d", ErrSidecarTarget, n)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/ns", n)); err != nil {
			return 0, fmt.Errorf("%w: pid %d is gone (the container stopped?)", ErrSidecarTarget, n)
		}
		return n, nil
	}
	if strings.HasPrefix(spec, "/") {
		procs := filepath.Join(cgroupFS, filepath.Clean(spec), "cgroup.procs")
		b, err := readSmall(procs, 1<<20)
		if err != nil {
			return 0, fmt.Errorf("%w: cgroup %s: %v (the container stopped?)", ErrSidecarTarget, spec, err)
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil && n > 0 {
				return n, nil
			}
		}
		return 0, fmt.Errorf("%w: cgroup %s has no process (the container stopped?)", ErrSidecarTarget, spec)
	}
	best, err := lowestPidNamed(spec)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrSidecarTarget, err)
	}
	if best == 0 {
		return 0, fmt.Errorf("%w: no process named %q (the container stopped?)", ErrSidecarTarget, spec)
	}
	return best, nil
}

func readSmall(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, max)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return nil, err
	}
	return b[:n], nil
}

// nsIDs reads the namespace ids ("net:[4026531840]") of pid, in
// sidecarNamespaces order.
func nsIDs(pid int) ([]string, error) {
	ids := make([]string, len(sidecarNamespaces))
	for i, ns := range sidecarNamespaces {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns.name))
		if err != nil {
			return nil, fmt.Errorf("%w: namespaces of pid %d: %v", ErrSidecarTarget, pid, err)
		}
		ids[i] = l
	}
	return ids, nil
}

// sidecarThread is a locked OS thread inside one target's namespaces.
type sidecarThread struct {
	ids  []string
	reqs chan func()
	sc   *sidecar
	// Guarded by sc.mu: holders (a spawn in progress or a live worker forked
	// from this thread) and whether a newer thread replaced it. The thread
	// ends when it is retired and has no holder: closing reqs ends its
	// goroutine, which never unlocked the thread, so Go terminates it.
	holders int
	retired bool
	ended   bool
}

// run executes f on the thread; only a holder (see sidecar.thread) calls it.
func (t *sidecarThread) run(f func() error) error {
	var err error
	done := make(chan struct{})
	t.reqs <- func() {
		defer close(done)
		if err = keepStartingTimerSlack(); err == nil { // see spawnThread.run
			err = f()
		}
	}
	<-done
	return err
}

// release gives back one hold taken by sidecar.thread: when the spawn
// failed before a worker started, or when the worker forked from the
// thread has been reaped.
func (t *sidecarThread) release() {
	t.sc.mu.Lock()
	defer t.sc.mu.Unlock()
	if t.holders > 0 {
		t.holders--
	}
	t.endIfUnused()
}

// retire marks the thread as replaced; sc.mu is held.
func (t *sidecarThread) retire() {
	t.retired = true
	t.endIfUnused()
}

// endIfUnused ends a retired thread nobody holds; sc.mu is held.
func (t *sidecarThread) endIfUnused() {
	if t.retired && t.holders == 0 && !t.ended {
		t.ended = true
		close(t.reqs)
	}
}

// sidecar is the spawner's sidecar state: the target and its current thread.
type sidecar struct {
	spec string
	mu   sync.Mutex
	cur  *sidecarThread
}

// thread returns, held, the thread inside the target's current namespaces
// and the target's pid: the caller releases it when the spawn fails or the
// worker it forked has been reaped. A container restart (new namespace ids)
// gets a new thread and retires the old one; so does a target that is gone.
func (s *sidecar) thread() (*sidecarThread, int, error) {
	pid, err := ResolveSidecarTarget(s.spec)
	var ids []string
	if err == nil {
		ids, err = nsIDs(pid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.retireCurrent()
		return nil, 0, err
	}
	if s.cur != nil && !equalStrings(s.cur.ids, ids) {
		s.retireCurrent() // the container restarted
	}
	if s.cur == nil {
		t, err := joinTarget(pid, ids)
		if err != nil {
			return nil, 0, err
		}
		t.sc = s
		s.cur = t
		go s.retireWhenGone(t, pid)
	}
	s.cur.holders++
	return s.cur, pid, nil
}

// retireWhenGone retires t as soon as the target process exits (the
// container stopped), so that the daemon does not keep the dead container's
// namespaces, and its mounts, alive until the next shell. Without pollable
// pidfds the next lookup retires it.
func (s *sidecar) retireWhenGone(t *sidecarThread, pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		// The pidfd must name the process whose namespaces t joined (not a
		// new process that reused the pid).
		if ids, err := nsIDs(pid); err == nil && equalStrings(ids, t.ids) {
			// A pidfd turns readable when its process exits.
			exited := func() bool {
				p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				n, err := unix.Poll(p, 0)
				return err == nil && n > 0
			}
			if !pollPidfd(fd, exited) {
				return
			}
		} else {
			unix.Close(fd)
		}
	} else if !errors.Is(err, unix.ESRCH) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == t {
		s.retireCurrent()
	}
}

// retireCurrent retires the current thread, if any; s.mu is held.
func (s *sidecar) retireCurrent() {
	if s.cur != nil {
		s.cur.retire()
		s.cur = nil
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// joinTarget starts a thread that joins pid's namespaces (want: their ids,
// read by the caller) and serves spawn requests from then on.
func joinTarget(pid int, want []string) (*sidecarThread, error) {
	t := &sidecarThread{ids: want, reqs: make(chan func())}
	ready := make(chan error)
	reqs := t.reqs
	goLockedOffMain(func() {
		// Never unlocked: when this returns (a failed join, or the thread
		// retired and closed), Go terminates the thread.
		if err := enterNamespaces(pid, want); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for req := range reqs {
			req()
		}
	})
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

// goLockedOffMain runs f on a new goroutine locked to an OS thread that is
// not the process's main thread, and never unlocks it. The main thread must
// not join a target: /proc/self shows the main thread's namespaces for the
// whole daemon, and Go cannot end the main thread (a locked goroutine that
// returns there wedges it for good). A goroutine that lands on the main
// thread keeps it (locked, waiting) until a second one has locked another
// thread: a locked thread runs nothing else, so the second cannot land there.
func goLockedOffMain(f func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			f()
			return
		}
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			f()
		}()
		<-locked
		runtime.UnlockOSThread()
	}()
}

// enterNamespaces is the whole namespace switch of the calling (locked)
// thread; see the file comment for the order and the checks.
func enterNamespaces(pid int, want []string) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("isolation: sidecar: no_new_privs: %w", err)
	}
	var root unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root/", pid), &root); err != nil {
		return fmt.Errorf("%w: root of pid %d: %v", ErrSidecarTarget, pid, err)
	}
	fds := make([]int, len(sidecarNamespaces))
	for i, ns := range sidecarNamespaces {
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, ns.name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			for _, f := range fds[:i] {
				unix.Close(f)
			}
			return fmt.Errorf("%w: open %s namespace of pid %d: %v", ErrSidecarTarget, ns.name, pid, err)
		}
		fds[i] = fd
	}
	defer func() {
		for _, f := range fds {
			unix.Close(f)
		}
	}()
	// The opened files must still be the namespaces whose ids were read
	// (the pid could have been reused in between).
	for i, ns := range sidecarNamespaces {
		l, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fds[i]))
		if err != nil || l != want[i] {
			return fmt.Errorf("%w: %s namespace of pid %d changed while joining (%s, want %s)", ErrSidecarTarget, ns.name, pid, l, want[i])
		}
	}
	// Leave the filesystem state shared with the daemon's other threads:
	// setns into a mount namespace refuses a thread that shares it.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("isolation: sidecar: unshare(CLONE_FS): %w", err)
	}
	for i, ns := range sidecarNamespaces {
		if err := unix.Setns(fds[i], ns.clone); err != nil {
			return fmt.Errorf("isolation: sidecar: setns %s of pid %d: %w", ns.name, pid, err)
		}
		if ns.self == "" {
			continue
		}
		got, err := os.Readlink(fmt.Sprintf("/proc/thread-self/ns/%s", ns.self))
		if err != nil || got != want[i] {
			return fmt.Errorf("isolation: sidecar: after setns the thread's %s namespace is %s, want %s (%v)", ns.self, got, want[i], err)
		}
	}
	var now unix.Stat_t
	if err := unix.Stat("/", &now); err != nil || now.Dev != root.Dev || now.Ino != root.Ino {
		return fmt.Errorf("isolation: sidecar: after setns mnt, / is not pid %d's root (%v)", pid, err)
	}
	return nil
}

// checkStaticSelf refuses a dynamically linked binary for sidecar mode.
func checkStaticSelf(exe string) error {
	f, err := elf.Open(exe)
	if err != nil {
		return fmt.Errorf("isolation: sidecar: reading %s: %w", exe, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("isolation: sidecar mode needs a static winrmd (CGO_ENABLED=0, as in the image: make image): " +
				"a dynamically linked worker would load its C library from the target container")
		}
	}
	return nil
}
