package isolation

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SpawnerOptions configure NewSpawner.
type SpawnerOptions struct {
	// Exe is the binary executed as `Exe worker`; "" means WorkerBinary
	// beside the daemon's executable when it is installed safely
	// (findWorkerBinary), else /proc/self/exe (and always in sidecar mode).
	Exe string
	// Lab runs every worker as the daemon's own user, with no credential
	// change (unprivileged lab mode). The request's Account is then only
	// used for logs.
	Lab bool
	// AllowRoot permits workers running as uid 0.
	AllowRoot bool
	// CgroupRoot: "" autodetects (cgroup v2 with memory/pids delegated, else
	// v1 memory and pids); "off" disables cgroups; any other value is a
	// cgroup v2 directory, delegated to the daemon, under which per-shell
	// groups are created.
	CgroupRoot string
	// Logger may be nil (nothing is logged). The daemon passes its zap
	// logger through session/obs.Slog.
	Logger *slog.Logger
	// Sidecar, when set, is the target container (configs.Sidecar.Target)
	// every worker is born inside (sidecar.go). Needs root and a static
	// binary.
	Sidecar string
	// OutputBudget reserves the output every command may hold undelivered
	// in the daemon, daemon-wide and per account (budget.go); nil: only the
	// per-command OutputWindow bounds it.
	OutputBudget *OutputBudget
	// PrestartedWorkers is how many workers the pool (pool.go) keeps
	// started and waiting for a shell (winrs.prestarted_workers); 0: none,
	// every Create starts its worker. Ignored in sidecar mode.
	PrestartedWorkers int
	// PrestartNewPrivileges is the flavour of the pooled workers: forked
	// without no_new_privs, for shells that allow new privileges
	// (winrs.allow_new_privileges); shells of the other flavour start cold.
	PrestartNewPrivileges bool
	// Watchdog starts the daemon's watchdog (watchdog.go) with the spawner:
	// a root process that kills every shell cgroup of this daemon when the
	// daemon dies, stopped workers included. Needs root and cgroups; the
	// daemon sets it, tests that make many spawners in one process do not.
	Watchdog bool
}

// handshakeTimeout bounds the worker's Hello and its answer to Setup: a
// worker that has not sent them by then is broken or hostile. A worker
// starts in milliseconds (BenchmarkSpawnAndRunTrue), a loaded host in
// seconds. A caller's shorter deadline on Spawn's context applies too.
const handshakeTimeout = 15 * time.Second

