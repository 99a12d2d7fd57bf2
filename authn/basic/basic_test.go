package basic

import (
	"context"
	"encoding/base64"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/accounts"
	"github.com/winrmd/winrmd/authn/internal/hosttest"
	"github.com/winrmd/winrmd/authn/pam"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

var parseTests = []struct {
	name, in   string
	user, pass string
	ok         bool
}{
	{"simple", b64("alice:secret"), "alice", "secret", true},
	{"RFC 7617 example", "QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "Aladdin", "open sesame", true},
	{"colon in password", b64("alice:a:b:c"), "alice", "a:b:c", true},
	{"domain user", b64(`CORP\alice:pw`), `CORP\alice`, "pw", true},
	{"UPN", b64("alice@corp.example:pw"), "alice@corp.example", "pw", true},
	{"UTF-8", b64("josé:pässwörd€"), "josé", "pässwörd€", true},
	{"spaces in password", b64("alice: pw "), "alice", " pw ", true},
	{"control in password", b64("alice:p\tw\n"), "alice", "p\tw\n", true},
	{"surrounding whitespace", " \t" + b64("alice:pw") + " ", "alice", "pw", true},
	{"one padding char", b64("alice:pw123"), "alice", "pw123", true},
	{"two padding chars", b64("alice:pw12"), "alice", "pw12", true},
	{"no padding needed", b64("alice:pwd"), "alice", "pwd", true},
	{"longest", b64("u:" + strings.Repeat("p", 3070)), "u", strings.Repeat("p", 3070), true},

	{"empty", "", "", "", false},
	{"blank", "   ", "", "", false},
	{"too long", b64("u:" + strings.Repeat("p", 3073)), "", "", false},
	{"unpadded one", strings.TrimRight(b64("alice:pw123"), "="), "", "", false},
	{"unpadded two", strings.TrimRight(b64("alice:pw12"), "="), "", "", false},
	{"half padded", strings.TrimSuffix(b64("alice:pw12"), "="), "", "", false},
	{"extra padding", b64("alice:pwd") + "====", "", "", false},
	{"padding inside", "YWxp=2U6cHc=", "", "", false},
	{"URL alphabet", base64.URLEncoding.EncodeToString([]byte("alice:p>?~")), "", "", false},
	{"CRLF inside", b64("alice:secret")[:4] + "\r\n" + b64("alice:secret")[4:], "", "", false},
	{"space inside", b64("alice:secret")[:4] + " " + b64("alice:secret")[4:], "", "", false},
	{"non-canonical trailing bits", "YWxpY2U6cHd=", "", "", false},
	{"not base64", "!!!!", "", "", false},
	{"scheme word included", "Basic " + b64("alice:pw"), "", "", false},
	{"no colon", b64("alicepw"), "", "", false},
	{"empty user", b64(":pw"), "", "", false},
	{"empty password", b64("alice:"), "", "", false},
	{"both empty", b64(":"), "", "", false},
	{"NUL in user", b64("al\x00ice:pw"), "", "", false},
	{"newline in user", b64("al\nice:pw"), "", "", false},
	{"DEL in user", b64("al\x7fice:pw"), "", "", false},
	{"C1 in user", b64("al\u0085ice:pw"), "", "", false},
	{"zero-width in user", b64("al\u200bice:pw"), "", "", false},
	{"NUL in password", b64("alice:p\x00w"), "", "", false},
	{"Latin-1 password", b64("alice:p\xe4ss"), "", "", false},
	{"invalid UTF-8 user", b64("\xff:pw"), "", "", false},
}

func TestParseHeader(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			u, p, err := ParseHeader(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParseHeader(%q) = %q, %q; want an error", tt.in, u, p)
				}
				if !errors.Is(err, authn.ErrMalformed) {
					t.Fatalf("error %v does not wrap ErrMalformed", err)
				}
				if u != "" || p != "" {
					t.Fatal("values returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseHeader(%q): %v", tt.in, err)
			}
			if u != tt.user || p != tt.pass {
				t.Fatalf("ParseHeader(%q) = %q, %q; want %q, %q", tt.in, u, p, tt.user, tt.pass)
			}
		})
	}
}

