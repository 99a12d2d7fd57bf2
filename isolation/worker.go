package isolation

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
	// The runtime's signal thread starts with the first Notify: now, before
	// the daemon counts the worker's threads, not later out of the shell's
	// process budget. Until Setup is done a signal just ends the worker.
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
	warmThreads()

	if err := writeMsg(conn, msgHello{Version: protoVersion, Pid: uint32(os.Getpid())}); err != nil {
		wlog("hello: %v", err)
		return 2
	}
	br := bufio.NewReaderSize(conn, 128<<10)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
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
	w.ownSession = true
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

// warmThreadCount is how many idle OS threads the worker makes before Hello.
//
// The daemon sets pids.max to the shell's budget plus the worker's threads
// counted at Hello, so a thread the Go runtime makes later comes out of the
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

// warmThreads makes the Go runtime create its OS threads now, while the
// shell's process budget is still free: a fork bomb in a command later
// cannot then starve the worker of the thread it needs. Each goroutine locks
// a thread and waits until all have one, so there are warmThreadCount of
// them at once without sleeping; unlocked, they stay in the runtime's pool.
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
		if msg := checkCredentials(s.UID, s.GID, s.Groups); msg != "" {
			return setupErrDenied, errors.New("lab mode: " + msg)
		}
	} else if os.Getuid() == 0 {
		// A root account keeps its bounding set: emptied, root's
		// commands would run without any capability.
		dropPrivileges(s.UID, s.GID, s.Groups, !newPrivs && s.UID != 0, fatal)
	} else if msg := checkCredentials(s.UID, s.GID, s.Groups); msg != "" {
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

func countTasksOfUID(uid uint32) int {
	ents, _ := os.ReadDir("/proc")
	total := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		u, threads := -1, 0
		for _, line := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					u, _ = strconv.Atoi(f[0])
				}
			} else if v, ok := strings.CutPrefix(line, "Threads:"); ok {
				threads, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if u == int(uid) {
			total += threads
		}
	}
	return total
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func writeMsg(w io.Writer, m msg) error {
	b, err := appendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// --- the worker's loop ---

// workerLoop serves one daemon connection: it starts commands as its
// children, moves their output out under the credit window, feeds their
// stdin from bounded queues, and reports exits. The reading goroutine
// (serve) never blocks on a command.
type workerLoop struct {
	conn *net.UnixConn
	r    io.Reader
	env  []string
	out  *outQueue

	mu     sync.Mutex
	cmds   map[string]*wcmd // live and exited, until Release
	byPid  map[int]*wcmd    // unreaped children
	closed bool

	ownSession bool // a real worker: it leads its session, whose members it kills at the end

	stopOnce sync.Once
	sigchld  chan os.Signal
	done     chan struct{}
}

type wcmd struct {
	id  string
	pid int
	w   *workerLoop

	mu       sync.Mutex
	cond     *sync.Cond // window, stdin queue and release changes
	window   int        // output bytes that may still be sent
	inflight int        // window reserved by a pump blocked in read
	released bool
	reaped   bool
	status   unix.WaitStatus
	open     int // output pipes not yet at EOF
	exitSent bool
	outR     [2]*os.File

	stdinW      *os.File
	stdinOnce   sync.Once
	sq          [][]byte
	sqBytes     int
	sqEOF       bool      // eof queued
	stdinDone   bool      // no more stdin will be written
	pending     *msgStdin // waiting for room in the queue (not yet acknowledged)
	stdinFailed bool
}

func newWorkerLoop(conn *net.UnixConn, r io.Reader, env []string) *workerLoop {
	w := &workerLoop{
		conn:    conn,
		r:       r,
		env:     env,
		cmds:    map[string]*wcmd{},
		byPid:   map[int]*wcmd{},
		sigchld: make(chan os.Signal, 1),
		done:    make(chan struct{}),
	}
	w.out = newOutQueue(conn, w.stop)
	return w
}

// stop ends serve: the read fails and the loop shuts down.
func (w *workerLoop) stop() {
	w.stopOnce.Do(func() {
		close(w.done)
		_ = w.conn.SetReadDeadline(time.Unix(1, 0))
	})
}

// serve runs until the daemon closes the socket (io.EOF), stop is called or
// the daemon breaks the protocol. Every command is killed before it returns.
func (w *workerLoop) serve() (err error) {
	signal.Notify(w.sigchld, unix.SIGCHLD)
	go w.reaper()
	defer func() {
		w.shutdown()
		signal.Stop(w.sigchld)
	}()
	var buf []byte
	for {
		var typ byte
		var p []byte
		typ, p, buf, err = readFrame(w.r, buf)
		if err != nil {
			select {
			case <-w.done:
				return io.EOF
			default:
			}
			if errors.Is(err, errFrameTooLarge) || errors.Is(err, errFrameEmpty) {
				return w.protocolError(err)
			}
			return err
		}
		m, err := decodeDaemonToWorker(typ, p)
		if err != nil {
			return w.protocolError(err)
		}
		if err := w.handle(m); err != nil {
			return w.protocolError(err)
		}
	}
}

// protocolError tells the daemon why the worker gives up.
func (w *workerLoop) protocolError(err error) error {
	err = fmt.Errorf("protocol violation by the daemon: %w", err)
	w.out.push(msgFatal{Msg: truncate(err.Error(), maxMsgLen)})
	w.out.flush(time.Second)
	return err
}

func (w *workerLoop) handle(m msg) error {
	switch m := m.(type) {
	case msgStart:
		return w.start(m)
	case msgStdin:
		c, err := w.lookup(m.ID)
		if err != nil {
			return err
		}
		return c.stdin(m)
	case msgSignal:
		c, err := w.lookup(m.ID)
		if err != nil {
			return err
		}
		c.signal(m.Sig)
		return nil
	case msgCredit:
		c, err := w.lookup(m.ID)
		if err != nil {
			return err
		}
		return c.credit(int(m.N))
	case msgRelease:
		w.release(m.ID)
		return nil
	default:
		return fmt.Errorf("frame 0x%02x after Setup", m.frameType())
	}
}

func (w *workerLoop) lookup(id string) (*wcmd, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.cmds[id]
	if c == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknown, id)
	}
	return c, nil
}

