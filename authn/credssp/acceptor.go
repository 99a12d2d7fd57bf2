// Package credssp is the CredSSP acceptor (MS-CSSP): a TLS channel carried
// in `Authorization: CredSSP <base64>` tokens on one HTTP connection, an
// inner SPNEGO context (NTLM today; any authn.Context the caller supplies,
// so Kerberos plugs in), the public-key binding that ties the inner context
// to this TLS channel, and finally the client's password delegated to the
// server inside both.
//
// Conversation (C = client, S = this acceptor), each arrow one HTTP leg:
//
//	C->S TLS handshake records           S->C TLS records (possibly empty)
//	     ... until the handshake completes on both sides
//	C->S TSRequest{version v, negoToken}  S->C TSRequest{min(v,6), negoToken}
//	     ... until the inner context completes; its last leg also carries
//	C->S TSRequest{negoToken?, pubKeyAuth = Wrap(X), clientNonce (v>=5)}
//	S->C TSRequest{negoToken?, pubKeyAuth = Wrap(Y)}
//	C->S TSRequest{authInfo = Wrap(TSCredentials)}  -> the logon completes
//
// X = the server's SubjectPublicKey (v2-4) or SHA-256("CredSSP
// Client-To-Server Binding Hash\0" || nonce || key) (v5+); Y = the key with
// its first byte plus one (v2-4) or SHA-256("CredSSP Server-To-Client
// Binding Hash\0" || nonce || key). A client that authenticated the inner
// context through a relay terminating a different TLS key computes X over
// that key and is refused.
//
// States (each message is checked against the current one):
//
//	stTLS -> stNego -> stCreds -> stDone      any error -> stFailed
//
// The version is fixed by the client's first TSRequest and may not change
// afterwards (no downgrade in the middle); v5+ requires the 32-byte nonce
// with pubKeyAuth and v2-4 forbids it. On failure, versions 3, 4 and 6+
// get TSRequest{errorCode} (2 and 5 expect nothing), as Windows does.
//
// The delegated password is checked twice before the logon counts: the
// TSPasswordCreds user must be the inner context's user, and the password
// must verify against the account's credential sources (Config.Verify).
// It is then zeroed; with Kerberos configured, Config.SecondHop first turns
// it into a TGT for the shell (the second hop).
package credssp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/winrmd/winrmd/authn"
)

// Mechanism is the Principal.Mechanism and metrics label of a CredSSP logon.
const Mechanism = "credssp"

// NTSTATUS values sent in errorCode.
const (
	statusLogonFailure  = 0xC000006D // STATUS_LOGON_FAILURE
	statusInvalidParam  = 0xC000000D // STATUS_INVALID_PARAMETER
	statusAccessDenied  = 0xC0000022 // STATUS_ACCESS_DENIED
	statusBadBindings   = 0xC000035B // STATUS_BAD_BINDINGS
	statusNotSupported  = 0xC00000BB // STATUS_NOT_SUPPORTED
	statusWrongPassword = 0xC000006A // STATUS_WRONG_PASSWORD
)

// Errors (each wraps an authn sentinel).
var (
	ErrBinding      = fmt.Errorf("%w: credssp: pubKeyAuth does not bind this TLS key", authn.ErrChannelBinding)
	ErrUserMismatch = fmt.Errorf("%w: credssp: delegated credentials are for another user than the inner logon", authn.ErrBadCredentials)
	ErrVersion      = fmt.Errorf("%w: credssp: version", authn.ErrMalformed)
	ErrIdle         = errors.New("credssp: client went silent mid-handshake")
)

// IdleTimeout bounds the wait for the client's next leg; the acceptor's
// goroutine ends then (a dropped connection leaves nothing behind).
const IdleTimeout = 2 * time.Minute

// Config wires an Acceptor.
type Config struct {
	// Certificate is the TLS certificate of the inner channel.
	Certificate *tls.Certificate
	// Inner makes the inner SPNEGO context (NTLM, Kerberos).
	Inner func() authn.Context
	// Verify checks the delegated password for the inner principal's
	// account; ctx and ci are the current leg's. It must not keep password.
	Verify func(ctx context.Context, ci authn.ConnInfo, p authn.Principal, password string) error
	// SecondHop, when set (Kerberos is configured), turns the verified
	// password into a credential for the shell (a TGT in a ccache) or
	// returns nil; it must not keep the password. Without it the shell
	// gets no credential at all.
	SecondHop func(p authn.Principal, password string) *authn.Secret
}

