package credssp

// Where a delegated password is checked, and what the daemon does to keep
// it: the policy behind Config.Verify, Config.Certificate and the process
// hardening that enabling CredSSP implies (README "CredSSP").

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
)

// LocalPasswords verifies a local account's password (authn/basic's
// Authenticator: the account store, then PAM), rate-limited by itself.
type LocalPasswords interface {
	VerifyPassword(ctx context.Context, remote netip.Addr, user, password string) error
}

// PasswordCheck is Config.Verify as the daemon runs it: a local account's
// password goes to Local; a domain account's (the inner logon went through
// winbind or a domain KDC, authn.VerifiedDomain) only the domain can check,
// so it goes to Domain as the NTLMv2 proof a client would have sent
// (ntlm.PasswordRequest) with the host's NetBIOS names, which a domain
// controller compares with the member's secure channel.
type PasswordCheck struct {
	// Local checks local accounts; it applies its own rate limits.
	Local LocalPasswords
	// Domain checks domain accounts (winbind); nil refuses them with
	// authn.ErrBackend, naming accounts.winbind.
	Domain ntlm.Verifier
	// Limiter counts the domain path's failures per source and account,
	// as for every password (Local counts its own).
	Limiter *authn.RateLimiter
	// NetBIOSComputer and NetBIOSDomain are this host's names in the
	// NTLMv2 proof (host.netbios_name, host.domain).
	NetBIOSComputer, NetBIOSDomain string
}

// Verify implements Config.Verify.
func (c *PasswordCheck) Verify(ctx context.Context, ci authn.ConnInfo, p authn.Principal, password string) error {
	if p.Verifier == authn.VerifiedDomain {
		return c.verifyDomain(ctx, ci.Remote, p, password)
	}
	return c.Local.VerifyPassword(ctx, ci.Remote, authn.MapName(p.Name, p.Domain), password)
}

// verifyDomain checks a domain account's password through Domain,
// rate-limited: a refusal counts against the source and the account; a
// backend failure (winbind or the DC unreachable) counts against nobody.
func (c *PasswordCheck) verifyDomain(ctx context.Context, remote netip.Addr, p authn.Principal, password string) error {
	if c.Domain == nil {
		return fmt.Errorf("%w: a domain account's delegated password needs accounts.winbind", authn.ErrBackend)
	}
	user, qual, _ := authn.SplitName(p.Name)
	if qual == "" {
		qual = p.Domain
	}
	if err := c.Limiter.Allow(remote, p.Name); err != nil {
		return err
	}
	req, err := ntlm.PasswordRequest(user, qual, password, c.NetBIOSComputer, c.NetBIOSDomain, time.Now())
	if err != nil {
		return err
	}
	_, err = c.Domain.Verify(ctx, req)
	switch {
	case err == nil:
		c.Limiter.Success(remote, p.Name)
	case errors.Is(err, authn.ErrBackend):
	default:
		c.Limiter.Fail(remote, p.Name)
	}
	return err
}

// InnerCertificate is the certificate of CredSSP's inner TLS channel: the
// pair in certFile and keyFile (the daemon passes its first HTTPS
// listener's), else, when certFile is empty, a fresh self-signed one.
// Clients bind the key through pubKeyAuth, not through a chain, so a
// self-signed key is as good as any.
func InnerCertificate(certFile, keyFile string) (*tls.Certificate, error) {
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		return &c, nil
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "winrmd CredSSP"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// NoCoreDumps keeps delegated passwords out of core files and away from
// debuggers of the same uid, for a daemon with CredSSP on: its soft core
// limit goes to 0 and it becomes non-dumpable (which also forbids ptrace
// attach without CAP_SYS_PTRACE). Workers are separate executables: execve
// gives them their own dumpable flag.
func NoCoreDumps() error {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &rl); err != nil {
		return fmt.Errorf("getrlimit(RLIMIT_CORE): %w", err)
	}
	rl.Cur = 0
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &rl); err != nil {
		return fmt.Errorf("setrlimit(RLIMIT_CORE, 0): %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}
