package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// The CLI contract the tests and operators rely on.

func TestCLIConfig(t *testing.T) {
	w := need(t)
	def, err := cli(t, "", "config", "default")
	if err != nil {
		t.Fatalf("config default: %v\n%s", err, def)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "default.yaml")
	os.WriteFile(p, []byte(def), 0o600)
	// The defaults name /etc/winrmd files that need not exist here; check
	// must still accept the syntax and values, or name a file it lacks.
	if out, err := cli(t, "", "config", "check", "--config", p); err != nil && !strings.Contains(out, "/etc/winrmd") {
		t.Errorf("config check of `config default`: %v\n%s", err, out)
	}
	for _, c := range []struct{ yaml, key string }{
		{"service:\n  max_envelope_size_kb: 1\n", "service.max_envelope_size_kb"},
		{"service:\n  auth:\n    cbt_hardening_level: sometimes\n", "service.auth.cbt_hardening_level"},
		{"winrs:\n  max_shells_per_user: 0\n", "winrs.max_shells_per_user"},
		{"listeners:\n  - {transport: gopher, address: 127.0.0.1, port: 0}\n", "listeners[0].transport"},
		{"service:\n  no_such_key: 1\n", "no_such_key"},
	} {
		p := filepath.Join(dir, "bad.yaml")
		os.WriteFile(p, []byte(c.yaml), 0o600)
		out, err := cli(t, "", "config", "check", "--config", p)
		if err == nil || !strings.Contains(out, c.key) {
			t.Errorf("config check of %q: err=%v, output %q does not name %s", c.yaml, err, out, c.key)
		}
		out, err = cli(t, "", "serve", "--config", p)
		if err == nil || !strings.Contains(out, c.key) {
			t.Errorf("serve with %q: err=%v, output %q does not name %s", c.yaml, err, out, c.key)
		}
	}
	if out, err := cli(t, "", "version"); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("version: %v %q", err, out)
	}
	_ = w
}

func TestCLIUserStore(t *testing.T) {
	w := need(t)
	store := filepath.Join(t.TempDir(), "accounts")
	u := w.admin2
	if err := w.storeAdd(store, u.Name, u.Password); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(store)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		t.Errorf("store mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(store)
	if strings.Contains(string(b), u.Password) {
		t.Errorf("the store holds the password in clear")
	}
	out, err := cli(t, "", "user", "list", "--store", store)
	if err != nil || !strings.Contains(out, u.Name) {
		t.Errorf("user list: %v %q", err, out)
	}
	if strings.Contains(out, u.Password) {
		t.Errorf("user list prints the password")
	}
	if out, err := cli(t, "", "user", "add", "--store", store, userPrefix+"nosuchaccount"); err == nil {
		t.Errorf("user add of an account NSS does not know succeeded: %q", out)
	}
	// passwd changes what the daemon accepts.
	newPw := randPassword()
	if out, err := cli(t, newPw+"\n", "user", "passwd", "--store", store, u.Name); err != nil {
		t.Fatalf("user passwd: %v %s", err, out)
	}
	d := startDaemon(t, func(c *configs.Config) { c.Accounts.StoreFile = store })
	if r, err := postBasic(d.HTTPS, true, u.Name, u.Password, createXML()); err != nil || r.Status != 401 {
		t.Errorf("old password after passwd: %v %v, want 401", err, r)
	}
	sh, err := createShell(basicClient{d.HTTPS, true, u.Name, newPw})
	if err != nil {
		t.Fatalf("new password after passwd: %v", err)
	}
	sh.delete()
	if out, err := cli(t, "", "user", "del", "--store", store, u.Name); err != nil {
		t.Fatalf("user del: %v %s", err, out)
	}
	time.Sleep(200 * time.Millisecond)
	// A deleted account no longer logs on (the daemon re-reads the store, or
	// a restart does).
	d.stop()
	d2 := startDaemon(t, func(c *configs.Config) { c.Accounts.StoreFile = store })
	if r, err := postBasic(d2.HTTPS, true, u.Name, newPw, createXML()); err != nil || r.Status != 401 {
		t.Errorf("deleted account: %v %v, want 401", err, r)
	}
}
