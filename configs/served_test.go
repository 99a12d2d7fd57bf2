package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUnservedSchemes(t *testing.T) {
	_, defaultKeytab := os.Stat(DefaultKeytab)
	kt := filepath.Join(t.TempDir(), "krb5.keytab")
	for _, tt := range []struct {
		name string
		set  func(c *Config)
		want []string // substrings, one per warning, in order
	}{
		{"Kerberos with a keytab", func(c *Config) { c.Service.Auth.Kerberos, c.Kerberos.Keytab = true, kt }, nil},
		{"Basic over HTTP only", func(c *Config) {
			c.Service.Auth.Basic = true
			c.Listeners = []Listener{{Transport: "http", Address: "127.0.0.1:0"}}
		}, []string{"service.auth.basic"}},
		{"Basic over HTTP, unencrypted allowed", func(c *Config) {
			c.Service.Auth.Basic, c.Service.AllowUnencrypted = true, true
			c.Listeners = []Listener{{Transport: "http", Address: "127.0.0.1:0"}}
		}, nil},
		{"certificates without HTTPS", func(c *Config) {
			c.Service.Auth.Certificate = true
			c.Listeners = []Listener{{Transport: "http", Address: "127.0.0.1:0"}}
		}, []string{"service.auth.certificate"}},
		{"Negotiate with no source", func(c *Config) {
			c.Service.Auth.Negotiate, c.Accounts.StoreFile, c.Accounts.Winbind.Enabled = true, "", false
		}, map[bool][]string{true: {"service.auth.negotiate"}, false: nil}[defaultKeytab != nil]},
	} {
		c := Default()
		c.Accounts.StoreFile = "/etc/winrmd/accounts"
		c.Service.Auth.Kerberos = false
		tt.set(c)
		got := c.UnservedSchemes()
		if len(got) != len(tt.want) {
			t.Errorf("%s: %q, want %d warning(s)", tt.name, got, len(tt.want))
			continue
		}
		for i, w := range tt.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: %q does not name %s", tt.name, got[i], w)
			}
		}
	}
}

func TestKerberosKeytab(t *testing.T) {
	c := Default()
	c.Service.Auth.Kerberos, c.Service.Auth.Negotiate = false, false
	c.Kerberos.Keytab = "/x/krb5.keytab"
	if got := c.KerberosKeytab(); got != "" {
		t.Errorf("both schemes off: %q, want none", got)
	}
	c.Service.Auth.Negotiate = true
	if got := c.KerberosKeytab(); got != "/x/krb5.keytab" {
		t.Errorf("named keytab: %q", got)
	}
	c.Kerberos.Keytab = ""
	_, err := os.Stat(DefaultKeytab)
	if got := c.KerberosKeytab(); (got == DefaultKeytab) != (err == nil) || (got != "" && got != DefaultKeytab) {
		t.Errorf("no keytab named: %q (system keytab present: %v)", got, err == nil)
	}
}
