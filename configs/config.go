// Package configs holds winrmd's configuration schema, its defaults (Windows'
// WinRM defaults where Windows has one), validation and the embedded example
// files. Names mirror `winrm get winrm/config` in snake_case.
package configs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config is the whole daemon configuration.
type Config struct {
	Listeners     []Listener    `yaml:"listeners"`
	Service       Service       `yaml:"service"`
	Winrs         Winrs         `yaml:"winrs"`
	Authorization Authorization `yaml:"authorization"`
	Accounts      Accounts      `yaml:"accounts"`
	Kerberos      Kerberos      `yaml:"kerberos"`
	Logging       Logging       `yaml:"logging"`
	Metrics       Metrics       `yaml:"metrics"`
	Host          Host          `yaml:"host"`
	PowerShell    PowerShell    `yaml:"powershell"`
	// Sidecar, when its target is set, runs every shell inside another
	// container's namespaces (sidecar.go).
	Sidecar Sidecar `yaml:"sidecar"`
	// CertificateMappings is WinRM's winrm/config/service/certmapping: which
	// client certificates log on as which local account
	// (service.auth.certificate, HTTPS only).
	CertificateMappings []CertMapping `yaml:"certificate_mappings"`
}

// CertMapping maps client certificates to a local account. A certificate
// matches when its chain verifies against Issuer (and only Issuer: the
// system's roots never count), it carries the clientAuth EKU, it is neither
// expired nor revoked by CRLFile, and one of its UPNs (subjectAltName
// otherName 1.3.6.1.4.1.311.20.2.3) matches Subject.
type CertMapping struct {
	// Issuer is a PEM file holding the CA certificate(s) that must have
	// issued the client certificate.
	Issuer string `yaml:"issuer"`
	// IssuerThumbprint optionally pins which CA of Issuer (SHA-1 hex, as
	// Windows shows it, or SHA-256 hex) must appear in the verified chain.
	IssuerThumbprint string `yaml:"issuer_thumbprint"`
	// Subject is the UPN to match, case-insensitively: "alice@example.test",
	// a pattern with "*" ("*@example.test"), or "*" for any UPN.
	Subject string `yaml:"subject"`
	// User is the local account the certificate logs on as; it is then
	// authorized like every other logon (allowed groups).
	User string `yaml:"user"`
	// CRLFile is an optional CRL (PEM or DER) signed by the issuing CA; a
	// certificate it lists is refused, and so is every certificate once the
	// CRL is past its nextUpdate (a stale CRL fails closed).
	CRLFile string `yaml:"crl_file"`
}

// Listener is one socket the daemon serves /wsman on.
type Listener struct {
	Transport string `yaml:"transport"` // http | https
	Address   string `yaml:"address"`   // IP literal, host name, or "*"
	Port      int    `yaml:"port"`
	CertFile  string `yaml:"cert_file"`
	KeyFile   string `yaml:"key_file"`
}

// Service mirrors winrm/config/service.
type Service struct {
	AllowUnencrypted  bool `yaml:"allow_unencrypted"`
	MaxEnvelopeSizeKB int  `yaml:"max_envelope_size_kb"`
	MaxTimeoutMS      int  `yaml:"max_timeout_ms"`
	MaxConnections    int  `yaml:"max_connections"`
	// MaxUnauthenticatedPerSource caps the connections one source address
	// may hold before they authenticate (handshakes in flight, 401s,
	// anonymous Identify), so one address cannot take every slot of
	// max_connections from the others. Authenticated connections are not
	// capped per source. Not a Windows knob.
	MaxUnauthenticatedPerSource    int    `yaml:"max_unauthenticated_connections_per_source"`
	MaxConcurrentOperationsPerUser int    `yaml:"max_concurrent_operations_per_user"`
	IPv4Filter                     string `yaml:"ipv4_filter"`
	IPv6Filter                     string `yaml:"ipv6_filter"`
	Auth                           Auth   `yaml:"auth"`
	// ReadHeaderTimeoutMS bounds how long a client may take to send headers
	// (slowloris). Not a Windows knob.
	ReadHeaderTimeoutMS int `yaml:"read_header_timeout_ms"`
	// IdleConnectionTimeoutMS closes keep-alive connections that stay idle.
	IdleConnectionTimeoutMS int `yaml:"idle_connection_timeout_ms"`
	// AdaptiveProcs runs the daemon's Go code on one CPU while its load
	// fits on one, and on all it may use while it does not (server/procs).
	// A GOMAXPROCS in the daemon's environment overrides it. Not a Windows
	// knob.
	AdaptiveProcs bool `yaml:"adaptive_procs"`
}

