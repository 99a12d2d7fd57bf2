// Package obs is winrmd's observability: named zap loggers with fixed field
// keys (and Slog, the same loggers for a package that must not import zap),
// the audit stream, and Prometheus metrics with bounded labels. It
// sits at the bottom of the import graph (server and session both write
// to it) and imports nothing of this module.
package obs

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Fixed log field keys: every line that names a user, a shell or a peer uses
// the same key for it, so that logs can be searched and joined.
const (
	FConnID     = "conn_id"
	FMessageID  = "message_id"
	FShellID    = "shell_id"
	FCommandID  = "command_id"
	FUser       = "user"
	FRemoteAddr = "remote_addr"
	FAction     = "action"
	FScheme     = "scheme"
	FEvent      = "event"
	FEventID    = "event_id"
	FReason     = "reason"
)

// NewLogger builds the main logger. level: debug|info|warn|error; format: json|console.
func NewLogger(level, format string) (*zap.Logger, *zap.AtomicLevel, error) {
	lvl := zap.NewAtomicLevel()
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("logging.level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), lvl)
	return zap.New(core), &lvl, nil
}

// Audit event names and their Windows event-id twins where one is natural.
const (
	EvLogonSuccess  = "logon_success" // 4624
	EvLogonFailure  = "logon_failure" // 4625
	EvAccessDenied  = "access_denied" // 4625 with status "not granted"
	EvUnencrypted   = "unencrypted_refused"
	EvShellCreate   = "shell_create" // WinRM 91 (shell created)
	EvShellDelete   = "shell_delete"
	EvCommandStart  = "command_start" // 4688-like
	EvCommandExit   = "command_exit"  // 4689-like
	EvQuotaExceeded = "quota_exceeded"
	EvShellReaped   = "shell_reaped"
	EvWorkerFailed  = "worker_failed"
)

var eventIDs = map[string]int{
	EvLogonSuccess: 4624, EvLogonFailure: 4625, EvAccessDenied: 4625,
	EvShellCreate: 91, EvCommandStart: 4688, EvCommandExit: 4689,
}

// Audit writes one JSON line per security event. A failing audit sink (a
// full disk) never blocks or breaks service: the event goes to the main log
// and Failures counts it; the sink recovers by itself when writes succeed.
type Audit struct {
	l        *zap.Logger
	main     *zap.Logger
	failures atomic.Int64
	file     *os.File
}

// failSafeSyncer writes whole audit lines or none: a write cut short (a
// full disk) is truncated away before the next one, so one failure never
// corrupts the event after it.
type failSafeSyncer struct {
	f     *os.File
	a     *Audit
	mu    sync.Mutex
	good  int64 // file size after the last complete line
	dirty bool  // a partial line may follow good
}

func (s *failSafeSyncer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirty {
		if err := s.f.Truncate(s.good); err != nil {
			s.lost(p, err)
			return len(p), nil
		}
		s.dirty = false
	}
	n, err := s.f.Write(p)
	if err != nil {
		s.dirty = true
		s.lost(p, err)
		return len(p), nil
	}
	s.good += int64(n)
	return n, nil
}

func (s *failSafeSyncer) lost(p []byte, err error) {
	s.a.failures.Add(1)
	s.a.main.Error("audit write failed; event kept in the main log", zap.Error(err), zap.ByteString("event", p))
}

func (s *failSafeSyncer) Sync() error { return nil }

// NewAudit opens the audit sink: path "" means the main log.
func NewAudit(path string, main *zap.Logger) (*Audit, error) {
	a := &Audit{main: main}
	if path == "" {
		a.l = main.Named("audit")
		return a, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("logging.audit_file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("logging.audit_file: %w", err)
	}
	a.file = f
	sink := &failSafeSyncer{f: f, a: a}
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		sink.good = fi.Size()
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	encCfg.MessageKey = ""
	encCfg.LevelKey = ""
	encCfg.CallerKey = ""
	core := zapcore.NewCore(zapcore.NewJSONEncoder(encCfg), sink, zap.InfoLevel)
	a.l = zap.New(core)
	return a, nil
}

// Event records one audit event.
func (a *Audit) Event(event string, fields ...zap.Field) {
	if a == nil {
		return
	}
	fs := make([]zap.Field, 0, len(fields)+2)
	fs = append(fs, zap.String(FEvent, event))
	if id, ok := eventIDs[event]; ok {
		fs = append(fs, zap.Int(FEventID, id))
	}
	fs = append(fs, fields...)
	a.l.Info("audit", fs...)
}

// Failures counts audit writes that failed.
func (a *Audit) Failures() int64 { return a.failures.Load() }

// Close closes the audit file.
func (a *Audit) Close() error {
	if a == nil || a.file == nil {
		return nil
	}
	return a.file.Close()
}
