package kerberos

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
)

// PasswordTGT is kinit inside the daemon, for CredSSP's second hop: an AS
// exchange for user@realm with a password the client delegated, the TGT
// rendered as a ccache (the same form a forwarded TGT takes, so the shell
// gets it the same way). The KDC's reply decrypts only with the password's
// key, so success also proves the password to the KDC. The password never
// leaves this process: no kinit, no argv, no environment, no file.
//
// krb5conf is the krb5.conf naming the realm's KDCs ("" means
// $KRB5_CONFIG, else /etc/krb5.conf).
func PasswordTGT(krb5conf, realm, user, password string) (*authn.Secret, error) {
	if krb5conf == "" {
		krb5conf = os.Getenv("KRB5_CONFIG")
	}
	if krb5conf == "" {
		krb5conf = "/etc/krb5.conf"
	}
	cfg, err := config.Load(krb5conf)
	if err != nil {
		return nil, fmt.Errorf("kerberos: %s: %v: %w", krb5conf, err, authn.ErrBackend)
	}
	if realm == "" {
		realm = cfg.LibDefaults.DefaultRealm
	}
	if realm == "" || user == "" {
		return nil, errors.New("kerberos: second hop needs a realm and a user")
	}
	cl := client.NewWithPassword(user, realm, password, cfg, client.DisablePAFXFAST(true))
	defer cl.Destroy()
	cname := types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, user)
	req, err := messages.NewASReqForTGT(realm, cfg, cname)
	if err != nil {
		return nil, fmt.Errorf("kerberos: AS-REQ for %s@%s: %v", user, realm, err)
	}
	rep, err := cl.ASExchange(realm, req, 0)
	if err != nil {
		return nil, fmt.Errorf("kerberos: TGT for %s@%s: %v: %w", user, realm, err, authn.ErrBadCredentials)
	}
	e := rep.DecryptedEncPart
	d := &Delegation{Cred: messages.KRBCred{
		Tickets: []messages.Ticket{rep.Ticket},
		DecryptedEncPart: messages.EncKrbCredPart{TicketInfo: []messages.KrbCredInfo{{
			Key: e.Key, PRealm: rep.CRealm, PName: rep.CName, Flags: e.Flags,
			AuthTime: e.AuthTime, StartTime: e.StartTime, EndTime: e.EndTime, RenewTill: e.RenewTill,
			SRealm: e.SRealm, SName: e.SName,
		}}},
	}}
	return d.CCache()
}

// SecondHopPrincipal names the principal a CredSSP logon's delegated
// password gets a TGT for (PasswordTGT): the inner logon's own Kerberos
// client principal when it was a Kerberos logon (p.Client, user@REALM),
// else the account name the logon maps to (authn.MapName) in realm
// (kerberos.realm; "" lets PasswordTGT take krb5.conf's default realm).
func SecondHopPrincipal(p authn.Principal, realm string) (user, r string) {
	if i := strings.LastIndexByte(p.Client, '@'); i > 0 {
		return p.Client[:i], p.Client[i+1:]
	}
	return authn.MapName(p.Name, p.Domain), realm
}
