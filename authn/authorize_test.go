package authn

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn/internal/hosttest"
)

// fakeNSS is an account database for table tests.
type fakeNSS struct {
	mu      sync.Mutex
	users   map[string]Account
	groups  map[string]uint32
	lookups int
	broken  bool
	ver     int // the database's version (AccountsVersion)
}

func (f *fakeNSS) version() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strconv.Itoa(f.ver)
}

func (f *fakeNSS) user(name string) (Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if f.broken {
		return Account{}, fmt.Errorf("%w: nss down", ErrBackend)
	}
	if a, ok := f.users[name]; ok {
		return a, nil
	}
	return Account{}, ErrUnknownAccount
}

func (f *fakeNSS) group(name string) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if g, ok := f.groups[name]; ok {
		return g, nil
	}
	return 0, ErrUnknownAccount
}

func newFakeNSS() *fakeNSS {
	return &fakeNSS{
		users: map[string]Account{
			"alice":      {Username: "alice", UID: 1001, GID: 1001, Groups: []uint32{1001, 27}},
			"bob":        {Username: "bob", UID: 1002, GID: 1002, Groups: []uint32{1002}},
			"carol":      {Username: "carol", UID: 1003, GID: 1003, Groups: []uint32{1003, 4000}},
			"dave":       {Username: "dave", UID: 1004, GID: 4000}, // primary group only
			"root":       {Username: "root", UID: 0, GID: 0, Groups: []uint32{0}},
			"toor":       {Username: "toor", UID: 0, GID: 0},
			`CORP\erin`:  {Username: `CORP\erin`, UID: 200001, GID: 200000, Groups: []uint32{200000, 27}},
			"erin":       {Username: "erin", UID: 1005, GID: 1005}, // a different, local erin
			"frank@corp": {Username: "frank@corp", UID: 200002, GID: 200000, Groups: []uint32{4000}},
		},
		groups: map[string]uint32{"sudo": 27, "winrm-remote-users": 4000, "staff": 50},
	}
}

