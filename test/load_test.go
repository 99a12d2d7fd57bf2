package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// Load (issue 4 §3): many users, many concurrent shells, NTLM-sealed HTTP and
// Basic HTTPS (masterzen/winrm, in-process), every output checked by hash;
// zero errors; afterwards the daemon's shells, workers, goroutines and memory
// return to their baseline. `make test` runs the short form; `make load`
// (WINRMD_LOAD=full) runs 20 users x 10 shells.

func TestLoad(t *testing.T) {
	w := need(t)
	users, perUser, chunk := 4, 6, 256<<10
	if os.Getenv("WINRMD_LOAD") == "full" {
		users, perUser, chunk = 20, 10, 1<<20
	}
	store := filepath.Join(w.work, "load-accounts")
	var lu []*testUser
	t.Cleanup(func() {
		for _, u := range lu {
			killUserProcesses(u.Name, 3*time.Second)
			if err := deleteUser(u.Name); err != nil {
				t.Error(err)
			}
		}
	})
	suffix := randHex(2)
	for i := 0; i < users; i++ {
		u, err := createUser(fmt.Sprintf("%sl%s%02d", userPrefix, suffix, i), true)
		if err != nil {
			t.Fatal(err)
		}
		lu = append(lu, u)
		addExtraUID(u.UID)
		if err := w.storeAdd(store, u.Name, u.Password); err != nil {
			t.Fatal(err)
		}
	}
	d := startDaemon(t, func(c *configs.Config) { c.Accounts.StoreFile = store })
	path, _ := bigFile(t)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := func(u, s int) (string, int) {
		head := fmt.Sprintf("user %d shell %d\n", u, s)
		sum := sha256.New()
		sum.Write([]byte(head))
		sum.Write(raw[:chunk])
		return hex.EncodeToString(sum.Sum(nil)), len(head) + chunk
	}

	// Warm up (one shell per transport), then take the baseline.
	hh, hp := hostPort(t, d.HTTP)
	sh, sp := hostPort(t, d.HTTPS)
	conn := func(u *testUser, i int) Conn {
		if i%2 == 0 {
			return Conn{Scheme: "http", Host: hh, Port: hp, Auth: "ntlm", Encryption: "always", User: u.Name, Password: u.Password}
		}
		return Conn{Scheme: "https", Host: sh, Port: sp, Auth: "basic", User: u.Name, Password: u.Password}
	}
	for i := 0; i < 2; i++ {
		if r := (mzDriver{}).Do(t, conn(lu[0], i), Spec{Op: "run", Command: "echo warm"}); !r.OK {
			t.Fatalf("warm-up %s: %s", conn(lu[0], i), r)
		}
	}
	time.Sleep(500 * time.Millisecond)
	base := sampleDaemon(t, d)

	type outcome struct {
		err     string
		latency time.Duration
		bytes   int
	}
	var mu sync.Mutex
	var outs []outcome
	var wg sync.WaitGroup
	sem := make(chan struct{}, 100)
	start := time.Now()
	for ui, u := range lu {
		for s := 0; s < perUser; s++ {
			wg.Add(1)
			go func(ui, s int, u *testUser) {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				sum, n := want(ui, s)
				t0 := time.Now()
				r := (mzDriver{}).Do(t, conn(u, ui+s), Spec{Op: "run", Digest: true,
					Command: fmt.Sprintf("echo 'user %d shell %d'; head -c %d %s", ui, s, chunk, path)})
				o := outcome{latency: time.Since(t0)}
				switch {
				case !r.OK:
					o.err = r.String()
				case r.StdoutSHA256 != sum || r.StdoutLen != n || r.exit() != 0:
					o.err = fmt.Sprintf("user %d shell %d: %d bytes sha %s exit %d, want %d bytes sha %s", ui, s, r.StdoutLen, r.StdoutSHA256, r.exit(), n, sum)
				default:
					o.bytes = n
				}
				mu.Lock()
				outs = append(outs, o)
				mu.Unlock()
			}(ui, s, u)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)

	var errs []string
	var lat []time.Duration
	total := 0
	for _, o := range outs {
		if o.err != "" {
			errs = append(errs, o.err)
		}
		lat = append(lat, o.latency)
		total += o.bytes
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }

	// Back to baseline: no shells, no workers; goroutines and memory settle.
	var after daemonSample
	deadline := time.Now().Add(15 * time.Second)
	for {
		after = sampleDaemon(t, d)
		if after.shells == 0 && after.workers == 0 && (after.goroutines < 0 || after.goroutines <= base.goroutines+10) {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	summary := fmt.Sprintf("load: %d users, %d shells (NTLM-sealed HTTP + Basic HTTPS), %d errors, %d bytes verified, %v, latency p50 %v p99 %v; "+
		"daemon rss %d→%d KiB, goroutines %d→%d, fds %d→%d",
		users, len(outs), len(errs), total, elapsed.Round(time.Millisecond), pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond),
		base.rssKiB, after.rssKiB, base.goroutines, after.goroutines, base.fds, after.fds)
	fmt.Println(summary)
	t.Log(summary)
	recordStat("load_shells", int64(len(outs)))
	recordStat("load_errors", int64(len(errs)))
	recordStat("bytes_verified", int64(total))
	for i, e := range errs {
		if i == 10 {
			t.Errorf("... and %d more errors", len(errs)-10)
			break
		}
		t.Error(e)
	}
	if after.shells != 0 || after.workers != 0 {
		t.Errorf("after the load: winrmd_shells=%v winrmd_workers=%v, want 0", after.shells, after.workers)
	}
	if after.goroutines >= 0 && base.goroutines >= 0 && after.goroutines > base.goroutines+10 {
		t.Errorf("goroutines did not return to baseline: %d → %d", base.goroutines, after.goroutines)
	}
	if after.fds > base.fds+10 {
		t.Errorf("file descriptors did not return to baseline: %d → %d", base.fds, after.fds)
	}
	// Go keeps freed heap for a while; bound the growth, not the exact value.
	if after.rssKiB > base.rssKiB*2+128*1024 {
		t.Errorf("daemon RSS grew from %d KiB to %d KiB", base.rssKiB, after.rssKiB)
	}
}

type daemonSample struct {
	shells, workers float64
	goroutines      int // -1: the daemon does not export go_goroutines
	rssKiB, fds     int
}

func sampleDaemon(t *testing.T, d *Daemon) daemonSample {
	s := daemonSample{goroutines: -1}
	if m, err := d.MetricsSnapshot(); err == nil {
		s.shells, _ = Metric(m, "winrmd_shells")
		s.workers, _ = Metric(m, "winrmd_workers")
		if g, ok := Metric(m, "go_goroutines"); ok {
			s.goroutines = int(g)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.PID)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				s.rssKiB, _ = strconv.Atoi(f[1])
			}
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.PID)); err == nil {
		s.fds = len(ents)
	}
	return s
}
