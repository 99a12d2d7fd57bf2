package main

import (
	"os"

	"github.com/winrmd/winrmd/configs"
)

// unservedSchemes names each authentication scheme the configuration
// switches on that the daemon would not actually serve, and why: a
// configuration must never claim a scheme nobody can log on with (issue
// 14.14). `config check` prints these and start-up logs them as warnings.
// One rule per scheme; a new mechanism adds its own here.
func unservedSchemes(c *configs.Config) []string {
	var out []string
	a := c.Service.Auth
	https := false
	for _, l := range c.Listeners {
		https = https || l.Transport == "https"
	}
	kerberos := kerberosServed(c)
	if a.Kerberos && !kerberos {
		out = append(out, "service.auth.kerberos is on but Kerberos is not served: no kerberos.keytab configured and no "+configs.DefaultKeytab)
	}
	if a.Negotiate && c.Accounts.StoreFile == "" && !c.Accounts.Winbind.Enabled && !kerberos {
		out = append(out, "service.auth.negotiate is on but neither NTLM (no accounts.store_file, no accounts.winbind) nor Kerberos (no keytab) can verify a logon")
	}
	if a.Basic && !https && !c.Service.AllowUnencrypted {
		out = append(out, "service.auth.basic is on but no HTTPS listener exists and service.allow_unencrypted is off: Basic is never offered")
	}
	if a.Certificate && !https {
		out = append(out, "service.auth.certificate is on but no HTTPS listener exists: client certificates need TLS")
	}
	return out
}

// kerberosServed mirrors buildKerberos's choice of keytab: the configured
// one, else the system's when it exists.
func kerberosServed(c *configs.Config) bool {
	if !c.Service.Auth.Kerberos && !c.Service.Auth.Negotiate {
		return false
	}
	if c.Kerberos.Keytab != "" {
		return true // a keytab named must load, or start-up fails
	}
	_, err := os.Stat(configs.DefaultKeytab)
	return err == nil
}