type state int

const (
	stTLS state = iota
	stNego
	stCreds
	stDone
	stFailed
)

// Acceptor is one connection's CredSSP context (authn.Context).
type Acceptor struct {
	cfg    Config
	pubKey []byte // the certificate's subjectPublicKey bits

	mu      sync.Mutex
	conn    *memConn
	tls     *tls.Conn
	st      state // Step's view: stTLS (running), stDone, stFailed
	phase   state // the engine's position: stTLS, stNego, stCreds
	version int
	inner   authn.Context
	p       authn.Principal
	started bool
	results chan result
	sealer  *sealer
	// leg is the current Step's context and connection, written before
	// the leg's bytes reach the engine (which reads it only then).
	leg struct {
		ctx context.Context
		ci  authn.ConnInfo
	}
}

type result struct {
	out  []byte
	done bool
	err  error
}

// New returns an acceptor; cfg.Certificate and cfg.Inner are required.
func New(cfg Config) (*Acceptor, error) {
	if cfg.Certificate == nil || len(cfg.Certificate.Certificate) == 0 || cfg.Inner == nil || cfg.Verify == nil {
		return nil, errors.New("credssp: Certificate, Inner and Verify are required")
	}
	pk, err := SubjectPublicKey(cfg.Certificate.Certificate[0])
	if err != nil {
		return nil, err
	}
	return &Acceptor{cfg: cfg, pubKey: pk}, nil
}

// SubjectPublicKey returns the subjectPublicKey BIT STRING contents of a DER
// certificate (for RSA the DER RSAPublicKey): what pubKeyAuth binds.
func SubjectPublicKey(certDER []byte) ([]byte, error) {
	c, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("credssp: certificate: %w", err)
	}
	var spki struct {
		Algo      asn1.RawValue
		PublicKey asn1.BitString
	}
	if rest, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("credssp: certificate SubjectPublicKeyInfo: %v", err)
	}
	return spki.PublicKey.Bytes, nil
}

// ClientBinding and ServerBinding are the pubKeyAuth plaintexts (MS-CSSP
// 3.1.5): for v5+ the SHA-256 hashes with the nonce, for v2-4 the key
// itself and the key with its first byte incremented.
func ClientBinding(version int, nonce, key []byte) []byte {
	if version >= 5 {
		h := sha256.New()
		h.Write([]byte("CredSSP Client-To-Server Binding Hash\x00"))
		h.Write(nonce)
		h.Write(key)
		return h.Sum(nil)
	}
	return bytes.Clone(key)
}

func ServerBinding(version int, nonce, key []byte) []byte {
	if version >= 5 {
		h := sha256.New()
		h.Write([]byte("CredSSP Server-To-Client Binding Hash\x00"))
		h.Write(nonce)
		h.Write(key)
		return h.Sum(nil)
	}
	b := bytes.Clone(key)
	if len(b) > 0 {
		b[0]++
	}
	return b
}

