// Command e2esummary prints the figures block at the end of `make test`:
// tests run and passed (from go test -v logs), attack rows, bytes verified,
// shells run, and leftover processes and accounts (checked live). It exits 1
// when something was left behind.
//
//	go run ./test/cmd/e2esummary -stats test/.work/stats.jsonl -log test/.work/gotest.log
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

type stat struct {
	Metric string `json:"metric"`
	N      int64  `json:"n"`
}

var (
	reResult = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)
	rePkgOK  = regexp.MustCompile(`^ok\s+(\S+)`)
	rePkgBad = regexp.MustCompile(`^(FAIL\s+(\S+)|\S+\s+\[(build|setup) failed\])`)
	reNoTest = regexp.MustCompile(`^\?\s+(\S+)\s+\[no test files\]`)
)

type logCounts struct {
	pass, fail, skip           int
	pkgOK, pkgFail, pkgNoTests int
	failed                     []string
	skipped                    map[string]int // reason → count
}

func parseLog(path string, c *logCounts) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	// go test -v prints a skip's reason (file.go:N: reason) before its
	// "--- SKIP" line.
	var lastMsg string
	reMsg := regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)
	for sc.Scan() {
		line := sc.Text()
		if m := reResult.FindStringSubmatch(line); m != nil {
			switch m[1] {
			case "PASS":
				c.pass++
			case "FAIL":
				c.fail++
				c.failed = append(c.failed, m[2])
			case "SKIP":
				c.skip++
				r := lastMsg
				if r == "" {
					r = "(no reason printed)"
				}
				c.skipped[r]++
			}
			lastMsg = ""
			continue
		}
		if m := reMsg.FindStringSubmatch(line); m != nil {
			lastMsg = m[1]
		} else if strings.HasPrefix(line, "=== RUN") {
			lastMsg = ""
		}
		switch {
		case rePkgOK.MatchString(line):
			c.pkgOK++
		case rePkgBad.MatchString(line):
			c.pkgFail++
		case reNoTest.MatchString(line):
			c.pkgNoTests++
		}
	}
	return sc.Err()
}

func readStats(path string) map[string]int64 {
	out := map[string]int64{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s stat
		if json.Unmarshal(sc.Bytes(), &s) == nil {
			out[s.Metric] += s.N
		}
	}
	return out
}

// leftovers: accounts with the test prefix, their processes, and `winrmd
// worker` processes of a test binary.
func leftovers(prefix string) (users []string, procs []string) {
	uids := map[string]bool{}
	if b, err := os.ReadFile("/etc/passwd"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			p := strings.Split(line, ":")
			if len(p) > 4 && strings.HasPrefix(p[0], prefix) {
				// A live run's accounts (another engineer's, on a shared
				// machine) are not leftovers: the comment names the owner.
				pid := 0
				fmt.Sscanf(p[4], "wrmde2e pid=%d", &pid)
				if pid > 0 {
					if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
						continue
					}
				}
				users = append(users, p[0])
				uids[p[2]] = true
			}
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		uid := ""
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
				uid = f[1]
			}
		}
		cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		isWorker := len(args) > 1 && args[1] == "worker" && strings.Contains(args[0], "winrmd")
		// A test binary lives in /tmp/wrmde2e-*/ until its run ends; a
		// worker whose binary is gone outlived its run. (A live run's
		// workers, on a shared machine, are not leftovers.)
		exe = strings.TrimSuffix(exe, " (deleted)")
		_, statErr := os.Stat(exe)
		ours := strings.Contains(exe, "/"+prefix+"-") && statErr != nil
		if uids[uid] || (isWorker && ours) {
			procs = append(procs, fmt.Sprintf("pid %s uid %s %s", e.Name(), uid, strings.Join(args, " ")))
		}
	}
	return users, procs
}