// Auth mirrors winrm/config/service/auth.
type Auth struct {
	Basic             bool   `yaml:"basic"`
	Negotiate         bool   `yaml:"negotiate"`
	Kerberos          bool   `yaml:"kerberos"`
	Certificate       bool   `yaml:"certificate"`
	CredSSP           bool   `yaml:"credssp"`
	CBTHardeningLevel string `yaml:"cbt_hardening_level"` // none | relaxed | strict
	// FailureDelayMS is how long after a credential check began every
	// refusal (wrong password, unknown account, or a right password for a
	// refused account) is answered, so timing does not tell them apart.
	// Not a Windows knob; 0 disables.
	FailureDelayMS int `yaml:"failure_delay_ms"`
}

// Winrs mirrors winrm/config/winrs.
type Winrs struct {
	AllowRemoteShellAccess bool  `yaml:"allow_remote_shell_access"`
	IdleTimeoutMS          int64 `yaml:"idle_timeout_ms"`
	MaxConcurrentUsers     int   `yaml:"max_concurrent_users"`
	MaxShellsPerUser       int   `yaml:"max_shells_per_user"`
	MaxProcessesPerShell   int   `yaml:"max_processes_per_shell"`
	MaxMemoryPerShellMB    int   `yaml:"max_memory_per_shell_mb"`
	MaxShellRunTimeMS      int64 `yaml:"max_shell_run_time_ms"`
	// AllowNewPrivileges: commands of a shell may gain privileges by
	// executing a setuid or file-capability program (sudo, su, ping on some
	// hosts), as in an SSH session. False sets no_new_privs on the worker
	// and empties its capability bounding set: the shell can never become
	// more than the account. Not a Windows knob (Windows has no setuid);
	// true by default because a remote administrator expects sudo to work.
	// PowerShell endpoints take it unless they set their own.
	AllowNewPrivileges bool `yaml:"allow_new_privileges"`
	// MaxOutputBufferMB bounds the command output the daemon holds that no
	// client has received yet, daemon-wide; MaxOutputBufferPerUserMB per
	// account. A command whose output finds the budget spent blocks (its
	// pipe fills) until clients receive, nothing is lost. Not Windows knobs:
	// Windows bounds a shell's memory (MaxMemoryPerShellMB) and blocks a
	// process whose output is not received the same way.
	MaxOutputBufferMB        int `yaml:"max_output_buffer_mb"`
	MaxOutputBufferPerUserMB int `yaml:"max_output_buffer_per_user_mb"`
	// PrestartedWorkers is how many shell workers the daemon keeps started
	// and waiting, as root with no account, so that a Create does not wait
	// for one to start (most of a cold command's time). Each serves one
	// shell and dies with it. 0 turns the pool off. Not a Windows knob.
	PrestartedWorkers int `yaml:"prestarted_workers"`
}

// Authorization decides which local accounts may connect.
type Authorization struct {
	// AllowedGroups: local group names. Empty means the defaults: the host's
	// administrator groups (sudo, wheel, admin — whichever exist) plus
	// winrm-remote-users.
	AllowedGroups []string `yaml:"allowed_groups"`
	// AllowedSIDs: Windows SIDs that allow a logon when a mechanism verified
	// them for the user (Kerberos: the group SIDs of the ticket's PAC, its
	// server signature checked). An entry is a full SID ("S-1-5-21-…-1106")
	// or "DOMAIN-<rid>", that RID in the user's own logon domain
	// ("DOMAIN-512" is the user's Domain Admins). Empty means
	// DefaultAllowedSIDs. Either rule allows: a PAC SID in this list, or an
	// NSS group in allowed_groups.
	AllowedSIDs []string `yaml:"allowed_sids"`
	AllowRoot   bool     `yaml:"allow_root"`
}