func TestParseHeaderErrorsHideSecrets(t *testing.T) {
	for _, in := range []string{b64("alice:"), b64("topsecret"), b64("al\x00ice:topsecret"), b64("alice:top\x00secret")} {
		_, _, err := ParseHeader(in)
		if err == nil || strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), in) {
			t.Errorf("error for %q: %v", in, err)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, tt := range parseTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		u, p, err := ParseHeader(in)
		if err != nil {
			if !errors.Is(err, authn.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if u == "" || p == "" || strings.Contains(u, ":") || strings.IndexByte(p, 0) >= 0 ||
			!utf8.ValidString(u) || !utf8.ValidString(p) {
			t.Fatalf("accepted user %q password %q", u, p)
		}
		for _, r := range u {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character in user %q", u)
			}
		}
		// Canonical: re-encoding gives the input back (trimmed).
		if b64(u+":"+p) != strings.Trim(in, " \t") {
			t.Fatalf("non-canonical input %q accepted", in)
		}
	})
}

func BenchmarkParseHeader(b *testing.B) {
	v := "Basic " + b64(`CORP\alice:correct horse battery staple`)
	v = v[len("Basic "):]
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := ParseHeader(v); err != nil {
			b.Fatal(err)
		}
	}
}

var (
	remote  = netip.MustParseAddr("192.0.2.10")
	remote2 = netip.MustParseAddr("192.0.2.11")
)

// fakePAM records calls and accepts one user/password.
type fakePAM struct {
	calls          atomic.Int32
	user, password string
}

func (f *fakePAM) auth(service, user, password string, _ netip.Addr) error {
	f.calls.Add(1)
	if user != f.user {
		return authn.ErrUnknownAccount
	}
	if password != f.password {
		return authn.ErrBadCredentials
	}
	return nil
}

func newStore(t *testing.T) *accounts.Store {
	t.Helper()
	s, err := accounts.Open(filepath.Join(t.TempDir(), "accounts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add("Alice", "store pw"); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuthenticator(t *testing.T) {
	store := newStore(t)
	tests := []struct {
		name     string
		store    bool
		pam      bool
		header   string
		want     error
		pamCalls int32
	}{
		{"store user", true, true, b64("alice:store pw"), nil, 0},
		{"store user, domain form", true, true, b64(`HOST\ALICE:store pw`), nil, 0},
		{"store user, UPN form", true, true, b64("alice@host:store pw"), nil, 0},
		{"store user, wrong password, PAM not asked", true, true, b64("alice:pam pw"), authn.ErrBadCredentials, 0},
		{"PAM user", true, true, b64("bob:pam pw"), nil, 1},
		{"PAM user, wrong password", true, true, b64("bob:nope"), authn.ErrBadCredentials, 1},
		{"unknown to both", true, true, b64("carol:x"), authn.ErrUnknownAccount, 1},
		{"store only, unknown", true, false, b64("bob:pam pw"), authn.ErrUnknownAccount, 0},
		{"PAM only", false, true, b64("bob:pam pw"), nil, 1},
		{"no source", false, false, b64("bob:pam pw"), authn.ErrBackend, 0},
		{"malformed", true, true, "!!", authn.ErrMalformed, 0},
		{"unmappable name", true, true, b64("HTTP/h@R:x"), authn.ErrUnknownAccount, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Limiter: authn.NewRateLimiter(authn.RateLimitConfig{})}
			if tt.store {
				cfg.Store = store
			}
			fp := &fakePAM{user: "bob", password: "pam pw"}
			if tt.pam {
				cfg.PAMService = "winrmd-test"
			}
			a := New(cfg)
			a.pam = fp.auth
			p, err := a.Authenticate(context.Background(), remote, tt.header)
			if fp.calls.Load() != tt.pamCalls {
				t.Fatalf("PAM called %d times, want %d", fp.calls.Load(), tt.pamCalls)
			}
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("Authenticate = %+v, %v; want %v", p, err, tt.want)
				}
				// A failure names only the claimed user (for audit).
				if p.Mechanism != "" || p.Domain != "" || p.Binding != "" {
					t.Fatalf("principal %+v returned with an error", p)
				}
				if u, _, perr := ParseHeader(tt.header); perr == nil && p.Name != u {
					t.Fatalf("failure names %q, client claimed %q", p.Name, u)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u, _, _ := ParseHeader(tt.header)
			if p.Name != u || p.Mechanism != "basic" || p.Domain != "" {
				t.Fatalf("principal %+v, want name %q as sent", p, u)
			}
		})
	}
}