func TestAuthorize(t *testing.T) {
	tests := []struct {
		name    string
		cfg     AuthorizerConfig
		p       Principal
		wantErr error
		want    string // local user
		wantUID uint32
	}{
		{"admin by supplementary group", AuthorizerConfig{}, Principal{Name: "alice"}, nil, "alice", 1001},
		{"remote users group", AuthorizerConfig{}, Principal{Name: "carol"}, nil, "carol", 1003},
		{"primary group counts", AuthorizerConfig{}, Principal{Name: "dave"}, nil, "dave", 1004},
		{"no allowed group", AuthorizerConfig{}, Principal{Name: "bob"}, ErrNotAuthorized, "", 0},
		{"unknown", AuthorizerConfig{}, Principal{Name: "mallory"}, ErrUnknownAccount, "", 0},
		{"unmappable", AuthorizerConfig{}, Principal{Name: "HTTP/host@R"}, ErrUnknownAccount, "", 0},
		{"empty", AuthorizerConfig{}, Principal{}, ErrUnknownAccount, "", 0},
		{"NetBIOS form maps to local", AuthorizerConfig{}, Principal{Name: `HOST\alice`}, nil, "alice", 1001},
		{"UPN form of this host maps to local", AuthorizerConfig{}, Principal{Name: "alice@host"}, nil, "alice", 1001},
		{"dot qualifier is local", AuthorizerConfig{}, Principal{Name: `.\alice`}, nil, "alice", 1001},
		{"locally verified UPN of another realm refused", AuthorizerConfig{}, Principal{Name: "alice@REALM"}, ErrUnknownAccount, "", 0},
		{"locally verified foreign domain refused", AuthorizerConfig{}, Principal{Name: `CORP\erin`}, ErrUnknownAccount, "", 0},
		{"locally verified NTLM domain refused", AuthorizerConfig{}, Principal{Name: "erin", Domain: "CORP", Mechanism: "ntlm"}, ErrUnknownAccount, "", 0},
		{"domain-verified never becomes the local one", AuthorizerConfig{}, Principal{Name: `CORP\alice`, Domain: "CORP", Verifier: VerifiedDomain}, ErrUnknownAccount, "", 0},
		{"domain-verified name of this host is local", AuthorizerConfig{}, Principal{Name: `HOST\alice`, Domain: "HOST", Verifier: VerifiedDomain}, nil, "alice", 1001},
		{"upper case falls back to lower", AuthorizerConfig{}, Principal{Name: "ALICE"}, nil, "alice", 1001},
		{"domain-verified qualified name", AuthorizerConfig{}, Principal{Name: `CORP\erin`, Domain: "CORP", Verifier: VerifiedDomain}, nil, `CORP\erin`, 200001},
		{"domain-verified NTLM domain qualifies", AuthorizerConfig{}, Principal{Name: "erin", Domain: "CORP", Mechanism: "ntlm", Verifier: VerifiedDomain}, nil, `CORP\erin`, 200001},
		{"bare erin is the local one", AuthorizerConfig{}, Principal{Name: "erin"}, ErrNotAuthorized, "", 0},
		{"dot domain is local", AuthorizerConfig{}, Principal{Name: "erin", Domain: "."}, ErrNotAuthorized, "", 0},
		{"fully qualified sssd name", AuthorizerConfig{}, Principal{Name: "frank@corp", Verifier: VerifiedDomain}, nil, "frank@corp", 200002},
		{"root refused", AuthorizerConfig{}, Principal{Name: "root"}, ErrRootRefused, "", 0},
		{"uid 0 by another name refused", AuthorizerConfig{}, Principal{Name: "toor"}, ErrRootRefused, "", 0},
		{"domain root refused", AuthorizerConfig{}, Principal{Name: `HOST\root`}, ErrRootRefused, "", 0},
		{"root allowed", AuthorizerConfig{AllowRoot: true}, Principal{Name: "root"}, nil, "root", 0},
		{"uid 0 allowed without groups", AuthorizerConfig{AllowRoot: true}, Principal{Name: "toor"}, nil, "toor", 0},
		{"configured groups replace defaults", AuthorizerConfig{AllowedGroups: []string{"staff"}}, Principal{Name: "alice"}, ErrNotAuthorized, "", 0},
		{"configured group by name", AuthorizerConfig{AllowedGroups: []string{"nosuch", "winrm-remote-users"}}, Principal{Name: "carol"}, nil, "carol", 1003},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.HostNames = NewHostNames("HOST")
			a, err := NewAuthorizer(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			nss := newFakeNSS()
			a.lookupUser, a.lookupGroup, a.version = nss.user, nss.group, nss.version
			id, err := a.Authorize(tt.p, SchemeNegotiate)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Authorize(%+v) error = %v, want %v", tt.p, err, tt.wantErr)
				}
				if id.Valid() {
					t.Fatal("invalid identity reports Valid")
				}
				return
			}
			if err != nil {
				t.Fatalf("Authorize(%+v): %v", tt.p, err)
			}
			if !id.Valid() || id.User() != tt.want || id.Account().UID != tt.wantUID {
				t.Fatalf("identity = %q uid %d, want %q uid %d", id.User(), id.Account().UID, tt.want, tt.wantUID)
			}
			if id.Principal() != tt.p || id.Scheme() != SchemeNegotiate || id.Key() != tt.want+"\x00"+strconv.FormatUint(uint64(tt.wantUID), 10) {
				t.Fatalf("identity carries principal %+v scheme %q key %q", id.Principal(), id.Scheme(), id.Key())
			}
		})
	}
}

