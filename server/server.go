// Package server owns bytes and connections: listeners, TLS, per-connection
// security contexts, the HTTP pipeline in front of /wsman, and dispatch of
// decoded messages to the session layer. Nothing beyond authentication runs
// for a request that has not authenticated.
//
// The pipeline (handler.go) is a fixed sequence of stages over one
// exchange: authenticate (headers only) -> authorizeConn (re-check an open
// connection's identity) -> readRequest (bounded body) -> unseal (or the
// encryption policy) -> parse (wsman.Parse and wsman.Decode) ->
// recheckCreate (the account database before a worker starts) -> dispatch
// (session). Each stage passes the exchange on or returns the reply that
// ends it; send writes every reply, sealed when the request was. Every
// mechanism's Step gets the request's context and an authn.ConnInfo.
//
// Every size and time this layer bounds is a field of Limits (limits.go),
// filled from the service.* keys by LimitsFor alone. What a daemon writes
// once it serves is Ready (ready.go), the one declaration of the
// ready-file contract.
//
// Imports: server -> session -> isolation, with authn, wsman, obs and
// configs; nothing below server imports it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/certauth"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/session"
	"github.com/winrmd/winrmd/session/obs"
)

// BasicAuthenticator verifies a Basic Authorization value.
type BasicAuthenticator interface {
	Authenticate(ctx context.Context, remote netip.Addr, value string) (authn.Principal, error)
}

// Authorizer maps a principal to a local account and decides admission.
type Authorizer interface {
	Authorize(p authn.Principal, scheme authn.Scheme) (*authn.Identity, error)
}

// UncachedAuthorizer is an Authorizer that can decide without its cache;
// shells are created with it.
type UncachedAuthorizer interface {
	AuthorizeUncached(p authn.Principal, scheme authn.Scheme) (*authn.Identity, error)
}

// VersionedAuthorizer is an Authorizer that can tell when the account
// database changed (authn.Authorizer.AccountsVersion); an open connection's
// identity is re-authorized at its next request after a change.
type VersionedAuthorizer interface {
	AccountsVersion() string
}

// ContextFactory makes a fresh connection-bound security context for an
// HTTP scheme, or returns nil when the scheme is not available. The
// connection's details (address, TLS, channel binding) reach the context
// with every Step (authn.ConnInfo).
type ContextFactory func(scheme authn.Scheme) authn.Context

// Deps are the collaborators the daemon wires in.
type Deps struct {
	Config     *configs.Config
	Log        *zap.Logger
	Audit      *obs.Audit
	Metrics    *obs.Metrics
	Sessions   *session.Manager
	Basic      BasicAuthenticator // nil: Basic unavailable
	Contexts   ContextFactory     // nil: Negotiate unavailable
	Kerberos   bool               // a keytab is loaded: offer the Kerberos scheme
	Authorizer Authorizer
	// Limiter throttles failed certificate logons per source (the password
	// mechanisms carry their own); nil: unlimited.
	Limiter *authn.RateLimiter
	Machine string // host name for faults
	Version string // ProductVersion for authenticated Identify
}

// Server is the set of WinRM listeners.
type Server struct {
	d        Deps
	log      *zap.Logger
	cfg      atomic.Pointer[configs.Config]
	lim      atomic.Pointer[Limits] // LimitsFor(cfg.Service)
	filter4  atomic.Pointer[configs.Filter]
	filter6  atomic.Pointer[configs.Filter]
	certMap  atomic.Pointer[certauth.Mapper]
	conns    sync.Map // net.Conn → *connState
	nextConn atomic.Uint64
	open     atomic.Int64
	slots    chan struct{}

	mu        sync.Mutex
	listeners []*listener
	reapOnce  sync.Once
	stopReap  chan struct{}
	stopOnce  sync.Once
	draining  atomic.Bool
	// lastSourceWarn throttles the per-source refusal's log line (evict.go).
	lastSourceWarn atomic.Int64
}

type listener struct {
	transport string
	net.Listener
	srv   *http.Server
	addr  string
	certs *CertStore // https only
}

// Bound describes a bound listener.
type Bound struct {
	Transport string `json:"transport"`
	Address   string `json:"address"`
}