// Accounts says where credentials come from.
type Accounts struct {
	// PAMService is the PAM service used for Basic; empty disables PAM.
	PAMService string `yaml:"pam_service"`
	// StoreFile is the local account store (winrmd user ...); empty disables it.
	StoreFile string `yaml:"store_file"`
	// Winbind enables NTLM verification through Samba's ntlm_auth helper.
	Winbind Winbind `yaml:"winbind"`
	// LockoutExempt names accounts never locked out account-wide by failed
	// logons from many sources (like Windows' built-in Administrator);
	// guessing from one source is limited for them too.
	LockoutExempt []string `yaml:"lockout_exempt,omitempty"`
}

// Kerberos configures the Kerberos acceptor (Negotiate and the Kerberos
// scheme). Kerberos is served when service.auth.kerberos (the Kerberos
// scheme) or service.auth.negotiate (Kerberos inside Negotiate) is on and
// a keytab loads.
type Kerberos struct {
	// Keytab is the service keytab. Empty: /etc/krb5.keytab when it
	// exists, else Kerberos is off. A keytab named here must load.
	Keytab string `yaml:"keytab"`
	// ServicePrincipals narrows the accepted service principals
	// ("HTTP/host.example.com", optionally "@REALM"). Empty: every
	// principal in the keytab (HTTP/, WSMAN/, host/...).
	ServicePrincipals []string `yaml:"service_principals"`
	// Realm is the default realm, whose principals map to the bare local
	// user name ("alice@REALM" -> "alice"). Empty: the keytab's realm.
	Realm string `yaml:"realm"`
	// Realms lists further client realms accepted; their principals stay
	// qualified ("alice@OTHER.REALM") for NSS (winbind, sssd) to resolve.
	Realms []string `yaml:"realms"`
	// MaxClockSkewS is the tolerated clock difference in seconds
	// (Windows' and RFC 4120's 300).
	MaxClockSkewS int `yaml:"max_clock_skew"`
	// Krb5Conf names the KDCs for CredSSP's second hop (a TGT obtained
	// with the delegated password). Empty: $KRB5_CONFIG, else
	// /etc/krb5.conf.
	Krb5Conf string `yaml:"krb5_conf"`
	// ConstrainedDelegation gives shells of Kerberos logons that did not
	// forward a TGT the user's identity toward the services the service
	// account is trusted for in Active Directory (msDS-AllowedToDelegateTo),
	// through S4U2Proxy. See README "Constrained delegation".
	ConstrainedDelegation ConstrainedDelegation `yaml:"constrained_delegation"`
}

// ConstrainedDelegation configures S4U2Proxy for shells.
type ConstrainedDelegation struct {
	Enabled bool `yaml:"enabled"`
	// Account is the service account that holds winrmd's SPNs, as the
	// keytab names it ("wrmdsvc", "wrmdsvc@REALM", or "HOST$" for the
	// machine account); its key in the keytab gets its TGT.
	Account string `yaml:"account"`
}

// DefaultKeytab is used when kerberos.keytab is empty and it exists.
const DefaultKeytab = "/etc/krb5.keytab"

// Winbind configures the Samba winbind NTLM helper.
type Winbind struct {
	Enabled      bool   `yaml:"enabled"`
	NTLMAuthPath string `yaml:"ntlm_auth_path"`
}

// Logging configures zap and the audit stream.
type Logging struct {
	Level     string `yaml:"level"`      // debug | info | warn | error
	Format    string `yaml:"format"`     // json | console
	AuditFile string `yaml:"audit_file"` // empty: audit events go to the main log
	// TraceWire logs every request and response envelope (after
	// unsealing, before sealing) at debug level, secrets redacted; it
	// needs level debug as well. Off by default: a trace shows command
	// lines, and every body costs a copy.
	TraceWire bool `yaml:"trace_wire"`
	// TraceWireMaxBytes caps one traced message (1 KiB to 1 MiB).
	TraceWireMaxBytes int `yaml:"trace_wire_max_bytes"`
}

// Metrics configures the Prometheus listener.
type Metrics struct {
	Address string `yaml:"address"` // host:port; empty disables
}

// Host names the machine the way NTLM and Identify present it; Resolved
// fills in the defaults.
type Host struct {
	// NetBIOSName defaults to the upper-cased short host name.
	NetBIOSName string `yaml:"netbios_name"`
	// DNSName defaults to the host name.
	DNSName string `yaml:"dns_name"`
	// Domain is the NetBIOS domain (workgroup) shown in the NTLM challenge;
	// defaults to NetBIOSName (a standalone server).
	Domain string `yaml:"domain"`
	// Names are further names clients reach this host by (DNS aliases, a
	// load balancer's name). With the host name, NetBIOSName, DNSName and
	// localhost they are the names accepted as the target of a logon
	// without channel binding (service binding: HTTP/<name>) and as a
	// local qualifier (<name>\user, user@<name>).
	Names []string `yaml:"names,omitempty"`
}

