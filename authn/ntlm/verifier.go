package ntlm

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"

	"github.com/winrmd/winrmd/authn"
)

// Verifier checks an NTLMv2 response and returns the session base key.
// Implementations: NewNTHashVerifier (local NT hashes), winbind.New (Samba).
type Verifier interface {
	Verify(ctx context.Context, r VerifyRequest) (VerifyResult, error)
}

// VerifyRequest is one NTLM response to check. Names are as the client
// sent them.
type VerifyRequest struct {
	Remote                    netip.Addr // the client, for rate limits
	User, Domain, Workstation string
	ServerChallenge           [8]byte
	NtResponse, LmResponse    []byte
}

// VerifyResult is a successful verification.
type VerifyResult struct {
	// SessionBaseKey (16 bytes), the key the session keys derive from.
	SessionBaseKey []byte
	// User and Domain in the backend's canonical spelling ("" = as sent).
	User, Domain string
	// Verifier is who verified the name: authn.VerifiedLocal for local NT
	// hashes, authn.VerifiedDomain when a domain controller did (winbind).
	Verifier authn.Verifier
}

// NTHashSource returns the NT hash (16 bytes) of a local account;
// authn.ErrUnknownAccount when there is none.
type NTHashSource interface {
	NTHash(user string) ([]byte, error)
}

// NewNTHashVerifier verifies NTLMv2 responses locally from NT hashes.
func NewNTHashVerifier(src NTHashSource) Verifier { return ntHashVerifier{src: src} }

type ntHashVerifier struct{ src NTHashSource }

// dummyHash stands in for a missing account so that an unknown user costs
// the same work as a wrong password.
var dummyHash = make([]byte, 16)

func (v ntHashVerifier) Verify(ctx context.Context, r VerifyRequest) (VerifyResult, error) {
	if err := checkV2Shape(r.NtResponse); err != nil {
		return VerifyResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return VerifyResult{}, fmt.Errorf("ntlm: %v: %w", err, authn.ErrBackend)
	}
	// "alice@host" (a UPN-style name, NTLM's DomainName then empty) is
	// the account alice: its hash, with NTOWFv2 over the name as sent. The
	// authorizer decides whether the qualifier names this host.
	lookup := r.User
	if u, q, ok := authn.SplitName(r.User); ok && q != "" && r.Domain == "" {
		lookup = u
	}
	hash, err := v.src.NTHash(lookup)
	unknown := false
	switch {
	case errors.Is(err, authn.ErrUnknownAccount):
		unknown, hash = true, dummyHash
	case err != nil:
		return VerifyResult{}, fmt.Errorf("ntlm: NT hash lookup: %v: %w", err, authn.ErrBackend)
	case len(hash) != 16:
		return VerifyResult{}, fmt.Errorf("ntlm: NT hash for %q has %d bytes: %w", r.User, len(hash), authn.ErrBackend)
	}
	proof, temp := r.NtResponse[:ntProofLength], r.NtResponse[ntProofLength:]
	// The client hashes UPPER(user) || domain with the domain it typed. Try
	// the domain as sent, then empty; always compute both.
	var key []byte
	for _, d := range []string{r.Domain, ""} {
		k := NTOWFv2(hash, r.User, d)
		ok := subtle.ConstantTimeCompare(ntProofStr(k, r.ServerChallenge[:], temp), proof) == 1
		if ok && key == nil {
			key = k
		}
	}
	if unknown {
		return VerifyResult{}, fmt.Errorf("ntlm: user %q: %w", r.User, authn.ErrUnknownAccount)
	}
	if key == nil {
		return VerifyResult{}, fmt.Errorf("ntlm: user %q: NTLMv2 response does not verify: %w", r.User, authn.ErrBadCredentials)
	}
	return VerifyResult{SessionBaseKey: sessionBaseKeyV2(key, proof), User: r.User, Domain: r.Domain}, nil
}

// checkV2Shape refuses what is not an NTLMv2 response.
func checkV2Shape(nt []byte) error {
	switch {
	case len(nt) == 0:
		return fmt.Errorf("ntlm: LM-only response refused: %w", authn.ErrUnsupported)
	case len(nt) == ntlmV1Length:
		return fmt.Errorf("ntlm: NTLMv1 response refused: %w", authn.ErrUnsupported)
	case len(nt) < ntProofLength+blobHeaderLength:
		return malformed("NtChallengeResponse of %d bytes", len(nt))
	}
	return nil
}