func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func main() {
	statsPath := flag.String("stats", "test/.work/stats.jsonl", "figures written by the e2e tests")
	var logs multi
	flag.Var(&logs, "log", "go test -v output (repeatable)")
	started := flag.Int64("started", 0, "unix time the run started (for the duration line)")
	flag.Parse()

	c := &logCounts{skipped: map[string]int{}}
	for _, l := range logs {
		if err := parseLog(l, c); err != nil {
			fmt.Fprintf(os.Stderr, "e2esummary: %v\n", err)
		}
	}
	st := readStats(*statsPath)
	users, procs := leftovers("wrmde2e")
	left := int64(len(procs)) + st["leftover_processes"]

	line := strings.Repeat("=", 72)
	fmt.Println(line)
	fmt.Println("winrmd test summary")
	fmt.Printf("  tests (go test, incl. subtests) %d run: %d passed, %d failed, %d skipped\n", c.pass+c.fail+c.skip, c.pass, c.fail, c.skip)
	fmt.Printf("  packages                        %d ok, %d failed, %d without tests\n", c.pkgOK, c.pkgFail, c.pkgNoTests)
	fmt.Printf("  attack rows                     attack: %d rows, %d refused, %d executed\n", st["attack_rows"], st["attack_refused"], st["attack_executed"])
	fmt.Printf("  bytes verified (byte-exact)     %s\n", group(st["bytes_verified"]))
	fmt.Printf("  shells run (audited creates)    %s, commands %s\n", group(st["shells"]), group(st["commands"]))
	fmt.Printf("  concurrent-shell batches        %s shells in batches of 20\n", group(st["concurrent_shells"]))
	fmt.Printf("  client runs (py/go/curl)        %s\n", group(st["client_runs"]))
	fmt.Printf("  daemons started / stopped clean %d / %d\n", st["daemons_started"], st["daemons_clean_stop"])
	if st["faults_injected"] > 0 {
		fmt.Printf("  faults injected / survived      %d / %d (restart to first command %d ms, SIGTERM to exit %d ms)\n",
			st["faults_injected"], st["faults_survived"], st["restart_to_first_command_ms"], st["sigterm_to_exit_ms"])
	}
	if st["load_shells"] > 0 {
		fmt.Printf("  load                            %d clients, %d shells, %d commands, %d errors, %d requests held\n",
			st["load_clients"], st["load_shells"], st["load_commands"], st["load_errors"], st["requests_held"])
		fmt.Printf("  load daemon memory              RSS %s KiB before, %s peak, %s after (a -race daemon keeps its RSS; the test bounds heap); goroutines %d before, %d after\n",
			group(st["rss_before_kb"]), group(st["rss_peak_kb"]), group(st["rss_after_kb"]), st["goroutines_before"], st["goroutines_after"])
	}
	if st["privilege_checks"] > 0 {
		fmt.Printf("  privilege checks                %d, %d refusals as required\n", st["privilege_checks"], st["privilege_refused"])
	}
	fmt.Printf("  leftover processes              %d (during tests %d, now %d); leftover test accounts %d\n", left, st["leftover_processes"], len(procs), len(users))
	if *started > 0 {
		fmt.Printf("  duration                        %s\n", time.Since(time.Unix(*started, 0)).Round(time.Second))
	}
	if len(c.skipped) > 0 {
		var rs []string
		for r, n := range c.skipped {
			rs = append(rs, fmt.Sprintf("%dx %s", n, r))
		}
		sort.Strings(rs)
		fmt.Printf("  skip reasons                    %s\n", strings.Join(rs, "; "))
	}
	if len(c.failed) > 0 {
		fmt.Printf("  failed tests (%d)\n", len(c.failed))
		for i, f := range c.failed {
			if i == 40 {
				fmt.Printf("    ... and %d more\n", len(c.failed)-40)
				break
			}
			fmt.Printf("    %s\n", f)
		}
	}
	for _, p := range procs {
		fmt.Printf("  LEFT RUNNING: %s\n", p)
	}
	for _, u := range users {
		fmt.Printf("  LEFT ACCOUNT: %s\n", u)
	}
	fmt.Println(line)
	fmt.Printf("tests: %d passed, %d failed, %d skipped\n", c.pass, c.fail, c.skip)
	if len(procs) > 0 || len(users) > 0 || st["leftover_processes"] > 0 {
		os.Exit(1)
	}
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
