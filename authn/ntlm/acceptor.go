// Package ntlm is the server side of NTLM (MS-NLMP): an acceptor that
// answers NEGOTIATE with a CHALLENGE, verifies the client's NTLMv2
// AUTHENTICATE through a Verifier, checks MIC and channel binding, and then
// provides NTLM session security (sealing and signing) as an authn.Sealer.
//
// Only NTLMv2 with extended session security is accepted: NTLMv1, LM and
// anonymous logons are refused, as Windows does by default.
package ntlm

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/winrmd/winrmd/authn"
)

// Channel-binding hardening levels (WinRM CbtHardeningLevel).
const (
	CBTNone    = "none"
	CBTRelaxed = "relaxed"
	CBTStrict  = "strict"
)

// Config configures an Acceptor. Names left empty are derived from the
// host name.
type Config struct {
	Verifier Verifier
	// Names announced in the CHALLENGE TargetInfo. A standalone server has
	// NetBIOSDomain == NetBIOSComputer.
	NetBIOSComputer, NetBIOSDomain, DNSComputer, DNSDomain string
	// ChannelBinding is the expected 16-byte CBT (MD5 of the
	// gss_channel_bindings, see authn.TLSServerEndPointCBT) for a TLS
	// listener; nil on plain HTTP, where nothing is checked.
	ChannelBinding []byte
	// CBTLevel is "none", "relaxed" (default) or "strict".
	CBTLevel string
	// Hosts are this host's names for service binding: a client that sent
	// no channel binding (plain HTTP, or a client without CBT support) and
	// named a target service (MsvAvTargetName) must have named this host,
	// else the logon is refused as a relay. nil: the DNS and NetBIOS
	// computer names and the host name.
	Hosts *authn.HostNames
	// Now returns the current time (tests); time.Now when nil.
	Now func() time.Time
}

// state of the handshake.
type state int

const (
	stateNegotiate state = iota
	stateChallenge
	stateDone
	stateFailed
)

// Acceptor is one server-side NTLM context (one per TCP connection).
type Acceptor struct {
	cfg       Config
	cfgErr    error
	rand      io.Reader // crypto/rand.Reader; tests replace it
	state     state
	negotiate []byte // as received, for the MIC
	challenge []byte // as sent
	serverCh  [8]byte
	conn      authn.ConnInfo // of the current leg

	principal  authn.Principal
	flags      uint32
	session    *Session
	micChecked bool
	target     string
	cbt        string
	claimed    string // DOMAIN\user as the client sent it, for audit
}

var _ authn.Context = (*Acceptor)(nil)

// errFailed is returned by Step after the context failed once.
var errFailed = fmt.Errorf("ntlm: context failed earlier: %w", authn.ErrMalformed)

// NewAcceptor returns a fresh context. Configuration errors surface on the
// first Step.
func NewAcceptor(cfg Config) *Acceptor {
	a := &Acceptor{cfg: cfg, rand: rand.Reader}
	a.cfgErr = a.normalise()
	return a
}

func (a *Acceptor) normalise() error {
	c := &a.cfg
	if c.Verifier == nil {
		return errors.New("ntlm: Config.Verifier is nil")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch strings.ToLower(c.CBTLevel) {
	case "", CBTRelaxed:
		c.CBTLevel = CBTRelaxed
	case CBTNone, CBTStrict:
		c.CBTLevel = strings.ToLower(c.CBTLevel)
	default:
		return fmt.Errorf("ntlm: unknown CBT level %q", c.CBTLevel)
	}
	if c.ChannelBinding != nil && len(c.ChannelBinding) != 16 {
		return fmt.Errorf("ntlm: channel binding of %d bytes, want 16", len(c.ChannelBinding))
	}
	if c.NetBIOSComputer == "" || c.DNSComputer == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "localhost"
		}
		if c.DNSComputer == "" {
			c.DNSComputer = strings.ToLower(host)
		}
		if c.NetBIOSComputer == "" {
			c.NetBIOSComputer = netbiosName(host)
		}
	}
	if c.NetBIOSDomain == "" {
		c.NetBIOSDomain = c.NetBIOSComputer
	}
	if c.Hosts == nil {
		c.Hosts = authn.NewHostNames(c.DNSComputer, c.NetBIOSComputer)
	}
	return nil
}

// netbiosName is the first DNS label, upper-cased, at most 15 characters.
func netbiosName(host string) string {
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i]
	}
	host = strings.ToUpper(host)
	if len(host) > 15 {
		host = host[:15]
	}
	return host
}

