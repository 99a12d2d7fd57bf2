package isolation

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/winrmd/winrmd/session/obs"
)

func isRoot() bool { return os.Geteuid() == 0 }

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: spawns workers as a real test user")
	}
}

// testUser is a real Linux account made for one test (prefix wrmdtest),
// with its own group, one supplementary group and a home directory. Cleanup
// fails the test if any process of the user is left, kills them, and
// deletes the account.
type testUser struct {
	acct  Account
	extra uint32 // the supplementary group's gid
}

func newTestUser(t testing.TB) *testUser {
	t.Helper()
	requireRoot(t)
	name := "wrmdtest" + randomHex(3)
	grp := name + "g"
	home, err := os.MkdirTemp("/var/tmp", "wrmdtest-home-")
	if err != nil {
		t.Fatal(err)
	}
	runOK := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() {
		if u, err := user.Lookup(name); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			if live := livePids(uint32(uid)); len(live) > 0 {
				t.Errorf("live processes of %s left behind:\n%s", name, userProcs(u.Uid))
				exec.Command("pkill", "-9", "-u", u.Uid).Run()
			}
			// Zombies of processes orphaned to init (after a worker was
			// killed) are init's to reap, which it does within seconds.
			if !eventually(10*time.Second, func() bool { return userProcs(u.Uid) == "" }) {
				t.Errorf("processes of %s left behind:\n%s", name, userProcs(u.Uid))
			}
		}
		exec.Command("userdel", "-f", name).Run()
		exec.Command("groupdel", grp).Run()
		os.RemoveAll(home)
	})
	runOK("groupadd", grp)
	runOK("useradd", "-M", "-N", "-g", grp, "-d", home, "-s", "/bin/sh", name)
	// A second group, supplementary.
	runOK("groupadd", name+"x")
	t.Cleanup(func() { exec.Command("groupdel", name+"x").Run() })
	runOK("usermod", "-a", "-G", name+"x", name)

	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatal(err)
	}
	gids, err := u.GroupIds()
	if err != nil {
		t.Fatal(err)
	}
	tu := &testUser{acct: Account{Username: name, UID: uint32(uid), GID: uint32(gid), Home: home, Shell: "/bin/sh"}}
	for _, g := range gids {
		n, _ := strconv.Atoi(g)
		tu.acct.Groups = append(tu.acct.Groups, uint32(n))
		if n != gid {
			tu.extra = uint32(n)
		}
	}
	if tu.extra == 0 {
		t.Fatalf("no supplementary group in %v", gids)
	}
	return tu
}

// userProcs lists the processes of uid ("" when there are none).
func userProcs(uid string) string {
	out, _ := exec.Command("pgrep", "-a", "-u", uid).Output()
	return strings.TrimSpace(string(out))
}

// livePids lists the processes of uid that are not zombies.
func livePids(uid uint32) []int {
	var out []int
	for _, p := range userPidsExcept(uid, -1) {
		if alive(p) {
			out = append(out, p)
		}
	}
	return out
}

// userPidsExcept lists the pids of uid other than skip.
func userPidsExcept(uid uint32, skip int) []int {
	out, _ := exec.Command("pgrep", "-u", strconv.Itoa(int(uid))).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, _ := strconv.Atoi(f); p != 0 && p != skip {
			pids = append(pids, p)
		}
	}
	return pids
}

// testLogger is the test's log, through the daemon's own bridge from slog
// to zap (session/obs.Slog).
func testLogger(t testing.TB) *slog.Logger { return obs.Slog(zaptest.NewLogger(t)) }

func newTestSpawner(t testing.TB, opts SpawnerOptions) *procSpawner {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s, err := newProcSpawner(opts)
	if err != nil {
		t.Fatal(err)
	}
	// After the shells' own clean-ups (registered later, run earlier).
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("spawner Close: %v", err)
		}
	})
	return s
}

// spawn starts a worker for the user and closes it at the end of the test
// (before the user's cleanup checks for leftovers).
func spawn(t testing.TB, s *procSpawner, req SpawnRequest) (*workerHandle, *collector) {
	t.Helper()
	if req.ShellID == "" {
		req.ShellID = "wrmdtest-" + randomHex(6)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := s.Spawn(ctx, req)
	if err != nil {
		t.Fatalf("Spawn: %v", err)
	}
	h := w.(*workerHandle)
	c := newCollector(h)
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		c.wait()
	})
	return h, c
}

// collector drains Events, gives the window back (unless paused) and keeps
// each command's output and exit code.
type collector struct {
	w    Worker
	mu   sync.Mutex
	cond *sync.Cond
	out  map[string]*[3]bytes.Buffer
	exit map[string]int32
	// hold: output is kept but not Consumed until released.
	hold    bool
	held    map[string]int
	stopped chan struct{}
	// lastOut and exitAt: when the last output and the exit of each
	// command arrived (BenchmarkOutputToExitGap).
	lastOut, exitAt map[string]time.Time
	// viaEvents counts the events that came on Events; afterExit, output
	// given after its command's exit (TestEventSink).
	viaEvents, afterExit int
}

