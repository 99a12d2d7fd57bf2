package authn

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/winrmd/winrmd/configs"
)

// AuthorizerConfig is the authorization policy (configs.Authorization plus
// the lab switch).
type AuthorizerConfig struct {
	// AllowedGroups are local group names (as NSS spells them, so
	// "CORP\\Domain Admins" works through winbind). A principal may log on
	// when its account's primary or supplementary groups include one of
	// them. Empty means configs.DefaultAdminGroups: sudo, wheel, admin
	// (whichever exist on the host) and winrm-remote-users. Groups are
	// resolved at decision time, so a group created after start counts.
	AllowedGroups []string
	// AllowedSIDs are SIDs (or "DOMAIN-<rid>" rules, see
	// configs.Authorization) that allow a principal whose mechanism
	// verified one of them (Principal.SIDs). Empty means
	// configs.DefaultAllowedSIDs.
	AllowedSIDs []string
	// AllowRoot lets uid 0 log on (it is then allowed without group
	// membership). The check is on the uid, never the name.
	AllowRoot bool
	// Lab maps every authenticated principal to the daemon's own account
	// (os.Getuid()) and authorizes anyone who authenticated: the
	// unprivileged lab mode, where the account store decides who may log
	// in. A lab daemon running as root is refused unless AllowRoot.
	Lab bool
	// HostNames are this host's names, for the local-qualifier rule
	// (MapPrincipal); nil means NewHostNames() (the host name, localhost).
	HostNames *HostNames
	// Accounts, when set, replaces NSS as the account database: sidecar
	// mode resolves accounts in the target container's files (FilesDB).
	Accounts AccountDB
}

// Authorization decisions are cached this long, at most this many.
const (
	AuthorizeCacheTTL     = 30 * time.Second
	AuthorizeCacheEntries = 4096
)

// Authorizer maps a Principal to a local account and decides whether it may
// log on. It is the only maker of valid Identities. It is safe for concurrent
// use.
type Authorizer struct {
	groups    []string
	sids      map[string]bool // full SIDs
	domainRID []string        // "-<rid>" suffixes for the logon domain
	allowRoot bool
	lab       *Account
	hosts     *HostNames

	// hooks (tests)
	now         func() time.Time
	lookupUser  func(name string) (Account, error)
	lookupGroup func(name string) (uint32, error)
	version     func() string // the account database's version ("" : unknown)
	ttl         time.Duration
	maxCache    int

	mu    sync.Mutex
	cache map[string]authzDecision
}

type authzDecision struct {
	account Account
	admin   bool
	err     error
	expires time.Time
	version string // the account database's version it was decided under
}

// NewAuthorizer checks cfg and returns an Authorizer.
func NewAuthorizer(cfg AuthorizerConfig) (*Authorizer, error) {
	a := &Authorizer{
		allowRoot:   cfg.AllowRoot,
		now:         time.Now,
		lookupUser:  lookupAccount,
		lookupGroup: lookupGroupID,
		version:     localAccountFilesVersion,
		ttl:         AuthorizeCacheTTL,
		maxCache:    AuthorizeCacheEntries,
		cache:       make(map[string]authzDecision),
		hosts:       cfg.HostNames,
	}
	if a.hosts == nil {
		a.hosts = NewHostNames()
	}
	if cfg.Accounts != nil {
		a.lookupUser, a.lookupGroup = cfg.Accounts.LookupUser, cfg.Accounts.LookupGroup
		a.version = func() string { return "" } // the TTL alone
	}
	groups := cfg.AllowedGroups
	if len(groups) == 0 {
		groups = configs.DefaultAdminGroups
	}
	for i, g := range groups {
		if err := checkGroupName(g); err != nil {
			return nil, fmt.Errorf("authorization.allowed_groups[%d]: %w", i, err)
		}
	}
	a.groups = slices.Clone(groups)
	sids := cfg.AllowedSIDs
	if len(sids) == 0 {
		sids = configs.DefaultAllowedSIDs
	}
	a.sids = make(map[string]bool)
	for i, s := range sids {
		if err := configs.CheckSIDRule(s); err != nil {
			return nil, fmt.Errorf("authorization.allowed_sids[%d]: %w", i, err)
		}
		if rid, ok := strings.CutPrefix(s, configs.DomainRelativeSIDPrefix); ok {
			a.domainRID = append(a.domainRID, "-"+rid)
		} else {
			a.sids[strings.ToUpper(s)] = true
		}
	}
	if cfg.Lab {
		acct, err := selfAccount()
		if err != nil {
			return nil, fmt.Errorf("lab mode: %w", err)
		}
		if acct.UID == 0 && !cfg.AllowRoot {
			return nil, fmt.Errorf("lab mode would run every session as root: %w", ErrRootRefused)
		}
		a.lab = &acct
	}
	return a, nil
}

