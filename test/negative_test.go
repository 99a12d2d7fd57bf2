package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// Refusals of issue 2 with real clients and raw requests: each is refused,
// nothing runs, and the daemon keeps serving.

// No Authorization header: 401 listing the enabled schemes (one header line
// each), nothing runs, and no worker is spawned.
func TestNoAuthorizationHeader(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	for _, tr := range []struct {
		name string
		addr string
		tls  bool
	}{{"https", d.HTTPS, true}, {"http", d.HTTP, false}} {
		t.Run(tr.name, func(t *testing.T) {
			before := d.executions()
			for _, soap := range []string{createXML(), commandXML(strings.ToUpper(newUUID()), "id"), identifyXML} {
				rc, err := dialRaw(tr.addr, tr.tls)
				if err != nil {
					t.Fatal(err)
				}
				r, err := rc.request("POST", "/wsman", nil, []byte(soap), 10*time.Second)
				rc.Close()
				if err != nil {
					t.Fatal(err)
				}
				if r.Status != 401 {
					t.Fatalf("no Authorization: got %s, want 401", r)
				}
				schemes := r.Header.Values("WWW-Authenticate")
				var haveNeg, haveBasic bool
				for _, s := range schemes {
					// One scheme per line: after a comma only auth-params
					// (name=value) may follow, never another scheme.
					for _, part := range strings.Split(s, ",")[1:] {
						if !strings.Contains(part, "=") {
							t.Errorf("WWW-Authenticate joins schemes with a comma: %q", s)
						}
					}
					haveNeg = haveNeg || s == "Negotiate"
					haveBasic = haveBasic || strings.HasPrefix(s, "Basic")
				}
				// Basic is offered only where it may be used: HTTPS (or
				// HTTP with allow_unencrypted, not set here).
				if !haveNeg || haveBasic != tr.tls {
					t.Errorf("WWW-Authenticate = %q on %s, want Negotiate, and Basic only on https", schemes, tr.name)
				}
			}
			wantNothingRan(t, d, before)
			if n := d.AuditCount("logon_success", ""); n != 0 {
				t.Errorf("audit: %d logon_success without credentials", n)
			}
			if err := identify(tr.addr, tr.tls); err != nil {
				t.Errorf("daemon stopped serving: %v", err)
			}
		})
	}
}

// Basic over plain HTTP is refused by default (allow_unencrypted: false),
// with every client; with allow_unencrypted it works, so the refusal is the
// policy and not a broken listener.
func TestBasicOverHTTPRefused(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	h, p := hostPort(t, d.HTTP)
	c := Conn{Scheme: "http", Host: h, Port: p, Auth: "basic", Encryption: "never", User: w.admin.Name, Password: w.admin.Password}
	for _, drv := range drivers {
		if !drv.Supports("run", c) {
			continue // awinrm has no Basic
		}
		t.Run(drv.Name(), func(t *testing.T) {
			before := d.executions()
			r := drv.Do(t, c, Spec{Op: "run", Command: "echo must-not-run"})
			if r.OK {
				t.Fatalf("Basic over HTTP ran a command: %s", r)
			}
			if r.HTTPStatus != 401 && r.HTTPStatus != 400 && r.HTTPStatus != 403 && r.HTTPStatus != 500 {
				t.Errorf("Basic over HTTP: got %s, want a refusal status", r)
			}
			wantNothingRan(t, d, before)
		})
	}
	before := d.executions()
	r, err := postBasic(d.HTTP, false, w.admin.Name, w.admin.Password, createXML())
	if err != nil {
		t.Fatal(err)
	}
	if r.Status == 200 {
		t.Errorf("raw Basic over HTTP: %s", r)
	}
	wantNothingRan(t, d, before)
	if err := identify(d.HTTP, false); err != nil {
		t.Errorf("daemon stopped serving: %v", err)
	}

	t.Run("allowed_when_allow_unencrypted", func(t *testing.T) {
		d2 := startDaemon(t, func(c *configs.Config) { c.Service.AllowUnencrypted = true })
		sh, err := createShell(basicClient{d2.HTTP, false, w.admin.Name, w.admin.Password})
		if err != nil {
			t.Fatalf("Basic over HTTP with allow_unencrypted: %v", err)
		}
		res, err := sh.run("echo plain-ok")
		if err != nil || string(res.Stdout) != "plain-ok\n" {
			t.Errorf("run: %v %+v", err, res)
		}
		if err := sh.delete(); err != nil {
			t.Error(err)
		}
	})
}

