package obs

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Slog is z as a standard library *slog.Logger, for packages that must not
// import zap: isolation is linked into the shell worker too, and zap brings
// net/http and the TLS stack with it (their initialisers ran in every
// worker's start, their heap in every idle shell). The lines are z's own:
// the same encoder, level, sink and field keys.
//
// A slog group names the logger, as zap's Named does ("isolation.pool"),
// rather than nesting the attributes that follow it: the packages behind
// this bridge use groups for nothing else.
func Slog(z *zap.Logger) *slog.Logger {
	return slog.New(zapHandler{z: z})
}

type zapHandler struct{ z *zap.Logger }

func (h zapHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.z.Core().Enabled(zapLevel(l))
}

func (h zapHandler) Handle(_ context.Context, r slog.Record) error {
	ce := h.z.Check(zapLevel(r.Level), r.Message)
	if ce == nil {
		return nil
	}
	fields := make([]zap.Field, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zapField(a))
		return true
	})
	ce.Write(fields...)
	return nil
}

func (h zapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := make([]zap.Field, len(attrs))
	for i, a := range attrs {
		fields[i] = zapField(a)
	}
	return zapHandler{z: h.z.With(fields...)}
}

func (h zapHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return zapHandler{z: h.z.Named(name)}
}

// zapLevel maps slog's levels to zap's; one between two goes to the lower.
func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	case l >= slog.LevelInfo:
		return zapcore.InfoLevel
	}
	return zapcore.DebugLevel
}

// zapField is the zap field for an attribute: the typed constructors for
// slog's kinds, and for the values the callers log as Any (an error, a
// list of strings or errors) the ones zap has for them, so that an error
// reads as zap.Error writes it.
func zapField(a slog.Attr) zap.Field {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return zap.String(a.Key, v.String())
	case slog.KindInt64:
		return zap.Int64(a.Key, v.Int64())
	case slog.KindUint64:
		return zap.Uint64(a.Key, v.Uint64())
	case slog.KindBool:
		return zap.Bool(a.Key, v.Bool())
	case slog.KindFloat64:
		return zap.Float64(a.Key, v.Float64())
	case slog.KindDuration:
		return zap.Duration(a.Key, v.Duration())
	case slog.KindTime:
		return zap.Time(a.Key, v.Time())
	}
	switch x := v.Any().(type) {
	case error:
		return zap.NamedError(a.Key, x)
	case []string:
		return zap.Strings(a.Key, x)
	case []error:
		return zap.Errors(a.Key, x)
	}
	return zap.Any(a.Key, v.Any())
}
