package isolation

// The process tree: how the processes of a shell are found and killed, for
// the daemon (handle.go, spawner.go) and for the worker (worker_loop.go),
// and the one place that reads processes out of /proc.
//
// # Which processes are a shell's
//
// A worker is a child subreaper and leads its own session, so while it is
// alive every process of its shell is below it in the process tree: a
// process orphaned anywhere below is re-parented to the nearest subreaper
// above it, which is the worker or a process below it. Where the daemon has
// a cgroup per shell (cgroup.go), the cgroup holds them too, including what
// escaped the tree (a process that outlived its worker, or called setsid).
//
// # One kill strategy per shell, chosen once
//
// The spawner chooses when it starts (newProcSpawner, from what
// detectCgroups found) and gives every shell the same shellReaper:
//
//   - cgroupReaper, wherever a memory or pids cgroup is usable: the whole
//     group dies by one write to cgroup.kill (cgroup v2, kernel 5.14 and
//     later; where the kernel lacks the file the write fails at once),
//     else by freeze, kill each member through a pidfd after checking it
//     is still a member, thaw, until the group is empty (v1 freezer, or v2
//     cgroup.freeze). The freezer is what makes it race-free: a frozen
//     group cannot fork, and a stopped (SIGSTOP) process is killed as
//     well. It is the only strategy that holds a process that left the
//     tree and the session.
//   - treeReaper otherwise: a walk of the tree below the worker, then a
//     sweep of the worker's session (a process that calls setsid and is
//     orphaned to init escapes both; only a cgroup holds it).
//
// The walk reads /proc/<tid>/task/<tid>/children of the shell's own
// processes only, so it costs O(the shell's processes), whatever else runs
// on the host. Before it, Close scanned the stat file of every process on
// the host every 5 ms until the worker had no child: in `make bench`'s row
// of 200 concurrent shells that scan was 24-36% of the daemon's CPU
// samples, O(shells x host processes); with the walk Close fell to 5.8%
// (BENCH.md, "200 concurrent shells"). BenchmarkShellTree, a shell of 11
// processes on a host of 109 (2 CPUs, 2026-12-06): the walk finds them in
// 0.17 ms, the scan in 2.1 ms. The scan is kept only for a kernel
// without children files (CONFIG_PROC_CHILDREN) or pidfds (before 5.3):
// treeWalkable probes both once per process, the daemon and each worker.
//
// The cgroup costs more per shell (BenchmarkSpawnClose, same host, cgroup
// v1: 8.8-8.9 CPU ms per shell against 7.0-7.3 with the tree alone: the
// groups' mkdir, limits, kill loop and rmdir), and is still the choice
// wherever it exists: it holds the memory and process limits, and it is
// the only hold on a process that leaves the tree.
//
// Both strategies kill every process but the worker first and let the
// worker, a subreaper that reaps on SIGCHLD, collect them, so not even a
// zombie is left to init; then the worker dies and is reaped.
//
// # Reading /proc
//
// The walk runs in every Close (and in the worker's shutdown), so its
// reads are raw syscalls into one reused buffer (readSmallFile,
// readDirNames) and /proc/<pid>/stat is parsed without allocating
// (procPPid, parseStat). Everything off that path (a scan of every process, the
// daemon's own cgroups and mounts at start-up in cgroup.go, a sidecar
// target's name and pid-namespace number) goes through the small parsers
// of procread.go. The worker's credentials after the drop are
// checked from /proc/<pid>/status in drop.go (checkStatus), which the
// privilege drop owns.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// shellReaper kills the processes of one shell for the daemon's handle.
type shellReaper interface {
	// killAll kills every process of the shell after the worker ended
	// unexpectedly: nothing can control them any more.
	killAll() error
	// drain kills every process of the shell but the worker and waits
	// until the worker has reaped them. It first waits for startsIdle
	// (non-nil: Start frames the worker has not answered, after which it
	// may still fork) unless done closes. complete reports that the shell
	// was seen with nothing left but the worker, which forks nothing more.
	drain(startsIdle, done <-chan struct{}) (complete bool, err error)
	// sweep runs once the worker is reaped, with drain's complete: what
	// was forked meanwhile, or went to init, dies; the cgroup goes.
	sweep(complete bool) error
}

// pinner is a process whose pid stays its own while pinned runs f: it is
// not reaped meanwhile. pinned reports false, without running f, once it
// has been reaped.
type pinner interface {
	pinned(f func()) bool
}

// newShellReaper is the strategy for a worker: its shell's cgroup where the
// spawner has cgroups, else the tree below it. pin keeps the worker's pid
// its own while the tree is read.
func newShellReaper(cg *shellCgroup, pin pinner, pid int, uid uint32) shellReaper {
	if cg != nil {
		return &cgroupReaper{cg: cg, tree: treeReaper{pin: pin, pid: pid, uid: uid}}
	}
	return &treeReaper{pin: pin, pid: pid, uid: uid}
}

