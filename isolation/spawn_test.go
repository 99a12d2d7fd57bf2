package isolation

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/winrmd/winrmd/isolation/isolationtest"
)

// The worker runs as the user: uid, gid, groups, working directory and a
// clean environment.
func TestSpawnIdentity(t *testing.T) {
	u := newTestUser(t)
	s := newTestSpawner(t, SpawnerOptions{})
	h, c := spawn(t, s, SpawnRequest{Account: u.acct, Env: map[string]string{"WRMD_EXTRA": "yes"}})

	out, errOut, code := c.run(t, sh("id -u; id -G; pwd; echo $HOME"), nil)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("output %q", out)
	}
	if lines[0] != strconv.Itoa(int(u.acct.UID)) {
		t.Errorf("uid %s, want %d", lines[0], u.acct.UID)
	}
	var gotG, wantG []string
	gotG = strings.Fields(lines[1])
	for _, g := range append([]uint32{u.acct.GID}, u.acct.Groups...) {
		wantG = append(wantG, strconv.Itoa(int(g)))
	}
	sort.Strings(gotG)
	sort.Strings(wantG)
	if !slices.Equal(slices.Compact(gotG), slices.Compact(wantG)) {
		t.Errorf("groups %v, want %v", gotG, wantG)
	}
	if lines[2] != u.acct.Home || lines[3] != u.acct.Home {
		t.Errorf("pwd %q, HOME %q, want %q", lines[2], lines[3], u.acct.Home)
	}

	// The environment is exactly the clean one plus the shell's variables.
	out, _, _ = c.run(t, CommandSpec{Argv: []string{"env"}}, nil)
	got := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(got)
	want := []string{
		"HOME=" + u.acct.Home, "LANG=C.UTF-8", "LOGNAME=" + u.acct.Username, "PATH=" + defaultPath,
		"SHELL=/bin/sh", "USER=" + u.acct.Username, "WRMD_EXTRA=yes",
	}
	if !slices.Equal(got, want) {
		t.Errorf("environment\n got %q\nwant %q", got, want)
	}

	// The worker process itself: every id is the user's, no capabilities.
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	if msg := checkStatus(string(st), u.acct.UID, u.acct.GID, true); msg != "" {
		t.Errorf("worker status: %s", msg)
	}
	// Its own session.
	if sid, _ := unix.Getsid(h.Pid()); sid != h.Pid() {
		t.Errorf("worker session %d, want %d", sid, h.Pid())
	}
	// A working directory other than home.
	_, c2 := spawn(t, s, SpawnRequest{Account: u.acct, Dir: "/"})
	if out, _, _ := c2.run(t, sh("pwd"), nil); out != "/\n" {
		t.Errorf("pwd %q, want /", out)
	}
}

func TestStreamsAndExitCodes(t *testing.T) {
	u := newTestUser(t)
	_, c := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct})
	out, errOut, code := c.run(t, sh("echo out; echo err >&2; printf 'a\\0b'"), nil)
	if out != "out\na\x00b" || errOut != "err\n" || code != 0 {
		t.Errorf("got %q %q %d", out, errOut, code)
	}
	for line, want := range map[string]int32{"exit 3": 3, "kill -9 $$": 128 + 9, "true": 0} {
		if _, _, code := c.run(t, sh(line), nil); code != want {
			t.Errorf("%q: exit %d, want %d", line, code, want)
		}
	}
	// Argv runs without a shell: no expansion.
	if out, _, _ := c.run(t, CommandSpec{Argv: []string{"echo", "$HOME", "a b"}}, nil); out != "$HOME a b\n" {
		t.Errorf("argv output %q", out)
	}
	// A missing program is ErrStartFailed; the worker carries on.
	err := c.w.Start(context.Background(), CommandSpec{ID: "nope", Argv: []string{"wrmd-no-such-program"}})
	if !errors.Is(err, ErrStartFailed) {
		t.Fatalf("Start of a missing program: %v", err)
	}
	if err := c.w.Stdin(context.Background(), "nope", []byte("x"), true); !errors.Is(err, ErrUnknown) {
		t.Errorf("Stdin to a failed command: %v", err)
	}
	if _, _, code := c.run(t, sh("exit 0"), nil); code != 0 {
		t.Error("worker unusable after a failed start")
	}
}

// A 5 MB output arrives byte-exact, through the credit window.
func TestLargeOutputExact(t *testing.T) {
	u := newTestUser(t)
	_, c := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct})
	data := make([]byte, 5_000_000)
	rand.Read(data)
	f := filepath.Join(u.acct.Home, "blob")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := c.run(t, sh("cat blob; cat blob >&2"), nil)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	want := sha256.Sum256(data)
	if got := sha256.Sum256([]byte(out)); got != want || len(out) != len(data) {
		t.Errorf("stdout: %d bytes, sha256 mismatch=%v", len(out), got != want)
	}
	if got := sha256.Sum256([]byte(errOut)); got != want {
		t.Errorf("stderr: %d bytes, sha256 mismatch", len(errOut))
	}
}

