package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/certauth"
	"github.com/winrmd/winrmd/authn/sealing"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/server/obs"
	"github.com/winrmd/winrmd/server/wsman"
	"github.com/winrmd/winrmd/session"
)

// connState is what a TCP connection remembers between requests: NTLM and
// Kerberos authenticate the connection, not the request.
type connState struct {
	id     uint64
	remote netip.Addr
	l      *listener

	mu       sync.Mutex
	authCtx  authn.Context // handshake in progress, or the completed one
	scheme   authn.Scheme
	identity *authn.Identity
	authzAt  time.Time // when identity was last authorized
	sealer   authn.Sealer
	basicKey [32]byte // hash of the Basic value that produced identity
	// basicVersion is the credential sources' version when basicKey was
	// verified.
	basicVersion string

	// idleSince is when the connection went idle between requests (unix
	// nanoseconds), 0 while a request is in flight (evict.go).
	idleSince atomic.Int64
}

type connKey struct{}

func (s *Server) connContext(l *listener) func(ctx context.Context, c net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		st := &connState{id: s.nextConn.Add(1), remote: ap.Addr().Unmap(), l: l}
		s.conns.Store(c, st)
		return context.WithValue(ctx, connKey{}, st)
	}
}

func (s *Server) connStateHook(c net.Conn, cs http.ConnState) {
	switch cs {
	case http.StateNew:
		s.open.Add(1)
		if s.d.Metrics != nil {
			s.d.Metrics.Connections.Inc()
		}
	case http.StateIdle, http.StateActive:
		s.markIdle(c, cs == http.StateIdle)
	case http.StateHijacked, http.StateClosed:
		if v, ok := s.conns.Load(c); ok {
			if cl, ok := v.(*connState).closer(); ok {
				cl.Close()
			}
		}
		s.open.Add(-1)
		if s.d.Metrics != nil {
			s.d.Metrics.Connections.Dec()
		}
		s.conns.Delete(c)
	}
}

// encryptionOverhead is what the multipart framing and signature add to a
// sealed request body beyond the envelope itself.
const encryptionOverhead = 16 << 10

// reauthorizeEvery bounds how long an authorization decision lasts on one
// connection.
const reauthorizeEvery = 30 * time.Second

// maxToken bounds a decoded authentication token.
const maxToken = 48 << 10

type httpError struct {
	status int
	close  bool
	scheme bool // add the WWW-Authenticate offer
	msg    string
}

func (s *Server) handler(l *listener) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "Microsoft-HTTPAPI/2.0")
		st, _ := r.Context().Value(connKey{}).(*connState)
		if st == nil {
			http.Error(w, "", http.StatusInternalServerError)
			return
		}
		// Only POST /wsman exists. The raw request URI is compared so that
		// encodings (%2e, //, ..) never reach anything.
		path := r.RequestURI
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		if path != "/wsman" {
			s.countRequest("none", "not_found")
			closeIfBody(w, r)
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if r.Method != http.MethodPost {
			s.countRequest("none", "bad_method")
			closeIfBody(w, r)
			w.Header().Set("Allow", "POST")
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		s.serveWSMan(w, r, st, l)
	})
}

