//go:build cgo && (linux || freebsd) && !nopam

package pam

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"

	gopam "github.com/msteinert/pam/v2"

	"github.com/winrmd/winrmd/authn"
)

// Available reports whether this binary has PAM support.
const Available = true

var sem = make(chan struct{}, MaxConcurrent)

// Authenticate verifies user's password with PAM service service:
// pam_authenticate, then pam_acct_mgmt. It returns nil or an error wrapping
// an authn error (see the package documentation).
func Authenticate(service, user, password string) error {
	return AuthenticateFrom(service, user, password, netip.Addr{})
}

// AuthenticateFrom is Authenticate with the client's address set as
// PAM_RHOST (for pam_access, pam_faillock and the host's logs).
func AuthenticateFrom(service, user, password string, remote netip.Addr) error {
	if err := checkArgs(service, user, password); err != nil {
		return err
	}
	sem <- struct{}{}
	defer func() { <-sem }()
	// A transaction stays on one OS thread: modules may keep thread state.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	asked := 0
	conv := func(style gopam.Style, _ string) (string, error) {
		switch style {
		case gopam.PromptEchoOff:
			// The password, for each module that asks (try_first_pass
			// stacks ask once; a module may ask again).
			asked++
			if asked > 4 {
				return "", errNoPassword
			}
			return password, nil
		case gopam.PromptEchoOn:
			// A module asking a visible question (a user name, an OTP
			// code) cannot be answered over Basic.
			return "", errNoPassword
		case gopam.ErrorMsg, gopam.TextInfo:
			return "", nil
		default:
			return "", errNoPassword
		}
	}
	tx, err := gopam.StartFunc(service, user, conv)
	if err != nil {
		return mapErr("start", err)
	}
	defer tx.End()
	if remote.IsValid() {
		if err := tx.SetItem(gopam.Rhost, remote.Unmap().String()); err != nil {
			return mapErr("set rhost", err)
		}
	}
	if err := tx.SetItem(gopam.Ruser, user); err != nil {
		return mapErr("set ruser", err)
	}
	if err := tx.SetItem(gopam.Tty, "winrmd"); err != nil {
		return mapErr("set tty", err)
	}
	if err := tx.Authenticate(gopam.Silent | gopam.DisallowNullAuthtok); err != nil {
		return mapErr("authenticate", err)
	}
	if err := tx.AcctMgmt(gopam.Silent | gopam.DisallowNullAuthtok); err != nil {
		return mapErr("account", err)
	}
	// A module may have replaced the user name; the principal must still be
	// the account that authenticated (a change of case only is tolerated:
	// names are case-insensitive from the client's side).
	if got, err := tx.GetItem(gopam.User); err != nil || !strings.EqualFold(got, user) {
		return fmt.Errorf("%w: pam changed the user name", authn.ErrNotAuthorized)
	}
	return nil
}

// mapErr turns a PAM status into an authn error; the PAM text stays for
// logs. It never includes the password.
func mapErr(stage string, err error) error {
	var pe gopam.Error
	if !errors.As(err, &pe) {
		return fmt.Errorf("%w: pam %s: %v", authn.ErrBackend, stage, err)
	}
	var kind error
	switch pe {
	case gopam.ErrAuth, gopam.ErrCredInsufficient:
		kind = authn.ErrBadCredentials
		if stage == "account" {
			// The password was right; the account stack refused.
			kind = authn.ErrNotAuthorized
		}
	case gopam.ErrUserUnknown:
		kind = authn.ErrUnknownAccount
	case gopam.ErrMaxtries:
		kind = authn.ErrRateLimited
	case gopam.ErrAcctExpired, gopam.ErrNewAuthtokReqd, gopam.ErrAuthtokExpired:
		kind = authn.ErrBadCredentials
	case gopam.ErrPermDenied:
		kind = authn.ErrNotAuthorized
	default:
		kind = authn.ErrBackend
	}
	return fmt.Errorf("%w: pam %s: %s", kind, stage, pe.Error())
}
