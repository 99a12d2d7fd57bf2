package obs

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestAuditWritesJSONLinesWithEventIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := NewAudit(path, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	a.Event(EvLogonSuccess, zap.String(FUser, "alice"), zap.String(FRemoteAddr, "127.0.0.1"))
	a.Event(EvShellCreate, zap.String(FUser, "alice"), zap.String(FShellID, "S"))
	a.Event(EvUnencrypted, zap.String(FRemoteAddr, "127.0.0.1"))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit file mode %v, want 0600", fi.Mode().Perm())
	}
	f, _ := os.Open(path)
	defer f.Close()
	var events []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		events = append(events, m)
	}
	if len(events) != 3 {
		t.Fatalf("%d events, want 3", len(events))
	}
	if events[0][FEvent] != EvLogonSuccess || events[0][FEventID] != float64(4624) || events[0][FUser] != "alice" {
		t.Fatalf("first event: %v", events[0])
	}
	if _, ok := events[2][FEventID]; ok {
		t.Fatalf("an event without a Windows twin must carry no event_id: %v", events[2])
	}
}

func TestAuditFailureFallsBackToMainLog(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("needs /dev/full to simulate a full disk")
	}
	core, logs := observer.New(zap.InfoLevel)
	a, err := NewAudit("/dev/full", zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Event(EvLogonFailure, zap.String(FUser, "bob"))
	if a.Failures() != 1 {
		t.Fatalf("Failures() = %d, want 1", a.Failures())
	}
	found := false
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "audit write failed") {
			found = true
		}
	}
	if !found {
		t.Fatal("the main log does not carry the lost audit event")
	}
}

func TestLoggerRejectsBadLevel(t *testing.T) {
	if _, _, err := NewLogger("loud", "json"); err == nil {
		t.Fatal("bad level accepted")
	}
	l, lvl, err := NewLogger("warn", "console")
	if err != nil || l == nil || lvl.Level() != zap.WarnLevel {
		t.Fatalf("NewLogger: %v", err)
	}
}

func TestMetricsRegistered(t *testing.T) {
	m := NewMetrics()
	m.Requests.WithLabelValues("Create", "ok").Inc()
	m.AuthAttempts.WithLabelValues("ntlm", "success").Inc()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"winrmd_requests_total", "winrmd_auth_attempts_total", "winrmd_shells", "winrmd_workers", "go_goroutines"} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
}
