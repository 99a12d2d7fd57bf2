package credssp

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
)

// localCalls records what reached the local password path.
type localCalls struct{ users []string }

func (l *localCalls) VerifyPassword(_ context.Context, _ netip.Addr, user, password string) error {
	l.users = append(l.users, user)
	if password != "right" {
		return authn.ErrBadCredentials
	}
	return nil
}

// The domain path: hashes (acceptor_test.go) stands in for the domain's
// accounts; the NT-hash verifier checks the NTLMv2 proof PasswordCheck
// builds exactly as winbind's DC checks it (NTOWFv2 over user and domain).
func TestPasswordCheckDomain(t *testing.T) {
	lim := authn.NewRateLimiter(authn.RateLimitConfig{})
	local := &localCalls{}
	c := &PasswordCheck{Local: local, Domain: ntlm.NewNTHashVerifier(hashes{"alice": "right"}),
		Limiter: lim, NetBIOSComputer: "HOST", NetBIOSDomain: "CORP"}
	ci := authn.ConnInfo{Remote: netip.MustParseAddr("192.0.2.7")}
	p := authn.Principal{Name: `CORP\alice`, Verifier: authn.VerifiedDomain}
	if err := c.Verify(context.Background(), ci, p, "right"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	for i := 0; i < 5; i++ {
		if err := c.Verify(context.Background(), ci, p, "wrong"); !errors.Is(err, authn.ErrBadCredentials) {
			t.Fatalf("wrong password %d: %v", i, err)
		}
	}
	// Five failures lock the (source, account) pair: the right password
	// is refused before the domain is asked, as for every password.
	if err := c.Verify(context.Background(), ci, p, "right"); err == nil || errors.Is(err, authn.ErrBadCredentials) {
		t.Errorf("after 5 failures: %v, want a lockout", err)
	}
	if len(local.users) != 0 {
		t.Errorf("a domain account reached the local path: %v", local.users)
	}
	c.Domain = nil
	err := c.Verify(context.Background(), authn.ConnInfo{Remote: netip.MustParseAddr("192.0.2.8")}, p, "right")
	if !errors.Is(err, authn.ErrBackend) {
		t.Errorf("no winbind: %v, want ErrBackend", err)
	}
}

func TestPasswordCheckLocal(t *testing.T) {
	local := &localCalls{}
	c := &PasswordCheck{Local: local, Limiter: authn.NewRateLimiter(authn.RateLimitConfig{})}
	p := authn.Principal{Name: `.\bob`, Verifier: authn.VerifiedLocal}
	if err := c.Verify(context.Background(), authn.ConnInfo{}, p, "right"); err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(context.Background(), authn.ConnInfo{}, p, "wrong"); !errors.Is(err, authn.ErrBadCredentials) {
		t.Errorf("wrong local password: %v", err)
	}
	if len(local.users) != 2 || local.users[0] != "bob" {
		t.Errorf("local path got %v, want the mapped account bob", local.users)
	}
}

func TestInnerCertificate(t *testing.T) {
	c, err := InnerCertificate("", "")
	if err != nil || len(c.Certificate) != 1 {
		t.Fatalf("self-signed: %v", err)
	}
	if _, err := SubjectPublicKey(c.Certificate[0]); err != nil {
		t.Errorf("its key does not bind: %v", err)
	}
	if _, err := InnerCertificate("/nonexistent/cert.pem", "/nonexistent/key.pem"); err == nil {
		t.Error("a missing configured pair was accepted")
	}
}
