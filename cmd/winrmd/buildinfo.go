package main

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/pam"
	"github.com/winrmd/winrmd/configs"
)

// buildSummary names what this binary can do that depends on how it was
// built: a binary built without cgo (no C compiler at build time, or
// CGO_ENABLED=0 as for the container image) has no PAM and resolves
// accounts from /etc/passwd and /etc/group only. `winrmd version` prints it
// so that the loss is never silent.
func buildSummary() string {
	var parts []string
	if pam.Available {
		parts = append(parts, "PAM: yes")
	} else {
		parts = append(parts, "PAM: no (Basic checks the account store only)")
	}
	if authn.NSSFromLibc {
		parts = append(parts, "accounts: NSS through libc")
	} else {
		parts = append(parts, "accounts: /etc/passwd and /etc/group only (no sssd, winbind or LDAP accounts)")
	}
	return fmt.Sprintf("%s %s/%s, %s", runtime.Version(), runtime.GOOS, runtime.GOARCH, strings.Join(parts, ", "))
}

// buildWarnings lists, for cfg, what this binary will not do that the
// configuration asks for; serve logs each at warn level when it starts.
func buildWarnings(cfg *configs.Config) []string {
	var w []string
	if !pam.Available && cfg.Service.Auth.Basic && cfg.Accounts.PAMService != "" {
		w = append(w, fmt.Sprintf("accounts.pam_service is %q but this binary was built without PAM (no cgo): Basic logons of host accounts will fail; only the account store can answer them", cfg.Accounts.PAMService))
	}
	if !authn.NSSFromLibc {
		w = append(w, "this binary was built without cgo: accounts resolve from /etc/passwd and /etc/group only, so sssd, winbind or LDAP accounts cannot log on")
	}
	return w
}