// Step feeds one client token and returns the reply token. When done, the
// logon is complete: Principal and Sealer are ready. ctx bounds the leg's
// backend calls (the inner logon, the password check); the inner context
// is stepped with ci less its channel binding (CredSSP binds the inner TLS
// key instead, MS-CSSP 3.1.5).
func (a *Acceptor) Step(ctx context.Context, ci authn.ConnInfo, in []byte) ([]byte, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.leg.ctx, a.leg.ci = ctx, ci
	switch a.st {
	case stDone:
		return nil, false, authn.ErrContextComplete
	case stFailed:
		return nil, false, fmt.Errorf("credssp: context failed earlier: %w", authn.ErrBadCredentials)
	}
	if len(in) > MaxMessage+1024 {
		a.st = stFailed
		return nil, false, malformed("token of %d bytes", len(in))
	}
	if !a.started {
		a.started = true
		a.conn = newMemConn()
		a.results = make(chan result, 1)
		a.tls = tls.Server(a.conn, &tls.Config{
			Certificates: []tls.Certificate{*a.cfg.Certificate},
			MinVersion:   tls.VersionTLS12,
			// TLS 1.2 only: under 1.3 the server's handshake ends on the
			// client's Finished with nothing to send back, and an empty
			// "CredSSP" answer is not a token requests-credssp can read
			// (SChannel fills that leg with a session ticket; crypto/tls
			// sends its tickets earlier).
			MaxVersion: tls.VersionTLS12,
			// AEAD suites only: their WinRM trailer size is fixed (6.4).
			CipherSuites: []uint16{
				tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
				tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
			},
			// Session tickets would add records after the handshake that
			// no leg carries.
			SessionTicketsDisabled: true,
		})
		a.conn.results = a.results
		a.conn.in = bytes.Clone(in)
		go a.run()
	} else {
		a.conn.legs <- bytes.Clone(in)
	}
	r := <-a.results
	if r.err != nil {
		a.st = stFailed
		return r.out, false, r.err
	}
	if r.done {
		a.st = stDone
	}
	return r.out, r.done, nil
}

// run is the acceptor's conversation, straight-line; every read of the TLS
// connection that needs bytes the client has not sent yet hands the output
// so far back to Step and waits for the next leg (memConn).
func (a *Acceptor) run() {
	err := a.converse()
	if err != nil {
		out := a.conn.take()
		if a.version == 3 || a.version == 4 || a.version >= 6 {
			if code, ok := ntstatus(err); ok {
				c := code
				msg := (&TSRequest{Version: min(a.version, MaxVersion), ErrorCode: &c}).Marshal()
				if _, werr := a.tls.Write(msg); werr == nil {
					out = append(out, a.conn.take()...)
				}
			}
		}
		a.conn.engineDone() // before Step can return: the sealer never waits
		a.results <- result{out: out, err: err}
		return
	}
	// The completing leg carries the client's real request (on HTTPS
	// without encryption, its SOAP body), so its answer may be a 500
	// fault; requests-credssp then looks for a CredSSP token before it
	// notices it is finished. A plain (unwrapped) TSRequest{version} marks
	// completion: wrapping it would advance the TLS sequence the client
	// never reads, and break message encryption.
	a.conn.take()
	a.conn.engineDone()
	a.results <- result{out: (&TSRequest{Version: a.replyVersion()}).Marshal(), done: true}
}

func ntstatus(err error) (uint32, bool) {
	switch {
	case errors.Is(err, ErrIdle):
		return 0, false
	case errors.Is(err, authn.ErrChannelBinding):
		return statusBadBindings, true
	case errors.Is(err, authn.ErrUnsupported):
		return statusNotSupported, true
	case errors.Is(err, authn.ErrMalformed):
		return statusInvalidParam, true
	case errors.Is(err, authn.ErrNotAuthorized):
		return statusAccessDenied, true
	}
	return statusLogonFailure, true
}

