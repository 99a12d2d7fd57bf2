package e2e

// Faults (issue 4 §4): the real daemon, real users, real clients, and a fault
// injected from outside — kill -9 of a worker or of the daemon, a client that
// vanishes mid-Receive, file-descriptor exhaustion, a full audit disk,
// SIGTERM and SIGHUP. Each test records faults_injected / faults_survived.

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// relSeq is what `seq FROM TO` prints.
func relSeq(from, to int) []byte {
	var b bytes.Buffer
	for i := from; i <= to; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// relReceiveUntil receives until stdout contains marker.
func relReceiveUntil(sh *winrsShell, cmdID string, marker string, within time.Duration) ([]byte, error) {
	var got []byte
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		r, err := sh.c.Post(receiveXML(sh.ID, cmdID))
		if err != nil {
			return got, err
		}
		if r.Status != 200 {
			if f := r.fault(); f != nil && f.WSMan == codeTimedOut {
				continue
			}
			return got, fmt.Errorf("Receive: %s", r)
		}
		root, err := parseXML(r.Body)
		if err != nil {
			return got, err
		}
		for _, st := range root.all("Stream") {
			if st.Attr["Name"] == "stdout" {
				b, _ := decodeB64(st.Text)
				got = append(got, b...)
			}
		}
		if bytes.Contains(got, []byte(marker)) {
			return got, nil
		}
	}
	return got, fmt.Errorf("marker %q not seen in %s (got %q)", marker, within, clip(got, 200))
}

func decodeB64(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(strings.TrimSpace(s))
}

// relFaultDone records a fault test's figures.
func relFaultDone(t *testing.T, injected int) {
	testStat(t, "faults_injected", int64(injected))
	if !t.Failed() {
		testStat(t, "faults_survived", int64(injected))
	}
}

// ---------------------------------------------------------------- kill -9 a worker

// A worker killed mid-command: its client gets a fault, a second shell of
// the same user running at the same time completes byte-exact, and nothing of
// the dead shell is left once it is deleted.
func TestFaultKillWorker(t *testing.T) {
	need(t)
	d := startDaemon(t, func(c *configs.Config) { c.Service.MaxTimeoutMS = 3000 })
	defer relFaultDone(t, 1)

	ncA, err := dialNTLMSealed(d.HTTP, w.admin.Name, w.admin.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer ncA.Close()
	a, err := createShell(ncA)
	if err != nil {
		t.Fatalf("shell A: %v", err)
	}
	bc := &basicKeepAlive{addr: d.HTTPS, tls: true, user: w.admin.Name, pass: w.admin.Password}
	defer bc.Close()
	b, err := createShell(bc)
	if err != nil {
		t.Fatalf("shell B: %v", err)
	}
	pidA, pidB := workerPID(d, a.ID, 5*time.Second), workerPID(d, b.ID, 5*time.Second)
	if pidA <= 0 || pidB <= 0 || pidA == pidB {
		t.Fatalf("worker pids from the audit log: A=%d B=%d", pidA, pidB)
	}

	// B: 300,000 lines over about 3 s, spanning the kill.
	want := relSeq(0, 299999)
	type out struct {
		r   *result
		err error
	}
	bDone := make(chan out, 1)
	go func() {
		r, err := b.runWith(`i=0; while [ $i -lt 30 ]; do seq $((i*10000)) $((i*10000+9999)); sleep 0.1; i=$((i+1)); done`, nil, nil)
		bDone <- out{r, err}
	}()

	idA, err := a.command("echo started-A; sleep 120; echo never-A")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relReceiveUntil(a, idA, "started-A", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // B is mid-stream now
	if err := syscall.Kill(pidA, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 worker %d: %v", pidA, err)
	}
	t.Logf("killed worker %d of shell %s", pidA, a.ID)

	// A's client: a fault, promptly — never a hang, never a clean Done.
	var last *reply
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		r, err := a.c.Post(receiveXML(a.ID, idA))
		if err != nil {
			t.Fatalf("Receive after the kill: transport error %v (want a SOAP fault)", err)
		}
		last = r
		if r.Status == 200 {
			if bytes.Contains(r.Body, []byte("CommandState/Done")) {
				t.Errorf("Receive after the worker was killed reported Done: %s", r)
				break
			}
			continue
		}
		if f := r.fault(); f != nil && f.WSMan == codeTimedOut {
			continue
		}
		break
	}
	switch {
	case last == nil:
		t.Error("no Receive answer after the kill")
	case last.Status == 200:
		t.Errorf("no fault within 15 s of the worker's death; last answer %s", last)
	case last.fault() == nil:
		t.Errorf("after the worker's death: %s, want a SOAP fault", last)
	default:
		t.Logf("client of the killed worker got: %s", last.fault())
	}
	if !d.waitAudit("worker_failed", "", 1, 5*time.Second) {
		t.Error("audit log has no worker_failed event")
	}
	// Reported, not required: the dead worker's command processes before
	// the client deletes the shell (after the Delete nothing may remain).
	orphans := 0
	for _, p := range procsOf(w.admin.UID) {
		if strings.Join(p.Args, " ") == "sleep 120" {
			orphans++
		}
	}
	t.Logf("processes of the killed worker's command still running before Delete: %d", orphans)

	// B: untouched, byte-exact.
	select {
	case o := <-bDone:
		switch {
		case o.err != nil:
			t.Errorf("shell B (same user, other worker) failed: %v", o.err)
		case !bytes.Equal(o.r.Stdout, want) || o.r.ExitCode != 0:
			t.Errorf("shell B output: %d bytes, exit %d; want %d bytes byte-exact, exit 0 (first difference at %d)",
				len(o.r.Stdout), o.r.ExitCode, len(want), relFirstDiff(o.r.Stdout, want))
		default:
			testStat(t, "bytes_verified", int64(len(want)))
		}
	case <-time.After(60 * time.Second):
		t.Error("shell B did not finish within 60 s")
	}

	// Deleting both shells leaves nothing of the user.
	if r, err := a.c.Post(deleteXML(a.ID)); err != nil {
		t.Errorf("Delete of the dead shell: %v", err)
	} else if r.Status != 200 && r.fault() == nil {
		t.Errorf("Delete of the dead shell: %s", r)
	}
	if err := b.delete(); err != nil {
		t.Errorf("Delete B: %v", err)
	}
	if !eventually(5*time.Second, func() bool { return len(procsOf(w.admin.UID)) == 0 }) {
		t.Errorf("processes of %s left after both shells were deleted:\n%s", w.admin.Name, procList(procsOf(w.admin.UID)))
	}
	// The daemon still serves this user.
	c, err := createShell(bc)
	if err != nil {
		t.Fatalf("new shell after the fault: %v", err)
	}
	r, err := c.run("echo after-fault")
	if err != nil || string(r.Stdout) != "after-fault\n" {
		t.Errorf("command after the fault: %v %+v", err, r)
	}
	c.delete()
	fmt.Printf("fault kill -9 worker: client got a fault, the other shell of the user verified %d bytes\n", len(want))
}

func relFirstDiff(a, b []byte) int {
	n := len(a)
	if len(b) < n {
		n = len(b)
	}
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return n
	}
	return -1
}

