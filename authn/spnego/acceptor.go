// Package spnego is the server side of the HTTP Negotiate scheme
// (RFC 4559, RFC 4178, MS-SPNG). It detects what the client sent — a raw
// NTLMSSP token, a raw Kerberos token or SPNEGO — answers in the same
// framing, and runs the selected mechanism (NTLM today; Kerberos plugs in
// through Config.Kerberos).
//
// With SPNEGO, the final leg verifies the client's mechListMIC over the
// DER MechTypeList exactly as received and returns ours; for NTLM both RC4
// streams are then re-initialised while sequence numbers continue, so the
// first sealed WinRM message in each direction has sequence number 1
// (PROTOCOL 5.3). Raw NTLM has no mechListMIC: the first message uses 0.
package spnego

import (
	"bytes"
	"context"
	"fmt"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
)

// Config supplies fresh mechanism contexts, one per SPNEGO context.
type Config struct {
	NTLM func() *ntlm.Acceptor
	// Kerberos returns a Kerberos acceptor, or is nil while none is
	// configured. The context is fed the GSS-framed krb5 token; it should
	// implement MICContext to take part in mechListMIC exchanges.
	Kerberos func() authn.Context
}

// MICContext is a mechanism context that can sign and verify the
// mechListMIC (GSS_GetMIC / GSS_VerifyMIC) once complete.
type MICContext interface {
	SignMIC(msg []byte) ([]byte, error)
	VerifyMIC(msg, sig []byte) error
}

// rc4Resetter is NTLM's "reset the cipher state after mechListMIC".
type rc4Resetter interface{ ResetRC4() }

type mode int

const (
	modeStart mode = iota
	modeRawNTLM
	modeRawKerberos
	modeSPNEGO
)

// Acceptor is one Negotiate (or NTLM-scheme) security context.
type Acceptor struct {
	cfg      Config
	ntlmOnly bool
	mode     mode

	mech     authn.Context
	mechName string
	mechOID  []byte
	mechList []byte // MechTypeList DER as received

	replied      bool // the first NegTokenResp has gone out
	micRequested bool
	mechDone     bool
	micSent      bool
	micRecv      bool

	done, failed bool

	leg leg // the Step call in progress
}

// leg is what one Step call passes on to the mechanism.
type leg struct {
	ctx context.Context
	ci  authn.ConnInfo
}

var _ authn.Context = (*Acceptor)(nil)

// NewAcceptor returns a context for the Negotiate scheme.
func NewAcceptor(cfg Config) authn.Context { return &Acceptor{cfg: cfg} }

// NewNTLMSchemeAcceptor returns a context for the bare NTLM scheme: raw
// NTLMSSP tokens only.
func NewNTLMSchemeAcceptor(cfg Config) authn.Context { return &Acceptor{cfg: cfg, ntlmOnly: true} }

var errFailed = fmt.Errorf("spnego: context failed earlier: %w", authn.ErrMalformed)

// Step consumes one client token. ctx and ci go to the mechanism's step.
func (a *Acceptor) Step(ctx context.Context, ci authn.ConnInfo, in []byte) ([]byte, bool, error) {
	a.leg = leg{ctx, ci}
	defer func() { a.leg = leg{} }()
	switch {
	case a.done:
		return nil, true, authn.ErrContextComplete
	case a.failed:
		return nil, false, errFailed
	}
	out, done, err := a.step(in)
	if err != nil {
		a.failed = true
		return nil, false, err
	}
	a.done = done
	return out, done, nil
}