// With an EventSink, every byte of several commands' stdout and stderr and
// their exits reach the sink, byte-exact and nothing through Events, and
// each command's output all before its exit; back-pressure still holds
// (the held sink stops the command at the window).
func TestEventSink(t *testing.T) {
	u := newTestUser(t)
	h, c := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct})
	h.SetEventSink(c.sink)
	data := make([]byte, 3_000_000)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(u.acct.Home, "blob"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	ids := []string{nextID(), nextID(), nextID()}
	for _, id := range ids {
		if err := c.w.Start(context.Background(), CommandSpec{ID: id, Line: "cat blob; cat blob >&2"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if code := c.waitExit(t, id, 30*time.Second); code != 0 {
			t.Fatalf("%s: exit %d", id, code)
		}
		for _, s := range []Stream{Stdout, Stderr} {
			if got := c.output(id, s); len(got) != len(data) || sha256.Sum256(got) != want {
				t.Errorf("%s stream %d: %d bytes, want %d byte-exact", id, s, len(got), len(data))
			}
		}
	}
	c.mu.Lock()
	events, late := c.viaEvents, c.afterExit
	c.mu.Unlock()
	if events != 0 || late != 0 {
		t.Errorf("%d events came on Events, %d outputs after their command's exit; want none", events, late)
	}

	checkBackPressure(t, c)
}

// A client that does not consume makes the command block at the window.
func TestBackPressure(t *testing.T) {
	u := newTestUser(t)
	_, c := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct})
	checkBackPressure(t, c)
}

// checkBackPressure: while c holds its output (consumes none) a command
// that writes 4 MB gets no further than the window and does not exit; once
// c consumes again, all of it arrives and the command exits.
func checkBackPressure(t *testing.T, c *collector) {
	t.Helper()
	c.setHold(true)
	id := nextID()
	if err := c.w.Start(context.Background(), CommandSpec{ID: id, Line: "head -c 4000000 /dev/zero"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	c.mu.Lock()
	got := 0
	if b := c.out[id]; b != nil {
		got = b[Stdout].Len()
	}
	_, done := c.exit[id]
	c.mu.Unlock()
	if got == 0 || got > OutputWindow || done {
		t.Fatalf("without credit: %d bytes delivered (window %d), exited=%v", got, OutputWindow, done)
	}
	c.setHold(false)
	if code := c.waitExit(t, id, 30*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if n := len(c.output(id, Stdout)); n != 4000000 {
		t.Fatalf("%d bytes", n)
	}
	_ = c.w.Release(id)
}

// TestStdinFrameBuffers: the worker queues each Stdin frame's data in the
// buffer the frame was read into and reuses that buffer once the data is in
// the pipe. Two commands in one worker, each started behind a sleep so that
// its queue fills and a frame waits for room (pending), get Stdin calls of
// different sizes and data at once; each sees its own stdin byte for byte.
func TestStdinFrameBuffers(t *testing.T) {
	u := newTestUser(t)
	_, c := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for k := 0; k < 2; k++ {
		id := nextID()
		if err := c.w.Start(ctx, CommandSpec{ID: id, Line: "sleep 0.5; sha256sum"}); err != nil {
			t.Fatal(err)
		}
		var all [][]byte
		sum := sha256.New()
		for i := 0; i < 30; i++ {
			b := make([]byte, 375000-i*997*k)
			for j := range b {
				b[j] = byte(j*7 + j>>9 + i*31 + k*101)
			}
			all = append(all, b)
			sum.Write(b)
		}
		want := fmt.Sprintf("%x  -\n", sum.Sum(nil))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, b := range all {
				if err := c.w.Stdin(ctx, id, b, i == len(all)-1); err != nil {
					t.Errorf("Stdin %d: %v", i, err)
					return
				}
			}
			if code := c.waitExit(t, id, time.Minute); code != 0 {
				t.Errorf("exit %d", code)
			}
			if out := string(c.output(id, Stdout)); out != want {
				t.Errorf("command %d: sha256sum %q, want %q", k, out, want)
			}
		}()
	}
	wg.Wait()
}

func TestStdin(t *testing.T) {
	u := newTestUser(t)
	_, c := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct})
	if out, _, code := c.run(t, sh("cat"), []byte("hello\n")); out != "hello\n" || code != 0 {
		t.Fatalf("cat: %q %d", out, code)
	}
	// More than one Stdin frame and more than the worker's queue.
	big := make([]byte, 10_000_000)
	rand.Read(big)
	out, _, code := c.run(t, CommandSpec{Argv: []string{"sha256sum"}}, big)
	want := fmt.Sprintf("%x  -\n", sha256.Sum256(big))
	if out != want || code != 0 {
		t.Fatalf("sha256sum of 10 MB stdin: %q, want %q", out, want)
	}
	// Stdin to a command that exited is dropped quietly.
	id := nextID()
	if err := c.w.Start(context.Background(), CommandSpec{ID: id, Line: "exit 0"}); err != nil {
		t.Fatal(err)
	}
	c.waitExit(t, id, 10*time.Second)
	if err := c.w.Stdin(context.Background(), id, []byte("late"), true); err != nil {
		t.Errorf("stdin after exit: %v", err)
	}
	// A command that never reads stdin: a small write is queued; eof works.
	id = nextID()
	if err := c.w.Start(context.Background(), CommandSpec{ID: id, Line: "sleep 0.3"}); err != nil {
		t.Fatal(err)
	}
	if err := c.w.Stdin(context.Background(), id, []byte("ignored"), true); err != nil {
		t.Fatal(err)
	}
	c.waitExit(t, id, 10*time.Second)
	_ = c.w.Release(id)
}