// start forks the command on this (locked) thread. The lock on w.mu keeps
// the reaper from reaping the child before it is registered.
func (w *workerLoop) start(m msgStart) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, dup := w.cmds[m.ID]; dup {
		return fmt.Errorf("duplicate command id %q", m.ID)
	}
	fail := func(err error) error {
		w.out.push(msgStartErr{ID: m.ID, Msg: truncate(err.Error(), maxMsgLen)})
		return nil
	}
	var path string
	var argv []string
	if len(m.Argv) > 0 {
		p, err := exec.LookPath(m.Argv[0])
		if err != nil {
			return fail(err)
		}
		path, argv = p, m.Argv
	} else {
		path, argv = "/bin/sh", []string{"/bin/sh", "-c", m.Line}
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return fail(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return fail(err)
	}
	// Fd() puts the child's ends in blocking mode, as a child expects.
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   w.env,
		Files: []uintptr{inR.Fd(), outW.Fd(), errW.Fd()},
		Sys: &syscall.SysProcAttr{
			Setpgid:   true, // its own process group: signals reach the whole group
			Pdeathsig: syscall.SIGKILL,
		},
	})
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return fail(fmt.Errorf("%s: %w", path, err))
	}
	c := &wcmd{id: m.ID, pid: pid, w: w, window: OutputWindow, open: 2, stdinW: inW, outR: [2]*os.File{outR, errR}}
	c.cond = sync.NewCond(&c.mu)
	w.cmds[m.ID] = c
	w.byPid[pid] = c
	w.out.push(msgStarted{ID: m.ID, Pid: uint32(pid)})
	go c.pump(Stdout, outR)
	go c.pump(Stderr, errR)
	go c.feed()
	return nil
}

// reaper collects every exited child on SIGCHLD without holding a thread per
// command (a blocked wait would cost one OS thread, and threads count
// against the shell's process limit).
func (w *workerLoop) reaper() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-w.sigchld:
		case <-tick.C:
		case <-w.done:
			return
		}
		w.mu.Lock()
		if w.ownSession {
			// A real worker is a child subreaper: everything its commands
			// orphan becomes its child and is reaped here.
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
				if c := w.byPid[pid]; c != nil {
					delete(w.byPid, pid)
					c.reapedWith(ws)
				}
			}
			w.mu.Unlock()
			continue
		}
		// In-process (tests): only our commands' pids are waited for; any
		// other child of this process is not ours to reap.
		for pid, c := range w.byPid {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if got == pid {
				delete(w.byPid, pid)
				c.reapedWith(ws)
			} else if errors.Is(err, unix.ECHILD) {
				delete(w.byPid, pid)
				c.reapedWith(unix.WaitStatus(255 << 8))
			}
		}
		w.mu.Unlock()
	}
}

