//go:build !cgo || !(linux || freebsd) || nopam

package pam

import (
	"errors"
	"testing"

	"github.com/winrmd/winrmd/authn"
)

func TestUnavailable(t *testing.T) {
	if Available {
		t.Fatal("stub reports PAM available")
	}
	err := Authenticate("login", "root", "x")
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, authn.ErrBackend) {
		t.Fatalf("stub Authenticate = %v", err)
	}
}