func TestCtrlC(t *testing.T) {
	u := newTestUser(t)
	_, c := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct})
	id := nextID()
	if err := c.w.Start(context.Background(), CommandSpec{ID: id, Line: "sleep 100"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := c.w.Signal(id, SignalInterrupt); err != nil {
		t.Fatal(err)
	}
	if code := c.waitExit(t, id, 10*time.Second); code != 130 {
		t.Fatalf("exit %d, want 130", code)
	}
	_ = c.w.Release(id)
}

// Terminate kills the command's whole process group.
func TestTerminateTree(t *testing.T) {
	u := newTestUser(t)
	h, c := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct})
	id := nextID()
	if err := c.w.Start(context.Background(), CommandSpec{ID: id, Line: "sleep 100 & sleep 100"}); err != nil {
		t.Fatal(err)
	}
	if !eventually(5*time.Second, func() bool { return len(userPidsExcept(u.acct.UID, h.Pid())) >= 3 }) {
		t.Fatalf("tree did not start: %v", userPidsExcept(u.acct.UID, h.Pid()))
	}
	if err := c.w.Signal(id, SignalTerminate); err != nil {
		t.Fatal(err)
	}
	if code := c.waitExit(t, id, 10*time.Second); code != 137 {
		t.Errorf("exit %d, want 137", code)
	}
	if !eventually(5*time.Second, func() bool { return len(userPidsExcept(u.acct.UID, h.Pid())) == 0 }) {
		t.Fatalf("left after terminate: %v", userPidsExcept(u.acct.UID, h.Pid()))
	}
	_ = c.w.Release(id)
}

// Processes that outlive their command are killed by Close: a background
// job in the worker's session in every mode, and a double-forked setsid
// escapee where there is a cgroup.
func TestCloseKillsLeftovers(t *testing.T) {
	for _, mode := range []string{"auto", "off"} {
		t.Run(mode, func(t *testing.T) {
			root := ""
			if mode == "off" {
				root = "off"
			}
			u := newTestUser(t)
			s := newTestSpawner(t, SpawnerOptions{CgroupRoot: root})
			h, c := spawn(t, s, SpawnRequest{Account: u.acct})
			lines := []string{"sleep 1000 >/dev/null 2>&1 &"}
			if s.cgroupMode() != cgroupNone {
				lines = append(lines, "(setsid sh -c 'sleep 1001 & sleep 1002' </dev/null >/dev/null 2>&1 &) ; true")
			} else {
				t.Log("no cgroup: a setsid escapee is out of reach, not tested")
			}
			for _, l := range lines {
				if _, _, code := c.run(t, sh(l), nil); code != 0 {
					t.Fatalf("%q: %d", l, code)
				}
			}
			want := 1
			if len(lines) > 1 {
				want = 4
			}
			if !eventually(5*time.Second, func() bool { return len(userPidsExcept(u.acct.UID, h.Pid())) >= want }) {
				t.Fatalf("leftovers did not start: %s", userProcs(strconv.Itoa(int(u.acct.UID))))
			}
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
			if live := livePids(u.acct.UID); len(live) > 0 {
				t.Fatalf("left after Close:\n%s", userProcs(strconv.Itoa(int(u.acct.UID))))
			}
			// The worker reaped what was killed: no zombie goes to init.
			if !eventually(time.Second, func() bool { return userProcs(strconv.Itoa(int(u.acct.UID))) == "" }) {
				t.Fatalf("zombies after Close:\n%s", userProcs(strconv.Itoa(int(u.acct.UID))))
			}
			if h.Err() != nil {
				t.Errorf("Err after Close: %v", h.Err())
			}
			if _, ok := <-h.Events(); ok {
				t.Error("Events still open after Close")
			}
		})
	}
}