// Default PATH of workers (Debian's login.defs ENV_PATH and ENV_SUPATH).
const (
	defaultPath     = "/usr/local/bin:/usr/bin:/bin"
	defaultRootPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// procSpawner is the Spawner: privileged (root, switching to each account)
// or lab (the daemon's own user).
type procSpawner struct {
	opts SpawnerOptions
	exe  string
	log  *slog.Logger
	cg   *cgroupSystem
	lab  Account       // the daemon's own account, in lab mode
	sc   *sidecar      // sidecar mode; nil otherwise
	pool *workerPool   // pre-started workers; nil when off
	cold atomic.Uint64 // workers started by Spawn itself

	// exeHeld is an O_PATH descriptor on exe, when exe is not the daemon's
	// own binary, opened and checked at start-up and held until Close.
	// Every worker is executed from it, not from exe's path: the child gets
	// it as descriptor heldExeFD and executes /proc/self/fd/<heldExeFD>
	// (which an interpreter script can open again, unlike a descriptor
	// closed on exec), so every worker is the file checked at start-up,
	// whatever is installed at exe's path since (a package upgrade before
	// the restart, a binary swapped by hand). It is also how another
	// daemon's start-up tells this daemon's workers from orphans
	// (orphans.go), by file and not by path. nil when none.
	exeHeld *os.File

	// stopLateReap cancels the second pass over orphaned cgroups
	// (reapLater); nil when none is pending.
	stopLateReap func()

	// nnpInherited: the daemon itself started with no_new_privs (a
	// container run with allowPrivilegeEscalation: false, or a unit with
	// NoNewPrivileges=yes). The flag is inherited by every child and can
	// never be cleared, so no shell can gain new privileges whatever the
	// configuration asks; Setup then asks for none rather than have every
	// worker refuse it.
	nnpInherited bool
}

var _ Spawner = (*procSpawner)(nil)

// NewSpawner makes the spawner. Without Lab the daemon must be root.
func NewSpawner(opts SpawnerOptions) (Spawner, error) {
	return newProcSpawner(opts)
}

func newProcSpawner(opts SpawnerOptions) (ret *procSpawner, _ error) {
	s := &procSpawner{opts: opts, exe: opts.Exe, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	// A group names the logger (as zap's Named does, through the
	// daemon's bridge, session/obs.Slog): this package logs with the
	// standard library's slog, because zap would link net/http and its
	// TLS stack into the worker, which imports this package too.
	s.log = s.log.WithGroup("isolation")
	if s.exe == "" {
		s.exe = "/proc/self/exe"
		// A sidecar worker is exec'd inside the target's mount namespace,
		// where only /proc/self/exe still names a binary of ours.
		if opts.Sidecar == "" {
			switch f, err := findWorkerBinary(); {
			case err == nil:
				s.exe, s.exeHeld = f.Name(), f
			case !errors.Is(err, os.ErrNotExist):
				s.log.Warn("not running "+WorkerBinary+"; workers re-execute the daemon instead", slog.Any("error", err))
			}
		}
	} else {
		f, err := holdExecutable(s.exe)
		if err != nil {
			return nil, fmt.Errorf("isolation: worker binary %s: %w", s.exe, err)
		}
		s.exeHeld = f
	}
	defer func() {
		if ret == nil && s.exeHeld != nil {
			s.exeHeld.Close()
		}
	}()
	if !opts.Lab && os.Geteuid() != 0 {
		return nil, errors.New("isolation: the privileged spawner must run as root (use lab mode otherwise)")
	}
	if opts.Lab {
		acct, err := selfAccount()
		if err != nil {
			return nil, fmt.Errorf("isolation: lab mode: %w", err)
		}
		if acct.UID == 0 && !opts.AllowRoot {
			return nil, fmt.Errorf("isolation: lab mode as root: %w", ErrRootRefused)
		}
		s.lab = acct
	}
	if opts.Sidecar != "" {
		if opts.Lab {
			return nil, errors.New("isolation: sidecar mode needs root (it joins another container's namespaces)")
		}
		if err := checkStaticSelf(s.exe); err != nil {
			return nil, err
		}
		s.sc = &sidecar{spec: opts.Sidecar}
		s.log.Info("sidecar mode: shells run inside the target container's namespaces", slog.String("target", opts.Sidecar))
	}
	if s.nnpInherited = startedWithNoNewPrivs; s.nnpInherited {
		s.log.Warn("this daemon runs with no_new_privs (NoNewPrivileges=yes, or a container without privilege escalation): " +
			"shells cannot gain new privileges (sudo and other setuid programs fail) whatever winrs.allow_new_privileges says")
	}
	cg, notes, err := detectCgroups(opts.CgroupRoot)
	if err != nil {
		return nil, err
	}
	s.cg = cg
	for _, n := range notes {
		s.log.Info("cgroup detection", slog.String("note", n))
	}
	reaped, young, errs := cg.reapOrphans(orphanMinAge)
	if len(reaped) > 0 || len(errs) > 0 {
		s.log.Warn("shell cgroups left by a daemon that died: their processes were killed", slog.Any("cgroups", reaped), slog.Any("errors", errs))
	}
	if opts.Watchdog && !opts.Lab && cg.mode != cgroupNone {
		// The watchdog is a mode of the daemon's own binary, not of
		// WorkerBinary.
		watchExe := opts.Exe
		if watchExe == "" {
			watchExe = "/proc/self/exe"
		}
		if cg.watch, err = startWatchdog(cg, watchExe, s.log); err != nil {
			return nil, err
		}
	}
	if opts.PrestartedWorkers > 0 && s.sc == nil {
		s.pool = newWorkerPool(s, opts.PrestartedWorkers, opts.PrestartNewPrivileges && !s.nnpInherited)
	}
	fields := []any{slog.String("worker_binary", s.exe), slog.String("cgroup_mode", cg.mode.String()), slog.Bool("memory", cg.memory), slog.Bool("pids", cg.pids), slog.Bool("lab", opts.Lab),
		slog.Int("prestarted_workers", opts.PrestartedWorkers)}
	if cg.mode == cgroupNone {
		s.log.Warn("no cgroups: shells are not confined; a process that calls setsid escapes Close; "+
			"process limits fall back to RLIMIT_NPROC, which counts all of the user's processes on the host, not the shell's; "+
			"memory limits are not enforced", fields...)
	} else {
		s.log.Info("isolation ready", fields...)
	}
	if young > 0 {
		// Empty groups too young to tell from another daemon's new ones
		// (those of a daemon that died just before this start): looked at
		// again once they are old enough.
		s.stopLateReap = cg.reapLater(orphanMinAge+time.Second, orphanMinAge, s.log)
	}
	return s, nil
}

// WorkerBinary is the worker-only program (cmd/winrmd-worker) the spawner
// runs when it is installed beside the daemon's binary: the same worker code
// as `winrmd worker`, without the daemon's packages, so a worker starts in
// less CPU and keeps less memory (BENCH.md). Both come from one build
// (make build, the package, the image); a worker speaking another protocol
// version is refused at Hello.
const WorkerBinary = "winrmd-worker"

// findWorkerBinary opens WorkerBinary beside the daemon's executable, if it
// is there and only its owner (root or the daemon's user) can change it or
// its directory: the daemon runs it as root before the privilege drop.
// os.ErrNotExist when it is not installed.
func findWorkerBinary() (*os.File, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return nil, err
	}
	return workerBinaryIn(filepath.Dir(self))
}

// workerBinaryIn is findWorkerBinary for the directory dir. The directory
// is checked by path; the file, once opened, on its descriptor, which is
// what every worker is then executed from.
func workerBinaryIn(dir string) (*os.File, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if err := ownerOnly(dir, fi.Sys().(*syscall.Stat_t)); err != nil {
		return nil, err
	}
	return holdExecutable(filepath.Join(dir, WorkerBinary))
}

// heldExeFD is the descriptor a worker is given its own executable on,
// after its socket (workerFD): the worker marks it close-on-exec with every
// other inherited descriptor, so no command inherits it.
const heldExeFD = 4

// holdExecutable opens path as an O_PATH descriptor (close-on-exec in the
// daemon) and checks, on the descriptor, that it is a regular, executable
// file only its owner can change.
func holdExecutable(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not an executable file", path)
	}
	if err := ownerOnly(path, &syscall.Stat_t{Uid: st.Uid, Mode: st.Mode}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// ownerOnly refuses a file or directory that another user than root or
// the daemon's own can change.
func ownerOnly(path string, st *syscall.Stat_t) error {
	if (st.Uid != 0 && int(st.Uid) != os.Geteuid()) || st.Mode&0o022 != 0 {
		return fmt.Errorf("%s must be owned by root or the daemon's user and writable by its owner only", path)
	}
	return nil
}

// startedWithNoNewPrivs: the process had no_new_privs when it started.
// Read once, at package initialisation, before anything of ours can set
// the flag: later the confined spawn thread (which may be the main thread)
// carries it by design, and so does a test binary after a test that drops
// privileges in-process. The runtime runs package initialisation on the
// main thread, locked there, so a prctl reads the thread-group leader's
// flag: one system call in every process that links this package, the
// worker included, where /proc/self/status cost the worker's start 3% of
// its CPU.
var startedWithNoNewPrivs = func() bool {
	v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	return err == nil && v == 1
}()

// startingTimerSlack is the timer slack the process started with: the main
// thread's, read at package initialisation like startedWithNoNewPrivs (0 if
// unreadable). The kernel gives a new process the slack of the thread that
// forked it, and a daemon thread may carry the runtime sysmon's relaxed
// slack (procs.RelaxSysmon: the threads sysmon starts inherit it). A spawn
// thread therefore sets this value on itself before each worker it forks
// (keepStartingTimerSlack: one prctl), so that workers and the users'
// commands time their sleeps as the daemon's own start did, never with
// sysmon's 0.5 ms.
var startingTimerSlack, _ = unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)

// keepStartingTimerSlack sets startingTimerSlack on the calling (locked)
// thread.
func keepStartingTimerSlack() error {
	if startingTimerSlack <= 0 {
		return nil
	}
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(startingTimerSlack), 0, 0, 0); err != nil {
		return fmt.Errorf("isolation: timer slack %d ns on a spawn thread: %w", startingTimerSlack, err)
	}
	return nil
}