func (a *Acceptor) converse() error {
	if err := a.tls.Handshake(); err != nil {
		if errors.Is(err, ErrIdle) {
			return err
		}
		return malformed("TLS handshake: %v", err)
	}
	a.phase = stNego
	a.inner = a.cfg.Inner()
	if a.inner == nil {
		return fmt.Errorf("credssp: no inner mechanism: %w", authn.ErrUnsupported)
	}
	var (
		req *TSRequest
		err error
	)
	for {
		req, err = a.readRequest()
		if err != nil {
			return err
		}
		if req.AuthInfo != nil || req.ErrorCode != nil {
			return malformed("TSRequest with authInfo or errorCode during negotiation")
		}
		var out []byte
		done := false
		if req.NegoToken != nil {
			out, done, err = a.inner.Step(a.leg.ctx, authn.ConnInfo{Remote: a.leg.ci.Remote, TLS: a.leg.ci.TLS}, req.NegoToken)
			if err != nil {
				return fmt.Errorf("credssp: inner logon: %w", err)
			}
		} else if req.PubKeyAuth == nil {
			return malformed("TSRequest with neither negoToken nor pubKeyAuth")
		}
		if req.PubKeyAuth == nil {
			if done {
				// The inner context finished without the client binding
				// it: that client would next send credentials unbound.
				return malformed("inner context complete without pubKeyAuth")
			}
			if err := a.writeRequest(&TSRequest{Version: a.replyVersion(), NegoToken: orEmpty(out)}); err != nil {
				return err
			}
			continue
		}
		// pubKeyAuth: the inner context must be complete now.
		if !done && req.NegoToken != nil {
			return malformed("pubKeyAuth before the inner context completed")
		}
		if req.NegoToken == nil && !a.innerDone() {
			return malformed("pubKeyAuth before the inner context completed")
		}
		if err := a.checkBinding(req); err != nil {
			return err
		}
		s := a.inner.Sealer()
		sig, data, err := s.Seal(ServerBinding(a.version, req.ClientNonce, a.pubKey))
		if err != nil {
			return fmt.Errorf("credssp: sealing pubKeyAuth: %w", err)
		}
		reply := &TSRequest{Version: a.replyVersion(), PubKeyAuth: append(sig, data...)}
		if len(out) > 0 {
			reply.NegoToken = out
		}
		if err := a.writeRequest(reply); err != nil {
			return err
		}
		break
	}
	a.phase = stCreds
	req, err = a.readRequest()
	if err != nil {
		return err
	}
	if req.AuthInfo == nil || req.NegoToken != nil || req.PubKeyAuth != nil {
		return malformed("credentials TSRequest without authInfo, or with other fields")
	}
	plain, err := a.unseal(req.AuthInfo)
	if err != nil {
		return fmt.Errorf("credssp: authInfo: %w", err)
	}
	defer clear(plain)
	creds, err := ParseTSCredentials(plain)
	if err != nil {
		return err
	}
	defer creds.Zero()
	p := a.inner.Principal()
	if !sameUser(p, creds) {
		return fmt.Errorf("%w (inner %q, delegated %q)", ErrUserMismatch, qualified(p.Name, p.Domain), qualified(creds.User, creds.Domain))
	}
	pw := make([]uint16, len(creds.Password)/2)
	for i := range pw {
		pw[i] = uint16(creds.Password[2*i]) | uint16(creds.Password[2*i+1])<<8
	}
	password := decodeUTF16(pw)
	clear(pw)
	err = a.cfg.Verify(a.leg.ctx, a.leg.ci, p, password)
	var deleg *authn.Secret
	if err == nil && a.cfg.SecondHop != nil {
		deleg = a.cfg.SecondHop(p, password)
	}
	// Go strings cannot be zeroed: the decoded copy is dropped here, and
	// the bytes as received (creds.Password, the decrypted authInfo) are
	// zeroed by the deferred calls.
	password = ""
	if err != nil {
		return fmt.Errorf("credssp: delegated password for %q: %w", qualified(p.Name, p.Domain), err)
	}
	a.p = authn.Principal{Name: p.Name, Domain: p.Domain, Mechanism: Mechanism, SIDs: p.SIDs, Client: p.Client, Delegated: deleg,
		Verifier: p.Verifier, Service: p.Service, Binding: p.Binding}
	a.sealer = &sealer{a: a}
	return nil
}

func decodeUTF16(u []uint16) string {
	var sb strings.Builder
	for _, r := range utf16.Decode(u) {
		sb.WriteRune(r)
	}
	return sb.String()
}

