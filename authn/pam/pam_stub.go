//go:build !cgo || !(linux || freebsd) || nopam

package pam

import "net/netip"

// Available reports whether this binary has PAM support.
const Available = false

// Authenticate always fails: this binary has no PAM support.
func Authenticate(service, user, password string) error { return ErrUnavailable }

// AuthenticateFrom always fails: this binary has no PAM support.
func AuthenticateFrom(service, user, password string, remote netip.Addr) error {
	return ErrUnavailable
}