// selfAccount describes the daemon's own user.
func selfAccount() (Account, error) {
	a := Account{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Shell: "/bin/sh", Home: "/"}
	gs, err := unix.Getgroups()
	if err != nil {
		return a, err
	}
	for _, g := range gs {
		a.Groups = append(a.Groups, uint32(g))
	}
	if u, err := user.LookupId(strconv.Itoa(os.Getuid())); err == nil {
		a.Username, a.Home = u.Username, u.HomeDir
	} else {
		a.Username = "uid" + strconv.Itoa(os.Getuid())
	}
	if sh := passwdShell(a.UID); sh != "" {
		a.Shell = sh
	}
	return a, nil
}

// passwdShell reads the login shell of uid from /etc/passwd ("" if absent).
func passwdShell(uid uint32) string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ":")
		if len(p) == 7 && p[2] == strconv.FormatUint(uint64(uid), 10) {
			return p[6]
		}
	}
	return ""
}

// buildEnv is the worker's complete environment: the account's clean
// variables, LANG, then the shell's own Environment.
func buildEnv(a Account, extra map[string]string) ([]envVar, error) {
	path := defaultPath
	if a.UID == 0 {
		path = defaultRootPath
	}
	home := a.Home
	if home == "" {
		home = "/"
	}
	shell := a.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	env := map[string]string{
		"HOME": home, "USER": a.Username, "LOGNAME": a.Username, "SHELL": shell, "PATH": path,
	}
	for k, v := range extra {
		if !validEnvKey(k) || strings.ContainsRune(k, 0) || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("isolation: invalid environment variable %q", k)
		}
		env[k] = v
	}
	if _, ok := env["LANG"]; !ok {
		env["LANG"] = "C.UTF-8"
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]envVar, 0, len(keys))
	for _, k := range keys {
		out = append(out, envVar{Key: k, Value: env[k]})
	}
	return out, nil
}

func limitValue(v int) int {
	if v <= 0 || v >= 2147483647 { // configs.Unlimited
		return 0
	}
	return v
}

