package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn"
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
		CCacheDir: k.ccaches, KRB5Config: k.kdc.Conf, KRB5Realm: krbtest.Realm, CBT: true}
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

// coreScenarios: the interop matrix's core checks, for the Kerberos
// variants after the full matrix has run on sealed HTTP (the rest of the
// matrix exercises the shell layer, not the logon, and costs minutes).
var coreScenarios = []string{"stdout_exit0", "stderr", "exit_nonzero", "identity", "output_5MiB_sha256",
	"concurrent_20_shells", "stdin", "ctrl_c", "terminate", "non_administrator_denied"}

// Negotiate carrying Kerberos (SPNEGO with the Kerberos OIDs first) on HTTP.
func TestKerberosNegotiateHTTPSealed(t *testing.T) {
	d, k := kerberosDaemon(t, nil)
	runScenarios(t, d, k.conn(t, "http", d.HTTP, "negotiate", "always"), coreScenarios, "masterzen", "awinrm")
	wantKerberosAudit(t, d)
}

// HTTPS: no message encryption, channel binding in the authenticator,
// checked under the strict hardening level (pywinrm, pypsrp).
func TestKerberosHTTPS(t *testing.T) {
	d, k := kerberosDaemon(t, func(c *configs.Config) { c.Service.Auth.CBTHardeningLevel = "strict" })
	runScenarios(t, d, k.conn(t, "https", d.HTTPS, "kerberos", "auto"), coreScenarios, "masterzen")
	wantKerberosAudit(t, d)
}

// masterzen/winrm's ClientKerberos (gokrb5's SPNEGO client: a NegTokenInit
// with a fresh AP-REQ on every request, no channel binding) over HTTPS at
// the default relaxed level.
func TestKerberosHTTPSMasterzen(t *testing.T) {
	d, k := kerberosDaemon(t, nil)
	runScenarios(t, d, k.conn(t, "https", d.HTTPS, "kerberos", "auto"), coreScenarios, "pywinrm", "pypsrp")
	wantKerberosAudit(t, d)
}

// A forwarded TGT: the shell finds it in KRB5CCNAME (a file only the user
// can read), klist lists it, kvno uses it for another service; the file is
// gone once the shell is deleted. Without delegation there is no cache.
func TestKerberosDelegation(t *testing.T) {
	d, k := kerberosDaemon(t, nil)
	script := `echo "CC=$KRB5CCNAME"; f="${KRB5CCNAME#FILE:}"; [ -n "$f" ] && stat -c 'OWNER=%U MODE=%a' "$f"; ` +
		`klist 2>&1; kvno HTTP/elsewhere 2>&1 && echo KVNO-OK`
	for _, drv := range []driver{pyDriver{"pywinrm"}, pyDriver{"pypsrp"}} {
		t.Run(drv.Name(), func(t *testing.T) {
			for _, deleg := range []bool{true, false} {
				c := k.conn(t, "http", d.HTTP, "kerberos", "always")
				c.Delegate = deleg
				r := drv.Do(t, c, Spec{Op: "run", Command: script, Env: map[string]string{"KRB5_CONFIG": k.kdc.Conf}})
				if !r.OK {
					t.Fatalf("delegate=%v: %s", deleg, r)
				}
				out := string(r.Stdout)
				if !deleg {
					if !strings.Contains(out, "CC=\n") || strings.Contains(out, "KVNO-OK") {
						t.Fatalf("without delegation the shell has credentials:\n%s", out)
					}
					continue
				}
				var path string
				for _, l := range strings.Split(out, "\n") {
					if p, ok := strings.CutPrefix(l, "CC=FILE:"); ok {
						path = p
					}
				}
				if path == "" || !strings.Contains(out, "OWNER="+w.admin.Name+" MODE=600") {
					t.Fatalf("credential cache not the user's own 0600 file:\n%s", out)
				}
				if !strings.Contains(out, "krbtgt/"+krbtest.Realm+"@"+krbtest.Realm) || !strings.Contains(out, w.admin.Name+"@"+krbtest.Realm) {
					t.Fatalf("klist in the shell does not show the forwarded TGT:\n%s", out)
				}
				if !strings.Contains(out, "KVNO-OK") {
					t.Fatalf("kvno for another service with the forwarded TGT failed:\n%s", out)
				}
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Fatalf("credential cache %s still there after the shell was deleted (%v)", path, err)
				}
				if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
					t.Fatalf("credential cache directory %s still there", filepath.Dir(path))
				}
			}
		})
	}
}