func (w *workerLoop) release(id string) {
	w.mu.Lock()
	c := w.cmds[id]
	delete(w.cmds, id)
	w.mu.Unlock()
	if c == nil {
		// Benign: the command failed to start, and the daemon's Release
		// crossed our StartErr.
		w.out.push(msgReleased{ID: id})
		return
	}
	c.mu.Lock()
	c.released = true
	if !c.reaped {
		_ = unix.Kill(-c.pid, unix.SIGKILL)
	}
	c.stopStdinLocked()
	c.out().push(msgReleased{ID: id}) // ordered after everything this command sent
	c.cond.Broadcast()
	c.mu.Unlock()
	// Unblock the pumps even if an escaped grandchild still holds the pipes.
	for _, f := range c.outR {
		f.Close()
	}
}

// shutdown kills every command's process group and everything left in the
// worker's session.
func (w *workerLoop) shutdown() {
	w.stop()
	w.mu.Lock()
	w.closed = true
	all := make(map[*wcmd]bool)
	for _, c := range w.cmds {
		all[c] = true
	}
	for _, c := range w.byPid {
		all[c] = true
	}
	w.mu.Unlock()
	for c := range all {
		_ = unix.Kill(-c.pid, unix.SIGKILL)
		c.mu.Lock()
		c.released = true
		c.stopStdinLocked()
		c.mu.Unlock()
		for _, f := range c.outR {
			f.Close()
		}
	}
	if w.ownSession {
		// Kill everything below the worker (a child subreaper: every process
		// of the shell is below it) and reap it, round after round, so that
		// what a dying process forked is caught too and nothing is left for
		// init, not even a zombie.
		self := os.Getpid()
		deadline := time.Now().Add(2 * time.Second)
		for pause := 250 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
			if _, ok := killTree(self); !ok {
				killSession(self, uint32(os.Getuid()), self)
				killDescendants(self, uint32(os.Getuid()))
			}
			if reapChildren() || time.Now().After(deadline) {
				break
			}
			time.Sleep(pause)
		}
	}
	w.out.close()
}

// reapChildren reaps every child that has exited and reports whether none
// is left (ECHILD).
func reapChildren() bool {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ECHILD) {
			return true
		}
		if pid <= 0 || err != nil {
			return false
		}
	}
}

// --- the process tree below a worker ---
//
// A worker is a child subreaper and leads its own session, so while it is
// alive every process of its shell is below it in the process tree: a
// process orphaned anywhere below is re-parented to the nearest subreaper
// above it, which is the worker or a process below it. The tree is read
// from /proc/<pid>/task/<tid>/children, which costs O(the shell's
// processes), whatever else runs on the host.

// procChildrenOK reports whether the kernel has the children files
// (CONFIG_PROC_CHILDREN); without them the tree is found by scanning /proc.
var procChildrenOK = sync.OnceValue(func() bool {
	_, err := os.Stat(threadFile(strconv.Itoa(unix.Gettid()), "children"))
	return err == nil
})

// taskChildren lists the children of every thread of pid. A pid that is
// gone has none. The caller keeps pid from being reaped meanwhile, or
// checks afterwards that it was not. The leader's list is read last: an
// orphan goes to the leader, and its dead parent stays listed under its own
// thread until reaped, so one of the two is seen.
func taskChildren(pid int, buf *[]byte) []int {
	tids, err := readDirNames("/proc/"+strconv.Itoa(pid)+"/task", buf)
	if err != nil {
		return nil
	}
	leader := strconv.Itoa(pid)
	if i := slices.Index(tids, leader); i >= 0 {
		tids = append(slices.Delete(tids, i, i+1), leader)
	}
	var kids []int
	for _, tid := range tids {
		b, err := readSmallFile(threadFile(tid, "children"), buf)
		if err != nil {
			continue // the thread has ended
		}
		kids = appendInts(kids, b)
	}
	return kids
}

// threadFile is the path of a per-thread /proc file of thread tid, reached
// through /proc/<tid>, not /proc/<pid>/task/<tid>. The kernel caches a
// dentry for every /proc file read, and drops a thread's when the thread
// is released; a file cached under /proc/<pid>/task/<tid> is then dropped
// by the exiting thread while the reaper of the process walks /proc/<pid>
// to drop the rest, and the reaper spins until the thread is done. On a
// loaded host that made reaping a worker cost 0.5-2 ms on average instead
// of 15-20 us (waitid in release_task, d_walk); under /proc/<tid> the two
// never meet. (Listing /proc/<pid>/task alone is harmless.)
func threadFile(tid, name string) string {
	return "/proc/" + tid + "/task/" + tid + "/" + name
}

