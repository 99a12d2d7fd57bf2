package ntlm_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
)

// The proof built from a password verifies against that account's NT hash
// and fails for any other password.
func TestPasswordRequest(t *testing.T) {
	v := ntlm.NewNTHashVerifier(users)
	for _, c := range []struct {
		user, pw string
		ok       bool
	}{{"alice", users["alice"], true}, {"jürgen", users["jürgen"], true}, {"alice", "not-it", false}, {"nobody", "x", false}} {
		r, err := ntlm.PasswordRequest(c.user, "WINRMD", c.pw, "WINRMD", "WINRMD", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(context.Background(), r)
		if (err == nil) != c.ok {
			t.Errorf("%s/%s: %v", c.user, c.pw, err)
		}
		if !c.ok && !errors.Is(err, authn.ErrBadCredentials) && !errors.Is(err, authn.ErrUnknownAccount) {
			t.Errorf("%s: %v", c.user, err)
		}
	}
}
