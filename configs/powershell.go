package configs

import (
	"fmt"
	"path/filepath"
	"strings"
)

// PowerShell configures the PowerShell remoting (PSRP) endpoints: the
// program each runspace pool runs (PowerShell's out-of-process server, as the
// authenticated user) and the named endpoints besides Microsoft.PowerShell.
type PowerShell struct {
	// Path of pwsh; a bare name is looked up in PATH as the user.
	Path string `yaml:"path"`
	// Args make pwsh serve the out-of-process transport on stdin/stdout.
	Args      []string   `yaml:"args"`
	Endpoints []Endpoint `yaml:"endpoints"`
	// WarmSpares: PowerShell starts slowly (0.5 s to several seconds), so
	// after a user's pool opens the daemon starts one idle pwsh for that
	// user and endpoint, and that user's next pool takes it instead of
	// waiting for a cold start. At most this many spares live at once (all
	// users); 0 turns them off. A spare is never handed to another user.
	WarmSpares int `yaml:"warm_spares"`
	// WarmSpareLifetimeS: a spare not taken within this many seconds ends.
	WarmSpareLifetimeS int `yaml:"warm_spare_lifetime_s"`
}

// Endpoint is a named session configuration
// (http://schemas.microsoft.com/powershell/<name>).
type Endpoint struct {
	Name string `yaml:"name"`
	// RunAsUser: run this endpoint's pwsh as this local account instead of
	// the caller (the JEA idea: a fixed service account). The caller is
	// still the one authorized (service policy, then AllowedGroups), before
	// anything starts; the pool stays the caller's (only they may use,
	// list or close it) and the audit names both. The caller's delegated
	// credentials never reach the service account's processes. root only
	// with authorization.allow_root.
	RunAsUser string `yaml:"run_as_user"`
	// AllowedGroups: only members may open a pool here (checked before any
	// process starts). Empty: the service's authorization.allowed_groups.
	AllowedGroups []string `yaml:"allowed_groups"`
	// ConfigurationFile is passed as `-ConfigurationFile` (a .pssc).
	ConfigurationFile string `yaml:"configuration_file"`
	// StartupScript: a script (absolute path, as Windows'
	// Register-PSSessionConfiguration -StartupScript takes) that runs in the
	// pool as it opens, before the first pipeline, dot-sourced into the
	// session so what it defines stays. pwsh gets it as its server mode's
	// initial command: `-Command ". '<path>'"` (pwsh runs that in each
	// runspace it creates for the pool).
	StartupScript string `yaml:"startup_script"`
	// AllowNewPrivileges overrides winrs.allow_new_privileges for this
	// endpoint's pools (false for an endpoint whose users must never run
	// sudo); omitted: the global setting.
	AllowNewPrivileges *bool `yaml:"allow_new_privileges,omitempty"`
}

// NewPrivileges says whether the pools of ep (nil: Microsoft.PowerShell) may
// gain privileges by exec; global is winrs.allow_new_privileges.
func (p PowerShell) NewPrivileges(ep *Endpoint, global bool) bool {
	if ep != nil && ep.AllowNewPrivileges != nil {
		return *ep.AllowNewPrivileges
	}
	return global
}

// DefaultEndpoint is the endpoint every Windows host has.
const DefaultEndpoint = "Microsoft.PowerShell"

// maxEndpoints bounds the endpoint list (it is searched per request).
const maxEndpoints = 256

func defaultPowerShell() PowerShell {
	// 4 spares of about 100 MB each (pwsh 7's resident size) at most,
	// each for 5 minutes: a user's burst of Invoke-Command calls is served
	// warm, an idle host holds no spare for long.
	return PowerShell{Path: "pwsh", Args: []string{"-NoLogo", "-NoProfile", "-s"}, WarmSpares: 4, WarmSpareLifetimeS: 300}
}

// Argv is the command line of ep's pwsh (ep nil: Microsoft.PowerShell).
func (p PowerShell) Argv(ep *Endpoint) []string {
	argv := append([]string{p.Path}, p.Args...)
	if ep != nil && ep.ConfigurationFile != "" {
		argv = append(argv, "-ConfigurationFile", ep.ConfigurationFile)
	}
	if ep != nil && ep.StartupScript != "" {
		// -Command takes the rest of the command line, so it comes last;
		// validate keeps quotes out of the path, so the text is exact.
		argv = append(argv, "-Command", ". '"+ep.StartupScript+"'")
	}
	return argv
}

// Endpoint finds a configured endpoint by name (case-insensitively, as
// Windows matches configuration names).
func (p PowerShell) Endpoint(name string) (*Endpoint, bool) {
	for i := range p.Endpoints {
		if strings.EqualFold(p.Endpoints[i].Name, name) {
			return &p.Endpoints[i], true
		}
	}
	return nil, false
}

func validEndpointName(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '.' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// validAccountName: what useradd and NSS accept as a user name (letters,
// digits, '.', '_', '-', a trailing '$'; not starting with '-').
func validAccountName(s string) bool {
	if s == "" || len(s) > 256 || s[0] == '-' {
		return false
	}
	for i, r := range s {
		if !(r == '-' || r == '.' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '$' && i == len(s)-1) {
			return false
		}
	}
	return true
}

func (p PowerShell) validate() error {
	if p.Path == "" || strings.ContainsRune(p.Path, 0) || (strings.ContainsRune(p.Path, '/') && !filepath.IsAbs(p.Path)) {
		return bad("powershell.path", "must be a program name or an absolute path, not %q", p.Path)
	}
	for i, a := range p.Args {
		if strings.ContainsRune(a, 0) {
			return bad(fmt.Sprintf("powershell.args[%d]", i), "contains a NUL byte")
		}
	}
	if p.WarmSpares < 0 || p.WarmSpares > 1024 {
		return bad("powershell.warm_spares", "0 (off) to 1024, not %d", p.WarmSpares)
	}
	if p.WarmSpares > 0 && (p.WarmSpareLifetimeS < 1 || p.WarmSpareLifetimeS > 86400) {
		return bad("powershell.warm_spare_lifetime_s", "1 to 86400 seconds, not %d", p.WarmSpareLifetimeS)
	}
	if len(p.Endpoints) > maxEndpoints {
		return bad("powershell.endpoints", "at most %d endpoints, not %d", maxEndpoints, len(p.Endpoints))
	}
	seen := map[string]bool{}
	for i, e := range p.Endpoints {
		k := fmt.Sprintf("powershell.endpoints[%d]", i)
		if !validEndpointName(e.Name) {
			return bad(k+".name", "letters, digits, '.', '-' and '_' only, not %q", e.Name)
		}
		if strings.EqualFold(e.Name, DefaultEndpoint) {
			return bad(k+".name", "%s is built in; restrict it with authorization.allowed_groups", DefaultEndpoint)
		}
		if seen[strings.ToLower(e.Name)] {
			return bad(k+".name", "duplicate endpoint %q", e.Name)
		}
		seen[strings.ToLower(e.Name)] = true
		if e.RunAsUser != "" && !validAccountName(e.RunAsUser) {
			return bad(k+".run_as_user", "not a local account name: %q", e.RunAsUser)
		}
		if s := e.StartupScript; s != "" {
			if !filepath.IsAbs(s) || len(s) > 4096 || strings.ContainsAny(s, "'\"`$\x00\n\r") {
				return bad(k+".startup_script", "must be an absolute path without quotes, '$', '`' or line breaks, not %q", s)
			}
		}
		for j, g := range e.AllowedGroups {
			if strings.TrimSpace(g) == "" {
				return bad(fmt.Sprintf("%s.allowed_groups[%d]", k, j), "empty group name")
			}
		}
		if e.ConfigurationFile != "" && !filepath.IsAbs(e.ConfigurationFile) {
			return bad(k+".configuration_file", "must be an absolute path, not %q", e.ConfigurationFile)
		}
	}
	return nil
}