// Step runs one leg: NEGOTIATE in, CHALLENGE out; then AUTHENTICATE in,
// nothing out and done. ctx bounds the credential verification; ci gives
// the client's address (passed to the Verifier, which rate-limits on it)
// and, on TLS, the channel binding to check (it replaces
// Config.ChannelBinding when set).
func (a *Acceptor) Step(ctx context.Context, ci authn.ConnInfo, in []byte) ([]byte, bool, error) {
	if ci.ChannelBinding != nil && len(ci.ChannelBinding) != 16 {
		return nil, false, fmt.Errorf("ntlm: channel binding of %d bytes, want 16: %w", len(ci.ChannelBinding), authn.ErrBackend)
	}
	a.conn = ci
	if a.cfgErr != nil {
		return nil, false, a.cfgErr
	}
	switch a.state {
	case stateDone:
		return nil, true, authn.ErrContextComplete
	case stateFailed:
		return nil, false, errFailed
	case stateNegotiate:
		out, err := a.onNegotiate(in)
		if err != nil {
			a.state = stateFailed
			return nil, false, err
		}
		a.state = stateChallenge
		return out, false, nil
	default:
		if err := a.onAuthenticate(ctx, in); err != nil {
			a.state = stateFailed
			return nil, false, err
		}
		a.state = stateDone
		return nil, true, nil
	}
}

// challengeFlags computes the CHALLENGE flags from the client's request
// (PROTOCOL 5.3): our fixed set, plus the security options the client
// asked for; exactly one character set; never LM_KEY.
func (a *Acceptor) challengeFlags(client uint32) uint32 {
	f := FlagRequestTarget | FlagNTLM | FlagAlwaysSign | FlagTargetInfo | FlagVersion
	f |= client & (FlagSign | FlagSeal | FlagKeyExch | Flag128 | Flag56 | FlagESS | FlagIdentify)
	if client&FlagUnicode != 0 || client&FlagOEM == 0 {
		f |= FlagUnicode
	} else {
		f |= FlagOEM
	}
	if a.isDomain() {
		f |= FlagTypeDomain
	} else {
		f |= FlagTypeServer
	}
	return f
}

func (a *Acceptor) isDomain() bool {
	return !strings.EqualFold(a.cfg.NetBIOSDomain, a.cfg.NetBIOSComputer)
}

// serverVersion announced in CHALLENGE: 10.0 build 20348, NTLM revision 15.
var serverVersion = [8]byte{10, 0, 0x7c, 0x4f, 0, 0, 0, 0x0f}

func (a *Acceptor) onNegotiate(in []byte) ([]byte, error) {
	neg, err := parseNegotiate(in)
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(a.rand, a.serverCh[:]); err != nil {
		return nil, fmt.Errorf("ntlm: random challenge: %v: %w", err, authn.ErrBackend)
	}
	a.negotiate = append([]byte(nil), in...)
	flags := a.challengeFlags(neg.flags)

	var ti []byte
	ti = appendAV(ti, avNbDomainName, encodeUTF16(a.cfg.NetBIOSDomain))
	ti = appendAV(ti, avNbComputerName, encodeUTF16(a.cfg.NetBIOSComputer))
	if a.cfg.DNSDomain != "" {
		ti = appendAV(ti, avDNSDomainName, encodeUTF16(a.cfg.DNSDomain))
	}
	if a.cfg.DNSComputer != "" {
		ti = appendAV(ti, avDNSComputerName, encodeUTF16(a.cfg.DNSComputer))
	}
	var ts [8]byte
	binary.LittleEndian.PutUint64(ts[:], fileTime(a.cfg.Now()))
	ti = appendAV(ti, avTimestamp, ts[:])
	ti = appendAV(ti, avEOL, nil)

	target := a.cfg.NetBIOSComputer
	if a.isDomain() {
		target = a.cfg.NetBIOSDomain
	}
	a.challenge = buildChallenge(challengeParams{
		flags:      flags,
		challenge:  a.serverCh,
		targetName: target,
		targetInfo: ti,
		version:    serverVersion,
	})
	return a.challenge, nil
}

// fileTime is a Windows FILETIME: 100 ns intervals since 1601-01-01 UTC.
func fileTime(t time.Time) uint64 {
	return uint64(t.UnixNano()/100) + 116444736000000000
}