// Groups returns the group names the policy allows (the defaults when the
// configuration named none), for start-up logs. Lab mode ignores them.
func (a *Authorizer) Groups() []string { return slices.Clone(a.groups) }

// Authorize maps p to a local account through NSS and applies the policy.
// Errors wrap ErrUnknownAccount (no such local account, or a name that
// cannot be one), ErrRootRefused, ErrNotAuthorized or ErrBackend (NSS
// failed; never cached).
//
// The names looked up are MapPrincipal's: a qualifier naming this host (or
// none) means the bare local account; any other qualifier only when the
// domain itself verified the name, and then only the domain-qualified name.
// The account's canonical name (NSS's pw_name) becomes the Identity's user,
// so every spelling owns the same shells.
func (a *Authorizer) Authorize(p Principal, scheme Scheme) (*Identity, error) {
	return a.authorize(p, scheme, false)
}

// AuthorizeUncached decides afresh from the account database, and
// refreshes the cache with the answer. A shell is created with it, so a
// worker never starts with the uid or groups of an account that was
// deleted or re-created within the cache's lifetime (issue 14.11).
func (a *Authorizer) AuthorizeUncached(p Principal, scheme Scheme) (*Identity, error) {
	return a.authorize(p, scheme, true)
}

func (a *Authorizer) authorize(p Principal, scheme Scheme, fresh bool) (*Identity, error) {
	if a == nil {
		return nil, fmt.Errorf("%w: no authorizer", ErrBackend)
	}
	key := string(scheme) + "\x00" + p.Mechanism + "\x00" + string(p.Verifier) + "\x00" + p.Domain + "\x00" + p.Name
	if p.SIDs != nil {
		// The decision depends on the SIDs: a digest keeps large PACs
		// (thousands of SIDs) from growing the cache's keys.
		h := sha256.New()
		h.Write([]byte(p.SIDs.Domain + "\x00" + p.SIDs.User))
		for _, s := range p.SIDs.Groups {
			h.Write([]byte{0})
			h.Write([]byte(s))
		}
		key += "\x00" + string(h.Sum(nil))
	}
	now := a.now()
	version := a.version()
	a.mu.Lock()
	d, ok := a.cache[key]
	if fresh {
		// Decided afresh; only a success replaces the cached decision, so
		// a lookup that fails for a passing reason (descriptors exhausted,
		// NSS briefly unreachable) is not remembered for the cache's life.
		a.mu.Unlock()
		var f authzDecision
		f.account, f.admin, f.err = a.decide(p)
		if f.err != nil {
			return nil, f.err
		}
		f.expires, f.version = now.Add(a.ttl), version
		a.remember(key, f, now)
		acct := f.account
		acct.Groups = slices.Clone(acct.Groups)
		return &Identity{principal: p, account: acct, scheme: scheme, admin: f.admin, valid: true, version: f.version}, nil
	}
	if ok && (now.After(d.expires) || d.version != version) {
		delete(a.cache, key)
		ok = false
	}
	a.mu.Unlock()
	if !ok {
		d.account, d.admin, d.err = a.decide(p)
		if d.err == nil || !errors.Is(d.err, ErrBackend) {
			d.expires, d.version = now.Add(a.ttl), version
			a.remember(key, d, now)
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	acct := d.account
	acct.Groups = slices.Clone(acct.Groups)
	return &Identity{principal: p, account: acct, scheme: scheme, admin: d.admin, valid: true, version: d.version}, nil
}

// AccountsVersion identifies the current version of the local account
// database (/etc/passwd and /etc/group: one stat each), "" where it cannot
// be known (a directory behind NSS, sidecar files). A cached decision
// made under another version is decided again, and the server
// re-authorizes an open connection whose identity predates a change: an
// account deleted and re-created (userdel, useradd), or moved out of an
// allowed group, is seen at the next request, not after the cache's 30 s
// (issue 14.11). Directory accounts (winbind, sssd) change without a local
// file changing; for them the cache's TTL remains the bound, shorter than
// winbind's and sssd's own caches anyway.
func (a *Authorizer) AccountsVersion() string { return a.version() }

// localAccountFilesVersion stamps /etc/passwd and /etc/group (inode,
// modification time, size: shadow-utils rewrite them by rename).
func localAccountFilesVersion() string {
	b := make([]byte, 0, 96)
	for _, f := range []string{"/etc/passwd", "/etc/group"} {
		var st syscall.Stat_t
		if err := syscall.Stat(f, &st); err != nil {
			b = append(b, "-|"...)
			continue
		}
		for _, n := range [...]int64{int64(st.Ino), int64(st.Mtim.Sec), int64(st.Mtim.Nsec), st.Size} {
			b = append(strconv.AppendInt(b, n, 10), '.')
		}
		b = append(b, '|')
	}
	return string(b)
}

func (a *Authorizer) remember(key string, d authzDecision, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= a.maxCache {
		for k, v := range a.cache {
			if now.After(v.expires) {
				delete(a.cache, k)
			}
		}
		for k := range a.cache {
			if len(a.cache) < a.maxCache {
				break
			}
			delete(a.cache, k) // arbitrary victim: map order is random
		}
	}
	a.cache[key] = d
}

func (a *Authorizer) decide(p Principal) (Account, bool, error) {
	names, err := MapPrincipal(p, a.hosts)
	if err != nil {
		return Account{}, false, err
	}
	if a.lab != nil {
		return *a.lab, true, nil
	}
	acct, err := a.resolve(p, names)
	if err != nil {
		return Account{}, false, err
	}
	if acct.UID == 0 {
		if !a.allowRoot {
			return Account{}, false, fmt.Errorf("%q maps to uid 0: %w", p.Name, ErrRootRefused)
		}
		return acct, true, nil
	}
	if a.allowedBySID(p) != "" {
		return acct, a.adminBySID(p), nil
	}
	// Every allowed group is looked at: membership of any lets the account
	// in, membership of one besides RemoteUsersGroup makes it an
	// administrator.
	var backendErr error
	allowed, admin := false, false
	for _, g := range a.groups {
		gid, err := a.lookupGroup(g)
		if err != nil {
			if !errors.Is(err, ErrUnknownAccount) {
				backendErr = err
			}
			continue
		}
		if acct.GID == gid || slices.Contains(acct.Groups, gid) {
			allowed = true
			admin = admin || g != configs.RemoteUsersGroup
		}
	}
	if allowed {
		return acct, admin, nil
	}
	if backendErr != nil {
		return Account{}, false, backendErr
	}
	return Account{}, false, fmt.Errorf("%q (local %q): %w", p.Name, acct.Username, ErrNotAuthorized)
}

// ServiceAccount resolves the fixed account a PowerShell endpoint runs as
// (powershell.endpoints[].run_as_user), from the same account database as
// Authorize, afresh each time (an account re-created with another uid is
// never used with the old one). It makes no Identity: the caller was
// authorized already, and the service account is only whose credentials the
// pool's processes take. uid 0 is refused unless allow_root; lab mode runs
// everything as the daemon's own user, this too.
func (a *Authorizer) ServiceAccount(name string) (Account, error) {
	if a == nil {
		return Account{}, fmt.Errorf("%w: no authorizer", ErrBackend)
	}
	if a.lab != nil {
		return *a.lab, nil
	}
	if !validQualifiedName(name) {
		return Account{}, fmt.Errorf("%w: %q cannot be an account name", ErrUnknownAccount, name)
	}
	acct, err := a.lookupUser(name)
	if err != nil {
		return Account{}, err
	}
	if acct.UID == 0 && !a.allowRoot {
		return Account{}, fmt.Errorf("run_as_user %q maps to uid 0: %w", name, ErrRootRefused)
	}
	return acct, nil
}

// allowedBySID returns the first of p's verified SIDs that the policy
// allows ("" when none does).
func (a *Authorizer) allowedBySID(p Principal) string {
	if p.SIDs == nil {
		return ""
	}
	dom := strings.ToUpper(p.SIDs.Domain)
	for _, s := range append([]string{p.SIDs.User}, p.SIDs.Groups...) {
		u := strings.ToUpper(s)
		if a.sids[u] {
			return s
		}
		if dom != "" {
			if rest, ok := strings.CutPrefix(u, dom); ok && slices.Contains(a.domainRID, rest) {
				return s
			}
		}
	}
	return ""
}

// adminBySID reports whether one of p's verified SIDs that the policy
// allows is other than Remote Management Users (S-1-5-32-580): BUILTIN
// Administrators, Domain Admins, or whatever else the operator listed.
func (a *Authorizer) adminBySID(p Principal) bool {
	if p.SIDs == nil {
		return false
	}
	for _, s := range append([]string{p.SIDs.User}, p.SIDs.Groups...) {
		if strings.EqualFold(s, remoteManagementUsersSID) {
			continue
		}
		if a.allowedBySID(Principal{SIDs: &SIDs{User: s, Domain: p.SIDs.Domain}}) != "" {
			return true
		}
	}
	return false
}

// remoteManagementUsersSID is BUILTIN\Remote Management Users.
const remoteManagementUsersSID = "S-1-5-32-580"

// SIDRules returns the SID rules in force (for start-up logs).
func (a *Authorizer) SIDRules() []string {
	var r []string
	for s := range a.sids {
		r = append(r, s)
	}
	slices.Sort(r)
	for _, d := range a.domainRID {
		r = append(r, configs.DomainRelativeSIDPrefix+strings.TrimPrefix(d, "-"))
	}
	return r
}

// resolve finds the local account for p: the first of names NSS knows.
func (a *Authorizer) resolve(p Principal, names []string) (Account, error) {
	for _, c := range names {
		if !validQualifiedName(c) {
			continue
		}
		acct, err := a.lookupUser(c)
		if err == nil {
			return acct, nil
		}
		if !errors.Is(err, ErrUnknownAccount) {
			return Account{}, err
		}
	}
	return Account{}, fmt.Errorf("%w: %q has no local account", ErrUnknownAccount, p.Name)
}

// validQualifiedName accepts what may be handed to NSS: a local name, or one
// with a single DOMAIN\ or @REALM qualifier.
func validQualifiedName(s string) bool {
	if s == "" || len(s) > MaxNameBytes || MapName(s, "") == "" {
		return false
	}
	for _, r := range s {
		if r == ':' || r == '/' || unicode.IsControl(r) {
			return false
		}
	}
	return s[0] != '-'
}

func checkGroupName(g string) error {
	if strings.TrimSpace(g) == "" {
		return errors.New("empty group name")
	}
	if len(g) > MaxNameBytes {
		return fmt.Errorf("group name longer than %d bytes", MaxNameBytes)
	}
	for _, r := range g {
		if r == ':' || unicode.IsControl(r) {
			return fmt.Errorf("group name %q contains ':' or a control character", g)
		}
	}
	return nil
}

// lookupAccount resolves a name through NSS (os/user; with cgo this is
// getpwnam_r and getgrouplist, so sssd and winbind users resolve).
func lookupAccount(name string) (Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			// glibc's files backend answers "no such user" when it cannot
			// open /etc/passwd (EMFILE/ENFILE at the descriptor limit): a
			// passing failure, not an answer, and never to be cached.
			if f, oerr := os.Open("/etc/passwd"); oerr != nil {
				if errors.Is(oerr, syscall.EMFILE) || errors.Is(oerr, syscall.ENFILE) {
					return Account{}, fmt.Errorf("%w: look up user %q: %v", ErrBackend, name, oerr)
				}
			} else {
				f.Close()
			}
			return Account{}, fmt.Errorf("%w: %q", ErrUnknownAccount, name)
		}
		return Account{}, fmt.Errorf("%w: look up user %q: %v", ErrBackend, name, err)
	}
	return accountFromUser(u)
}

