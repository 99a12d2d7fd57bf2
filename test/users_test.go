package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type testUser struct {
	Name     string
	Password string
	UID      int
	Admin    bool
}

// ownerTag goes into the account's comment so that a later run can tell a
// live run's users from the leftovers of one that was killed.
func ownerTag() string { return fmt.Sprintf("wrmde2e pid=%d", os.Getpid()) }

func createUser(name string, admin bool) (*testUser, error) {
	args := []string{"--create-home", "--shell", "/bin/sh", "--comment", ownerTag()}
	if admin {
		args = append(args, "--groups", adminGroup)
	}
	args = append(args, name)
	if out, err := exec.Command("useradd", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("useradd %s: %v: %s", name, err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	return &testUser{Name: name, Password: randPassword(), UID: uid, Admin: admin}, nil
}

func deleteUser(name string) error {
	if !strings.HasPrefix(name, userPrefix) {
		return fmt.Errorf("refusing to delete %q: not a test user", name)
	}
	if _, err := user.Lookup(name); err != nil {
		return nil
	}
	out, err := exec.Command("userdel", "--remove", name).CombinedOutput()
	if err != nil {
		// userdel exits 12 when it could not remove the mail spool or home;
		// the account itself is gone then.
		if _, lerr := user.Lookup(name); lerr != nil {
			return nil
		}
		return fmt.Errorf("userdel %s: %v: %s", name, err, out)
	}
	return nil
}

func groupExists(name string) bool {
	_, err := user.LookupGroup(name)
	return err == nil
}

func ensureGroup() error {
	if groupExists(adminGroup) {
		return nil
	}
	out, err := exec.Command("groupadd", adminGroup).CombinedOutput()
	if err != nil && !groupExists(adminGroup) {
		return fmt.Errorf("groupadd %s: %v: %s", adminGroup, err, out)
	}
	w.created = err == nil
	return nil
}

// removeGroupIfUnused removes the group we created, unless another run's
// users are still members of it.
func removeGroupIfUnused() {
	f, err := os.Open("/etc/group")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ":")
		if len(parts) == 4 && parts[0] == adminGroup && strings.TrimSpace(parts[3]) != "" {
			return
		}
	}
	exec.Command("groupdel", adminGroup).Run()
}

// sweepStaleUsers removes wrmde2e accounts whose creating test process is
// gone (a run killed by -timeout cannot clean up after itself).
func sweepStaleUsers() {
	for _, e := range passwdEntries() {
		if !strings.HasPrefix(e.name, userPrefix) {
			continue
		}
		pid := 0
		fmt.Sscanf(e.comment, "wrmde2e pid=%d", &pid)
		if pid > 0 && processAlive(pid) {
			continue
		}
		killUserProcesses(e.name, 3*time.Second)
		if err := deleteUser(e.name); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stale user: %v\n", err)
		}
	}
}

type passwdEntry struct {
	name, comment string
	uid           int
}

func passwdEntries() []passwdEntry {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []passwdEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ":")
		if len(p) < 7 {
			continue
		}
		uid, _ := strconv.Atoi(p[2])
		out = append(out, passwdEntry{name: p[0], comment: p[4], uid: uid})
	}
	return out
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil || syscall.Kill(pid, 0) == syscall.EPERM
}

// proc is one process as seen in /proc.
type proc struct {
	PID, PPID, UID int
	Exe            string
	Args           []string
}

func (p proc) String() string {
	return fmt.Sprintf("pid %d ppid %d uid %d %q", p.PID, p.PPID, p.UID, strings.Join(p.Args, " "))
}

// isWorker tells whether p is a `winrmd worker` process.
func (p proc) isWorker() bool {
	if len(p.Args) < 2 || p.Args[1] != "worker" {
		return strings.Contains(strings.Join(p.Args, " "), "winrmd worker")
	}
	return strings.Contains(filepath.Base(p.Args[0]), "winrmd") || strings.Contains(p.Exe, "winrmd")
}

