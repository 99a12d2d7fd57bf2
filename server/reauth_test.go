package server

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/winrmd/winrmd/authn"
)

// flakyAccounts is the lab authorizer whose account database can be made
// to change (a new version) and then to fail the way an exhausted
// descriptor table makes it fail, or to refuse the account.
type flakyAccounts struct {
	*authn.Authorizer
	changed atomic.Bool
	fail    atomic.Pointer[error]
}

func (f *flakyAccounts) AccountsVersion() string {
	if f.changed.Load() {
		return "changed"
	}
	return f.Authorizer.AccountsVersion()
}

func (f *flakyAccounts) Authorize(p authn.Principal, sch authn.Scheme) (*authn.Identity, error) {
	if e := f.fail.Load(); e != nil {
		return nil, *e
	}
	return f.Authorizer.Authorize(p, sch)
}

// TestReauthorizationBackendUnavailable: when an open connection is
// re-authorized (the account database changed) and the database cannot
// answer (EMFILE at the descriptor limit), that is no verdict on the
// account: the request is served on the identity the connection has and
// the re-check is postponed, not answered 401 as if the account were
// refused (TestFaultFDExhaustion saw that as a Create refused with 401 at
// fd exhaustion). A real refusal still refuses.
func TestReauthorizationBackendUnavailable(t *testing.T) {
	var fa *flakyAccounts
	ts := startServerAuthz(t, nil, func(a *authn.Authorizer) Authorizer {
		fa = &flakyAccounts{Authorizer: a}
		return fa
	})
	c := tlsClient()
	hdr := map[string]string{"Authorization": basicHeader(testUser, testPass)}
	url := "https://" + ts.https + "/wsman"
	if resp, body := post(t, c, url, createBody, hdr); resp.StatusCode != http.StatusOK {
		t.Fatalf("first Create: %d %s", resp.StatusCode, body)
	}

	fa.changed.Store(true)
	backend := error(fmt.Errorf("%w: look up user %q: too many open files", authn.ErrBackend, testUser))
	fa.fail.Store(&backend)
	resp, body := post(t, c, url, createBody, hdr)
	if resp.StatusCode == http.StatusUnauthorized {
		t.Fatalf("Create while the account database is unavailable: 401, want the request served on the connection's identity")
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("Create while the account database is unavailable: %d %s", resp.StatusCode, body)
	}
	if a, err := os.ReadFile(ts.audit); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(a), "access_denied") {
		t.Errorf("an unavailable account database was audited as a refusal:\n%s", a)
	}

	refused := error(fmt.Errorf("%w: %q", authn.ErrNotAuthorized, testUser))
	fa.fail.Store(&refused)
	if resp, _ := post(t, c, url, createBody, hdr); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Create after the account was refused on re-authorization: %d, want 401", resp.StatusCode)
	}
}