func (a *Acceptor) onAuthenticate(ctx context.Context, in []byte) error {
	m, err := parseAuthenticate(in)
	if err != nil {
		return err
	}
	unicode := m.flags&FlagUnicode != 0
	user, err := decodeString(m.user, unicode, "UserName")
	if err != nil {
		return err
	}
	domain, err := decodeString(m.domain, unicode, "DomainName")
	if err != nil {
		return err
	}
	ws, err := decodeString(m.workstation, unicode, "Workstation")
	if err != nil {
		return err
	}
	a.claimed = user
	if domain != "" {
		a.claimed = domain + `\` + user
	}

	// Refuse anonymous, LM-only and NTLMv1 before any verification.
	if m.flags&FlagAnonymous != 0 || (user == "" && len(m.nt) == 0 && (len(m.lm) == 0 || (len(m.lm) == 1 && m.lm[0] == 0))) {
		return fmt.Errorf("ntlm: anonymous logon refused: %w", authn.ErrUnsupported)
	}
	if err := checkV2Shape(m.nt); err != nil {
		return err
	}
	if user == "" {
		return fmt.Errorf("ntlm: empty user name: %w", authn.ErrBadCredentials)
	}
	blob, err := parseClientBlob(m.nt[ntProofLength:])
	if err != nil {
		return err
	}
	flags := m.flags
	if flags&(FlagSign|FlagSeal) != 0 && flags&FlagESS == 0 {
		return fmt.Errorf("ntlm: signing/sealing without extended session security: %w", authn.ErrUnsupported)
	}
	if flags&FlagSeal != 0 && flags&Flag128 == 0 {
		return fmt.Errorf("ntlm: sealing with less than 128-bit keys refused: %w", authn.ErrUnsupported)
	}
	if flags&FlagKeyExch != 0 && len(m.encKey) != sessionKeyLength {
		return malformed("KEY_EXCH with a %d-byte EncryptedRandomSessionKey", len(m.encKey))
	}

	res, err := a.cfg.Verifier.Verify(ctx, VerifyRequest{
		Remote:          a.conn.Remote,
		User:            user,
		Domain:          domain,
		Workstation:     ws,
		ServerChallenge: a.serverCh,
		NtResponse:      m.nt,
		LmResponse:      m.lm,
	})
	if err != nil {
		return err
	}
	if len(res.SessionBaseKey) != sessionKeyLength {
		return fmt.Errorf("ntlm: verifier returned a %d-byte session key: %w", len(res.SessionBaseKey), authn.ErrBackend)
	}

	// From here the blob is authentic: its AV pairs are covered by
	// NTProofStr, which the verifier checked.
	esk := res.SessionBaseKey // KeyExchangeKey == SessionBaseKey for NTLMv2
	if flags&FlagKeyExch != 0 {
		esk = rc4Once(esk, m.encKey)
	}

	micRequired := blob.avFlags&avFlagMIC != 0
	micPresent := m.mic != nil && (micRequired || !allZero(m.mic))
	if micRequired && m.mic == nil {
		return fmt.Errorf("ntlm: MsvAvFlags announces a MIC but the message has none: %w", authn.ErrBadCredentials)
	}
	if micPresent {
		want := computeMIC(esk, a.negotiate, a.challenge, m.raw, m.micAt)
		if subtle.ConstantTimeCompare(want, m.mic) != 1 {
			return fmt.Errorf("ntlm: MIC does not verify: %w", authn.ErrBadCredentials)
		}
		a.micChecked = true
	}
	if err := a.checkBinding(blob.channelBindings, blob.targetName); err != nil {
		return err
	}

	u, d := user, domain
	if res.User != "" {
		u, d = res.User, res.Domain
	}
	name := u
	if d != "" {
		name = d + `\` + u
	}
	a.principal = authn.Principal{Name: name, Domain: d, Mechanism: "ntlm", Verifier: res.Verifier,
		Service: blob.targetName, Binding: a.cbt}
	a.flags = flags
	a.target = blob.targetName
	if flags&FlagESS != 0 {
		a.session = newSession(flags, esk, true)
	}
	a.negotiate, a.challenge = nil, nil
	return nil
}

func allZero(b []byte) bool {
	var x byte
	for _, c := range b {
		x |= c
	}
	return x == 0
}

// checkBinding applies the hardening level to the client's
// MsvAvChannelBindings and MsvAvTargetName (both inside the NTLMv2 blob,
// which NTProofStr authenticates, so a relay cannot change them):
//
//   - TLS with a channel binding: it must be this channel's ("match").
//   - TLS without one: strict refuses; relaxed falls back to service
//     binding, as HTTP.sys extended protection does.
//   - Service binding (no channel binding, TLS or plain HTTP): a target
//     name, when the client sent one, must be HTTP/, WSMAN/ or HOST/ this
//     host ("service-name"). A client authenticating to an attacker's
//     server names the attacker's host, so its relayed logon is refused.
//     A client that sends neither (older clients) is admitted on TLS by
//     relaxed ("absent") and on plain HTTP, where every message is then
//     sealed with a key only the client has ("not-checked").
//
// Level none checks nothing ("not-checked").
func (a *Acceptor) checkBinding(got []byte, target string) error {
	want := a.cfg.ChannelBinding
	if a.conn.ChannelBinding != nil {
		want = a.conn.ChannelBinding
	}
	present := got != nil && !allZero(got)
	switch {
	case a.cfg.CBTLevel == CBTNone:
		a.cbt = "not-checked"
		return nil
	case want != nil && present && subtle.ConstantTimeCompare(got, want) == 1:
		a.cbt = "match"
		return nil
	case want != nil && present:
		return fmt.Errorf("ntlm: channel binding does not match this TLS channel: %w", authn.ErrChannelBinding)
	case want != nil && a.cfg.CBTLevel == CBTStrict:
		return fmt.Errorf("ntlm: channel binding required (strict) but absent: %w", authn.ErrChannelBinding)
	case target != "":
		if !a.cfg.Hosts.IsServiceName(target) {
			return fmt.Errorf("ntlm: service binding: the client meant %q, not this host (relayed logon?; host.names lists this host's other names): %w", target, authn.ErrChannelBinding)
		}
		a.cbt = "service-name"
		return nil
	case want != nil:
		a.cbt = "absent"
		return nil
	default:
		a.cbt = "not-checked"
		return nil
	}
}

// Principal is the authenticated client; valid after completion.
func (a *Acceptor) Principal() authn.Principal { return a.principal }

// Sealer returns the session security when sealing was negotiated, else nil.
func (a *Acceptor) Sealer() authn.Sealer {
	if a.state != stateDone || a.session == nil || a.flags&FlagSeal == 0 {
		return nil
	}
	return a.session
}

// Session returns the signing/sealing state (nil before completion or
// without extended session security). SPNEGO uses it for mechListMIC.
func (a *Acceptor) Session() *Session {
	if a.state != stateDone {
		return nil
	}
	return a.session
}

// Complete reports whether the handshake finished successfully.
func (a *Acceptor) Complete() bool { return a.state == stateDone }

// Flags returns the flags the client authenticated with.
func (a *Acceptor) Flags() uint32 { return a.flags }

// MICVerified reports whether the AUTHENTICATE carried a MIC that verified;
// SPNEGO then requires the mechListMIC.
func (a *Acceptor) MICVerified() bool { return a.micChecked }

// ClaimedName is the name the client's AUTHENTICATE claimed (unverified;
// for the audit of a failed logon), "" before one was decoded.
func (a *Acceptor) ClaimedName() string { return a.claimed }

// ClientTargetName is the SPN from the client's MsvAvTargetName ("" if none).
func (a *Acceptor) ClientTargetName() string { return a.target }

// ChannelBindingResult describes the binding check for audit: "match",
// "service-name", "absent" or "not-checked".
func (a *Acceptor) ChannelBindingResult() string { return a.cbt }

var errNoSession = fmt.Errorf("ntlm: no session security (context incomplete or no extended session security): %w", authn.ErrUnsupported)

// SignMIC signs msg with the next outbound sequence number (GSS_GetMIC).
func (a *Acceptor) SignMIC(msg []byte) ([]byte, error) {
	s := a.Session()
	if s == nil {
		return nil, errNoSession
	}
	return s.SignMIC(msg)
}

// VerifyMIC verifies a client signature over msg (GSS_VerifyMIC).
func (a *Acceptor) VerifyMIC(msg, sig []byte) error {
	s := a.Session()
	if s == nil {
		return errNoSession
	}
	return s.VerifyMIC(msg, sig)
}

// ResetRC4 re-initialises both RC4 streams (SPNEGO, after mechListMIC).
func (a *Acceptor) ResetRC4() {
	if s := a.Session(); s != nil {
		s.ResetRC4()
	}
}