// postKerberos sends one request with a Kerberos token on a new connection.
func postKerberos(t *testing.T, addr string, useTLS bool, token []byte, soap string) *reply {
	t.Helper()
	rc, err := dialRaw(addr, useTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	r, err := rc.request("POST", "/wsman", map[string]string{"Authorization": "Kerberos " + base64.StdEncoding.EncodeToString(token)}, []byte(soap), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Refusals: each AP-REQ below is refused with an opaque 401, the log says
// why, and no shell is created. A valid AP-REQ on the same daemon first
// shows the refusals are not an accident of the set-up.
func TestKerberosRefusals(t *testing.T) {
	k := needKerberos(t)
	d, _ := kerberosDaemon(t, func(c *configs.Config) {
		c.Service.Auth.CBTHardeningLevel = "strict"
		c.Kerberos.MaxClockSkewS = 2
	})
	certPEM, err := os.ReadFile(w.cert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	cbt, err := authn.TLSServerEndPointCBT(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := k.kdc.Login(w.admin.Name, w.admin.Password, 0)
	if err != nil {
		t.Fatal(err)
	}
	spn := "HTTP/" + krbtest.Host

	// The control: a correct AP-REQ creates a shell.
	good, err := admin.APReq(spn, krbtest.APReqOptions{Mutual: true, CBT: cbt})
	if err != nil {
		t.Fatal(err)
	}
	r := postKerberos(t, d.HTTPS, true, good, createXML())
	if r.Status != 200 {
		t.Fatalf("valid AP-REQ: %s", r)
	}
	if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Kerberos ") {
		t.Fatalf("no AP-REP on the 200: %q", r.Header.Get("WWW-Authenticate"))
	}
	if sid := shellIDOf(r); sid != "" {
		rc, _ := dialRaw(d.HTTPS, true)
		tok, _ := admin.APReq(spn, krbtest.APReqOptions{CBT: cbt})
		rc.request("POST", "/wsman", map[string]string{"Authorization": "Kerberos " + base64.StdEncoding.EncodeToString(tok)}, []byte(deleteXML(sid)), 30*time.Second)
		rc.Close()
	}

	// An expired ticket: fetched now, used after its end (lifetime 3s,
	// max_clock_skew 2s).
	short, err := k.kdc.Login(w.admin.Name, w.admin.Password, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expiring, err := short.Ticket(spn)
	if err != nil {
		t.Fatal(err)
	}
	ghostName := "wrmde2eghost" + randHex(3)
	if err := k.kdc.AddUser(ghostName, "Gh0st-pass"); err != nil {
		t.Fatal(err)
	}
	ghost, err := k.kdc.Login(ghostName, "Gh0st-pass", 0)
	if err != nil {
		t.Fatal(err)
	}

	before := d.executions()
	cases := []struct {
		name   string
		token  func() []byte
		https  bool
		reason string
	}{
		{"replayed authenticator", func() []byte { return good }, true, "replayed"},
		{"wrong channel binding", func() []byte { return must(admin.APReq(spn, krbtest.APReqOptions{CBT: bytes.Repeat([]byte{7}, 16)})) }, true, "channel binding"},
		{"no channel binding under strict", func() []byte { return must(admin.APReq(spn, krbtest.APReqOptions{})) }, true, "channel binding"},
		{"ticket for another service", func() []byte { return must(admin.APReq("HTTP/elsewhere", krbtest.APReqOptions{CBT: cbt})) }, true, "no keytab entry"},
		{"principal without a local account", func() []byte { return must(ghost.APReq(spn, krbtest.APReqOptions{CBT: cbt})) }, true, "no local account"},
		{"expired ticket", func() []byte {
			time.Sleep(6 * time.Second) // past endtime + max_clock_skew
			return must(expiring.APReq(krbtest.APReqOptions{CBT: cbt}))
		}, true, "expired"},
		{"plain body after Kerberos on HTTP", func() []byte { return must(admin.APReq(spn, krbtest.APReqOptions{Mutual: true})) }, false, ""},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			addr := d.HTTP
			if tc.https {
				addr = d.HTTPS
			}
			r := postKerberos(t, addr, tc.https, tc.token(), createXML())
			if r.Status != 401 {
				t.Fatalf("got %s, want 401", r)
			}
			if len(r.Body) != 0 {
				t.Errorf("401 with a body (%d bytes): refusals are opaque", len(r.Body))
			}
			if tc.reason != "" && !d.logContains(tc.reason) {
				t.Errorf("daemon log does not say %q", tc.reason)
			}
			if tc.name == "replayed authenticator" {
				found := false
				for _, e := range d.AuditEvents() {
					if e.Event == "logon_failure" && e.Scheme == "Kerberos" && strings.Contains(e.Raw, w.admin.Name+"@"+krbtest.Realm) {
						found = true
					}
				}
				if !found {
					t.Errorf("no Kerberos logon_failure audit record naming the client principal")
				}
			}
		})
	}
	wantNothingRan(t, d, before)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func shellIDOf(r *reply) string {
	n, err := parseXML(r.Body)
	if err != nil {
		return ""
	}
	if s := n.first("ShellId"); s != nil {
		return s.Text
	}
	return ""
}

// logContains reports whether the daemon's log has s.
func (d *Daemon) logContains(s string) bool {
	b, _ := os.ReadFile(d.Stderr)
	return bytes.Contains(b, []byte(s))
}

// curlClient: curl --negotiate (MIT GSS-API SPNEGO, libcurl's own HTTP
// Negotiate) over HTTPS, one curl per request.
type curlClient struct {
	url string
	env []string
}

func (c curlClient) Post(soap string) (*reply, error) {
	cmd := exec.Command("curl", "-sS", "-k", "--negotiate", "-u", ":", "-o", "-", "-w", "\n%{http_code}",
		"-H", "Content-Type: application/soap+xml;charset=UTF-8", "--data-binary", "@-", c.url)
	cmd.Env = c.env
	cmd.Stdin = strings.NewReader(soap)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("curl: %v: %s", err, errb.String())
	}
	b := out.Bytes()
	i := bytes.LastIndexByte(b, '\n')
	status, err := strconv.Atoi(strings.TrimSpace(string(b[i+1:])))
	if i < 0 || err != nil {
		return nil, fmt.Errorf("curl: no status in %q", b)
	}
	return &reply{Status: status, Body: b[:i]}, nil
}

func TestKerberosCurlHTTPS(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	d, k := kerberosDaemon(t, nil)
	_, port := hostPort(t, d.HTTPS)
	env := append(os.Environ(), "KRB5CCNAME=FILE:"+filepath.Join(k.ccaches, w.admin.Name+".cc"), "KRB5_CONFIG="+k.kdc.Conf, "NO_PROXY=*")
	c := curlClient{url: fmt.Sprintf("https://%s:%d/wsman", krbtest.Host, port), env: env}
	s, err := createShell(c)
	if err != nil {
		t.Fatalf("curl --negotiate: create shell: %v", err)
	}
	res, err := s.run("echo curl-$((6*7)); echo err-side 1>&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "curl-42\n" || string(res.Stderr) != "err-side\n" || res.ExitCode != 3 {
		t.Errorf("curl: stdout %q stderr %q exit %d", res.Stdout, res.Stderr, res.ExitCode)
	}
	if err := s.delete(); err != nil {
		t.Errorf("delete: %v", err)
	}
	wantKerberosAudit(t, d)
	// The non-administrator gets nothing.
	before := d.executions()
	plainEnv := append(os.Environ(), "KRB5CCNAME=FILE:"+filepath.Join(k.ccaches, w.plain.Name+".cc"), "KRB5_CONFIG="+k.kdc.Conf, "NO_PROXY=*")
	if _, err := createShell(curlClient{url: c.url, env: plainEnv}); err == nil {
		t.Error("non-administrator created a shell through curl")
	}
	wantNothingRan(t, d, before)
}
