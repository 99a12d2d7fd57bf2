package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/winrmd/winrmd/authn/kerberos/krbtest"
	"github.com/winrmd/winrmd/configs"
)

// Kerberos end to end: a real MIT KDC (krbtest: Debian's krb5kdc on a free
// loopback port, a throwaway realm WINRMD.TEST with its own krb5.conf), the
// test users as principals with their passwords, a keytab with
// HTTP/localhost, WSMAN/localhost and host/localhost for the daemon, and a
// credential cache per user from kinit. Clients connect to "localhost" (it
// resolves to the loopback address without touching /etc/hosts; the
// realm's krb5.conf maps it to the realm and turns off canonicalisation),
// so they ask for HTTP/localhost (pywinrm) or WSMAN/localhost (pypsrp).

type krbWorld struct {
	kdc     *krbtest.KDC
	keytab  string
	ccaches string // <user>.cc for every test user
	err     error
}

var (
	krbOnce sync.Once
	krbW    krbWorld
	krbMu   sync.Mutex
)

func needKerberos(t testing.TB) *krbWorld {
	t.Helper()
	w := need(t)
	if why := krbtest.Available(); why != "" {
		t.Skip("MIT KDC unavailable: " + why)
	}
	krbOnce.Do(func() {
		krbMu.Lock()
		defer krbMu.Unlock()
		dir := filepath.Join(w.work, "kdc")
		k, err := krbtest.Start(dir)
		if err != nil {
			krbW.err = err
			return
		}
		krbW.kdc = k
		for _, u := range w.users() {
			if krbW.err = k.AddUser(u.Name, u.Password); krbW.err != nil {
				return
			}
		}
		svcs := []string{"HTTP/" + krbtest.Host, "WSMAN/" + krbtest.Host, "host/" + krbtest.Host, "HTTP/elsewhere"}
		for _, s := range svcs {
			if krbW.err = k.AddService(s); krbW.err != nil {
				return
			}
		}
		krbW.keytab = filepath.Join(dir, "winrmd.keytab")
		if krbW.err = k.Keytab(krbW.keytab, svcs[:3]...); krbW.err != nil {
			return
		}
		krbW.ccaches = filepath.Join(dir, "ccaches")
		if krbW.err = os.MkdirAll(krbW.ccaches, 0o700); krbW.err != nil {
			return
		}
		for _, u := range w.users() {
			if krbW.err = k.Kinit(u.Name, u.Password, filepath.Join(krbW.ccaches, u.Name+".cc"), "-f"); krbW.err != nil {
				return
			}
		}
	})
	if krbW.err != nil {
		t.Fatalf("Kerberos set-up: %v", krbW.err)
	}
	return &krbW
}

func stopKDC() {
	krbMu.Lock()
	defer krbMu.Unlock()
	if krbW.kdc != nil {
		krbW.kdc.Stop()
		krbW.kdc = nil
	}
}

// kerberosDaemon starts a daemon that accepts Kerberos with the test keytab.
func kerberosDaemon(t *testing.T, mutate func(*configs.Config)) (*Daemon, *krbWorld) {
	k := needKerberos(t)
	d := startDaemon(t, func(c *configs.Config) {
		c.Service.MaxTimeoutMS = 3000
		c.Service.Auth.Kerberos = true
		c.Kerberos.Keytab = k.keytab
		if mutate != nil {
			mutate(c)
		}
	})
	return d, k
}

func (k *krbWorld) conn(t *testing.T, scheme, addr, auth, enc string) Conn {
	_, p := hostPort(t, addr)
	return Conn{Scheme: scheme, Host: krbtest.Host, Port: p, Auth: auth, Encryption: enc, User: w.admin.Name,
		CCacheDir: k.ccaches, KRB5Config: k.kdc.Conf, CBT: true}
}

// wantKerberosAudit: a logon_success with the client principal.
func wantKerberosAudit(t *testing.T, d *Daemon) {
	t.Helper()
	for _, e := range d.AuditEvents() {
		if e.Event == "logon_success" && strings.Contains(e.Principal, "@"+krbtest.Realm) {
			return
		}
	}
	t.Errorf("audit log has no Kerberos logon_success naming the client principal")
}

// Kerberos scheme and raw krb5 tokens (pywinrm sends its AP-REQ before any
// 401; pypsrp uses the Kerberos scheme): sealed with AES wrap tokens on HTTP.
func TestKerberosHTTPSealed(t *testing.T) {
	d, k := kerberosDaemon(t, nil)
	runMatrix(t, d, k.conn(t, "http", d.HTTP, "kerberos", "always"), "masterzen")
	wantKerberosAudit(t, d)
}

// Negotiate carrying Kerberos (SPNEGO with the Kerberos OIDs first) on HTTP.
func TestKerberosNegotiateHTTPSealed(t *testing.T) {
	d, k := kerberosDaemon(t, nil)
	runMatrix(t, d, k.conn(t, "http", d.HTTP, "negotiate", "always"), "masterzen")
	wantKerberosAudit(t, d)
}

// HTTPS: no message encryption, channel binding in the authenticator,
// checked under the strict hardening level.
func TestKerberosHTTPS(t *testing.T) {
	d, k := kerberosDaemon(t, func(c *configs.Config) { c.Service.Auth.CBTHardeningLevel = "strict" })
	runMatrix(t, d, k.conn(t, "https", d.HTTPS, "kerberos", "auto"), "masterzen")
	wantKerberosAudit(t, d)
}
