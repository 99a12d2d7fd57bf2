package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// idlePooledOf lists the pre-started workers waiting in d's pool.
func idlePooledOf(d *Daemon) []proc {
	daemons := daemonPIDs()
	var out []proc
	for _, p := range listProcs() {
		if p.PPID == d.PID && p.isIdlePooled(daemons) {
			out = append(out, p)
		}
	}
	return out
}

// Issue 13 item 1, end to end: shells of two users take pre-started workers,
// each its own; no idle pooled worker ever holds a user's id; the pool
// refills with new processes; the metrics count where workers came from.
func TestPrestartedWorkersTwoUsers(t *testing.T) {
	need(t)
	const size = 2
	d := startDaemon(t, func(c *configs.Config) { c.Winrs.PrestartedWorkers = size })
	if !eventually(30*time.Second, func() bool { return len(idlePooledOf(d)) == size }) {
		t.Fatalf("the daemon's pool holds %d idle workers, want %d", len(idlePooledOf(d)), size)
	}
	pooled := map[int]bool{}
	for _, p := range idlePooledOf(d) {
		pooled[p.PID] = true
	}

	workerOf := map[string]int{} // user → the pid of its shell's worker
	for _, u := range []*testUser{w.admin, w.admin2} {
		sh, err := createShell(basicClient{d.HTTPS, true, u.Name, u.Password})
		if err != nil {
			t.Fatalf("%s: %v", u.Name, err)
		}
		t.Cleanup(func() { _ = sh.delete() })
		// The command's parent is the shell's worker.
		res, err := sh.run("echo $PPID; id -u")
		if err != nil {
			t.Fatalf("%s: %v", u.Name, err)
		}
		f := strings.Fields(string(res.Stdout))
		if len(f) != 2 || f[1] != strconv.Itoa(u.UID) {
			t.Fatalf("%s: output %q, want the worker's pid and uid %d", u.Name, res.Stdout, u.UID)
		}
		pid, _ := strconv.Atoi(f[0])
		workerOf[u.Name] = pid
		for _, p := range listProcs() {
			if p.PID == pid && (!p.isWorker() || p.UID != u.UID || p.PPID != d.PID) {
				t.Errorf("%s: the command's parent %v is not a worker of the daemon running as uid %d", u.Name, p, u.UID)
			}
		}
		if !pooled[pid] {
			t.Errorf("%s: the shell's worker %d was not one of the pre-started %v", u.Name, pid, pooled)
		}
		// Wait for the refill before the next user, so it finds one too.
		if !eventually(30*time.Second, func() bool { return len(idlePooledOf(d)) == size }) {
			t.Fatalf("the pool did not refill to %d", size)
		}
		for _, p := range idlePooledOf(d) {
			pooled[p.PID] = true
		}
	}
	if workerOf[w.admin.Name] == workerOf[w.admin2.Name] {
		t.Errorf("both users' shells run in worker %d", workerOf[w.admin.Name])
	}

	// What ps shows: every worker of the daemon is either a shell's,
	// running as that shell's user, or idle and root's in every id.
	for _, p := range workerProcs() {
		if p.PPID != d.PID {
			continue
		}
		switch p.PID {
		case workerOf[w.admin.Name]:
			if p.UID != w.admin.UID {
				t.Errorf("%s's worker runs as uid %d", w.admin.Name, p.UID)
			}
		case workerOf[w.admin2.Name]:
			if p.UID != w.admin2.UID {
				t.Errorf("%s's worker runs as uid %d", w.admin2.Name, p.UID)
			}
		default:
			t.Errorf("a worker of the daemon serves no shell of this test and is not an idle pooled one: %v", p)
		}
	}
	for _, p := range idlePooledOf(d) {
		if p.PID == workerOf[w.admin.Name] || p.PID == workerOf[w.admin2.Name] {
			t.Errorf("a shell's worker %d is counted idle in the pool", p.PID)
		}
		if p.UID != 0 {
			t.Errorf("idle pooled worker %v holds uid %d", p, p.UID)
		}
	}

	m, err := d.MetricsSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if got := m[`winrmd_worker_starts_total{source="prestarted"}`]; got < 2 {
		t.Errorf("winrmd_worker_starts_total{source=\"prestarted\"} = %v, want ≥ 2", got)
	}
	if got := m["winrmd_prestarted_workers_idle"]; got != size {
		t.Errorf("winrmd_prestarted_workers_idle = %v, want %d", got, size)
	}
}