// Windows' "unlimited".
const Unlimited = 2147483647

// Default returns the configuration a fresh install runs with.
func Default() *Config {
	return &Config{
		Listeners: []Listener{
			{Transport: "http", Address: "*", Port: 5985},
			{Transport: "https", Address: "*", Port: 5986, CertFile: "/etc/winrmd/cert.pem", KeyFile: "/etc/winrmd/key.pem"},
		},
		Service: Service{
			AllowUnencrypted:               false,
			MaxEnvelopeSizeKB:              500,
			MaxTimeoutMS:                   60000,
			MaxConnections:                 300,
			MaxUnauthenticatedPerSource:    200,
			MaxConcurrentOperationsPerUser: 1500,
			IPv4Filter:                     "*",
			IPv6Filter:                     "*",
			Auth: Auth{
				Basic:             false,
				Negotiate:         true,
				Kerberos:          true,
				Certificate:       false,
				CredSSP:           false,
				CBTHardeningLevel: "relaxed",
				FailureDelayMS:    3000,
			},
			ReadHeaderTimeoutMS:     10000,
			IdleConnectionTimeoutMS: 120000,
			AdaptiveProcs:           true,
		},
		Winrs: Winrs{
			AllowRemoteShellAccess: true,
			IdleTimeoutMS:          7200000,
			MaxConcurrentUsers:     Unlimited,
			MaxShellsPerUser:       Unlimited,
			MaxProcessesPerShell:   Unlimited,
			MaxMemoryPerShellMB:    Unlimited,
			MaxShellRunTimeMS:      Unlimited,
			AllowNewPrivileges:     true,
			// 256 commands at their full 1 MiB window at once (make load
			// holds 200 shells of 20 users, 10 each); one account a
			// quarter of it.
			MaxOutputBufferMB:        256,
			MaxOutputBufferPerUserMB: 64,
			// Sequential Creates (automation's one command per shell) never
			// wait; each idle worker is about 1.7 MB (BENCH.md's idle row).
			PrestartedWorkers: 4,
		},
		Accounts: Accounts{
			PAMService: "winrmd",
			StoreFile:  "/etc/winrmd/accounts",
			Winbind:    Winbind{NTLMAuthPath: "/usr/bin/ntlm_auth"},
		},
		Kerberos:   Kerberos{MaxClockSkewS: 300},
		Logging:    Logging{Level: "info", Format: "json", TraceWireMaxBytes: 16384},
		Metrics:    Metrics{Address: "127.0.0.1:9985"},
		PowerShell: defaultPowerShell(),
	}
}

//go:embed winrmd.yaml
var exampleYAML []byte

//go:embed lab.yaml
var labYAML []byte

// Example returns the annotated example configuration (the defaults).
func Example() []byte { return bytes.Clone(exampleYAML) }

// Lab returns the lab configuration template used by `make run`.
func Lab() []byte { return bytes.Clone(labYAML) }

// MaxPrestartedWorkers bounds winrs.prestarted_workers: 64 idle workers
// are about 110 MB of root processes, more than any burst of Creates needs
// (the pool refills as fast as workers start).
const MaxPrestartedWorkers = 64

// MaxConfigBytes bounds a configuration file.
const MaxConfigBytes = 1 << 20

// Load reads, parses and validates a configuration file.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, MaxConfigBytes+1)
	n, err := readFull(f, buf)
	if err != nil {
		return nil, err
	}
	if n > MaxConfigBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxConfigBytes)
	}
	c, err := Parse(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func readFull(f *os.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return n, err
			}
			return n, nil
		}
	}
	return n, nil
}

// Parse decodes YAML over the defaults; unknown keys are errors.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("configuration larger than %d bytes", MaxConfigBytes)
	}
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse: %s", cleanYAMLError(err))
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: ")
	return strings.ReplaceAll(s, "\n", "; ")
}

// FieldError names the offending key.
type FieldError struct {
	Key string
	Msg string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

func bad(key, format string, a ...any) error {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, a...)}
}

