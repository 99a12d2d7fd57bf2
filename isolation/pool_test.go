package isolation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// idlePool lists the pooled workers waiting now.
func idlePool(s *procSpawner) []*launched {
	s.pool.mu.Lock()
	defer s.pool.mu.Unlock()
	return append([]*launched(nil), s.pool.idle...)
}

// waitPoolFull waits until the pool holds n idle workers.
func waitPoolFull(t *testing.T, s *procSpawner, n int) []*launched {
	t.Helper()
	if !eventually(60*time.Second, func() bool { return len(idlePool(s)) == n }) {
		t.Fatalf("the pool holds %d idle workers, want %d", len(idlePool(s)), n)
	}
	return idlePool(s)
}

// procUIDs reads the real, effective, saved and fs uids of pid.
func procUIDs(t *testing.T, pid int) []string {
	t.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			return strings.Fields(v)
		}
	}
	t.Fatalf("pid %d: no Uid line", pid)
	return nil
}

// Many Creates of two users at once: each gets a worker of its own, pooled
// or cold, running as its own user; the idle workers left are the daemon's
// (root), never a user's; the pool refills.
func TestPoolAssignsUnderConcurrency(t *testing.T) {
	a, b := newTestUser(t), newTestUser(t)
	s := newTestSpawner(t, SpawnerOptions{PrestartedWorkers: 3, PrestartNewPrivileges: true})
	before := waitPoolFull(t, s, 3)
	pooledPids := map[int]bool{}
	for _, l := range before {
		pooledPids[l.pid] = true
		if uids := procUIDs(t, l.pid); strings.Join(uids, " ") != "0 0 0 0" {
			t.Errorf("idle pooled worker %d has uids %v, want root's", l.pid, uids)
		}
	}

	const perUser = 4
	type got struct {
		acct Account
		h    *workerHandle
		c    *collector
	}
	res := make(chan got, 2*perUser)
	var wg sync.WaitGroup
	for _, u := range []*testUser{a, b} {
		for i := 0; i < perUser; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				w, err := s.Spawn(ctx, SpawnRequest{Account: u.acct, ShellID: "wrmdtest-" + randomHex(6), AllowNewPrivileges: true})
				if err != nil {
					t.Errorf("Spawn for %s: %v", u.acct.Username, err)
					return
				}
				h := w.(*workerHandle)
				res <- got{u.acct, h, newCollector(h)}
			}()
		}
	}
	wg.Wait()
	close(res)
	seen := map[int]string{}
	taken := 0
	for r := range res {
		t.Cleanup(func() {
			if err := r.h.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			r.c.wait()
		})
		if other, dup := seen[r.h.Pid()]; dup {
			t.Errorf("worker %d serves %s and %s", r.h.Pid(), other, r.acct.Username)
		}
		seen[r.h.Pid()] = r.acct.Username
		if pooledPids[r.h.Pid()] {
			taken++
		}
		out, _, code := r.c.run(t, sh("id -u"), nil)
		if code != 0 || strings.TrimSpace(out) != strconv.Itoa(int(r.acct.UID)) {
			t.Errorf("shell of %s: id -u printed %q (exit %d)", r.acct.Username, out, code)
		}
		if uids := procUIDs(t, r.h.Pid()); uids[0] != strconv.Itoa(int(r.acct.UID)) || uids[1] != uids[0] || uids[2] != uids[0] || uids[3] != uids[0] {
			t.Errorf("worker of %s has uids %v", r.acct.Username, uids)
		}
	}
	if len(seen) != 2*perUser {
		t.Fatalf("%d shells started, want %d", len(seen), 2*perUser)
	}
	st := s.PoolStats()
	if taken == 0 || st.Taken != uint64(taken) || st.Taken+st.Cold != 2*perUser {
		t.Errorf("pool stats %+v; %d shells ran in a pre-started worker, want ≥ 1 and Taken+Cold = %d", st, taken, 2*perUser)
	}
	// Refilled, with new processes, every one of them root's.
	for _, l := range waitPoolFull(t, s, 3) {
		if _, used := seen[l.pid]; used {
			t.Errorf("worker %d of a shell is back in the pool", l.pid)
		}
		if uids := procUIDs(t, l.pid); strings.Join(uids, " ") != "0 0 0 0" {
			t.Errorf("idle pooled worker %d has uids %v", l.pid, uids)
		}
	}
}

