package obs

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A line through the bridge is the line zap would have written: its level,
// its logger name from the groups, and each value under its key with zap's
// own type for it (an error as zap.Error writes one).
func TestSlogBridge(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	l := Slog(zap.New(core)).WithGroup("isolation").With(slog.Int("pid", 42))
	l.WithGroup("pool").Warn("worker dropped",
		slog.Any("error", errors.New("boom")), slog.String("why", "idle"), slog.Bool("b", true),
		slog.Uint64("uid", 1000), slog.Duration("d", time.Second),
		slog.Any("cgroups", []string{"a", "b"}), slog.Any("errors", []error{errors.New("e1")}))
	l.Debug("not at info")
	all := logs.AllUntimed()
	if len(all) != 1 {
		t.Fatalf("%d lines, want 1 (debug is below the core's level): %v", len(all), all)
	}
	e := all[0]
	if e.Level != zapcore.WarnLevel || e.LoggerName != "isolation.pool" || e.Message != "worker dropped" {
		t.Fatalf("level %v, logger %q, message %q", e.Level, e.LoggerName, e.Message)
	}
	m := e.ContextMap()
	want := map[string]any{"pid": int64(42), "error": "boom", "why": "idle", "b": true, "uid": uint64(1000),
		"d": time.Second, "cgroups": []any{"a", "b"}}
	for k, v := range want {
		switch got := m[k].(type) {
		case []any:
			if len(got) != 2 || got[0] != "a" || got[1] != "b" {
				t.Errorf("%s = %#v, want %#v", k, got, v)
			}
		default:
			if got != v {
				t.Errorf("%s = %#v (%T), want %#v", k, m[k], m[k], v)
			}
		}
	}
	if errs, ok := m["errors"].([]any); !ok || len(errs) != 1 {
		t.Errorf("errors = %#v, want zap's list of one error", m["errors"])
	}
	for _, f := range e.Context {
		if f.Key == "error" && f.Type != zapcore.ErrorType {
			t.Errorf("error field is %v, want zap's error type", f.Type)
		}
	}
}

// The bridge asks zap's core before it builds a line.
func TestSlogBridgeEnabled(t *testing.T) {
	core, _ := observer.New(zap.WarnLevel)
	l := Slog(zap.New(core))
	if l.Enabled(t.Context(), slog.LevelInfo) || !l.Enabled(t.Context(), slog.LevelWarn) || !l.Enabled(t.Context(), slog.LevelError+2) {
		t.Fatal("Enabled does not follow the zap core's level")
	}
}