func (a *Acceptor) step(in []byte) ([]byte, bool, error) {
	if len(in) == 0 {
		return nil, false, malformed("empty token")
	}
	if len(in) > authn.MaxTokenSize {
		return nil, false, malformed("token of %d bytes exceeds %d", len(in), authn.MaxTokenSize)
	}
	switch a.mode {
	case modeRawNTLM, modeRawKerberos:
		return a.mech.Step(a.leg.ctx, a.leg.ci, in)
	case modeSPNEGO:
		t, err := parseNegTokenResp(in)
		if err != nil {
			return nil, false, err
		}
		return a.onResp(t)
	}

	// First token: detect the framing.
	switch {
	case ntlm.IsNTLMToken(in):
		if err := a.selectMech(oidNTLM); err != nil {
			return nil, false, err
		}
		a.mode = modeRawNTLM
		return a.mech.Step(a.leg.ctx, a.leg.ci, in)
	case a.ntlmOnly:
		return nil, false, malformed("NTLM scheme: not an NTLMSSP token")
	case isGSSToken(in):
		oid, inner, err := rd.InitialContextToken(in, authn.MaxTokenSize)
		if err != nil {
			return nil, false, err
		}
		switch {
		case bytes.Equal(oid, oidSPNEGO):
			t, err := parseNegTokenInit(inner)
			if err != nil {
				return nil, false, err
			}
			a.mode = modeSPNEGO
			return a.onInit(t)
		case bytes.Equal(oid, oidKRB5) || bytes.Equal(oid, oidMSKRB5):
			if err := a.selectMech(oid); err != nil {
				return nil, false, err
			}
			a.mode = modeRawKerberos
			return a.mech.Step(a.leg.ctx, a.leg.ci, in)
		default:
			return nil, false, fmt.Errorf("spnego: GSS token for mechanism %x: %w", oid, authn.ErrUnsupported)
		}
	case isNegTokenResp(in):
		return nil, false, malformed("NegTokenResp without a preceding NegTokenInit")
	default:
		return nil, false, malformed("unrecognised Negotiate token (first byte %#x)", in[0])
	}
}

// supported reports whether we can run the mechanism oid.
func (a *Acceptor) supported(oid []byte) bool {
	switch {
	case bytes.Equal(oid, oidNTLM):
		return a.cfg.NTLM != nil
	case bytes.Equal(oid, oidKRB5), bytes.Equal(oid, oidMSKRB5):
		return a.cfg.Kerberos != nil
	}
	return false
}

func (a *Acceptor) selectMech(oid []byte) error {
	if !a.supported(oid) {
		return fmt.Errorf("spnego: mechanism %x not enabled: %w", oid, authn.ErrUnsupported)
	}
	a.mechOID = oid
	if bytes.Equal(oid, oidNTLM) {
		na := a.cfg.NTLM()
		if na == nil {
			return fmt.Errorf("spnego: no NTLM acceptor: %w", authn.ErrUnsupported)
		}
		a.mech, a.mechName = na, "ntlm"
		return nil
	}
	k := a.cfg.Kerberos()
	if k == nil {
		return fmt.Errorf("spnego: no Kerberos acceptor: %w", authn.ErrUnsupported)
	}
	a.mech, a.mechName = k, "kerberos"
	return nil
}

func (a *Acceptor) onInit(t *negTokenInit) ([]byte, bool, error) {
	a.mechList = t.mechTypesDER
	sel := -1
	for i, m := range t.mechTypes {
		if a.supported(m) {
			sel = i
			break
		}
	}
	if sel < 0 {
		return nil, false, fmt.Errorf("spnego: none of the client's %d mechanisms is enabled: %w", len(t.mechTypes), authn.ErrUnsupported)
	}
	if err := a.selectMech(t.mechTypes[sel]); err != nil {
		return nil, false, err
	}
	if sel != 0 {
		// Not the client's preferred mechanism: its optimistic token (if
		// any) is for another mechanism; ask for ours and demand MICs to
		// protect the choice (RFC 4178 5).
		a.micRequested = true
		return a.reply(acceptIncomplete, nil, nil), false, nil
	}
	if t.mechToken == nil {
		return a.reply(acceptIncomplete, nil, nil), false, nil
	}
	return a.advance(t.mechToken, t.mechListMIC)
}

func (a *Acceptor) onResp(t *negTokenResp) ([]byte, bool, error) {
	if t.negState == reject {
		return nil, false, fmt.Errorf("spnego: client rejected the negotiation: %w", authn.ErrBadCredentials)
	}
	if t.supportedMech != nil && !bytes.Equal(t.supportedMech, a.mechOID) {
		return nil, false, malformed("client names mechanism %x, selected %x", t.supportedMech, a.mechOID)
	}
	if a.mechDone {
		// We sent our final mechanism token and MIC; only the client's
		// mechListMIC is outstanding.
		if t.mechListMIC == nil || t.responseToken != nil {
			return nil, false, malformed("expected only the client's mechListMIC")
		}
		if err := a.verifyMIC(t.mechListMIC); err != nil {
			return nil, false, err
		}
		a.resetRC4()
		return a.reply(acceptCompleted, nil, nil), true, nil
	}
	if t.responseToken == nil {
		return nil, false, malformed("NegTokenResp without responseToken")
	}
	mic := t.mechListMIC
	if mic != nil && bytes.Equal(mic, t.responseToken) {
		// Old implementations repeat the response token as the MIC.
		mic = nil
	}
	return a.advance(t.responseToken, mic)
}

