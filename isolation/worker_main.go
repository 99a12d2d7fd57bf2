package isolation

// The worker process, from its start to the command loop: `winrmd worker`,
// re-executed by the daemon (spawner.go) with its socket on fd 3. It says
// Hello, reads Setup (never argv or the environment), takes the account's
// credentials (drop.go), and hands the socket to the loop (worker_loop.go).
// Everything here runs in the child; nothing here runs in the daemon.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// workerFD is the worker's end of the socketpair.
const workerFD = 3

// IsWorker reports whether this process was started as a worker
// (`winrmd worker`). main calls WorkerMain when it is.
func IsWorker() bool { return len(os.Args) > 1 && os.Args[1] == "worker" }

// WorkerMain is the worker process: it reads its start-up data from the
// socket on fd 3 (never argv or the environment), drops to the account,
// and serves commands until the daemon goes away. It never returns.
func WorkerMain() {
	os.Exit(workerMain())
}

func wlog(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "winrmd worker %d: %s\n", os.Getpid(), fmt.Sprintf(format, args...))
}

func workerMain() int {
	// Never unlocked: the credentials check, no_new_privs and the
	// parent-death signal are made on this thread, and every command is
	// forked from it.
	runtime.LockOSThread()
	// Executed through the daemon's held descriptor (/proc/self/fd/N) the
	// kernel named this process "N", and through /proc/self/exe "exe":
	// give ps and top the worker's name.
	setProcessName("winrmd-worker")
	ppid := os.Getppid()

	f := os.NewFile(workerFD, "winrmd-worker-socket")
	if f == nil {
		wlog("no socket on fd %d", workerFD)
		return 2
	}
	syscall.CloseOnExec(workerFD) // commands must never inherit the socket
	// Nor anything else the worker inherited: commands get 0, 1, 2 only.
	if err := MarkInheritedCloseOnExec(workerFD + 1); err != nil {
		wlog("marking inherited descriptors close-on-exec: %v", err)
		return 2
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		wlog("fd %d is not a socket: %v", workerFD, err)
		return 2
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		wlog("fd %d is not a unix socket", workerFD)
		return 2
	}
	defer conn.Close()

	// Its own session, so the terminal-less session holds every command
	// that does not setsid itself (the daemon also asks for it at fork).
	if sid, _ := unix.Getsid(0); sid != os.Getpid() {
		if _, err := unix.Setsid(); err != nil {
			wlog("setsid: %v", err)
			return 2
		}
	}
	if err := armParentDeath(ppid); err != nil {
		wlog("%v", err)
		return 2
	}
	// Orphans of commands become the worker's children, so it can reap
	// them and find them at the end.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		wlog("PR_SET_CHILD_SUBREAPER: %v", err)
		return 2
	}
	// The runtime's signal thread starts with the first Notify: now, with
	// the runtime's own, not later out of the shell's process budget.
	// Until Setup is done a signal just ends the worker.
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM, unix.SIGHUP, unix.SIGINT)
	var loop atomic.Pointer[workerLoop]
	go func() {
		<-term
		if w := loop.Load(); w != nil {
			w.stop()
			return
		}
		os.Exit(1) // before Setup: nothing to clean up
	}()

	if err := writeMsg(conn, msgHello{Version: protoVersion, Pid: uint32(os.Getpid())}); err != nil {
		wlog("hello: %v", err)
		return 2
	}
	br := bufio.NewReaderSize(conn, frameReadLarge)
	// A pooled worker waits for its shell up to poolMaxIdle, then the pool
	// retires it; this bounds the wait if the daemon stops calling at all.
	_ = conn.SetReadDeadline(time.Now().Add(setupWait))
	typ, p, _, err := readFrame(br, nil)
	if err != nil {
		wlog("reading setup: %v", err)
		return 2
	}
	_ = conn.SetReadDeadline(time.Time{})
	if typ != tSetup {
		_ = writeMsg(conn, msgFatal{Msg: fmt.Sprintf("expected Setup, got frame 0x%02x", typ)})
		return 2
	}
	m, err := decodeDaemonToWorker(typ, p)
	if err != nil {
		_ = writeMsg(conn, msgFatal{Msg: "bad Setup: " + err.Error()})
		return 2
	}
	setup := m.(msgSetup)
	fatal := func(s string) {
		wlog("fatal: %s", s)
		_ = writeMsg(conn, msgFatal{Msg: s})
		os.Exit(70)
	}
	if code, err := applySetup(setup, ppid, fatal); err != nil {
		_ = writeMsg(conn, msgSetupErr{Code: code, Msg: truncate(err.Error(), maxMsgLen)})
		return 1
	}
	env := os.Environ()
	w := newWorkerLoop(conn, br, env)
	loop.Store(w)
	if err := writeMsg(conn, msgSetupOK{}); err != nil {
		return 1
	}
	if err := w.serve(); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		wlog("%v", err)
		return 1
	}
	return 0
}

// warmThreadCount is how many idle OS threads the worker of a shell with a
// process budget (winrs.max_processes_per_shell) makes during Setup, after
// the privilege drop and before SetupOK. A shell without one makes none:
// they cost its Create about 0.4 ms (the cold row of BENCH.md) and every
// later walk of the worker's threads, for a starvation that only the
// shell's own limit could cause.
//
// The daemon sets pids.max to the shell's budget plus the worker's threads,
// counted after SetupOK and again before each Start (pidsLimit), so a
// thread the Go runtime makes while a command runs comes out of the
// shell's budget, and once a fork bomb has used that up the runtime cannot
// make one and aborts ("pthread_create failed"). The worker runs with
// GOMAXPROCS=1 (set by the spawner), so at Hello it already has its locked
// main thread, the signal thread, sysmon, the template thread and the
// thread that runs Go code; the warm threads are the spares the runtime
// hands the P to while another thread is in a syscall (fork, /proc reads).
// Measured with a fork bomb that fills pids.max while a second command
// floods stdout and stderr and further Starts fail: with 1 spare the worker
// still made a thread after Hello in 7 runs of 16, with 2 in none of 19,
// with 3 in none of 24 (9 or 10 threads in all); with none the runtime
// aborts in TestProcessLimit. 3 keeps one in hand. (It was 6, each sleeping
// 2 ms, with GOMAXPROCS = the host's CPUs: 11 threads on 2 CPUs, and more
// wanted, unwarmed, on a bigger host.)
const warmThreadCount = 3