// no_new_privs on the worker and its commands; a setuid-root binary does not
// bring root back, nor does setuid(0).
func TestNoNewPrivs(t *testing.T) {
	u := newTestUser(t)
	helper, suid := helperBinary(t), setuidHelper(t, u.acct.GID)
	h, c := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct, Env: map[string]string{"WRMDTEST_HELPER": "setuid0"}})

	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(st), "NoNewPrivs:\t1") {
		t.Errorf("worker status lacks NoNewPrivs 1")
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", h.Pid()))
	for _, tk := range tasks {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", h.Pid(), tk.Name()))
		if !strings.Contains(string(st), "NoNewPrivs:\t1") {
			t.Errorf("worker thread %s lacks NoNewPrivs", tk.Name())
		}
	}
	if out, _, _ := c.run(t, sh("grep NoNewPrivs /proc/self/status"), nil); out != "NoNewPrivs:\t1\n" {
		t.Errorf("command: %q", out)
	}
	for _, bin := range []string{helper, suid} {
		out, errOut, code := c.run(t, CommandSpec{Argv: []string{bin}}, nil)
		wantEuid := fmt.Sprintf("euid=%d", u.acct.UID)
		if code != 0 || !strings.Contains(out, "setuid0=operation not permitted") || !strings.Contains(out, wantEuid) {
			t.Errorf("%s: exit %d, %q %q", filepath.Base(bin), code, out, errOut)
		}
	}
	// The control: without no_new_privs the setuid bit does work here, so
	// the refusals above are no_new_privs' doing.
	if out, err := runAsUser(u.acct, suid, "WRMDTEST_HELPER=ids"); err != nil || !strings.Contains(out, "euid=0") {
		t.Errorf("control: the setuid-root helper did not run as root outside the worker (%q, %v)", out, err)
	}
}

// The capability bounding set of a shell that may not gain privileges is
// empty (a command's status shows it); a shell that may (AllowNewPrivileges,
// for sudo) has no no_new_privs, a full bounding set, and its setuid-root
// program runs as root, while the worker itself still holds no capability.
func TestNewPrivileges(t *testing.T) {
	u := newTestUser(t)
	suid := setuidHelper(t, u.acct.GID)
	s := newTestSpawner(t, SpawnerOptions{})
	hc, c := spawn(t, s, SpawnRequest{Account: u.acct})
	if out, _, _ := c.run(t, sh("grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status"), nil); out != "CapBnd:\t0000000000000000\nNoNewPrivs:\t1\n" {
		t.Errorf("confined command: %q, want no_new_privs and an empty bounding set", out)
	}
	// Only the command thread's bounding set is emptied (drop.go); what makes
	// the others' harmless is on every thread: the account's ids, no
	// capability, no_new_privs.
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", hc.Pid()))
	if err != nil || len(tasks) < 2 {
		t.Fatalf("threads of the confined worker: %d, %v", len(tasks), err)
	}
	for _, task := range tasks {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", hc.Pid(), task.Name()))
		if err != nil {
			continue // the thread ended
		}
		if msg := checkStatus(string(st), u.acct.UID, u.acct.GID, true); msg != "" {
			t.Errorf("confined worker's thread %s: %s", task.Name(), msg)
		}
	}
	h, c := spawn(t, s, SpawnRequest{Account: u.acct, AllowNewPrivileges: true, Env: map[string]string{"WRMDTEST_HELPER": "ids"}})
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(st), "NoNewPrivs:\t0") || !strings.Contains(string(st), "CapEff:\t0000000000000000") {
		t.Errorf("worker of a shell with new privileges:\n%s", st)
	}
	out, _, _ := c.run(t, sh("grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status"), nil)
	if !strings.HasPrefix(out, "CapBnd:\t") || !strings.HasSuffix(out, "NoNewPrivs:\t0\n") || strings.Contains(out, "CapBnd:\t0000000000000000") {
		t.Errorf("command with new privileges: %q, want no no_new_privs and the daemon's bounding set", out)
	}
	if out, errOut, code := c.run(t, CommandSpec{Argv: []string{suid}}, nil); code != 0 || !strings.Contains(out, "euid=0") {
		t.Errorf("setuid-root helper with new privileges: exit %d, %q %q, want euid=0", code, out, errOut)
	}
}

// runAsUser runs a program as the account without no_new_privs (the control).
func runAsUser(a Account, prog string, env ...string) (string, error) {
	cmd := execCommand(prog)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.UID, Gid: a.GID}}
	out, err := cmd.Output()
	return string(out), err
}

