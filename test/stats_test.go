package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
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
