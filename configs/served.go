package configs

import "os"

// KerberosKeytab is the keytab the daemon serves Kerberos with, or "" when
// Kerberos is off: neither scheme that carries it (service.auth.kerberos,
// service.auth.negotiate) is on, or kerberos.keytab is empty and
// DefaultKeytab does not exist. A keytab that is named must load, or
// start-up fails.
func (c *Config) KerberosKeytab() string {
	if !c.Service.Auth.Kerberos && !c.Service.Auth.Negotiate {
		return ""
	}
	if c.Kerberos.Keytab != "" {
		return c.Kerberos.Keytab
	}
	if _, err := os.Stat(DefaultKeytab); err != nil {
		return ""
	}
	return DefaultKeytab
}

// UnservedSchemes names each authentication scheme the configuration
// switches on that the daemon would not actually serve, and why: a
// configuration must never claim a scheme nobody can log on with (issue
// 14.14). `config check` prints these and start-up logs them as warnings.
// One rule per scheme; a new mechanism adds its own here.
func (c *Config) UnservedSchemes() []string {
	var out []string
	a := c.Service.Auth
	https := false
	for _, l := range c.Listeners {
		https = https || l.Transport == "https"
	}
	kerberos := c.KerberosKeytab() != ""
	if a.Kerberos && !kerberos {
		out = append(out, "service.auth.kerberos is on but Kerberos is not served: no kerberos.keytab configured and no "+DefaultKeytab)
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