func TestMemoryLimit(t *testing.T) {
	u := newTestUser(t)
	s := newTestSpawner(t, SpawnerOptions{})
	if !s.cg.memory {
		t.Skip("no memory cgroup controller on this machine")
	}
	helper := helperBinary(t)
	h, _ := spawn(t, s, SpawnRequest{Account: u.acct, Limits: Limits{MemoryMB: 128}})
	// The limit is in place.
	var limFile string
	if s.cg.mode == cgroupV1 {
		limFile = filepath.Join(h.cgroup().dirs["memory"], "memory.limit_in_bytes")
	} else {
		limFile = filepath.Join(h.cgroup().dirs[""], "memory.max")
	}
	if b, _ := os.ReadFile(limFile); strings.TrimSpace(string(b)) != strconv.Itoa(128<<20) {
		t.Fatalf("%s = %q", limFile, b)
	}
	// The helper reads its mode from the shell's environment.
	_, c2 := spawn(t, s, SpawnRequest{Account: u.acct, Limits: Limits{MemoryMB: 128}, Env: map[string]string{"WRMDTEST_HELPER": "alloc:400"}})
	out, errOut, code := c2.run(t, CommandSpec{Argv: []string{helper}}, nil)
	if code != 137 || strings.Contains(out, "allocated") {
		t.Fatalf("allocating 400 MiB under 128 MiB: exit %d, %q %q", code, out, errOut)
	}
	// Under the limit it works.
	_, c3 := spawn(t, s, SpawnRequest{Account: u.acct, Limits: Limits{MemoryMB: 256}, Env: map[string]string{"WRMDTEST_HELPER": "alloc:20"}})
	if out, _, code := c3.run(t, CommandSpec{Argv: []string{helper}}, nil); code != 0 || out != "allocated 20 MiB\n" {
		t.Fatalf("small allocation: %d %q", code, out)
	}
}

func TestProcessLimit(t *testing.T) {
	u := newTestUser(t)
	s := newTestSpawner(t, SpawnerOptions{})
	if !s.cg.pids {
		t.Skip("no pids cgroup controller on this machine")
	}
	h, c := spawn(t, s, SpawnRequest{Account: u.acct, Limits: Limits{MaxProcesses: 20}})
	// A bounded fork bomb: 200 background sleeps in one process group.
	id := nextID()
	if err := c.w.Start(context.Background(), CommandSpec{ID: id, Line: "i=0; while [ $i -lt 200 ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); done"}); err != nil {
		t.Fatal(err)
	}
	code := c.waitExit(t, id, 30*time.Second)
	errOut := string(c.output(id, Stderr))
	if !strings.Contains(strings.ToLower(errOut), "fork") {
		t.Errorf("fork bomb: exit %d, stderr %q", code, errOut)
	}
	n := len(userPidsExcept(u.acct.UID, h.Pid()))
	if n == 0 || n > 20 {
		t.Errorf("%d processes of the shell, limit 20", n)
	}
	t.Logf("%d processes of the shell; the worker has %d threads", n, countTasks(h.Pid()))
	// The worker survived; terminate frees the slots.
	if err := c.w.Signal(id, SignalTerminate); err != nil {
		t.Fatal(err)
	}
	if !eventually(5*time.Second, func() bool { return len(userPidsExcept(u.acct.UID, h.Pid())) == 0 }) {
		t.Fatal("sleeps survived terminate")
	}
	_ = c.w.Release(id)
	if out, _, code := c.run(t, sh("echo ok"), nil); out != "ok\n" || code != 0 {
		t.Fatalf("after the bomb: %q %d", out, code)
	}
}

// The kernel's limit counts the commands' processes, not the worker's
// threads: it follows threads the worker made since the last count
// (simulated here by a pids.max one short of budget plus threads), and a
// fork it refuses is ErrTooManyProcs, not a missing program.
func TestProcessLimitCountsOnlyCommands(t *testing.T) {
	u := newTestUser(t)
	s := newTestSpawner(t, SpawnerOptions{})
	if !s.cg.pids {
		t.Skip("no pids cgroup controller on this machine")
	}
	const budget = 2
	h, c := spawn(t, s, SpawnRequest{Account: u.acct, Limits: Limits{MaxProcesses: budget}})
	if h.pids == nil {
		t.Fatal("a shell with a process budget has no pids limit")
	}
	stale := budget + countTasks(h.Pid()) - 1
	if err := h.pids.cg.setPidsMax(stale); err != nil {
		t.Fatal(err)
	}
	// A Start recounts: pids.max is the budget plus the threads the worker
	// has now, at least one more than the stale value.
	filler := nextID()
	if err := c.w.Start(context.Background(), CommandSpec{ID: filler, Line: isolationtest.ProcessFiller}); err != nil {
		t.Fatal(err)
	}
	if got := readPidsMax(t, h); got <= stale {
		t.Fatalf("pids.max %d after a Start, want above the stale %d", got, stale)
	}
	// The filler takes every slot and retakes any the next recount gives
	// back; a probe that meets the full limit is ErrTooManyProcs.
	var err error
	for i := 0; i < 50; i++ {
		time.Sleep(50 * time.Millisecond)
		id := nextID()
		if err = c.w.Start(context.Background(), CommandSpec{ID: id, Line: "true"}); err != nil {
			break
		}
		c.waitExit(t, id, 10*time.Second)
	}
	if !errors.Is(err, ErrStartFailed) || !errors.Is(err, ErrTooManyProcs) {
		t.Fatalf("a start past the budget: %v, want ErrStartFailed and ErrTooManyProcs", err)
	}
	// A missing program is still that, not the limit.
	if err := c.w.Signal(filler, SignalTerminate); err != nil {
		t.Fatal(err)
	}
	if !eventually(5*time.Second, func() bool { return len(userPidsExcept(u.acct.UID, h.Pid())) == 0 }) {
		t.Fatal("sleeps survived terminate")
	}
	err = c.w.Start(context.Background(), CommandSpec{ID: nextID(), Argv: []string{"/nonexistent/program"}})
	if !errors.Is(err, ErrStartFailed) || errors.Is(err, ErrTooManyProcs) {
		t.Fatalf("a missing program: %v, want ErrStartFailed alone", err)
	}
}

