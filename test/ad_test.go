package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gokrbcrypto "github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn/delegation"
	"github.com/winrmd/winrmd/authn/pac"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/test/addc"
)

// The throwaway AD domain (test/addc) is started once, on first use, and
// stopped by TestMain's teardown.
var (
	adOnce    sync.Once
	adDom     *addc.Domain
	adErr     error
	adMu      sync.Mutex
	adMemOnce sync.Once
	adMember  *addc.Member
	adMemErr  error
)

// needAD returns the running domain, or skips for a stated missing
// prerequisite.
func needAD(t *testing.T) *addc.Domain {
	t.Helper()
	w := need(t)
	if why := addc.Available(); why != "" {
		t.Skip("AD domain controller: " + why)
	}
	adOnce.Do(func() {
		adMu.Lock()
		defer adMu.Unlock()
		adDom, adErr = addc.Start(context.Background(), w.work, t.Logf)
	})
	if adErr != nil {
		t.Fatalf("AD domain set-up failed: %v", adErr)
	}
	return adDom
}

// needADMember returns the domain and the joined member (winbindd), once.
func needADMember(t *testing.T) (*addc.Domain, *addc.Member) {
	t.Helper()
	d := needAD(t)
	adMemOnce.Do(func() {
		adMu.Lock()
		defer adMu.Unlock()
		adMember, adMemErr = d.JoinMember(context.Background())
	})
	if adMemErr != nil {
		t.Fatalf("joining the winrmd host to the domain: %v", adMemErr)
	}
	return d, adMember
}

// adTeardown stops the domain (from teardown).
func adTeardown() {
	adMu.Lock()
	defer adMu.Unlock()
	if adDom != nil {
		adDom.Close()
		adDom = nil
	}
}

// gssInit runs one GSSAPI initiator step for service@host (hostbased name)
// with MIT krb5 through Debian's python3-gssapi (the system interpreter:
// the venv need not have gssapi), as a GSSAPI application in a shell would.
func gssInit(t *testing.T, d *addc.Domain, ccache, service string) (string, error) {
	t.Helper()
	if _, err := os.Stat("/usr/lib/python3/dist-packages/gssapi"); err != nil {
		t.Skip("python3-gssapi (Debian) not installed")
	}
	host := strings.SplitN(service, "/", 2)
	script := `import gssapi, sys
n = gssapi.Name(sys.argv[1], gssapi.NameType.hostbased_service)
tok = gssapi.SecurityContext(name=n, usage="initiate").step()
print("initiator token", len(tok))
`
	cmd := exec.Command("/usr/bin/python3", "-c", script, host[0]+"@"+host[1])
	cmd.Env = d.Env(ccache)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func klist(t *testing.T, d *addc.Domain, ccache string) string {
	t.Helper()
	cmd := exec.Command("klist", "-f")
	cmd.Env = d.Env(ccache)
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func readCache(t *testing.T, path string) *delegation.Cache {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := delegation.Decode(b)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return c
}

// TestADDomain checks the throwaway domain itself against the real Samba
// KDC: every test user gets a TGT through the loopback relay, a wrong
// password is refused, the exported keytab matches the KDC's keys for
// HTTP/<host>, and the PAC-relevant accounts exist.
func TestADDomain(t *testing.T) {
	d := needAD(t)
	dir := t.TempDir()
	for _, u := range []addc.User{d.Admin, d.Operator, d.Plain} {
		cc := filepath.Join(dir, u.Name+".cc")
		if err := d.Kinit(context.Background(), u, cc); err != nil {
			t.Fatal(err)
		}
		if out := klist(t, d, cc); !strings.Contains(out, "krbtgt/"+addc.Realm+"@"+addc.Realm) || !strings.Contains(out, "Default principal: "+u.Principal()) {
			t.Fatalf("klist after kinit %s:\n%s", u.Name, out)
		}
	}
	bad := d.Plain
	bad.Password = "wrong-" + bad.Password
	if err := d.Kinit(context.Background(), bad, filepath.Join(dir, "bad.cc")); err == nil {
		t.Fatal("kinit with a wrong password succeeded")
	} else {
		t.Logf("wrong password refused: %v", err)
	}
	// The keytab decrypts the KDC's tickets for every SPN of the service.
	cc := filepath.Join(dir, d.Operator.Name+".cc")
	for _, spn := range []string{"HTTP/" + addc.Host, "WSMAN/" + addc.Host, "HTTP/" + addc.ClientHost, "WSMAN/" + addc.ClientHost} {
		cmd := exec.Command("kvno", "-k", d.Keytab, spn)
		cmd.Env = d.Env(cc)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "keytab entry valid") {
			t.Fatalf("kvno -k keytab %s: %v\n%s", spn, err, out)
		}
	}
	if !strings.HasPrefix(d.OperatorsSID, d.DomainSID+"-") {
		t.Fatalf("group SID %s is not in domain %s", d.OperatorsSID, d.DomainSID)
	}
	if st, err := os.Stat(d.Keytab); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keytab mode: %v %v", st.Mode(), err)
	}
}

