// Package basic is the HTTP Basic mechanism (RFC 7617) for winrmd:
// ParseHeader decodes the credentials, and Authenticator verifies them
// against the local account store or the host's PAM stack.
//
// # Header syntax
//
// The value after the "Basic" scheme word is canonical, padded, standard
// base64 (RFC 4648 §4) of "user:password" in UTF-8, at most MaxEncodedBytes
// bytes. Unpadded base64 is refused: every client we know pads (Windows,
// .NET, Go's SetBasicAuth, Python requests), RFC 7617 uses padded base64,
// and accepting two spellings of one credential helps nobody. Whitespace
// around the value is ignored; inside it, CR, LF and spaces are refused (Go's
// base64 decoder would silently skip CR and LF). Servers should advertise
// `Basic realm="WSMAN", charset="UTF-8"`: credentials that are not UTF-8
// (Latin-1 from older clients) are refused rather than guessed at.
//
// The user is everything before the first ':' (RFC 7617: users cannot contain
// one) and must be non-empty UTF-8 without control or invisible characters;
// the password is the rest and must be non-empty UTF-8 without NUL (C and PAM
// would cut it there). Every refusal wraps authn.ErrMalformed.
package basic

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/accounts"
	"github.com/winrmd/winrmd/authn/pam"
)

// MaxEncodedBytes bounds the base64 credentials (after trimming).
const MaxEncodedBytes = 4096

// Mechanism is the Principal.Mechanism of Basic logons.
const Mechanism = "basic"

var strictStd = base64.StdEncoding.Strict()

// ParseHeader decodes the credentials in v, the Authorization header value
// after the "Basic" scheme word. Errors wrap authn.ErrMalformed and never
// contain the password.
func ParseHeader(v string) (user, password string, err error) {
	v = strings.Trim(v, " \t")
	switch {
	case v == "":
		return "", "", fmt.Errorf("%w: basic: empty credentials", authn.ErrMalformed)
	case len(v) > MaxEncodedBytes:
		return "", "", fmt.Errorf("%w: basic: credentials longer than %d bytes", authn.ErrMalformed, MaxEncodedBytes)
	case len(v)%4 != 0:
		return "", "", fmt.Errorf("%w: basic: base64 is not padded to a multiple of 4", authn.ErrMalformed)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return "", "", fmt.Errorf("%w: basic: byte %d is not standard base64", authn.ErrMalformed, i)
		}
	}
	raw, err := strictStd.DecodeString(v)
	if err != nil {
		return "", "", fmt.Errorf("%w: basic: not canonical padded base64", authn.ErrMalformed)
	}
	defer clear(raw)
	if !utf8.Valid(raw) {
		return "", "", fmt.Errorf("%w: basic: credentials are not UTF-8", authn.ErrMalformed)
	}
	s := string(raw)
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return "", "", fmt.Errorf("%w: basic: no ':' between user and password", authn.ErrMalformed)
	}
	user, password = s[:i], s[i+1:]
	if user == "" {
		return "", "", fmt.Errorf("%w: basic: empty user", authn.ErrMalformed)
	}
	if password == "" {
		return "", "", fmt.Errorf("%w: basic: empty password", authn.ErrMalformed)
	}
	for _, r := range user {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return "", "", fmt.Errorf("%w: basic: control or invisible character in user", authn.ErrMalformed)
		}
	}
	if strings.IndexByte(password, 0) >= 0 {
		return "", "", fmt.Errorf("%w: basic: NUL in password", authn.ErrMalformed)
	}
	return user, password, nil
}

// Config says where Basic credentials are verified.
type Config struct {
	// Store is the local account store; nil disables it.
	Store *accounts.Store
	// PAMService is the PAM service for accounts not in Store; "" disables
	// PAM.
	PAMService string
	// Limiter throttles guessing; nil disables rate limiting.
	Limiter *authn.RateLimiter
}

// Authenticator verifies Basic credentials. It is safe for concurrent use.
type Authenticator struct {
	cfg Config
	pam func(service, user, password string, remote netip.Addr) error
}

// New returns an Authenticator for cfg.
func New(cfg Config) *Authenticator {
	return &Authenticator{cfg: cfg, pam: pam.AuthenticateFrom}
}