// Close kills the pooled workers and removes the cgroup parents the spawner
// used when they are empty (removeParents); the daemon calls it at a clean
// shutdown, after every shell is closed.
func (s *procSpawner) Close() error {
	if s.stopLateReap != nil {
		s.stopLateReap()
	}
	s.pool.close()
	err := s.cg.removeParents()
	if s.exeHeld != nil {
		s.exeHeld.Close()
		s.exeHeld = nil
	}
	return err
}

// PoolStats reports the pool of pre-started workers (zero when off).
func (s *procSpawner) PoolStats() PoolStats {
	st := s.pool.stats()
	st.Cold = s.cold.Load()
	return st
}

// Spawn starts the worker of one shell and returns once it runs as the
// account, inside its cgroup.
func (s *procSpawner) Spawn(ctx context.Context, req SpawnRequest) (Worker, error) {
	acct := req.Account
	if s.opts.Lab {
		acct = s.lab
	}
	log := s.log.With(slog.String("shell_id", req.ShellID), slog.String("user", acct.Username))
	if acct.Username == "" {
		return nil, errors.New("isolation: refusing an account without a name")
	}
	if acct.UID == 0 && !s.opts.AllowRoot {
		return nil, fmt.Errorf("isolation: %w", ErrRootRefused)
	}
	extraEnv := req.Env
	var ccDir string
	if len(req.Credentials) > 0 {
		var ccName string
		var err error
		ccDir, ccName, err = writeCCache(acct, req.ShellID, req.Credentials, !s.opts.Lab)
		if err != nil {
			log.Warn("delegated credentials not written; refusing the shell", slog.Any("error", err))
			return nil, err
		}
		log.Info("delegated Kerberos credentials written for the shell", slog.String("ccache", ccName))
		extraEnv = make(map[string]string, len(req.Env)+1)
		for k, v := range req.Env {
			extraEnv[k] = v
		}
		extraEnv["KRB5CCNAME"] = ccName
	}
	spawned := false
	defer func() {
		if !spawned && ccDir != "" {
			_ = removeCCache(ccDir)
		}
	}()
	env, err := buildEnv(acct, extraEnv)
	if err != nil {
		return nil, err
	}
	memMB, maxProcs := limitValue(req.Limits.MemoryMB), limitValue(req.Limits.MaxProcesses)
	setup := msgSetup{
		UID: acct.UID, GID: acct.GID, Groups: acct.Groups,
		User: acct.Username, Home: acct.Home, Shell: acct.Shell, Dir: req.Dir,
		Env: env, MemoryMB: uint64(memMB), MaxProcs: uint32(maxProcs),
		ParentPid: uint32(os.Getpid()), ShellIDLog: truncate(req.ShellID, maxIDLen),
	}
	if s.opts.Lab {
		setup.Flags |= setupLab
	}
	if s.opts.AllowRoot {
		setup.Flags |= setupAllowRoot
	}
	if req.AllowNewPrivileges && s.sc == nil && !s.nnpInherited {
		// A sidecar worker joins another container's namespaces from a
		// thread that carries no_new_privs: what the container's setuid
		// programs could do there is the container's business, not a
		// remote shell's.
		setup.Flags |= setupNewPrivs
	}
	if maxProcs > 0 && !s.cg.pids {
		setup.Flags |= setupNprocLimit
		log.Warn("no pids cgroup: limiting processes with RLIMIT_NPROC, which counts all of the user's processes on the host")
	}
	if memMB > 0 && !s.cg.memory {
		log.Warn("no memory cgroup: the shell's memory limit is not enforced")
	}
	if err := checkOutgoing(setup); err != nil {
		return nil, fmt.Errorf("isolation: shell setup: %w", err)
	}

	var th *sidecarThread
	if s.sc != nil {
		var tpid int
		th, tpid, err = s.sc.thread()
		if err != nil {
			log.Warn("sidecar target unavailable; refusing the shell", slog.Any("error", err))
			return nil, err
		}
		// The worker's parent is outside its pid namespace: it reads
		// getppid() as 0, so Setup names none.
		setup.ParentPid = 0
		log = log.With(slog.Int("sidecar_target_pid", tpid))
	}
	var w *workerHandle
	if l := s.pool.take(setup.Flags&setupNewPrivs != 0); l != nil {
		w, err = s.assignPooled(ctx, log, l, acct, setup, memMB, maxProcs, req.NoProfile)
		if err != nil && !errors.Is(err, errPooledDied) {
			log.Warn("worker setup failed", slog.Any("error", err))
			return nil, err
		}
	}
	if w == nil {
		s.cold.Add(1)
		cg, err := s.cg.create(req.ShellID, memMB)
		if err != nil {
			if th != nil {
				th.release()
			}
			return nil, err
		}
		w, err = s.start(ctx, log, acct, setup, cg, maxProcs, req.NoProfile, th)
		if err != nil {
			cg.discard()
			log.Warn("worker spawn failed", slog.Any("error", err))
			return nil, err
		}
	}
	w.ccacheDir = ccDir
	spawned = true
	return w, nil
}