// treeReaper finds a shell's processes below its worker and in its session.
type treeReaper struct {
	pin pinner
	pid int    // the worker
	uid uint32 // the account: the /proc scans kill only its processes
}

func (r *treeReaper) killAll() error {
	// Only if the worker somehow outlived its SIGKILL.
	r.pin.pinned(func() { killBelow(r.pid, r.uid) })
	killSession(r.pid, r.uid, -1)
	return nil
}

func (r *treeReaper) drain(startsIdle, done <-chan struct{}) (bool, error) {
	complete := awaitStarts(startsIdle, done)
	return r.reapBelow(true, time.Now().Add(2*time.Second)) && complete, nil
}

func (r *treeReaper) sweep(complete bool) error {
	if !complete {
		// The walk did not finish (the worker died or stalled, or a Start
		// went unanswered): what is left went to init. Sweep the worker's
		// session, a scan of /proc, off the usual path.
		killSession(r.pid, r.uid, -1)
	}
	return nil
}

// cgroupReaper kills through the shell's cgroup, and reaps below the worker.
type cgroupReaper struct {
	cg   *shellCgroup
	tree treeReaper
}

func (r *cgroupReaper) killAll() error { return r.cg.kill(10 * time.Second) }

func (r *cgroupReaper) drain(startsIdle, done <-chan struct{}) (bool, error) {
	complete := awaitStarts(startsIdle, done)
	err := r.cg.killExcept(10*time.Second, r.tree.pid)
	return r.tree.reapBelow(false, time.Now().Add(2*time.Second)) && complete, err
}

func (r *cgroupReaper) sweep(bool) error {
	// Anything forked between the kill and the worker's death.
	return errors.Join(r.cg.kill(5*time.Second), r.cg.remove())
}

// awaitStarts waits until every Start sent has been answered (startsIdle
// closes; nil: none pending), at most 2 s: a Start still on its way may
// fork after the walk. false if the worker ended or the wait timed out.
func awaitStarts(startsIdle, done <-chan struct{}) bool {
	if startsIdle == nil {
		return true
	}
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-startsIdle:
		return true
	case <-done:
	case <-t.C:
	}
	return false
}

