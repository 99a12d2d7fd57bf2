package e2e

// Load (issue 4 §3): many concurrent shells across many users, mixing
// NTLM-sealed HTTP and HTTPS Basic (raw Go clients and masterzen/winrm, plus
// a few pywinrm/pypsrp processes), every byte checked by sha256 or compared
// exactly; afterwards the daemon's RSS and goroutines return to baseline.
//
// `go test ./test/` runs the short version (40 shells, 4 users); `make load`
// runs the full one (WINRMD_LOAD=full: 200 shells, 20 users). Either can be
// sized with WINRMD_LOAD_SHELLS, WINRMD_LOAD_USERS and WINRMD_LOAD_BYTES.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/masterzen/winrm"
	"github.com/winrmd/winrmd/configs"
)

// Tolerances for "back to baseline" after a load or soak run.
//
// A daemon built with -race (make test builds it so) keeps the race
// detector's shadow memory for its peak heap for good, so its RSS cannot
// come back down; for such a daemon RSS is reported, not bounded, and the Go
// heap in use (go_memstats_heap_inuse_bytes) is bounded instead.
const (
	relGoroutineSlack = 10       // go_goroutines after ≤ before + this
	relRSSSlackKB     = 64 << 10 // VmRSS after ≤ before × 1.5 + this (64 MiB)
	relHeapSlackKB    = 32 << 10 // heap in use after ≤ before × 1.5 + this (32 MiB)
)

var (
	relRaceOnce sync.Once
	relRace     bool
)

// relRaceDaemon tells whether the daemon binary was built with -race.
func relRaceDaemon() bool {
	relRaceOnce.Do(func() {
		bi, err := buildinfo.ReadFile(w.bin)
		if err != nil {
			return
		}
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				relRace = true
			}
		}
	})
	return relRace
}

type relLoadCfg struct {
	shells, users int
	randBytes     int // random output per shell, checked by sha256
	seqLines      int // deterministic output per shell, compared exactly
	stdinBytes    int // stdin echoed back by cat, compared exactly
	python        int // pywinrm + pypsrp processes alongside
}

func relEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func relLoadConfig() relLoadCfg {
	shells, users := 40, 4
	if os.Getenv("WINRMD_LOAD") == "full" {
		shells, users = 200, 20
	}
	c := relLoadCfg{
		shells:     relEnvInt("WINRMD_LOAD_SHELLS", shells),
		users:      relEnvInt("WINRMD_LOAD_USERS", users),
		randBytes:  relEnvInt("WINRMD_LOAD_BYTES", 200000),
		seqLines:   20000,
		stdinBytes: 64 << 10,
		python:     2,
	}
	if c.shells >= 200 {
		c.python = 4
	}
	return c
}

// relLoadStats are the figures of one run.
type relLoadStats struct {
	clients, shells, commands, errors, held atomic.Int64
	bytes                                   atomic.Int64
	lat                                     latencies
	errMu                                   sync.Mutex
	errs                                    []string
}

func (s *relLoadStats) fail(format string, a ...any) {
	s.errors.Add(1)
	s.errMu.Lock()
	if len(s.errs) < 30 {
		s.errs = append(s.errs, fmt.Sprintf(format, a...))
	}
	s.errMu.Unlock()
}

// relClientKinds: how client i reaches the daemon — half NTLM-sealed HTTP,
// half HTTPS Basic. masterzen/winrm drives only HTTPS Basic here: its NTLM
// encryption mode (winrm.NewEncryption) sends every request through
// http.DefaultTransport's shared connection pool, so concurrent clients in
// one process get each other's NTLM-authenticated connections (the daemon
// rightly refuses those). The raw client keeps one connection per context.
var relClientKinds = []string{"raw-ntlm-http", "raw-basic-https", "raw-ntlm-http", "masterzen-basic-https"}

