// Package credssptest is a client side of CredSSP (MS-CSSP) for tests and
// for the benchmark's WinRM client (cmd/winrmd-bench) only: the initiator
// of the conversation that package credssp accepts, leg by leg as HTTP
// carries it, and afterwards WinRM message encryption with the CredSSP TLS
// channel (PROTOCOL 6.4).
//
// The inner mechanism is NTLM from authn/ntlm/ntlmtest. Knobs let a test
// change the client in one place (another TSRequest version mid-way, a
// relayed key, other delegated credentials, no nonce) to see the acceptor
// refuse it.
//
// Never use it outside tests and the bench: it does not verify the
// server's certificate beyond the public-key binding of an NTLM logon, and
// it makes no effort to keep the password out of memory.
package credssptest

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/winrmd/winrmd/authn/credssp"
	"github.com/winrmd/winrmd/authn/ntlm/ntlmtest"
)

// Initiator is one client CredSSP context. Fill in the account, then call
// Step with nil and with each server token until it reports done; after
// that Seal and Unseal protect WinRM messages (authn.Sealer's shape).
type Initiator struct {
	User, Domain, Password string
	// Version is the TSRequest version sent; 6 when 0.
	Version int
	// TLS, when set, is the inner TLS client's configuration (the
	// default: TLS 1.2, certificate not verified, as the binding checks
	// the key).
	TLS *tls.Config

	// Deviations for refusal tests: the zero values make a correct client.
	LaterVersion  int    // version of the pubKeyAuth TSRequest (0: Version)
	OtherKey      bool   // bind a key other than the server's (a relay)
	DelegUser     string // the TSCredentials user ("": User)
	DelegPassword string // the TSCredentials password ("": Password)
	NoNonce       bool   // no clientNonce with pubKeyAuth at v5+

	started, done bool
	failed        error // the conversation failed, or Close ended it
	pipe          *legPipe
	tc            *tls.Conn
	results       chan legResult
}

type legResult struct {
	out  []byte
	done bool
	err  error
}

// ErrServer is wrapped by the error of a conversation the server ended
// with TSRequest{errorCode}.
var ErrServer = errors.New("credssptest: the server sent errorCode")

// Step takes the server's last token (nil to begin) and returns the next
// one to send. done means the returned token is the last: once it is
// sent the logon is complete (the server answers it with 200).
func (i *Initiator) Step(in []byte) (out []byte, done bool, err error) {
	switch {
	case i.failed != nil:
		return nil, false, i.failed
	case i.done:
		return nil, false, errors.New("credssptest: the conversation is complete")
	case !i.started:
		i.started = true
		i.pipe = &legPipe{answers: make(chan []byte, 1), live: true}
		i.results = make(chan legResult, 1)
		i.pipe.results = i.results
		cfg := i.TLS
		if cfg == nil {
			cfg = &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12} // #nosec the key is bound by pubKeyAuth
		}
		i.tc = tls.Client(i.pipe, cfg)
		go i.run()
	default:
		if len(in) == 0 {
			return nil, false, errors.New("credssptest: empty server token mid-conversation")
		}
		i.pipe.answers <- bytes.Clone(in)
	}
	r := <-i.results
	if r.err != nil {
		i.failed = r.err
		return r.out, false, r.err
	}
	i.done = r.done
	return r.out, r.done, nil
}

// Close ends a conversation the server broke off (the goroutine waiting
// for its answer returns).
func (i *Initiator) Close() {
	if i.pipe != nil {
		i.pipe.close()
	}
	if i.failed == nil && !i.done {
		i.failed = errors.New("credssptest: closed mid-conversation")
	}
}

// run is the conversation, straight-line; each read that needs the
// server's next leg hands the output so far to Step (legPipe).
func (i *Initiator) run() {
	err := i.converse()
	out := i.pipe.drain()
	i.results <- legResult{out: out, done: err == nil, err: err}
}

func (i *Initiator) version() int {
	if i.Version == 0 {
		return 6
	}
	return i.Version
}

func (i *Initiator) converse() error {
	if err := i.tc.Handshake(); err != nil {
		return fmt.Errorf("credssptest: TLS: %w", err)
	}
	key, err := credssp.SubjectPublicKey(i.tc.ConnectionState().PeerCertificates[0].Raw)
	if err != nil {
		return err
	}
	if i.OtherKey {
		key = bytes.Clone(key)
		key[len(key)-3] ^= 1
	}
	v := i.version()
	nc := &ntlmtest.Client{User: i.User, Domain: i.Domain, Password: i.Password}
	challenge, err := i.exchange(&credssp.TSRequest{Version: v, NegoToken: nc.Negotiate()})
	if err != nil {
		return err
	}
	auth, err := nc.Authenticate(challenge.NegoToken)
	if err != nil {
		return err
	}
	var nonce []byte
	if v >= 5 && !i.NoNonce {
		nonce = make([]byte, 32)
		if _, err := rand.Read(nonce); err != nil {
			return err
		}
	}
	sig, data := nc.Session.Seal(credssp.ClientBinding(v, nonce, key))
	pv := v
	if i.LaterVersion != 0 {
		pv = i.LaterVersion
	}
	rep, err := i.exchange(&credssp.TSRequest{Version: pv, NegoToken: auth, PubKeyAuth: append(sig, data...), ClientNonce: nonce})
	if err != nil {
		return err
	}
	if len(rep.PubKeyAuth) < 16 {
		return errors.New("credssptest: no server pubKeyAuth")
	}
	got, err := nc.Session.Unseal(rep.PubKeyAuth[:16], rep.PubKeyAuth[16:])
	if err != nil || !bytes.Equal(got, credssp.ServerBinding(v, nonce, key)) {
		return errors.New("credssptest: the server's pubKeyAuth does not bind its key")
	}
	user, pw := i.User, i.Password
	if i.DelegUser != "" {
		user = i.DelegUser
	}
	if i.DelegPassword != "" {
		pw = i.DelegPassword
	}
	pw16 := ntlmtest.UTF16(pw)
	creds := credssp.MarshalTSCredentials(i.Domain, user, pw16)
	sig, data = nc.Session.Seal(creds)
	clear(pw16)
	clear(creds)
	_, err = i.tc.Write((&credssp.TSRequest{Version: v, AuthInfo: append(sig, data...)}).Marshal())
	return err
}

