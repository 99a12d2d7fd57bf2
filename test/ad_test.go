package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/winrmd/winrmd/authn/delegation"
	"github.com/winrmd/winrmd/test/addc"
)

// The throwaway AD domain (test/addc) is started once, on first use, and
// stopped by TestMain's teardown.
var (
	adOnce sync.Once
	adDom  *addc.Domain
	adErr  error
	adMu   sync.Mutex
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
	// The keytab decrypts the KDC's ticket for HTTP/<host>.
	cc := filepath.Join(dir, d.Operator.Name+".cc")
	cmd := exec.Command("kvno", "-k", d.Keytab, "HTTP/"+addc.Host)
	cmd.Env = d.Env(cc)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "keytab entry valid") {
		t.Fatalf("kvno -k keytab HTTP/%s: %v\n%s", addc.Host, err, out)
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
