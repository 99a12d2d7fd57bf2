// Package kerberos is the Kerberos V5 GSS-API acceptor (RFC 4120, RFC 4121,
// MS-KILE) for the Negotiate and Kerberos schemes, on gokrb5's ASN.1 and
// crypto types.
//
// One Acceptor is one security context (one per TCP connection). Step takes
// the client's GSS-framed AP-REQ (raw, under the Kerberos scheme or a bare
// Negotiate, or as SPNEGO's mechToken) and:
//
//  1. finds the key in the keytab for the ticket's service principal, kvno
//     and enctype (any principal of the keytab unless ServicePrincipals
//     narrows it), and says which of the three did not match;
//  2. decrypts the ticket (usage 2) and checks its times against the clock
//     with MaxClockSkew of tolerance;
//  3. decrypts the authenticator (usage 11), matches its client to the
//     ticket's, checks its time, and records it in the replay cache;
//  4. reads the 0x8003 checksum: channel binding on TLS listeners with
//     NTLM's hardening levels (none / relaxed / strict), GSS flags, and a
//     delegated TGT (KRB-CRED) when the client forwarded one;
//  5. verifies the PAC's server signature with the service key when the
//     ticket carries one (Active Directory) and exposes its SIDs;
//  6. answers mutual authentication with an AP-REP carrying a fresh
//     acceptor subkey and our initial sequence number.
//
// The complete context seals WinRM bodies with RFC 4121 wrap tokens
// (wrap.go) and signs/verifies SPNEGO mechListMICs.
package kerberos

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/pac"
)

// CBT hardening levels (the same as NTLM's, PROTOCOL 5.8).
const (
	CBTNone    = "none"
	CBTRelaxed = "relaxed"
	CBTStrict  = "strict"
)

// DefaultMaxClockSkew is RFC 4120's and Windows' five minutes.
const DefaultMaxClockSkew = 5 * time.Minute

// Config is shared by every context of one listener configuration.
type Config struct {
	Keytab *Keytab
	// ServicePrincipals narrows the accepted service principals
	// ("HTTP/host.example.com", with or without "@REALM"); empty accepts
	// every principal in the keytab.
	ServicePrincipals []string
	// Realm is the default realm: its principals map to the bare user name
	// ("alice@REALM" -> "alice", like krb5's default auth_to_local). Empty:
	// the realm of the keytab's first entry.
	Realm string
	// Realms are further client realms accepted; their principals stay
	// qualified ("alice@OTHER") for NSS (winbind, sssd) to resolve.
	// Principals of any other realm are refused.
	Realms []string
	// MaxClockSkew tolerates clock differences (DefaultMaxClockSkew when 0).
	MaxClockSkew time.Duration
	// Replay is the replay cache shared by all contexts (required).
	Replay *ReplayCache
	// ChannelBinding is the expected 16-byte CBT of the TLS channel
	// (authn.TLSServerEndPointCBT); nil on plain HTTP.
	ChannelBinding []byte
	// CBTLevel is "none", "relaxed" (default) or "strict".
	CBTLevel string
	// Now returns the current time (tests); time.Now when nil.
	Now func() time.Time
	// Constrained, when set, gives a logon without a forwarded TGT an
	// S4U2Proxy credential cache (kerberos.constrained_delegation; see
	// s4u.go). Nil: off.
	Constrained *ConstrainedDelegation
}

// Delegation is what a client forwarded with its AP-REQ: a KRB-CRED and
// the key its encrypted part decrypts with.
type Delegation struct {
	Cred messages.KRBCred // EncPart decrypted (DecryptedEncPart set)
}

// Info describes a complete context, for logs and tests.
type Info struct {
	Client          string // "alice@REALM"
	Service         string // "HTTP/host@REALM"
	EType           int32  // session (wrap) key enctype
	Flags           uint32 // GSS checksum flags
	Mutual          bool
	CBT             string // "match", "absent", "not-checked"
	PAC             bool   // a PAC was present and its server signature verified
	UserSID         string
	GroupSIDs       []string
	TicketExpires   time.Time
	DelegatedTicket bool
	// Constrained is "granted" when the logon got an S4U2Proxy cache, else
	// why not (empty when constrained delegation is off or a TGT was
	// forwarded).
	Constrained string
}

// Acceptor is one server-side Kerberos context.
type Acceptor struct {
	cfg  *Config
	conn authn.ConnInfo // of the current leg

	done, failed bool
	principal    authn.Principal
	info         Info
	seq          *seqState
	deleg        *Delegation
}

var _ authn.Context = (*Acceptor)(nil)

// Validate normalises a configuration.
func (c *Config) Validate() error {
	if c.Keytab == nil {
		return fmt.Errorf("kerberos: no keytab")
	}
	if c.Replay == nil {
		return fmt.Errorf("kerberos: no replay cache")
	}
	switch strings.ToLower(c.CBTLevel) {
	case "", CBTRelaxed:
		c.CBTLevel = CBTRelaxed
	case CBTNone, CBTStrict:
		c.CBTLevel = strings.ToLower(c.CBTLevel)
	default:
		return fmt.Errorf("kerberos: unknown CBT level %q", c.CBTLevel)
	}
	if c.ChannelBinding != nil && len(c.ChannelBinding) != 16 {
		return fmt.Errorf("kerberos: channel binding of %d bytes, want 16", len(c.ChannelBinding))
	}
	if c.MaxClockSkew <= 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.Realm == "" {
		if ps := c.Keytab.Principals(); len(ps) > 0 {
			c.Realm = ps[0][strings.LastIndexByte(ps[0], '@')+1:]
		}
	}
	return nil
}

// NewAcceptor returns a fresh context; cfg must have been validated.
func NewAcceptor(cfg *Config) *Acceptor { return &Acceptor{cfg: cfg} }

func (a *Acceptor) now() time.Time {
	if a.cfg.Now != nil {
		return a.cfg.Now()
	}
	return time.Now()
}

// Step consumes the client's AP-REQ token. Kerberos completes in one leg:
// done is true on success, out is the AP-REP token when the client asked
// for mutual authentication. ci's channel binding, when set (TLS),
// replaces Config.ChannelBinding; the leg makes no backend call, so ctx
// has nothing to bound.
func (a *Acceptor) Step(_ context.Context, ci authn.ConnInfo, in []byte) ([]byte, bool, error) {
	if ci.ChannelBinding != nil && len(ci.ChannelBinding) != 16 {
		return nil, false, fmt.Errorf("kerberos: channel binding of %d bytes, want 16: %w", len(ci.ChannelBinding), authn.ErrBackend)
	}
	a.conn = ci
	switch {
	case a.done:
		return nil, true, authn.ErrContextComplete
	case a.failed:
		return nil, false, fmt.Errorf("kerberos: context failed earlier: %w", authn.ErrMalformed)
	}
	out, err := a.safeAccept(in)
	if err != nil {
		a.failed = true
		return nil, false, err
	}
	a.done = true
	return out, true, nil
}

// safeAccept: gokrb5's ASN.1 and crypto code indexes its input; whatever a
// hostile token makes it do, the result is a refused logon.
func (a *Acceptor) safeAccept(in []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, malformed("token crashed the decoder (%v)", r)
		}
	}()
	return a.accept(in)
}

// decryptTicket decrypts the ticket's enc-part (key usage 2).
func decryptTicket(t *messages.Ticket, key types.EncryptionKey) error {
	b, err := decrypt(t.EncPart, key, 2)
	if err != nil {
		return err
	}
	return t.DecryptedEncPart.Unmarshal(b)
}

// decryptAuthenticator decrypts the authenticator (key usage 11).
func decryptAuthenticator(req *messages.APReq, key types.EncryptionKey) error {
	b, err := decrypt(req.EncryptedAuthenticator, key, 11)
	if err != nil {
		return err
	}
	return req.Authenticator.Unmarshal(b)
}

func (a *Acceptor) accept(in []byte) ([]byte, error) {
	oid, tokID, msg, err := ParseInitialToken(in)
	if err != nil {
		return nil, err
	}
	if tokID == tokKRBError {
		return nil, fmt.Errorf("kerberos: the client sent a KRB-ERROR instead of an AP-REQ: %w", authn.ErrBadCredentials)
	}
	if tokID != tokAPReq {
		return nil, malformed("expected an AP-REQ, got TOK_ID %x", tokID)
	}
	var req messages.APReq
	if err := req.Unmarshal(msg); err != nil {
		return nil, malformed("AP-REQ: %v", err)
	}
	t := &req.Ticket
	if req.PVNO != 5 || t.TktVNO != 5 || len(t.SName.NameString) == 0 {
		return nil, malformed("AP-REQ version %d, ticket version %d", req.PVNO, t.TktVNO)
	}
	service := strings.Join(t.SName.NameString, "/") + "@" + t.Realm
	a.info.Service = service
	if !a.serviceAllowed(t.SName, t.Realm) {
		return nil, fmt.Errorf("kerberos: ticket for %s, which is not one of kerberos.service_principals %v: %w", service, a.cfg.ServicePrincipals, authn.ErrBadCredentials)
	}
	if t.SName.NameString[0] == "krbtgt" {
		return nil, fmt.Errorf("kerberos: AP-REQ with a ticket-granting ticket: %w", authn.ErrBadCredentials)
	}

	// 1-2. The ticket.
	kl := a.cfg.Keytab.lookup(t.SName, t.Realm, t.EncPart.KVNO, t.EncPart.EType)
	if kl.err != nil {
		return nil, kl.err
	}
	if err := decryptTicket(t, kl.key); err != nil {
		return nil, fmt.Errorf("kerberos: ticket for %s does not decrypt with the keytab's key (kvno %d, enctype %d): the keytab is stale or belongs to another account: %w",
			service, t.EncPart.KVNO, t.EncPart.EType, authn.ErrBadCredentials)
	}
	tp := &t.DecryptedEncPart
	now := a.now().UTC()
	skew := a.cfg.MaxClockSkew
	client := strings.Join(tp.CName.NameString, "/") + "@" + tp.CRealm
	a.info.Client = client
	a.info.TicketExpires = tp.EndTime
	start := tp.StartTime
	if start.IsZero() {
		start = tp.AuthTime
	}
	switch {
	case types.IsFlagSet(&tp.Flags, flags.Invalid):
		return nil, fmt.Errorf("kerberos: ticket of %s for %s is marked invalid: %w", client, service, authn.ErrBadCredentials)
	case start.Sub(now) > skew:
		return nil, fmt.Errorf("kerberos: ticket of %s not valid until %s (clock skew? now %s, max_clock_skew %s): %w",
			client, start.Format(time.RFC3339), now.Format(time.RFC3339), skew, authn.ErrBadCredentials)
	case now.Sub(tp.EndTime) > skew:
		return nil, fmt.Errorf("kerberos: ticket of %s expired at %s (now %s): %w", client, tp.EndTime.Format(time.RFC3339), now.Format(time.RFC3339), authn.ErrBadCredentials)
	}

	// 3. The authenticator.
	if err := decryptAuthenticator(&req, tp.Key); err != nil {
		return nil, fmt.Errorf("kerberos: authenticator of %s does not decrypt with the ticket's session key: %w", client, authn.ErrBadCredentials)
	}
	au := &req.Authenticator
	if !au.CName.Equal(tp.CName) || au.CRealm != tp.CRealm {
		return nil, fmt.Errorf("kerberos: authenticator client %s@%s differs from the ticket's %s: %w",
			strings.Join(au.CName.NameString, "/"), au.CRealm, client, authn.ErrBadCredentials)
	}
	ctime := au.CTime.Add(time.Duration(au.Cusec) * time.Microsecond)
	if d := now.Sub(ctime); d > skew || -d > skew {
		return nil, fmt.Errorf("kerberos: clock skew: the authenticator of %s is dated %s, this host says %s (more than max_clock_skew %s apart): %w",
			client, ctime.Format(time.RFC3339), now.Format(time.RFC3339), skew, authn.ErrBadCredentials)
	}

	// 4. The GSS checksum.
	if au.Cksum.CksumType != gssChecksumType {
		return nil, malformed("authenticator checksum type %d, want the GSS-API type %#x", au.Cksum.CksumType, gssChecksumType)
	}
	ck, err := parseGSSChecksum(au.Cksum.Checksum)
	if err != nil {
		return nil, err
	}
	a.info.Flags = ck.flags
	if err := a.checkCBT(ck.bnd); err != nil {
		return nil, fmt.Errorf("%s: %w", client, err)
	}
	// Only now, with everything else verified, does the authenticator
	// count as used.
	if err := a.cfg.Replay.check(req.EncryptedAuthenticator.Cipher, ctime.Add(2*skew)); err != nil {
		return nil, fmt.Errorf("%s: %w", client, err)
	}

	// Who it is.
	p, err := a.mapPrincipal(tp.CName, tp.CRealm)
	if err != nil {
		return nil, err
	}

	// 5. The PAC, when the KDC put one in (Active Directory, Samba): its
	// group SIDs go to the authorizer (authorization.allowed_sids).
	sids, err := a.readPAC(t, kl.key)
	if err != nil {
		return nil, err
	}
	p.SIDs = sids

	// Delegation: a forwarded TGT.
	if ck.flags&flagDeleg != 0 && ck.deleg != nil {
		d, err := decodeDelegation(ck.deleg, tp.Key, au.SubKey)
		if err != nil {
			return nil, err
		}
		a.deleg = d
		a.info.DelegatedTicket = true
	}
	// Constrained delegation when nothing was forwarded. A failure costs
	// the shell its second hop, not the logon.
	var s4u *authn.Secret
	if a.deleg == nil && a.cfg.Constrained != nil {
		if s4u, err = a.cfg.Constrained.Cache(t); err != nil {
			a.info.Constrained = err.Error()
			s4u = nil
		} else {
			a.info.Constrained = "granted"
		}
	}

	// 6. Keys and the reply.
	mutual := ck.flags&flagMutual != 0 || types.IsFlagSet(&req.APOptions, 2 /* mutual-required */)
	a.info.Mutual = mutual
	recvSeq := uint64(uint32(au.SeqNumber))
	var out []byte
	if mutual {
		etype := tp.Key.KeyType
		if len(au.SubKey.KeyValue) > 0 {
			etype = au.SubKey.KeyType
		}
		sub, err := newSubkey(etype)
		if err != nil {
			return nil, fmt.Errorf("kerberos: acceptor subkey of enctype %d: %v: %w", etype, err, authn.ErrUnsupported)
		}
		seq, err := newSeqNumber()
		if err != nil {
			return nil, fmt.Errorf("kerberos: random: %v: %w", err, authn.ErrBackend)
		}
		rep, err := buildAPRep(tp.Key, au.CTime, au.Cusec, &sub, seq)
		if err != nil {
			return nil, err
		}
		out = frameToken(oid, tokAPRep, rep)
		a.info.EType = sub.KeyType
		a.seq, _ = newSeqState(sub, true, true, seq, recvSeq)
	} else {
		key := tp.Key
		if len(au.SubKey.KeyValue) > 0 {
			key = au.SubKey
		}
		a.info.EType = key.KeyType
		// Without an AP-REP both directions start at the initiator's number.
		a.seq, _ = newSeqState(key, true, false, recvSeq, recvSeq)
	}
	p.Client = client
	if a.deleg != nil {
		cc, err := a.deleg.CCache()
		if err != nil {
			return nil, err
		}
		p.Delegated = cc
	} else if s4u != nil {
		p.Delegated = s4u
	}
	a.principal = p
	return out, nil
}

// serviceAllowed applies kerberos.service_principals.
func (a *Acceptor) serviceAllowed(sname types.PrincipalName, realm string) bool {
	if len(a.cfg.ServicePrincipals) == 0 {
		return true
	}
	name := strings.Join(sname.NameString, "/")
	for _, sp := range a.cfg.ServicePrincipals {
		n, r, hasRealm := strings.Cut(sp, "@")
		if strings.EqualFold(n, name) && (!hasRealm || r == realm) {
			return true
		}
	}
	return false
}

// checkCBT applies the hardening level to the authenticator's Bnd. With no
// binding to compare (plain HTTP, or a client that sent none under
// "relaxed"), the service binding still holds: the ticket was issued for
// one of our service principals (serviceAllowed and the keytab lookup).
func (a *Acceptor) checkCBT(got []byte) error {
	want := a.cfg.ChannelBinding
	if a.conn.ChannelBinding != nil {
		want = a.conn.ChannelBinding
	}
	present := false
	for _, b := range got {
		if b != 0 {
			present = true
			break
		}
	}
	switch {
	case want == nil || a.cfg.CBTLevel == CBTNone:
		a.info.CBT = "not-checked"
		return nil
	case present && subtle.ConstantTimeCompare(got, want) == 1:
		a.info.CBT = "match"
		return nil
	case present:
		return fmt.Errorf("kerberos: channel binding does not match this TLS channel: %w", authn.ErrChannelBinding)
	case a.cfg.CBTLevel == CBTStrict:
		return fmt.Errorf("kerberos: channel binding required (strict) but absent: %w", authn.ErrChannelBinding)
	default:
		a.info.CBT = "absent"
		return nil
	}
}