func orEmpty(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// innerDone reports whether the inner context completed on an earlier leg
// (it has a principal and a sealer).
func (a *Acceptor) innerDone() bool { return a.inner.Sealer() != nil && a.inner.Principal().Name != "" }

func (a *Acceptor) replyVersion() int { return min(a.version, MaxVersion) }

func (a *Acceptor) checkBinding(req *TSRequest) error {
	if a.version >= 5 && req.ClientNonce == nil {
		return fmt.Errorf("%w %d: pubKeyAuth without clientNonce", ErrVersion, a.version)
	}
	if a.version < 5 && req.ClientNonce != nil {
		return fmt.Errorf("%w %d: clientNonce before version 5", ErrVersion, a.version)
	}
	got, err := a.unseal(req.PubKeyAuth)
	if err != nil {
		return fmt.Errorf("credssp: pubKeyAuth: %w", err)
	}
	want := ClientBinding(a.version, req.ClientNonce, a.pubKey)
	if !constantTimeEqual(got, want) {
		return ErrBinding
	}
	return nil
}

func (a *Acceptor) unseal(b []byte) ([]byte, error) {
	s := a.inner.Sealer()
	if s == nil {
		return nil, fmt.Errorf("inner context has no message protection: %w", authn.ErrUnsupported)
	}
	// NTLM: a 16-byte signature then the ciphertext; Kerberos: the RFC
	// 4121 token whose header says its own length. The inner sealer takes
	// (sig, data): split at the mechanism's signature size.
	n := sigLen(a.inner, b)
	if n < 0 || n > len(b) {
		return nil, malformed("sealed field of %d bytes", len(b))
	}
	return s.Unseal(b[:n], b[n:])
}

// sigLen is where the inner mechanism's wrap token splits into signature
// and data: NTLM's signature is 16 bytes (MS-NLMP 2.2.2.9). A mechanism
// with another layout says so by implementing interface{ WrapSigLen([]byte) int }.
func sigLen(c authn.Context, b []byte) int {
	if w, ok := c.(interface{ WrapSigLen([]byte) int }); ok {
		return w.WrapSigLen(b)
	}
	return 16
}

func (a *Acceptor) readRequest() (*TSRequest, error) {
	b, err := readDER(a.tls, a.conn)
	if err != nil {
		return nil, err
	}
	req, err := ParseTSRequest(b)
	if err != nil {
		return nil, err
	}
	if req.ErrorCode != nil {
		return nil, fmt.Errorf("credssp: client sent errorCode %#x: %w", *req.ErrorCode, authn.ErrBadCredentials)
	}
	if a.version == 0 {
		if req.Version < MinVersion {
			return nil, fmt.Errorf("%w %d below %d", ErrVersion, req.Version, MinVersion)
		}
		a.version = req.Version
	} else if req.Version != a.version {
		return nil, fmt.Errorf("%w changed from %d to %d mid-conversation", ErrVersion, a.version, req.Version)
	}
	return req, nil
}

func (a *Acceptor) writeRequest(r *TSRequest) error {
	_, err := a.tls.Write(r.Marshal())
	return err
}

// readDER reads exactly one DER element (a TSRequest) from r, bounded. It
// only frames the stream: the tag, and the length that says how many bytes
// to read. Everything else (minimal lengths, the structure) is checked by
// ParseTSRequest on the whole element.
func readDER(r io.Reader, mc *memConn) ([]byte, error) {
	hdr := make([]byte, 2, 6)
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return nil, readErr(err)
	}
	// From here the message must be complete within the leg that began
	// it: a client sends each TSRequest whole, so running out of input
	// mid-message is a truncated TSRequest, not a reason to wait.
	if mc != nil {
		mc.setWhole(true)
		defer mc.setWhole(false)
	}
	if _, err := io.ReadFull(r, hdr[1:2]); err != nil {
		return nil, readErr(err)
	}
	if hdr[0] != 0x30 { // SEQUENCE
		return nil, malformed("TSRequest: tag %#x", hdr[0])
	}
	l := int(hdr[1])
	if l&0x80 != 0 {
		n := l & 0x7f
		if n == 0 || n > 3 {
			return nil, malformed("TSRequest length of %d octets", n)
		}
		ext := make([]byte, n)
		if _, err := io.ReadFull(r, ext); err != nil {
			return nil, readErr(err)
		}
		hdr = append(hdr, ext...)
		l = 0
		for _, c := range ext {
			l = l<<8 | int(c)
		}
	}
	if l+len(hdr) > MaxMessage {
		return nil, malformed("TSRequest of %d bytes (limit %d)", l+len(hdr), MaxMessage)
	}
	body := make([]byte, l)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, readErr(err)
	}
	return append(hdr, body...), nil
}

func readErr(err error) error {
	if errors.Is(err, ErrIdle) {
		return err
	}
	return malformed("reading TSRequest: %v", err)
}