// kill -9 of the worker: Events closes, Err wraps ErrWorkerGone, and the
// orphaned command is killed.
func TestWorkerKilled(t *testing.T) {
	u := newTestUser(t)
	h, c := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct})
	id := nextID()
	if err := c.w.Start(context.Background(), CommandSpec{ID: id, Line: "sleep 100"}); err != nil {
		t.Fatal(err)
	}
	cmdPid := h.commandPid(id)
	if err := unix.Kill(h.Pid(), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("Events did not close")
	}
	if err := h.Err(); !errors.Is(err, ErrWorkerGone) {
		t.Fatalf("Err %v", err)
	}
	if !eventually(5*time.Second, func() bool { return !alive(cmdPid) }) {
		t.Fatal("the command outlived its worker")
	}
	if err := c.w.Start(context.Background(), CommandSpec{ID: "x", Line: "true"}); !errors.Is(err, ErrWorkerGone) {
		t.Errorf("Start after death: %v", err)
	}
}

// The daemon's end of the socket closes: the worker kills its commands and
// exits by itself (the daemon's own clean-up is disabled here).
func TestDaemonSocketClosed(t *testing.T) {
	u := newTestUser(t)
	h, c := spawn(t, newTestSpawner(t, SpawnerOptions{CgroupRoot: "off"}), SpawnRequest{Account: u.acct})
	h.reap = keepOrphans{h.reap}
	id := nextID()
	if err := c.w.Start(context.Background(), CommandSpec{ID: id, Line: "sleep 100 & sleep 100"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := h.conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.proc.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not exit on EOF")
	}
	if st := h.proc.State(); st != "exit status 0" {
		t.Errorf("worker ended with %q", st)
	}
	if !eventually(5*time.Second, func() bool { return len(userPidsExcept(u.acct.UID, -1)) == 0 }) {
		t.Fatalf("worker left: %s", userProcs(strconv.Itoa(int(u.acct.UID))))
	}
}

func TestRefusals(t *testing.T) {
	u := newTestUser(t)
	s := newTestSpawner(t, SpawnerOptions{})
	ctx := context.Background()
	if _, err := s.Spawn(ctx, SpawnRequest{Account: Account{Username: "root"}}); !errors.Is(err, ErrRootRefused) {
		t.Errorf("uid 0: %v", err)
	}
	if _, err := s.Spawn(ctx, SpawnRequest{}); err == nil {
		t.Error("zero Account accepted")
	}
	if _, err := s.Spawn(ctx, SpawnRequest{Account: u.acct, Env: map[string]string{"A=B": "x"}}); err == nil {
		t.Error("bad environment name accepted")
	}
	// A bad working directory is an error, not a crash, and leaves nothing.
	_, err := s.Spawn(ctx, SpawnRequest{Account: u.acct, ShellID: "wrmdtest-baddir", Dir: "/nonexistent/dir"})
	if !errors.Is(err, ErrWorkingDir) {
		t.Errorf("bad dir: %v", err)
	}
	// A directory the user may not enter.
	_, err = s.Spawn(ctx, SpawnRequest{Account: u.acct, Dir: "/root"})
	if !errors.Is(err, ErrWorkingDir) {
		t.Errorf("/root as the user: %v", err)
	}
	if s.cg.mode == cgroupV1 {
		for _, p := range s.cg.v1Parents {
			if _, err := os.Stat(filepath.Join(p, "wrmdtest-baddir")); err == nil {
				t.Errorf("cgroup %s left behind", filepath.Join(p, "wrmdtest-baddir"))
			}
		}
	}
	// Root with AllowRoot.
	s2 := newTestSpawner(t, SpawnerOptions{AllowRoot: true, CgroupRoot: "off"})
	root := Account{Username: "root", Home: "/root", Shell: "/bin/sh"}
	_, c := spawn(t, s2, SpawnRequest{Account: root})
	if out, _, _ := c.run(t, sh("id -u; echo $PATH"), nil); out != "0\n"+defaultRootPath+"\n" {
		t.Errorf("root worker: %q", out)
	}
}

func TestLabModeAsRoot(t *testing.T) {
	requireRoot(t)
	if _, err := newProcSpawner(SpawnerOptions{Lab: true}); !errors.Is(err, ErrRootRefused) {
		t.Errorf("lab as root without AllowRoot: %v", err)
	}
	s := newTestSpawner(t, SpawnerOptions{Lab: true, AllowRoot: true, CgroupRoot: "off"})
	_, c := spawn(t, s, SpawnRequest{Account: Account{Username: "ignored", UID: 12345}})
	if out, _, _ := c.run(t, sh("id -u"), nil); out != "0\n" {
		t.Errorf("lab worker uid %q", out)
	}
}

// Lab mode as an ordinary user: the test binary re-runs itself as the test
// user (TestLabInner), which spawns a lab worker as that user.
func TestLabModeNonRoot(t *testing.T) {
	u := newTestUser(t)
	helper := helperBinary(t)
	cmd := execCommand(helper, "-test.run=^TestLabInner$", "-test.count=1", "-test.v")
	cmd.Env = []string{"WRMDTEST_LAB_INNER=1", "HOME=" + u.acct.Home, "PATH=" + defaultPath}
	cmd.Dir = u.acct.Home
	groups := append([]uint32{}, u.acct.Groups...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.acct.UID, Gid: u.acct.GID, Groups: groups}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestLabInner") {
		t.Fatalf("inner lab test: %v\n%s", err, out)
	}
}