// A pooled worker that dies while it waits is replaced; a Create that finds
// it dead under its Setup starts a worker cold instead of failing.
func TestPoolWorkerDiesWhileWaiting(t *testing.T) {
	u := newTestUser(t)
	s := newTestSpawner(t, SpawnerOptions{PrestartedWorkers: 1, PrestartNewPrivileges: true})
	first := waitPoolFull(t, s, 1)[0]
	if err := unix.Kill(first.pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !eventually(60*time.Second, func() bool {
		idle := idlePool(s)
		return len(idle) == 1 && idle[0].pid != first.pid
	}) {
		t.Fatalf("the dead pooled worker %d was not replaced: idle %d", first.pid, len(idlePool(s)))
	}
	if _, err := os.Stat(first.cg.procsDir()); first.cg != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead worker's cgroup %s is left: %v", first.cg.procsDir(), err)
	}

	// Killed and taken at once: assignPooled sees the socket close under
	// its Setup (or take sees the exit) and Spawn starts one cold.
	second := waitPoolFull(t, s, 1)[0]
	if err := unix.Kill(second.pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, c := spawn(t, s, SpawnRequest{Account: u.acct, AllowNewPrivileges: true})
	if out, _, code := c.run(t, sh("id -u"), nil); code != 0 || strings.TrimSpace(out) != strconv.Itoa(int(u.acct.UID)) {
		t.Errorf("id -u printed %q (exit %d)", out, code)
	}
	if st := s.PoolStats(); st.Cold == 0 {
		t.Errorf("stats %+v: the Create after the kill should have started its worker cold", st)
	}
}

// A worker that got its shell's Setup refuses a second one and exits,
// taking its commands with it: a pooled worker is never set up twice.
func TestPoolWorkerRefusesSecondSetup(t *testing.T) {
	a, b := newTestUser(t), newTestUser(t)
	s := newTestSpawner(t, SpawnerOptions{PrestartedWorkers: 1, PrestartNewPrivileges: true})
	l := waitPoolFull(t, s, 1)[0]
	h, c := spawn(t, s, SpawnRequest{Account: a.acct, AllowNewPrivileges: true})
	if h.Pid() != l.pid {
		t.Fatalf("the shell runs in worker %d, not the pooled %d", h.Pid(), l.pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.w.Start(ctx, CommandSpec{ID: "SLEEPER", Line: "sleep 300"}); err != nil {
		t.Fatal(err)
	}
	env, err := buildEnv(b.acct, nil)
	if err != nil {
		t.Fatal(err)
	}
	frame, err := appendFrame(nil, msgSetup{UID: b.acct.UID, GID: b.acct.GID, Groups: b.acct.Groups, User: b.acct.Username,
		Home: b.acct.Home, Shell: "/bin/sh", Env: env, ParentPid: uint32(os.Getpid()), Flags: setupNewPrivs})
	if err != nil {
		t.Fatal(err)
	}
	h.wmu.Lock()
	_, err = h.conn.Write(frame)
	h.wmu.Unlock()
	if err != nil {
		t.Fatalf("writing the second Setup: %v", err)
	}
	select {
	case <-l.proc.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker is still running after a second Setup")
	}
	if !eventually(30*time.Second, func() bool { return len(livePids(b.acct.UID)) == 0 && len(livePids(a.acct.UID)) == 0 }) {
		t.Errorf("processes left: %s / %s", userProcs(strconv.Itoa(int(a.acct.UID))), userProcs(strconv.Itoa(int(b.acct.UID))))
	}
}

// Close with a full pool kills every idle worker and removes its cgroup;
// a shell of the other new-privileges flavour never takes a pooled worker.
func TestPoolCloseAndFlavour(t *testing.T) {
	u := newTestUser(t)
	s, err := newProcSpawner(SpawnerOptions{PrestartedWorkers: 4, PrestartNewPrivileges: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() }) // if the test ends early; Close twice is harmless
	idle := waitPoolFull(t, s, 4)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := s.Spawn(ctx, SpawnRequest{Account: u.acct, ShellID: "wrmdtest-" + randomHex(6)}) // no new privileges
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range idle {
		if w.Pid() == l.pid {
			t.Errorf("a shell without new privileges took pooled worker %d, forked without no_new_privs", l.pid)
		}
	}
	if st := s.PoolStats(); st.Taken != 0 || st.Cold != 1 {
		t.Errorf("stats %+v, want 0 taken, 1 cold", st)
	}
	if err := w.Close(); err != nil {
		t.Error(err)
	}

	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for _, l := range idle {
		select {
		case <-l.proc.exited:
		default:
			t.Errorf("pooled worker %d still running after Close", l.pid)
		}
		if l.cg != nil {
			for _, d := range l.cg.dirs {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("cgroup %s of pooled worker %d left after Close: %v", filepath.Base(d), l.pid, err)
				}
			}
		}
	}
	if n := len(idlePool(s)); n != 0 {
		t.Errorf("%d idle workers after Close", n)
	}
	if s.pool.take(true) != nil {
		t.Error("a closed pool handed out a worker")
	}
}
