package e2e

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/certauth"
	"github.com/winrmd/winrmd/configs"
)

// Client certificates (issue 11): a CA and client certificates issued with
// `winrmd cert`, mapped by certificate_mappings, used by pywinrm
// (transport='certificate'), pypsrp (auth='certificate'), masterzen/winrm
// (ClientAuthRequest) and curl --cert; then every way a certificate must be
// refused.

type certPKI struct {
	dir     string
	ca      string // CA certificate file
	caKey   string
	crl     string
	admin   [2]string // cert, key for w.admin's UPN
	plain   [2]string // for w.plain (mapped, but not an administrator)
	revoked [2]string // w.admin's UPN, revoked by crl
}

func upnOf(u *testUser) string { return u.Name + "@localhost" }

func newCertPKI(t *testing.T) *certPKI {
	t.Helper()
	p := &certPKI{dir: t.TempDir()}
	f := func(n string) string { return filepath.Join(p.dir, n) }
	p.ca, p.caKey, p.crl = f("ca.pem"), f("ca.key"), f("crl.pem")
	run := func(args ...string) {
		t.Helper()
		if out, err := cli(t, "", append([]string{"cert"}, args...)...); err != nil {
			t.Fatalf("winrmd cert %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ca", "--cert", p.ca, "--key", p.caKey, "--name", "wrmde2e client CA")
	for _, c := range []struct {
		dst *[2]string
		n   string
		upn string
	}{{&p.admin, "admin", upnOf(w.admin)}, {&p.plain, "plain", upnOf(w.plain)}, {&p.revoked, "revoked", upnOf(w.admin)}} {
		c.dst[0], c.dst[1] = f(c.n+".pem"), f(c.n+".key")
		run("client", "--ca", p.ca, "--ca-key", p.caKey, "--upn", c.upn, "--cert", c.dst[0], "--key", c.dst[1])
	}
	run("crl", "--ca", p.ca, "--ca-key", p.caKey, "--out", p.crl, "--revoke", p.revoked[0])
	return p
}

func (p *certPKI) mappings() []configs.CertMapping {
	return []configs.CertMapping{
		{Issuer: p.ca, Subject: upnOf(w.admin), User: w.admin.Name, CRLFile: p.crl},
		{Issuer: p.ca, Subject: "*@nonadmin.test", User: w.plain.Name},
		{Issuer: p.ca, Subject: upnOf(w.plain), User: w.plain.Name},
	}
}

// issue makes a certificate in Go for the negatives the CLI rightly cannot
// produce (expired, no clientAuth EKU, another CA).
func (p *certPKI) issue(t *testing.T, name string, caCert, caKeyFile string, o certauth.ClientOptions) [2]string {
	t.Helper()
	ca, err := readPEMCert(caCert)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := os.ReadFile(caKeyFile)
	blk, _ := pem.Decode(kb)
	caKey, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := certauth.NewKey()
	if o.NotBefore.IsZero() {
		o.NotBefore, o.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	}
	c, err := certauth.IssueClient(ca, caKey.(crypto.Signer), k.Public(), o)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	out := [2]string{filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")}
	os.WriteFile(out[0], pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600)
	os.WriteFile(out[1], pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	return out
}

func readPEMCert(f string) (*x509.Certificate, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM", f)
	}
	return x509.ParseCertificate(blk.Bytes)
}

func certConn(d *Daemon, pair [2]string) Conn {
	host, port := splitAddr(d.HTTPS)
	return Conn{Scheme: "https", Host: host, Port: port, Auth: "certificate", Encryption: "never",
		User: w.admin.Name, CertPEM: pair[0], KeyPEM: pair[1]}
}

func splitAddr(a string) (string, int) {
	i := strings.LastIndexByte(a, ':')
	var port int
	fmt.Sscanf(a[i+1:], "%d", &port)
	return a[:i], port
}

// certPost posts soap over a fresh TLS connection presenting pair (none when
// empty) with the Authorization value authz ("" for none).
func certPost(addr string, pair [2]string, authz, soap string) (int, []byte, error) {
	cfg := &tls.Config{InsecureSkipVerify: true}
	if pair[0] != "" {
		kp, err := tls.LoadX509KeyPair(pair[0], pair[1])
		if err != nil {
			return 0, nil, err
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, Proxy: nil, DisableKeepAlives: true}}
	req, _ := http.NewRequest("POST", "https://"+addr+"/wsman", strings.NewReader(soap))
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

var certCore = []scenario{
	{"stdout_exit0", "", scStdout},
	{"stderr", "", scStderr},
	{"exit_nonzero", "", scExitNonzero},
	{"identity", "", scIdentity},
	{"utf8_output", "", scUTF8},
	{"unknown_shell_id_fault", "", scUnknownShell},
}

func TestClientCertificate(t *testing.T) {
	need(t)
	p := newCertPKI(t)
	d := startDaemon(t, func(c *configs.Config) {
		c.Service.Auth.Certificate = true
		c.CertificateMappings = p.mappings()
	})
	ran := 0
	for _, drv := range drivers {
		drv := drv
		if !drv.Supports("", certConn(d, p.admin)) {
			t.Logf("%s has no client-certificate transport", drv.Name())
			continue
		}
		ran++
		t.Run(drv.Name(), func(t *testing.T) {
			x := &ictx{d: d, drv: drv, base: certConn(d, p.admin)}
			for _, sc := range certCore {
				sc := sc
				t.Run(sc.name, func(t *testing.T) {
					t.Cleanup(func() { checkNoLeftovers(t, "after "+sc.name, 5*time.Second) })
					sc.run(t, x)
				})
			}
			// The mapped account is not an administrator: refused, nothing ran.
			before := d.executions()
			r := drv.Do(t, certConn(d, p.plain), Spec{Op: "run", Command: "echo must-not-run"})
			if r.OK || !(r.refusedAuth() || r.accessDenied()) {
				t.Errorf("non-administrator mapping: %s, want refused", r)
			}
			wantNothingRan(t, d, before)
		})
	}
	if ran < 3 {
		t.Errorf("only %d clients ran certificate logons, want pywinrm, pypsrp and masterzen", ran)
	}
	t.Run("curl", func(t *testing.T) { curlCert(t, d, p.admin) })

	if n := d.AuditCount("logon_success", w.admin.Name); n < 4 {
		t.Errorf("logon_success audited %d times for %s, want one per client at least", n, w.admin.Name)
	}
	var sawScheme bool
	for _, e := range d.AuditEvents() {
		if e.Event == "logon_success" && e.Scheme == string(authn.SchemeCertificate) && auditField(e, "upn") == upnOf(w.admin) {
			sawScheme = true
		}
	}
	if !sawScheme {
		t.Errorf("no logon_success audited with scheme %s and the certificate's UPN", authn.SchemeCertificate)
	}
	m, err := d.MetricsSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := Metric(m, "winrmd_auth_attempts_total", `scheme="certificate"`, `result="success"`); v < 4 {
		t.Errorf("auth metrics: %v certificate successes", v)
	}
	if v, _ := Metric(m, "winrmd_auth_attempts_total", `scheme="certificate"`, `result="denied"`); v < 1 {
		t.Errorf("auth metrics: %v certificate denials (the non-administrator)", v)
	}

	// The mutual header without a certificate, and over plain HTTP.
	before := d.executions()
	if st, _, err := certPost(d.HTTPS, [2]string{}, authn.CertificateProfile, createXML()); err != nil || st != 401 {
		t.Errorf("mutual header without a certificate: %d %v, want 401", st, err)
	}
	if r := (pyDriver{"pywinrm"}).Do(t, Conn{Scheme: "http", Host: "127.0.0.1", Port: mustPort(d.HTTP), Auth: "certificate",
		User: w.admin.Name, CertPEM: p.admin[0], KeyPEM: p.admin[1], Encryption: "never"}, Spec{Op: "run", Command: "echo must-not-run"}); r.OK {
		t.Errorf("certificate over HTTP accepted: %s", r)
	}
	wantNothingRan(t, d, before)
	mustServe(t, d)
}

// auditField is one string field of an audit line.
func auditField(e AuditEvent, key string) string {
	var m map[string]any
	json.Unmarshal([]byte(e.Raw), &m)
	s, _ := m[key].(string)
	return s
}

func mustPort(addr string) int { _, p := splitAddr(addr); return p }

// Every refusal, on a daemon of its own: the failures lock the source out,
// which is the last check.
func TestClientCertificateRefused(t *testing.T) {
	need(t)
	p := newCertPKI(t)
	d := startDaemon(t, func(c *configs.Config) {
		c.Service.Auth.Certificate = true
		c.CertificateMappings = p.mappings()
	})
	// Another CA with the same UPN, an expired certificate, one without the
	// clientAuth EKU, the revoked one, and an unmapped UPN.
	otherCA, otherKey := filepath.Join(p.dir, "other-ca.pem"), filepath.Join(p.dir, "other-ca.key")
	if out, err := cli(t, "", "cert", "ca", "--cert", otherCA, "--key", otherKey); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	cases := []struct {
		name   string
		pair   [2]string
		reason string
	}{
		{"other CA", p.issue(t, "other", otherCA, otherKey, certauth.ClientOptions{UPN: upnOf(w.admin)}), "not issued by a mapped CA"},
		{"expired", p.issue(t, "expired", p.ca, p.caKey, certauth.ClientOptions{UPN: upnOf(w.admin),
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}), "expired"},
		{"no clientAuth EKU", p.issue(t, "noeku", p.ca, p.caKey, certauth.ClientOptions{UPN: upnOf(w.admin), NoEKU: true}), "clientAuth"},
		{"revoked by CRL", p.revoked, "revoked"},
		{"unmapped subject", p.issue(t, "unmapped", p.ca, p.caKey, certauth.ClientOptions{UPN: "nobody@elsewhere.test"}), "no certificate mapping"},
	}
	before := d.executions()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r Result
			if i%2 == 0 {
				r = (pyDriver{"pypsrp"}).Do(t, certConn(d, c.pair), Spec{Op: "run", Command: "echo must-not-run"})
			} else {
				r = (pyDriver{"pywinrm"}).Do(t, certConn(d, c.pair), Spec{Op: "run", Command: "echo must-not-run"})
			}
			if r.OK || !r.refusedAuth() {
				t.Errorf("%s: %s, want 401", c.name, r)
			}
			if !d.waitAudit("logon_failure", "", i+1, 5*time.Second) {
				t.Errorf("%s: no logon_failure audited", c.name)
			}
			found := false
			for _, e := range d.AuditEvents() {
				if e.Event == "logon_failure" && e.Scheme == string(authn.SchemeCertificate) && strings.Contains(auditField(e, "reason"), c.reason) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: no logon_failure with reason %q", c.name, c.reason)
			}
		})
	}
	wantNothingRan(t, d, before)
	// Five failures from one source: the good certificate is now refused too.
	st, _, err := certPost(d.HTTPS, p.admin, authn.CertificateProfile, createXML())
	if err != nil || st != 401 {
		t.Errorf("after five failures: %d %v, want 401 (rate limited)", st, err)
	}
	m, _ := d.MetricsSnapshot()
	if v, _ := Metric(m, "winrmd_auth_attempts_total", `scheme="certificate"`, `result="rate_limited"`); v < 1 {
		t.Errorf("no rate_limited certificate attempt counted")
	}
	if v, _ := Metric(m, "winrmd_auth_attempts_total", `scheme="certificate"`, `result="failure"`); v < 5 {
		t.Errorf("certificate failures counted: %v, want 5", v)
	}
	wantNothingRan(t, d, before)
}

// Certificate logons are off by default: the same certificate gets 401.
func TestClientCertificateDisabled(t *testing.T) {
	need(t)
	p := newCertPKI(t)
	d := startDaemon(t, func(c *configs.Config) { c.CertificateMappings = p.mappings() })
	before := d.executions()
	r := (pyDriver{"pywinrm"}).Do(t, certConn(d, p.admin), Spec{Op: "run", Command: "echo must-not-run"})
	if r.OK || !r.refusedAuth() {
		t.Errorf("certificate logon with service.auth.certificate false: %s", r)
	}
	if st, _, err := certPost(d.HTTPS, p.admin, "", createXML()); err != nil || st != 401 {
		t.Errorf("bare client certificate, certificates off: %d %v", st, err)
	}
	wantNothingRan(t, d, before)
}

// curlCert drives a whole command with curl --cert, no Authorization
// header: the certificate alone is the credential.
func curlCert(t *testing.T, d *Daemon, pair [2]string) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl missing (make deps installs it): %v", err)
	}
	dir := t.TempDir()
	n := 0
	curl := func(soap string) (int, []byte) {
		t.Helper()
		n++
		f := filepath.Join(dir, fmt.Sprintf("req%d.xml", n))
		os.WriteFile(f, []byte(soap), 0o600)
		out := filepath.Join(dir, fmt.Sprintf("resp%d.xml", n))
		code, err := exec.Command("curl", "-sS", "-k", "--cert", pair[0], "--key", pair[1], "--noproxy", "*",
			"-H", "Content-Type: application/soap+xml;charset=UTF-8", "--data-binary", "@"+f,
			"-o", out, "-w", "%{http_code}", "--max-time", "30", "https://"+d.HTTPS+"/wsman").Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		var status int
		fmt.Sscanf(string(code), "%d", &status)
		body, _ := os.ReadFile(out)
		return status, body
	}
	st, body := curl(createXML())
	if st != 200 {
		t.Fatalf("curl Create: HTTP %d %s", st, body)
	}
	root, _ := parseXML(body)
	var shellID string
	for _, s := range root.all("Selector") {
		if s.Attr["Name"] == "ShellId" {
			shellID = strings.TrimSpace(s.Text)
		}
	}
	st, body = curl(commandXML(shellID, "id -un; exit 3"))
	if st != 200 {
		t.Fatalf("curl Command: HTTP %d %s", st, body)
	}
	root, _ = parseXML(body)
	cid := strings.TrimSpace(root.first("CommandId").Text)
	var stdout []byte
	exit := -1
	for i := 0; i < 20 && exit < 0; i++ {
		st, body = curl(receiveXML(shellID, cid))
		if st == 500 {
			if f := parseFault(body); f != nil && f.WSMan == codeTimedOut {
				continue
			}
		}
		if st != 200 {
			t.Fatalf("curl Receive: HTTP %d %s", st, body)
		}
		root, _ = parseXML(body)
		for _, s := range root.all("Stream") {
			if s.Attr["Name"] == "stdout" {
				b, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(s.Text))
				stdout = append(stdout, b...)
			}
		}
		if cs := root.first("CommandState"); cs != nil && strings.HasSuffix(cs.Attr["State"], "Done") {
			fmt.Sscanf(strings.TrimSpace(cs.first("ExitCode").Text), "%d", &exit)
		}
	}
	if string(stdout) != w.admin.Name+"\n" || exit != 3 {
		t.Errorf("curl --cert: stdout %q exit %d, want %q and 3", stdout, exit, w.admin.Name+"\n")
	}
	if st, body = curl(deleteXML(shellID)); st != 200 {
		t.Errorf("curl Delete: HTTP %d %s", st, body)
	}
}