func TestLabInner(t *testing.T) {
	if os.Getenv("WRMDTEST_LAB_INNER") != "1" {
		t.Skip("runs only inside TestLabModeNonRoot")
	}
	if _, err := newProcSpawner(SpawnerOptions{}); err == nil {
		t.Error("privileged spawner accepted without root")
	}
	s := newTestSpawner(t, SpawnerOptions{Lab: true})
	t.Logf("cgroup mode as a user: %v", s.cgroupMode())
	_, c := spawn(t, s, SpawnRequest{Account: Account{Username: "someone"}, Limits: Limits{MaxProcesses: 50}})
	out, _, code := c.run(t, sh("id -u; echo $USER"), nil)
	self, _ := selfAccount()
	if code != 0 || out != fmt.Sprintf("%d\n%s\n", os.Getuid(), self.Username) {
		t.Fatalf("lab worker: %q %d", out, code)
	}
	// The RLIMIT_NPROC fallback is in place without a pids cgroup.
	if !s.cg.pids {
		out, _, _ := c.run(t, sh("grep 'Max processes' /proc/self/limits"), nil)
		f := strings.Fields(out)
		if len(f) < 4 {
			t.Fatalf("limits: %q", out)
		}
		if n, err := strconv.Atoi(f[2]); err != nil || n < 50 || n > 10000 {
			t.Errorf("RLIMIT_NPROC = %q", out)
		}
	}
}