// isIdlePooled tells whether p is a pre-started worker waiting in a live
// daemon's pool (winrs.prestarted_workers): a worker of a running daemon
// (one startDaemon made, or a `winrmd serve|lab` such as make run's), still
// root in every id, in one of the pool's own cgroups (…/pool-<random>) or
// not yet moved out of the daemon's. Such a worker belongs to no shell and
// no user, so the leftover checks skip it; once its daemon is gone it
// counts like any other. A shell of root (authorization.allow_root) taken
// from the pool looks the same and is skipped too: no test leaves one.
func (p proc) isIdlePooled(daemons map[int]bool) bool {
	if !p.isWorker() || p.UID != 0 || !(daemons[p.PPID] || liveDaemonExe(p.PPID)) {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok && strings.Join(strings.Fields(v), " ") != "0 0 0 0" {
			return false
		}
	}
	// In the pool's group, or still in the daemon's own: a worker the pool
	// is launching on cgroup v1, which is moved into its group after fork.
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.PID))
	if err != nil {
		return false
	}
	parent, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.PPID))
	return strings.Contains(string(cg), "/pool-") || (err == nil && string(cg) == string(parent))
}

// liveDaemonExe tells whether pid is a running winrmd process other than a
// worker (a daemon: `winrmd serve` or `winrmd lab`).
func liveDaemonExe(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || !strings.Contains(filepath.Base(strings.TrimSuffix(exe, " (deleted)")), "winrmd") {
		return false
	}
	cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(string(cl), "\x00")
	return err == nil && len(args) > 1 && (args[1] == "serve" || args[1] == "lab")
}

func listProcs() []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p := proc{PID: pid, UID: -1}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(st), "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				switch f[0] {
				case "Uid:":
					p.UID, _ = strconv.Atoi(f[1])
				case "PPid:":
					p.PPID, _ = strconv.Atoi(f[1])
				}
			}
		}
		if cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			for _, a := range strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00") {
				if a != "" {
					p.Args = append(p.Args, a)
				}
			}
		}
		p.Exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		p.Exe = strings.TrimSuffix(p.Exe, " (deleted)")
		out = append(out, p)
	}
	return out
}

// ourProcs returns the processes that count as "left behind" by this run: any
// process of an account this run created, and any `winrmd worker` of our
// binary or of one of our daemons. Workers of other engineers' daemons on a
// shared machine are not ours and are ignored. A uid counts only while its
// account is still ours (the passwd comment names this process, or it is an
// account a test registered and still exists under that uid): uids are
// reused as soon as an account is deleted, and another run's processes must
// never be judged — or killed — as ours.
func ourProcs() []proc {
	uids := ownedUIDs()
	daemons := daemonPIDs()
	var out []proc
	for _, p := range listProcs() {
		switch {
		case uids[p.UID]:
			out = append(out, p)
		case p.isWorker() && (p.Exe == w.bin || p.Exe == w.workerBin || daemons[p.PPID]) && !p.isIdlePooled(daemons):
			out = append(out, p)
		}
	}
	return out
}

// ownedUIDs: the uids of accounts that exist now and belong to this run.
func ownedUIDs() map[int]bool {
	mine := ownerTag()
	byUID := map[int]passwdEntry{}
	for _, e := range passwdEntries() {
		byUID[e.uid] = e
	}
	uids := map[int]bool{}
	for _, u := range w.users() {
		if u != nil {
			if e, ok := byUID[u.UID]; ok && e.name == u.Name && e.comment == mine {
				uids[u.UID] = true
			}
		}
	}
	for _, uid := range extraUIDs() {
		// Deleted, or reused by another run's (or anyone's) account: not ours.
		if e, ok := byUID[uid]; ok && (e.comment == mine || e.name == labUser) {
			uids[uid] = true
		}
	}
	return uids
}

func userProcs(uid int) []proc {
	var out []proc
	for _, p := range listProcs() {
		if p.UID == uid {
			out = append(out, p)
		}
	}
	return out
}

func workerProcs() []proc {
	var out []proc
	daemons := daemonPIDs()
	for _, p := range listProcs() {
		if p.isWorker() && (p.Exe == w.bin || p.Exe == w.workerBin || daemons[p.PPID]) && !p.isIdlePooled(daemons) {
			out = append(out, p)
		}
	}
	return out
}