func newCollector(w Worker) *collector {
	c := &collector{w: w, out: map[string]*[3]bytes.Buffer{}, exit: map[string]int32{}, held: map[string]int{}, stopped: make(chan struct{}),
		lastOut: map[string]time.Time{}, exitAt: map[string]time.Time{}}
	c.cond = sync.NewCond(&c.mu)
	go c.loop()
	return c
}

func (c *collector) loop() {
	defer close(c.stopped)
	for ev := range c.w.Events() {
		c.mu.Lock()
		c.viaEvents++
		c.mu.Unlock()
		c.sink(ev)
	}
	c.mu.Lock()
	c.cond.Broadcast()
	c.mu.Unlock()
}

// sink records an event (from Events, or as the Worker's EventSink) and
// consumes output unless held.
func (c *collector) sink(ev Event) {
	c.mu.Lock()
	if ev.Kind == EventExit {
		c.exit[ev.CommandID] = ev.ExitCode
		c.exitAt[ev.CommandID] = time.Now()
		c.cond.Broadcast()
		c.mu.Unlock()
		return
	}
	if _, ok := c.exit[ev.CommandID]; ok {
		c.afterExit++
	}
	b := c.out[ev.CommandID]
	if b == nil {
		b = new([3]bytes.Buffer)
		c.out[ev.CommandID] = b
	}
	b[ev.Stream].Write(ev.Data)
	c.lastOut[ev.CommandID] = time.Now()
	hold := c.hold
	if hold {
		c.held[ev.CommandID] += len(ev.Data)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	if !hold {
		_ = c.w.Consumed(ev.CommandID, len(ev.Data))
	}
}

func (c *collector) wait() { <-c.stopped }

// setHold pauses (true) or resumes (false) consuming; resuming returns the
// held window.
func (c *collector) setHold(on bool) {
	c.mu.Lock()
	c.hold = on
	held := c.held
	c.held = map[string]int{}
	c.mu.Unlock()
	if !on {
		for id, n := range held {
			_ = c.w.Consumed(id, n)
		}
	}
}

// waitExit waits for a command's exit code.
func (c *collector) waitExit(t testing.TB, id string, timeout time.Duration) int32 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if code, ok := c.exit[id]; ok {
			return code
		}
		select {
		case <-c.stopped:
			t.Fatalf("worker ended before %s exited: %v", id, c.w.Err())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("command %s did not exit within %v", id, timeout)
		}
		c.cond.Wait()
	}
}

func (c *collector) output(id string, s Stream) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.out[id]; b != nil {
		return bytes.Clone(b[s].Bytes())
	}
	return nil
}

var cmdSeq struct {
	sync.Mutex
	n int
}

func nextID() string {
	cmdSeq.Lock()
	defer cmdSeq.Unlock()
	cmdSeq.n++
	return fmt.Sprintf("CMD-%d", cmdSeq.n)
}

// run starts a command, feeds stdin (with eof when stdin != nil) and waits
// for its exit.
func (c *collector) run(t testing.TB, spec CommandSpec, stdin []byte) (stdout, stderr string, code int32) {
	t.Helper()
	if spec.ID == "" {
		spec.ID = nextID()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.w.Start(ctx, spec); err != nil {
		t.Fatalf("Start %+v: %v", spec, err)
	}
	if stdin != nil {
		if err := c.w.Stdin(ctx, spec.ID, stdin, true); err != nil {
			t.Fatalf("Stdin: %v", err)
		}
	}
	code = c.waitExit(t, spec.ID, 60*time.Second)
	out, errb := c.output(spec.ID, Stdout), c.output(spec.ID, Stderr)
	if err := c.w.Release(spec.ID); err != nil {
		t.Fatalf("Release: %v", err)
	}
	return string(out), string(errb), code
}

var execCommand = exec.Command

func sh(line string) CommandSpec { return CommandSpec{Line: line} }

// alive reports whether pid exists (and is not a zombie).
func alive(pid int) bool {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return i > 0 && i+2 < len(st) && st[i+2] != 'Z'
}

// testV2Group makes a cgroup of the test's own on this machine's unified
// (v2) hierarchy, removed (with any child groups left, empty) at the end;
// it skips the test where there is none or it cannot be made.
func testV2Group(t *testing.T) string {
	t.Helper()
	const unified = "/sys/fs/cgroup/unified"
	if _, err := os.Stat(filepath.Join(unified, "cgroup.procs")); err != nil {
		t.Skip("no cgroup v2 hierarchy at " + unified)
	}
	root, err := os.MkdirTemp(unified, "wrmdtest-")
	if err != nil {
		t.Skipf("cannot make a v2 group (needs root): %v", err)
	}
	t.Cleanup(func() {
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			if e.IsDir() {
				unix.Rmdir(filepath.Join(root, e.Name()))
			}
		}
		unix.Rmdir(root)
	})
	return root
}