// closeIfBody answers a refused request without reading its body: a
// client that declares a body (or sends Expect: 100-continue) and then
// trickles it cannot hold the connection. The connection closes instead.
func closeIfBody(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// maxHandshakeBody is the most of a body read (and discarded) on a
// handshake leg, where the connection must stay open for the next leg.
const maxHandshakeBody = 64 << 10

// drainHandshake reads a handshake leg's body within a short deadline so
// the connection can carry the next leg; anything larger or slower closes it.
func drainHandshake(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength == 0 {
		return
	}
	if r.ContentLength < 0 || r.ContentLength > maxHandshakeBody {
		w.Header().Set("Connection", "close")
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.CopyN(io.Discard, r.Body, r.ContentLength)
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		w.Header().Set("Connection", "close")
	}
}

func (s *Server) offerSchemes(w http.ResponseWriter, l *listener) {
	c := s.cfg.Load()
	if c.Service.Auth.Negotiate && s.d.Contexts != nil {
		w.Header().Add("WWW-Authenticate", "Negotiate")
	}
	if c.Service.Auth.Kerberos && s.d.Kerberos && s.d.Contexts != nil {
		w.Header().Add("WWW-Authenticate", "Kerberos")
	}
	if c.Service.Auth.Basic && s.d.Basic != nil && (l.transport == "https" || c.Service.AllowUnencrypted) {
		w.Header().Add("WWW-Authenticate", `Basic realm="WSMAN", charset="UTF-8"`)
	}
	if c.Service.Auth.CredSSP && s.d.Contexts != nil {
		w.Header().Add("WWW-Authenticate", "CredSSP")
	}
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, st *connState, e *httpError) {
	if e.scheme {
		s.offerSchemes(w, st.l)
	}
	if e.close {
		w.Header().Set("Connection", "close")
	}
	closeIfBody(w, r)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(e.status)
}

func (s *Server) serveWSMan(w http.ResponseWriter, r *http.Request, st *connState, l *listener) {
	cfg := s.cfg.Load()
	log := s.log.With(zap.Uint64(obs.FConnID, st.id), zap.String(obs.FRemoteAddr, st.remote.String()))
	isTLS := l.transport == "https"
	if s.tracing(cfg) {
		s.traceRequestHeaders(log, r)
		w = &traceWriter{ResponseWriter: w, s: s, log: log}
	}

	// 1. Authentication, from headers alone.
	st.mu.Lock()
	defer st.mu.Unlock()
	authz := r.Header.Values("Authorization")
	var outToken string
	var outScheme authn.Scheme
	switch {
	case len(authz) > 1:
		s.fail(w, r, st, &httpError{status: http.StatusBadRequest, close: true})
		s.countRequest("none", "bad_request")
		return
	case len(authz) == 0:
		if st.identity == nil {
			if strings.EqualFold(strings.TrimSpace(r.Header.Get("WSMANIDENTIFY")), "unauthenticated") {
				s.anonymousIdentify(w, r, cfg)
				return
			}
			if cfg.Service.Auth.Certificate && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				// A client certificate with no Authorization header (curl
				// --cert): the certificate is the credential.
				if herr := s.certificate(r, st, cfg, isTLS, log); herr != nil {
					s.fail(w, r, st, herr)
					return
				}
				break
			}
			s.countAuth("none", "challenge")
			s.fail(w, r, st, &httpError{status: http.StatusUnauthorized, scheme: true})
			return
		}
		if st.scheme == authn.SchemeBasic {
			// Basic is per request; a connection does not stay logged on.
			s.fail(w, r, st, &httpError{status: http.StatusUnauthorized, scheme: true})
			return
		}
		if r.ContentLength == 0 {
			// An empty POST without credentials asks which schemes exist
			// (masterzen/winrm opens every request so, even on a connection
			// that is already authenticated): answer the offer; a new
			// handshake then replaces the connection's context.
			s.countAuth("none", "challenge")
			s.fail(w, r, st, &httpError{status: http.StatusUnauthorized, scheme: true})
			return
		}
	default:
		scheme, token, _ := strings.Cut(strings.TrimSpace(authz[0]), " ")
		token = strings.TrimSpace(token)
		switch {
		case strings.EqualFold(strings.TrimSpace(authz[0]), authn.CertificateProfile):
			if herr := s.certificate(r, st, cfg, isTLS, log); herr != nil {
				s.fail(w, r, st, herr)
				return
			}
		case strings.EqualFold(scheme, "Basic"):
			if herr := s.basic(r, st, cfg, isTLS, token, log); herr != nil {
				s.fail(w, r, st, herr)
				return
			}
		case strings.EqualFold(scheme, "Negotiate"), strings.EqualFold(scheme, "NTLM"), strings.EqualFold(scheme, "Kerberos"), strings.EqualFold(scheme, "CredSSP"):
			sch := authn.SchemeNegotiate
			if strings.EqualFold(scheme, "NTLM") {
				sch = authn.SchemeNTLM
			} else if strings.EqualFold(scheme, "Kerberos") {
				sch = authn.SchemeKerberos
			} else if strings.EqualFold(scheme, "CredSSP") {
				sch = authn.SchemeCredSSP
			}
			out, done, herr := s.negotiate(r, st, cfg, sch, token, log)
			if herr != nil {
				if len(out) > 0 {
					// CredSSP's TSRequest{errorCode} rides on the refusal.
					w.Header().Set("WWW-Authenticate", string(sch)+" "+base64.StdEncoding.EncodeToString(out))
				}
				s.fail(w, r, st, herr)
				return
			}
			if !done {
				w.Header().Set("WWW-Authenticate", string(sch)+" "+base64.StdEncoding.EncodeToString(out))
				drainHandshake(w, r)
				w.Header().Set("Content-Length", "0")
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			if len(out) > 0 {
				outToken = base64.StdEncoding.EncodeToString(out)
				outScheme = sch
			}
		default:
			s.countAuth("unknown", "unsupported")
			s.fail(w, r, st, &httpError{status: http.StatusUnauthorized, scheme: true})
			return
		}
	}
	id := st.identity
	if !id.Valid() { // by construction unreachable; never serve without one
		s.fail(w, r, st, &httpError{status: http.StatusUnauthorized, scheme: true, close: true})
		return
	}
	// A long-lived connection is authorized again now and then, so a user
	// removed from the allowed groups (SIGHUP, or the group database) loses
	// access within reauthorizeEvery even on a connection already open.
	if time.Since(st.authzAt) > reauthorizeEvery {
		fresh, herr := s.authorizeAgain(st, id.Principal(), id.Scheme(), log)
		if herr != nil {
			st.reset()
			s.fail(w, r, st, herr)
			return
		}
		st.identity, st.authzAt, id = fresh, time.Now(), fresh
	}
	if outToken != "" {
		w.Header().Set("WWW-Authenticate", string(outScheme)+" "+outToken)
	}

	// 2. The body, bounded before anything parses it.
	maxEnv := cfg.Service.MaxEnvelopeBytes()
	if r.ContentLength > int64(maxEnv+encryptionOverhead) {
		s.writeFault(w, st, false, "", wsman.EncodingLimit(wsman.CodeMaxEnvelopeSizeExceeded,
			"The WS-Management service cannot process the request because the envelope size exceeds the maximum allowed ("+strconv.Itoa(maxEnv)+" bytes)."), true, "")
		s.countRequest("none", "too_large")
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(time.Duration(cfg.Service.ReadHeaderTimeoutMS)*time.Millisecond + 60*time.Second))
	raw, err := readBody(r, maxEnv+encryptionOverhead)
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		log.Info("reading request body", zap.Error(err))
		s.fail(w, r, st, &httpError{status: http.StatusBadRequest, close: true})
		return
	}
	if len(raw) > maxEnv+encryptionOverhead {
		s.writeFault(w, st, false, "", wsman.EncodingLimit(wsman.CodeMaxEnvelopeSizeExceeded,
			"The WS-Management service cannot process the request because the envelope size exceeds the maximum allowed ("+strconv.Itoa(maxEnv)+" bytes)."), true, "")
		s.countRequest("none", "too_large")
		return
	}
	if s.d.Metrics != nil {
		s.d.Metrics.Bytes.WithLabelValues("in").Add(float64(len(raw)))
	}

	// 3. Encryption policy.
	ct := r.Header.Get("Content-Type")
	encrypted := false
	protocol := ""
	if sealing.IsEncrypted(ct) {
		if st.sealer == nil {
			log.Info("encrypted body on a connection without a sealing context")
			s.fail(w, r, st, &httpError{status: http.StatusBadRequest, close: true})
			s.countRequest("none", "bad_encryption")
			return
		}
		plain, proto, err := sealing.Decode(ct, raw, maxEnv, st.sealer)
		if err != nil {
			// A bad signature, sequence or framing kills the context.
			log.Warn("refusing encrypted message", zap.Error(err))
			s.d.Audit.Event(obs.EvLogonFailure, zap.String(obs.FUser, id.User()), zap.String(obs.FRemoteAddr, st.remote.String()),
				zap.String(obs.FScheme, string(st.scheme)), zap.String(obs.FReason, "message integrity: "+err.Error()))
			st.reset()
			s.fail(w, r, st, &httpError{status: http.StatusBadRequest, close: true})
			s.countRequest("none", "bad_encryption")
			return
		}
		// OMI's client pads sealed plaintext with up to 15 NULs and counts
		// them in Length; XML never ends with NUL, so drop them.
		for i := 0; i < 15 && len(plain) > 0 && plain[len(plain)-1] == 0; i++ {
			plain = plain[:len(plain)-1]
		}
		raw, protocol, encrypted = plain, proto, true
		ct = "application/soap+xml;charset=UTF-8"
	} else if len(raw) > 0 && !isTLS && !cfg.Service.AllowUnencrypted {
		log.Info("refusing unencrypted body on HTTP (service.allow_unencrypted is false)")
		s.d.Audit.Event(obs.EvUnencrypted, zap.String(obs.FUser, id.User()), zap.String(obs.FRemoteAddr, st.remote.String()),
			zap.String(obs.FScheme, string(st.scheme)))
		s.fail(w, r, st, &httpError{status: http.StatusUnauthorized, close: true, scheme: true})
		s.countRequest("none", "unencrypted")
		return
	}
	if len(raw) == 0 {
		// pywinrm and pypsrp finish authentication with an empty POST.
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return
	}

	if s.tracing(cfg) {
		s.traceBody(log, cfg, "request", encrypted, raw)
	}

	// 4. Parse and dispatch.
	lim := wsman.DefaultLimits()
	lim.MaxBytes = maxEnv
	env, err := wsman.Parse(raw, ct, lim)
	if err != nil {
		f, ok := err.(*wsman.Fault)
		if !ok {
			f = wsman.SchemaValidation("The request is not a valid SOAP envelope.")
		}
		s.writeFault(w, st, encrypted, protocol, f, false, "")
		s.countRequest("none", "fault")
		return
	}
	action := actionLabel(env.Header.Action)
	log = log.With(zap.String(obs.FMessageID, env.Header.MessageID), zap.String(obs.FAction, action), zap.String(obs.FUser, id.User()))
	if env.IsIdentify {
		s.writeOK(w, st, encrypted, protocol, wsman.IdentifyResponse(true, s.d.Version))
		s.countRequest("Identify", "ok")
		return
	}
	if s.draining.Load() && env.Header.Action == wsman.ActionCreate {
		s.writeFault(w, st, encrypted, protocol, wsman.OperationAborted("The service is shutting down."), false, env.Header.MessageID)
		s.countRequest(action, "fault")
		return
	}
	if env.Header.Action == wsman.ActionCreate {
		// A worker is about to start as this account: decide from the
		// account database itself, not a cached decision, so a deleted or
		// re-created account never gets a worker with a stale uid or
		// groups (issue 14.11).
		if u, ok := s.d.Authorizer.(UncachedAuthorizer); ok {
			fresh, err := u.AuthorizeUncached(id.Principal(), id.Scheme())
			if err != nil {
				reason := err.Error()
				log.Info("shell refused: account re-checked", zap.String(obs.FReason, reason))
				s.d.Audit.Event(obs.EvAccessDenied, zap.String(obs.FUser, id.User()), zap.String(obs.FRemoteAddr, st.remote.String()),
					zap.String(obs.FScheme, string(st.scheme)), zap.String(obs.FReason, "shell create: "+reason))
				s.writeFault(w, st, encrypted, protocol, wsman.AccessDenied("Access is denied."), true, env.Header.MessageID)
				st.reset()
				s.countRequest(action, "denied")
				return
			}
			st.identity, id = fresh, fresh
		}
	}
	// The session layer may block (Receive); other connections proceed.
	st.mu.Unlock()
	body, err := s.d.Sessions.Handle(r.Context(), &session.Request{
		Env: env, Identity: id, RemoteAddr: st.remote.String(), ListenerURL: listenerURL(r, l),
	})
	st.mu.Lock()
	if err != nil {
		f, ok := err.(*wsman.Fault)
		if !ok {
			log.Error("handler error", zap.Error(err))
			f = wsman.InternalError(995, "", "The operation failed.")
		}
		if f.Subcode != "w:TimedOut" {
			log.Info("fault", zap.String("subcode", f.Subcode), zap.Uint32("code", f.Code), zap.String(obs.FReason, f.Reason),
				zap.String("detail", f.Internal))
		}
		s.writeFault(w, st, encrypted, protocol, f, false, env.Header.MessageID)
		s.countRequest(action, "fault")
		return
	}
	s.writeOK(w, st, encrypted, protocol, body)
	s.countRequest(action, "ok")
}