func TestAuthenticatorRateLimit(t *testing.T) {
	fp := &fakePAM{user: "bob", password: "pam pw"}
	a := New(Config{PAMService: "x", Limiter: authn.NewRateLimiter(authn.RateLimitConfig{})})
	a.pam = fp.auth
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := a.Authenticate(ctx, remote, b64("bob:wrong")); !errors.Is(err, authn.ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	// Locked: the right password is not even checked.
	before := fp.calls.Load()
	if _, err := a.Authenticate(ctx, remote, b64("bob:pam pw")); !errors.Is(err, authn.ErrRateLimited) {
		t.Fatalf("after 5 failures: %v", err)
	}
	if _, err := a.Authenticate(ctx, remote, "garbage"); !errors.Is(err, authn.ErrRateLimited) {
		t.Fatalf("locked source, malformed header: %v", err)
	}
	if fp.calls.Load() != before {
		t.Fatal("a locked-out attempt reached PAM")
	}
	// The same account from another source is not locked out by one
	// source's guesses (issue 14.7).
	if _, err := a.Authenticate(ctx, remote2, b64("bob:pam pw")); err != nil {
		t.Fatalf("same account from elsewhere: %v", err)
	}
	// Malformed headers count against the source.
	src := netip.MustParseAddr("198.51.100.1")
	for i := 0; i < 5; i++ {
		a.Authenticate(ctx, src, "garbage")
	}
	if _, err := a.Authenticate(ctx, src, b64("carol:x")); !errors.Is(err, authn.ErrRateLimited) {
		t.Fatalf("source after 5 malformed headers: %v", err)
	}
}

func TestAuthenticatorContext(t *testing.T) {
	fp := &fakePAM{user: "bob", password: "pam pw"}
	a := New(Config{PAMService: "x"})
	a.pam = fp.auth
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Authenticate(ctx, remote, b64("bob:pam pw")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	if fp.calls.Load() != 0 {
		t.Fatal("verified under a cancelled context")
	}
}

func TestAuthenticatorStoreBroken(t *testing.T) {
	dir := t.TempDir()
	s, err := accounts.Open(filepath.Join(dir, "accounts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add("alice", "pw"); err != nil {
		t.Fatal(err)
	}
	fp := &fakePAM{user: "alice", password: "pam pw"}
	lim := authn.NewRateLimiter(authn.RateLimitConfig{})
	a := New(Config{Store: s, PAMService: "x", Limiter: lim})
	a.pam = fp.auth
	if err := os.Chmod(filepath.Join(dir, "accounts"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A broken store must not silently hand its users to PAM.
	for i := 0; i < 10; i++ {
		if _, err := a.Authenticate(context.Background(), remote, b64("alice:pam pw")); !errors.Is(err, authn.ErrBackend) {
			t.Fatalf("broken store: %v", err)
		}
	}
	if fp.calls.Load() != 0 {
		t.Fatal("broken store fell through to PAM")
	}
	// Backend failures are not the client's: no lockout.
	if err := lim.Allow(remote, "alice"); err != nil {
		t.Fatalf("backend failures locked the client out: %v", err)
	}
}

func TestAuthenticatorRealPAM(t *testing.T) {
	hosttest.RequireRoot(t)
	if !pam.Available {
		t.Skip("built without PAM")
	}
	svc := hosttest.AddPAMService(t, hosttest.UnixService)
	u := hosttest.AddUser(t, "real pw")
	store := newStore(t)
	a := New(Config{Store: store, PAMService: svc, Limiter: authn.NewRateLimiter(authn.RateLimitConfig{})})
	ctx := context.Background()
	p, err := a.Authenticate(ctx, remote, b64(u+":real pw"))
	if err != nil || p.Name != u || p.Mechanism != "basic" {
		t.Fatalf("real PAM user: %+v, %v", p, err)
	}
	if _, err := a.Authenticate(ctx, remote, b64(`HOST\`+u+":real pw")); err != nil {
		t.Fatalf("real PAM user, domain form: %v", err)
	}
	if _, err := a.Authenticate(ctx, remote, b64(u+":wrong")); !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("real PAM, wrong password: %v", err)
	}
	if _, err := a.Authenticate(ctx, remote, b64("alice:store pw")); err != nil {
		t.Fatalf("store user beside PAM: %v", err)
	}
}
