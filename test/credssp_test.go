package e2e

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn/kerberos/krbtest"
	"github.com/winrmd/winrmd/configs"
)

// CredSSP (issue 11): pywinrm transport='credssp' and pypsrp
// auth='credssp' (both through requests-credssp / pyspnego), over HTTP
// with CredSSP message encryption and over HTTPS.

func credsspConn(d *Daemon, scheme string, u *testUser) Conn {
	addr := d.HTTP
	if scheme == "https" {
		addr = d.HTTPS
	}
	host, port := splitAddr(addr)
	return Conn{Scheme: scheme, Host: host, Port: port, Auth: "credssp", Encryption: "auto", User: u.Name, Password: u.Password}
}

func startCredSSP(t *testing.T) *Daemon {
	return startDaemon(t, func(c *configs.Config) { c.Service.Auth.CredSSP = true })
}

func TestCredSSP(t *testing.T) {
	need(t)
	d := startCredSSP(t)
	for _, scheme := range []string{"http", "https"} {
		for _, client := range []string{"pywinrm", "pypsrp"} {
			drv := pyDriver{client}
			t.Run(scheme+"/"+client, func(t *testing.T) {
				x := &ictx{d: d, drv: drv, base: credsspConn(d, scheme, w.admin)}
				core := certCore
				if scheme == "http" {
					// Bodies over 16 KiB both ways: multipart/x-multi-encrypted
					// in CredSSP chunks (150 KB of stdin, 5 MiB of output).
					core = append(append([]scenario{}, certCore...),
						scenario{"stdin_150KB", "", scStdin}, scenario{"output_5MiB_sha256", "", scBigOutput})
				}
				for _, sc := range core {
					sc := sc
					t.Run(sc.name, func(t *testing.T) {
						t.Cleanup(func() { checkNoLeftovers(t, "after "+sc.name, 5*time.Second) })
						sc.run(t, x)
					})
				}
			})
		}
	}
}

// The refusals, each with pyspnego's real initiator changed in one place
// (test/clients/credssp_attack_client.py), over HTTPS with a Create
// envelope on every leg: nothing may run, and no password may appear in the
// daemon's log, the audit log or what the client was told.
func TestCredSSPRefused(t *testing.T) {
	need(t)
	d := startCredSSP(t)
	host, port := splitAddr(d.HTTPS)
	drv := pyDriver{"credssp_attack"}
	wrong := "Wrong-" + randHex(8) + "!"
	conn := func(u *testUser) Conn {
		return Conn{Scheme: "https", Host: host, Port: port, Auth: "credssp", User: u.Name, Password: u.Password}
	}
	ctl := drv.Do(t, conn(w.admin), Spec{Op: "control", Command: createXML()})
	if !ctl.OK {
		t.Fatalf("control run (nothing changed) failed: %s", ctl)
	}
	if n := d.AuditCount("shell_create", w.admin.Name); n != 1 {
		t.Fatalf("control run: %d shells created, want 1", n)
	}
	// The control's shell: delete it through a real client.
	m := regexp.MustCompile(`ShellId">([0-9A-Fa-f-]{36})<`).FindStringSubmatch(ctl.Error)
	if m == nil {
		t.Fatalf("control run: no ShellId in %q", ctl.Error)
	}
	hc := credsspConn(d, "https", w.admin)
	hc.Auth, hc.Encryption = "ntlm", "never"
	if r := (pyDriver{"pywinrm"}).Do(t, hc, Spec{Op: "delete_shell", ShellID: m[1]}); !r.OK {
		t.Fatalf("deleting the control's shell: %s", r)
	}

	before := d.executions()
	cases := []struct {
		mode   string
		as     *testUser
		env    map[string]string
		reason string
	}{
		{"wrong_password", w.guess, map[string]string{"password": wrong}, "delegated password"},
		{"mismatched_user", w.admin2, map[string]string{"user": w.admin.Name, "password": w.admin.Password}, "another user"},
		{"tampered_pubkey", w.admin, nil, "pubKeyAuth"},
		{"version_change", w.admin, nil, "version"},
		{"truncated", w.admin, nil, "credssp"},
	}
	var told []string
	for i, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			r := drv.Do(t, conn(c.as), Spec{Op: c.mode, Command: createXML(), Env: c.env})
			if r.OK {
				t.Fatalf("%s: accepted: %s", c.mode, r)
			}
			told = append(told, r.Error, r.Traceback)
			if !d.waitAudit("logon_failure", "", i+1, 5*time.Second) {
				t.Fatalf("%s: no logon_failure audited", c.mode)
			}
			found := false
			for _, e := range d.AuditEvents() {
				if e.Event == "logon_failure" && e.Scheme == "CredSSP" && strings.Contains(auditField(e, "reason"), c.reason) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: no CredSSP logon_failure with reason containing %q", c.mode, c.reason)
			}
		})
	}
	wantNothingRan(t, d, before)
	mustServe(t, d)
	// No core file can hold a delegated password.
	lim, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", d.PID))
	if err != nil || !regexp.MustCompile(`(?m)^Max core file size\s+0\s`).Match(lim) {
		t.Errorf("a CredSSP daemon may dump core (%v):\n%s", err, lim)
	}
	secrets := []string{wrong}
	for _, u := range w.users() {
		secrets = append(secrets, u.Password)
	}
	d.stop()
	for _, f := range []string{d.Stderr, d.Audit} {
		b, _ := os.ReadFile(f)
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) || bytes.Contains(b, utf16le(s)) {
				t.Errorf("a password appears in %s", f)
			}
		}
	}
	for _, s := range secrets {
		for _, m := range told {
			if strings.Contains(m, s) {
				t.Errorf("a password appears in what the client was told: %q", m)
			}
		}
	}
}