// osProcess is the real worker process; one goroutine reaps it.
type osProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	state  string

	// reapMu: the reaper holds it to reap, pinned holds it to read
	// the process tree below the worker, whose pid is stable until reaped.
	reapMu sync.RWMutex
	reaped bool
}

func (p *osProcess) Kill() error             { return p.cmd.Process.Kill() }
func (p *osProcess) Exited() <-chan struct{} { return p.exited }
func (p *osProcess) State() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// pinned runs f while the worker is not reaped (so its pid is its own) and
// reports false, without running f, once it has been.
func (p *osProcess) pinned(f func()) bool {
	p.reapMu.RLock()
	defer p.reapMu.RUnlock()
	if p.reaped {
		return false
	}
	f()
	return true
}

func (p *osProcess) wait() {
	awaitExit(p.cmd.Process.Pid)
	p.reapMu.Lock()
	err := p.cmd.Wait()
	p.reaped = true
	p.reapMu.Unlock()
	st := "exited"
	if p.cmd.ProcessState != nil {
		st = p.cmd.ProcessState.String()
	} else if err != nil {
		st = err.Error()
	}
	p.mu.Lock()
	p.state = st
	p.mu.Unlock()
	close(p.exited)
}

// awaitExit returns once the child pid has exited, without reaping it. It
// parks in the runtime's poller on a pidfd, so a live worker costs the
// daemon no OS thread blocked in wait (200 shells would be 200 threads);
// where pidfds cannot be polled it blocks in waitid(WNOWAIT) instead.
func awaitExit(pid int) {
	exited := func() bool {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		// No waitable child: signo 0. An error (ECHILD) must not spin.
		return err != nil || info.Signo != 0
	}
	if pollExit(pid, exited) {
		return
	}
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// pollExit waits in the poller until pid's pidfd is readable and exited
// says so; false if the pidfd cannot be polled.
func pollExit(pid int, exited func() bool) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	return pollPidfd(fd, exited)
}

// pollPidfd is pollExit on an open pidfd, which it closes.
func pollPidfd(fd int, exited func() bool) bool {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return false
	}
	f := os.NewFile(uintptr(fd), "pidfd") // non-blocking: registered with the poller
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	return rc.Read(func(uintptr) bool { return exited() }) == nil
}

// launched is a worker process that has said Hello and waits, still the
// daemon's user with no account and no secret, for its Setup: the state a
// pooled worker (pool.go) waits in, and the midpoint of every cold start.
type launched struct {
	pid    int
	proc   *osProcess
	conn   *net.UnixConn
	stderr *stderrLog
	cg     *shellCgroup // nil without cgroups
	// newPrivs: forked from privilegedSpawns (no no_new_privs); only a
	// Setup with setupNewPrivs may be sent to it, and only a Setup without
	// it to the others (the flag cannot be cleared once set).
	newPrivs bool
	born     time.Time
	pooled   bool // started by the pool, before any shell asked
}

// discard kills a launched worker that will serve no shell and waits for
// it, up to wait; its cgroup is the caller's.
func (l *launched) discard(wait time.Duration) {
	_ = l.proc.Kill()
	select {
	case <-l.proc.exited:
	case <-time.After(wait):
	}
	l.conn.Close()
	l.stderr.finish(time.Second)
}

func (s *procSpawner) start(ctx context.Context, log *slog.Logger, acct Account, setup msgSetup, cg *shellCgroup, maxProcs int, noProfile bool, th *sidecarThread) (*workerHandle, error) {
	l, err := s.launch(ctx, log, cg, setup.Flags&setupNewPrivs != 0, th)
	if err != nil {
		return nil, err
	}
	return s.assign(ctx, log, l, acct, setup, maxProcs, noProfile)
}