// exchange writes a TSRequest and reads the server's answer.
func (i *Initiator) exchange(r *credssp.TSRequest) (*credssp.TSRequest, error) {
	if _, err := i.tc.Write(r.Marshal()); err != nil {
		return nil, err
	}
	b, err := readElement(i.tc)
	if err != nil {
		return nil, err
	}
	rep, err := credssp.ParseTSRequest(b)
	if err != nil {
		return nil, err
	}
	if rep.ErrorCode != nil {
		return nil, fmt.Errorf("%w %#x", ErrServer, *rep.ErrorCode)
	}
	return rep, nil
}

// readElement reads one DER SEQUENCE (a whole TSRequest) from r.
func readElement(r io.Reader) ([]byte, error) {
	b := make([]byte, 2, 64)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	if b[0] != 0x30 {
		return nil, fmt.Errorf("credssptest: TSRequest tag %#x", b[0])
	}
	size := int(b[1])
	if size >= 0x80 {
		ext := make([]byte, size&0x7f)
		if len(ext) == 0 || len(ext) > 3 {
			return nil, fmt.Errorf("credssptest: TSRequest length form %#x", b[1])
		}
		if _, err := io.ReadFull(r, ext); err != nil {
			return nil, err
		}
		b = append(b, ext...)
		size = 0
		for _, x := range ext {
			size = size<<8 | int(x)
		}
	}
	msg := make([]byte, len(b)+size)
	copy(msg, b)
	_, err := io.ReadFull(r, msg[len(b):])
	return msg, err
}

// trailer is the signature slot's share of a sealed record (PROTOCOL 6.4):
// AES-GCM's 16 under TLS 1.2, 17 under TLS 1.3.
func (i *Initiator) trailer() int {
	if i.tc.ConnectionState().Version == tls.VersionTLS13 {
		return 17
	}
	return 16
}

// Seal encrypts one WinRM message (or one 16 KiB chunk of it) as the TLS
// records of the CredSSP channel, split into signature and data.
func (i *Initiator) Seal(plain []byte) (sig, data []byte, err error) {
	if !i.done {
		return nil, nil, errors.New("credssptest: seal before the logon completed")
	}
	if _, err := i.tc.Write(plain); err != nil {
		return nil, nil, err
	}
	rec := i.pipe.drain()
	n := min(i.trailer(), len(rec))
	return rec[:n:n], rec[n:], nil
}

// Unseal decrypts what Seal made on the other side: signature and data
// together are whole TLS records.
func (i *Initiator) Unseal(sig, data []byte) ([]byte, error) {
	if !i.done {
		return nil, errors.New("credssptest: unseal before the logon completed")
	}
	i.pipe.feed(sig, data)
	out := make([]byte, 0, len(data))
	for {
		if len(out) == cap(out) {
			out = append(out, 0)[:len(out)]
		}
		n, err := i.tc.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if errors.Is(err, errDrained) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("credssptest: unseal: %w", err)
		}
	}
}

// legPipe is the connection under the TLS client. While the conversation
// runs, a read with nothing buffered ends the leg: what was written goes
// out through Step, and the read waits for the server's answer. Once it
// is over, such a read fails at once with errDrained, which crypto/tls
// treats as temporary, so Unseal can stop at the end of its records.
type legPipe struct {
	mu      sync.Mutex
	in, out []byte
	live    bool
	answers chan []byte
	results chan legResult
	once    sync.Once
}

var errDrained net.Error = drained{}

type drained struct{}

func (drained) Error() string   { return "credssptest: no more input" }
func (drained) Timeout() bool   { return true }
func (drained) Temporary() bool { return true }

func (p *legPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.in) == 0 {
		if !p.live {
			return 0, errDrained
		}
		leg := p.out
		p.out = nil
		p.mu.Unlock()
		p.results <- legResult{out: leg}
		in, ok := <-p.answers
		p.mu.Lock()
		if !ok {
			return 0, net.ErrClosed
		}
		p.in = in
	}
	n := copy(b, p.in)
	p.in = p.in[n:]
	return n, nil
}

func (p *legPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, b...)
	return len(b), nil
}

// drain takes what was written; the first call (the conversation's end)
// also switches reads to errDrained.
func (p *legPipe) drain() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live = false
	b := p.out
	p.out = nil
	return b
}

// feed queues a sealed message for the TLS client to read.
func (p *legPipe) feed(sig, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.in = append(append(p.in[:0:0], sig...), data...)
}

func (p *legPipe) close() { p.once.Do(func() { close(p.answers) }) }

func (p *legPipe) Close() error                     { return nil }
func (p *legPipe) LocalAddr() net.Addr              { return pipeAddr{} }
func (p *legPipe) RemoteAddr() net.Addr             { return pipeAddr{} }
func (p *legPipe) SetDeadline(time.Time) error      { return nil }
func (p *legPipe) SetReadDeadline(time.Time) error  { return nil }
func (p *legPipe) SetWriteDeadline(time.Time) error { return nil }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "credssp" }
func (pipeAddr) String() string  { return "credssp" }
