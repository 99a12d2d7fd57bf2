package server

import (
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/session/wsman"
)

// The wire trace (logging.trace_wire at level debug): what a client sent
// and what the daemon answered, for an operator who has only the server
// side. Requests are traced after unsealing, responses before sealing, so
// the SOAP is readable; handshake legs and header-only answers are traced
// by their headers. Never traced: Authorization and WWW-Authenticate
// tokens (NTLM, Kerberos, SPNEGO, CredSSP: they carry hashes, tickets and,
// for CredSSP, the password itself) and Basic values, shown as the scheme
// and a length; stream contents, environment values and PSRP fragments in
// bodies (wsman.RedactForTrace). Each message is cut at
// logging.trace_wire_max_bytes.

// tracing reports whether this request is traced.
func (s *Server) tracing(cfg *configs.Config) bool {
	return cfg.Logging.TraceWire && s.log.Core().Enabled(zapcore.DebugLevel)
}

// tracedHeaders are the request and response headers a trace shows.
var tracedHeaders = []string{"Content-Type", "Content-Length", "Authorization", "WWW-Authenticate", "Connection", "Expect", "User-Agent", "WSMANIDENTIFY"}

// redactAuthValue keeps an authentication header's scheme and hides its token.
func redactAuthValue(v string) string {
	scheme, tok, _ := strings.Cut(strings.TrimSpace(v), " ")
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return scheme
	}
	if strings.EqualFold(scheme, "Basic") && strings.HasPrefix(tok, "realm=") {
		return v // the Basic offer, no secret in it
	}
	return scheme + " [redacted " + strconv.Itoa(len(tok)) + " bytes]"
}

func traceHeaders(h http.Header) []string {
	var out []string
	for _, k := range tracedHeaders {
		for _, v := range h.Values(k) {
			if k == "Authorization" || k == "WWW-Authenticate" {
				v = redactAuthValue(v)
			}
			if len(v) > 256 {
				v = v[:256] + "..."
			}
			out = append(out, k+": "+v)
		}
	}
	return out
}

// traceRequestHeaders logs a request as it arrives, before authentication.
func (s *Server) traceRequestHeaders(log *zap.Logger, r *http.Request) {
	log.Debug("wire request", zap.String("method", r.Method), zap.String("uri", clipString(r.RequestURI, 256)),
		zap.Strings("headers", traceHeaders(r.Header)))
}

// traceBody logs a SOAP body (a request after unsealing, a response before
// sealing).
func (s *Server) traceBody(log *zap.Logger, cfg *configs.Config, dir string, encrypted bool, body []byte) {
	text, cut := wsman.RedactForTrace(body, cfg.Logging.TraceWireMaxBytes)
	log.Debug("wire "+dir+" body", zap.Bool("sealed", encrypted), zap.Int("bytes", len(body)), zap.String("soap", text), zap.Int("truncated_bytes", cut))
}

// traceResponseHeaders logs the status and headers of an answer.
func (s *Server) traceResponseHeaders(log *zap.Logger, status int, h http.Header) {
	log.Debug("wire response", zap.Int("status", status), zap.Strings("headers", traceHeaders(h)))
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// traceWriter traces a response's status and headers as they go out.
type traceWriter struct {
	http.ResponseWriter
	s    *Server
	log  *zap.Logger
	done bool
}

func (t *traceWriter) WriteHeader(status int) {
	if !t.done {
		t.done = true
		t.s.traceResponseHeaders(t.log, status, t.Header())
	}
	t.ResponseWriter.WriteHeader(status)
}

func (t *traceWriter) Write(b []byte) (int, error) {
	if !t.done {
		t.WriteHeader(http.StatusOK)
	}
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (t *traceWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }
