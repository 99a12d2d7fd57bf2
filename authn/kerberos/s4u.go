package kerberos

// Constrained delegation (MS-SFU S4U2Proxy) for shells whose client did not
// forward a TGT: the shell gets the proxy credential cache that
// authn/delegation composes from the service account's TGT and the user's
// evidence ticket (the very ticket of this AP-REQ), and MIT's GSSAPI in the
// shell asks the KDC for S4U2Proxy tickets to the services the account is
// trusted for (msDS-AllowedToDelegateTo); the KDC refuses every other.
//
// The service account's TGT comes from an AS exchange with its keytab key
// (gokrb5, in the daemon: no kinit process, no file), kept until five
// minutes before it expires. The security trade-off is in the README
// ("Constrained delegation"): every such shell holds that TGT.

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/delegation"
)

// tgtRefreshMargin: a cached service TGT is renewed this long before it
// expires, so a shell never starts with one about to lapse.
const tgtRefreshMargin = 5 * time.Minute

// ConstrainedDelegation hands out S4U2Proxy credential caches. Safe for
// concurrent use.
type ConstrainedDelegation struct {
	// Account is the service account holding winrmd's SPNs, as its keytab
	// entry names it ("wrmdsvc" or "wrmdsvc@REALM"; a machine account is
	// "HOST$").
	Account string
	Realm   string // of Account; empty: the keytab's default realm
	// Krb5Conf names the KDCs ("" means $KRB5_CONFIG, else /etc/krb5.conf).
	Krb5Conf string
	Keytab   *Keytab
	Now      func() time.Time
	// Logf reports why a logon got no S4U2Proxy cache (the logon itself
	// goes on without a second hop); nil discards.
	Logf func(format string, args ...any)

	mu  sync.Mutex
	tgt *delegation.Credential
}

// TGT returns the service account's TGT, from the cache or a new AS
// exchange.
func (c *ConstrainedDelegation) TGT() (delegation.Credential, error) {
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tgt != nil && now.Add(tgtRefreshMargin).Before(c.tgt.EndTime) {
		return *c.tgt, nil
	}
	user, realm, _ := strings.Cut(c.Account, "@")
	if realm == "" {
		realm = c.Realm
	}
	krb5conf := c.Krb5Conf
	if krb5conf == "" {
		krb5conf = os.Getenv("KRB5_CONFIG")
	}
	if krb5conf == "" {
		krb5conf = "/etc/krb5.conf"
	}
	cfg, err := config.Load(krb5conf)
	if err != nil {
		return delegation.Credential{}, fmt.Errorf("kerberos.constrained_delegation: %s: %v: %w", krb5conf, err, authn.ErrBackend)
	}
	if realm == "" {
		realm = cfg.LibDefaults.DefaultRealm
	}
	if user == "" || realm == "" {
		return delegation.Credential{}, errors.New("kerberos.constrained_delegation: needs an account and a realm")
	}
	kt, err := c.Keytab.current()
	if err != nil {
		return delegation.Credential{}, err
	}
	cl := client.NewWithKeytab(user, realm, kt, cfg, client.DisablePAFXFAST(true))
	defer cl.Destroy()
	cname := types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, user)
	req, err := messages.NewASReqForTGT(realm, cfg, cname)
	if err != nil {
		return delegation.Credential{}, fmt.Errorf("kerberos.constrained_delegation: AS-REQ for %s@%s: %v", user, realm, err)
	}
	rep, err := cl.ASExchange(realm, req, 0)
	if err != nil {
		return delegation.Credential{}, fmt.Errorf("kerberos.constrained_delegation: TGT for %s@%s with the keytab: %v: %w", user, realm, err, authn.ErrBackend)
	}
	tb, err := rep.Ticket.Marshal()
	if err != nil {
		return delegation.Credential{}, fmt.Errorf("kerberos.constrained_delegation: TGT: %v", err)
	}
	e := rep.DecryptedEncPart
	tgt := delegation.Credential{
		Client:  principal(rep.CName, rep.CRealm),
		Server:  principal(e.SName, e.SRealm),
		KeyType: uint16(e.Key.KeyType), Key: e.Key.KeyValue,
		AuthTime: e.AuthTime, StartTime: e.StartTime, EndTime: e.EndTime, RenewTill: e.RenewTill,
		Flags:  ticketFlags(e.Flags.Bytes),
		Ticket: tb,
	}
	c.tgt = &tgt
	return tgt, nil
}

// Cache composes the proxy credential cache for the client of t (the
// AP-REQ's ticket, decrypted). It refuses a ticket that is not forwardable
// (the KDC would refuse S4U2Proxy with it: a sensitive account, or a
// client that asked for no forwardable tickets).
func (c *ConstrainedDelegation) Cache(t *messages.Ticket) (*authn.Secret, error) {
	s, err := c.cache(t)
	if err != nil && c.Logf != nil {
		tp := &t.DecryptedEncPart
		c.Logf("kerberos.constrained_delegation: no S4U2Proxy cache for %s@%s: %v",
			strings.Join(tp.CName.NameString, "/"), tp.CRealm, err)
	}
	return s, err
}

func (c *ConstrainedDelegation) cache(t *messages.Ticket) (*authn.Secret, error) {
	tp := &t.DecryptedEncPart
	if !types.IsFlagSet(&tp.Flags, flags.Forwardable) {
		return nil, errors.New("the ticket is not forwardable (the account may be sensitive and cannot be delegated)")
	}
	bare := *t
	bare.DecryptedEncPart = messages.EncTicketPart{}
	tb, err := bare.Marshal()
	if err != nil {
		return nil, fmt.Errorf("evidence ticket: %v", err)
	}
	tgt, err := c.TGT()
	if err != nil {
		return nil, err
	}
	ev := delegation.Credential{
		Client:  principal(tp.CName, tp.CRealm),
		Server:  principal(t.SName, t.Realm),
		KeyType: uint16(tp.Key.KeyType), Key: tp.Key.KeyValue,
		AuthTime: tp.AuthTime, StartTime: tp.StartTime, EndTime: tp.EndTime, RenewTill: tp.RenewTill,
		Flags:  ticketFlags(tp.Flags.Bytes),
		Ticket: tb,
	}
	cache, err := delegation.ProxyCache(tgt, ev)
	if err != nil {
		return nil, err
	}
	s := authn.Secret(cache.Encode())
	return &s, nil
}

func principal(n types.PrincipalName, realm string) delegation.Principal {
	return delegation.Principal{Type: uint32(n.NameType), Realm: realm, Components: append([]string(nil), n.NameString...)}
}

// ticketFlags: the KerberosFlags bit string's first 32 bits as a BE32.
func ticketFlags(b []byte) uint32 {
	var v uint32
	for i := 0; i < 4; i++ {
		v <<= 8
		if i < len(b) {
			v |= uint32(b[i])
		}
	}
	return v
}