// Basic with a wrong password or an unknown user: 401, audited, counted.
func TestBasicWrongCredentials(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	h, p := hostPort(t, d.HTTPS)
	for _, cs := range []struct{ name, user, pass string }{
		{"wrong_password", w.admin.Name, "not-" + w.admin.Password},
		{"unknown_user", userPrefix + "nobody", "whatever"},
		{"empty_password", w.admin.Name, ""},
	} {
		t.Run(cs.name, func(t *testing.T) {
			for _, drv := range drivers {
				if cs.pass == "" && drv.Name() != "masterzen" {
					continue // the python clients refuse an empty password themselves
				}
				c := Conn{Scheme: "https", Host: h, Port: p, Auth: "basic", User: cs.user, Password: cs.pass}
				if !drv.Supports("run", c) {
					continue // awinrm has no Basic
				}
				before := d.executions()
				r := drv.Do(t, c, Spec{Op: "run", Command: "echo no"})
				if !r.refusedAuth() {
					t.Errorf("%s: got %s, want 401", drv.Name(), r)
				}
				wantNothingRan(t, d, before)
			}
		})
	}
	if !d.waitAudit("logon_failure", "", 2, 3*time.Second) {
		t.Errorf("audit: logon_failure events missing")
	}
	if m, err := d.MetricsSnapshot(); err != nil {
		t.Errorf("metrics: %v", err)
	} else if v, _ := Metric(m, "winrmd_auth_attempts_total", `scheme="basic"`); v < 3 {
		t.Errorf("winrmd_auth_attempts_total{scheme=\"basic\"} = %v, want >= 3", v)
	}
}

// Hostile envelopes from an authenticated administrator: a fault (or 400),
// nothing runs, the daemon keeps serving.
func TestMalformedEnvelopes(t *testing.T) {
	need(t)
	d := startDaemon(t, func(c *configs.Config) { c.Service.MaxEnvelopeSizeKB = 32 })
	bc := basicClient{d.HTTPS, true, w.admin.Name, w.admin.Password}
	big := createXML()
	big = strings.Replace(big, "<s:Body>", "<s:Body><!--"+strings.Repeat("x", 40<<10)+"-->", 1)
	cases := []struct{ name, body string }{
		{"malformed_xml", `<s:Envelope xmlns:s="` + nsS + `"><s:Header><a:Action>`},
		{"not_xml", "this is not xml at all"},
		{"doctype", `<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY x "boom">]>` + strings.Replace(createXML(), "<s:Body>", "<s:Body>&x;", 1)},
		{"doctype_external", `<?xml version="1.0"?><!DOCTYPE foo SYSTEM "file:///etc/shadow">` + createXML()},
		{"over_max_envelope_size", big},
		{"empty_envelope", `<s:Envelope xmlns:s="` + nsS + `"/>`},
		{"unknown_action", env("http://example.invalid/Nope", uriCmd, "", "")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := d.executions()
			r, err := bc.Post(c.body)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case r.Closed:
			case r.Status == 500 && r.fault() != nil:
			case r.Status == 400 || r.Status == 413:
			default:
				t.Errorf("got %s, want a SOAP fault (500) or 400/413", r)
			}
			if r.Status == 500 && !strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/soap+xml") {
				t.Errorf("fault with Content-Type %q, want application/soap+xml", r.Header.Get("Content-Type"))
			}
			wantNothingRan(t, d, before)
			if err := identify(d.HTTPS, true); err != nil {
				t.Fatalf("daemon stopped serving: %v", err)
			}
		})
	}
	// Still fully working for a well-formed request.
	sh, err := createShell(bc)
	if err != nil {
		t.Fatalf("after the hostile envelopes: %v", err)
	}
	if res, err := sh.run("echo fine"); err != nil || string(res.Stdout) != "fine\n" {
		t.Errorf("run after hostile envelopes: %v %+v", err, res)
	}
	sh.delete()
}

// The audit trail of a normal session, and the RelatesTo echo.
func TestAuditTrailAndRelatesTo(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)
	bc := basicClient{d.HTTPS, true, w.admin.Name, w.admin.Password}
	soap := createXML()
	r, err := bc.Post(soap)
	if err != nil || r.Status != 200 {
		t.Fatalf("create: %v %v", err, r)
	}
	root, _ := parseXML(r.Body)
	req, _ := parseXML([]byte(soap))
	if rel, mid := root.first("RelatesTo"), req.first("MessageID"); rel == nil || strings.TrimSpace(rel.Text) != mid.Text {
		t.Errorf("RelatesTo does not echo MessageID %q", mid.Text)
	}
	var id string
	for _, s := range root.all("Selector") {
		if s.Attr["Name"] == "ShellId" {
			id = strings.TrimSpace(s.Text)
		}
	}
	sh := &winrsShell{c: bc, ID: id}
	if res, err := sh.run("exit 3"); err != nil || res.ExitCode != 3 {
		t.Errorf("run: %v %+v", err, res)
	}
	if err := sh.delete(); err != nil {
		t.Error(err)
	}
	want := []string{"logon_success", "shell_create", "command_start", "command_exit", "shell_delete"}
	deadline := time.Now().Add(3 * time.Second)
	for {
		missing := ""
		for _, ev := range want {
			found := false
			for _, e := range d.AuditEvents() {
				if e.Event == ev && auditUserIs(e.User, w.admin.Name) {
					found = true
					if ev != "logon_success" && !strings.EqualFold(e.ShellID, id) {
						t.Errorf("audit %s: shell_id %q, want %q", ev, e.ShellID, id)
					}
					if e.RemoteAddr == "" {
						t.Errorf("audit %s: no remote_addr", ev)
					}
					break
				}
			}
			if !found {
				missing += " " + ev
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit log lacks:%s\n%s", missing, tail(d.Audit, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b := tail(d.Audit, 1000); strings.Contains(b, w.admin.Password) {
		t.Errorf("the audit log contains a password")
	}
}