// A daemon's start-up reaps the shell cgroups no live daemon owns; a shell
// of another live daemon, running in the worker binary and taken from its
// pool, is owned and must survive it (the CI's attack suite lost its victim
// shell to exactly that twice: before the orphan check knew the worker
// binary, then to the package test's daemon in a chroot, which resolved the
// first daemon's worker binary by path in its own root and found another
// file or none).
func TestSecondDaemonKeepsFirstDaemonsShells(t *testing.T) {
	need(t)
	// With the worker binary (w.workerBin) the worker's and the daemon's
	// executables differ, which is the case that broke; without it (a
	// WINRMD_BIN with none beside it) the same check holds for a daemon
	// that re-executes itself.
	t.Run("same_root", func(t *testing.T) { secondDaemonKeeps(t, nil) })
	// The second daemon in its own mount namespace, where the worker
	// binary's path names a copy of it: a different file at the same path,
	// as a chroot or a container image shows it.
	t.Run("other_mount_namespace", func(t *testing.T) {
		if _, err := os.Stat(w.workerBin); err != nil {
			t.Skipf("no worker binary beside %s to hide: %v", w.bin, err)
		}
		cp := filepath.Join(t.TempDir(), "winrmd-worker")
		data, err := os.ReadFile(w.workerBin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cp, data, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Dir(cp), 0o755)
		secondDaemonKeeps(t, []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount --bind "$0" "$1" && shift && exec "$@"`, cp, w.workerBin})
	})
}

// secondDaemonKeeps starts a daemon with a running shell, then a second
// daemon through wrap, and checks that the shell and the first daemon's
// pooled workers survive the second one's start-up.
func secondDaemonKeeps(t *testing.T, wrap []string) {
	d1 := startDaemon(t, nil)
	sh := runningShell(t, d1, "sleep 3011")
	alive := func() bool { return commandRuns(w.admin.UID, "sleep 3011") }
	idle := len(idlePooledOf(d1))
	if !alive() {
		t.Fatal("precondition: the first daemon's command does not run")
	}
	startDaemonWrapped(t, wrap, nil) // its start-up reaps orphaned shell cgroups
	time.Sleep(500 * time.Millisecond)
	if !alive() {
		t.Errorf("a second daemon's start-up killed the first daemon's shell")
	}
	if n := len(idlePooledOf(d1)); n < idle {
		t.Errorf("a second daemon's start-up killed the first daemon's pooled workers: %d idle, was %d", n, idle)
	}
	// Before the daemons' own clean-ups look for leftovers.
	if err := sh.delete(); err != nil {
		t.Error(err)
	}
}

// The daemon executes the worker binary it opened and checked at start-up
// (through its held descriptor), not whatever the path names later: a
// package upgrade replaces the file before the daemon restarts, and a
// worker of another build would be refused at Hello, failing every new
// shell until then. Here an impostor is bound over the path inside the
// daemon's own mount namespace (no other test's daemon sees it) after the
// daemon started; with no pool, the next shell needs a worker started then.
func TestWorkerIsTheBinaryHeldAtStart(t *testing.T) {
	need(t)
	orig, err := os.Stat(w.workerBin)
	if err != nil {
		t.Skipf("no worker binary beside %s: %v", w.bin, err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	marker := filepath.Join(dir, "impostor-ran")
	impostor := filepath.Join(dir, "winrmd-worker")
	if err := os.WriteFile(impostor, []byte("#!/bin/sh\ntouch "+marker+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := startDaemonWrapped(t, []string{"unshare", "--mount", "--propagation", "private"},
		func(c *configs.Config) { c.Winrs.PrestartedWorkers = 0 })
	if out, err := exec.Command("nsenter", "--target", strconv.Itoa(d.PID), "--mount",
		"mount", "--bind", impostor, w.workerBin).CombinedOutput(); err != nil {
		t.Fatalf("binding the impostor in the daemon's namespace: %v\n%s", err, out)
	}
	sh := runningShell(t, d, "sleep 3013")
	defer sh.delete()
	if _, err := os.Stat(marker); err == nil {
		t.Error("the daemon executed the file now at the worker binary's path")
	}
	var worker int
	for _, p := range workerProcs() {
		if p.UID == w.admin.UID && p.PPID == d.PID {
			worker = p.PID
		}
	}
	if worker == 0 {
		t.Fatalf("no worker of %s under daemon %d", w.admin.Name, d.PID)
	}
	exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", worker))
	if err != nil || !os.SameFile(exe, orig) {
		t.Errorf("worker %d runs %v (%v), want the worker binary held at start", worker, exe, err)
	}
	// Executed as /proc/self/fd/N, the kernel names it "N"; it renames itself
	// and every thread (the runtime's first ones would keep "N").
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", worker)); strings.TrimSpace(string(comm)) != "winrmd-worker" {
		t.Errorf("worker %d is named %q, want winrmd-worker", worker, strings.TrimSpace(string(comm)))
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", worker))
	if err != nil || len(tasks) < 2 {
		t.Fatalf("threads of worker %d: %d, %v", worker, len(tasks), err)
	}
	for _, task := range tasks {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", worker, task.Name())); strings.TrimSpace(string(comm)) != "winrmd-worker" {
			t.Errorf("thread %s of worker %d is named %q, want winrmd-worker", task.Name(), worker, strings.TrimSpace(string(comm)))
		}
	}
}
