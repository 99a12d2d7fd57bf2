package e2e

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/server/procs"
)

// The daemon runs its Go code on one P while its load fits on one CPU and
// on all it may use while it does not (service.adaptive_procs, server/procs):
// idle it shows GOMAXPROCS 1; four clients logging on with Basic, each logon
// an argon2 hash of 25 ms or more of CPU, fill one CPU and raise it; once
// they stop it goes back to 1. With adaptive_procs off it keeps the
// runtime's value.
func TestAdaptiveProcs(t *testing.T) {
	w := need(t)
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs: on one the daemon's GOMAXPROCS is 1 either way")
	}
	gauge := func(d *Daemon) float64 {
		m, err := d.MetricsSnapshot()
		if err != nil {
			return -1
		}
		v, ok := Metric(m, "winrmd_gomaxprocs")
		if !ok {
			return -1
		}
		return v
	}
	d := startDaemon(t, nil)
	if !eventually(30*time.Second, func() bool { return gauge(d) == 1 }) {
		t.Fatalf("idle daemon: winrmd_gomaxprocs %v, want 1", gauge(d))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	logons, failures := 0, 0
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := postBasic(d.HTTPS, true, w.admin.Name, w.admin.Password, identifyXML)
				mu.Lock()
				if err != nil || r.Status != 200 {
					failures++
				} else {
					logons++
				}
				mu.Unlock()
			}
		}()
	}
	raised := eventually(60*time.Second, func() bool { return gauge(d) > 1 })
	close(stop)
	wg.Wait()
	if !raised {
		t.Fatalf("four clients logging on with Basic for 60 s (%d logons): winrmd_gomaxprocs stayed %v", logons, gauge(d))
	}
	if failures > 0 || logons == 0 {
		t.Fatalf("Basic logons under load: %d answered 200, %d did not", logons, failures)
	}
	if !eventually(30*time.Second, func() bool { return gauge(d) == 1 }) {
		t.Fatalf("after the load: winrmd_gomaxprocs %v, want 1 again", gauge(d))
	}
	t.Logf("GOMAXPROCS 1 idle, raised under %d Basic logons, 1 again after", logons)

	fixed := startDaemon(t, func(c *configs.Config) { c.Service.AdaptiveProcs = false })
	time.Sleep(200 * time.Millisecond) // ten of the governor's windows, had it run
	if g := gauge(fixed); g < 2 {
		t.Fatalf("adaptive_procs false: winrmd_gomaxprocs %v, want the runtime's own (≥ 2 here)", g)
	}
}

// secondThreadSlack reads the timer slack of pid's second thread, the Go
// runtime's sysmon (server/procs.RelaxSysmon).
func secondThreadSlack(t *testing.T, pid int) string {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	names, err := f.Readdirnames(2)
	f.Close()
	if err != nil || len(names) < 2 {
		t.Fatalf("threads of %d: %v %v", pid, names, err)
	}
	b, err := os.ReadFile("/proc/" + names[1] + "/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// The daemon's and the worker's sysmon nap with procs.SysmonSlack, in the
// real binaries; a user's command keeps the slack the daemon was started
// with (here the test's own). Whether this worker was forked from a thread
// that carried sysmon's slack is up to the runtime; the check that does not
// depend on it, with every thread of the daemon at another slack, is
// isolation's TestCommandsKeepStartingTimerSlack.
func TestSysmonSlack(t *testing.T) {
	w := need(t)
	d := startDaemon(t, nil)
	sh, err := createShell(basicClient{d.HTTPS, true, w.admin.Name, w.admin.Password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sh.delete() })
	res, err := sh.run("echo $PPID; cat /proc/self/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	own, err := os.ReadFile("/proc/self/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(res.Stdout))
	if len(f) != 2 {
		t.Fatalf("output %q, want the worker's pid and the command's timer slack", res.Stdout)
	}
	if want := strings.TrimSpace(string(own)); f[1] != want {
		t.Errorf("the command's timer slack is %s ns, want %s (the daemon's at its start)", f[1], want)
	}
	relaxed := strconv.FormatInt(procs.SysmonSlack.Nanoseconds(), 10)
	worker, _ := strconv.Atoi(f[0])
	for who, pid := range map[string]int{"daemon": d.PID, "worker": worker} {
		if got := secondThreadSlack(t, pid); got != relaxed {
			t.Errorf("the %s's sysmon (pid %d) has timer slack %s ns, want %s", who, pid, got, relaxed)
		}
	}
}
