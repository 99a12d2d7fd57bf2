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
	"time"

	"go.uber.org/zap"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/sealing"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/obs"
	"github.com/winrmd/winrmd/session"
	"github.com/winrmd/winrmd/wsman"
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
	case http.StateHijacked, http.StateClosed:
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
	if c.Service.Auth.Basic && s.d.Basic != nil && (l.transport == "https" || c.Service.AllowUnencrypted) {
		w.Header().Add("WWW-Authenticate", `Basic realm="WSMAN", charset="UTF-8"`)
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
		case strings.EqualFold(scheme, "Basic"):
			if herr := s.basic(r, st, cfg, isTLS, token, log); herr != nil {
				s.fail(w, r, st, herr)
				return
			}
		case strings.EqualFold(scheme, "Negotiate"), strings.EqualFold(scheme, "NTLM"), strings.EqualFold(scheme, "Kerberos"):
			sch := authn.SchemeNegotiate
			if strings.EqualFold(scheme, "NTLM") {
				sch = authn.SchemeNTLM
			} else if strings.EqualFold(scheme, "Kerberos") {
				sch = authn.SchemeKerberos
			}
			out, done, herr := s.negotiate(r, st, cfg, sch, token, log)
			if herr != nil {
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
	msg, err := wsman.Decode(env)
	if err != nil {
		s.writeFault(w, st, encrypted, protocol, err.(*wsman.Fault), false, env.Header.MessageID)
		s.countRequest(action, "fault")
		return
	}
	// The session layer may block (Receive); other connections proceed.
	st.mu.Unlock()
	body, err := s.d.Sessions.Handle(r.Context(), &session.Request{
		Msg: msg, Identity: id, RemoteAddr: st.remote.String(), ListenerURL: listenerURL(r, l),
	})
	st.mu.Lock()
	if err != nil {
		f, ok := err.(*wsman.Fault)
		if !ok {
			log.Error("handler error", zap.Error(err))
			f = wsman.InternalError(995, "", "The operation failed.")
		}
		if f.Subcode != "w:TimedOut" {
			log.Info("fault", zap.String("subcode", f.Subcode), zap.Uint32("code", f.Code), zap.String(obs.FReason, f.Reason))
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

// reset forgets the connection's security context.
func (st *connState) reset() {
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
	s.writeBody(w, http.StatusOK, "application/soap+xml;charset=UTF-8", wsman.IdentifyResponse(false, ""))
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
	if st.identity != nil && st.scheme == authn.SchemeBasic && subtle.ConstantTimeCompare(key[:], st.basicKey[:]) == 1 {
		return nil
	}
	st.reset()
	p, err := s.d.Basic.Authenticate(r.Context(), st.remote, token)
	if err != nil {
		s.logonFailure(st, "Basic", p.Name, err, log)
		return &httpError{status: http.StatusUnauthorized, scheme: true, close: true}
	}
	id, herr := s.authorize(st, p, authn.SchemeBasic, log)
	if herr != nil {
		return herr
	}
	st.identity, st.scheme, st.basicKey, st.authzAt = id, authn.SchemeBasic, key, time.Now()
	return nil
}

// negotiate runs one leg of a connection-bound handshake.
func (s *Server) negotiate(r *http.Request, st *connState, cfg *configs.Config, sch authn.Scheme, token string, log *zap.Logger) ([]byte, bool, *httpError) {
	mech := strings.ToLower(string(sch))
	if (sch == authn.SchemeKerberos && !cfg.Service.Auth.Kerberos) || (sch != authn.SchemeKerberos && !cfg.Service.Auth.Negotiate) || s.d.Contexts == nil {
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
	out, done, err := st.authCtx.Step(in)
	if err != nil {
		name := ""
		if p := st.authCtx.Principal(); p.Name != "" {
			name = p.Name
		}
		st.reset()
		s.logonFailure(st, string(sch), name, err, log)
		return nil, false, &httpError{status: http.StatusUnauthorized, scheme: true, close: true}
	}
	if !done {
		return out, false, nil
	}
	p := st.authCtx.Principal()
	id, herr := s.authorize(st, p, sch, log)
	if herr != nil {
		st.reset()
		return nil, false, herr
	}
	st.identity, st.authzAt = id, time.Now()
	st.sealer = st.authCtx.Sealer()
	return out, true, nil
}

// authorize maps a principal to an identity. A fresh logon is audited as
// logon_success; a re-check of an open connection (again) only audits a
// refusal.
func (s *Server) authorize(st *connState, p authn.Principal, sch authn.Scheme, log *zap.Logger) (*authn.Identity, *httpError) {
	return s.authorizeAs(st, p, sch, log, false)
}

// authorizeAgain re-checks a connection's identity without a new logon event.
func (s *Server) authorizeAgain(st *connState, p authn.Principal, sch authn.Scheme, log *zap.Logger) (*authn.Identity, *httpError) {
	return s.authorizeAs(st, p, sch, log, true)
}

func (s *Server) authorizeAs(st *connState, p authn.Principal, sch authn.Scheme, log *zap.Logger, again bool) (*authn.Identity, *httpError) {
	id, err := s.d.Authorizer.Authorize(p, sch)
	if err != nil {
		reason := err.Error()
		if again {
			reason = "re-authorization: " + reason
		}
		s.countAuth(p.Mechanism, "denied")
		log.Info("access denied", zap.String(obs.FUser, p.Name), zap.String(obs.FScheme, string(sch)), zap.Bool("open_connection", again), zap.Error(err))
		s.d.Audit.Event(obs.EvAccessDenied, zap.String(obs.FUser, p.Name), zap.String(obs.FRemoteAddr, st.remote.String()),
			zap.String(obs.FScheme, string(sch)), zap.String(obs.FReason, reason))
		return nil, &httpError{status: http.StatusUnauthorized, scheme: true, close: true}
	}
	if !again {
		s.countAuth(p.Mechanism, "success")
		s.d.Audit.Event(obs.EvLogonSuccess, zap.String(obs.FUser, id.User()), zap.String("principal", p.Name),
			zap.String(obs.FRemoteAddr, st.remote.String()), zap.String(obs.FScheme, string(sch)), zap.Uint64(obs.FConnID, st.id))
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
