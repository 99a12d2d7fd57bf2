// Package pam verifies Basic credentials against the host's accounts through
// PAM (pam_authenticate, then pam_acct_mgmt), so the host's password
// policies, lockout (pam_faillock) and account expiry apply.
//
// The password reaches PAM only through the conversation function, which
// answers echo-off prompts with it; it is never logged, and PAM's messages are
// not relayed to the client. PAM errors map to authn errors:
//
//	PAM_AUTH_ERR, PAM_CRED_INSUFFICIENT          -> authn.ErrBadCredentials
//	PAM_USER_UNKNOWN                             -> authn.ErrUnknownAccount
//	PAM_MAXTRIES                                 -> authn.ErrRateLimited
//	PAM_ACCT_EXPIRED, PAM_NEW_AUTHTOK_REQD,
//	PAM_AUTHTOK_EXPIRED                          -> authn.ErrBadCredentials
//	PAM_PERM_DENIED (pam_access, pam_nologin...),
//	PAM_AUTH_ERR from pam_acct_mgmt              -> authn.ErrNotAuthorized
//	anything else                                -> authn.ErrBackend
//
// The package needs cgo and libpam (Debian: libpam0g-dev to build). Built
// without cgo, or with the nopam build tag, every call fails with an error
// wrapping ErrUnavailable (and authn.ErrBackend), so the daemon says clearly
// that PAM is missing rather than refusing passwords as wrong.
package pam

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/winrmd/winrmd/authn"
)

// ErrUnavailable means this binary has no PAM support.
var ErrUnavailable = fmt.Errorf("%w: built without PAM support (needs cgo and libpam; not the nopam tag)", authn.ErrBackend)

// MaxConcurrent bounds the PAM transactions in flight: each holds an OS
// thread and modules may be slow (network directories).
const MaxConcurrent = 8

// configDirs are where Linux-PAM looks for service files.
var configDirs = []string{"/etc/pam.d", "/usr/lib/pam.d", "/usr/share/pam.d", "/lib/pam.d"}

// CheckService reports whether service names a configured PAM service. PAM
// silently falls back to the "other" service (usually pam_deny) for an
// unknown one, which would make every password look wrong.
func CheckService(service string) error {
	if service == "" || strings.ContainsAny(service, "/\x00") || service == "." || service == ".." {
		return fmt.Errorf("%w: %q is not a PAM service name", authn.ErrBackend, service)
	}
	for _, d := range configDirs {
		if st, err := os.Stat(d + "/" + service); err == nil && st.Mode().IsRegular() {
			return nil
		}
	}
	// Linux-PAM reads /etc/pam.conf only when /etc/pam.d does not exist.
	if _, err := os.Stat("/etc/pam.d"); os.IsNotExist(err) {
		if _, err := os.Stat("/etc/pam.conf"); err == nil {
			return nil // single-file configuration: cannot tell cheaply; trust it
		}
	}
	return fmt.Errorf("%w: PAM service %q is not configured (no file in %s)", authn.ErrBackend, service, strings.Join(configDirs, ", "))
}

// checkArgs refuses what must never reach PAM.
func checkArgs(service, user, password string) error {
	if err := CheckService(service); err != nil {
		return err
	}
	if user == "" || strings.IndexByte(user, 0) >= 0 {
		return fmt.Errorf("%w: empty user or NUL in user", authn.ErrMalformed)
	}
	// PAM takes C strings: a NUL would cut the password short.
	if password == "" || strings.IndexByte(password, 0) >= 0 {
		return authn.ErrBadCredentials
	}
	return nil
}

var errNoPassword = errors.New("no password for this prompt")