// TestADConstrainedDelegation: the proxy credential cache that
// authn/delegation composes from the service account's TGT and a user's
// evidence ticket lets an MIT GSSAPI initiator get, as the user, a ticket
// for the service in msDS-AllowedToDelegateTo (S4U2Proxy at the real Samba
// KDC), and the KDC refuses it for a service not in the list. An evidence
// ticket that is not forwardable is refused before any KDC is asked.
func TestADConstrainedDelegation(t *testing.T) {
	d := needAD(t)
	dir := t.TempDir()
	ctx := context.Background()

	// The user's side: a TGT and the ticket for winrmd's SPN (what the
	// client presents in its AP-REQ: the evidence).
	userCC := filepath.Join(dir, "user.cc")
	if err := d.Kinit(ctx, d.Operator, userCC); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("kvno", "HTTP/"+addc.Host)
	cmd.Env = d.Env(userCC)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kvno HTTP/%s: %v\n%s", addc.Host, err, out)
	}
	// The service's side: its TGT from the keytab.
	svcCC := filepath.Join(dir, "svc.cc")
	cmd = exec.Command("kinit", "-k", "-t", d.Keytab, "-c", "FILE:"+svcCC, addc.ServiceAccount+"@"+addc.Realm)
	cmd.Env = d.Env(svcCC)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit -k %s: %v\n%s", addc.ServiceAccount, err, out)
	}
	user := readCache(t, userCC)
	svc := readCache(t, svcCC)
	spn := delegation.Principal{Type: delegation.NTSrvInst, Realm: addc.Realm, Components: []string{"HTTP", addc.Host}}
	evidence, ok := user.Find(spn)
	if !ok {
		t.Fatalf("no ticket for %s in the user's cache", spn)
	}
	tgt, ok := svc.Find(delegation.Principal{Realm: addc.Realm, Components: []string{"krbtgt", addc.Realm}})
	if !ok {
		t.Fatal("no TGT in the service's cache")
	}
	proxy, err := delegation.ProxyCache(tgt, evidence)
	if err != nil {
		t.Fatal(err)
	}
	proxyCC := filepath.Join(dir, "proxy.cc")
	if err := os.WriteFile(proxyCC, proxy.Encode(), 0o600); err != nil {
		t.Fatal(err)
	}

	allowed := addc.AllowedSPN
	if out, err := gssInit(t, d, proxyCC, allowed); err != nil {
		t.Fatalf("S4U2Proxy to %s (allowed): %v\n%s", allowed, err, out)
	}
	list := klist(t, d, proxyCC)
	if !strings.Contains(list, "Default principal: "+d.Operator.Principal()) || !strings.Contains(list, allowed) {
		t.Fatalf("after S4U2Proxy to %s the cache holds:\n%s", allowed, list)
	}
	// The ticket is the user's, for the allowed service.
	got := readCache(t, proxyCC)
	tk, ok := got.Find(delegation.Principal{Realm: addc.Realm, Components: strings.Split(allowed, "/")})
	if !ok {
		// MIT files a referral-realm name ("cifs/files@") as asked.
		tk, ok = got.Find(delegation.Principal{Realm: "", Components: strings.Split(allowed, "/")})
	}
	if !ok || !tk.Client.Equal(delegation.Principal{Realm: addc.Realm, Components: []string{d.Operator.Name}}) {
		t.Fatalf("no %s ticket for %s in the proxy cache:\n%s", allowed, d.Operator.Name, list)
	}
	t.Logf("constrained delegation to %s as %s: granted", allowed, d.Operator.Name)

	refused := addc.RefusedSPN
	out, err := gssInit(t, d, proxyCC, refused)
	if err == nil {
		t.Fatalf("S4U2Proxy to %s (not in msDS-AllowedToDelegateTo) succeeded:\n%s", refused, out)
	}
	if !strings.Contains(out, "KDC can't fulfill requested option") {
		t.Fatalf("S4U2Proxy to %s failed for another reason than the KDC's refusal:\n%s", refused, out)
	}
	if strings.Contains(klist(t, d, proxyCC), refused) {
		t.Fatalf("a ticket for %s appeared in the cache", refused)
	}
	t.Logf("constrained delegation to %s: refused by the KDC (KDC_ERR_BADOPTION)", refused)

	// Not forwardable (kinit -F): the evidence cannot be used.
	nfCC := filepath.Join(dir, "nf.cc")
	cmd = exec.Command("kinit", "-F", "-c", "FILE:"+nfCC, d.Plain.Principal())
	cmd.Env = d.Env(nfCC)
	cmd.Stdin = strings.NewReader(d.Plain.Password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit -F: %v\n%s", err, out)
	}
	cmd = exec.Command("kvno", "HTTP/"+addc.Host)
	cmd.Env = d.Env(nfCC)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kvno: %v\n%s", err, out)
	}
	nfEvidence, ok := readCache(t, nfCC).Find(spn)
	if !ok {
		t.Fatal("no evidence ticket in the non-forwardable cache")
	}
	if _, err := delegation.ProxyCache(tgt, nfEvidence); err == nil || !strings.Contains(err.Error(), "not forwardable") {
		t.Fatalf("non-forwardable evidence: %v", err)
	}
}