// launch starts a worker process inside cg and reads its Hello.
func (s *procSpawner) launch(ctx context.Context, log *slog.Logger, cg *shellCgroup, newPrivs bool, th *sidecarThread) (_ *launched, err error) {
	spawnOn := confinedSpawns.run
	if newPrivs {
		spawnOn = privilegedSpawns.run
	}
	started := false // a worker process exists (from then on its reaping releases th)
	if th != nil {
		spawnOn = th.run // born inside the sidecar target's namespaces
		defer func() {
			if !started {
				th.release()
			}
		}()
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("isolation: socketpair: %w", err)
	}
	// The kernel attaches the sender's pid/uid/gid to what we receive, so
	// the worker's answers carry the kernel's word on who sent them.
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("isolation: SO_PASSCRED: %w", err)
	}
	// Room in the daemon's send buffer for a whole Stdin frame (maxStdinChunk
	// plus its head; the kernel doubles the value for its bookkeeping):
	// a Send's data then goes into the socket at once and its response
	// leaves while the worker reads it, instead of after the worker has
	// read what exceeds the default 208 KiB (a 375 KB Send of a stdin
	// stream: more than half). Nothing is reserved: the buffer only bounds
	// what may be queued, and one Stdin frame per command is in flight.
	// Raising it past net.core.wmem_max takes CAP_NET_ADMIN (FORCE); a
	// daemon without it keeps what SO_SNDBUF allows.
	if unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, stdinSockBuf) != nil {
		_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, stdinSockBuf)
	}
	parentF := os.NewFile(uintptr(fds[0]), "winrmd-daemon-socket")
	childF := os.NewFile(uintptr(fds[1]), "winrmd-worker-socket")
	fc, err := net.FileConn(parentF)
	parentF.Close()
	if err != nil {
		childF.Close()
		return nil, fmt.Errorf("isolation: socket: %w", err)
	}
	conn := fc.(*net.UnixConn)
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		conn.Close()
		childF.Close()
		return nil, err
	}
	// A worker born in a sidecar target's pid namespace reads getppid() as
	// 0, which Go's fork takes for a dead parent when Pdeathsig is set (the
	// child signals itself before exec). The worker arms the same signal
	// itself (armParentDeath) first thing; until then a daemon that died
	// leaves it waiting for a Setup that ends at EOF.
	pdeath := syscall.SIGTERM
	if th != nil {
		pdeath = 0
	}
	path, extra := s.exe, []*os.File{childF} // fd 3
	if s.exeHeld != nil {
		path, extra = "/proc/self/fd/"+strconv.Itoa(heldExeFD), append(extra, s.exeHeld)
	}
	newCmd := func() *exec.Cmd {
		return &exec.Cmd{
			Path: path,
			Args: []string{"winrmd", "worker"},
			// Clean: the worker's environment comes in Setup, which
			// replaces this. One P bounds the threads the Go runtime wants
			// (see warmThreadCount) on any host, and is plenty to move one
			// shell's bytes; no allocation of a short-lived worker is worth
			// sampling for a memory profile nobody reads.
			Env:        []string{"GOMAXPROCS=1", "GODEBUG=memprofilerate=0"},
			Dir:        "/",
			ExtraFiles: extra,
			Stderr:     stderrW,
			SysProcAttr: &syscall.SysProcAttr{
				Setsid:    true,
				Pdeathsig: pdeath,
			},
		}
	}
	cmd := newCmd()
	// cgroup v2: the worker is born in the shell's group (clone3 with
	// CLONE_INTO_CGROUP) rather than moved there after it started. A move
	// takes the kernel's global cgroup_threadgroup_rwsem for writing, which
	// holds up the worker's runtime start-up (and every fork and new thread
	// on the host) for an RCU grace period. Kernels before 5.7 refuse the
	// flag; the worker is then started plainly and moved.
	bornIn := false
	if cg != nil && cg.sys.mode == cgroupV2 {
		if fd, err := unix.Open(cg.dirs[""], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
			bornIn = spawnOn(cmd.Start) == nil
			unix.Close(fd)
			if !bornIn {
				cmd = newCmd()
			}
		}
	}
	if !bornIn {
		err = spawnOn(cmd.Start)
	}
	childF.Close()
	stderrW.Close()
	if err != nil {
		conn.Close()
		stderrR.Close()
		return nil, fmt.Errorf("isolation: starting the worker: %w", err)
	}
	pid := cmd.Process.Pid
	proc := &osProcess{cmd: cmd, exited: make(chan struct{})}
	go proc.wait()
	started = true
	if th != nil {
		// The worker's parent-death signal is tied to th: th may end only
		// once the worker is reaped.
		go func() {
			<-proc.exited
			th.release()
		}()
	}
	log = log.With(slog.Int("pid", pid))
	l := &launched{pid: pid, proc: proc, conn: conn, stderr: newStderrLog(stderrR, log), cg: cg, newPrivs: newPrivs, born: time.Now()}
	defer func() {
		if err != nil {
			// Before Setup the worker has no children: it alone is killed.
			l.discard(5 * time.Second)
		}
	}()

	// Into the cgroup before the worker learns whom to become.
	if !bornIn {
		if err := cg.add(pid); err != nil {
			return nil, err
		}
	}

	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(hctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	typ, p, cred, err := readFrameCred(conn)
	if err != nil {
		if hctx.Err() != nil {
			return nil, fmt.Errorf("isolation: worker handshake: %w (waiting for the worker's Hello: %v)", hctx.Err(), err)
		}
		return nil, fmt.Errorf("isolation: waiting for the worker's Hello: %w", err)
	}
	if typ != tHello {
		return nil, fmt.Errorf("isolation: %w: expected Hello, got frame 0x%02x", ErrProtocol, typ)
	}
	m, err := decodeWorkerToDaemon(typ, p)
	if err != nil {
		return nil, fmt.Errorf("isolation: %w: %w", ErrProtocol, err)
	}
	hello := m.(msgHello)
	if hello.Version != protoVersion {
		return nil, fmt.Errorf("isolation: worker speaks protocol %d, want %d", hello.Version, protoVersion)
	}
	wantHello := pid
	if th != nil {
		// Inside the target's pid namespace the worker knows itself by
		// another number; the kernel (cred.Pid) still names it as we do.
		if wantHello, err = nsPid(pid); err != nil {
			return nil, fmt.Errorf("isolation: sidecar worker: %w", err)
		}
	}
	if int(hello.Pid) != wantHello || int(cred.Pid) != pid || cred.Uid != uint32(os.Getuid()) {
		return nil, fmt.Errorf("isolation: %w: Hello from pid %d (kernel says pid %d uid %d), expected pid %d",
			ErrProtocol, hello.Pid, cred.Pid, cred.Uid, pid)
	}
	if !stop() {
		// The deadline fired after the Hello was read: clear it.
		_ = conn.SetReadDeadline(time.Time{})
	}
	return l, nil
}

