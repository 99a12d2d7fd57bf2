package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// NTLM negatives of issue 3 over raw sockets (bodgit/ntlmssp drives the
// handshake and the sealing), and curl --ntlm.

// refused: the daemon's answer is a refusal (any 4xx/5xx, or it closed the
// connection), never a 200.
func refused(r *reply) bool { return r != nil && (r.Closed || r.Status >= 400) }

func mustServe(t *testing.T, d *Daemon) {
	t.Helper()
	if err := identify(d.HTTP, false); err != nil {
		t.Fatalf("daemon stopped serving (http): %v", err)
	}
	if err := identify(d.HTTPS, true); err != nil {
		t.Fatalf("daemon stopped serving (https): %v", err)
	}
}

func TestNTLMNegatives(t *testing.T) {
	need(t)
	d := startDaemon(t, nil)

	// The sealed-message attacks need a live, valid context.
	sealed := func(t *testing.T) *ntlmConn {
		nc, r, err := dialNTLM(d.HTTP, false, w.admin.Name, w.admin.Password, ntlmOpts{})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if r.Status != 200 {
			nc.Close()
			t.Fatalf("handshake: %s", r)
		}
		return nc
	}

	t.Run("sealed_roundtrip_works", func(t *testing.T) {
		nc := sealed(t)
		defer nc.Close()
		sh, err := createShell(nc)
		if err != nil {
			t.Fatal(err)
		}
		res, err := sh.run("echo sealed-ok")
		if err != nil || string(res.Stdout) != "sealed-ok\n" {
			t.Fatalf("run: %v %+v", err, res)
		}
		if err := sh.delete(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("replayed_encrypted_message", func(t *testing.T) {
		nc := sealed(t)
		defer nc.Close()
		before := d.executions()
		sh, err := createShell(nc)
		if err != nil {
			t.Fatal(err)
		}
		replay := append([]byte(nil), nc.lastSealed...)
		r, err := nc.postRawBody(replay, mpCT)
		if err != nil && r == nil {
			t.Logf("replay: %v", err)
		} else if !refused(r) {
			t.Errorf("replayed Create accepted: %s", r)
		}
		// Exactly one shell exists; clean it up on a fresh context.
		after := d.executions()
		if after.shellCreates != before.shellCreates+1 {
			t.Errorf("shell_create %d→%d: the replay created a shell", before.shellCreates, after.shellCreates)
		}
		nc2 := sealed(t)
		defer nc2.Close()
		sh.c = nc2
		if err := sh.delete(); err != nil {
			t.Errorf("delete on a new connection: %v", err)
		}
		mustServe(t, d)
	})

	t.Run("replay_on_new_connection", func(t *testing.T) {
		nc := sealed(t)
		if _, err := nc.postSealed(identifyAuthXML()); err != nil {
			t.Fatal(err)
		}
		body := append([]byte(nil), nc.lastSealed...)
		nc.Close()
		before := d.executions()
		rc, err := dialRaw(d.HTTP, false)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		r, err := rc.request("POST", "/wsman", map[string]string{"Content-Type": mpCT}, body, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != 401 && !r.Closed {
			t.Errorf("sealed body on an unauthenticated connection: got %s, want 401", r)
		}
		wantNothingRan(t, d, before)
	})

	tamper := func(name string, mutate func(body []byte) []byte) {
		t.Run(name, func(t *testing.T) {
			nc := sealed(t)
			defer nc.Close()
			before := d.executions()
			body, err := nc.sealBody([]byte(createXML()))
			if err != nil {
				t.Fatal(err)
			}
			r, err := nc.postRawBody(mutate(body), mpCT)
			if err != nil && r == nil {
				t.Logf("post: %v", err)
			} else if !refused(r) {
				t.Errorf("%s accepted: %s", name, r)
			}
			wantNothingRan(t, d, before)
			mustServe(t, d)
		})
	}
	sigAt := func(body []byte) int {
		return bytes.Index(body, []byte("application/octet-stream\r\n")) + len("application/octet-stream\r\n") + 4
	}
	tamper("tampered_signature", func(b []byte) []byte { b[sigAt(b)+6] ^= 0x55; return b })
	tamper("tampered_sequence_number", func(b []byte) []byte { b[sigAt(b)+12] ^= 0x01; return b })
	tamper("tampered_ciphertext", func(b []byte) []byte { b[sigAt(b)+16+10] ^= 0x01; return b })
	tamper("wrong_length", func(b []byte) []byte {
		return regexp.MustCompile(`Length=\d+`).ReplaceAll(b, []byte("Length=7"))
	})
	tamper("truncated", func(b []byte) []byte { return b[:sigAt(b)+20] })
	tamper("signature_length_overflow", func(b []byte) []byte {
		i := sigAt(b) - 4
		b[i], b[i+1], b[i+2], b[i+3] = 0xff, 0xff, 0xff, 0x7f
		return b
	})

	t.Run("plain_body_after_ntlm_on_http", func(t *testing.T) {
		nc := sealed(t)
		defer nc.Close()
		before := d.executions()
		r, err := nc.postRawBody([]byte(createXML()), "application/soap+xml;charset=UTF-8")
		if err != nil && r == nil {
			t.Logf("post: %v", err)
		} else if !refused(r) {
			t.Errorf("plain body after NTLM on HTTP accepted: %s", r)
		}
		wantNothingRan(t, d, before)
		mustServe(t, d)
	})

	t.Run("context_is_per_connection", func(t *testing.T) {
		nc := sealed(t)
		nc.Close()
		rc, err := dialRaw(d.HTTP, false)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		r, err := rc.request("POST", "/wsman", nil, []byte(createXML()), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != 401 {
			t.Errorf("new connection without Authorization: got %s, want 401", r)
		}
	})

	// Refused logons come last (and from their own source addresses), so
	// that the daemon's lockout cannot touch the valid contexts above.
	handshakeRefused := []struct {
		name       string
		user, pass string
		o          ntlmOpts
	}{
		{"wrong_password", w.guess.Name, "wrong-" + w.guess.Password, ntlmOpts{}},
		{"unknown_user", userPrefix + "ghost", "whatever", ntlmOpts{}},
		{"ntlmv1", w.guess.Name, w.guess.Password, ntlmOpts{level: 1}},
		{"anonymous", "", "", ntlmOpts{}},
	}
	for _, c := range handshakeRefused {
		t.Run(c.name, func(t *testing.T) {
			before := d.executions()
			c.o.src = srcAddr()
			nc, r, err := dialNTLM(d.HTTP, false, c.user, c.pass, c.o)
			if err != nil && r == nil {
				t.Fatalf("handshake: %v", err)
			}
			if nc != nil {
				defer nc.Close()
			}
			if r.Status == 200 {
				// Some acceptors answer the last leg only when a request
				// needs it: the next request must then be refused.
				rr, err := nc.postSealed(createXML())
				if err != nil {
					t.Fatalf("post: %v", err)
				}
				if !refused(rr) {
					t.Fatalf("%s: authenticated and served: %s", c.name, rr)
				}
			} else if !refused(r) {
				t.Fatalf("%s: got %s, want refusal", c.name, r)
			}
			wantNothingRan(t, d, before)
			mustServe(t, d)
		})
	}

	t.Run("non_administrator", func(t *testing.T) {
		before := d.executions()
		nc, r, err := dialNTLM(d.HTTP, false, w.plain.Name, w.plain.Password, ntlmOpts{src: srcAddr()})
		if err != nil && r == nil {
			t.Fatal(err)
		}
		if nc != nil {
			defer nc.Close()
		}
		if r.Status == 200 {
			rr, err := nc.postSealed(createXML())
			if err != nil {
				t.Fatal(err)
			}
			if !refused(rr) {
				t.Fatalf("non-administrator created a shell: %s", rr)
			}
			if rr.Status == 500 && !rr.fault().isAccessDenied() {
				t.Errorf("non-administrator: got %s, want Access Denied", rr)
			}
		}
		wantNothingRan(t, d, before)
		mustServe(t, d)
	})

	t.Run("pywinrm_wrong_password", func(t *testing.T) {
		h, p := hostPort(t, d.HTTP)
		before := d.executions()
		r := pyDriver{"pywinrm"}.Do(t, Conn{Scheme: "http", Host: h, Port: p, Auth: "ntlm", Encryption: "always",
			User: w.guess.Name, Password: "nope"}, Spec{Op: "run", Command: "echo no"})
		if !r.refusedAuth() {
			t.Errorf("got %s, want 401", r)
		}
		wantNothingRan(t, d, before)
	})

	if !d.waitAudit("logon_failure", "", 2, 3*time.Second) {
		t.Errorf("audit: no logon_failure for the refused NTLM logons")
	}
}

// identifyAuthXML is an Identify sent over an authenticated context.
func identifyAuthXML() string { return identifyXML }

// Channel binding on HTTPS: at "strict" the real clients (which send CBT)
// work and a missing or wrong binding is refused; at "relaxed" a missing one
// is accepted and a wrong one is still refused.
func TestNTLMChannelBinding(t *testing.T) {
	need(t)
	for _, level := range []string{"strict", "relaxed"} {
		t.Run(level, func(t *testing.T) {
			d := startDaemon(t, func(c *configs.Config) { c.Service.Auth.CBTHardeningLevel = level })
			h, p := hostPort(t, d.HTTPS)
			for _, drv := range []driver{pyDriver{"pywinrm"}, pyDriver{"pypsrp"}} {
				r := drv.Do(t, Conn{Scheme: "https", Host: h, Port: p, Auth: "ntlm", User: w.admin.Name, Password: w.admin.Password, CBT: true},
					Spec{Op: "run", Command: "echo cbt-ok"})
				if !r.OK || string(r.Stdout) != "cbt-ok\n" {
					t.Errorf("%s with CBT at %s: %s", drv.Name(), level, r)
				}
			}
			try := func(name string, o ntlmOpts, wantOK bool) {
				before := d.executions()
				nc, r, err := dialNTLM(d.HTTPS, true, w.admin.Name, w.admin.Password, o)
				if err != nil && r == nil {
					t.Fatalf("%s: %v", name, err)
				}
				ok := r.Status == 200
				if ok {
					sh, err := createShell(tlsPlain{nc})
					ok = err == nil
					if ok {
						sh.delete()
					}
				}
				if nc != nil {
					nc.Close()
				}
				if ok != wantOK {
					t.Errorf("%s at %s: served=%v, want %v (%s)", name, level, ok, wantOK, r)
				}
				if !wantOK {
					wantNothingRan(t, d, before)
				}
			}
			try("no_cbt", ntlmOpts{noCBT: true, src: srcAddr()}, level == "relaxed")
			try("wrong_cbt", ntlmOpts{bindings: []byte("tls-server-end-point:" + strings.Repeat("\x42", 32)), src: srcAddr()}, false)
			try("right_cbt", ntlmOpts{}, true)
			mustServe(t, d)
		})
	}
}

// tlsPlain sends plain SOAP on an NTLM-authenticated TLS connection (no
// message sealing on HTTPS, as clients do by default).
type tlsPlain struct{ nc *ntlmConn }

func (p tlsPlain) Post(soap string) (*reply, error) {
	return p.nc.rc.request("POST", "/wsman", nil, []byte(soap), 60*time.Second)
}

// curl --ntlm over HTTPS runs a command end to end (one connection per curl
// call, so every step authenticates anew); over HTTP its plain body is
// refused.
func TestCurlNTLM(t *testing.T) {
	need(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl missing (make deps installs it): %v", err)
	}
	d := startDaemon(t, nil)
	dir := t.TempDir()
	n := 0
	curl := func(base, soap string, user, pass string) (int, []byte) {
		t.Helper()
		n++
		f := filepath.Join(dir, fmt.Sprintf("req%d.xml", n))
		os.WriteFile(f, []byte(soap), 0o600)
		out := filepath.Join(dir, fmt.Sprintf("resp%d.xml", n))
		cmd := exec.Command("curl", "-sS", "-k", "--ntlm", "-u", user+":"+pass, "--noproxy", "*",
			"-H", "Content-Type: application/soap+xml;charset=UTF-8", "--data-binary", "@"+f,
			"-o", out, "-w", "%{http_code}", "--max-time", "30", base+"/wsman")
		code, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		var status int
		fmt.Sscanf(string(code), "%d", &status)
		body, _ := os.ReadFile(out)
		return status, body
	}
	https := "https://" + d.HTTPS
	u := w.admin
	st, body := curl(https, createXML(), u.Name, u.Password)
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
	st, body = curl(https, commandXML(shellID, "echo curl-ntlm; exit 5"), u.Name, u.Password)
	if st != 200 {
		t.Fatalf("curl Command: HTTP %d %s", st, body)
	}
	root, _ = parseXML(body)
	cid := strings.TrimSpace(root.first("CommandId").Text)
	var stdout []byte
	exit := -1
	for i := 0; i < 20 && exit < 0; i++ {
		st, body = curl(https, receiveXML(shellID, cid), u.Name, u.Password)
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
	if string(stdout) != "curl-ntlm\n" || exit != 5 {
		t.Errorf("curl run: stdout %q exit %d", stdout, exit)
	}
	curl(https, signalXML(shellID, cid, sigTerm), u.Name, u.Password)
	if st, body = curl(https, deleteXML(shellID), u.Name, u.Password); st != 200 {
		t.Errorf("curl Delete: HTTP %d %s", st, body)
	}

	// Plain HTTP: curl cannot seal, so the daemon must refuse its body.
	before := d.executions()
	st, body = curl("http://"+d.HTTP, createXML(), u.Name, u.Password)
	if st == 200 {
		t.Errorf("curl --ntlm plain body over HTTP accepted: %s", body)
	}
	wantNothingRan(t, d, before)
	// Wrong password over HTTPS.
	st, _ = curl(https, createXML(), u.Name, "wrong")
	if st != 401 {
		t.Errorf("curl wrong password: HTTP %d, want 401", st)
	}
	wantNothingRan(t, d, before)
	mustServe(t, d)
}