// serviceTicket gets u's ticket for HTTP/<host> from the real KDC and
// decrypts it with the exported keytab, as the acceptor would.
func serviceTicket(t *testing.T, d *addc.Domain, u addc.User) (*messages.Ticket, types.EncryptionKey) {
	t.Helper()
	cc := filepath.Join(t.TempDir(), u.Name+".cc")
	if err := d.Kinit(context.Background(), u, cc); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("kvno", "HTTP/"+addc.Host)
	cmd.Env = d.Env(cc)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kvno: %v\n%s", err, out)
	}
	c := readCache(t, cc)
	cr, ok := c.Find(delegation.Principal{Realm: addc.Realm, Components: []string{"HTTP", addc.Host}})
	if !ok {
		t.Fatal("no service ticket in the cache")
	}
	var tk messages.Ticket
	if err := tk.Unmarshal(cr.Ticket); err != nil {
		t.Fatal(err)
	}
	kt, err := keytab.Load(d.Keytab)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := kt.GetEncryptionKey(tk.SName, tk.Realm, tk.EncPart.KVNO, tk.EncPart.EType)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Decrypt(key); err != nil {
		t.Fatal(err)
	}
	return &tk, key
}

// TestADPAC verifies the PACs the real Samba KDC issues with authn/pac:
// the groups each test user is in (Domain Admins, the SID-mapped custom
// group, none; a user in BigGroups+1 groups), and refusals for a tampered
// PAC, a wrong key and a PAC presented for another client.
func TestADPAC(t *testing.T) {
	d := needAD(t)
	domainAdmins := d.DomainSID + "-512"
	for _, tc := range []struct {
		u         addc.User
		want, not []string
		minGroups int
	}{
		{d.Admin, []string{domainAdmins}, []string{d.OperatorsSID}, 2},
		{d.Operator, []string{d.OperatorsSID}, []string{domainAdmins}, 2},
		{d.Plain, nil, []string{domainAdmins, d.OperatorsSID}, 1},
		{d.Big, []string{d.OperatorsSID}, []string{domainAdmins}, addc.BigGroups + 2},
	} {
		tk, key := serviceTicket(t, d, tc.u)
		raw, err := pac.FromAuthorizationData(tk.DecryptedEncPart.AuthorizationData)
		if err != nil {
			t.Fatalf("%s: %v", tc.u.Name, err)
		}
		cname := tk.DecryptedEncPart.CName.PrincipalNameString()
		info, err := pac.Verify(raw, key, cname, tk.DecryptedEncPart.AuthTime)
		if err != nil {
			t.Fatalf("%s: verify: %v", tc.u.Name, err)
		}
		if !strings.EqualFold(info.UserName, tc.u.Name) || info.LogonDomainSID != d.DomainSID || !strings.HasPrefix(info.UserSID, d.DomainSID+"-") {
			t.Fatalf("%s: PAC says %+v", tc.u.Name, info)
		}
		for _, s := range tc.want {
			if !slices.Contains(info.GroupSIDs, s) {
				t.Errorf("%s: %s missing from %v", tc.u.Name, s, info.GroupSIDs)
			}
		}
		for _, s := range tc.not {
			if slices.Contains(info.GroupSIDs, s) {
				t.Errorf("%s: unexpected %s", tc.u.Name, s)
			}
		}
		if len(info.GroupSIDs) < tc.minGroups {
			t.Errorf("%s: %d group SIDs, want at least %d", tc.u.Name, len(info.GroupSIDs), tc.minGroups)
		}
		t.Logf("%s: PAC of %d bytes, ticket of %d bytes, %d group SIDs", tc.u.Name, len(raw), len(tk.EncPart.Cipher), len(info.GroupSIDs))
		if dir := os.Getenv("WINRMD_PAC_DUMP"); dir != "" {
			// Regenerates authn/pac/testdata (a PAC of this throwaway
			// domain and its service key).
			js, _ := json.MarshalIndent(map[string]any{
				"pac": raw, "keytype": key.KeyType, "key": key.KeyValue, "client": cname,
				"authtime": tk.DecryptedEncPart.AuthTime.Unix(), "domain_sid": d.DomainSID,
				"group_sids": len(info.GroupSIDs),
			}, "", " ")
			os.WriteFile(filepath.Join(dir, tc.u.Name+".json"), js, 0o644)
		}

		// Tampering anywhere in the logon information breaks the signature.
		bad := bytes.Clone(raw)
		bad[len(bad)/2] ^= 0x01
		if _, err := pac.Verify(bad, key, cname, tk.DecryptedEncPart.AuthTime); err == nil {
			t.Errorf("%s: tampered PAC accepted", tc.u.Name)
		}
		// Adding a group SID by hand: the logon info buffer changes, and
		// the signature no longer matches.
		wrongKey := key
		wrongKey.KeyValue = bytes.Repeat([]byte{0x42}, len(key.KeyValue))
		if _, err := pac.Verify(raw, wrongKey, cname, tk.DecryptedEncPart.AuthTime); !errors.Is(err, pac.ErrSignature) {
			t.Errorf("%s: wrong key: %v", tc.u.Name, err)
		}
		if _, err := pac.Verify(raw, key, "someoneelse", tk.DecryptedEncPart.AuthTime); !errors.Is(err, pac.ErrMismatch) {
			t.Errorf("%s: other client: %v", tc.u.Name, err)
		}
		if _, err := pac.Verify(raw, key, cname, tk.DecryptedEncPart.AuthTime.Add(time.Hour)); !errors.Is(err, pac.ErrMismatch) {
			t.Errorf("%s: other authtime: %v", tc.u.Name, err)
		}
	}
}