// Authenticate verifies the credentials in headerValue (the Authorization
// value after "Basic") sent from remote, and returns the principal with the
// name as the client sent it ("CORP\\alice", "alice@REALM" or "alice").
//
// On failure after parsing, the returned principal carries the name the
// client claimed (unverified, for the audit of the failure) and nothing
// else.
//
// Order: parse; rate limit (before any verification); then the account
// store if the mapped local name (authn.MapName) is in it, otherwise PAM if
// configured, otherwise the store (which answers ErrUnknownAccount after a
// dummy hash). A name in the store is decided by the store alone. Malformed
// credentials count as a failure of the source; backend failures count for
// nobody. Errors wrap the authn errors; none contains the password.
//
// Timing tells whether the store or PAM answered (argon2id costs more than
// the host's crypt), i.e. whether a name is in the store; whether it exists
// on the host is PAM's to hide (pam_unix hashes a dummy for unknown users).
func (a *Authenticator) Authenticate(ctx context.Context, remote netip.Addr, headerValue string) (authn.Principal, error) {
	lim := a.cfg.Limiter
	if err := lim.Allow(remote, ""); err != nil {
		return authn.Principal{}, err
	}
	user, password, err := ParseHeader(headerValue)
	if err != nil {
		lim.Fail(remote, "")
		return authn.Principal{}, err
	}
	claimed := authn.Principal{Name: user}
	if err := lim.Allow(remote, user); err != nil {
		return claimed, err
	}
	if err := ctx.Err(); err != nil {
		return claimed, err
	}
	local := authn.MapName(user, "")
	if local == "" {
		lim.Fail(remote, user)
		return claimed, fmt.Errorf("%w: basic: %q is not a local account name", authn.ErrUnknownAccount, user)
	}
	err = a.verify(local, password, remote)
	switch {
	case err == nil:
		lim.Success(remote, user)
		// The store and PAM verify local accounts: the authorizer honours
		// only a qualifier naming this host (authn.MapPrincipal).
		return authn.Principal{Name: user, Mechanism: Mechanism, Verifier: authn.VerifiedLocal}, nil
	case errors.Is(err, authn.ErrBackend), errors.Is(err, authn.ErrRateLimited):
		// Not the client's fault, or already counted by PAM.
	default:
		lim.Fail(remote, user)
	}
	return claimed, err
}

// VerifyPassword checks a password obtained some other way (CredSSP's
// delegated credentials) for user exactly as Authenticate checks a Basic
// one: rate limits first, then the account store or PAM. Errors never
// contain the password.
func (a *Authenticator) VerifyPassword(ctx context.Context, remote netip.Addr, user, password string) error {
	lim := a.cfg.Limiter
	if err := lim.Allow(remote, user); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	local := authn.MapName(user, "")
	if local == "" {
		lim.Fail(remote, user)
		return fmt.Errorf("%w: %q is not a local account name", authn.ErrUnknownAccount, user)
	}
	err := a.verify(local, password, remote)
	switch {
	case err == nil:
		lim.Success(remote, user)
	case errors.Is(err, authn.ErrBackend), errors.Is(err, authn.ErrRateLimited):
	default:
		lim.Fail(remote, user)
	}
	return err
}

// shadowFile is where PAM's pam_unix keeps password hashes.
const shadowFile = "/etc/shadow"

// SourceVersion identifies the current version of the credential sources
// (the account store file, and /etc/shadow when PAM is used), one stat
// each. A connection that verified a Basic credential verifies it again
// when this changes, so a password change takes effect on open
// connections too (issue 14.10).
func (a *Authenticator) SourceVersion() string {
	v := ""
	if st := a.cfg.Store; st != nil {
		v = st.Version()
	}
	if a.cfg.PAMService != "" {
		var fi syscall.Stat_t
		if err := syscall.Stat(shadowFile, &fi); err == nil {
			b := append(make([]byte, 0, 64), '|')
			for _, n := range [...]int64{int64(fi.Ino), int64(fi.Mtim.Sec), int64(fi.Mtim.Nsec), fi.Size} {
				b = append(strconv.AppendInt(b, n, 10), '.')
			}
			v += string(b)
		}
	}
	return v
}

func (a *Authenticator) verify(local, password string, remote netip.Addr) error {
	if st := a.cfg.Store; st != nil {
		in, err := st.Contains(local)
		if err != nil {
			return err
		}
		if in || a.cfg.PAMService == "" {
			return st.Verify(local, password)
		}
	}
	if a.cfg.PAMService != "" {
		return a.pam(a.cfg.PAMService, local, password, remote)
	}
	return fmt.Errorf("%w: basic: no credential source (neither an account store nor a PAM service)", authn.ErrBackend)
}