// Administrators: root, the lab user, members of an allowed group other
// than winrm-remote-users (alice: sudo; a member of both stays one).
func TestAuthorizeAdministrator(t *testing.T) {
	nss := newFakeNSS()
	nss.users["gina"] = Account{Username: "gina", UID: 1006, GID: 1006, Groups: []uint32{4000, 27}}
	tests := []struct {
		cfg   AuthorizerConfig
		name  string
		admin bool
	}{
		{AuthorizerConfig{}, "alice", true},
		{AuthorizerConfig{}, "gina", true},
		{AuthorizerConfig{}, "carol", false},
		{AuthorizerConfig{}, "dave", false},
		{AuthorizerConfig{AllowRoot: true}, "root", true},
		{AuthorizerConfig{AllowedGroups: []string{"staff", "winrm-remote-users"}}, "carol", false},
		{AuthorizerConfig{AllowedGroups: []string{"sudo"}}, "alice", true},
	}
	for _, tt := range tests {
		a, err := NewAuthorizer(tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		a.lookupUser, a.lookupGroup, a.version = nss.user, nss.group, nss.version
		id, err := a.Authorize(Principal{Name: tt.name}, SchemeNegotiate)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if id.Administrator() != tt.admin {
			t.Errorf("%s with %+v: Administrator() = %v, want %v", tt.name, tt.cfg, id.Administrator(), tt.admin)
		}
	}
	var zero Identity
	if zero.Administrator() {
		t.Error("zero Identity is an administrator")
	}
}

func TestAuthorizerConfig(t *testing.T) {
	for _, groups := range [][]string{{""}, {"  "}, {"a:b"}, {"a\nb"}, {string(make([]byte, 300))}} {
		if _, err := NewAuthorizer(AuthorizerConfig{AllowedGroups: groups}); err == nil {
			t.Errorf("NewAuthorizer(groups %q) accepted", groups)
		}
	}
	a, err := NewAuthorizer(AuthorizerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if g := a.Groups(); len(g) != 4 || g[0] != "sudo" || g[3] != "winrm-remote-users" {
		t.Fatalf("default groups = %q", g)
	}
}

func TestAuthorizeCache(t *testing.T) {
	a, err := NewAuthorizer(AuthorizerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	nss := newFakeNSS()
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	a.lookupUser, a.lookupGroup, a.version, a.now = nss.user, nss.group, nss.version, clk.now

	p := Principal{Name: "alice", Mechanism: "basic"}
	for i := 0; i < 3; i++ {
		if _, err := a.Authorize(p, SchemeBasic); err != nil {
			t.Fatal(err)
		}
	}
	if nss.lookups != 1 {
		t.Fatalf("%d lookups for three decisions within the TTL", nss.lookups)
	}
	// A change of membership shows after the TTL.
	nss.mu.Lock()
	nss.users["alice"] = Account{Username: "alice", UID: 1001, GID: 1001}
	nss.mu.Unlock()
	clk.advance(AuthorizeCacheTTL - time.Second)
	if _, err := a.Authorize(p, SchemeBasic); err != nil {
		t.Fatalf("within TTL: %v", err)
	}
	clk.advance(2 * time.Second)
	if _, err := a.Authorize(p, SchemeBasic); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("after TTL: %v, want ErrNotAuthorized", err)
	}
	// Refusals are cached too, backend failures are not.
	n := nss.lookups
	a.Authorize(p, SchemeBasic)
	if nss.lookups != n {
		t.Fatal("refusal not cached")
	}
	nss.mu.Lock()
	nss.broken = true
	nss.mu.Unlock()
	q := Principal{Name: "bob"}
	for i := 0; i < 2; i++ {
		if _, err := a.Authorize(q, SchemeBasic); !errors.Is(err, ErrBackend) {
			t.Fatalf("broken NSS: %v", err)
		}
	}
	if nss.lookups != n+2 {
		t.Fatalf("backend failure cached (%d lookups)", nss.lookups-n)
	}
	// The cache returns copies: a caller cannot change another's groups.
	nss.broken = false
	c := Principal{Name: "carol"}
	id1, _ := a.Authorize(c, SchemeBasic)
	id1.account.Groups[0] = 0
	id2, _ := a.Authorize(c, SchemeBasic)
	if id2.Account().Groups[0] != 1003 {
		t.Fatal("cached account shared with a caller")
	}
}

func TestAuthorizeCacheBounded(t *testing.T) {
	a, err := NewAuthorizer(AuthorizerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	nss := newFakeNSS()
	a.lookupUser, a.lookupGroup, a.version = nss.user, nss.group, nss.version
	a.maxCache = 64
	for i := 0; i < 1000; i++ {
		a.Authorize(Principal{Name: fmt.Sprintf("nobody%d", i)}, SchemeBasic)
	}
	if len(a.cache) > 64 {
		t.Fatalf("cache holds %d, bound 64", len(a.cache))
	}
}

func TestAuthorizeLab(t *testing.T) {
	a, err := NewAuthorizer(AuthorizerConfig{Lab: true, AllowRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"anyone", `.\x`, "root", "y@localhost"} {
		id, err := a.Authorize(Principal{Name: name, Mechanism: "ntlm"}, SchemeNegotiate)
		if err != nil {
			t.Fatalf("lab %q: %v", name, err)
		}
		if id.Account().UID != uint32(os.Getuid()) || id.Account().GID != uint32(os.Getgid()) {
			t.Fatalf("lab %q mapped to uid %d", name, id.Account().UID)
		}
		if id.Principal().Name != name {
			t.Fatalf("lab principal %q", id.Principal().Name)
		}
	}
	if _, err := a.Authorize(Principal{Name: ""}, SchemeNegotiate); !errors.Is(err, ErrUnknownAccount) {
		t.Fatalf("lab, empty principal: %v", err)
	}
	// The qualifier rule holds in lab mode too.
	if _, err := a.Authorize(Principal{Name: `CORP\x`, Mechanism: "ntlm"}, SchemeNegotiate); !errors.Is(err, ErrUnknownAccount) {
		t.Fatalf(`lab, CORP\x verified locally: %v`, err)
	}
	if os.Getuid() == 0 {
		if _, err := NewAuthorizer(AuthorizerConfig{Lab: true}); !errors.Is(err, ErrRootRefused) {
			t.Fatalf("lab as root without allow_root: %v", err)
		}
	}
}

func TestZeroIdentityUnusable(t *testing.T) {
	var id Identity
	if id.Valid() || id.User() != "" || id.Key() != "" {
		t.Fatal("zero Identity looks valid")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Account on a zero Identity did not panic")
		}
	}()
	id.Account()
}

// The tests below use the host's real account database.

func TestAuthorizeRealNSS(t *testing.T) {
	hosttest.RequireRoot(t)
	g := hosttest.AddGroup(t)
	other := hosttest.AddGroup(t)
	member := hosttest.AddUser(t, "", g)
	outsider := hosttest.AddUser(t, "", other)

	a, err := NewAuthorizer(AuthorizerConfig{AllowedGroups: []string{g}, HostNames: NewHostNames("host", "realm.example")})
	if err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup(member)
	if err != nil {
		t.Fatal(err)
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.ParseUint(grp.Gid, 10, 32)
	for _, name := range []string{member, `HOST\` + member, member + "@REALM.EXAMPLE"} {
		id, err := a.Authorize(Principal{Name: name, Mechanism: "basic"}, SchemeBasic)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		acct := id.Account()
		if acct.Username != member || strconv.FormatUint(uint64(acct.UID), 10) != u.Uid ||
			strconv.FormatUint(uint64(acct.GID), 10) != u.Gid || acct.Home != u.HomeDir || acct.Shell != "/bin/sh" {
			t.Fatalf("%q: account %+v, want %+v shell /bin/sh", name, acct, u)
		}
		found := false
		for _, x := range acct.Groups {
			found = found || x == uint32(gid)
		}
		if !found {
			t.Fatalf("%q: groups %v lack %d", name, acct.Groups, gid)
		}
	}
	if _, err := a.Authorize(Principal{Name: outsider}, SchemeBasic); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("outsider: %v", err)
	}
	if _, err := a.Authorize(Principal{Name: hosttest.Name("none")}, SchemeBasic); !errors.Is(err, ErrUnknownAccount) {
		t.Fatalf("missing user: %v", err)
	}
	if _, err := a.Authorize(Principal{Name: "root"}, SchemeBasic); !errors.Is(err, ErrRootRefused) {
		t.Fatalf("root: %v", err)
	}
	// Membership of a group the policy does not name does not count.
	a2, _ := NewAuthorizer(AuthorizerConfig{AllowedGroups: []string{other, "no-such-group-" + g}})
	if _, err := a2.Authorize(Principal{Name: member}, SchemeBasic); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("member of g only, policy other: %v", err)
	}
}

func TestAuthorizeRealNSSDefaults(t *testing.T) {
	hosttest.RequireRoot(t)
	// The default policy includes winrm-remote-users; create it only if the
	// host has none, and remove only what we created.
	if _, err := user.LookupGroup("winrm-remote-users"); err == nil {
		t.Skip("host already has winrm-remote-users")
	}
	u := hosttest.AddUser(t, "")
	a, err := NewAuthorizer(AuthorizerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authorize(Principal{Name: u}, SchemeBasic); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("plain user under defaults: %v", err)
	}
	if _, err := lookupAccount(u); err != nil {
		t.Fatal(err)
	}
	if g, err := user.LookupGroup("sudo"); err == nil {
		admin := hosttest.AddUser(t, "", g.Name)
		if _, err := a.Authorize(Principal{Name: admin}, SchemeBasic); err != nil {
			t.Fatalf("sudo member under defaults: %v", err)
		}
	}
}

func TestSelfAccount(t *testing.T) {
	acct, err := selfAccount()
	if err != nil {
		t.Fatal(err)
	}
	if acct.UID != uint32(os.Getuid()) || acct.Username == "" || acct.Shell == "" {
		t.Fatalf("self account %+v", acct)
	}
}

// TestAuthorizeBySID: verified SIDs (a PAC's) allow a logon by the
// defaults (BUILTIN\Administrators, BUILTIN\Remote Management Users, the
// logon domain's Domain Admins) or by configured SIDs; they never admit
// root or an account without a local mapping, and the NSS-group rule still
// applies beside them.
func TestAuthorizeBySID(t *testing.T) {
	const dom = "S-1-5-21-1111-2222-3333"
	const other = "S-1-5-21-4444-5555-6666"
	bobSIDs := func(groups ...string) *SIDs {
		return &SIDs{User: dom + "-1104", Domain: dom, Groups: append([]string{dom + "-513"}, groups...)}
	}
	tests := []struct {
		name    string
		cfg     AuthorizerConfig
		p       Principal
		wantErr error
	}{
		{"no SIDs, no group", AuthorizerConfig{}, Principal{Name: "bob"}, ErrNotAuthorized},
		{"Domain Users only", AuthorizerConfig{}, Principal{Name: "bob", SIDs: bobSIDs()}, ErrNotAuthorized},
		{"Domain Admins of the logon domain", AuthorizerConfig{}, Principal{Name: "bob", SIDs: bobSIDs(dom + "-512")}, nil},
		{"Domain Admins of another domain", AuthorizerConfig{}, Principal{Name: "bob", SIDs: bobSIDs(other + "-512")}, ErrNotAuthorized},
		{"BUILTIN Administrators", AuthorizerConfig{}, Principal{Name: "bob", SIDs: bobSIDs("S-1-5-32-544")}, nil},
		{"Remote Management Users", AuthorizerConfig{}, Principal{Name: "bob", SIDs: bobSIDs("S-1-5-32-580")}, nil},
		{"lower-case spelling", AuthorizerConfig{}, Principal{Name: "bob", SIDs: bobSIDs("s-1-5-32-544")}, nil},
		{"configured SID", AuthorizerConfig{AllowedSIDs: []string{dom + "-1106"}}, Principal{Name: "bob", SIDs: bobSIDs(dom + "-1106")}, nil},
		{"configured SIDs replace the defaults", AuthorizerConfig{AllowedSIDs: []string{dom + "-1106"}}, Principal{Name: "bob", SIDs: bobSIDs(dom + "-512")}, ErrNotAuthorized},
		{"configured domain RID", AuthorizerConfig{AllowedSIDs: []string{"DOMAIN-1106"}}, Principal{Name: "bob", SIDs: bobSIDs(dom + "-1106")}, nil},
		{"domain RID is not a suffix match", AuthorizerConfig{AllowedSIDs: []string{"DOMAIN-106"}}, Principal{Name: "bob", SIDs: bobSIDs(dom + "-1106")}, ErrNotAuthorized},
		{"user SID itself", AuthorizerConfig{AllowedSIDs: []string{dom + "-1104"}}, Principal{Name: "bob", SIDs: bobSIDs()}, nil},
		{"NSS group still allows", AuthorizerConfig{}, Principal{Name: "alice", SIDs: bobSIDs()}, nil},
		{"no local account", AuthorizerConfig{}, Principal{Name: "mallory", SIDs: bobSIDs(dom + "-512")}, ErrUnknownAccount},
		{"root stays refused", AuthorizerConfig{}, Principal{Name: "root", SIDs: bobSIDs(dom + "-512")}, ErrRootRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAuthorizer(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			nss := newFakeNSS()
			a.lookupUser, a.lookupGroup, a.version = nss.user, nss.group, nss.version
			id, err := a.Authorize(tt.p, SchemeKerberos)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err == nil && (!id.Valid() || id.Principal().SIDs != tt.p.SIDs) {
				t.Fatal("identity does not carry the principal")
			}
		})
	}
	// The cache keys on the SIDs: the same name with other groups is
	// decided again.
	a, _ := NewAuthorizer(AuthorizerConfig{})
	nss := newFakeNSS()
	a.lookupUser, a.lookupGroup, a.version = nss.user, nss.group, nss.version
	if _, err := a.Authorize(Principal{Name: "bob", SIDs: bobSIDs(dom + "-512")}, SchemeKerberos); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authorize(Principal{Name: "bob", SIDs: bobSIDs()}, SchemeKerberos); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("cached admin decision reused for other SIDs: %v", err)
	}
	for _, bad := range []string{"", "S-1", "S-2-5-32", "S-1-5-x", "DOMAIN-", "DOMAIN-99999999999", "S-1-5-21-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16"} {
		if _, err := NewAuthorizer(AuthorizerConfig{AllowedSIDs: []string{bad}}); err == nil {
			t.Errorf("allowed_sids %q accepted", bad)
		}
	}
	if got := a.SIDRules(); len(got) != 3 || got[2] != "DOMAIN-512" {
		t.Errorf("default rules %v", got)
	}
}

// AuthorizeUncached sees a re-created account at once and refreshes the
// cache; a failed fresh lookup is not remembered (issue 14.11).
func TestAuthorizeUncached(t *testing.T) {
	a, err := NewAuthorizer(AuthorizerConfig{HostNames: NewHostNames("HOST")})
	if err != nil {
		t.Fatal(err)
	}
	nss := newFakeNSS()
	a.lookupUser, a.lookupGroup, a.version = nss.user, nss.group, nss.version
	p := Principal{Name: "alice"}
	old, err := a.Authorize(p, SchemeBasic)
	if err != nil {
		t.Fatal(err)
	}
	nss.mu.Lock()
	nss.users["alice"] = Account{Username: "alice", UID: 2001, GID: 2001, Groups: []uint32{2001, 27}}
	nss.mu.Unlock()
	if id, _ := a.Authorize(p, SchemeBasic); id.Account().UID != 1001 {
		t.Fatalf("cached decision expected before the fresh one, got uid %d", id.Account().UID)
	}
	fresh, err := a.AuthorizeUncached(p, SchemeBasic)
	if err != nil || fresh.Account().UID != 2001 {
		t.Fatalf("fresh: %v %v", fresh, err)
	}
	if fresh.Key() == old.Key() {
		t.Fatalf("the re-created account has the old owner key %q", old.Key())
	}
	if id, _ := a.Authorize(p, SchemeBasic); id.Account().UID != 2001 {
		t.Fatalf("the fresh decision did not refresh the cache: uid %d", id.Account().UID)
	}
	nss.mu.Lock()
	nss.broken = true
	nss.mu.Unlock()
	if _, err := a.AuthorizeUncached(p, SchemeBasic); !errors.Is(err, ErrBackend) {
		t.Fatalf("fresh with NSS down: %v", err)
	}
	if id, err := a.Authorize(p, SchemeBasic); err != nil || id.Account().UID != 2001 {
		t.Fatalf("a failed fresh lookup poisoned the cache: %v %v", id, err)
	}
	// A change of the account database's version is seen at once by the
	// cached path too, not after the TTL, and an identity says which
	// version it was decided under (what the server re-checks).
	nss.mu.Lock()
	nss.broken = false
	nss.users["alice"] = Account{Username: "alice", UID: 3001, GID: 3001, Groups: []uint32{3001, 27}}
	nss.ver++
	nss.mu.Unlock()
	if id, err := a.Authorize(p, SchemeBasic); err != nil || id.Account().UID != 3001 || id.AccountsVersion() != "1" || a.AccountsVersion() != "1" {
		t.Fatalf("after the database's version changed: %v %v, want uid 3001 decided under version 1", id, err)
	}
}

// TestServiceAccount: run_as_user is looked up in the authorizer's account
// database each time, needs no group membership (the caller was authorized),
// and is refused for uid 0 unless allow_root.
func TestServiceAccount(t *testing.T) {
	for _, allowRoot := range []bool{false, true} {
		a, err := NewAuthorizer(AuthorizerConfig{AllowRoot: allowRoot, HostNames: NewHostNames("HOST")})
		if err != nil {
			t.Fatal(err)
		}
		nss := newFakeNSS()
		a.lookupUser, a.lookupGroup = nss.user, nss.group
		acct, err := a.ServiceAccount("bob") // in no allowed group
		if err != nil || acct.UID != 1002 || acct.Username != "bob" {
			t.Fatalf("bob: %+v, %v", acct, err)
		}
		before := nss.lookups
		if _, err := a.ServiceAccount("bob"); err != nil || nss.lookups != before+1 {
			t.Errorf("second lookup: %v, lookups %d -> %d (want afresh)", err, before, nss.lookups)
		}
		if _, err := a.ServiceAccount("nosuch"); !errors.Is(err, ErrUnknownAccount) {
			t.Errorf("unknown account: %v", err)
		}
		if _, err := a.ServiceAccount("a:b"); !errors.Is(err, ErrUnknownAccount) {
			t.Errorf("invalid name: %v", err)
		}
		_, err = a.ServiceAccount("toor")
		if allowRoot != (err == nil) || !allowRoot && !errors.Is(err, ErrRootRefused) {
			t.Errorf("uid 0 with allow_root=%v: %v", allowRoot, err)
		}
	}
}