func accountFromUser(u *user.User) (Account, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return Account{}, fmt.Errorf("%w: user %q has uid %q", ErrBackend, u.Username, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return Account{}, fmt.Errorf("%w: user %q has gid %q", ErrBackend, u.Username, u.Gid)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return Account{}, fmt.Errorf("%w: groups of %q: %v", ErrBackend, u.Username, err)
	}
	groups := make([]uint32, 0, len(ids))
	for _, s := range ids {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return Account{}, fmt.Errorf("%w: user %q has group id %q", ErrBackend, u.Username, s)
		}
		if !slices.Contains(groups, uint32(g)) {
			groups = append(groups, uint32(g))
		}
	}
	shell, err := loginShell(u.Username, uint32(uid))
	if err != nil {
		return Account{}, fmt.Errorf("%w: shell of %q: %v", ErrBackend, u.Username, err)
	}
	if shell == "" {
		shell = "/bin/sh" // passwd(5): an empty shell field means /bin/sh
	}
	return Account{
		Username: u.Username,
		UID:      uint32(uid),
		GID:      uint32(gid),
		Groups:   groups,
		Home:     u.HomeDir,
		Shell:    shell,
	}, nil
}

func lookupGroupID(name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			return 0, fmt.Errorf("%w: group %q", ErrUnknownAccount, name)
		}
		return 0, fmt.Errorf("%w: look up group %q: %v", ErrBackend, name, err)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: group %q has gid %q", ErrBackend, name, g.Gid)
	}
	return uint32(gid), nil
}

