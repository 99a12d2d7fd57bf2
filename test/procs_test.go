package e2e

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
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