// warmThreads makes the Go runtime create its OS threads now, before the
// shell's process budget is set: a fork bomb in a command later cannot then
// starve the worker of the thread it needs. They are made after the
// privilege drop, so each is born with the account's credentials (a thread
// inherits its creator's), and the drop's every-thread syscalls and checks
// (drop.go) have three threads fewer to stop, signal and read: in a static
// binary each of those syscalls stops the world and signals every thread,
// and the drop was the largest part of the worker's start (BENCH.md).
// Each goroutine locks a thread and waits until all have one, so there are
// warmThreadCount of them at once without sleeping; unlocked, they stay in
// the runtime's pool.
func warmThreads() {
	var locked, release sync.WaitGroup
	locked.Add(warmThreadCount)
	release.Add(1)
	for i := 0; i < warmThreadCount; i++ {
		go func() {
			runtime.LockOSThread()
			locked.Done()
			release.Wait()
			runtime.UnlockOSThread()
		}()
	}
	locked.Wait()
	release.Done()
}

// applySetup takes the account's credentials and prepares the process
// environment. Errors the daemon should hear about are returned with a
// SetupErr code; surprises end the process through fatal.
func applySetup(s msgSetup, ppid int, fatal func(string)) (uint8, error) {
	if s.ParentPid != 0 && int(s.ParentPid) != ppid {
		fatal(fmt.Sprintf("Setup names parent %d, but the parent is %d", s.ParentPid, ppid))
	}
	if s.UID == 0 && s.Flags&setupAllowRoot == 0 {
		return setupErrDenied, errors.New("refusing uid 0")
	}
	newPrivs := s.Flags&setupNewPrivs != 0
	if s.Flags&setupLab != 0 {
		// Lab mode: no credential change; the worker must already be the account.
		if msg := checkCredentials(s.UID, s.GID, s.Groups, false); msg != "" {
			return setupErrDenied, errors.New("lab mode: " + msg)
		}
	} else if os.Getuid() == 0 {
		// A root account keeps its bounding set: emptied, root's
		// commands would run without any capability.
		dropPrivileges(s.UID, s.GID, s.Groups, !newPrivs && s.UID != 0, fatal)
	} else if msg := checkCredentials(s.UID, s.GID, s.Groups, false); msg != "" {
		return setupErrDenied, errors.New("not root and not the account: " + msg)
	}
	if newPrivs {
		// Born on the daemon's privileged spawn thread; one born with
		// no_new_privs cannot shed it, and must not pretend it did.
		if v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); err != nil || v != 0 {
			fatal(fmt.Sprintf("Setup allows new privileges, but no_new_privs is %d (%v)", v, err))
		}
	} else if err := setNoNewPrivs(); err != nil {
		fatal(err.Error())
	}
	if err := armParentDeath(ppid); err != nil {
		fatal(err.Error())
	}
	// Only a shell with a process budget can starve the worker of a thread;
	// without one the runtime makes its threads when it wants them. Before
	// the RLIMIT_NPROC below, which counts them as the uid's.
	if s.MaxProcs > 0 {
		warmThreads()
	}
	if s.Flags&setupNprocLimit != 0 && s.MaxProcs > 0 {
		if err := limitNproc(s.UID, s.MaxProcs); err != nil {
			return setupErrOther, err
		}
	}
	dir := s.Dir
	if dir == "" {
		dir = s.Home
	}
	if dir == "" {
		dir = "/"
	}
	if err := os.Chdir(dir); err != nil {
		return setupErrDir, fmt.Errorf("working directory: %w", err)
	}
	os.Clearenv()
	for _, kv := range s.Env {
		if err := os.Setenv(kv.Key, kv.Value); err != nil {
			return setupErrOther, fmt.Errorf("environment %q: %w", kv.Key, err)
		}
	}
	return 0, nil
}

// limitNproc is the last resort without a pids cgroup. RLIMIT_NPROC counts
// every process and thread of the uid on the whole host, not of this shell,
// so the limit is the uid's current count plus the shell's budget.
func limitNproc(uid uint32, budget uint32) error {
	n := uint64(countTasksOfUID(uid)) + uint64(budget)
	if err := unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: n, Max: n}); err != nil {
		return fmt.Errorf("RLIMIT_NPROC: %w", err)
	}
	return nil
}

func writeMsg(w io.Writer, m msg) error {
	b, err := appendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// setProcessName sets the name (comm, at most 15 bytes) of the process and
// of each of its threads: the runtime's threads started before it (sysmon,
// the collector's) would keep the exec name, and perf and top -H show them
// by it. A thread copies its creator's name, so once every thread has been
// renamed the later ones are born with it; a second pass catches one
// created during the first.
func setProcessName(name string) {
	_ = os.WriteFile("/proc/self/comm", []byte(name), 0)
	for pass := 0; pass < 2; pass++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return
		}
		for _, t := range tasks {
			_ = os.WriteFile("/proc/self/task/"+t.Name()+"/comm", []byte(name), 0)
		}
	}
}
