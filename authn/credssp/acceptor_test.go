package credssp

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"testing"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
)

// The acceptor's set-up for the conversations (conversation_test.go, with
// the initiator of package credssptest, which imports this package and so
// runs from the external test package) and for the tests here.

type hashes map[string]string

func (h hashes) NTHash(user string) ([]byte, error) {
	p, ok := h[user]
	if !ok {
		return nil, authn.ErrUnknownAccount
	}
	return ntlm.NTHash(p), nil
}

var accounts = hashes{"alice": "Alice-pw-1", "bob": "Bob-pw-2"}

// Accounts are the test accounts and their passwords, for the external tests.
var Accounts = accounts

var (
	certOnce sync.Once
	cert     *tls.Certificate
)

// testCert is one throwaway self-signed certificate for every test.
func testCert(t testing.TB) *tls.Certificate {
	t.Helper()
	certOnce.Do(func() {
		c, err := InnerCertificate("", "")
		if err != nil {
			t.Fatal(err)
		}
		cert = c
	})
	return cert
}

// NewTestAcceptor is an acceptor with NTLM inside that verifies delegated
// passwords against Accounts, appending each verified name to verified.
func NewTestAcceptor(t testing.TB, verified *[]string) *Acceptor {
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

func TestStepLimits(t *testing.T) {
	a := NewTestAcceptor(t, nil)
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, make([]byte, MaxMessage+2048)); !errors.Is(err, authn.ErrMalformed) {
		t.Fatalf("oversized token: %v", err)
	}
	a = NewTestAcceptor(t, nil)
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, []byte("not TLS at all, just bytes")); !errors.Is(err, authn.ErrMalformed) {
		t.Fatalf("garbage: %v", err)
	}
}