// killTree sends SIGKILL to every process below root (not root itself),
// deepest first, and returns how many it listed, zombies included: 0 means
// root had no child left. The caller keeps root from being reaped
// meanwhile, so its pid cannot be recycled. Every other process is
// signalled through a pidfd after checking that its parent is the process
// it was listed under and that this parent, through its own pidfd, has not
// been reaped since (its pid was not recycled): a stranger's process is
// never hit. At most one pidfd per level of the tree is open at a time.
// No uid filter, then: whatever is below the worker is the shell's (a root
// shell's `su` children too, as a cgroup would have them).
// ok is false without children files or pidfds.
func killTree(root int) (found int, ok bool) {
	if !procChildrenOK() {
		return 0, false
	}
	var buf []byte
	var walk func(pid, pidfd int) bool
	walk = func(pid, pidfd int) bool {
		kids := taskChildren(pid, &buf)
		found += len(kids) // what vanished meanwhile is looked for again
		for _, c := range kids {
			fd, err := unix.PidfdOpen(c, 0)
			if errors.Is(err, unix.ENOSYS) {
				return false // a kernel before 5.3
			}
			if err != nil {
				continue // reaped since it was listed (or out of fds)
			}
			if procPPid(c) != pid || (pidfd >= 0 && unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil) {
				unix.Close(fd) // moved, or listed under a recycled pid
				continue
			}
			more := walk(c, fd)
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			unix.Close(fd)
			if !more {
				return false
			}
		}
		return true
	}
	if !walk(root, -1) {
		return 0, false
	}
	return found, true
}

// readSmallFile reads a whole /proc or cgroup file with raw syscalls (no
// os.File, no poller registration) into *buf, which grows as needed.
func readSmallFile(path string, buf *[]byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if cap(*buf) < 512 {
		*buf = make([]byte, 512)
	}
	b := (*buf)[:cap(*buf)]
	n := 0
	for {
		m, err := unix.Read(fd, b[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			break
		}
		n += m
		if n == len(b) {
			b = append(b, make([]byte, len(b))...)
		}
	}
	*buf = b
	return b[:n], nil
}

// readDirNames lists a directory with raw syscalls, "." and ".." left out.
func readDirNames(dir string, buf *[]byte) ([]string, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if cap(*buf) < 4096 {
		*buf = make([]byte, 4096)
	}
	b := (*buf)[:cap(*buf)]
	var names []string
	for {
		n, err := unix.Getdents(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(b[:n], -1, names)
	}
}

// appendInts appends the decimal numbers of a space- or newline-separated list.
func appendInts(out []int, b []byte) []int {
	v, in := 0, false
	for _, c := range b {
		if c >= '0' && c <= '9' {
			v, in = v*10+int(c-'0'), true
			continue
		}
		if in {
			out = append(out, v)
		}
		v, in = 0, false
	}
	if in {
		out = append(out, v)
	}
	return out
}

// killDescendants kills every process of uid below root in the process
// tree (the worker is a subreaper, so orphans stay below it). Each is
// signalled through a pidfd after re-checking its parent, so a recycled pid
// is never hit.
func killDescendants(root int, uid uint32) int {
	killed := 0
	for pass := 0; pass < 3; pass++ {
		n := 0
		for _, pid := range descendants(root) {
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				continue
			}
			if isDescendant(pid, root) && procUID(pid) == uid {
				if unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil {
					n++
				}
			}
			unix.Close(fd)
		}
		killed += n
		if n == 0 {
			break
		}
	}
	return killed
}

// parents maps every pid to its parent.
func parents() map[int]int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make(map[int]int, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := procPPid(pid); pp >= 0 {
			out[pid] = pp
		}
	}
	return out
}

func procPPid(pid int) int {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	i := strings.LastIndexByte(string(st), ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(st[i+1:]))
	if len(f) < 2 {
		return -1
	}
	pp, err := strconv.Atoi(f[1])
	if err != nil {
		return -1
	}
	return pp
}

func procUID(pid int) uint32 {
	var st unix.Stat_t
	if unix.Stat("/proc/"+strconv.Itoa(pid), &st) != nil {
		return 1<<32 - 1
	}
	return st.Uid
}

