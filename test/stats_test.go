package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Figures for the summary at the end of `make test` (test/cmd/e2esummary).
// One JSON object per line: {"metric": name, "n": value, "test": name}.
// Metrics: bytes_verified, shells, commands, attack_rows, attack_refused,
// attack_executed, leftover_processes, clients.

var statsMu sync.Mutex

func statsPath() string {
	if p := os.Getenv("WINRMD_E2E_STATS"); p != "" {
		return p
	}
	return filepath.Join(".work", "stats.jsonl")
}

func recordStat(metric string, n int64) { recordStatFor("", metric, n) }

func recordStatFor(test, metric string, n int64) {
	statsMu.Lock()
	defer statsMu.Unlock()
	p := statsPath()
	os.MkdirAll(filepath.Dir(p), 0o755)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	b, _ := json.Marshal(map[string]any{"metric": metric, "n": n, "test": test, "time": time.Now().UTC().Format(time.RFC3339)})
	f.Write(append(b, '\n'))
}

// testStat records one figure for the summary at the end of `make test`.
// Metric names used by the reliability tests:
//
//	faults_injected, faults_survived      per fault test
//	requests_held                         requests (shells, Receives, connections) held open at once
//	load_clients, load_errors             load and soak (clients run, requests that failed)
//	load_shells, load_commands            load and soak (the harness also counts every
//	                                      daemon's audited shells and commands)
//	bytes_verified                        output and stdin bytes compared byte-exact or by sha256
//	rss_before_kb, rss_after_kb           daemon RSS from /proc around a load or soak run
//	goroutines_before, goroutines_after   daemon go_goroutines around a load or soak run
//	privilege_checks, privilege_refused   privilege checks made / refusals observed
func testStat(t testing.TB, metric string, n int64) { recordStatFor(t.Name(), metric, n) }