// advance feeds a mechanism token and finishes when the mechanism does.
func (a *Acceptor) advance(tok, inMIC []byte) ([]byte, bool, error) {
	out, done, err := a.mech.Step(a.leg.ctx, a.leg.ci, tok)
	if err != nil {
		return nil, false, err
	}
	if !done {
		if inMIC != nil {
			return nil, false, malformed("mechListMIC before the mechanism completed")
		}
		return a.reply(acceptIncomplete, out, nil), false, nil
	}
	a.mechDone = true
	mc, canMIC := a.mech.(MICContext)
	need := a.micRequested || a.ntlmUsedMIC()
	switch {
	case inMIC != nil:
		if err := a.verifyMIC(inMIC); err != nil {
			return nil, false, err
		}
	case need && out != nil && canMIC:
		// The client has not seen our last mechanism token yet, so it
		// cannot have produced its MIC: send ours and wait for it.
		sig, err := mc.SignMIC(a.mechList)
		if err != nil {
			return nil, false, fmt.Errorf("spnego: signing mechListMIC: %v: %w", err, authn.ErrBackend)
		}
		a.micSent = true
		return a.reply(acceptIncomplete, out, sig), false, nil
	case need:
		return nil, false, fmt.Errorf("spnego: mechListMIC required but absent: %w", authn.ErrBadCredentials)
	}
	var sig []byte
	if a.micRecv && !a.micSent {
		if sig, err = mc.SignMIC(a.mechList); err != nil {
			return nil, false, fmt.Errorf("spnego: signing mechListMIC: %v: %w", err, authn.ErrBackend)
		}
		a.micSent = true
	}
	if a.micRecv {
		a.resetRC4()
	}
	return a.reply(acceptCompleted, out, sig), true, nil
}

// ntlmUsedMIC: an NTLM AUTHENTICATE with a MIC obliges both sides to
// exchange mechListMICs (MS-SPNG 3.3.5.1).
func (a *Acceptor) ntlmUsedMIC() bool {
	na, ok := a.mech.(*ntlm.Acceptor)
	return ok && na.MICVerified()
}

func (a *Acceptor) verifyMIC(sig []byte) error {
	mc, ok := a.mech.(MICContext)
	if !ok {
		return fmt.Errorf("spnego: %s cannot verify a mechListMIC: %w", a.mechName, authn.ErrUnsupported)
	}
	if err := mc.VerifyMIC(a.mechList, sig); err != nil {
		return fmt.Errorf("spnego: mechListMIC does not verify: %v: %w", err, authn.ErrBadCredentials)
	}
	a.micRecv = true
	return nil
}

func (a *Acceptor) resetRC4() {
	if r, ok := a.mech.(rc4Resetter); ok {
		r.ResetRC4()
	}
}

// reply builds our NegTokenResp. supportedMech and request-mic only go in
// the first one.
func (a *Acceptor) reply(state int, tok, mic []byte) []byte {
	t := negTokenResp{negState: state, responseToken: tok, mechListMIC: mic}
	if !a.replied {
		t.supportedMech = a.mechOID
		if a.micRequested && state == acceptIncomplete {
			t.negState = requestMIC
		}
		a.replied = true
	}
	return t.marshal()
}

// Principal is valid after completion.
func (a *Acceptor) Principal() authn.Principal {
	if !a.done || a.mech == nil {
		return authn.Principal{}
	}
	return a.mech.Principal()
}

// ClaimedName is the name the mechanism's client claimed (for the audit of
// a failed logon; unverified).
func (a *Acceptor) ClaimedName() string {
	if c, ok := a.mech.(authn.Claimant); ok {
		return c.ClaimedName()
	}
	return ""
}

// Sealer is the mechanism's message protection after completion.
func (a *Acceptor) Sealer() authn.Sealer {
	if !a.done || a.mech == nil {
		return nil
	}
	return a.mech.Sealer()
}

// Mechanism names the selected mechanism ("ntlm", "kerberos", "" before
// selection), for audit and metrics.
func (a *Acceptor) Mechanism() string { return a.mechName }

// SPNEGO reports whether the client used SPNEGO framing (as opposed to a
// raw NTLM or Kerberos token).
func (a *Acceptor) SPNEGO() bool { return a.mode == modeSPNEGO }