// killUserProcesses SIGKILLs, by pid, every process of a test account.
func killUserProcesses(name string, within time.Duration) {
	u, err := user.Lookup(name)
	if err != nil || !strings.HasPrefix(name, userPrefix) {
		return
	}
	uid, _ := strconv.Atoi(u.Uid)
	deadline := time.Now().Add(within)
	for {
		ps := userProcs(uid)
		if len(ps) == 0 {
			return
		}
		for _, p := range ps {
			syscall.Kill(p.PID, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// makeGroup creates a Linux group (name must start with the test prefix) and
// removes it when the test ends. Create groups before the users in them:
// cleanups run last-in first-out, so the users go first.
func makeGroup(t testing.TB, name string) string {
	t.Helper()
	if !strings.HasPrefix(name, userPrefix) {
		t.Fatalf("test group %q lacks the %s prefix", name, userPrefix)
	}
	if out, err := exec.Command("groupadd", name).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("groupdel", name).CombinedOutput(); err != nil && groupExists(name) {
			t.Errorf("groupdel %s: %v: %s", name, err, out)
		}
	})
	return name
}

// makeUsers creates n users named userPrefix+tag+<random>+<i>, members of the
// administrators' group when admin, plus extra groups. They count for the
// leftover-process checks and are removed (with their processes) when the
// test ends.
func makeUsers(t testing.TB, tag string, n int, admin bool, extra ...string) []*testUser {
	t.Helper()
	need(t)
	suffix := randHex(2)
	var out []*testUser
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s%s%s%d", userPrefix, tag, suffix, i)
		u, err := createUser(name, admin)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			killUserProcesses(u.Name, 5*time.Second)
			if err := deleteUser(u.Name); err != nil {
				t.Errorf("removing test user: %v", err)
			}
			forgetUID(u.UID)
		})
		addExtraUID(u.UID)
		if len(extra) > 0 {
			if o, err := exec.Command("usermod", "-a", "-G", strings.Join(extra, ","), name).CombinedOutput(); err != nil {
				t.Fatalf("usermod -aG %v %s: %v: %s", extra, name, err, o)
			}
		}
		out = append(out, u)
	}
	return out
}

// forgetUID drops a deleted user's uid from the leftover checks:
// useradd hands uids out again, and a later check must not take (and kill)
// the processes of whoever gets the uid next — another test's user, or
// another run's on a shared machine.
func forgetUID(uid int) {
	extraMu.Lock()
	defer extraMu.Unlock()
	for i, u := range extraUID {
		if u == uid {
			extraUID = append(extraUID[:i], extraUID[i+1:]...)
			return
		}
	}
}

// writeStore writes an account store holding users (and any name:password
// pairs in more) and returns its path.
func writeStore(t testing.TB, dir string, users []*testUser, more ...[2]string) string {
	t.Helper()
	wd := need(t)
	p := filepath.Join(dir, "accounts-"+randHex(3))
	type job struct{ name, pass string }
	var jobs []job
	for _, u := range users {
		jobs = append(jobs, job{u.Name, u.Password})
	}
	for _, m := range more {
		jobs = append(jobs, job{m[0], m[1]})
	}
	// One writer at a time: the CLI rewrites the whole file.
	for _, j := range jobs {
		if err := wd.storeAdd(p, j.name, j.pass); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// testDir makes a directory for one test under the shared work directory.
func testDir(t testing.TB) string {
	t.Helper()
	wd := need(t)
	d, err := os.MkdirTemp(wd.work, "rel-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o755)
	return d
}

// procStatus returns /proc/PID/status as key → value.
func procStatus(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}

// procRSSKB is VmRSS of pid in KiB (0 if unreadable).
func procRSSKB(pid int) int64 {
	st, err := procStatus(pid)
	if err != nil {
		return 0
	}
	f := strings.Fields(st["VmRSS"])
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return n
}

// procFDs counts /proc/PID/fd.
func procFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// workerPID finds the worker of a shell through the audit log's
// shell_create event (field worker_pid).
func workerPID(d *Daemon, shellID string, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		for _, e := range d.AuditEvents() {
			if e.Event == "shell_create" && strings.EqualFold(e.ShellID, shellID) {
				var m map[string]any
				if json.Unmarshal([]byte(e.Raw), &m) == nil {
					if v, ok := m["worker_pid"].(float64); ok {
						return int(v)
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procsOf lists the processes of a uid, as text for error messages.
func procsOf(uids ...int) []proc {
	want := map[int]bool{}
	for _, u := range uids {
		want[u] = true
	}
	var out []proc
	for _, p := range listProcs() {
		if want[p.UID] {
			out = append(out, p)
		}
	}
	return out
}

func procList(ps []proc) string {
	var s []string
	for _, p := range ps {
		s = append(s, "  "+p.String())
	}
	return strings.Join(s, "\n")
}

func eventually(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// logHas tells whether the daemon log contains s (case-insensitive).
func logHas(d *Daemon, s string) bool {
	b, _ := os.ReadFile(d.Stderr)
	return bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(s)))
}