// New builds a server; Start binds it.
func New(d Deps) (*Server, error) {
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Authorizer == nil || d.Sessions == nil {
		return nil, errors.New("server: Authorizer and Sessions are required")
	}
	s := &Server{d: d, log: d.Log.Named("server"), slots: make(chan struct{}, LimitsFor(d.Config.Service).MaxConnections), stopReap: make(chan struct{})}
	if err := s.applyConfig(d.Config); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) applyConfig(c *configs.Config) error {
	f4, err := configs.ParseFilter(c.Service.IPv4Filter, false)
	if err != nil {
		return fmt.Errorf("service.ipv4_filter: %w", err)
	}
	f6, err := configs.ParseFilter(c.Service.IPv6Filter, true)
	if err != nil {
		return fmt.Errorf("service.ipv6_filter: %w", err)
	}
	mp, err := certauth.New(c.CertificateMappings)
	if err != nil {
		return err
	}
	lim := LimitsFor(c.Service)
	s.cfg.Store(c)
	s.lim.Store(&lim)
	s.certMap.Store(mp)
	s.filter4.Store(f4)
	s.filter6.Store(f6)
	return nil
}

// Reload applies the reloadable parts of a new configuration (filters, auth
// switches, encryption policy, certificate mappings with their CA and CRL
// files). Listeners and quotas need a restart.
func (s *Server) Reload(c *configs.Config) error { return s.applyConfig(c) }

// Start binds every listener and serves in the background.
func (s *Server) Start() ([]Bound, error) {
	c, lim := s.cfg.Load(), s.lim.Load()
	s.reapOnce.Do(func() { go s.reapIdleUnauthenticated() })
	var out []Bound
	for _, lc := range c.Listeners {
		addr := lc.Address
		if addr == "*" {
			addr = ""
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(lc.Port)))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listen %s %s:%d: %w", lc.Transport, lc.Address, lc.Port, err)
		}
		l := &listener{transport: lc.Transport, addr: ln.Addr().String()}
		l.Listener = &gatedListener{Listener: ln, s: s}
		hs := &http.Server{
			Handler:           s.handler(l),
			ReadHeaderTimeout: lim.ReadHeaderTimeout,
			IdleTimeout:       lim.IdleTimeout,
			MaxHeaderBytes:    lim.MaxHeaderBytes,
			// HTTP/1.1 only: NTLM and Negotiate bind to the TCP connection.
			TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
			ConnContext:  s.connContext(l),
			ConnState:    s.connStateHook,
			ErrorLog:     zap.NewStdLog(s.log.Named("http")),
		}
		if lc.Transport == "https" {
			cs, err := LoadCertStore(lc.CertFile, lc.KeyFile)
			if err != nil {
				ln.Close()
				s.Close()
				return nil, err
			}
			l.certs = cs
			hs.TLSConfig = &tls.Config{
				MinVersion:     tls.VersionTLS12,
				NextProtos:     []string{"http/1.1"},
				GetCertificate: cs.GetCertificate,
			}
			// With certificate logons on, the handshake requests (never
			// requires) a client certificate; the chain is verified against
			// the mapping table, not here (crypto/tls still checks the
			// client's proof of key possession). Decided per handshake, so
			// SIGHUP switches it.
			withCert := hs.TLSConfig.Clone()
			withCert.ClientAuth = tls.RequestClientCert
			hs.TLSConfig.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
				if s.cfg.Load().Service.Auth.Certificate {
					return withCert, nil
				}
				return nil, nil
			}
			l.Listener = tls.NewListener(l.Listener, hs.TLSConfig)
		}
		l.srv = hs
		s.mu.Lock()
		s.listeners = append(s.listeners, l)
		s.mu.Unlock()
		out = append(out, Bound{Transport: lc.Transport, Address: l.addr})
		go func() {
			if err := hs.Serve(l.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("listener stopped", zap.String("address", l.addr), zap.Error(err))
			}
		}()
		s.log.Info("listening", zap.String("transport", lc.Transport), zap.String("address", l.addr))
	}
	return out, nil
}