// reapBelow kills every process below the worker, round after round, until
// the worker (a subreaper that reaps on SIGCHLD) has no child left, not even
// a zombie, or until deadline. It reports whether it saw no child left, in
// two rounds in a row. Each round reads the children files of the shell's
// processes only; the worker is pinned while they are read. Without
// children files each check is a scan of /proc, and session also sweeps
// the worker's session first.
func (r *treeReaper) reapBelow(session bool, deadline time.Time) bool {
	empty := 0
	for pause := 250 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		found := 0
		if !r.pin.pinned(func() { found = killBelow(r.pid, r.uid) }) {
			return false // the worker is gone
		}
		if found < 0 {
			// No children files: the old way, a scan of /proc per check.
			if session {
				killSession(r.pid, r.uid, r.pid)
			}
			for {
				n := 0
				if !r.pin.pinned(func() { n = len(childrenOfScan(r.pid)) }) {
					return false
				}
				if n == 0 {
					return true
				}
				if time.Now().After(deadline) {
					return false
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		if found == 0 {
			if empty++; empty == 2 {
				return true
			}
			continue // look once more, at once
		}
		empty = 0
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
}

// killBelow kills every process below the (pinned) root: through the
// children files, or, without them, by scanning /proc for its descendants
// of uid. It reports how many the walk found (-1 after a scan).
func killBelow(root int, uid uint32) int {
	if treeWalkable() {
		return killTree(root)
	}
	killDescendants(root, uid)
	return -1
}

// treeWalkable reports whether the kernel has the children files
// (CONFIG_PROC_CHILDREN) and pidfds (5.3): the walk needs both. Probed once
// per process.
var treeWalkable = sync.OnceValue(func() bool {
	if _, err := os.Stat(threadFile(strconv.Itoa(unix.Gettid()), "children")); err != nil {
		return false
	}
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
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
// Only where treeWalkable.
func killTree(root int) (found int) {
	var buf []byte
	var walk func(pid, pidfd int)
	walk = func(pid, pidfd int) {
		kids := taskChildren(pid, &buf)
		found += len(kids) // what vanished meanwhile is looked for again
		for _, c := range kids {
			fd, err := unix.PidfdOpen(c, 0)
			if err != nil {
				continue // reaped since it was listed (or out of fds)
			}
			if procPPid(c, &buf) != pid || (pidfd >= 0 && unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil) {
				unix.Close(fd) // moved, or listed under a recycled pid
				continue
			}
			walk(c, fd)
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			unix.Close(fd)
		}
	}
	walk(root, -1)
	return found
}

// procPPid is the parent of pid from /proc/<pid>/stat, -1 when it is gone:
// the walk's one read, into *buf, parsed by parseStat (procread.go).
func procPPid(pid int, buf *[]byte) int {
	b, err := readSmallFile("/proc/"+strconv.Itoa(pid)+"/stat", buf)
	if err != nil {
		return -1
	}
	st, ok := parseStat(b)
	if !ok {
		return -1
	}
	return st.PPID
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

// countTasks is the number of threads of pid.
func countTasks(pid int) int {
	var buf []byte
	tids, err := readDirNames("/proc/"+strconv.Itoa(pid)+"/task", &buf)
	if err != nil {
		return 0
	}
	return len(tids)
}

// --- scans of every process on the host (off the usual path) ---

// allStats is the stat file of every process on the host; a process that
// ends meanwhile is left out.
func allStats() []procStat {
	var buf []byte
	pids := allPids(&buf)
	out := make([]procStat, 0, len(pids))
	for _, pid := range pids {
		b, err := readSmallFile("/proc/"+strconv.Itoa(pid)+"/stat", &buf)
		if err != nil {
			continue
		}
		if st, ok := parseStat(b); ok {
			out = append(out, st)
		}
	}
	return out
}

// procUID is the owner of /proc/<pid>: the process's effective uid.
func procUID(pid int) uint32 {
	var st unix.Stat_t
	if unix.Stat("/proc/"+strconv.Itoa(pid), &st) != nil {
		return 1<<32 - 1
	}
	return st.Uid
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

// descendants lists every process below root, breadth first.
func descendants(root int) []int {
	children := map[int][]int{}
	for _, st := range allStats() {
		children[st.PPID] = append(children[st.PPID], st.PID)
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
	var buf []byte
	for i := 0; i < 4096 && pid > 1; i++ {
		pp := procPPid(pid, &buf)
		if pp == root {
			return true
		}
		pid = pp
	}
	return false
}

// childrenOfScan lists the children of pid by reading the stat file of
// every process on the host (only without children files).
func childrenOfScan(pid int) []int {
	var out []int
	for _, st := range allStats() {
		if st.PPID == pid {
			out = append(out, st.PID)
		}
	}
	return out
}

// killSession kills every process of uid whose session is sid, except skip.
// It is how a shell's processes are found without a cgroup: the worker is
// its session's leader and commands only change their process group.
// (A process that calls setsid itself escapes this; only a cgroup holds it.)
// A session id cannot be recycled while any member lives, so this never
// hits a stranger.
func killSession(sid int, uid uint32, skip int) int {
	if sid <= 0 {
		// 0 is every session whose leader is outside our pid namespace.
		return 0
	}
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
	var out []int
	for _, st := range allStats() {
		if st.Session == sid && procUID(st.PID) == uid {
			out = append(out, st.PID)
		}
	}
	return out
}

// countTasksOfUID is the number of threads of every process whose real uid
// is uid, on the whole host (RLIMIT_NPROC's count).
func countTasksOfUID(uid uint32) int {
	var buf []byte
	total := 0
	for _, pid := range allPids(&buf) {
		b, err := readSmallFile("/proc/"+strconv.Itoa(pid)+"/status", &buf)
		if err != nil {
			continue
		}
		// Uid: real effective saved filesystem
		f := statusFields(b, "Uid:")
		if len(f) == 0 {
			continue
		}
		if real, ok := decimal(f[0]); !ok || real != int(uid) {
			continue
		}
		if b, err = readSmallFile("/proc/"+strconv.Itoa(pid)+"/stat", &buf); err != nil {
			continue
		}
		if st, ok := parseStat(b); ok {
			total += st.NumThreads
		}
	}
	return total
}

// lowestPidNamed is the lowest-numbered process whose comm is name (0:
// none): a sidecar target given by name (sidecar.go).
func lowestPidNamed(name string) (int, error) {
	var buf []byte
	best := 0
	for _, pid := range allPids(&buf) {
		if best != 0 && pid >= best {
			continue
		}
		if comm, err := readSmallFile("/proc/"+strconv.Itoa(pid)+"/comm", &buf); err == nil && string(bytes.TrimSuffix(comm, []byte{'\n'})) == name {
			best = pid
		}
	}
	return best, nil
}

// nsPid is pid's number in its innermost pid namespace (the NSpid line of
// /proc/<pid>/status), which is what a worker inside a sidecar target
// reports in its Hello.
func nsPid(pid int) (int, error) {
	var buf []byte
	b, err := readSmallFile("/proc/"+strconv.Itoa(pid)+"/status", &buf)
	if err != nil {
		return 0, err
	}
	f := statusFields(b, "NSpid:")
	if len(f) == 0 {
		return 0, fmt.Errorf("no NSpid in /proc/%d/status", pid)
	}
	n, ok := decimal(f[len(f)-1])
	if !ok {
		return 0, fmt.Errorf("bad NSpid in /proc/%d/status: %q", pid, f[len(f)-1])
	}
	return n, nil
}