// ---------------------------------------------------------------- kill -9 the daemon

// The daemon killed with SIGKILL: no process of the test users survives it
// (direct children, background jobs, nohup), and a daemon restarted on the
// same configuration and ports serves at once.
func TestFaultKillDaemon(t *testing.T) {
	need(t)
	d := startDaemon(t, func(c *configs.Config) { c.Service.MaxTimeoutMS = 3000 })
	d.expectExit = true
	defer relFaultDone(t, 1)

	type held struct{ sh *winrsShell }
	var hs []held
	nc, err := dialNTLMSealed(d.HTTP, w.admin.Name, w.admin.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bc := &basicKeepAlive{addr: d.HTTPS, tls: true, user: w.admin2.Name, pass: w.admin2.Password}
	defer bc.Close()
	cmds := []string{
		"echo ready; sleep 300",
		"sleep 301 & echo ready; sleep 302",
		"nohup sleep 303 >/dev/null 2>&1 & (sleep 304 &) ; echo ready; wait",
	}
	for _, c := range []soapClient{nc, bc} {
		sh, err := createShell(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range cmds {
			id, err := sh.command(cmd)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := relReceiveUntil(sh, id, "ready", 20*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		hs = append(hs, held{sh: sh})
	}
	before := procsOf(w.admin.UID, w.admin2.UID)
	t.Logf("%d processes of the test users before the kill", len(before))
	if len(before) < 6 {
		t.Fatalf("expected the sleeps to run:\n%s", procList(before))
	}

	t0 := time.Now()
	if err := syscall.Kill(d.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.done
	ok := eventually(5*time.Second, func() bool {
		return len(procsOf(w.admin.UID, w.admin2.UID)) == 0 && len(workerProcs()) == 0
	})
	survived := 0
	if !ok {
		left := append(procsOf(w.admin.UID, w.admin2.UID), workerProcs()...)
		survived = len(left)
		t.Errorf("5 s after kill -9 of the daemon, %d process(es) survive:\n%s", len(left), procList(left))
		for _, p := range left {
			syscall.Kill(p.PID, syscall.SIGKILL)
		}
	} else {
		t.Logf("every user process gone %s after kill -9", time.Since(t0).Round(time.Millisecond))
	}
	d.stopped = true
	d.unregister()

	// A daemon killed with SIGKILL cannot remove its shells' cgroups (the
	// next daemon reuses one only under the same shell id): each must be
	// empty now, and the test removes them so the run leaves none behind.
	for _, h := range hs {
		for _, dir := range shellCgroupDirs(h.sh.ID) {
			if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil && len(bytes.TrimSpace(b)) > 0 {
				t.Errorf("cgroup %s of a shell of the killed daemon still holds processes: %s", dir, bytes.Fields(b))
				continue
			}
			var err error
			for i := 0; i < 200; i++ { // EBUSY while the kernel releases the exited tasks
				if err = syscall.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) || !errors.Is(err, syscall.EBUSY) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, syscall.ENOENT) {
				t.Errorf("removing %s, a cgroup of a shell of the killed daemon: %v", dir, err)
			} else {
				t.Logf("removed %s (empty), a cgroup of a shell of the killed daemon", dir)
			}
		}
	}

	// Restart on the same configuration: same ports, same audit file.
	t1 := time.Now()
	d2 := startDaemon(t, func(c *configs.Config) {
		*c = *d.Config
		c.Listeners = append([]configs.Listener(nil), d.Config.Listeners...)
		c.Listeners[0].Port = portOf(d.HTTP)
		c.Listeners[1].Port = portOf(d.HTTPS)
	})
	if d2.HTTP != d.HTTP || d2.HTTPS != d.HTTPS {
		t.Errorf("restarted daemon on %s/%s, want the same addresses %s/%s", d2.HTTP, d2.HTTPS, d.HTTP, d.HTTPS)
	}
	for _, c := range []soapClient{
		&basicKeepAlive{addr: d2.HTTPS, tls: true, user: w.admin2.Name, pass: w.admin2.Password},
	} {
		sh, err := createShell(c)
		if err != nil {
			t.Fatalf("shell on the restarted daemon: %v", err)
		}
		r, err := sh.run("echo restarted")
		if err != nil || string(r.Stdout) != "restarted\n" {
			t.Errorf("command on the restarted daemon: %v %+v", err, r)
		}
		sh.delete()
		c.(*basicKeepAlive).Close()
	}
	nc2, err := dialNTLMSealed(d2.HTTP, w.admin.Name, w.admin.Password)
	if err != nil {
		t.Fatalf("NTLM on the restarted daemon: %v", err)
	}
	defer nc2.Close()
	sh, err := createShell(nc2)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sh.run("id -un")
	if err != nil || string(r.Stdout) != w.admin.Name+"\n" {
		t.Errorf("NTLM command on the restarted daemon: %v %+v", err, r)
	}
	sh.delete()
	el := time.Since(t1)
	testStat(t, "restart_to_first_command_ms", el.Milliseconds())
	if el > 10*time.Second {
		t.Errorf("restarted daemon took %s to serve its first commands", el)
	}
	fmt.Printf("fault kill -9 daemon: %d user processes before, %d survived 5 s after; restarted daemon served in %s\n", len(before), survived, el.Round(time.Millisecond))
}

// ---------------------------------------------------------------- client vanishes

// A client that vanishes (TCP reset) mid-Receive: the command's output is
// kept for the shell's owner until the idle timeout; then the shell and its
// processes are reaped (audit shell_reaped).
func TestFaultClientVanishes(t *testing.T) {
	need(t)
	const idle = 5 * time.Second
	d := startDaemon(t, func(c *configs.Config) {
		c.Winrs.IdleTimeoutMS = idle.Milliseconds()
		c.Service.MaxTimeoutMS = 2000
	})
	defer relFaultDone(t, 1)
	nc1, err := dialNTLMSealed(d.HTTP, w.admin.Name, w.admin.Password)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := createShell(nc1)
	if err != nil {
		t.Fatal(err)
	}
	want := relSeq(1, 20000)
	id, err := sh.command("sleep 1; seq 1 20000; sleep 600")
	if err != nil {
		t.Fatal(err)
	}
	// A Receive in flight, then a TCP reset.
	go nc1.Post(receiveXML(sh.ID, id))
	time.Sleep(300 * time.Millisecond)
	if tc, ok := nc1.rc.c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	nc1.Close()
	vanished := time.Now()

	// Within the idle timeout the owner reconnects and gets every byte.
	time.Sleep(idle / 2)
	nc2, err := dialNTLMSealed(d.HTTP, w.admin.Name, w.admin.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	sh2 := &winrsShell{c: nc2, ID: sh.ID}
	var got []byte
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		r, err := nc2.Post(receiveXML(sh.ID, id))
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != 200 {
			if f := r.fault(); f != nil && f.WSMan == codeTimedOut {
				continue
			}
			t.Fatalf("Receive %s after the client vanished (%s later): %s", sh.ID, time.Since(vanished).Round(time.Millisecond), r)
		}
		root, _ := parseXML(r.Body)
		for _, st := range root.all("Stream") {
			if st.Attr["Name"] == "stdout" {
				b, _ := decodeB64(st.Text)
				got = append(got, b...)
			}
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output kept after the client vanished: %d bytes, want %d byte-exact (first difference at %d)", len(got), len(want), relFirstDiff(got, want))
	}
	testStat(t, "bytes_verified", int64(len(want)))
	lastActivity := time.Now()
	_ = sh2

	// Then nobody asks: the shell is reaped after the idle timeout, with
	// its processes.
	if !d.waitAudit("shell_reaped", "", 1, idle+10*time.Second) {
		t.Fatalf("no shell_reaped within %s of the last request", idle+10*time.Second)
	}
	reapedAfter := time.Since(lastActivity)
	if reapedAfter < idle-time.Second {
		t.Errorf("shell reaped %s after the last request, before the idle timeout %s", reapedAfter, idle)
	}
	if !eventually(5*time.Second, func() bool { return len(procsOf(w.admin.UID)) == 0 }) {
		t.Errorf("processes left after the shell was reaped:\n%s", procList(procsOf(w.admin.UID)))
	}
	r, err := nc2.Post(receiveXML(sh.ID, id))
	if err != nil || r.Status == 200 || r.fault() == nil {
		t.Errorf("Receive on the reaped shell: %v %v, want a fault", err, r)
	}
	fmt.Printf("fault client vanished mid-Receive: %d bytes kept and delivered after %s, shell reaped %s after the last request\n",
		len(want), (idle / 2).Round(time.Millisecond), reapedAfter.Round(time.Millisecond))
}

// ---------------------------------------------------------------- fd exhaustion

// RLIMIT_NOFILE lowered on the running daemon, connections opened until it
// refuses: clear errors in the log, no crash, and service comes back when
// the connections close, without a restart.
func TestFaultFDExhaustion(t *testing.T) {
	need(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	d := startDaemon(t, func(c *configs.Config) {
		c.Service.MaxConnections = 10000
		c.Service.MaxTimeoutMS = 3000
	})
	defer relFaultDone(t, 1)
	pid := d.PID
	orig := relNoFile(pid)
	t.Cleanup(func() {
		if orig != "" && d.Alive() {
			exec.Command("prlimit", "--pid", strconv.Itoa(pid), "--nofile="+orig).Run()
		}
	})
	// An authenticated connection opened before the exhaustion.
	nc, err := dialNTLMSealed(d.HTTP, w.admin.Name, w.admin.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	base := procFDs(pid)
	limit := base + 40
	if out, err := exec.Command("prlimit", "--pid", strconv.Itoa(pid), fmt.Sprintf("--nofile=%d:%d", limit, limit)).CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v: %s", err, out)
	}
	t.Logf("daemon had %d fds; RLIMIT_NOFILE lowered to %d (was %s)", base, limit, orig)

	var conns []*rawConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	held, refusedAt := 0, -1
	for i := 0; i < 300; i++ {
		rc, err := dialRaw(d.HTTP, false)
		if err != nil {
			refusedAt = i
			break
		}
		conns = append(conns, rc)
		r, err := rc.request("POST", "/wsman", map[string]string{"WSMANIDENTIFY": "unauthenticated"}, []byte(identifyXML), 2*time.Second)
		if err != nil || r.Status != 200 {
			refusedAt = i
			break
		}
		held++
	}
	if refusedAt < 0 {
		t.Fatalf("300 connections held under RLIMIT_NOFILE %d and none refused", limit)
	}
	testStat(t, "requests_held", int64(held))
	t.Logf("%d connections held, then refused (daemon fds: %d)", held, procFDs(pid))

	// At the limit: a Create on the already open connection answers (a shell
	// or a clear fault) and never hangs or crashes the daemon.
	r, err := nc.Post(createXML())
	switch {
	case err != nil:
		t.Errorf("Create at fd exhaustion: %v (want a shell or a fault)", err)
	case r.Status == 200:
		t.Log("Create at fd exhaustion succeeded")
		if root, err := parseXML(r.Body); err == nil {
			for _, sel := range root.all("Selector") {
				if sel.Attr["Name"] == "ShellId" {
					nc.Post(deleteXML(strings.TrimSpace(sel.Text)))
				}
			}
		}
	case r.fault() == nil:
		t.Errorf("Create at fd exhaustion: %s, want a shell or a SOAP fault", r)
	default:
		t.Logf("Create at fd exhaustion: %s", r.fault())
	}
	if !d.Alive() {
		t.Fatalf("daemon died at fd exhaustion:\n%s", tail(d.Stderr, 40))
	}
	if !logHas(d, "too many open files") {
		t.Errorf("daemon log does not name the cause (\"too many open files\"):\n%s", tail(d.Stderr, 20))
	}

	// Connections close: the same process serves again, still under the
	// lowered limit.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	t0 := time.Now()
	if !eventually(15*time.Second, func() bool { return identify(d.HTTP, false) == nil }) {
		t.Fatalf("daemon does not serve 15 s after the connections closed:\n%s", tail(d.Stderr, 20))
	}
	recovered := time.Since(t0)
	nc2, err := dialNTLMSealed(d.HTTP, w.admin.Name, w.admin.Password)
	if err != nil {
		t.Fatalf("NTLM logon after recovery: %v", err)
	}
	defer nc2.Close()
	sh, err := createShell(nc2)
	if err != nil {
		t.Fatalf("shell after recovery: %v", err)
	}
	want := relSeq(1, 5000)
	res, err := sh.run("seq 1 5000")
	if err != nil || !bytes.Equal(res.Stdout, want) {
		t.Errorf("command after recovery: %v (%d bytes)", err, len(res.Stdout))
	}
	sh.delete()
	if d.PID != pid || !d.Alive() {
		t.Error("the daemon was restarted")
	}
	fmt.Printf("fault fd exhaustion: limit %d, %d connections held then refused, served again %s after they closed, no restart\n",
		limit, held, recovered.Round(time.Millisecond))
}

// relNoFile reads "soft:hard" of RLIMIT_NOFILE from /proc/PID/limits.
func relNoFile(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
			if len(f) >= 2 {
				return f[0] + ":" + f[1]
			}
		}
	}
	return ""
}

// ---------------------------------------------------------------- full audit disk

// logging.audit_file on a 1 MiB tmpfs mounted in the daemon's own private
// mount namespace (it disappears with the daemon): filled up, the daemon keeps
// serving and logs that audit writes fail; space freed, auditing resumes.
func TestFaultAuditDiskFull(t *testing.T) {
	need(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	mnt := filepath.Join(testDir(t), "auditfs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	wrap := []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size=1m,mode=0755 wrmde2e-audit "$0" && exec "$@"`, mnt}
	d := startDaemonWrapped(t, wrap, func(c *configs.Config) {
		c.Logging.AuditFile = filepath.Join(mnt, "audit.log")
		c.Service.MaxTimeoutMS = 3000
	})
	defer relFaultDone(t, 1)
	// Read the audit log through the daemon's mount namespace.
	inNS := func(p string) string { return fmt.Sprintf("/proc/%d/root%s", d.PID, p) }
	d.Audit = inNS(filepath.Join(mnt, "audit.log"))
	if _, err := os.Stat(filepath.Join(mnt, "audit.log")); err == nil {
		t.Fatal("the audit tmpfs is visible in the host's mount namespace")
	}

	bc := &basicKeepAlive{addr: d.HTTPS, tls: true, user: w.admin.Name, pass: w.admin.Password}
	defer bc.Close()
	runOne := func(tag string) (string, error) {
		sh, err := createShell(bc)
		if err != nil {
			return "", err
		}
		defer sh.delete()
		r, err := sh.run("echo " + tag)
		if err != nil {
			return sh.ID, err
		}
		if string(r.Stdout) != tag+"\n" {
			return sh.ID, fmt.Errorf("output %q", r.Stdout)
		}
		return sh.ID, nil
	}
	if _, err := runOne("before"); err != nil {
		t.Fatal(err)
	}
	if !d.waitAudit("shell_create", "", 1, 5*time.Second) {
		t.Fatal("no audit events before the disk filled")
	}

	// Fill the file system.
	fill := inNS(filepath.Join(mnt, "fill"))
	f, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	total := 0
	for total < 8<<20 {
		n, err := f.Write(chunk)
		total += n
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the audit tmpfs: %v", err)
			}
			break
		}
	}
	f.Close()
	t.Logf("audit tmpfs filled with %d bytes", total)
	n0 := len(d.AuditEvents())

	// The daemon keeps serving while audit writes fail.
	for i := 0; i < 15; i++ {
		if _, err := runOne(fmt.Sprintf("full-%d", i)); err != nil {
			t.Fatalf("request %d with the audit disk full: %v", i, err)
		}
	}
	if !eventually(5*time.Second, func() bool { return logHas(d, "audit write failed") || logHas(d, "no space left") }) {
		t.Errorf("daemon log does not say that audit writes failed:\n%s", tail(d.Stderr, 20))
	}
	n1 := len(d.AuditEvents())
	t.Logf("audit events: %d before filling, %d after 15 shells on a full disk", n0, n1)
	if n1-n0 >= 15*4 {
		t.Errorf("the audit log grew by %d events on a full disk: it was not full", n1-n0)
	}

	// Free the space: auditing resumes by itself.
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	id, err := runOne("after")
	if err != nil {
		t.Fatalf("request after freeing space: %v", err)
	}
	// Auditing resumes: the new shell's events are there, and whole — a
	// write cut short by the full disk must not leave a fragment that the
	// next event is glued to.
	events := func(kind string) bool {
		for _, e := range d.AuditEvents() {
			if e.Event == kind && strings.EqualFold(e.ShellID, id) {
				return true
			}
		}
		return false
	}
	if !eventually(5*time.Second, func() bool { return events("shell_delete") }) {
		t.Errorf("audit did not resume after space was freed: no shell_delete for %s", id)
	}
	raw, _ := os.ReadFile(d.Audit)
	var bad []string
	for _, line := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			bad = append(bad, line)
		}
	}
	if len(bad) > 0 {
		t.Errorf("audit log has %d line(s) that are not one JSON event (a write cut short by ENOSPC left a fragment):\n%s",
			len(bad), strings.Join(bad, "\n"))
	}
	if !events("shell_create") {
		t.Errorf("the first event after space was freed (shell_create of %s) is missing from the audit log", id)
	}
	fmt.Printf("fault full audit disk: 15 shells served while audit writes failed; after space was freed: %d corrupt audit line(s), %d event(s) lost\n",
		len(bad), map[bool]int{true: 0, false: 1}[events("shell_create")])
}

// ---------------------------------------------------------------- SIGTERM

// SIGTERM: a Create that arrives after it gets a fault and new connections
// are refused; an in-flight Receive completes with its output; workers (even
// ones whose commands ignore SIGTERM) are ended; the daemon exits 0 and
// leaves nothing.
func TestFaultSIGTERM(t *testing.T) {
	need(t)
	d := startDaemon(t, func(c *configs.Config) { c.Service.MaxTimeoutMS = 20000 })
	defer relFaultDone(t, 1)

	nc, err := dialNTLMSealed(d.HTTP, w.admin.Name, w.admin.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	a, err := createShell(nc)
	if err != nil {
		t.Fatal(err)
	}
	bc := &basicKeepAlive{addr: d.HTTPS, tls: true, user: w.admin.Name, pass: w.admin.Password}
	defer bc.Close()
	b, err := createShell(bc)
	if err != nil {
		t.Fatal(err)
	}
	idB, err := b.command("trap '' TERM INT HUP; echo ready-B; sleep 120")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relReceiveUntil(b, idB, "ready-B", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	idA, err := a.command("sleep 2; echo done-A")
	if err != nil {
		t.Fatal(err)
	}
	// A Create whose body completes only after SIGTERM.
	slow, err := dialRaw(d.HTTPS, true)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	body := []byte(createXML())
	head := fmt.Sprintf("POST /wsman HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/soap+xml;charset=UTF-8\r\nContent-Length: %d\r\n\r\n",
		d.HTTPS, basicAuth(w.admin.Name, w.admin.Password), len(body))
	if err := slow.writeRaw(append([]byte(head), body[:len(body)/2]...)); err != nil {
		t.Fatal(err)
	}

	type out struct {
		r   *reply
		err error
	}
	recv := make(chan out, 1)
	go func() {
		r, err := nc.Post(receiveXML(a.ID, idA))
		recv <- out{r, err}
	}()
	time.Sleep(500 * time.Millisecond)
	createsBefore := d.AuditCount("shell_create", "")
	t0 := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)

	// New shells are refused.
	if err := slow.writeRaw(body[len(body)/2:]); err != nil {
		t.Errorf("completing the Create after SIGTERM: %v", err)
	} else if r, err := slow.readReply("POST", 15*time.Second); err != nil {
		t.Errorf("Create after SIGTERM: %v (want a fault)", err)
	} else if r.Status == 200 || r.fault() == nil {
		t.Errorf("Create after SIGTERM: %s, want a SOAP fault", r)
	} else {
		t.Logf("Create after SIGTERM: %s", r.fault())
	}
	if r, err := postBasic(d.HTTPS, true, w.admin.Name, w.admin.Password, createXML()); err == nil && r.Status == 200 {
		t.Errorf("a new connection after SIGTERM created a shell: %s", r)
	}

	// The in-flight Receive completes with its output.
	select {
	case o := <-recv:
		switch {
		case o.err != nil:
			t.Errorf("in-flight Receive during shutdown: %v", o.err)
		case o.r.Status != 200:
			t.Errorf("in-flight Receive during shutdown: %s", o.r)
		default:
			root, _ := parseXML(o.r.Body)
			var got []byte
			for _, st := range root.all("Stream") {
				if st.Attr["Name"] == "stdout" {
					b, _ := decodeB64(st.Text)
					got = append(got, b...)
				}
			}
			if string(got) != "done-A\n" {
				t.Errorf("in-flight Receive during shutdown returned stdout %q, want \"done-A\\n\"", got)
			} else {
				testStat(t, "requests_held", 1)
			}
		}
	case <-time.After(15 * time.Second):
		t.Error("in-flight Receive did not complete within 15 s of SIGTERM")
	}

	// The daemon exits 0 within its grace periods and leaves nothing.
	exited, werr := signalAndWait(d, 0, 30*time.Second)
	if !exited {
		t.Fatalf("daemon still running 30 s after SIGTERM:\n%s", tail(d.Stderr, 20))
	}
	took := time.Since(t0)
	if werr != nil {
		t.Errorf("daemon exit after SIGTERM: %v, want status 0", werr)
	}
	if n := d.AuditCount("shell_create", ""); n != createsBefore {
		t.Errorf("%d shell(s) created after SIGTERM", n-createsBefore)
	}
	if !eventually(5*time.Second, func() bool { return len(ourProcs()) == 0 }) {
		t.Errorf("left after the daemon exited:\n%s", procList(ourProcs()))
	}
	testStat(t, "sigterm_to_exit_ms", took.Milliseconds())
	fmt.Printf("fault SIGTERM: late Create refused with a fault, in-flight Receive completed, exit 0 after %s, nothing left\n", took.Round(time.Millisecond))
}

// ---------------------------------------------------------------- SIGHUP

// SIGHUP reloads the certificate, authorization.allowed_groups and
// logging.level without dropping shells.
func TestFaultSIGHUP(t *testing.T) {
	wd := need(t)
	dir := testDir(t)
	grp := makeGroup(t, fmt.Sprintf("%sh%s", userPrefix, randHex(2)))
	ua := makeUsers(t, "ha", 1, true, grp)[0] // stays allowed
	ub := makeUsers(t, "hb", 1, true)[0]      // loses access
	store := writeStore(t, dir, []*testUser{ua, ub})
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	relCert(t, cert, key)
	d := startDaemon(t, func(c *configs.Config) {
		c.Accounts.StoreFile = store
		c.Listeners[1].CertFile, c.Listeners[1].KeyFile = cert, key
		c.Authorization.AllowedGroups = []string{adminGroup}
		c.Logging.Level = "info"
		c.Service.MaxTimeoutMS = 3000
	})
	defer relFaultDone(t, 1)
	fp1 := relCertFile(t, cert)
	if got := relServedCert(t, d.HTTPS); got != fp1 {
		t.Fatalf("served certificate %x, want the file's %x", got[:8], fp1[:8])
	}

	// Shells that must survive the reload: ua over HTTPS Basic and NTLM, ub
	// over NTLM; a command in ua's shell streams across the SIGHUP.
	bcA := &basicKeepAlive{addr: d.HTTPS, tls: true, user: ua.Name, pass: ua.Password}
	defer bcA.Close()
	sa, err := createShell(bcA)
	if err != nil {
		t.Fatal(err)
	}
	ncA, err := dialNTLMSealed(d.HTTP, ua.Name, ua.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer ncA.Close()
	sa2, err := createShell(ncA)
	if err != nil {
		t.Fatal(err)
	}
	ncB, err := dialNTLMSealed(d.HTTP, ub.Name, ub.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer ncB.Close()
	sb, err := createShell(ncB)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&want, "tick%d\n", i)
	}
	type out struct {
		r   *result
		err error
	}
	streamed := make(chan out, 1)
	go func() {
		r, err := sa2.runWith(`i=0; while [ $i -lt 40 ]; do echo tick$i; sleep 0.1; i=$((i+1)); done`, nil, nil)
		streamed <- out{r, err}
	}()
	time.Sleep(500 * time.Millisecond)

	// Rewrite certificate and configuration, then SIGHUP.
	tmpC, tmpK := filepath.Join(dir, "new-cert.pem"), filepath.Join(dir, "new-key.pem")
	relCert(t, tmpC, tmpK)
	fp2 := relCertFile(t, tmpC)
	if fp2 == fp1 {
		t.Fatal("the new certificate equals the old one")
	}
	if err := os.Rename(tmpK, key); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmpC, cert); err != nil {
		t.Fatal(err)
	}
	relRewriteConfig(t, d, func(c *configs.Config) {
		c.Authorization.AllowedGroups = []string{grp}
		c.Logging.Level = "warn"
	})
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !eventually(5*time.Second, func() bool { return relServedCert(t, d.HTTPS) == fp2 }) {
		t.Errorf("new TLS connections still get the old certificate 5 s after SIGHUP")
	}
	// The certificate is reloaded after the level: from here on the log is
	// at warn.
	logOff := relLogSize(d)
	if !d.Alive() {
		t.Fatalf("daemon died on SIGHUP:\n%s", tail(d.Stderr, 30))
	}

	// Existing shells keep working, on their connections and on new ones.
	select {
	case o := <-streamed:
		if o.err != nil || !bytes.Equal(o.r.Stdout, want.Bytes()) {
			t.Errorf("command streaming across SIGHUP: %v, %d bytes (want %d byte-exact)", o.err, len(o.r.Stdout), want.Len())
		} else {
			testStat(t, "bytes_verified", int64(want.Len()))
		}
	case <-time.After(30 * time.Second):
		t.Error("command streaming across SIGHUP did not finish")
	}
	for name, sh := range map[string]*winrsShell{"existing HTTPS Basic shell": sa, "existing NTLM shell": sa2} {
		r, err := sh.run("echo still-here")
		if err != nil || string(r.Stdout) != "still-here\n" {
			t.Errorf("%s of %s after SIGHUP: %v %+v", name, ua.Name, err, r)
		}
	}
	bcA2 := &basicKeepAlive{addr: d.HTTPS, tls: true, user: ua.Name, pass: ua.Password}
	defer bcA2.Close()
	if r, err := (&winrsShell{c: bcA2, ID: sa.ID}).run("id -un"); err != nil || string(r.Stdout) != ua.Name+"\n" {
		t.Errorf("existing shell on a new connection after SIGHUP: %v %+v", err, r)
	}
	// ub's shell on its own connection: reported, not required either way.
	if r, err := sb.run("echo b"); err == nil {
		t.Logf("shell of the removed user on its existing connection still runs (%q)", r.Stdout)
	} else {
		t.Logf("shell of the removed user on its existing connection: %v", err)
	}

	// The removed user is refused on new connections, by both schemes.
	creates := d.AuditCount("shell_create", ub.Name)
	refusals := 0
	if r, err := postBasicFrom(srcAddr(), d.HTTPS, true, ub.Name, ub.Password, createXML()); err != nil {
		t.Errorf("Basic as %s after SIGHUP: %v", ub.Name, err)
	} else if r.Status == 200 {
		t.Errorf("Basic as %s (removed from allowed_groups) after SIGHUP: %s", ub.Name, r)
	} else {
		refusals++
	}
	nc, r, err := dialNTLM(d.HTTP, false, ub.Name, ub.Password, ntlmOpts{src: srcAddr()})
	switch {
	case err != nil && r == nil:
		t.Errorf("NTLM as %s after SIGHUP: %v", ub.Name, err)
	case r.Status == 200:
		rr, err := nc.Post(createXML())
		if err == nil && rr.Status == 200 {
			t.Errorf("NTLM as %s (removed from allowed_groups) created a shell after SIGHUP", ub.Name)
		} else {
			refusals++
		}
	default:
		refusals++
	}
	if nc != nil {
		nc.Close()
	}
	if n := d.AuditCount("shell_create", ub.Name); n != creates {
		t.Errorf("%d shell(s) created for the removed user after SIGHUP", n-creates)
	}
	testStat(t, "privilege_refused", int64(refusals))
	// The remaining member logs on anew.
	bcA3 := &basicKeepAlive{addr: d.HTTPS, tls: true, user: ua.Name, pass: ua.Password, src: srcAddr()}
	defer bcA3.Close()
	if sh, err := createShell(bcA3); err != nil {
		t.Errorf("%s (still allowed) after SIGHUP: %v", ua.Name, err)
	} else {
		sh.delete()
	}

	// logging.level warn: no info line since the reload. Then back to info.
	if n := relLogLevelLines(d, logOff, "info"); n > 0 {
		t.Errorf("%d info lines logged after SIGHUP set logging.level to warn", n)
	}
	logOff2 := relLogSize(d)
	// The removed user is let back in, so that its shell can be deleted
	// below (a revoked user cannot delete its own shell; its connection
	// may already be refused by a re-authorization).
	relRewriteConfig(t, d, func(c *configs.Config) {
		c.Logging.Level = "info"
		c.Authorization.AllowedGroups = []string{grp, adminGroup}
	})
	d.cmd.Process.Signal(syscall.SIGHUP)
	if !eventually(5*time.Second, func() bool { return relLogLevelLines(d, logOff2, "info") > 0 }) {
		t.Errorf("no info line logged after SIGHUP set logging.level back to info")
	}

	for _, sh := range []*winrsShell{sa, sa2} {
		if err := sh.delete(); err != nil {
			t.Errorf("delete after SIGHUP: %v", err)
		}
	}
	if err := sb.delete(); err != nil {
		// Its old connection was refused after the first reload: delete
		// from a new one.
		ncB2, err := dialNTLMSealed(d.HTTP, ub.Name, ub.Password)
		if err != nil {
			t.Fatalf("%s let back in: %v", ub.Name, err)
		}
		defer ncB2.Close()
		if err := (&winrsShell{c: ncB2, ID: sb.ID}).delete(); err != nil {
			t.Errorf("delete %s's shell after it was let back in: %v", ub.Name, err)
		}
	}
	_ = wd
	fmt.Printf("fault SIGHUP: new certificate served, removed user refused (%d/2), shells kept, log level applied\n", refusals)
}

func relCert(t testing.TB, cert, key string) {
	t.Helper()
	if out, err := exec.Command(w.bin, "cert", "generate", "--cert", cert, "--key", key,
		"--host", "127.0.0.1", "--host", "localhost").CombinedOutput(); err != nil {
		t.Fatalf("winrmd cert generate: %v\n%s", err, out)
	}
}

// relCertFile is the sha256 of the first certificate in a PEM file.
func relCertFile(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM certificate", path)
	}
	return sha256.Sum256(blk.Bytes)
}

// relServedCert is the sha256 of the certificate a new TLS connection gets.
func relServedCert(t testing.TB, addr string) [32]byte {
	rc, err := dialRaw(addr, true)
	if err != nil {
		return [32]byte{}
	}
	defer rc.Close()
	if rc.cert == nil {
		return [32]byte{}
	}
	return sha256.Sum256(rc.cert.Raw)
}

func relRewriteConfig(t testing.TB, d *Daemon, mutate func(*configs.Config)) {
	t.Helper()
	c := *d.Config
	mutate(&c)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	y, err := configs.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	tmp := d.cfgPath + ".new"
	if err := os.WriteFile(tmp, y, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, d.cfgPath); err != nil {
		t.Fatal(err)
	}
	d.Config = &c
}

func relLogSize(d *Daemon) int64 {
	st, err := os.Stat(d.Stderr)
	if err != nil {
		return 0
	}
	return st.Size()
}

// relLogLevelLines counts JSON log lines at level written after offset.
func relLogLevelLines(d *Daemon, offset int64, level string) int {
	b, _ := os.ReadFile(d.Stderr)
	if offset > int64(len(b)) {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		if strings.Contains(line, `"level":"`+level+`"`) {
			n++
		}
	}
	return n
}

// shellCgroupDirs lists the cgroup directories (v1: one per controller; v2:
// one) named after a shell id, as the isolation layer names them.
func shellCgroupDirs(id string) []string {
	var dirs []string
	filepath.WalkDir("/sys/fs/cgroup", func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		if strings.EqualFold(e.Name(), id) {
			dirs = append(dirs, p)
			return filepath.SkipDir
		}
		return nil
	})
	return dirs
}
