package ntlm

import (
	"context"
	"errors"

	"github.com/winrmd/winrmd/authn"
)

// AccountLister says whether a local account store holds a user.
type AccountLister interface {
	Has(user string) bool
}

// Chain verifies against the local account store first, then the domain
// (winbind); either may be nil. The store answers for names with no
// qualifier or one naming this host (alice, .\alice, HOST\alice,
// alice@host); the domain's answers are marked authn.VerifiedDomain, so the
// authorizer may honour their domain (authn.MapPrincipal). With neither,
// every logon is an unknown account.
type Chain struct {
	Store  AccountLister
	Hosts  *authn.HostNames // this host's names, for local qualifiers
	Local  Verifier         // NT hashes of Store's accounts
	Domain Verifier         // winbind
}

// Verify implements Verifier.
func (c *Chain) Verify(ctx context.Context, r VerifyRequest) (VerifyResult, error) {
	if c.Local != nil && c.Store != nil {
		user, qual, ok := authn.SplitName(r.User)
		if qual == "" {
			qual = r.Domain
		}
		if ok && c.Hosts.IsLocal(qual) && c.Store.Has(user) {
			return c.Local.Verify(ctx, r)
		}
	}
	if c.Domain != nil {
		res, err := c.Domain.Verify(ctx, r)
		if err == nil {
			res.Verifier = authn.VerifiedDomain
		}
		return res, err
	}
	if c.Local != nil {
		return c.Local.Verify(ctx, r)
	}
	return VerifyResult{}, authn.ErrUnknownAccount
}

// RateLimited puts a Verifier under the per-source and per-account limits
// Basic logons share (authn.RateLimiter): a source or account over its
// failure budget is refused before the backend is asked; a bad password or
// unknown account counts against both, a success clears the account.
type RateLimited struct {
	V       Verifier
	Limiter *authn.RateLimiter
}

// Verify implements Verifier.
func (l *RateLimited) Verify(ctx context.Context, r VerifyRequest) (VerifyResult, error) {
	if err := l.Limiter.Allow(r.Remote, r.User); err != nil {
		return VerifyResult{}, err
	}
	res, err := l.V.Verify(ctx, r)
	if err != nil {
		if errors.Is(err, authn.ErrBadCredentials) || errors.Is(err, authn.ErrUnknownAccount) {
			l.Limiter.Fail(r.Remote, r.User)
		}
		return res, err
	}
	l.Limiter.Success(r.Remote, r.User)
	return res, nil
}
