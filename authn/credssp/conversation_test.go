package credssp_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/credssp"
	"github.com/winrmd/winrmd/authn/credssp/credssptest"
)

// In-process conversations: the test initiator (credssptest: Go's TLS
// client with the NTLM test client inside, raw NTLM as the inner
// mechanism, which also shows the inner context is pluggable) against the
// acceptor, leg by leg as HTTP would carry them.

type outcome struct {
	done    bool
	err     error
	lastOut []byte
	last    bool // the refused leg was the initiator's last
	p       authn.Principal
}

// converse runs a whole conversation; ini is alice unless the test says
// otherwise.
func converse(t *testing.T, a *credssp.Acceptor, ini *credssptest.Initiator) outcome {
	t.Helper()
	if ini.User == "" {
		ini.User, ini.Password = "alice", credssp.Accounts["alice"]
	}
	t.Cleanup(ini.Close)
	var o outcome
	var in []byte
	for {
		out, last, err := ini.Step(in)
		if err != nil {
			t.Fatalf("initiator: %v", err)
		}
		in, o.done, o.err = a.Step(context.Background(), authn.ConnInfo{}, out)
		o.lastOut, o.last = in, last
		if o.err != nil || o.done || last {
			break
		}
	}
	o.p = a.Principal()
	return o
}

func TestConversation(t *testing.T) {
	for _, v := range []int{2, 3, 4, 5, 6} {
		var verified []string
		a := credssp.NewTestAcceptor(t, &verified)
		ini := &credssptest.Initiator{Version: v}
		o := converse(t, a, ini)
		if o.err != nil || !o.done {
			t.Fatalf("v%d: %v done=%v", v, o.err, o.done)
		}
		if o.p.Name != "alice" || o.p.Mechanism != credssp.Mechanism || len(verified) != 1 {
			t.Fatalf("v%d: principal %+v, verified %v", v, o.p, verified)
		}
		// Message protection both ways over the CredSSP TLS channel.
		s := a.Sealer()
		sig, data, err := ini.Seal([]byte("request body"))
		if err != nil || len(sig) != 16 {
			t.Fatalf("v%d client seal: %d %v", v, len(sig), err)
		}
		rec := append(bytes.Clone(sig), data...)
		plain, err := s.Unseal(sig, data)
		if err != nil || string(plain) != "request body" {
			t.Fatalf("v%d unseal: %q %v", v, plain, err)
		}
		sig, data, err = s.Seal([]byte("response body"))
		if err != nil || len(sig) != 16 {
			t.Fatalf("v%d seal: %d %v", v, len(sig), err)
		}
		got, err := ini.Unseal(sig, data)
		if err != nil || string(got) != "response body" {
			t.Fatalf("v%d client unseal: %q %v", v, got, err)
		}
		// A truncated record is refused, not waited for.
		if _, err := s.Unseal(rec[:10], nil); !errors.Is(err, authn.ErrMalformed) {
			t.Errorf("truncated record: %v", err)
		}
	}
}

// refusals are clients changed in one place, and what the acceptor says.
var refusals = []struct {
	name string
	ini  credssptest.Initiator
	want error
}{
	{"relay to another key", credssptest.Initiator{OtherKey: true}, authn.ErrChannelBinding},
	{"relay to another key v2", credssptest.Initiator{Version: 2, OtherKey: true}, authn.ErrChannelBinding},
	{"version changed", credssptest.Initiator{LaterVersion: 2}, authn.ErrMalformed},
	{"v6 without nonce", credssptest.Initiator{NoNonce: true}, authn.ErrMalformed},
	{"another delegated user", credssptest.Initiator{DelegUser: "bob", DelegPassword: credssp.Accounts["bob"]}, credssp.ErrUserMismatch},
	{"wrong delegated password", credssptest.Initiator{DelegPassword: "not-it"}, authn.ErrBadCredentials},
}

func TestConversationRefusals(t *testing.T) {
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			a := credssp.NewTestAcceptor(t, nil)
			ini := c.ini
			o := converse(t, a, &ini)
			if o.done || !errors.Is(o.err, c.want) {
				t.Fatalf("done=%v err=%v, want %v", o.done, o.err, c.want)
			}
			if a.Sealer() != nil || a.Principal().Delegated != nil {
				t.Error("a failed context has a sealer or credentials")
			}
			if c.ini.DelegPassword != "" && bytes.Contains([]byte(o.err.Error()), []byte(c.ini.DelegPassword)) {
				t.Error("the error names the password")
			}
			// v3, v4 and v6 get TSRequest{errorCode} inside TLS; v2 and v5
			// expect nothing.
			if v := c.ini.Version; v == 2 || v == 5 {
				if len(o.lastOut) != 0 {
					t.Errorf("a v%d client got an errorCode token", v)
				}
			} else if len(o.lastOut) == 0 {
				t.Error("no errorCode token for a v6 client")
			} else if !o.last {
				// Refused before the credentials leg: the initiator reads it.
				if _, _, err := ini.Step(o.lastOut); !errors.Is(err, credssptest.ErrServer) {
					t.Errorf("the initiator read the errorCode token as %v", err)
				}
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
		a := credssp.NewTestAcceptor(t, nil)
		ini := &credssptest.Initiator{User: "alice", Password: credssp.Accounts["alice"]}
		hello, _, err := ini.Step(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, done, err := a.Step(context.Background(), authn.ConnInfo{}, hello); done || err != nil {
			t.Fatalf("ClientHello: %v %v", done, err)
		}
		ini.Close()
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