// selfAccount is the daemon's own account, for lab mode. A uid without a
// passwd entry (common in containers) still works, from the process's own
// credentials and environment.
func selfAccount() (Account, error) {
	uid := os.Getuid()
	u, err := user.LookupId(strconv.Itoa(uid))
	if err == nil {
		return accountFromUser(u)
	}
	var unknown user.UnknownUserIdError
	if !errors.As(err, &unknown) {
		return Account{}, fmt.Errorf("%w: look up uid %d: %v", ErrBackend, uid, err)
	}
	name := os.Getenv("USER")
	if name == "" || !validLocalName(name) {
		name = "uid" + strconv.Itoa(uid)
	}
	home := os.Getenv("HOME")
	if home == "" {
		home = "/"
	}
	gids, err := os.Getgroups()
	if err != nil {
		return Account{}, fmt.Errorf("%w: getgroups: %v", ErrBackend, err)
	}
	groups := []uint32{uint32(os.Getgid())}
	for _, g := range gids {
		if !slices.Contains(groups, uint32(g)) {
			groups = append(groups, uint32(g))
		}
	}
	return Account{
		Username: name,
		UID:      uint32(uid),
		GID:      uint32(os.Getgid()),
		Groups:   groups,
		Home:     home,
		Shell:    "/bin/sh",
	}, nil
}