// relSeqTag is what `seq -f 'TAG-%.0f' 1 n` prints.
func relSeqTag(tag string, n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(tag)
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func relRandCmd(n int) string {
	return fmt.Sprintf(`(head -c %d /dev/urandom | tee /dev/fd/3 | sha256sum >&2) 3>&1`, n)
}

// relCheckRand: stdout is n bytes whose sha256 the command printed on stderr.
func relCheckRand(stdout, stderr []byte, n int) error {
	sum := sha256.Sum256(stdout)
	want := strings.Fields(string(stderr))
	if len(stdout) != n || len(want) == 0 || want[0] != hex.EncodeToString(sum[:]) {
		w0 := ""
		if len(want) > 0 {
			w0 = want[0]
		}
		return fmt.Errorf("random output: %d bytes sha256 %x, want %d bytes sha256 %s", len(stdout), sum[:8], n, clip([]byte(w0), 16))
	}
	return nil
}

// relOneShell runs the per-shell workload for client i: create a shell,
// wait at the barrier (so every shell is held at once), random output with
// its hash, deterministic output, a stdin round trip, delete.
func relOneShell(ctx context.Context, d *Daemon, u *testUser, i, iter int, cfg relLoadCfg, st *relLoadStats, barrier func()) {
	kind := relClientKinds[i%len(relClientKinds)]
	st.clients.Add(1)
	tag := fmt.Sprintf("c%di%d", i, iter)
	seqWant := relSeqTag(tag, cfg.seqLines)
	seqCmd := fmt.Sprintf(`seq -f '%s-%%.0f' 1 %d`, tag, cfg.seqLines)
	stdin := make([]byte, cfg.stdinBytes)
	rand.Read(stdin)
	if barrier == nil {
		barrier = func() {}
	}
	switch kind {
	case "raw-ntlm-http", "raw-basic-https":
		var c soapClient
		if kind == "raw-ntlm-http" {
			nc := &ntlmKeepAlive{addr: d.HTTP, user: u.Name, pass: u.Password}
			defer nc.Close()
			c = nc
		} else {
			bc := &basicKeepAlive{addr: d.HTTPS, tls: true, user: u.Name, pass: u.Password}
			defer bc.Close()
			c = bc
		}
		sh, err := createShell(c)
		if err != nil {
			st.fail("%s %s: Create: %v", kind, tag, err)
			barrier()
			return
		}
		st.shells.Add(1)
		st.held.Add(1)
		barrier()
		defer func() {
			if err := sh.delete(); err != nil {
				st.fail("%s %s: Delete: %v", kind, tag, err)
			}
		}()
		r, err := sh.runWith(relRandCmd(cfg.randBytes), nil, &st.lat)
		st.commands.Add(1)
		if err == nil {
			err = relCheckRand(r.Stdout, r.Stderr, cfg.randBytes)
		}
		if err != nil {
			st.fail("%s %s: random: %v", kind, tag, err)
			return
		}
		st.bytes.Add(int64(cfg.randBytes))
		r, err = sh.runWith(seqCmd, nil, &st.lat)
		st.commands.Add(1)
		if err != nil || !bytes.Equal(r.Stdout, seqWant) || r.ExitCode != 0 {
			n := -1
			if r != nil {
				n = len(r.Stdout)
			}
			st.fail("%s %s: seq: %v, %d bytes (want %d byte-exact)", kind, tag, err, n, len(seqWant))
			return
		}
		st.bytes.Add(int64(len(seqWant)))
		r, err = sh.runWith("cat", stdin, &st.lat)
		st.commands.Add(1)
		if err != nil || !bytes.Equal(r.Stdout, stdin) {
			n := -1
			if r != nil {
				n = len(r.Stdout)
			}
			st.fail("%s %s: stdin round trip: %v, %d bytes back of %d", kind, tag, err, n, len(stdin))
			return
		}
		st.bytes.Add(int64(len(stdin)))
	default:
		// The client's connections are dialed here and closed when it is
		// done, as a process that exits would: the library keeps idle ones
		// pooled for good otherwise.
		host, port := relHostPort(d.HTTPS)
		ep := winrm.NewEndpoint(host, port, true, true, nil, nil, nil, 30*time.Second)
		params := winrm.NewParameters("PT8S", "en-US", 153600)
		var connMu sync.Mutex
		var conns []net.Conn
		params.Dial = func(network, addr string) (net.Conn, error) {
			c, err := net.DialTimeout(network, addr, 10*time.Second)
			if err == nil {
				connMu.Lock()
				conns = append(conns, c)
				connMu.Unlock()
			}
			return c, err
		}
		defer func() {
			connMu.Lock()
			for _, c := range conns {
				c.Close()
			}
			connMu.Unlock()
		}()
		cl, err := winrm.NewClientWithParameters(ep, u.Name, u.Password, params)
		if err != nil {
			st.fail("%s %s: client: %v", kind, tag, err)
			barrier()
			return
		}
		sh, err := cl.CreateShell()
		if err != nil {
			st.fail("%s %s: Create: %v", kind, tag, err)
			barrier()
			return
		}
		st.shells.Add(1)
		st.held.Add(1)
		barrier()
		defer func() {
			if err := sh.Close(); err != nil {
				st.fail("%s %s: Delete: %v", kind, tag, err)
			}
		}()
		run := func(cmd string, in []byte, stdinEnd bool) (*Result, error) {
			r, err := mzRun(cl, sh, Spec{Stdin: in, StdinEnd: stdinEnd}, cmd)
			st.commands.Add(1)
			if err != nil {
				return nil, err
			}
			return &r, nil
		}
		r, err := run(relRandCmd(cfg.randBytes), nil, false)
		if err == nil {
			err = relCheckRand(r.Stdout, r.Stderr, cfg.randBytes)
		}
		if err != nil {
			st.fail("%s %s: random: %v", kind, tag, err)
			return
		}
		st.bytes.Add(int64(cfg.randBytes))
		r, err = run(seqCmd, nil, false)
		if err != nil || !bytes.Equal(r.Stdout, seqWant) || r.exit() != 0 {
			n := -1
			if r != nil {
				n = len(r.Stdout)
			}
			st.fail("%s %s: seq: %v, %d bytes (want %d byte-exact)", kind, tag, err, n, len(seqWant))
			return
		}
		st.bytes.Add(int64(len(seqWant)))
		r, err = run("cat", stdin, true)
		if err != nil || !bytes.Equal(r.Stdout, stdin) {
			n := -1
			if r != nil {
				n = len(r.Stdout)
			}
			st.fail("%s %s: stdin round trip: %v, %d bytes back of %d", kind, tag, err, n, len(stdin))
			return
		}
		st.bytes.Add(int64(len(stdin)))
	}
}

func relHostPort(addr string) (string, int) {
	h, p, _ := strings.Cut(addr, ":")
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		h, p = addr[:i], addr[i+1:]
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// relPython runs a pywinrm or pypsrp process with a deterministic command
// and checks its digest.
func relPython(t *testing.T, d *Daemon, u *testUser, client string, i int, st *relLoadStats) {
	st.clients.Add(1)
	tag := fmt.Sprintf("py%d", i)
	n := 20000
	want := relSeqTag(tag, n)
	sum := sha256.Sum256(want)
	h, p := relHostPort(d.HTTP)
	r := pyDriver{client}.Do(t, Conn{Scheme: "http", Host: h, Port: p, Auth: "ntlm", Encryption: "always", User: u.Name, Password: u.Password},
		Spec{Op: "run", Command: fmt.Sprintf(`seq -f '%s-%%.0f' 1 %d`, tag, n), Digest: true})
	st.shells.Add(1)
	st.commands.Add(1)
	if !r.OK || r.StdoutSHA256 != hex.EncodeToString(sum[:]) || r.StdoutLen != len(want) {
		st.fail("%s %s: %s (len %d sha256 %s, want %d %x)", client, tag, r, r.StdoutLen, clip([]byte(r.StdoutSHA256), 16), len(want), sum[:8])
		return
	}
	st.bytes.Add(int64(len(want)))
}

// relBaseline is the daemon's resource use at rest.
type relBaseline struct {
	rssKB, heapKB int64
	goroutines    int
	fds           int
}

func relMeasure(t testing.TB, d *Daemon) relBaseline {
	b := relBaseline{rssKB: procRSSKB(d.PID), fds: procFDs(d.PID), goroutines: -1}
	m, err := d.MetricsSnapshot()
	if err != nil {
		t.Errorf("metrics: %v", err)
		return b
	}
	if g, ok := Metric(m, "go_goroutines"); ok {
		b.goroutines = int(g)
	} else {
		t.Errorf("no go_goroutines metric")
	}
	if h, ok := Metric(m, "go_memstats_heap_inuse_bytes"); ok {
		b.heapKB = int64(h) / 1024
	}
	return b
}

// relWaitIdle waits until the daemon has no shells and no client
// connections (the metrics scrape's own does not count: it is not a WinRM
// listener's).
func relWaitIdle(d *Daemon, within time.Duration) bool {
	return eventually(within, func() bool {
		m, err := d.MetricsSnapshot()
		if err != nil {
			return false
		}
		s, _ := Metric(m, "winrmd_shells")
		c, _ := Metric(m, "winrmd_connections")
		return s == 0 && c == 0
	})
}

// relCheckBaseline waits (up to within) for RSS and goroutines to come back
// within tolerance of before, and reports.
func relCheckBaseline(t *testing.T, d *Daemon, before relBaseline, within time.Duration) relBaseline {
	t.Helper()
	race := relRaceDaemon()
	var after relBaseline
	ok := eventually(within, func() bool {
		after = relMeasure(t, d)
		mem := after.rssKB <= before.rssKB*3/2+relRSSSlackKB
		if race {
			mem = after.heapKB <= before.heapKB*3/2+relHeapSlackKB
		}
		return mem && after.goroutines <= before.goroutines+relGoroutineSlack && after.fds <= before.fds+relGoroutineSlack
	})
	testStat(t, "rss_before_kb", before.rssKB)
	testStat(t, "rss_after_kb", after.rssKB)
	testStat(t, "goroutines_before", int64(before.goroutines))
	testStat(t, "goroutines_after", int64(after.goroutines))
	if race {
		t.Logf("daemon built with -race: RSS %d → %d KiB reported, not bounded (shadow memory); heap in use %d → %d KiB bounded", before.rssKB, after.rssKB, before.heapKB, after.heapKB)
	}
	if !ok {
		t.Errorf("daemon did not return to baseline within %s: RSS %d → %d KiB (tolerance ×1.5 + %d KiB%s), heap in use %d → %d KiB (race builds: ×1.5 + %d KiB), goroutines %d → %d (tolerance +%d), fds %d → %d (tolerance +%d)",
			within, before.rssKB, after.rssKB, relRSSSlackKB, map[bool]string{true: ", not applied: -race", false: ""}[race],
			before.heapKB, after.heapKB, relHeapSlackKB, before.goroutines, after.goroutines, relGoroutineSlack, before.fds, after.fds, relGoroutineSlack)
	}
	return after
}

// relLoadDaemon starts a daemon for users with limits fit for the load.
func relLoadDaemon(t *testing.T, users []*testUser, shells int) *Daemon {
	store := writeStore(t, testDir(t), users)
	return startDaemon(t, func(c *configs.Config) {
		c.Accounts.StoreFile = store
		c.Logging.Level = "info"
		c.Service.MaxTimeoutMS = 10000
		c.Service.MaxConnections = 2*shells + 100
	})
}

// relWarmUp runs one small command per user over both schemes, so the
// baseline includes what every daemon allocates once (TLS, NTLM, argon2).
func relWarmUp(t *testing.T, d *Daemon, users []*testUser) {
	for _, u := range users {
		nc, err := dialNTLMSealed(d.HTTP, u.Name, u.Password)
		if err != nil {
			t.Fatalf("warm-up: %v", err)
		}
		if out, err := relTryShell(nc, "echo warm"); err != nil || out != "warm\n" {
			t.Fatalf("warm-up NTLM as %s: %q %v", u.Name, out, err)
		}
		nc.Close()
		bc := &basicKeepAlive{addr: d.HTTPS, tls: true, user: u.Name, pass: u.Password}
		if out, err := relTryShell(bc, "echo warm"); err != nil || out != "warm\n" {
			t.Fatalf("warm-up Basic as %s: %q %v", u.Name, out, err)
		}
		bc.Close()
	}
}

func TestLoad(t *testing.T) {
	need(t)
	cfg := relLoadConfig()
	if cfg.users > cfg.shells {
		cfg.users = cfg.shells
	}
	users := makeUsers(t, "l", cfg.users, true)
	d := relLoadDaemon(t, users, cfg.shells)
	relWarmUp(t, d, users)
	if !relWaitIdle(d, 30*time.Second) {
		t.Fatal("daemon not idle after the warm-up")
	}
	time.Sleep(time.Second)
	before := relMeasure(t, d)
	t.Logf("baseline: RSS %d KiB, %d goroutines, %d fds", before.rssKB, before.goroutines, before.fds)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	st := &relLoadStats{}
	var created sync.WaitGroup
	created.Add(cfg.shells)
	allHeld := make(chan struct{})
	go func() { created.Wait(); close(allHeld) }()
	barrier := func() {
		created.Done()
		select {
		case <-allHeld:
		case <-time.After(3 * time.Minute):
		}
	}
	peak := make(chan [4]float64, 1)
	go func() {
		<-allHeld
		var p [4]float64
		if m, err := d.MetricsSnapshot(); err == nil {
			p[0], _ = Metric(m, "winrmd_shells")
			p[1], _ = Metric(m, "winrmd_workers")
			p[2], _ = Metric(m, "go_goroutines")
		}
		p[3] = float64(procRSSKB(d.PID))
		peak <- p
	}()
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < cfg.shells; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			relOneShell(ctx, d, users[i%len(users)], i, 0, cfg, st, barrier)
		}(i)
		if i%20 == 19 {
			time.Sleep(50 * time.Millisecond) // a ramp, not a thundering herd of handshakes
		}
	}
	// A few Python clients alongside, once every shell is held.
	if _, err := os.Stat(w.python); err == nil {
		<-allHeld
		for i := 0; i < cfg.python; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				client := []string{"pywinrm", "pypsrp"}[i%2]
				relPython(t, d, users[i%len(users)], client, i, st)
			}(i)
		}
	} else {
		t.Logf("no client virtualenv at %s (make venv): Python clients not run alongside", w.python)
	}
	wg.Wait()
	elapsed := time.Since(t0)
	for _, e := range st.errs {
		t.Error(e)
	}
	pk := <-peak
	peakShells, peakWorkers := pk[0], pk[1]
	t.Logf("while every shell was held: winrmd_shells=%v winrmd_workers=%v go_goroutines=%v RSS %v KiB", peakShells, peakWorkers, pk[2], pk[3])
	testStat(t, "rss_peak_kb", int64(pk[3]))
	if int(peakShells) < cfg.shells && st.errors.Load() == 0 {
		t.Errorf("only %v shells held at once, want %d", peakShells, cfg.shells)
	}

	if !relWaitIdle(d, 30*time.Second) {
		t.Errorf("daemon still has shells or connections 30 s after the load")
	}
	checkNoLeftovers(t, "after the load", 10*time.Second)
	after := relCheckBaseline(t, d, before, 60*time.Second)

	testStat(t, "load_clients", st.clients.Load())
	testStat(t, "load_shells", st.shells.Load())
	testStat(t, "load_commands", st.commands.Load())
	testStat(t, "load_errors", st.errors.Load())
	testStat(t, "bytes_verified", st.bytes.Load())
	testStat(t, "requests_held", int64(peakShells))
	fmt.Printf("load: %d clients, %d shells across %d users (%d held at once), %d commands, %d errors, %s verified in %s; "+
		"Receive %s; RSS %d → %d KiB (peak %d), goroutines %d → %d (peak %d)\n",
		st.clients.Load(), st.shells.Load(), cfg.users, int(peakShells), st.commands.Load(), st.errors.Load(),
		relMiB(st.bytes.Load()), elapsed.Round(time.Millisecond), percentilesOf(st.lat.take()),
		before.rssKB, after.rssKB, int64(pk[3]), before.goroutines, after.goroutines, int(pk[2]))
}

func relMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
