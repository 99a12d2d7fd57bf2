// Command winrmd-bench measures winrmd against a private OpenSSH server on
// the same machine in one run, alternating samples between the two, and
// prints a table of medians, spreads and winrmd/ssh ratios against the
// goals of issue 5. It must run as root: it creates (and removes) the Linux
// account wrmdbench, starts bin/winrmd and /usr/sbin/sshd on loopback, and
// leaves no process or account behind. See BENCH.md.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// runLock serializes bench runs on one machine (flock, released at exit).
const runLock = "/run/winrmd-bench.lock"

type config struct {
	bin        string
	out        string
	quick      bool
	size       int64
	rows       map[string]bool
	cpuProfile string
	perfDir    string
	perfFreq   int
	keep       bool

	warmN, coldN, streamN, concN, conc, idle, memN, authN, authConc int
	authDur                                                         time.Duration
}

func warnf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "winrmd-bench: "+format+"\n", a...)
}

func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

var sshOnly bool

var allRows = []string{"warm", "cold", "stdout", "stdin", "concurrent", "idle", "auth", "psrp"}

func main() {
	os.Exit(realMain())
}

func realMain() int {
	cfg := &config{}
	var sizeFlag, rowsFlag string
	var warmN int
	flag.StringVar(&cfg.bin, "winrmd", "bin/winrmd", "the winrmd binary")
	flag.StringVar(&cfg.out, "out", "bench/results/bench-results.json", "machine-readable result file (JSON)")
	flag.BoolVar(&cfg.quick, "quick", false, "CI mode: 64 MiB streams and fewer samples (< 2 minutes)")
	flag.StringVar(&sizeFlag, "size", "", "stream size for the stdout/stdin rows (default 1GiB, 64MiB with -quick)")
	flag.StringVar(&rowsFlag, "rows", strings.Join(allRows, ","), "rows to run: "+strings.Join(allRows, ",")+
		" (stdout and stdin include the Kerberos and CredSSP variants); a single row by its key, e.g. stdout_basic")
	flag.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write the bench client's CPU profile (pprof) here")
	flag.StringVar(&cfg.perfDir, "perf", "", "record the daemon (and its workers) with perf per row into this directory")
	flag.IntVar(&cfg.conc, "concurrency", 200, "shells / sessions in the concurrency row")
	flag.IntVar(&warmN, "warm-n", 0, "warm samples per side (default 300, 30 with -quick): more for a profile of the warm row")
	flag.IntVar(&cfg.perfFreq, "perf-freq", 499, "-perf's sampling frequency (Hz)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (configs, logs)")
	flag.BoolVar(&sshOnly, "ssh-only", false, "check the OpenSSH side alone (set-up, one of each SSH sample) and exit")
	flag.Parse()

	if cfg.quick {
		cfg.size = 64 << 20
		cfg.warmN, cfg.coldN, cfg.streamN, cfg.concN, cfg.idle, cfg.memN, cfg.authN = 30, 10, 3, 2, 20, 1, 2
		cfg.authDur = 500 * time.Millisecond
	} else {
		cfg.size = 1 << 30
		cfg.warmN, cfg.coldN, cfg.streamN, cfg.concN, cfg.idle, cfg.memN, cfg.authN = 300, 60, 3, 5, 50, 2, 6
		cfg.authDur = 1500 * time.Millisecond
	}
	cfg.authConc = 4
	if warmN > 0 {
		cfg.warmN = warmN
	}
	if sizeFlag != "" {
		n, err := parseSize(sizeFlag)
		if err != nil {
			warnf("%v", err)
			return 2
		}
		cfg.size = n
	}
	cfg.rows = map[string]bool{}
	for _, r := range strings.Split(rowsFlag, ",") {
		if r = strings.TrimSpace(r); r != "" {
			cfg.rows[r] = true
		}
	}
	if os.Geteuid() != 0 {
		warnf("must run as root (it creates the account %s and starts sshd)", benchUser)
		return 2
	}
	// One run at a time per machine: runs share the account and the CPUs,
	// and a second run's clean-up removed the first one's account mid-row
	// (every row after it failed to log on).
	lock, err := os.OpenFile(runLock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		warnf("%s: %v", runLock, err)
		return 1
	}
	defer lock.Close()
	if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		warnf("another winrmd-bench runs on this machine; waiting for it (%s)", runLock)
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			warnf("%s: %v", runLock, err)
			return 1
		}
	}
	if _, err := os.Stat(cfg.bin); err != nil && !sshOnly {
		warnf("%s: %v (run `make build`)", cfg.bin, err)
		return 2
	}
	for _, p := range []string{"/usr/sbin/sshd", "ssh"} {
		if _, err := exec.LookPath(p); err != nil {
			warnf("%s not found: apt-get install openssh-server openssh-client", p)
			return 2
		}
	}

	cl := &cleanups{}
	defer cl.run()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		warnf("%v: cleaning up", s)
		cl.run()
		os.Exit(130)
	}()
	defer func() {
		if p := recover(); p != nil {
			cl.run()
			panic(p)
		}
	}()

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			warnf("%v", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			warnf("%v", err)
			return 1
		}
		cl.add(func() { pprof.StopCPUProfile(); f.Close() })
	}

	dir, err := os.MkdirTemp("", "winrmd-bench-")
	if err != nil {
		warnf("%v", err)
		return 1
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		warnf("%v", err)
		return 1
	}
	cl.add(func() {
		if cfg.keep {
			fmt.Fprintf(os.Stderr, "winrmd-bench: kept %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	})

	info := machineInfo(cfg)
	fmt.Printf("winrmd-bench: %s, %d CPUs, %s, kernel %s, %s, load %s\n", info["cpu_model"], runtime.NumCPU(),
		info["date"], info["kernel"], info["go"], info["load_before"])

	u, err := createBenchUser()
	if err != nil {
		warnf("creating %s: %v", benchUser, err)
		return 1
	}
	cl.add(removeBenchUser)
	password := randomPassword()
	if sshOnly {
		return sshSelfTest(dir, u, cl)
	}

	keytab, ticket, kerr := startBenchKDC(dir, password, cl)
	if kerr != nil {
		warnf("no Kerberos rows (each is reported as an ERROR): the bench KDC did not start: %v", kerr)
	}
	d, err := startDaemon(cfg.bin, dir, password, keytab, false, cl)
	if err != nil {
		warnf("starting winrmd: %v", err)
		return 1
	}
	s, err := startSSHD(dir, u, cl)
	if err != nil {
		warnf("starting sshd: %v", err)
		return 1
	}
	b := &bench{cfg: cfg, d: d, s: s, dir: dir, t: &wsTarget{httpAddr: d.http, httpsAddr: d.https, user: benchUser,
		password: password, envelopeSize: 512000, timeout: 120 * time.Second, krb: ticket}}
	info["cpu_accounting"] = map[string]string{"winrmd": d.cpu.method, "sshd": s.cpu.method}
	fmt.Printf("winrmd pid %d (http %s, https %s), sshd pid %d (%s), stream size %s\n\n", d.pid, d.http, d.https, s.pid, s.addr, sizeName(cfg.size))

	// A first command proves the set-up before any timing.
	if _, err := b.coldOnce(authNTLM); err != nil {
		warnf("smoke test (NTLM cold command) failed: %v\nwinrmd log:\n%s", err, tail(d.logFile, 30))
		return 1
	}
	if out, err := exec.Command("ssh", s.sshArgs("true")...).CombinedOutput(); err != nil {
		warnf("smoke test (ssh true) failed: %v %s\nsshd log:\n%s", err, out, tail(filepath.Join(dir, "sshd.log"), 20))
		return 1
	}

	type step struct {
		row string
		key string
		fn  func() (*result, error)
	}
	steps := []step{
		{"warm", "warm_ntlm", func() (*result, error) { return b.warm(authNTLM) }},
		{"warm", "warm_basic", func() (*result, error) { return b.warm(authBasic) }},
		{"cold", "cold_ntlm", func() (*result, error) { return b.cold(authNTLM, false) }},
		{"cold", "cold_basic", func() (*result, error) { return b.cold(authBasic, false) }},
		{"cold", "cold_ntlm_x", func() (*result, error) { return b.cold(authNTLM, true) }},
		{"stdout", "stdout_ntlm", func() (*result, error) { return b.stdout(authNTLM) }},
		{"stdout", "stdout_basic", func() (*result, error) { return b.stdout(authBasic) }},
		{"stdout", "stdout_krb5", func() (*result, error) { return b.stdout(authKerberos) }},
		{"stdout", "stdout_credssp", func() (*result, error) { return b.stdout(authCredSSP) }},
		{"stdin", "stdin_ntlm", func() (*result, error) { return b.stdin(authNTLM) }},
		{"stdin", "stdin_basic", func() (*result, error) { return b.stdin(authBasic) }},
		{"stdin", "stdin_krb5", func() (*result, error) { return b.stdin(authKerberos) }},
		{"stdin", "stdin_credssp", func() (*result, error) { return b.stdin(authCredSSP) }},
		{"concurrent", "concurrent", b.concurrency},
		{"idle", "idle", b.memory},
		{"auth", "auth_ntlm", func() (*result, error) { return b.authRate(authNTLM) }},
		{"auth", "auth_basic", func() (*result, error) { return b.authRate(authBasic) }},
		{"auth", "auth_krb5", func() (*result, error) { return b.authRate(authKerberos) }},
		{"psrp", "psrp_open_cold", func() (*result, error) { return b.psrpRow(false, true) }},
		{"psrp", "psrp_rtt_cold", func() (*result, error) { return b.psrpRow(false, false) }},
		{"psrp", "psrp_open_warm", func() (*result, error) { return b.psrpRow(true, true) }},
		{"psrp", "psrp_rtt_warm", func() (*result, error) { return b.psrpRow(true, false) }},
	}
	// -rows takes groups (stdout) and single rows (stdout_basic), the
	// latter for A/B runs of one row; a name that is neither is a typo that
	// would otherwise run nothing and "pass".
	for name := range cfg.rows {
		known := false
		for _, st := range steps {
			known = known || name == st.row || name == st.key
		}
		if !known {
			warnf("-rows: unknown row %q", name)
			return 2
		}
	}
	var results []*result
	failed := false
	for _, st := range steps {
		if !cfg.rows[st.row] && !cfg.rows[st.key] {
			continue
		}
		if strings.HasSuffix(st.key, "_krb5") && b.t.krb == nil {
			// A goal that was not measured is not met: the row is an
			// ERROR, listed with the missed ones, not left out.
			results = append(results, &result{Key: st.key, Name: st.key, Verdict: "ERROR",
				Notes: []string{fmt.Sprintf("not run: the bench KDC did not start: %v", kerr)}})
			continue
		}
		select {
		case <-d.exited:
			warnf("winrmd exited (%v); log:\n%s", d.exitError, tail(d.logFile, 30))
			failed = true
		default:
		}
		if failed {
			break
		}
		stopPerf := startPerf(cfg.perfDir, cfg.perfFreq, st.key, d.pid)
		procs0, changes0, procsErr := d.procs()
		t0 := time.Now()
		load0 := loadavg()
		r, err := st.fn()
		stopPerf()
		if err != nil {
			warnf("%s: %v", st.key, err)
			r = &result{Key: st.key, Name: st.key, Verdict: "ERROR", Notes: []string{err.Error()}}
			results = append(results, r)
			continue
		}
		r.finish()
		r.Load = [2]string{load0, loadavg()}
		if procs1, changes1, err := d.procs(); err == nil && procsErr == nil {
			r.Procs = fmt.Sprintf("%d → %d, %d changes", procs0, procs1, changes1-changes0)
		}
		r.Seconds = time.Since(t0).Seconds()
		fmt.Fprintf(os.Stderr, "  %-28s %-5s ratio %.3g (%.1fs, load %s)\n", r.Key, r.Verdict, r.Ratio, r.Seconds, r.Load[1])
		results = append(results, r)
	}
	info["load_after"] = loadavg()
	printTable(os.Stdout, results)
	if err := writeJSON(cfg.out, info, cfg, results); err != nil {
		warnf("writing %s: %v", cfg.out, err)
	} else {
		fmt.Printf("\nresults: %s\n", cfg.out)
	}
	if failed {
		return 1
	}
	for _, r := range results {
		if r.Verdict == "ERROR" {
			return 1
		}
	}
	return 0
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

func machineInfo(cfg *config) map[string]any {
	m := map[string]any{
		"nproc":       runtime.NumCPU(),
		"go":          runtime.Version(),
		"date":        time.Now().UTC().Format(time.RFC3339),
		"load_before": loadavg(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m["cpu_model"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m["kernel"] = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("ssh", "-V").CombinedOutput(); err == nil {
		m["openssh"] = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command(cfg.bin, "version").CombinedOutput(); err == nil {
		m["winrmd"] = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m["commit"] = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
		var dirty []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.TrimSpace(l); f != "" {
				dirty = append(dirty, f)
			}
		}
		m["worktree_changes"] = dirty
	}
	return m
}

func printTable(w io.Writer, results []*result) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "row\twinrmd median [p10–p90]\tssh median [p10–p90]\twinrmd/ssh\tgoal\tresult\tserver CPU ms (winrmd / sshd)")
	for _, r := range results {
		if r.Verdict == "ERROR" {
			fmt.Fprintf(tw, "%s\t\t\t\t\tERROR\t%s\n", r.Name, strings.Join(r.Notes, "; "))
			continue
		}
		cpu := ""
		if r.WinRM.ServerCPUms > 0 || r.SSH.ServerCPUms > 0 {
			cpu = fmt.Sprintf("%.3g / %.3g per %s", r.WinRM.ServerCPUms, r.SSH.ServerCPUms, r.CPUPer)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.3g×\t%s\t%s\t%s\n", r.Name, fmtSide(r.WinRM, r.Unit), fmtSide(r.SSH, r.Unit),
			r.Ratio, r.Goal, r.Verdict, cpu)
	}
	tw.Flush()
	printSplits(w, results)
	var miss []string
	for _, r := range results {
		if r.Verdict == "MISS" || r.Verdict == "ERROR" {
			miss = append(miss, r.Key)
		}
		if len(r.Notes) > 0 && r.Verdict != "ERROR" {
			fmt.Fprintf(w, "note %s: %s\n", r.Key, strings.Join(r.Notes, "; "))
		}
	}
	if len(miss) > 0 {
		fmt.Fprintf(w, "\nGOALS MISSED: %s (see BENCH.md for what limits each)\n", strings.Join(miss, ", "))
	} else {
		fmt.Fprintln(w, "\nall goals met")
	}
}

// printSplits prints, for the stream rows, where winrmd's time per MB
// went (phaseSplit): the daemon's share of the round trips, the wire's and
// the client's, and the client's CPU.
func printSplits(w io.Writer, results []*result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := false
	for _, r := range results {
		e := r.WinRM.Extra
		wall, ok := e["wall_ms_per_mb"].(float64)
		if !ok || r.Verdict == "ERROR" {
			continue
		}
		if !head {
			fmt.Fprintln(tw, "\nwinrmd stream, ms per MB\twall\tdaemon\twire\tclient\tclient CPU")
			head = true
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n", r.Name, wall, e["daemon_ms_per_mb"], e["wire_ms_per_mb"],
			e["client_ms_per_mb"], e["client_cpu_ms_per_mb"])
	}
	tw.Flush()
}

func writeJSON(path string, info map[string]any, cfg *config, results []*result) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	for _, r := range results {
		r.jsonSafe()
	}
	doc := map[string]any{
		"machine": info,
		"params": map[string]any{"quick": cfg.quick, "stream_bytes": cfg.size, "warm_samples": cfg.warmN,
			"cold_samples": cfg.coldN, "stream_samples": cfg.streamN, "concurrency": cfg.conc,
			"concurrency_samples": cfg.concN, "idle_shells": cfg.idle, "auth_rounds": cfg.authN,
			"auth_round_seconds": cfg.authDur.Seconds(), "auth_clients": cfg.authConc, "max_envelope_size": 512000},
		"rows": results,
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// startPerf records pid and everything it forks while a row runs.
func startPerf(dir string, freq int, key string, pid int) func() {
	if dir == "" {
		return func() {}
	}
	if _, err := exec.LookPath("perf"); err != nil {
		warnf("-perf: perf not installed (apt-get install linux-perf)")
		return func() {}
	}
	_ = os.MkdirAll(dir, 0o755)
	data := filepath.Join(dir, key+".perf.data")
	cmd := exec.Command("perf", "record", "-q", "-F", strconv.Itoa(freq), "-g", "-p", strconv.Itoa(pid), "-o", data)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		warnf("perf: %v", err)
		return func() {}
	}
	time.Sleep(300 * time.Millisecond) // let it attach
	return func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		rep := filepath.Join(dir, key+".txt")
		out, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none",
			"--percent-limit", "0.7", "--sort", "comm,dso,sym").Output()
		if err != nil {
			warnf("perf report: %v", err)
			return
		}
		_ = os.WriteFile(rep, out, 0o644)
	}
}

// sshSelfTest starts the private sshd and takes one sample of each SSH
// measurement, for checking a machine without a working winrmd.
func sshSelfTest(dir string, u *user.User, cl *cleanups) int {
	s, err := startSSHD(dir, u, cl)
	if err != nil {
		warnf("starting sshd: %v", err)
		return 1
	}
	t0 := time.Now()
	if out, err := exec.Command("ssh", s.sshArgs("id")...).CombinedOutput(); err != nil {
		warnf("ssh id: %v %s\n%s", err, out, tail(filepath.Join(dir, "sshd.log"), 20))
		return 1
	} else {
		fmt.Printf("ssh id (%v): %s", time.Since(t0), out)
	}
	c, err := s.dial()
	if err != nil {
		warnf("x/crypto/ssh: %v", err)
		return 1
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		t0 = time.Now()
		if err := sshRun(c, "true", nil, nil); err != nil {
			warnf("session: %v", err)
			return 1
		}
		fmt.Printf("warm session true: %v\n", time.Since(t0))
	}
	t0 = time.Now()
	var cw countWriter
	cmd := exec.Command("ssh", s.sshArgs("head -c 268435456 /dev/zero")...)
	cmd.Stdout = &cw
	if err := cmd.Run(); err != nil {
		warnf("stream: %v", err)
		return 1
	}
	fmt.Printf("ssh stdout 256 MiB: %.0f MB/s\n", mbps(cw.n, time.Since(t0)))
	c0 := s.cpu.seconds()
	cmd = exec.Command("ssh", s.sshArgs("head -c 268435456 /dev/zero")...)
	cmd.Stdout = &cw
	_ = cmd.Run()
	time.Sleep(500 * time.Millisecond)
	fmt.Printf("sshd CPU (%s) for 256 MiB: %.2fs\n", s.cpu.method, s.cpu.seconds()-c0)
	self, kids, n := treePSS(s.pid)
	fmt.Printf("sshd PSS: listener %d KiB, %d descendants %d KiB\n", self, n, kids)
	return 0
}