// adDaemon starts winrmd as a member of the test domain: in the member's
// mount namespace (domain users through NSS and winbind, ntlm_auth against
// the member's winbindd, krb5.conf naming the KDC relay), NTLM through
// winbind, Kerberos with the service keytab exported from the DC, and
// authorization by the domain's groups: by NSS group name for NTLM
// ("domain admins", "winrm operators"), by PAC SID for Kerberos (the
// defaults, which include DOMAIN-512, plus the custom group's SID).
func adDaemon(t *testing.T, d *addc.Domain, m *addc.Member, mutate func(*configs.Config)) *Daemon {
	t.Helper()
	return startDaemonWrapped(t, m.WrapArgs(d.Krb5Conf), func(c *configs.Config) {
		c.Service.MaxTimeoutMS = 3000
		// The NTLM challenge must name the joined machine and its domain:
		// the DC checks the NTLMv2 response's MsvAvNbComputerName and
		// MsvAvNbDomainName against the member's secure channel.
		c.Host.NetBIOSName = addc.MemberNetBIOS
		c.Host.Domain = addc.NetBIOS
		c.Host.DNSName = addc.Host
		c.Accounts.Winbind.Enabled = true
		c.Service.Auth.Kerberos = true
		c.Kerberos.Keytab = d.Keytab
		c.Kerberos.Realm = addc.Realm
		c.Authorization.AllowedGroups = []string{addc.NSSDomainAdmins, addc.NSSOperators}
		c.Authorization.AllowedSIDs = append(slices.Clone(configs.DefaultAllowedSIDs), d.OperatorsSID)
		if mutate != nil {
			mutate(c)
		}
	})
}