// ReloadCertificates re-reads every HTTPS listener's certificate.
func (s *Server) ReloadCertificates() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for _, l := range s.listeners {
		if l.certs != nil {
			if err := l.certs.Reload(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// Drain makes new shells and connections be refused while in-flight requests finish.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// then closes every connection.
func (s *Server) Shutdown(ctx context.Context) {
	s.stopOnce.Do(func() { close(s.stopReap) })
	s.mu.Lock()
	ls := append([]*listener(nil), s.listeners...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func(l *listener) {
			defer wg.Done()
			if err := l.srv.Shutdown(ctx); err != nil {
				l.srv.Close()
			}
		}(l)
	}
	wg.Wait()
}

// Close closes every listener and connection at once.
func (s *Server) Close() {
	s.stopOnce.Do(func() { close(s.stopReap) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		if l.srv != nil {
			l.srv.Close()
		} else {
			l.Listener.Close()
		}
	}
}

// gatedListener applies the IP filters and max_connections at accept time,
// before a single byte is read.
type gatedListener struct {
	net.Listener
	s *Server
}

func (g *gatedListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		addr := ap.Addr().Unmap()
		f := g.s.filter4.Load()
		if addr.Is6() {
			f = g.s.filter6.Load()
		}
		if !f.Allows(addr) {
			g.s.refuse("filter")
			g.s.log.Info("connection refused by IP filter", zap.String(obs.FRemoteAddr, addr.String()))
			c.Close()
			continue
		}
		if !g.s.admitSource(addr) {
			c.Close()
			continue
		}
		select {
		case g.s.slots <- struct{}{}:
		default:
			// Full: an idle connection that never authenticated gives
			// its slot to the newcomer (evict.go), so unauthenticated
			// connections can never lock real clients out.
			if g.s.evictIdleUnauthenticated(netip.Addr{}) {
				select {
				case g.s.slots <- struct{}{}:
					return &slotConn{Conn: c, release: func() { <-g.s.slots }}, nil
				default:
				}
			}
			g.s.refuse("max_connections")
			g.s.log.Warn("connection refused: max_connections reached", zap.String(obs.FRemoteAddr, addr.String()))
			c.Close()
			continue
		}
		return &slotConn{Conn: c, release: func() { <-g.s.slots }}, nil
	}
}

type slotConn struct {
	net.Conn
	once    sync.Once
	release func()

	// corked, between cork and uncork, gathers writes into wbuf, written
	// when full and at uncork. TLS writes a response record by record, at
	// most 16 KiB each (smaller at first: dynamic record sizing), and every
	// record was a write(2) of its own: a 512 KB ReceiveResponse took 38,
	// each pushing a segment and waking the client (perf of the HTTPS stdout row: the daemon's TCP sends were
	// the largest cost after base64). mu: TLS may write from its reader
	// goroutine too (a TLS 1.3 KeyUpdate answer).
	mu     sync.Mutex
	corked bool
	wbuf   []byte
}

// corkSize bounds what a corked connection gathers before it writes: a
// 512 KB response goes out in three writes instead of 38 (TestSlotConnCork).
// One buffer per HTTPS response being written, next to the response's own
// envelope (up to MaxEnvelopeSize), returned to the pool at uncork.
const corkSize = 256 << 10

var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, corkSize); return &b }}

// cork starts gathering writes; uncork writes what is gathered and stops.
func (c *slotConn) cork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		return
	}
	c.corked = true
	c.wbuf = (*corkBufs.Get().(*[]byte))[:0]
}

func (c *slotConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return nil
	}
	err := c.flushCork()
	c.corked = false
	b := c.wbuf[:0]
	c.wbuf = nil
	corkBufs.Put(&b)
	return err
}

// flushCork writes what is gathered; c.mu held.
func (c *slotConn) flushCork() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return err
}

func (c *slotConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	if len(c.wbuf)+len(p) > cap(c.wbuf) {
		if err := c.flushCork(); err != nil {
			return 0, err
		}
		if len(p) >= cap(c.wbuf) {
			return c.Conn.Write(p)
		}
	}
	c.wbuf = append(c.wbuf, p...)
	return len(p), nil
}

func (c *slotConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

func (s *Server) refuse(reason string) {
	if s.d.Metrics != nil {
		s.d.Metrics.Refused.WithLabelValues(reason).Inc()
	}
}