// The cgroup v2 path with an explicit CgroupRoot. This machine's unified
// hierarchy has no controllers (they are on v1), so limits are absent, but
// membership and cgroup.kill work: a setsid escapee dies at Close.
func TestCgroupV2Explicit(t *testing.T) {
	u := newTestUser(t)
	root := testV2Group(t)
	s := newTestSpawner(t, SpawnerOptions{CgroupRoot: root})
	if s.cgroupMode() != cgroupV2 {
		t.Fatalf("mode %v", s.cgroupMode())
	}
	h, c := spawn(t, s, SpawnRequest{Account: u.acct, ShellID: "v2shell"})
	procs, _ := readPids(filepath.Join(root, "v2shell"))
	if !slices.Contains(procs, h.Pid()) {
		t.Fatalf("worker %d not in %v", h.Pid(), procs)
	}
	if _, _, code := c.run(t, sh("(setsid sleep 1003 </dev/null >/dev/null 2>&1 &) ; true"), nil); code != 0 {
		t.Fatal(code)
	}
	if !eventually(5*time.Second, func() bool { return len(userPidsExcept(u.acct.UID, h.Pid())) > 0 }) {
		t.Fatal("escapee did not start")
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if live := livePids(u.acct.UID); len(live) > 0 {
		t.Fatalf("left after Close: %v", live)
	}
	if _, err := os.Stat(filepath.Join(root, "v2shell")); !os.IsNotExist(err) {
		t.Errorf("shell cgroup not removed: %v", err)
	}
}

// SIGTERM to the worker: it kills its commands and exits.
func TestWorkerSIGTERM(t *testing.T) {
	u := newTestUser(t)
	h, c := spawn(t, newTestSpawner(t, SpawnerOptions{CgroupRoot: "off"}), SpawnRequest{Account: u.acct})
	h.reap = keepOrphans{h.reap}
	id := nextID()
	if err := c.w.Start(context.Background(), CommandSpec{ID: id, Line: "sleep 100 & sleep 100"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := unix.Kill(h.Pid(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Events did not close")
	}
	if err := h.Err(); !errors.Is(err, ErrWorkerGone) || !strings.Contains(err.Error(), "exit status 0") {
		t.Errorf("Err %v", err)
	}
	if !eventually(5*time.Second, func() bool { return len(livePids(u.acct.UID)) == 0 }) {
		t.Fatalf("left: %s", userProcs(strconv.Itoa(int(u.acct.UID))))
	}
}

// Close against a shell that keeps forking: orphans keep arriving at the
// worker while it is being emptied, and a Start races the Close. Nothing of
// the shell may survive, not even a zombie, in every mode.
func TestCloseForkingShell(t *testing.T) {
	for _, mode := range []string{"auto", "off"} {
		t.Run(mode, func(t *testing.T) {
			root := ""
			if mode == "off" {
				root = "off"
			}
			u := newTestUser(t)
			s := newTestSpawner(t, SpawnerOptions{CgroupRoot: root})
			for round := 0; round < 3; round++ {
				h, c := spawn(t, s, SpawnRequest{Account: u.acct})
				// Each pass orphans a sleep to the worker; bounded so a
				// broken Close cannot exhaust the host.
				line := "i=0; while [ $i -lt 3000 ]; do (sleep 1000 </dev/null >/dev/null 2>&1 &); i=$((i+1)); done"
				if err := c.w.Start(context.Background(), CommandSpec{ID: nextID(), Line: line}); err != nil {
					t.Fatal(err)
				}
				if !eventually(5*time.Second, func() bool { return len(userPidsExcept(u.acct.UID, h.Pid())) >= 10 }) {
					t.Fatalf("the shell did not fork: %s", userProcs(strconv.Itoa(int(u.acct.UID))))
				}
				// Starts in flight while Close runs.
				go func() {
					for i := 0; i < 20; i++ {
						if c.w.Start(context.Background(), CommandSpec{ID: nextID(), Line: "sleep 1000 & sleep 1000"}) != nil {
							return
						}
					}
				}()
				time.Sleep(time.Duration(round) * 5 * time.Millisecond)
				if err := h.Close(); err != nil {
					t.Fatal(err)
				}
				if live := livePids(u.acct.UID); len(live) > 0 {
					t.Fatalf("round %d: left after Close:\n%s", round, userProcs(strconv.Itoa(int(u.acct.UID))))
				}
				if !eventually(time.Second, func() bool { return userProcs(strconv.Itoa(int(u.acct.UID))) == "" }) {
					t.Fatalf("round %d: zombies after Close:\n%s", round, userProcs(strconv.Itoa(int(u.acct.UID))))
				}
			}
		})
	}
}

// TestDaemonSocketHoldsAStdinFrame: the daemon's end of a worker's socket
// has room for a whole Stdin frame, so a Send's data is in the socket at
// once and its response does not wait for the worker to read it (the
// HTTPS stdin row: 12% more throughput). The daemon runs as root here, so
// the size past net.core.wmem_max is what it gets.
func TestDaemonSocketHoldsAStdinFrame(t *testing.T) {
	u := newTestUser(t)
	h, _ := spawn(t, newTestSpawner(t, SpawnerOptions{}), SpawnRequest{Account: u.acct})
	rc, err := h.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var size int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		size, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	// The kernel reports twice what was set (its bookkeeping share).
	if size < 2*stdinSockBuf {
		t.Fatalf("SO_SNDBUF of the daemon's socket is %d, want at least %d", size, 2*stdinSockBuf)
	}
}

// The daemon's reader of a worker starts small, for the idle shells it
// serves most of their lives, and grows at the first long frame, for the
// output streams (proto.go, frameReadSmall).
func TestDaemonReaderGrowsWithOutput(t *testing.T) {
	u := newTestUser(t)
	h, c := spawn(t, newTestSpawner(t, SpawnerOptions{CgroupRoot: "off"}), SpawnRequest{Account: u.acct})
	size := func() int { return h.r.(*bufio.Reader).Size() }
	if out, _, code := c.run(t, sh("echo ok"), nil); out != "ok\n" || code != 0 {
		t.Fatalf("echo ok: %q, exit %d", out, code)
	}
	if n := size(); n != frameReadSmall {
		t.Errorf("after a short output the reader holds %d bytes, want %d", n, frameReadSmall)
	}
	if out, _, code := c.run(t, sh("head -c 200000 /dev/zero"), nil); len(out) != 200000 || code != 0 {
		t.Fatalf("200000 bytes of output: got %d, exit %d", len(out), code)
	}
	if n := size(); n != frameReadLarge {
		t.Errorf("after a long output the reader holds %d bytes, want %d", n, frameReadLarge)
	}
	if out, _, code := c.run(t, sh("echo again"), nil); out != "again\n" || code != 0 {
		t.Fatalf("after the switch: %q, exit %d", out, code)
	}
}

// readPidsMax reads the shell's pids.max.
func readPidsMax(t *testing.T, h *workerHandle) int {
	t.Helper()
	d := h.pids.cg.dirs["pids"]
	if h.pids.cg.sys.mode == cgroupV2 {
		d = h.pids.cg.dirs[""]
	}
	b, err := os.ReadFile(filepath.Join(d, "pids.max"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pids.max %q: %v", b, err)
	}
	return n
}