// Principal is the inner context's principal, once the logon completed.
func (a *Acceptor) Principal() authn.Principal {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st != stDone {
		// Before completion: the inner name, for failure logs only.
		if a.inner != nil {
			p := a.inner.Principal()
			return authn.Principal{Name: p.Name, Domain: p.Domain, Mechanism: Mechanism}
		}
		return authn.Principal{}
	}
	return a.p
}

// Sealer protects WinRM messages with the CredSSP TLS channel.
func (a *Acceptor) Sealer() authn.Sealer {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st != stDone {
		return nil
	}
	return a.sealer
}

// Close ends the acceptor's goroutine if it is waiting for the client.
func (a *Acceptor) Close() error {
	if a.conn != nil {
		a.conn.Close()
	}
	return nil
}

func sameUser(p authn.Principal, c *PasswordCreds) bool {
	a := authn.MapName(p.Name, p.Domain)
	b := authn.MapName(c.User, c.Domain)
	if a == "" || b == "" || !strings.EqualFold(a, b) {
		return false
	}
	// A domain on both sides must agree too (NTLM "CORP" vs delegated
	// "OTHER" is another account with the same short name).
	da, db := domainOf(p.Name, p.Domain), domainOf(c.User, c.Domain)
	return da == "" || db == "" || strings.EqualFold(da, db) || isLocalDomain(da) || isLocalDomain(db)
}

func domainOf(name, domain string) string {
	if i := strings.IndexByte(name, '\\'); i >= 0 {
		return name[:i]
	}
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		return name[i+1:]
	}
	return domain
}

// isLocalDomain: "." and the empty domain name the machine itself.
func isLocalDomain(d string) bool { return d == "." || d == "" }

func qualified(name, domain string) string {
	if domain == "" || strings.ContainsAny(name, `\@`) {
		return name
	}
	return domain + `\` + name
}

func constantTimeEqual(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := range a {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// ---- the in-memory connection under crypto/tls -----------------------

// memConn is the byte pipe between Step and crypto/tls. During the
// handshake (the engine goroutine runs converse) a Read with no buffered
// input hands the written output back to Step and blocks for the next leg;
// afterwards (the sealer) a Read with no input fails at once.
type memConn struct {
	mu      sync.Mutex
	in      []byte
	out     bytes.Buffer
	legs    chan []byte
	closed  chan struct{}
	once    sync.Once
	running bool
	whole   bool // a message is being read: no waiting for another leg
	results chan result
}

func (c *memConn) setWhole(v bool) {
	c.mu.Lock()
	c.whole = v
	c.mu.Unlock()
}

var errTruncated = malformed("TSRequest truncated: its leg ended mid-message")

func newMemConn() *memConn {
	return &memConn{legs: make(chan []byte, 1), closed: make(chan struct{}), running: true}
}

func (c *memConn) take() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := bytes.Clone(c.out.Bytes())
	c.out.Reset()
	return b
}

func (c *memConn) engineDone() {
	c.mu.Lock()
	c.running = false
	c.mu.Unlock()
}

var errWouldBlock = &wouldBlock{}

type wouldBlock struct{}

func (*wouldBlock) Error() string   { return "credssp: no more input" }
func (*wouldBlock) Timeout() bool   { return true }
func (*wouldBlock) Temporary() bool { return true }

func (c *memConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.in) == 0 {
		if !c.running || c.results == nil {
			c.mu.Unlock()
			return 0, errWouldBlock
		}
		if c.whole {
			c.mu.Unlock()
			return 0, errTruncated
		}
		out := bytes.Clone(c.out.Bytes())
		c.out.Reset()
		c.mu.Unlock()
		c.results <- result{out: out}
		t := time.NewTimer(IdleTimeout)
		defer t.Stop()
		select {
		case b := <-c.legs:
			c.mu.Lock()
			c.in = append(c.in, b...)
		case <-c.closed:
			return 0, ErrIdle
		case <-t.C:
			return 0, ErrIdle
		}
	}
	n := copy(p, c.in)
	c.in = c.in[n:]
	c.mu.Unlock()
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
func (memAddr) Network() string                     { return "credssp" }
func (memAddr) String() string                      { return "credssp" }

type memAddr struct{}