// TestADWinbindMember: the joined member resolves the domain's users and
// groups through NSS (libnss-winbind in the private nsswitch.conf), and
// winrmd authenticates them with NTLM through winbind (ntlm_auth), sealed
// on HTTP with pywinrm and pypsrp: the Domain Admins member and the custom
// group's member run commands as themselves; the user in no allowed group
// is refused and nothing runs for them.
func TestADWinbindMember(t *testing.T) {
	d, m := needADMember(t)
	for _, u := range []addc.User{d.Admin, d.Operator, d.Plain} {
		out, err := m.Wrap(exec.Command("id", u.Name)).CombinedOutput()
		if err != nil {
			t.Fatalf("id %s on the member: %v %s", u.Name, err, out)
		}
		t.Logf("member: %s", strings.TrimSpace(string(out)))
	}
	out, _ := m.Wrap(exec.Command("id", "-Gn", d.Admin.Name)).CombinedOutput()
	if !strings.Contains(string(out), addc.NSSDomainAdmins) {
		t.Fatalf("%s's groups through winbind: %s", d.Admin.Name, out)
	}
	dm := adDaemon(t, d, m, nil)
	h, p := hostPort(t, dm.HTTP)
	for _, drv := range []driver{pyDriver{"pywinrm"}, pyDriver{"pypsrp"}} {
		auth := "ntlm"
		if drv.Name() == "pypsrp" {
			auth = "negotiate"
		}
		for _, u := range []addc.User{d.Admin, d.Operator} {
			r := drv.Do(t, Conn{Scheme: "http", Host: h, Port: p, Auth: auth, Encryption: "always", User: addc.NetBIOS + `\` + u.Name, Password: u.Password},
				Spec{Op: "run", Command: "id -un; echo ad-ntlm-ok"})
			wantOut(t, r, u.Name+"\nad-ntlm-ok\n", "", 0)
		}
		r := drv.Do(t, Conn{Scheme: "http", Host: h, Port: p, Auth: auth, Encryption: "always", User: addc.NetBIOS + `\` + d.Plain.Name, Password: d.Plain.Password},
			Spec{Op: "run", Command: "echo must-not-run"})
		if r.OK || (!r.refusedAuth() && !r.accessDenied()) {
			t.Fatalf("%s: %s (no allowed group) got %s", drv.Name(), d.Plain.Name, r)
		}
		bad := drv.Do(t, Conn{Scheme: "http", Host: h, Port: p, Auth: auth, Encryption: "always", User: addc.NetBIOS + `\` + d.Admin.Name, Password: "wrong-" + d.Admin.Password},
			Spec{Op: "run", Command: "echo must-not-run"})
		if !bad.refusedAuth() {
			t.Fatalf("%s: wrong password got %s", drv.Name(), bad)
		}
	}
	if n := dm.executions().commandStarts; n != 4 {
		t.Errorf("%d commands started, want 4 (2 users × 2 clients; none for the refused)", n)
	}
	noSecretsIn(t, dm, d)
}

// noSecretsIn: no domain password appears in the daemon's log or audit.
func noSecretsIn(t *testing.T, dm *Daemon, d *addc.Domain) {
	t.Helper()
	for _, f := range []string{dm.Stderr, dm.Audit} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range []addc.User{d.Admin, d.Operator, d.Plain, d.Big, d.Administrator} {
			if bytes.Contains(b, []byte(u.Password)) {
				t.Errorf("%s contains the password of %s", f, u.Name)
			}
		}
	}
}

// adCCaches kinits every test user of the domain into dir/<name>.cc
// (through the KDC relay), as the clients' Conn.CCacheDir expects.
func adCCaches(t *testing.T, d *addc.Domain, users ...addc.User) string {
	t.Helper()
	dir := t.TempDir()
	for _, u := range users {
		if err := d.Kinit(context.Background(), u, filepath.Join(dir, u.Name+".cc")); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// tamperPAC rewrites the ticket for HTTP/<ClientHost> in ccache: the
// ticket is decrypted with the service key, change (when not nil) edits
// the PAC in place, and the ticket is encrypted again with the same key
// and session key — what only a holder of the service key could do; the
// PAC's server signature is left as the KDC made it.
func tamperPAC(t *testing.T, d *addc.Domain, ccache string, change func(pacBytes []byte)) {
	t.Helper()
	c := readCache(t, ccache)
	want := delegation.Principal{Realm: addc.Realm, Components: []string{"HTTP", addc.ClientHost}}
	idx := -1
	for i, cr := range c.Credentials {
		if _, conf := cr.IsConfig(); !conf && cr.Server.Equal(want) {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatalf("no %s ticket in %s", want, ccache)
	}
	var tk messages.Ticket
	if err := tk.Unmarshal(c.Credentials[idx].Ticket); err != nil {
		t.Fatal(err)
	}
	kt, err := keytab.Load(d.Keytab)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := kt.GetEncryptionKey(tk.SName, tk.Realm, tk.EncPart.KVNO, tk.EncPart.EType)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := gokrbcrypto.DecryptEncPart(tk.EncPart, key, keyusage.KDC_REP_TICKET)
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		if err := tk.Decrypt(key); err != nil {
			t.Fatal(err)
		}
		raw, err := pac.FromAuthorizationData(tk.DecryptedEncPart.AuthorizationData)
		if err != nil {
			t.Fatal(err)
		}
		at := bytes.Index(plain, raw)
		if at < 0 {
			t.Fatal("PAC bytes not found in the ticket")
		}
		change(plain[at : at+len(raw)])
	}
	enc, err := gokrbcrypto.GetEncryptedData(plain, key, keyusage.KDC_REP_TICKET, tk.EncPart.KVNO)
	if err != nil {
		t.Fatal(err)
	}
	tk.EncPart = enc
	b, err := tk.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c.Credentials[idx].Ticket = b
	if err := os.WriteFile(ccache, c.Encode(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestADKerberos: domain users with tickets from the Samba DC (kinit
// through the KDC relay) log on to winrmd, a joined member, with
// pywinrm's and pypsrp's Kerberos over HTTP (AES wrap tokens) and over
// HTTPS; authorization follows the verified PAC only (allowed_groups names
// no existing group): the Domain Admins member by DOMAIN-512, the custom
// group's member by its SID, a user in 1000 groups (a ~9 KB PAC) by the
// same SID, the user in no allowed group refused. A ticket whose PAC was
// changed (the no-group user made a Domain Admin by its primary group)
// and re-encrypted with the service key is refused: the PAC signature.
func TestADKerberos(t *testing.T) {
	d, m := needADMember(t)
	dm := adDaemon(t, d, m, func(c *configs.Config) {
		c.Authorization.AllowedGroups = []string{"wrmdad-no-such-group"}
	})
	cc := adCCaches(t, d, d.Admin, d.Operator, d.Plain, d.Big)
	conn := func(scheme, addr, auth, enc string, u addc.User) Conn {
		_, p := hostPort(t, addr)
		return Conn{Scheme: scheme, Host: addc.ClientHost, Port: p, Auth: auth, Encryption: enc, User: u.Name,
			CCacheDir: cc, KRB5Config: d.Krb5Conf, CBT: true}
	}
	runs := 0
	for _, tc := range []struct {
		drv          driver
		scheme, auth string
		enc          string
	}{
		{pyDriver{"pywinrm"}, "http", "kerberos", "always"},
		{pyDriver{"pypsrp"}, "http", "kerberos", "always"},
		{pyDriver{"pywinrm"}, "https", "kerberos", "auto"},
	} {
		addr := dm.HTTP
		if tc.scheme == "https" {
			addr = dm.HTTPS
		}
		for _, u := range []addc.User{d.Admin, d.Operator, d.Big} {
			r := tc.drv.Do(t, conn(tc.scheme, addr, tc.auth, tc.enc, u), Spec{Op: "run", Command: "id -un; echo ad-krb-ok"})
			wantOut(t, r, u.Name+"\nad-krb-ok\n", "", 0)
			runs++
		}
		r := tc.drv.Do(t, conn(tc.scheme, addr, tc.auth, tc.enc, d.Plain), Spec{Op: "run", Command: "echo must-not-run"})
		if r.OK || (!r.refusedAuth() && !r.accessDenied()) {
			t.Fatalf("%s %s: %s (no allowed SID) got %s", tc.drv.Name(), tc.scheme, d.Plain.Name, r)
		}
	}
	found := false
	for _, e := range dm.AuditEvents() {
		if e.Event == "logon_success" && strings.Contains(e.Principal, d.Big.Name+"@"+addc.Realm) {
			found = true
		}
	}
	if !found {
		t.Errorf("no audited Kerberos logon of %s", d.Big.Principal())
	}

	// The control: re-encrypting the ticket unchanged is accepted…
	tamperPAC(t, d, filepath.Join(cc, d.Plain.Name+".cc"), nil)
	// …(the plain user is still refused, by authorization, not by the PAC).
	r := pyDriver{"pywinrm"}.Do(t, conn("http", dm.HTTP, "kerberos", "always", d.Plain), Spec{Op: "run", Command: "echo must-not-run"})
	if r.OK {
		t.Fatalf("re-encrypted ticket of %s ran a command", d.Plain.Name)
	}
	before := strings.Count(tail(dm.Stderr, 400), "PAC of "+d.Plain.Principal()+" rejected")
	// Primary group Domain Users (513) -> Domain Admins (512).
	tamperPAC(t, d, filepath.Join(cc, d.Plain.Name+".cc"), func(p []byte) {
		i := bytes.Index(p, []byte{0x01, 0x02, 0x00, 0x00})
		if i < 0 {
			t.Fatal("RID 513 not in the PAC")
		}
		p[i] = 0x00
	})
	r = pyDriver{"pywinrm"}.Do(t, conn("http", dm.HTTP, "kerberos", "always", d.Plain), Spec{Op: "run", Command: "echo must-not-run"})
	if r.OK || !r.refusedAuth() {
		t.Fatalf("tampered PAC: %s", r)
	}
	if after := strings.Count(tail(dm.Stderr, 400), "PAC of "+d.Plain.Principal()+" rejected"); after <= before {
		t.Errorf("no log line says the PAC was rejected:\n%s", tail(dm.Stderr, 20))
	}
	if n := dm.executions().commandStarts; n != runs {
		t.Errorf("%d commands started, want %d (none for refused logons)", n, runs)
	}
}

// TestADConstrainedDelegationShell: with kerberos.constrained_delegation
// on, a domain user who logs on with Kerberos and forwards no TGT gets a
// shell whose GSSAPI reaches, as the user, the service the winrmd service
// account is trusted for (S4U2Proxy at the real Samba KDC; the ticket
// shows in klist) and is refused for another service.
func TestADConstrainedDelegationShell(t *testing.T) {
	d, m := needADMember(t)
	if _, err := os.Stat("/usr/lib/python3/dist-packages/gssapi"); err != nil {
		t.Skip("python3-gssapi (Debian) not installed")
	}
	dm := adDaemon(t, d, m, func(c *configs.Config) {
		c.Kerberos.ConstrainedDelegation.Enabled = true
		c.Kerberos.ConstrainedDelegation.Account = addc.ServiceAccount
	})
	cc := adCCaches(t, d, d.Operator)
	_, p := hostPort(t, dm.HTTP)
	conn := Conn{Scheme: "http", Host: addc.ClientHost, Port: p, Auth: "kerberos", Encryption: "always", User: d.Operator.Name,
		CCacheDir: cc, KRB5Config: d.Krb5Conf}
	gss := func(spn string) string {
		svc, host, _ := strings.Cut(spn, "/")
		return `/usr/bin/python3 -c "import gssapi; print('token', len(gssapi.SecurityContext(name=gssapi.Name('` + svc + `@` + host +
			`', gssapi.NameType.hostbased_service), usage='initiate').step()))" 2>&1 | tail -1`
	}
	r := pyDriver{"pywinrm"}.Do(t, conn, Spec{Op: "run", Command: "echo $KRB5CCNAME; stat -c cache=%a:%U \"${KRB5CCNAME#FILE:}\"; " + gss(addc.AllowedSPN) + "; klist"})
	if !r.OK {
		t.Fatalf("shell: %s", r)
	}
	out := string(r.Stdout)
	// The shell's own cache: the user's, 0600, gone with the shell.
	if !strings.Contains(out, "cache=600:"+d.Operator.Name) {
		t.Errorf("the delegated cache is not the user's own 0600 file:\n%s", out)
	}
	ccPath := strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "FILE:")
	if ccPath == "" {
		t.Fatalf("no KRB5CCNAME in the shell:\n%s", out)
	}
	waitFor(t, 10*time.Second, "the delegated cache removed with the shell", func() bool {
		_, err := os.Stat(ccPath)
		return os.IsNotExist(err)
	})
	t.Logf("shell output:\n%s", out)
	if !strings.Contains(out, "token ") || !strings.Contains(out, "Default principal: "+d.Operator.Principal()) || !strings.Contains(out, addc.AllowedSPN) {
		t.Fatalf("S4U2Proxy to %s from the shell did not work:\n%s", addc.AllowedSPN, out)
	}
	r = pyDriver{"pywinrm"}.Do(t, conn, Spec{Op: "run", Command: gss(addc.RefusedSPN) + "; klist"})
	if !r.OK {
		t.Fatalf("shell: %s", r)
	}
	out = string(r.Stdout)
	if strings.Contains(out, "token ") || !strings.Contains(out, "KDC can't fulfill requested option") || strings.Contains(out, addc.RefusedSPN) {
		t.Fatalf("S4U2Proxy to %s (not allowed) from the shell:\n%s", addc.RefusedSPN, out)
	}
	t.Logf("refused as expected:\n%s", out)

	// A ticket that is not forwardable (kinit -F) cannot be evidence: the
	// logon works, the shell has no delegated cache, the log says why.
	nf := t.TempDir()
	cmd := exec.Command("kinit", "-F", "-c", "FILE:"+filepath.Join(nf, d.Operator.Name+".cc"), d.Operator.Principal())
	cmd.Env = d.Env("")
	cmd.Stdin = strings.NewReader(d.Operator.Password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit -F: %v %s", err, out)
	}
	conn.CCacheDir = nf
	r = pyDriver{"pywinrm"}.Do(t, conn, Spec{Op: "run", Command: "echo \"cc=$KRB5CCNAME\""})
	wantOut(t, r, "cc=\n", "", 0)
	if !strings.Contains(tail(dm.Stderr, 200), "no S4U2Proxy cache for "+d.Operator.Principal()) {
		t.Errorf("the log does not say why the non-forwardable logon got no delegation:\n%s", tail(dm.Stderr, 10))
	}
	noSecretsIn(t, dm, d)
}

// TestADCredSSP: CredSSP for a domain account on the joined member. The
// inner NTLM logon goes through winbind, the delegated password is checked
// by the domain controller (an NTLMv2 proof through winbind), and with the
// domain's KDC configured the shell gets a TGT from it (the second hop).
// A wrong delegated password is refused.
func TestADCredSSP(t *testing.T) {
	d, m := needADMember(t)
	dm := adDaemon(t, d, m, func(c *configs.Config) {
		c.Service.Auth.CredSSP = true
		c.Kerberos.Krb5Conf = d.Krb5Conf
	})
	h, p := hostPort(t, dm.HTTP)
	for _, drv := range []driver{pyDriver{"pywinrm"}, pyDriver{"pypsrp"}} {
		r := drv.Do(t, Conn{Scheme: "http", Host: h, Port: p, Auth: "credssp", Encryption: "auto", User: addc.NetBIOS + `\` + d.Admin.Name, Password: d.Admin.Password},
			Spec{Op: "run", Command: "id -un; klist 2>&1"})
		if !r.OK {
			t.Fatalf("%s: %s", drv.Name(), r)
		}
		out := string(r.Stdout)
		if !strings.HasPrefix(out, d.Admin.Name+"\n") || !strings.Contains(out, "krbtgt/"+addc.Realm+"@"+addc.Realm) {
			t.Fatalf("%s: CredSSP shell of a domain account without its TGT:\n%s", drv.Name(), out)
		}
	}
	before := dm.executions()
	bad := (pyDriver{"credssp_attack"}).Do(t, Conn{Scheme: "https", Host: h, Port: mustPort(dm.HTTPS), User: addc.NetBIOS + `\` + d.Admin.Name, Password: d.Admin.Password},
		Spec{Op: "wrong_password", Command: createXML(), Env: map[string]string{"password": "wrong-" + d.Admin.Password}})
	if bad.OK {
		t.Fatalf("a wrong delegated password for a domain account was accepted: %s", bad)
	}
	wantNothingRan(t, dm, before)
}
