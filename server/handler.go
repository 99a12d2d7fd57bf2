package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
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
	"github.com/winrmd/winrmd/session"
	"github.com/winrmd/winrmd/session/obs"
	"github.com/winrmd/winrmd/session/wsman"
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
	// authed: a request on it authenticated once; from then on it no longer
	// counts against its source's unauthenticated cap (evict.go).
	authed atomic.Bool
	// raw is the connection below TLS on an HTTPS listener (nil on HTTP),
	// corked while a large response body is written (writeBody).
	raw *slotConn
}

type connKey struct{}

func (s *Server) connContext(l *listener) func(ctx context.Context, c net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		st := &connState{id: s.nextConn.Add(1), remote: ap.Addr().Unmap(), l: l}
		if tc, ok := c.(*tls.Conn); ok {
			st.raw, _ = tc.NetConn().(*slotConn)
		}
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

// reply is what one request gets back, whichever stage produced it. A
// reply with an envelope is sealed when the request was; one without is an
// empty-bodied status (a refusal, a challenge, the 200 that ends a
// handshake).
type reply struct {
	status int
	close  bool   // Connection: close
	offer  bool   // add the WWW-Authenticate scheme offer
	token  string // a WWW-Authenticate "<scheme> <base64>" handshake leg (401)
	// refusalToken is a final token on a refusal (CredSSP's
	// TSRequest{errorCode}), then the only WWW-Authenticate line.
	refusalToken string
	// envelope is the SOAP response or fault; nil for an empty body.
	envelope []byte
	// unread: the request body was not read; a declared one closes the
	// connection (a refusal never reads a body).
	unread bool
	// reset forgets the connection's security context once the reply
	// (sealed with it, if the request was) has been sent.
	reset bool
}

// refuse is an empty-bodied refusal sent without reading the body.
func refuse(status int, offer, close bool) *reply {
	return &reply{status: status, offer: offer, close: close, unread: true}
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

// drainHandshake reads a handshake leg's body within a short deadline so
// the connection can carry the next leg; anything larger or slower closes it.
func drainHandshake(w http.ResponseWriter, r *http.Request, lim *Limits) {
	if r.ContentLength == 0 {
		return
	}
	if r.ContentLength < 0 || r.ContentLength > int64(lim.MaxUnauthenticatedBody) {
		w.Header().Set("Connection", "close")
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(lim.UnauthenticatedBodyTimeout))
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

// exchange is one request on its way through the pipeline stages.
type exchange struct {
	w   http.ResponseWriter
	r   *http.Request
	st  *connState
	cfg *configs.Config
	lim *Limits // LimitsFor(cfg.Service)
	log *zap.Logger
	tls bool

	id       *authn.Identity
	outToken string // final handshake token, on whatever reply follows
	raw      []byte // the body, unsealed once unseal ran
	// body is the pooled buffer raw was read into (nil when not pooled),
	// given back once the reply is written (releaseBody).
	body *[]byte
	// sent gives back the buffer the reply's envelope is in (a pooled
	// ReceiveResponse, session.Request.Sent) once it is written.
	sent     func()
	ct       string // its Content-Type
	sealed   bool   // the request was sealed: so is the reply
	protocol string // the sealing protocol, for the reply
	msg      *wsman.Message
	action   string // metric label
}

// serveWSMan runs one request through the stages: authenticate (from
// headers alone), authorize (re-check an open connection's identity), read
// the body (bounded), unseal it (or apply the encryption policy), parse and
// decode it, dispatch it to the session layer. Each stage either passes the
// exchange on or returns the reply that ends it; send writes every reply.
// The connection's lock is held throughout but for dispatch.
func (s *Server) serveWSMan(w http.ResponseWriter, r *http.Request, st *connState, l *listener) {
	x := &exchange{w: w, r: r, st: st, cfg: s.cfg.Load(), lim: s.lim.Load(), tls: l.transport == "https"}
	// WithLazy: most requests log nothing, and With encodes its fields
	// into a new JSON encoder at once (2% of the daemon's CPU in the warm
	// row, perf). The fields are values, so encoding them later logs the
	// same.
	x.log = s.log.WithLazy(zap.Uint64(obs.FConnID, st.id), zap.String(obs.FRemoteAddr, st.remote.String()))
	if s.tracing(x.cfg) {
		s.traceRequestHeaders(x.log, r)
		x.w = &traceWriter{ResponseWriter: w, s: s, log: x.log}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	defer x.releaseBody()
	for _, stage := range []func(*exchange) *reply{
		s.authenticate, s.authorizeConn, s.readRequest, s.unseal, s.parse, s.recheckCreate, s.dispatch,
	} {
		if rep := stage(x); rep != nil {
			s.send(x, rep)
			return
		}
	}
}

// send writes a reply: the scheme offer and connection headers, then the
// envelope (sealed when the request was) or an empty body.
func (s *Server) send(x *exchange, rep *reply) {
	if rep.reset {
		defer x.st.reset()
	}
	h := x.w.Header()
	if rep.refusalToken != "" {
		h.Set("WWW-Authenticate", rep.refusalToken)
	}
	if rep.offer {
		s.offerSchemes(x.w, x.st.l)
	}
	if x.outToken != "" {
		h.Set("WWW-Authenticate", x.outToken)
	}
	if rep.close {
		h.Set("Connection", "close")
	}
	if rep.envelope == nil {
		if rep.token != "" {
			h.Set("WWW-Authenticate", rep.token)
			drainHandshake(x.w, x.r, x.lim)
		}
		if rep.unread {
			closeIfBody(x.w, x.r)
		}
		h.Set("Content-Length", "0")
		x.w.WriteHeader(rep.status)
		return
	}
	if s.tracing(x.cfg) {
		s.traceBody(x.log, x.cfg, "response", x.sealed, rep.envelope)
	}
	if x.sealed && x.st.sealer != nil {
		buf := sealedBuffer(len(rep.envelope))
		enc, ct, err := sealing.AppendEncode((*buf)[:0], x.protocol, rep.envelope, x.st.sealer)
		if err != nil {
			s.log.Error("sealing response", zap.Error(err))
			h.Set("Connection", "close")
			h.Set("Content-Length", "0")
			x.w.WriteHeader(http.StatusInternalServerError)
			return // buf is not kept: it may hold plaintext
		}
		s.writeBody(x.w, x.st.raw, rep.status, ct, enc)
		releaseSealed(buf, enc)
		s.prepareKeystream(x, len(rep.envelope))
		return
	}
	s.writeBody(x.w, x.st.raw, rep.status, "application/soap+xml;charset=UTF-8", rep.envelope)
}

// keystreamPreparer is a sealer whose costly half can run ahead (NTLM's
// RC4 keystream, ntlm.Session.PrepareKeystream).
type keystreamPreparer interface{ PrepareKeystream(n int) }

// unsealKeystreamPreparer is the same for inbound messages.
type unsealKeystreamPreparer interface{ PrepareUnsealKeystream(n int) }

// prepareUnsealKeystream: after a large sealed request (a Send of stdin), the
// client's next message is most likely the next Send of the same size, so
// its keystream is drawn while this one is handled and the client seals the
// next. The session uses it only for a message of exactly that size from
// exactly this state.
func (s *Server) prepareUnsealKeystream(st *connState, n int) {
	if n < streamingReply {
		return
	}
	if p, ok := st.sealer.(unsealKeystreamPreparer); ok {
		p.PrepareUnsealKeystream(n)
	}
}

// streamingReply is the envelope size from which a Receive's answer counts
// as a stream of full responses: a streaming command's next response has
// the same size (full payload, the same header lengths), while small
// answers are not worth a goroutine.
const streamingReply = 64 << 10

// prepareKeystream: after a large sealed ReceiveResponse, the next message
// on this connection is most likely the next one of the same size, so its
// keystream is drawn while the client unseals this one. The session uses
// it only for a message of exactly that size sealed from exactly this
// state; anything else seals as before.
func (s *Server) prepareKeystream(x *exchange, n int) {
	if x.action != "Receive" || n < streamingReply {
		return
	}
	if p, ok := x.st.sealer.(keystreamPreparer); ok {
		p.PrepareKeystream(n)
	}
}

// faultReply renders a fault envelope.
func (s *Server) faultReply(f *wsman.Fault, relatesTo string, close bool) *reply {
	return &reply{status: f.HTTPStatus(), close: close, envelope: wsman.FaultEnvelope(f, relatesTo, s.d.Machine)}
}

// authenticate establishes x.id from the Authorization header and the
// connection's state: Basic per request, Negotiate/NTLM/Kerberos per
// connection (a handshake leg ends the request with its token).
func (s *Server) authenticate(x *exchange) *reply {
	st, r := x.st, x.r
	authz := r.Header.Values("Authorization")
	switch {
	case len(authz) > 1:
		s.countRequest("none", "bad_request")
		return refuse(http.StatusBadRequest, false, true)
	case len(authz) == 0:
		if st.identity == nil {
			if strings.EqualFold(strings.TrimSpace(r.Header.Get("WSMANIDENTIFY")), "unauthenticated") {
				return s.anonymousIdentify(x)
			}
			if x.cfg.Service.Auth.Certificate && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				// A client certificate with no Authorization header (curl
				// --cert): the certificate is the credential.
				if rep := s.certificate(x); rep != nil {
					return rep
				}
				break
			}
			s.countAuth("none", "challenge")
			return refuse(http.StatusUnauthorized, true, false)
		}
		if st.scheme == authn.SchemeBasic {
			// Basic is per request; a connection does not stay logged on.
			return refuse(http.StatusUnauthorized, true, false)
		}
		if r.ContentLength == 0 {
			// An empty POST without credentials asks which schemes exist
			// (masterzen/winrm opens every request so, even on a connection
			// that is already authenticated): answer the offer; a new
			// handshake then replaces the connection's context.
			s.countAuth("none", "challenge")
			return refuse(http.StatusUnauthorized, true, false)
		}
	default:
		scheme, token, _ := strings.Cut(strings.TrimSpace(authz[0]), " ")
		token = strings.TrimSpace(token)
		switch {
		case strings.EqualFold(strings.TrimSpace(authz[0]), authn.CertificateProfile):
			if rep := s.certificate(x); rep != nil {
				return rep
			}
		case strings.EqualFold(scheme, "Basic"):
			if rep := s.basic(x, token); rep != nil {
				return rep
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
			out, done, rep := s.negotiate(x, sch, token)
			if rep != nil {
				if len(out) > 0 {
					// CredSSP's TSRequest{errorCode} rides on the refusal.
					rep.refusalToken = string(sch) + " " + base64.StdEncoding.EncodeToString(out)
				}
				return rep
			}
			if !done {
				return &reply{status: http.StatusUnauthorized, token: string(sch) + " " + base64.StdEncoding.EncodeToString(out)}
			}
			if len(out) > 0 {
				x.outToken = string(sch) + " " + base64.StdEncoding.EncodeToString(out)
			}
		default:
			s.countAuth("unknown", "unsupported")
			return refuse(http.StatusUnauthorized, true, false)
		}
	}
	x.id = st.identity
	if !x.id.Valid() { // by construction unreachable; never serve without one
		x.outToken = ""
		return refuse(http.StatusUnauthorized, true, true)
	}
	st.authed.Store(true)
	return nil
}

// authorizeConn re-checks a long-lived connection's identity now and then,
// so a user removed from the allowed groups (SIGHUP, or the group
// database) loses access within Limits.ReauthorizeEvery even on a
// connection already open; and at once when the local account database changed
// (issue 14.11: an account re-created under the same name must not reach
// the deleted account's shells through an identity authorized before).
func (s *Server) authorizeConn(x *exchange) *reply {
	st := x.st
	changed := false
	if v, ok := s.d.Authorizer.(VersionedAuthorizer); ok {
		changed = v.AccountsVersion() != x.id.AccountsVersion()
	}
	if time.Since(st.authzAt) <= x.lim.ReauthorizeEvery && !changed {
		return nil
	}
	fresh, err := s.d.Authorizer.Authorize(x.id.Principal(), x.id.Scheme())
	if errors.Is(err, authn.ErrBackend) {
		// The account database could not answer (descriptors exhausted,
		// a sidecar target between restarts): no verdict on the account.
		// The connection keeps its identity for this request and is
		// re-checked at its next one; a Create is re-checked uncached
		// anyway (recheckCreate) and answers a fault while this lasts.
		x.log.Warn("re-authorization postponed: account database unavailable", zap.String(obs.FUser, x.id.User()), zap.Error(err))
		return nil
	}
	if err != nil {
		// The refusal: audited and counted by authorizeAs, which decides
		// once more (from the cache: the same verdict).
		var rep *reply
		if fresh, rep = s.authorizeAgain(x, x.id.Principal(), x.id.Scheme()); rep != nil {
			st.reset()
			return rep
		}
	}
	st.identity, st.authzAt, x.id = fresh, time.Now(), fresh
	return nil
}

// tooLarge is the fault for a body over the envelope limit plus the
// sealing overhead.
func (s *Server) tooLarge(maxEnv int) *reply {
	s.countRequest("none", "too_large")
	return s.faultReply(wsman.EncodingLimit(wsman.CodeMaxEnvelopeSizeExceeded,
		"The WS-Management service cannot process the request because the envelope size exceeds the maximum allowed ("+strconv.Itoa(maxEnv)+" bytes)."), "", true)
}

// readRequest reads the body, bounded before anything parses it.
func (s *Server) readRequest(x *exchange) *reply {
	maxEnv, maxBody := x.lim.MaxEnvelope, x.lim.MaxEnvelope+x.lim.SealingOverhead
	if x.r.ContentLength > int64(maxBody) {
		return s.tooLarge(maxEnv)
	}
	rc := http.NewResponseController(x.w)
	_ = rc.SetReadDeadline(time.Now().Add(x.lim.ReadHeaderTimeout + x.lim.BodyTimeout))
	raw, buf, err := readBody(x.r, maxBody)
	x.body = buf
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		x.log.Info("reading request body", zap.Error(err))
		return refuse(http.StatusBadRequest, false, true)
	}
	if len(raw) > maxBody {
		return s.tooLarge(maxEnv)
	}
	if s.d.Metrics != nil {
		s.d.Metrics.Bytes.WithLabelValues("in").Add(float64(len(raw)))
	}
	x.raw, x.ct = raw, x.r.Header.Get("Content-Type")
	return nil
}

// unseal decrypts a sealed body, or refuses a plain one on HTTP unless
// service.allow_unencrypted. An empty body (the last leg of pywinrm's and
// pypsrp's handshake) gets an empty 200.
func (s *Server) unseal(x *exchange) *reply {
	st, id := x.st, x.id
	maxEnv := x.lim.MaxEnvelope
	if sealing.IsEncrypted(x.ct) {
		if st.sealer == nil {
			x.log.Info("encrypted body on a connection without a sealing context")
			s.countRequest("none", "bad_encryption")
			return refuse(http.StatusBadRequest, false, true)
		}
		plain, proto, err := sealing.Decode(x.ct, x.raw, maxEnv, st.sealer)
		if err != nil {
			// A bad signature, sequence or framing kills the context.
			x.log.Warn("refusing encrypted message", zap.Error(err))
			s.d.Audit.Event(obs.EvLogonFailure, zap.String(obs.FUser, id.User()), zap.String(obs.FRemoteAddr, st.remote.String()),
				zap.String(obs.FScheme, string(st.scheme)), zap.String(obs.FReason, "message integrity: "+err.Error()))
			st.reset()
			s.countRequest("none", "bad_encryption")
			return refuse(http.StatusBadRequest, false, true)
		}
		s.prepareUnsealKeystream(st, len(plain))
		// OMI's client pads sealed plaintext with up to 15 NULs and counts
		// them in Length; XML never ends with NUL, so drop them.
		for i := 0; i < 15 && len(plain) > 0 && plain[len(plain)-1] == 0; i++ {
			plain = plain[:len(plain)-1]
		}
		x.raw, x.protocol, x.sealed = plain, proto, true
		x.ct = "application/soap+xml;charset=UTF-8"
	} else if len(x.raw) > 0 && !x.tls && !x.cfg.Service.AllowUnencrypted {
		x.log.Info("refusing unencrypted body on HTTP (service.allow_unencrypted is false)")
		s.d.Audit.Event(obs.EvUnencrypted, zap.String(obs.FUser, id.User()), zap.String(obs.FRemoteAddr, st.remote.String()),
			zap.String(obs.FScheme, string(st.scheme)))
		s.countRequest("none", "unencrypted")
		return refuse(http.StatusUnauthorized, true, true)
	}
	if len(x.raw) == 0 {
		return &reply{status: http.StatusOK}
	}
	return nil
}

// parse turns the body into a decoded message; an authenticated Identify
// is answered here, and a Create while draining is refused.
func (s *Server) parse(x *exchange) *reply {
	if s.tracing(x.cfg) {
		s.traceBody(x.log, x.cfg, "request", x.sealed, x.raw)
	}
	lim := wsman.DefaultLimits()
	lim.MaxBytes = x.lim.MaxEnvelope
	env, err := wsman.Parse(x.raw, x.ct, lim)
	if err != nil {
		s.countRequest("none", "fault")
		return s.faultReply(asFault(err), "", false)
	}
	x.action = actionLabel(env.Header.Action)
	x.log = x.log.WithLazy(zap.String(obs.FMessageID, env.Header.MessageID), zap.String(obs.FAction, x.action), zap.String(obs.FUser, x.id.User()))
	if env.IsIdentify {
		s.countRequest("Identify", "ok")
		return &reply{status: http.StatusOK, envelope: wsman.IdentifyResponse(true, s.d.Version)}
	}
	if s.draining.Load() && env.Header.Action == wsman.ActionCreate {
		s.countRequest(x.action, "fault")
		return s.faultReply(wsman.OperationAborted("The service is shutting down."), env.Header.MessageID, false)
	}
	// The exchange owns x.raw: a Send's stdin is decoded over its base64 in
	// it, and the message's Data aliases it until releaseBody, after the
	// session layer has answered.
	msg, err := wsman.DecodeInPlace(env)
	if err != nil {
		s.countRequest(x.action, "fault")
		return s.faultReply(asFault(err), env.Header.MessageID, false)
	}
	x.msg = msg
	return nil
}

// recheckCreate: a worker is about to start as this account, so the
// account database decides itself, not a cached decision: a deleted or
// re-created account never gets a worker with a stale uid or groups
// (issue 14.11).
func (s *Server) recheckCreate(x *exchange) *reply {
	if x.msg.Header.Action != wsman.ActionCreate {
		return nil
	}
	u, ok := s.d.Authorizer.(UncachedAuthorizer)
	if !ok {
		return nil
	}
	st := x.st
	fresh, err := u.AuthorizeUncached(x.id.Principal(), x.id.Scheme())
	if err != nil {
		reason := err.Error()
		x.log.Info("shell refused: account re-checked", zap.String(obs.FReason, reason))
		s.d.Audit.Event(obs.EvAccessDenied, zap.String(obs.FUser, x.id.User()), zap.String(obs.FRemoteAddr, st.remote.String()),
			zap.String(obs.FScheme, string(st.scheme)), zap.String(obs.FReason, "shell create: "+reason))
		if errors.Is(err, authn.ErrBackend) {
			// The account database could not answer (a sidecar target
			// that is gone, descriptors exhausted): not a refusal of the
			// account, so the fault tells the (authenticated) client why
			// the shell cannot start.
			s.countRequest(x.action, "fault")
			return s.faultReply(wsman.InternalError(995, "", "The shell could not be started: "+reason), x.msg.Header.MessageID, true)
		}
		s.countRequest(x.action, "denied")
		rep := s.faultReply(wsman.AccessDenied("Access is denied."), x.msg.Header.MessageID, true)
		rep.reset = true
		return rep
	}
	st.identity, x.id = fresh, fresh
	return nil
}

// dispatch hands the message to the session layer, which may block
// (Receive): the connection's lock is released meanwhile, so other
// connections proceed. It always ends the exchange.
func (s *Server) dispatch(x *exchange) *reply {
	x.st.mu.Unlock()
	req := &session.Request{
		Msg: x.msg, Identity: x.id, RemoteAddr: x.st.remote.String(), ListenerURL: listenerURL(x.r, x.st.l),
	}
	body, err := s.d.Sessions.Handle(x.r.Context(), req)
	x.sent = req.Sent
	x.st.mu.Lock()
	relatesTo := x.msg.Header.MessageID
	if err != nil {
		f, ok := err.(*wsman.Fault)
		if !ok {
			x.log.Error("handler error", zap.Error(err))
			f = wsman.InternalError(995, "", "The operation failed.")
		}
		if f.Subcode != "w:TimedOut" {
			x.log.Info("fault", zap.String("subcode", f.Subcode), zap.Uint32("code", f.Code), zap.String(obs.FReason, f.Reason),
				zap.String("detail", f.Internal))
		}
		s.countRequest(x.action, "fault")
		return s.faultReply(f, relatesTo, false)
	}
	s.countRequest(x.action, "ok")
	return &reply{status: http.StatusOK, envelope: body}
}

// asFault is err as a *wsman.Fault (Parse and Decode return nothing else).
func asFault(err error) *wsman.Fault {
	if f, ok := err.(*wsman.Fault); ok {
		return f
	}
	return wsman.SchemaValidation("The request is not a valid SOAP envelope.")
}

// Bodies of pooledBodyMin bytes or more, both ways, live in buffers reused
// from one message to the next, sparing the page faults, zeroing and GC
// work of a new ~500 KB buffer each time: request bodies (the Sends of a
// stdin stream) are read into them, sealed responses (the
// ReceiveResponses of an output stream) are sealed into them. A request's
// buffer goes back once the reply is written, when nothing refers to it
// any more (the Message's Send data may alias it until then); a sealed
// response's once writeBody has returned (the TLS and plain writers have
// copied or sent every byte by then). One of more than pooledBodyMax
// bytes is not kept. Reuse never shows an earlier message's bytes: a
// request body is used only once io.ReadFull has filled all of it, and a
// sealed body is written from its first byte to its last
// (sealing.AppendEncode) before it is sent.
var bodyPool sync.Pool // of *[]byte

const (
	pooledBodyMin = 64 << 10
	pooledBodyMax = 4 << 20
)

// readBody reads at most limit+1 bytes of the body, in one buffer when the
// client declared its length (the envelope hot path). buf, when not nil,
// is the pooled buffer the body is in, for releaseBody.
func readBody(r *http.Request, limit int) (body []byte, buf *[]byte, err error) {
	n := r.ContentLength
	if n <= 0 || n > int64(limit) {
		body, err = io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
		return body, nil, err
	}
	if n < pooledBodyMin || n > pooledBodyMax {
		body = make([]byte, n)
	} else {
		buf, _ = bodyPool.Get().(*[]byte)
		if buf == nil || int64(cap(*buf)) < n {
			// Rounded up, so that Sends of about the same size share.
			b := make([]byte, (n+pooledBodyMin-1)/pooledBodyMin*pooledBodyMin)
			buf = &b
		}
		body = (*buf)[:n]
	}
	if _, err := io.ReadFull(r.Body, body); err != nil {
		if buf != nil {
			bodyPool.Put(buf)
		}
		return nil, nil, err
	}
	return body, buf, nil
}

// sealedBuffer returns a buffer to seal an envelope of n bytes into: from
// bodyPool for a large one, else an empty one (AppendEncode allocates).
func sealedBuffer(n int) *[]byte {
	if n >= pooledBodyMin {
		if buf, _ := bodyPool.Get().(*[]byte); buf != nil {
			return buf
		}
	}
	return new([]byte)
}

// releaseSealed gives the buffer enc was sealed into to bodyPool, unless
// it is small (a short reply's) or larger than pooledBodyMax.
func releaseSealed(buf *[]byte, enc []byte) {
	if c := cap(enc); c >= pooledBodyMin && c <= pooledBodyMax {
		*buf = enc[:0]
		bodyPool.Put(buf)
	}
}

// releaseBody gives the exchange's body buffer back to the pool, and the
// reply's envelope buffer to the session layer's, once the reply is
// written.
func (x *exchange) releaseBody() {
	if x.sent != nil {
		x.sent()
		x.sent = nil
	}
	if x.body != nil {
		x.raw, x.msg = nil, nil
		bodyPool.Put(x.body)
		x.body = nil
	}
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

// anonymousIdentify answers an unauthenticated Identify (WSMANIDENTIFY:
// unauthenticated); any other body needs authentication.
func (s *Server) anonymousIdentify(x *exchange) *reply {
	r := x.r
	lim := wsman.DefaultLimits()
	lim.MaxBytes = x.lim.MaxUnauthenticatedBody
	if r.ContentLength > int64(lim.MaxBytes) {
		return &reply{status: http.StatusBadRequest, close: true}
	}
	// Unauthenticated: the body gets a few seconds, not a minute.
	rc := http.NewResponseController(x.w)
	_ = rc.SetReadDeadline(time.Now().Add(x.lim.UnauthenticatedBodyTimeout))
	raw, err := io.ReadAll(io.LimitReader(r.Body, int64(lim.MaxBytes)+1))
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil || len(raw) > lim.MaxBytes {
		return &reply{status: http.StatusBadRequest, close: true}
	}
	if s.tracing(x.cfg) {
		s.traceBody(s.log, x.cfg, "request", false, raw)
	}
	env, err := wsman.Parse(raw, r.Header.Get("Content-Type"), lim)
	if err != nil || !env.IsIdentify {
		s.countAuth("none", "challenge")
		return &reply{status: http.StatusUnauthorized, offer: true}
	}
	s.countRequest("Identify", "ok")
	return &reply{status: http.StatusOK, envelope: wsman.IdentifyResponse(false, "")}
}

// corkMin: bodies from this size up are written corked (slotConn.cork):
// two TLS records and more.
const corkMin = 32 << 10

func (s *Server) writeBody(w http.ResponseWriter, raw *slotConn, status int, ct string, body []byte) {
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if raw != nil && len(body) >= corkMin {
		raw.cork()
		_, _ = w.Write(body)
		// The status line and headers, and the body's tail, may still sit
		// in net/http's buffers: flushed into the cork, they go out with
		// the body.
		_ = http.NewResponseController(w).Flush()
		_ = raw.uncork()
	} else {
		_, _ = w.Write(body)
	}
	if s.d.Metrics != nil {
		s.d.Metrics.Bytes.WithLabelValues("out").Add(float64(len(body)))
	}
}

// basic authenticates a Basic value; verified once per connection.
func (s *Server) basic(x *exchange, token string) *reply {
	st, cfg := x.st, x.cfg
	if !cfg.Service.Auth.Basic || s.d.Basic == nil {
		s.countAuth("basic", "disabled")
		return refuse(http.StatusUnauthorized, true, false)
	}
	if !x.tls && !cfg.Service.AllowUnencrypted {
		// The password already crossed the wire in clear; refuse without
		// checking it, so the plaintext channel is never an oracle.
		s.countAuth("basic", "unencrypted")
		s.d.Audit.Event(obs.EvUnencrypted, zap.String(obs.FRemoteAddr, st.remote.String()), zap.String(obs.FScheme, "Basic"),
			zap.String(obs.FReason, "Basic over HTTP refused (service.allow_unencrypted is false)"))
		return refuse(http.StatusUnauthorized, true, true)
	}
	key := sha256.Sum256([]byte(token))
	// The same credentials on the same connection are not verified again
	// while the credential sources are unchanged and the last check is
	// younger than Limits.ReauthorizeEvery: a password change or removal then
	// takes effect on open connections too.
	version := ""
	if v, ok := s.d.Basic.(interface{ SourceVersion() string }); ok {
		version = v.SourceVersion()
	}
	if st.identity != nil && st.scheme == authn.SchemeBasic && subtle.ConstantTimeCompare(key[:], st.basicKey[:]) == 1 &&
		version == st.basicVersion && time.Since(st.authzAt) <= x.lim.ReauthorizeEvery {
		return nil
	}
	st.reset()
	checked := time.Now()
	p, err := s.d.Basic.Authenticate(x.r.Context(), st.remote, token)
	if err != nil {
		s.logonFailure(x, "Basic", p.Name, err)
		failureDelay(x.r, x.lim, checked, err)
		return refuse(http.StatusUnauthorized, true, true)
	}
	id, rep := s.authorize(x, p, authn.SchemeBasic)
	if rep != nil {
		failureDelay(x.r, x.lim, checked, authn.ErrNotAuthorized)
		return rep
	}
	st.identity, st.scheme, st.basicKey, st.authzAt, st.basicVersion = id, authn.SchemeBasic, key, time.Now(), version
	return nil
}

// certificate logs a connection on with its TLS client certificate, once:
// the certificate cannot change on a connection (crypto/tls servers refuse
// renegotiation), so later requests on it ride on the first mapping.
func (s *Server) certificate(x *exchange) *reply {
	r, st, log := x.r, x.st, x.log
	if !x.cfg.Service.Auth.Certificate {
		s.countAuth(certauth.Mechanism, "disabled")
		return refuse(http.StatusUnauthorized, true, false)
	}
	if !x.tls || r.TLS == nil {
		s.countAuth(certauth.Mechanism, "unencrypted")
		return refuse(http.StatusUnauthorized, true, false)
	}
	if st.identity != nil && st.scheme == authn.SchemeCertificate {
		return nil
	}
	st.reset()
	if err := s.d.Limiter.Allow(st.remote, ""); err != nil {
		s.logonFailure(x, string(authn.SchemeCertificate), "", err)
		return refuse(http.StatusUnauthorized, true, true)
	}
	chain := r.TLS.PeerCertificates
	res, err := s.certMap.Load().Map(chain)
	if err != nil {
		s.d.Limiter.Fail(st.remote, "")
		name := ""
		if len(chain) > 0 {
			name = chain[0].Subject.String()
		}
		s.logonFailure(x, string(authn.SchemeCertificate), name, err)
		return refuse(http.StatusUnauthorized, true, true)
	}
	log.Info("client certificate mapped", zap.String(obs.FUser, res.Principal.Name), zap.String("upn", res.UPN),
		zap.String("subject", res.Subject), zap.String("serial", res.Serial), zap.Int("mapping", res.Mapping))
	id, rep := s.authorize(x, res.Principal, authn.SchemeCertificate, zap.String("upn", res.UPN), zap.String("cert_subject", res.Subject), zap.String("cert_serial", res.Serial))
	if rep != nil {
		return rep
	}
	s.d.Limiter.Success(st.remote, res.Principal.Name)
	st.identity, st.scheme, st.authzAt = id, authn.SchemeCertificate, time.Now()
	return nil
}

// negotiate runs one leg of a connection-bound handshake.
func (s *Server) negotiate(x *exchange, sch authn.Scheme, token string) ([]byte, bool, *reply) {
	st, cfg := x.st, x.cfg
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
		return nil, false, refuse(http.StatusUnauthorized, true, false)
	}
	if len(token) > base64.StdEncoding.EncodedLen(x.lim.MaxToken) {
		s.countAuth(mech, "malformed")
		return nil, false, refuse(http.StatusUnauthorized, true, true)
	}
	in, err := base64.StdEncoding.DecodeString(token)
	if err != nil || len(in) == 0 {
		s.countAuth(mech, "malformed")
		s.logonFailure(x, string(sch), "", authn.ErrMalformed)
		return nil, false, refuse(http.StatusUnauthorized, true, true)
	}
	// A new handshake on a connection replaces whatever it had.
	if st.authCtx == nil || st.identity != nil || st.scheme != sch {
		st.reset()
		st.authCtx = s.d.Contexts(sch)
		st.scheme = sch
		if st.authCtx == nil {
			s.countAuth(mech, "disabled")
			return nil, false, refuse(http.StatusUnauthorized, true, false)
		}
	}
	ci := authn.ConnInfo{Remote: st.remote, TLS: x.tls}
	if st.l.certs != nil {
		ci.ChannelBinding = st.l.certs.ChannelBinding()
	}
	checked := time.Now()
	out, done, err := st.authCtx.Step(x.r.Context(), ci, in)
	if err != nil {
		name := ""
		if c, ok := st.authCtx.(authn.Claimant); ok {
			name = c.ClaimedName()
		}
		st.reset()
		s.logonFailure(x, string(sch), name, err)
		failureDelay(x.r, x.lim, checked, err)
		// A CredSSP refusal may carry TSRequest{errorCode}: then it is the
		// only WWW-Authenticate line (clients read the token at its end).
		return out, false, refuse(http.StatusUnauthorized, len(out) == 0, true)
	}
	if !done {
		return out, false, nil
	}
	p := st.authCtx.Principal()
	id, rep := s.authorize(x, p, sch)
	if rep != nil {
		st.reset()
		failureDelay(x.r, x.lim, checked, authn.ErrNotAuthorized)
		return nil, false, rep
	}
	st.identity, st.authzAt = id, time.Now()
	st.sealer = st.authCtx.Sealer()
	return out, true, nil
}

// authorize maps a principal to an identity. A fresh logon is audited as
// logon_success; a re-check of an open connection (again) only audits a
// refusal.
func (s *Server) authorize(x *exchange, p authn.Principal, sch authn.Scheme, audit ...zap.Field) (*authn.Identity, *reply) {
	return s.authorizeAs(x, p, sch, false, audit...)
}

// authorizeAgain re-checks a connection's identity without a new logon event.
func (s *Server) authorizeAgain(x *exchange, p authn.Principal, sch authn.Scheme) (*authn.Identity, *reply) {
	return s.authorizeAs(x, p, sch, true)
}

// audit adds fields (what the mechanism saw: a certificate's UPN) to the
// audit line.
func (s *Server) authorizeAs(x *exchange, p authn.Principal, sch authn.Scheme, again bool, audit ...zap.Field) (*authn.Identity, *reply) {
	st, log := x.st, x.log
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
		return nil, refuse(http.StatusUnauthorized, true, true)
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

func (s *Server) logonFailure(x *exchange, scheme, name string, err error) {
	st, log := x.st, x.log
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
func failureDelay(r *http.Request, lim *Limits, checked time.Time, err error) {
	if errors.Is(err, authn.ErrMalformed) || errors.Is(err, authn.ErrUnsupported) {
		return
	}
	wait := time.Until(checked.Add(lim.FailureDelay))
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