// readBody reads at most limit+1 bytes of the body, in one allocation when
// the client declared its length (the envelope hot path).
func readBody(r *http.Request, limit int) ([]byte, error) {
	if r.ContentLength > 0 && r.ContentLength <= int64(limit) {
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
}

// closer returns the connection's context if it holds resources (CredSSP's
// goroutine), for the close hook; the handler is done with it then.
func (st *connState) closer() (io.Closer, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	c, ok := st.authCtx.(io.Closer)
	return c, ok
}

// reset forgets the connection's security context.
func (st *connState) reset() {
	if c, ok := st.authCtx.(io.Closer); ok {
		c.Close() // CredSSP: its goroutine waiting for the next leg ends
	}
	st.authCtx, st.identity, st.sealer, st.scheme = nil, nil, nil, ""
	st.basicKey = [32]byte{}
}

func listenerURL(r *http.Request, l *listener) string {
	scheme := "http"
	if l.transport == "https" {
		scheme = "https"
	}
	host := r.Host
	if host == "" || len(host) > 255 {
		host = l.addr
	}
	return scheme + "://" + host + "/wsman"
}

func (s *Server) anonymousIdentify(w http.ResponseWriter, r *http.Request, cfg *configs.Config) {
	lim := wsman.DefaultLimits()
	lim.MaxBytes = 64 << 10
	if r.ContentLength > int64(lim.MaxBytes) {
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	// Unauthenticated: the body gets a few seconds, not a minute.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw, err := io.ReadAll(io.LimitReader(r.Body, int64(lim.MaxBytes)+1))
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil || len(raw) > lim.MaxBytes {
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if s.tracing(cfg) {
		s.traceBody(s.log, cfg, "request", false, raw)
	}
	env, err := wsman.Parse(raw, r.Header.Get("Content-Type"), lim)
	if err != nil || !env.IsIdentify {
		// Anything but Identify needs authentication.
		s.countAuth("none", "challenge")
		st, _ := r.Context().Value(connKey{}).(*connState)
		s.offerSchemes(w, st.l)
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	body := wsman.IdentifyResponse(false, "")
	if s.tracing(cfg) {
		s.traceBody(s.log, cfg, "response", false, body)
	}
	s.writeBody(w, http.StatusOK, "application/soap+xml;charset=UTF-8", body)
	s.countRequest("Identify", "ok")
}

func (s *Server) writeOK(w http.ResponseWriter, st *connState, encrypted bool, protocol string, body []byte) {
	s.writeEnvelope(w, st, encrypted, protocol, http.StatusOK, body)
}

func (s *Server) writeFault(w http.ResponseWriter, st *connState, encrypted bool, protocol string, f *wsman.Fault, closeConn bool, relatesTo string) {
	status := f.HTTPStatus()
	if closeConn {
		w.Header().Set("Connection", "close")
	}
	s.writeEnvelope(w, st, encrypted, protocol, status, wsman.FaultEnvelope(f, relatesTo, s.d.Machine))
}

func (s *Server) writeEnvelope(w http.ResponseWriter, st *connState, encrypted bool, protocol string, status int, body []byte) {
	if cfg := s.cfg.Load(); s.tracing(cfg) {
		s.traceBody(s.log.With(zap.Uint64(obs.FConnID, st.id), zap.String(obs.FRemoteAddr, st.remote.String())), cfg, "response", encrypted, body)
	}
	if encrypted && st.sealer != nil {
		enc, ct, err := sealing.Encode(protocol, body, st.sealer)
		if err != nil {
			s.log.Error("sealing response", zap.Error(err))
			w.Header().Set("Connection", "close")
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		s.writeBody(w, status, ct, enc)
		return
	}
	s.writeBody(w, status, "application/soap+xml;charset=UTF-8", body)
}

func (s *Server) writeBody(w http.ResponseWriter, status int, ct string, body []byte) {
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
	if s.d.Metrics != nil {
		s.d.Metrics.Bytes.WithLabelValues("out").Add(float64(len(body)))
	}
}

// basic authenticates a Basic value; verified once per connection.
func (s *Server) basic(r *http.Request, st *connState, cfg *configs.Config, isTLS bool, token string, log *zap.Logger) *httpError {
	if !cfg.Service.Auth.Basic || s.d.Basic == nil {
		s.countAuth("basic", "disabled")
		return &httpError{status: http.StatusUnauthorized, scheme: true}
	}
	if !isTLS && !cfg.Service.AllowUnencrypted {
		// The password already crossed the wire in clear; refuse without
		// checking it, so the plaintext channel is never an oracle.
		s.countAuth("basic", "unencrypted")
		s.d.Audit.Event(obs.EvUnencrypted, zap.String(obs.FRemoteAddr, st.remote.String()), zap.String(obs.FScheme, "Basic"),
			zap.String(obs.FReason, "Basic over HTTP refused (service.allow_unencrypted is false)"))
		return &httpError{status: http.StatusUnauthorized, scheme: true, close: true}
	}
	key := sha256.Sum256([]byte(token))
	// The same credentials on the same connection are not verified again
	// while the credential sources are unchanged and the last check is
	// younger than reauthorizeEvery: a password change or removal then
	// takes effect on open connections too.
	version := ""
	if v, ok := s.d.Basic.(interface{ SourceVersion() string }); ok {
		version = v.SourceVersion()
	}
	if st.identity != nil && st.scheme == authn.SchemeBasic && subtle.ConstantTimeCompare(key[:], st.basicKey[:]) == 1 &&
		version == st.basicVersion && time.Since(st.authzAt) <= reauthorizeEvery {
		return nil
	}
	st.reset()
	checked := time.Now()
	p, err := s.d.Basic.Authenticate(r.Context(), st.remote, token)
	if err != nil {
		s.logonFailure(st, "Basic", p.Name, err, log)
		failureDelay(r, cfg, checked, err)
		return &httpError{status: http.StatusUnauthorized, scheme: true, close: true}
	}
	id, herr := s.authorize(st, p, authn.SchemeBasic, log)
	if herr != nil {
		failureDelay(r, cfg, checked, authn.ErrNotAuthorized)
		return herr
	}
	st.identity, st.scheme, st.basicKey, st.authzAt, st.basicVersion = id, authn.SchemeBasic, key, time.Now(), version
	return nil
}

// certificate logs a connection on with its TLS client certificate, once:
// the certificate cannot change on a connection (crypto/tls servers refuse
// renegotiation), so later requests on it ride on the first mapping.
func (s *Server) certificate(r *http.Request, st *connState, cfg *configs.Config, isTLS bool, log *zap.Logger) *httpError {
	if !cfg.Service.Auth.Certificate {
		s.countAuth(certauth.Mechanism, "disabled")
		return &httpError{status: http.StatusUnauthorized, scheme: true}
	}
	if !isTLS || r.TLS == nil {
		s.countAuth(certauth.Mechanism, "unencrypted")
		return &httpError{status: http.StatusUnauthorized, scheme: true}
	}
	if st.identity != nil && st.scheme == authn.SchemeCertificate {
		return nil
	}
	st.reset()
	if err := s.d.Limiter.Allow(st.remote, ""); err != nil {
		s.logonFailure(st, string(authn.SchemeCertificate), "", err, log)
		return &httpError{status: http.StatusUnauthorized, scheme: true, close: true}
	}
	chain := r.TLS.PeerCertificates
	res, err := s.certMap.Load().Map(chain)
	if err != nil {
		s.d.Limiter.Fail(st.remote, "")
		name := ""
		if len(chain) > 0 {
			name = chain[0].Subject.String()
		}
		s.logonFailure(st, string(authn.SchemeCertificate), name, err, log)
		return &httpError{status: http.StatusUnauthorized, scheme: true, close: true}
	}
	log.Info("client certificate mapped", zap.String(obs.FUser, res.Principal.Name), zap.String("upn", res.UPN),
		zap.String("subject", res.Subject), zap.String("serial", res.Serial), zap.Int("mapping", res.Mapping))
	id, herr := s.authorize(st, res.Principal, authn.SchemeCertificate, log, zap.String("upn", res.UPN), zap.String("cert_subject", res.Subject), zap.String("cert_serial", res.Serial))
	if herr != nil {
		return herr
	}
	s.d.Limiter.Success(st.remote, res.Principal.Name)
	st.identity, st.scheme, st.authzAt = id, authn.SchemeCertificate, time.Now()
	return nil
}

// negotiate runs one leg of a connection-bound handshake.
func (s *Server) negotiate(r *http.Request, st *connState, cfg *configs.Config, sch authn.Scheme, token string, log *zap.Logger) ([]byte, bool, *httpError) {
	mech := strings.ToLower(string(sch))
	enabled := cfg.Service.Auth.Negotiate
	switch sch {
	case authn.SchemeKerberos:
		enabled = cfg.Service.Auth.Kerberos
	case authn.SchemeCredSSP:
		enabled = cfg.Service.Auth.CredSSP
	}
	if !enabled || s.d.Contexts == nil {
		s.countAuth(mech, "disabled")
		return nil, false, &httpError{status: http.StatusUnauthorized, scheme: true}
	}
	if len(token) > maxToken*4/3+4 {
		s.countAuth(mech, "malformed")
		return nil, false, &httpError{status: http.StatusUnauthorized, scheme: true, close: true}
	}
	in, err := base64.StdEncoding.DecodeString(token)
	if err != nil || len(in) == 0 {
		s.countAuth(mech, "malformed")
		s.logonFailure(st, string(sch), "", authn.ErrMalformed, log)
		return nil, false, &httpError{status: http.StatusUnauthorized, scheme: true, close: true}
	}
	// A new handshake on a connection replaces whatever it had.
	if st.authCtx == nil || st.identity != nil || st.scheme != sch {
		var cbt []byte
		if st.l.certs != nil {
			cbt = st.l.certs.ChannelBinding()
		}
		st.reset()
		st.authCtx = s.d.Contexts(sch, cbt, st.remote)
		st.scheme = sch
		if st.authCtx == nil {
			s.countAuth(mech, "disabled")
			return nil, false, &httpError{status: http.StatusUnauthorized, scheme: true}
		}
	}
	checked := time.Now()
	out, done, err := st.authCtx.Step(in)
	if err != nil {
		name := ""
		if c, ok := st.authCtx.(authn.Claimant); ok {
			name = c.ClaimedName()
		}
		st.reset()
		s.logonFailure(st, string(sch), name, err, log)
		failureDelay(r, cfg, checked, err)
		// A CredSSP refusal may carry TSRequest{errorCode}: then it is the
		// only WWW-Authenticate line (clients read the token at its end).
		return out, false, &httpError{status: http.StatusUnauthorized, scheme: len(out) == 0, close: true}
	}
	if !done {
		return out, false, nil
	}
	p := st.authCtx.Principal()
	id, herr := s.authorize(st, p, sch, log)
	if herr != nil {
		st.reset()
		failureDelay(r, cfg, checked, authn.ErrNotAuthorized)
		return nil, false, herr
	}
	st.identity, st.authzAt = id, time.Now()
	st.sealer = st.authCtx.Sealer()
	return out, true, nil
}

// authorize maps a principal to an identity. A fresh logon is audited as
// logon_success; a re-check of an open connection (again) only audits a
// refusal.
func (s *Server) authorize(st *connState, p authn.Principal, sch authn.Scheme, log *zap.Logger, audit ...zap.Field) (*authn.Identity, *httpError) {
	return s.authorizeAs(st, p, sch, log, false, audit...)
}

// authorizeAgain re-checks a connection's identity without a new logon event.
func (s *Server) authorizeAgain(st *connState, p authn.Principal, sch authn.Scheme, log *zap.Logger) (*authn.Identity, *httpError) {
	return s.authorizeAs(st, p, sch, log, true)
}

// audit adds fields (what the mechanism saw: a certificate's UPN) to the
// audit line.
func (s *Server) authorizeAs(st *connState, p authn.Principal, sch authn.Scheme, log *zap.Logger, again bool, audit ...zap.Field) (*authn.Identity, *httpError) {
	id, err := s.d.Authorizer.Authorize(p, sch)
	if err != nil {
		reason := err.Error()
		if again {
			reason = "re-authorization: " + reason
		}
		s.countAuth(p.Mechanism, "denied")
		log.Info("access denied", zap.String(obs.FUser, p.Name), zap.String(obs.FScheme, string(sch)), zap.Bool("open_connection", again), zap.Error(err))
		s.d.Audit.Event(obs.EvAccessDenied, append([]zap.Field{zap.String(obs.FUser, p.Name), zap.String(obs.FRemoteAddr, st.remote.String()),
			zap.String(obs.FScheme, string(sch)), zap.String(obs.FReason, reason)}, audit...)...)
		return nil, &httpError{status: http.StatusUnauthorized, scheme: true, close: true}
	}
	if !again {
		s.countAuth(p.Mechanism, "success")
		principal := p.Name
		if p.Client != "" {
			principal = p.Client
		}
		fields := []zap.Field{zap.String(obs.FUser, id.User()), zap.String("principal", principal),
			zap.String(obs.FRemoteAddr, st.remote.String()), zap.String(obs.FScheme, string(sch)), zap.Uint64(obs.FConnID, st.id),
			zap.String("verified_by", p.Verifier.String())}
		if p.Binding != "" {
			// What the client bound its logon to: the TLS channel, or the
			// service name it meant (relay protection, issue 14).
			fields = append(fields, zap.String("channel_binding", p.Binding), zap.String("spn", p.Service))
		}
		s.d.Audit.Event(obs.EvLogonSuccess, append(fields, audit...)...)
	}
	return id, nil
}

func (s *Server) logonFailure(st *connState, scheme, name string, err error, log *zap.Logger) {
	result := "failure"
	switch {
	case errors.Is(err, authn.ErrRateLimited):
		result = "rate_limited"
	case errors.Is(err, authn.ErrMalformed):
		result = "malformed"
	case errors.Is(err, authn.ErrBackend):
		result = "backend_error"
	}
	s.countAuth(strings.ToLower(scheme), result)
	log.Info("logon failed", zap.String(obs.FUser, name), zap.String(obs.FScheme, scheme), zap.Error(err))
	s.d.Audit.Event(obs.EvLogonFailure, zap.String(obs.FUser, name), zap.String(obs.FRemoteAddr, st.remote.String()),
		zap.String(obs.FScheme, scheme), zap.String(obs.FReason, err.Error()))
}

var knownActions = map[string]bool{
	"Create": true, "Delete": true, "Command": true, "Send": true, "Receive": true, "Signal": true,
	"Get": true, "Put": true, "Enumerate": true, "Pull": true, "Release": true, "Identify": true,
	"Disconnect": true, "Reconnect": true, "Connect": true,
}

// actionLabel bounds the metric label to a fixed set.
func actionLabel(a string) string {
	if a == "" {
		return "Identify"
	}
	if i := strings.LastIndexByte(a, '/'); i >= 0 {
		a = a[i+1:]
	}
	if knownActions[a] {
		return a
	}
	return "other"
}

func (s *Server) countRequest(action, outcome string) {
	if s.d.Metrics != nil {
		s.d.Metrics.Requests.WithLabelValues(action, outcome).Inc()
	}
}

func (s *Server) countAuth(scheme, result string) {
	if s.d.Metrics != nil {
		if scheme == "" {
			scheme = "unknown"
		}
		s.d.Metrics.AuthAttempts.WithLabelValues(scheme, result).Inc()
	}
}

// failureDelay holds every 401 that follows a credential check until
// service.auth.failure_delay_ms after the check began, whatever refused it:
// a wrong password (which PAM itself delays), an unknown account, or a
// right password for an account the policy refuses. Without it, a refusal
// after a successful check answers at once and tells a guesser the
// password was right (issue 14.9). Malformed and unsupported tokens are
// refused before any check and are not delayed. The delay is a floor:
// choose it above the PAM stack's own delay (pam_faildelay's 2 s, which
// Linux-PAM varies by up to a quarter).
func failureDelay(r *http.Request, cfg *configs.Config, checked time.Time, err error) {
	if errors.Is(err, authn.ErrMalformed) || errors.Is(err, authn.ErrUnsupported) {
		return
	}
	wait := time.Until(checked.Add(time.Duration(cfg.Service.Auth.FailureDelayMS) * time.Millisecond))
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}