// Validate checks every value and names the first bad key.
func (c *Config) Validate() error {
	if len(c.Listeners) == 0 {
		return bad("listeners", "at least one listener is required")
	}
	seen := map[string]bool{}
	for i, l := range c.Listeners {
		k := fmt.Sprintf("listeners[%d]", i)
		switch l.Transport {
		case "http", "https":
		default:
			return bad(k+".transport", "must be http or https, not %q", l.Transport)
		}
		if l.Port < 0 || l.Port > 65535 {
			return bad(k+".port", "must be 0..65535, not %d", l.Port)
		}
		if l.Address == "" {
			return bad(k+".address", "required (use \"*\" for every address)")
		}
		if l.Address != "*" && net.ParseIP(l.Address) == nil && !validHostname(l.Address) {
			return bad(k+".address", "not an IP address or host name: %q", l.Address)
		}
		if l.Transport == "https" {
			if l.CertFile == "" {
				return bad(k+".cert_file", "required for https")
			}
			if l.KeyFile == "" {
				return bad(k+".key_file", "required for https")
			}
		}
		id := fmt.Sprintf("%s:%d", l.Address, l.Port)
		if l.Port != 0 && seen[id] {
			return bad(k, "duplicate listener %s", id)
		}
		seen[id] = true
	}
	s := c.Service
	if s.MaxEnvelopeSizeKB < 32 || s.MaxEnvelopeSizeKB > 64*1024 {
		return bad("service.max_envelope_size_kb", "must be 32..65536, not %d", s.MaxEnvelopeSizeKB)
	}
	if s.MaxTimeoutMS < 500 || s.MaxTimeoutMS > 24*3600*1000 {
		return bad("service.max_timeout_ms", "must be 500..86400000, not %d", s.MaxTimeoutMS)
	}
	if s.MaxConnections < 1 {
		return bad("service.max_connections", "must be at least 1, not %d", s.MaxConnections)
	}
	if s.MaxUnauthenticatedPerSource < 1 {
		return bad("service.max_unauthenticated_connections_per_source", "must be at least 1, not %d", s.MaxUnauthenticatedPerSource)
	}
	if s.MaxConcurrentOperationsPerUser < 1 {
		return bad("service.max_concurrent_operations_per_user", "must be at least 1, not %d", s.MaxConcurrentOperationsPerUser)
	}
	if _, err := ParseFilter(s.IPv4Filter, false); err != nil {
		return bad("service.ipv4_filter", "%v", err)
	}
	if _, err := ParseFilter(s.IPv6Filter, true); err != nil {
		return bad("service.ipv6_filter", "%v", err)
	}
	switch strings.ToLower(s.Auth.CBTHardeningLevel) {
	case "none", "relaxed", "strict":
	default:
		return bad("service.auth.cbt_hardening_level", "must be none, relaxed or strict, not %q", s.Auth.CBTHardeningLevel)
	}
	if s.Auth.CredSSP && !s.Auth.Negotiate && !s.Auth.Kerberos {
		return bad("service.auth.credssp", "needs negotiate or kerberos: CredSSP's inner logon is SPNEGO")
	}
	if s.Auth.CredSSP && c.Accounts.PAMService == "" && c.Accounts.StoreFile == "" {
		return bad("service.auth.credssp", "needs accounts.store_file or accounts.pam_service to verify delegated passwords")
	}
	if s.Auth.Certificate && len(c.CertificateMappings) == 0 {
		return bad("service.auth.certificate", "needs at least one entry in certificate_mappings")
	}
	for i, m := range c.CertificateMappings {
		k := fmt.Sprintf("certificate_mappings[%d]", i)
		if m.Issuer == "" {
			return bad(k+".issuer", "required: a PEM file of the issuing CA")
		}
		if t := m.IssuerThumbprint; t != "" && !isHex(t, 40) && !isHex(t, 64) {
			return bad(k+".issuer_thumbprint", "must be a SHA-1 (40) or SHA-256 (64) hex digest, not %q", t)
		}
		if m.Subject == "" || len(m.Subject) > 1024 {
			return bad(k+".subject", "required: a UPN, a pattern with \"*\", or \"*\"")
		}
		if m.User == "" || len(m.User) > 256 || strings.ContainsAny(m.User, ":/\x00\n") || m.User[0] == '-' {
			return bad(k+".user", "not a local account name: %q", m.User)
		}
	}
	if !s.Auth.Basic && !s.Auth.Negotiate && !s.Auth.Kerberos && !s.Auth.Certificate {
		return bad("service.auth", "no authentication scheme is enabled")
	}
	if s.Auth.FailureDelayMS < 0 || s.Auth.FailureDelayMS > 30000 {
		return bad("service.auth.failure_delay_ms", "must be 0..30000, not %d", s.Auth.FailureDelayMS)
	}
	if s.ReadHeaderTimeoutMS < 100 {
		return bad("service.read_header_timeout_ms", "must be at least 100, not %d", s.ReadHeaderTimeoutMS)
	}
	if s.IdleConnectionTimeoutMS < 1000 {
		return bad("service.idle_connection_timeout_ms", "must be at least 1000, not %d", s.IdleConnectionTimeoutMS)
	}
	w := c.Winrs
	if w.IdleTimeoutMS < 1000 {
		return bad("winrs.idle_timeout_ms", "must be at least 1000, not %d", w.IdleTimeoutMS)
	}
	if w.MaxShellRunTimeMS < 1000 {
		return bad("winrs.max_shell_run_time_ms", "must be at least 1000, not %d", w.MaxShellRunTimeMS)
	}
	for key, v := range map[string]int{
		"winrs.max_concurrent_users":          w.MaxConcurrentUsers,
		"winrs.max_shells_per_user":           w.MaxShellsPerUser,
		"winrs.max_processes_per_shell":       w.MaxProcessesPerShell,
		"winrs.max_memory_per_shell_mb":       w.MaxMemoryPerShellMB,
		"winrs.max_output_buffer_mb":          w.MaxOutputBufferMB,
		"winrs.max_output_buffer_per_user_mb": w.MaxOutputBufferPerUserMB,
	} {
		if v < 1 {
			return bad(key, "must be at least 1, not %d", v)
		}
	}
	if w.PrestartedWorkers < 0 || w.PrestartedWorkers > MaxPrestartedWorkers {
		return bad("winrs.prestarted_workers", "must be between 0 and %d, not %d", MaxPrestartedWorkers, w.PrestartedWorkers)
	}
	for i, g := range c.Authorization.AllowedGroups {
		if strings.TrimSpace(g) == "" {
			return bad(fmt.Sprintf("authorization.allowed_groups[%d]", i), "empty group name")
		}
	}
	if cd := c.Kerberos.ConstrainedDelegation; cd.Enabled && strings.TrimSpace(cd.Account) == "" {
		return bad("kerberos.constrained_delegation.account", "required when constrained delegation is enabled")
	}
	for i, s := range c.Authorization.AllowedSIDs {
		if err := CheckSIDRule(s); err != nil {
			return bad(fmt.Sprintf("authorization.allowed_sids[%d]", i), "%v", err)
		}
	}
	if c.Accounts.PAMService == "" && c.Accounts.StoreFile == "" && !c.Accounts.Winbind.Enabled {
		return bad("accounts", "no credential source: set pam_service, store_file or winbind.enabled")
	}
	if c.Accounts.PAMService != "" && strings.ContainsAny(c.Accounts.PAMService, "/\x00") {
		return bad("accounts.pam_service", "not a PAM service name: %q", c.Accounts.PAMService)
	}
	if k := c.Kerberos; k.MaxClockSkewS < 1 || k.MaxClockSkewS > 3600 {
		return bad("kerberos.max_clock_skew", "must be 1..3600 seconds, not %d", k.MaxClockSkewS)
	}
	for i, sp := range c.Kerberos.ServicePrincipals {
		if n, _, _ := strings.Cut(sp, "@"); !strings.Contains(n, "/") || strings.ContainsAny(sp, " \t\x00") {
			return bad(fmt.Sprintf("kerberos.service_principals[%d]", i), "not a service principal (service/host[@REALM]): %q", sp)
		}
	}
	for i, r := range append([]string{c.Kerberos.Realm}, c.Kerberos.Realms...) {
		if strings.ContainsAny(r, "@/\\ \t\x00") || (i > 0 && r == "") {
			key := "kerberos.realm"
			if i > 0 {
				key = fmt.Sprintf("kerberos.realms[%d]", i-1)
			}
			return bad(key, "not a realm name: %q", r)
		}
	}
	switch c.Logging.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("logging.level", "must be debug, info, warn or error, not %q", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "json", "console":
	default:
		return bad("logging.format", "must be json or console, not %q", c.Logging.Format)
	}
	for i, n := range c.Host.Names {
		if n == "" || !validHostname(n) {
			return bad(fmt.Sprintf("host.names[%d]", i), "not a host name: %q", n)
		}
	}
	if c.Logging.TraceWireMaxBytes < 1024 || c.Logging.TraceWireMaxBytes > 1<<20 {
		return bad("logging.trace_wire_max_bytes", "must be 1024 to 1048576, not %d", c.Logging.TraceWireMaxBytes)
	}
	if c.Metrics.Address != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Address); err != nil {
			return bad("metrics.address", "not host:port: %v", err)
		}
	}
	if err := c.PowerShell.validate(); err != nil {
		return err
	}
	if err := c.Sidecar.validate(); err != nil {
		return err
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return true
}

func validHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// MaxEnvelopeBytes is the largest request envelope accepted.
func (s Service) MaxEnvelopeBytes() int { return s.MaxEnvelopeSizeKB * 1024 }

// DefaultAdminGroups are the host administrator group names looked for when
// authorization.allowed_groups is empty.
var DefaultAdminGroups = []string{"sudo", "wheel", "admin", RemoteUsersGroup}

// RemoteUsersGroup is the twin of Windows' Remote Management Users: its
// members may connect and run shells, but are not administrators (they may
// not read the service configuration, as on Windows). Every other allowed
// group counts as an administrator group.
const RemoteUsersGroup = "winrm-remote-users"

// DefaultAllowedSIDs are the SIDs that allow a logon when
// authorization.allowed_sids is empty: BUILTIN\Administrators, BUILTIN\Remote
// Management Users, and the user's own domain's Domain Admins (RID 512), as
// a Windows member server's WinRM allows by default.
var DefaultAllowedSIDs = []string{"S-1-5-32-544", "S-1-5-32-580", "DOMAIN-512"}

// DomainRelativeSIDPrefix starts an allowed_sids entry that names a RID in
// the user's logon domain.
const DomainRelativeSIDPrefix = "DOMAIN-"

// CheckSIDRule checks one allowed_sids entry: "S-1-<authority>-<sub>…"
// (at most 15 sub-authorities, MS-DTYP 2.4.2) or "DOMAIN-<rid>".
func CheckSIDRule(s string) error {
	if rid, ok := strings.CutPrefix(s, DomainRelativeSIDPrefix); ok {
		if _, err := strconv.ParseUint(rid, 10, 32); err != nil {
			return fmt.Errorf("%q: the RID after %s must be a 32-bit number", s, DomainRelativeSIDPrefix)
		}
		return nil
	}
	parts := strings.Split(s, "-")
	if len(parts) < 3 || len(parts) > 18 || parts[0] != "S" || parts[1] != "1" {
		return fmt.Errorf("%q is not a SID (S-1-…) or %s<rid>", s, DomainRelativeSIDPrefix)
	}
	if _, err := strconv.ParseUint(parts[2], 10, 48); err != nil {
		return fmt.Errorf("%q: bad identifier authority", s)
	}
	for _, p := range parts[3:] {
		if _, err := strconv.ParseUint(p, 10, 32); err != nil {
			return fmt.Errorf("%q: sub-authority %q is not a 32-bit number", s, p)
		}
	}
	return nil
}

// Marshal renders a configuration as YAML.
func Marshal(c *Config) ([]byte, error) { return yaml.Marshal(c) }

// Resolved returns h with every empty name defaulted from the host name:
// DNSName the host name ("localhost" when there is none), NetBIOSName its
// first label upper-cased and cut to 15 characters (the NetBIOS limit),
// Domain the NetBIOS name (a standalone server).
func (h Host) Resolved() Host {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	if h.DNSName == "" {
		h.DNSName = host
	}
	if h.NetBIOSName == "" {
		short, _, _ := strings.Cut(host, ".")
		h.NetBIOSName = strings.ToUpper(short)
		if len(h.NetBIOSName) > 15 {
			h.NetBIOSName = h.NetBIOSName[:15]
		}
	}
	if h.Domain == "" {
		h.Domain = h.NetBIOSName
	}
	return h
}