func descendants(root int) []int {
	pp := parents()
	children := map[int][]int{}
	for pid, parent := range pp {
		children[parent] = append(children[parent], pid)
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func isDescendant(pid, root int) bool {
	for i := 0; i < 4096 && pid > 1; i++ {
		pp := procPPid(pid)
		if pp == root {
			return true
		}
		pid = pp
	}
	return false
}

func (c *wcmd) out() *outQueue { return c.w.out }

// reapedWith is called by the reaper under w.mu.
func (c *wcmd) reapedWith(ws unix.WaitStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reaped = true
	c.status = ws
	c.stopStdinLocked() // a command that exited just drops its stdin
	c.maybeExitLocked()
}

func (c *wcmd) maybeExitLocked() {
	if c.reaped && c.open == 0 && !c.exitSent && !c.released {
		c.exitSent = true
		c.out().push(msgExit{ID: c.id, Code: exitCode(c.status)})
	}
}

// exitCode is what sh reports: the exit status, or 128+signal.
func exitCode(ws unix.WaitStatus) int32 {
	switch {
	case ws.Exited():
		return int32(ws.ExitStatus())
	case ws.Signaled():
		return 128 + int32(ws.Signal())
	default:
		return 255
	}
}

// pump moves one output pipe to the daemon, never more than the window.
func (c *wcmd) pump(stream Stream, f *os.File) {
	buf := make([]byte, maxOutChunk)
	for {
		c.mu.Lock()
		for c.window == 0 && !c.released {
			c.cond.Wait()
		}
		if c.released {
			c.mu.Unlock()
			break
		}
		n := min(c.window, maxOutChunk)
		c.window -= n // reserved while reading
		c.inflight += n
		c.mu.Unlock()

		k, err := f.Read(buf[:n])

		c.mu.Lock()
		c.inflight -= n
		c.window += n - k
		if k > 0 && !c.released {
			c.out().push(msgOutput{ID: c.id, Stream: stream, Data: buf[:k]})
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		if err != nil {
			break
		}
	}
	f.Close()
	c.mu.Lock()
	c.open--
	c.maybeExitLocked()
	c.mu.Unlock()
}

func (c *wcmd) credit(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.window+c.inflight+n > OutputWindow {
		return fmt.Errorf("credit %d for %q overflows the window", n, c.id)
	}
	c.window += n
	c.cond.Broadcast()
	return nil
}

func (c *wcmd) signal(s Signal) {
	sig := map[Signal]unix.Signal{SignalInterrupt: unix.SIGINT, SignalQuit: unix.SIGQUIT, SignalTerminate: unix.SIGKILL}[s]
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		return
	}
	// After the leader is reaped its group may live on (background jobs);
	// terminate still reaches them.
	if !c.reaped || s == SignalTerminate {
		_ = unix.Kill(-c.pid, sig)
	}
}

// stdin queues data, or holds it until the queue has room; the daemon has at
// most one unacknowledged Stdin per command.
func (c *wcmd) stdin(m msgStdin) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending != nil {
		return fmt.Errorf("second Stdin for %q before its acknowledgement", c.id)
	}
	if c.stdinDone || c.sqEOF || c.released {
		c.out().push(msgStdinAck{ID: c.id, Dropped: true})
		return nil
	}
	if c.sqBytes > 0 && c.sqBytes+len(m.Data) > stdinQueueCap {
		c.pending = &m
		return nil
	}
	c.enqueueLocked(m)
	return nil
}

func (c *wcmd) enqueueLocked(m msgStdin) {
	if len(m.Data) > 0 {
		c.sq = append(c.sq, m.Data)
		c.sqBytes += len(m.Data)
	}
	if m.EOF {
		c.sqEOF = true
	}
	c.out().push(msgStdinAck{ID: c.id})
	c.cond.Broadcast()
}

// stopStdinLocked drops queued stdin and closes the pipe.
func (c *wcmd) stopStdinLocked() {
	c.stdinDone = true
	c.sq, c.sqBytes = nil, 0
	if c.pending != nil {
		c.pending = nil
		c.out().push(msgStdinAck{ID: c.id, Dropped: true})
	}
	c.stdinOnce.Do(func() { c.stdinW.Close() })
	c.cond.Broadcast()
}

// feed writes the stdin queue to the pipe.
func (c *wcmd) feed() {
	for {
		c.mu.Lock()
		for len(c.sq) == 0 && !c.sqEOF && !c.stdinDone {
			c.cond.Wait()
		}
		if c.stdinDone {
			c.mu.Unlock()
			return
		}
		if len(c.sq) == 0 { // eof after the data
			c.stdinDone = true
			c.stdinOnce.Do(func() { c.stdinW.Close() })
			if c.pending != nil {
				c.pending = nil
				c.out().push(msgStdinAck{ID: c.id, Dropped: true})
			}
			c.mu.Unlock()
			return
		}
		chunk := c.sq[0]
		c.sq = c.sq[1:]
		c.mu.Unlock()

		_, err := c.stdinW.Write(chunk)

		c.mu.Lock()
		c.sqBytes -= len(chunk)
		if c.sqBytes < 0 {
			c.sqBytes = 0
		}
		if err != nil && !c.stdinDone {
			// The command closed its stdin (EPIPE): nothing more can go in.
			c.stdinFailed = true
			c.stopStdinLocked()
		}
		if c.pending != nil && (c.sqBytes == 0 || c.sqBytes+len(c.pending.Data) <= stdinQueueCap) {
			p := *c.pending
			c.pending = nil
			c.enqueueLocked(p)
		}
		c.mu.Unlock()
	}
}

// killSession kills every process of uid whose session is sid, except skip.
// It is how a shell's processes are found without a cgroup: the worker is
// its session's leader and commands only change their process group.
// (A process that calls setsid itself escapes this; only a cgroup holds it.)
// A session id cannot be recycled while any member lives, so this never
// hits a stranger.
func killSession(sid int, uid uint32, skip int) int {
	killed := 0
	for pass := 0; pass < 3; pass++ {
		n := 0
		for _, pid := range sessionMembers(sid, uid) {
			if pid == skip {
				continue
			}
			_ = unix.Kill(pid, unix.SIGKILL)
			n++
		}
		killed += n
		if n == 0 {
			break
		}
	}
	return killed
}

// sessionMembers lists the pids of uid whose session id is sid.
func sessionMembers(sid int, uid uint32) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...; comm may hold spaces and parens.
		i := strings.LastIndexByte(string(st), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) < 4 || f[3] != strconv.Itoa(sid) {
			continue
		}
		var sta unix.Stat_t
		if unix.Stat("/proc/"+e.Name(), &sta) != nil || sta.Uid != uid {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// --- outbound queue ---

// outQueue is the worker's single writer: frames are encoded when pushed
// and written in order by one goroutine, so no reader ever blocks on the
// socket. Output is bounded by the credit windows; control frames by the
// daemon's own requests.
type outQueue struct {
	conn    net.Conn
	onError func()

	mu     sync.Mutex
	cond   *sync.Cond
	q      [][]byte
	busy   bool
	failed bool
}

func newOutQueue(conn net.Conn, onError func()) *outQueue {
	o := &outQueue{conn: conn, onError: onError}
	o.cond = sync.NewCond(&o.mu)
	go o.run()
	return o
}

func (o *outQueue) push(m msg) {
	b, err := appendFrame(nil, m)
	if err != nil {
		// Only a bug can produce this: every field is bounded below the cap.
		b, _ = appendFrame(nil, msgFatal{Msg: "worker: " + err.Error()})
	}
	o.mu.Lock()
	if !o.failed {
		o.q = append(o.q, b)
		o.cond.Broadcast()
	}
	o.mu.Unlock()
}

func (o *outQueue) run() {
	for {
		o.mu.Lock()
		for len(o.q) == 0 && !o.failed {
			o.cond.Wait()
		}
		if o.failed {
			o.mu.Unlock()
			return
		}
		batch := o.q
		o.q = nil
		o.busy = true
		o.mu.Unlock()

		bufs := net.Buffers(batch)
		_, err := bufs.WriteTo(o.conn)

		o.mu.Lock()
		o.busy = false
		if err != nil {
			o.failed = true
			o.q = nil
		}
		o.cond.Broadcast()
		o.mu.Unlock()
		if err != nil {
			o.onError()
			return
		}
	}
}

// close stops the writer (what is queued is dropped).
func (o *outQueue) close() {
	o.mu.Lock()
	o.failed = true
	o.q = nil
	o.cond.Broadcast()
	o.mu.Unlock()
}

// flush waits until everything pushed so far is written (or timeout).
func (o *outQueue) flush(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		o.mu.Lock()
		o.cond.Broadcast()
		o.mu.Unlock()
	})
	defer t.Stop()
	o.mu.Lock()
	defer o.mu.Unlock()
	for (len(o.q) > 0 || o.busy) && !o.failed && time.Now().Before(deadline) {
		o.cond.Wait()
	}
}
