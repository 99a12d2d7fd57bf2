package kerberos

import (
	"testing"

	"github.com/winrmd/winrmd/authn"
)

func TestSecondHopPrincipal(t *testing.T) {
	for _, tt := range []struct {
		p           authn.Principal
		realm       string
		user, wantR string
	}{
		{authn.Principal{Name: "alice", Client: "alice@WRMDAD.TEST"}, "OTHER.TEST", "alice", "WRMDAD.TEST"},
		{authn.Principal{Name: "alice", Client: "svc/host@REALM"}, "", "svc/host", "REALM"},
		{authn.Principal{Name: `CORP\alice`}, "CORP.EXAMPLE", "alice", "CORP.EXAMPLE"},
		{authn.Principal{Name: "bob"}, "", "bob", ""},
	} {
		u, r := SecondHopPrincipal(tt.p, tt.realm)
		if u != tt.user || r != tt.wantR {
			t.Errorf("%+v in %q: %s@%s, want %s@%s", tt.p, tt.realm, u, r, tt.user, tt.wantR)
		}
	}
}