// assign turns a launched worker into the shell's: its pids limit, then
// Setup, then the kernel's and /proc's word that it became the account.
// On error the worker is killed (and anything it started).
func (s *procSpawner) assign(ctx context.Context, log *slog.Logger, l *launched, acct Account, setup msgSetup, maxProcs int, noProfile bool) (_ *workerHandle, err error) {
	pid, conn, cg := l.pid, l.conn, l.cg
	log = log.With(slog.Int("pid", pid))
	l.stderr.log.Store(log)
	reap := newShellReaper(cg, l.proc, pid, acct.UID)
	h := newWorkerHandle(log, pid, conn, nil, l.proc, reap)
	h.budget, h.uid = s.opts.OutputBudget, acct.UID
	h.stderr = l.stderr
	defer func() {
		if err != nil {
			_ = l.proc.Kill()
			select {
			case <-l.proc.exited:
			case <-time.After(5 * time.Second):
			}
			_ = reap.sweep(false)
			conn.Close()
			l.stderr.finish(time.Second)
		}
	}()
	if (setup.Flags&setupNewPrivs != 0) != l.newPrivs {
		return nil, fmt.Errorf("isolation: a worker forked with new privileges %v cannot serve a shell that asks for %v",
			l.newPrivs, setup.Flags&setupNewPrivs != 0)
	}

	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(hctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error) error {
		if hctx.Err() != nil {
			return fmt.Errorf("isolation: worker handshake: %w (%v)", hctx.Err(), err)
		}
		return err
	}

	b, err := appendFrame(nil, setup)
	if err != nil {
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	if _, err := conn.Write(b); err != nil {
		return nil, fail(fmt.Errorf("isolation: sending Setup: %w", err))
	}
	_ = conn.SetWriteDeadline(time.Time{})

	typ, p, cred, err := readFrameCred(conn)
	if err != nil {
		return nil, fail(fmt.Errorf("isolation: waiting for the worker's setup: %w", err))
	}
	m, err := decodeWorkerToDaemon(typ, p)
	if err != nil {
		return nil, fmt.Errorf("isolation: %w: %w", ErrProtocol, err)
	}
	switch m := m.(type) {
	case msgSetupOK:
	case msgSetupErr:
		if m.Code == setupErrDir {
			return nil, fmt.Errorf("isolation: %w: %s", ErrWorkingDir, m.Msg)
		}
		return nil, fmt.Errorf("isolation: worker setup failed: %s", m.Msg)
	case msgFatal:
		return nil, fmt.Errorf("isolation: worker setup failed: %s", m.Msg)
	default:
		return nil, fmt.Errorf("isolation: %w: expected SetupOK, got frame 0x%02x", ErrProtocol, typ)
	}
	// The kernel's account of who sent SetupOK, then /proc's of every id.
	if int(cred.Pid) != pid || cred.Uid != acct.UID || cred.Gid != acct.GID {
		return nil, fmt.Errorf("isolation: %w: SetupOK sent by pid %d uid %d gid %d, expected pid %d uid %d gid %d",
			ErrProtocol, cred.Pid, cred.Uid, cred.Gid, pid, acct.UID, acct.GID)
	}
	if err := verifyWorkerStatus(pid, acct, setup.Flags&setupNewPrivs == 0); err != nil {
		return nil, fmt.Errorf("isolation: worker credentials: %w", err)
	}
	if h.pids = newPidsLimit(cg, maxProcs); h.pids != nil {
		// The worker's own threads are not the shell's processes: they are
		// added to the budget. After SetupOK: warmThreads made them during
		// Setup, and no command runs before the first Start.
		if err := h.pids.set(pid); err != nil {
			return nil, fmt.Errorf("isolation: pids limit: %w", err)
		}
	}
	stop()
	_ = conn.SetReadDeadline(time.Time{})
	if err := setPassCred(conn, false); err != nil {
		return nil, err
	}
	h.r = bufio.NewReaderSize(conn, frameReadSmall)
	h.run()
	mode := "none"
	if cg != nil {
		mode = cg.sys.mode.String()
	}
	log.Info("worker started", slog.String("cgroup", mode), slog.Uint64("uid", uint64(acct.UID)), slog.Bool("no_profile", noProfile),
		slog.Bool("new_privileges", setup.Flags&setupNewPrivs != 0), slog.Bool("prestarted", l.pooled))
	return h, nil
}

func setPassCred(conn *net.UnixConn, on bool) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	v := 0
	if on {
		v = 1
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, v)
	}); err != nil {
		return err
	}
	return serr
}

