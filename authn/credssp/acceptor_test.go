package credssp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
	"github.com/winrmd/winrmd/authn/ntlm/ntlmtest"
)

// In-process conversations: a Go TLS client and the NTLM test client
// (raw NTLM as the inner mechanism, which also shows the inner context is
// pluggable) against the acceptor, leg by leg as HTTP would carry them.

type hashes map[string]string

func (h hashes) NTHash(user string) ([]byte, error) {
	p, ok := h[user]
	if !ok {
		return nil, authn.ErrUnknownAccount
	}
	return ntlm.NTHash(p), nil
}

var accounts = hashes{"alice": "Alice-pw-1", "bob": "Bob-pw-2"}

var (
	certOnce sync.Once
	cert     *tls.Certificate
)

// testCert is one throwaway self-signed RSA certificate for every test.
func testCert(t *testing.T) *tls.Certificate {
	t.Helper()
	certOnce.Do(func() {
		c, err := tls.X509KeyPair(selfSignedPEM(t))
		if err != nil {
			t.Fatal(err)
		}
		cert = &c
	})
	return cert
}

func newTestAcceptor(t *testing.T, verified *[]string) *Acceptor {
	t.Helper()
	a, err := New(Config{
		Certificate: testCert(t),
		Inner: func() authn.Context {
			return ntlm.NewAcceptor(ntlm.Config{Verifier: ntlm.NewNTHashVerifier(accounts), NetBIOSComputer: "WINRMD", DNSComputer: "winrmd.test"})
		},
		Verify: func(_ context.Context, _ authn.ConnInfo, p authn.Principal, password string) error {
			if verified != nil {
				*verified = append(*verified, p.Name)
			}
			if accounts[authn.MapName(p.Name, p.Domain)] != password {
				return authn.ErrBadCredentials
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// legConn is the client's side: writes accumulate until the client reads,
// then they go to the server as one leg and the reply is what it reads.
type legConn struct {
	mu     sync.Mutex
	in     []byte
	out    bytes.Buffer
	toSrv  chan []byte
	fromSv chan []byte
}

func (c *legConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.in) == 0 {
		leg := bytes.Clone(c.out.Bytes())
		c.out.Reset()
		c.mu.Unlock()
		c.toSrv <- leg
		r, ok := <-c.fromSv
		if !ok {
			return 0, net.ErrClosed
		}
		c.mu.Lock()
		c.in = r
	}
	n := copy(p, c.in)
	c.in = c.in[n:]
	c.mu.Unlock()
	return n, nil
}

func (c *legConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

// flush sends what was written as a final leg (no reply read).
func (c *legConn) flush() {
	c.mu.Lock()
	leg := bytes.Clone(c.out.Bytes())
	c.out.Reset()
	c.mu.Unlock()
	c.toSrv <- leg
}

func (c *legConn) Close() error                     { return nil }
func (c *legConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *legConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *legConn) SetDeadline(time.Time) error      { return nil }
func (c *legConn) SetReadDeadline(time.Time) error  { return nil }
func (c *legConn) SetWriteDeadline(time.Time) error { return nil }

// attack changes one thing in the client.
type attack struct {
	version       int    // 0: 6
	laterVersion  int    // version of the pubKeyAuth TSRequest (0: same)
	otherKey      bool   // bind another key (a relay)
	delegUser     string // TSCredentials user ("": the inner user)
	delegPassword string // TSCredentials password ("": the right one)
	noNonce       bool
}

type outcome struct {
	done    bool
	err     error
	lastOut []byte
	p       authn.Principal
	client  *tls.Conn
	lc      *legConn
}

// converse runs a whole conversation as alice.
func converse(t *testing.T, a *Acceptor, at attack) outcome {
	t.Helper()
	lc := &legConn{toSrv: make(chan []byte), fromSv: make(chan []byte)}
	tc := tls.Client(lc, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	v := at.version
	if v == 0 {
		v = 6
	}
	clientErr := make(chan error, 1)
	go func() {
		clientErr <- func() error {
			if err := tc.Handshake(); err != nil {
				return err
			}
			key, err := SubjectPublicKey(tc.ConnectionState().PeerCertificates[0].Raw)
			if err != nil {
				return err
			}
			if at.otherKey {
				key = append([]byte{}, key...)
				key[len(key)-3] ^= 1
			}
			nc := &ntlmtest.Client{User: "alice", Password: accounts["alice"]}
			send := func(r *TSRequest) (*TSRequest, error) {
				if _, err := tc.Write(r.Marshal()); err != nil {
					return nil, err
				}
				b, err := readDER(tc, nil)
				if err != nil {
					return nil, err
				}
				return ParseTSRequest(b)
			}
			ch, err := send(&TSRequest{Version: v, NegoToken: nc.Negotiate()})
			if err != nil {
				return err
			}
			auth, err := nc.Authenticate(ch.NegoToken)
			if err != nil {
				return err
			}
			var nonce []byte
			if v >= 5 && !at.noNonce {
				nonce = make([]byte, 32)
				rand.Read(nonce)
			}
			sig, data := nc.Session.Seal(ClientBinding(v, nonce, key))
			pv := v
			if at.laterVersion != 0 {
				pv = at.laterVersion
			}
			rep, err := send(&TSRequest{Version: pv, NegoToken: auth, PubKeyAuth: append(sig, data...), ClientNonce: nonce})
			if err != nil {
				return err
			}
			if rep.ErrorCode != nil {
				return errors.New("server sent errorCode")
			}
			got, err := nc.Session.Unseal(rep.PubKeyAuth[:16], rep.PubKeyAuth[16:])
			if err != nil || !bytes.Equal(got, ServerBinding(v, nonce, key)) {
				return errors.New("server pubKeyAuth does not bind the key")
			}
			user, pw := "alice", accounts["alice"]
			if at.delegUser != "" {
				user = at.delegUser
			}
			if at.delegPassword != "" {
				pw = at.delegPassword
			}
			sig, data = nc.Session.Seal(MarshalTSCredentials("", user, utf16LE(pw)))
			if _, err := tc.Write((&TSRequest{Version: v, AuthInfo: append(sig, data...)}).Marshal()); err != nil {
				return err
			}
			lc.flush()
			return nil
		}()
		close(lc.toSrv)
	}()
	var o outcome
	o.client, o.lc = tc, lc
	for leg := range lc.toSrv {
		out, done, err := a.Step(context.Background(), authn.ConnInfo{}, leg)
		o.lastOut = out
		if err != nil || done {
			o.done, o.err = done, err
			close(lc.fromSv)
			for range lc.toSrv {
			}
			break
		}
		lc.fromSv <- out
	}
	<-clientErr
	o.p = a.Principal()
	return o
}

func TestConversation(t *testing.T) {
	for _, v := range []int{2, 3, 4, 5, 6} {
		var verified []string
		a := newTestAcceptor(t, &verified)
		o := converse(t, a, attack{version: v})
		if o.err != nil || !o.done {
			t.Fatalf("v%d: %v done=%v", v, o.err, o.done)
		}
		if o.p.Name != "alice" || o.p.Mechanism != Mechanism || len(verified) != 1 {
			t.Fatalf("v%d: principal %+v, verified %v", v, o.p, verified)
		}
		// Message protection both ways over the CredSSP TLS channel.
		s := a.Sealer()
		if _, err := o.client.Write([]byte("request body")); err != nil {
			t.Fatal(err)
		}
		o.lc.mu.Lock()
		rec := bytes.Clone(o.lc.out.Bytes())
		o.lc.out.Reset()
		o.lc.mu.Unlock()
		plain, err := s.Unseal(rec[:16], rec[16:])
		if err != nil || string(plain) != "request body" {
			t.Fatalf("v%d unseal: %q %v", v, plain, err)
		}
		sig, data, err := s.Seal([]byte("response body"))
		if err != nil || len(sig) != 16 {
			t.Fatalf("v%d seal: %d %v", v, len(sig), err)
		}
		o.lc.mu.Lock()
		o.lc.in = append(append([]byte{}, sig...), data...)
		o.lc.mu.Unlock()
		buf := make([]byte, 100)
		n, err := o.client.Read(buf)
		if err != nil || string(buf[:n]) != "response body" {
			t.Fatalf("v%d client read: %q %v", v, buf[:n], err)
		}
		// A truncated record is refused, not waited for.
		if _, err := s.Unseal(rec[:10], nil); !errors.Is(err, authn.ErrMalformed) {
			t.Errorf("truncated record: %v", err)
		}
	}
}

func TestConversationRefusals(t *testing.T) {
	for _, c := range []struct {
		name string
		at   attack
		want error
	}{
		{"relay to another key", attack{otherKey: true}, authn.ErrChannelBinding},
		{"relay to another key v2", attack{version: 2, otherKey: true}, authn.ErrChannelBinding},
		{"version changed", attack{laterVersion: 2}, authn.ErrMalformed},
		{"v6 without nonce", attack{noNonce: true}, authn.ErrMalformed},
		{"another delegated user", attack{delegUser: "bob", delegPassword: accounts["bob"]}, ErrUserMismatch},
		{"wrong delegated password", attack{delegPassword: "not-it"}, authn.ErrBadCredentials},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newTestAcceptor(t, nil)
			o := converse(t, a, c.at)
			if o.done || !errors.Is(o.err, c.want) {
				t.Fatalf("done=%v err=%v, want %v", o.done, o.err, c.want)
			}
			if a.Sealer() != nil || a.Principal().Delegated != nil {
				t.Error("a failed context has a sealer or credentials")
			}
			if c.at.delegPassword != "" && bytes.Contains([]byte(o.err.Error()), []byte(c.at.delegPassword)) {
				t.Error("the error names the password")
			}
			// v3, v4 and v6 get TSRequest{errorCode} inside TLS; v2 and v5
			// expect nothing.
			if v := c.at.version; v == 2 || v == 5 {
				if len(o.lastOut) != 0 {
					t.Errorf("a v%d client got an errorCode token", v)
				}
			} else if len(o.lastOut) == 0 {
				t.Error("no errorCode token for a v6 client")
			}
			if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, []byte{1}); err == nil {
				t.Error("a failed context stepped again")
			}
		})
	}
}

// A client that goes away mid-handshake leaves no goroutine once the
// connection closes (Close), nor holds one forever (IdleTimeout).
func TestCloseEndsTheConversation(t *testing.T) {
	base := runtime.NumGoroutine()
	for i := 0; i < 20; i++ {
		a := newTestAcceptor(t, nil)
		lc := &legConn{toSrv: make(chan []byte), fromSv: make(chan []byte)}
		tc := tls.Client(lc, &tls.Config{InsecureSkipVerify: true})
		go tc.Handshake()
		hello := <-lc.toSrv
		if _, done, err := a.Step(context.Background(), authn.ConnInfo{}, hello); done || err != nil {
			t.Fatalf("ClientHello: %v %v", done, err)
		}
		close(lc.fromSv)
		a.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base+2 {
		t.Fatalf("%d goroutines left (from %d)", n, base)
	}
}

func TestStepLimits(t *testing.T) {
	a := newTestAcceptor(t, nil)
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, make([]byte, MaxMessage+2048)); !errors.Is(err, authn.ErrMalformed) {
		t.Fatalf("oversized token: %v", err)
	}
	a = newTestAcceptor(t, nil)
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, []byte("not TLS at all, just bytes")); !errors.Is(err, authn.ErrMalformed) {
		t.Fatalf("garbage: %v", err)
	}
}

func selfSignedPEM(t *testing.T) ([]byte, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "credssp test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}