// mapPrincipal applies the realm rules: the default realm is stripped,
// other accepted realms stay qualified, the rest is refused; principals
// with an instance ("svc/host") never name a user.
func (a *Acceptor) mapPrincipal(cname types.PrincipalName, realm string) (authn.Principal, error) {
	full := strings.Join(cname.NameString, "/") + "@" + realm
	if len(cname.NameString) != 1 || cname.NameString[0] == "" {
		return authn.Principal{}, fmt.Errorf("kerberos: %s has an instance and maps to no local account: %w", full, authn.ErrUnknownAccount)
	}
	user := cname.NameString[0]
	switch {
	case realm == a.cfg.Realm:
		return authn.Principal{Name: user, Mechanism: "kerberos"}, nil
	case slices.Contains(a.cfg.Realms, realm):
		return authn.Principal{Name: user + "@" + realm, Domain: realm, Mechanism: "kerberos", Verifier: authn.VerifiedDomain}, nil
	}
	return authn.Principal{}, fmt.Errorf("kerberos: %s: realm %s is neither kerberos.realm (%s) nor in kerberos.realms: %w", full, realm, a.cfg.Realm, authn.ErrUnknownAccount)
}

// readPAC verifies the PAC (authn/pac: the server signature with the
// service key, the client info against this ticket) and reads its SIDs.
// The KDC signature needs the krbtgt key, which only the KDC has (a service
// trusts it because only the KDC could have encrypted the ticket).
func (a *Acceptor) readPAC(t *messages.Ticket, key types.EncryptionKey) (*authn.SIDs, error) {
	raw, err := pac.FromAuthorizationData(t.DecryptedEncPart.AuthorizationData)
	if errors.Is(err, pac.ErrNoPAC) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kerberos: PAC of %s rejected: %v: %w", a.info.Client, err, authn.ErrBadCredentials)
	}
	tp := &t.DecryptedEncPart
	info, err := pac.Verify(raw, key, strings.Join(tp.CName.NameString, "/"), tp.AuthTime)
	if err != nil {
		return nil, fmt.Errorf("kerberos: PAC of %s rejected: %v: %w", a.info.Client, err, authn.ErrBadCredentials)
	}
	a.info.PAC = true
	if info.UserSID != "" {
		a.info.UserSID, a.info.GroupSIDs = info.UserSID, info.GroupSIDs
	}
	return info.Principal(), nil
}

// Principal is valid once the context is complete.
func (a *Acceptor) Principal() authn.Principal {
	if !a.done {
		// The client name, once the ticket decrypted, names the failure
		// in the log and the audit record.
		return authn.Principal{Name: a.info.Client, Mechanism: "kerberos"}
	}
	return a.principal
}

// Sealer is the wrap-token protection of the complete context, or nil
// when the session enctype has no implemented wrap (RC4, DES3).
func (a *Acceptor) Sealer() authn.Sealer {
	if !a.done || a.seq == nil {
		return nil
	}
	return sealer{a.seq}
}

// SignMIC makes our mechListMIC (spnego.MICContext).
func (a *Acceptor) SignMIC(msg []byte) ([]byte, error) {
	if !a.done || a.seq == nil {
		return nil, fmt.Errorf("kerberos: no complete context for a MIC: %w", authn.ErrUnsupported)
	}
	return a.seq.MIC(msg)
}

// VerifyMIC checks the client's mechListMIC.
func (a *Acceptor) VerifyMIC(msg, sig []byte) error {
	if !a.done || a.seq == nil {
		return fmt.Errorf("kerberos: no complete context for a MIC: %w", authn.ErrUnsupported)
	}
	return a.seq.VerifyMIC(msg, sig)
}

// Info describes the complete context.
func (a *Acceptor) Info() Info { return a.info }

// Delegation is the forwarded TGT, or nil.
func (a *Acceptor) Delegation() *Delegation { return a.deleg }