// readFrameCred reads one frame without read-ahead, with the credentials the
// kernel attached to its bytes; all of them must come from one sender.
func readFrameCred(conn *net.UnixConn) (byte, []byte, *unix.Ucred, error) {
	var hdr [frameHeader]byte
	cred, err := readFullCred(conn, hdr[:], nil)
	if err != nil {
		return 0, nil, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n == 0 {
		return 0, nil, nil, fmt.Errorf("%w: %w", ErrProtocol, errFrameEmpty)
	}
	if n-1 > maxMsgLen+64 { // handshake frames are small
		return 0, nil, nil, fmt.Errorf("%w: %w: %d bytes", ErrProtocol, errFrameTooLarge, n)
	}
	p := make([]byte, n-1)
	if cred, err = readFullCred(conn, p, cred); err != nil {
		return 0, nil, nil, err
	}
	return hdr[4], p, cred, nil
}

func readFullCred(conn *net.UnixConn, b []byte, want *unix.Ucred) (*unix.Ucred, error) {
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	got := want
	for off := 0; off < len(b); {
		n, oobn, _, _, err := conn.ReadMsgUnix(b[off:], oob)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, io.ErrUnexpectedEOF
		}
		var c *unix.Ucred
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for i := range cmsgs {
				if uc, err := unix.ParseUnixCredentials(&cmsgs[i]); err == nil {
					c = uc
				}
			}
		}
		if c == nil {
			return nil, fmt.Errorf("%w: no sender credentials on the socket", ErrProtocol)
		}
		if got != nil && *c != *got {
			return nil, fmt.Errorf("%w: one frame from two senders", ErrProtocol)
		}
		got = c
		off += n
	}
	return got, nil
}

// verifyWorkerStatus checks /proc/<pid>/status of the (unreaped, so not
// recyclable) worker: all four uids and gids, the groups, no capabilities
// for a non-root account, and no_new_privs exactly as asked for (the worker
// checks its own capability bounding set: only its command thread's counts).
func verifyWorkerStatus(pid int, acct Account, noNewPrivs bool) error {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return err
	}
	st := string(data)
	if msg := checkStatus(st, acct.UID, acct.GID, false); msg != "" {
		return errors.New(msg)
	}
	var groups []int
	nnp := false
	for _, line := range strings.Split(st, "\n") {
		if v, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, f := range strings.Fields(v) {
				g, err := strconv.Atoi(f)
				if err != nil {
					return fmt.Errorf("bad Groups line %q", line)
				}
				groups = append(groups, g)
			}
		}
		if v, ok := strings.CutPrefix(line, "NoNewPrivs:"); ok {
			nnp = strings.TrimSpace(v) == "1"
		}
	}
	if !sameGroups(groups, acct.Groups) {
		return fmt.Errorf("groups %v, want %v", groups, acct.Groups)
	}
	if nnp != noNewPrivs {
		return fmt.Errorf("no_new_privs is %v, want %v", nnp, noNewPrivs)
	}
	return nil
}

// The spawn threads: every worker is forked from one of two OS threads,
// each locked to its goroutine for the life of the daemon, so the
// parent-death signal, which fires when the forking *thread* exits, only
// fires when the daemon itself dies.
//
// confinedSpawns carries no_new_privs, so each worker of a shell that may
// not gain privileges has it from its first instruction, on every thread
// its runtime makes (the flag is inherited at clone), which a Go process
// cannot arrange for itself afterwards when cgo is linked. no_new_privs on
// this one daemon thread only affects what it executes: workers, which never
// gain privileges by exec anyway. privilegedSpawns does not: its workers'
// commands may run sudo (winrs.allow_new_privileges).
var (
	confinedSpawns   = &spawnThread{noNewPrivs: true}
	privilegedSpawns = &spawnThread{}
)

type spawnThread struct {
	noNewPrivs bool
	once       sync.Once
	err        error
	reqs       chan func()
}

// run runs f on the thread (started on first use).
func (t *spawnThread) run(f func() error) error {
	t.once.Do(func() {
		t.reqs = make(chan func())
		ready := make(chan error)
		go func() {
			runtime.LockOSThread() // never unlocked
			if t.noNewPrivs {
				if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
					ready <- fmt.Errorf("isolation: no_new_privs on the spawn thread: %w", err)
					return
				}
			}
			ready <- nil
			for req := range t.reqs {
				req()
			}
		}()
		t.err = <-ready
	})
	if t.err != nil {
		return t.err
	}
	var err error
	done := make(chan struct{})
	t.reqs <- func() {
		defer close(done)
		if err = keepStartingTimerSlack(); err == nil {
			err = f()
		}
	}
	<-done
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
