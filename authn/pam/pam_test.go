//go:build cgo && (linux || freebsd) && !nopam

package pam

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"

	gopam "github.com/msteinert/pam/v2"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/internal/hosttest"
)

func TestAuthenticateRealPAM(t *testing.T) {
	hosttest.RequireRoot(t)
	svc := hosttest.AddPAMService(t, hosttest.UnixService)
	pw := "S3cret pässword:with colon"
	u := hosttest.AddUser(t, pw)
	other := hosttest.AddUser(t, "another password")
	locked := hosttest.AddUser(t, "locked pw")
	hosttest.Run(t, "usermod", "--lock", locked)
	expired := hosttest.AddUser(t, "expired pw")
	hosttest.Run(t, "usermod", "--expiredate", "1970-01-02", expired)

	tests := []struct {
		name, user, pw string
		want           error
	}{
		{"right password", u, pw, nil},
		{"wrong password", u, "wrong", authn.ErrBadCredentials},
		{"another user's password", u, "another password", authn.ErrBadCredentials},
		{"password prefix", u, pw[:5], authn.ErrBadCredentials},
		{"password with suffix", u, pw + "x", authn.ErrBadCredentials},
		{"empty password", u, "", authn.ErrBadCredentials},
		{"NUL in password", u, pw + "\x00x", authn.ErrBadCredentials},
		{"unknown user", hosttest.Name("none"), "x", authn.ErrUnknownAccount},
		{"locked account", locked, "locked pw", authn.ErrBadCredentials},
		{"expired account", expired, "expired pw", authn.ErrBadCredentials},
		{"other user right password", other, "another password", nil},
		{"empty user", "", "x", authn.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := AuthenticateFrom(svc, tt.user, tt.pw, netip.MustParseAddr("192.0.2.7"))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Authenticate(%q): %v", tt.user, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Authenticate(%q) = %v, want %v", tt.user, err, tt.want)
			}
			if tt.pw != "" && len(tt.pw) > 3 && strings.Contains(err.Error(), tt.pw) {
				t.Fatalf("error contains the password: %v", err)
			}
		})
	}
	if err := Authenticate(svc, u, pw); err != nil {
		t.Fatalf("Authenticate without address: %v", err)
	}
}

func TestAuthenticateConcurrent(t *testing.T) {
	hosttest.RequireRoot(t)
	svc := hosttest.AddPAMService(t, hosttest.UnixService)
	u := hosttest.AddUser(t, "pw-1")
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := error(nil)
			pw := "pw-1"
			if i%2 == 1 {
				pw, want = "bad", authn.ErrBadCredentials
			}
			if err := Authenticate(svc, u, pw); !errors.Is(err, want) && !(want == nil && err == nil) {
				t.Errorf("concurrent %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

func TestAuthenticateAccountDenied(t *testing.T) {
	hosttest.RequireRoot(t)
	// pam_deny in the account stack: the password is right, the account is
	// not allowed.
	svc := hosttest.AddPAMService(t, "auth required pam_unix.so nodelay\naccount required pam_deny.so\n")
	u := hosttest.AddUser(t, "pw")
	if err := Authenticate(svc, u, "pw"); !errors.Is(err, authn.ErrNotAuthorized) {
		t.Fatalf("account stack denies: %v", err)
	}
	if err := Authenticate(svc, u, "bad"); !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("wrong password, account stack denies: %v", err)
	}
}

func TestCheckService(t *testing.T) {
	for _, bad := range []string{"", "../etc/passwd", "a/b", "a\x00", ".", ".."} {
		if err := CheckService(bad); !errors.Is(err, authn.ErrBackend) {
			t.Errorf("CheckService(%q) = %v", bad, err)
		}
	}
	if err := CheckService("winrmd-no-such-service-x"); !errors.Is(err, authn.ErrBackend) {
		t.Fatalf("missing service: %v", err)
	}
	if err := Authenticate("winrmd-no-such-service-x", "root", "x"); !errors.Is(err, authn.ErrBackend) {
		t.Fatalf("Authenticate with a missing service: %v", err)
	}
	if err := CheckService("other"); err != nil {
		t.Skipf("host has no /etc/pam.d/other: %v", err)
	}
}

func TestMapErr(t *testing.T) {
	tests := []struct {
		in   gopam.Error
		want error
	}{
		{gopam.ErrAuth, authn.ErrBadCredentials},
		{gopam.ErrCredInsufficient, authn.ErrBadCredentials},
		{gopam.ErrUserUnknown, authn.ErrUnknownAccount},
		{gopam.ErrMaxtries, authn.ErrRateLimited},
		{gopam.ErrAcctExpired, authn.ErrBadCredentials},
		{gopam.ErrNewAuthtokReqd, authn.ErrBadCredentials},
		{gopam.ErrAuthtokExpired, authn.ErrBadCredentials},
		{gopam.ErrPermDenied, authn.ErrNotAuthorized},
		{gopam.ErrAuthinfoUnavail, authn.ErrBackend},
		{gopam.ErrSystem, authn.ErrBackend},
		{gopam.ErrConv, authn.ErrBackend},
		{gopam.ErrAbort, authn.ErrBackend},
	}
	for _, tt := range tests {
		if err := mapErr("authenticate", tt.in); !errors.Is(err, tt.want) {
			t.Errorf("mapErr(%v) = %v, want %v", tt.in, err, tt.want)
		}
	}
	if err := mapErr("x", errors.New("other")); !errors.Is(err, authn.ErrBackend) {
		t.Errorf("mapErr(plain error) = %v", err)
	}
}
