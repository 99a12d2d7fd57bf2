package e2e

// Soak (issue 4 §3): the load workload, looped for a duration (`make soak`,
// default 10 minutes; not part of `make test`). Every interval it prints the
// daemon's memory, open file descriptors, goroutines, live shells and the
// Receive latency percentiles of that interval; at the end it requires zero
// errors and the daemon back at its baseline.
//
//	WINRMD_SOAK=10m           duration (unset: the test skips)
//	WINRMD_SOAK_INTERVAL=30s  report interval
//	WINRMD_SOAK_CLIENTS=40    concurrent clients (each: shell, 3 commands, delete, again)
//	WINRMD_LOAD_USERS=20      users

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSoak(t *testing.T) {
	spec := os.Getenv("WINRMD_SOAK")
	if spec == "" {
		t.Skip("the soak runs under `make soak` only (WINRMD_SOAK=duration)")
	}
	dur, err := time.ParseDuration(spec)
	if err != nil || dur <= 0 {
		t.Fatalf("WINRMD_SOAK=%q: not a duration", spec)
	}
	interval := 30 * time.Second
	if v := os.Getenv("WINRMD_SOAK_INTERVAL"); v != "" {
		if iv, err := time.ParseDuration(v); err == nil && iv > 0 {
			interval = iv
		}
	}
	need(t)
	clients := relEnvInt("WINRMD_SOAK_CLIENTS", 40)
	cfg := relLoadConfig()
	cfg.users = relEnvInt("WINRMD_LOAD_USERS", 20)
	if cfg.users > clients {
		cfg.users = clients
	}
	users := makeUsers(t, "s", cfg.users, true)
	d := relLoadDaemon(t, users, clients)
	relWarmUp(t, d, users)
	if !relWaitIdle(d, 30*time.Second) {
		t.Fatal("daemon not idle after the warm-up")
	}
	time.Sleep(time.Second)
	before := relMeasure(t, d)
	fmt.Printf("soak: %s, %d clients, %d users, report every %s; baseline RSS %d KiB, %d fds, %d goroutines\n",
		dur, clients, cfg.users, interval, before.rssKB, before.fds, before.goroutines)

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	st := &relLoadStats{}
	var iters atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for it := 0; ctx.Err() == nil; it++ {
				relOneShell(context.Background(), d, users[i%len(users)], i, it, cfg, st, nil)
				iters.Add(1)
			}
		}(i)
		time.Sleep(20 * time.Millisecond)
	}

	t0 := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	report := func() {
		m, _ := d.MetricsSnapshot()
		shells, _ := Metric(m, "winrmd_shells")
		g, _ := Metric(m, "go_goroutines")
		fmt.Printf("soak %6s: RSS %7d KiB  fds %4d  goroutines %5d  shells %4.0f  iterations %6d  errors %d  Receive %s\n",
			time.Since(t0).Round(time.Second), procRSSKB(d.PID), procFDs(d.PID), int(g), shells, iters.Load(),
			st.errors.Load(), percentilesOf(st.lat.take()))
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-tick.C:
			report()
		case <-done:
			break loop
		}
	}
	report()
	for _, e := range st.errs {
		t.Error(e)
	}
	if !d.Alive() {
		t.Fatalf("daemon died during the soak:\n%s", tail(d.Stderr, 40))
	}
	if !relWaitIdle(d, 30*time.Second) {
		t.Errorf("daemon still has shells or connections 30 s after the soak")
	}
	checkNoLeftovers(t, "after the soak", 10*time.Second)
	after := relCheckBaseline(t, d, before, 90*time.Second)
	testStat(t, "load_clients", st.clients.Load())
	testStat(t, "load_shells", st.shells.Load())
	testStat(t, "load_commands", st.commands.Load())
	testStat(t, "load_errors", st.errors.Load())
	testStat(t, "bytes_verified", st.bytes.Load())
	fmt.Printf("soak: %s, %d shells, %d commands, %d errors, %s verified; RSS %d → %d KiB, fds %d → %d, goroutines %d → %d\n",
		time.Since(t0).Round(time.Second), st.shells.Load(), st.commands.Load(), st.errors.Load(), relMiB(st.bytes.Load()),
		before.rssKB, after.rssKB, before.fds, after.fds, before.goroutines, after.goroutines)
}