// CredSSP disabled (the default): the same client is refused, nothing runs.
func TestCredSSPDisabled(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	before := d.executions()
	for _, scheme := range []string{"http", "https"} {
		r := (pyDriver{"pywinrm"}).Do(t, credsspConn(d, scheme, w.admin), Spec{Op: "run", Command: "echo must-not-run"})
		if r.OK {
			t.Errorf("%s: CredSSP logon accepted while disabled: %s", scheme, r)
		}
	}
	host, port := splitAddr(d.HTTPS)
	r := (pyDriver{"credssp_attack"}).Do(t, Conn{Scheme: "https", Host: host, Port: port, User: w.admin.Name, Password: w.admin.Password},
		Spec{Op: "control", Command: createXML()})
	if r.OK {
		t.Errorf("CredSSP tokens accepted while disabled: %s", r)
	}
	wantNothingRan(t, d, before)
}

const ccScript = `echo "CC=$KRB5CCNAME"; f="${KRB5CCNAME#FILE:}"; [ -n "$f" ] && stat -c 'OWNER=%U MODE=%a' "$f"; klist 2>&1; kvno HTTP/elsewhere 2>&1 && echo KVNO-OK`

// Without Kerberos the delegated password gives the shell nothing.
func TestCredSSPNoSecondHopWithoutKerberos(t *testing.T) {
	need(t)
	d := startCredSSP(t)
	r := (pyDriver{"pywinrm"}).Do(t, credsspConn(d, "http", w.admin), Spec{Op: "run", Command: ccScript})
	if !r.OK {
		t.Fatalf("%s", r)
	}
	if out := string(r.Stdout); !strings.HasPrefix(out, "CC=\n") || strings.Contains(out, "KVNO-OK") {
		t.Fatalf("a CredSSP shell without Kerberos has credentials:\n%s", out)
	}
}

// With Kerberos configured, the delegated password becomes the shell's
// TGT (the second hop): klist shows it, kvno uses it, the cache is the
// user's own 0600 file and is gone with the shell.
func TestCredSSPSecondHop(t *testing.T) {
	d, k := kerberosDaemon(t, func(c *configs.Config) {
		c.Service.Auth.CredSSP = true
		c.Kerberos.Krb5Conf = needKerberos(t).kdc.Conf
	})
	for _, client := range []string{"pywinrm", "pypsrp"} {
		t.Run(client, func(t *testing.T) {
			c := credsspConn(d, "http", w.admin)
			r := (pyDriver{client}).Do(t, c, Spec{Op: "run", Command: ccScript, Env: map[string]string{"KRB5_CONFIG": k.kdc.Conf}})
			if !r.OK {
				t.Fatalf("%s", r)
			}
			out := string(r.Stdout)
			var path string
			for _, l := range strings.Split(out, "\n") {
				if p, ok := strings.CutPrefix(l, "CC=FILE:"); ok {
					path = p
				}
			}
			if path == "" || !strings.Contains(out, "OWNER="+w.admin.Name+" MODE=600") {
				t.Fatalf("no credential cache of the user's own:\n%s", out)
			}
			if !strings.Contains(out, "krbtgt/"+krbtest.Realm+"@"+krbtest.Realm) || !strings.Contains(out, w.admin.Name+"@"+krbtest.Realm) {
				t.Fatalf("klist in the CredSSP shell shows no TGT for the user:\n%s", out)
			}
			if !strings.Contains(out, "KVNO-OK") {
				t.Fatalf("kvno with the second-hop TGT failed:\n%s", out)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatalf("credential cache %s still there after the shell (%v)", path, err)
			}
		})
	}
	// The password reached no log and no audit line.
	d.stop()
	for _, f := range []string{d.Stderr, d.Audit} {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(w.admin.Password)) || bytes.Contains(b, utf16le(w.admin.Password)) {
			t.Errorf("the delegated password appears in %s", f)
		}
	}
}
