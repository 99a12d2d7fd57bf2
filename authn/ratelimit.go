package authn

import (
	"container/list"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// RateLimitConfig tunes a RateLimiter. Zero fields take the defaults shown.
type RateLimitConfig struct {
	// MaxFailures is how many failures a source or an account may have
	// within Window before it is locked out (default 5).
	MaxFailures int
	// Window is the span failures are counted over, and how long an entry
	// must stay quiet after its last failure or lockout before it is
	// forgotten (default 5 minutes).
	Window time.Duration
	// Lockout is the first lockout (default 30 seconds). Every further
	// failure of an entry that has been locked out locks it again for twice
	// as long, up to MaxLockout.
	Lockout time.Duration
	// MaxLockout bounds a lockout (default 15 minutes).
	MaxLockout time.Duration
	// AccountMaxFailures is how many failures one account may have from
	// all sources together within Window before it is locked for sources
	// that never logged on to it (default 4 × MaxFailures). The lockout is
	// Lockout, never escalated, and a source that has logged on to the
	// account before passes it: the owner keeps logging on from where they
	// usually do while strangers guess.
	AccountMaxFailures int
	// Exempt accounts are never locked account-wide (like Windows'
	// built-in Administrator); per-source limits still apply to them.
	Exempt []string
	// MaxEntries bounds each table (sources and accounts) (default 10000).
	// When a table is full the least recently failed entry is dropped.
	MaxEntries int
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
}

// Defaults of RateLimitConfig.
const (
	DefaultMaxFailures     = 5
	DefaultRateWindow      = 5 * time.Minute
	DefaultLockout         = 30 * time.Second
	DefaultMaxLockout      = 15 * time.Minute
	DefaultRateLimitTables = 10000
)

// RateLimiter throttles password guessing per source address, per (source,
// account) pair and per account. A mechanism calls Allow before verifying
// anything, then Fail or Success with the outcome. A source, or an account
// from one source, with MaxFailures failures inside Window is locked out
// for Lockout; once locked out, each further failure locks it again for
// twice as long, up to MaxLockout (exponential back-off). An account with
// AccountMaxFailures failures from all sources is locked for Lockout, only
// for sources that never logged on to it (see AccountMaxFailures): one
// foreign source can neither lock the owner out from another address nor,
// limited by its own lockouts, keep the account locked. Memory is bounded:
// each table holds at most MaxEntries entries and quiet entries expire.
//
// IPv6 sources are counted per /64, the smallest block one host usually
// controls; IPv4 sources (and IPv4-mapped IPv6) per address. Accounts are
// counted by the local name they map to (MapName, case-insensitive), so
// "CORP\alice", "alice@CORP" and "Alice" share one counter.
//
// Success clears the pair's and the account's entries but not the
// source's: otherwise an attacker holding one valid account could
// interleave good logons to keep spraying other accounts from the same
// address. It also remembers the pair as known-good.
//
// Requests that are in flight together are not counted until they fail, so
// a burst of concurrent guesses can exceed MaxFailures by the burst size;
// verifiers bound their own concurrency.
//
// It is safe for concurrent use.
type RateLimiter struct {
	cfg    RateLimitConfig
	exempt map[string]bool
	mu     sync.Mutex
	srcs   limitTable
	pairs  limitTable // source + account
	users  limitTable // account, all sources
	good   map[string]time.Time
}

// knownGoodFor is how long a successful logon vouches for its source.
const knownGoodFor = 30 * 24 * time.Hour

// NewRateLimiter returns a RateLimiter; zero fields of cfg take defaults.
func NewRateLimiter(cfg RateLimitConfig) *RateLimiter {
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = DefaultMaxFailures
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultRateWindow
	}
	if cfg.Lockout <= 0 {
		cfg.Lockout = DefaultLockout
	}
	if cfg.MaxLockout <= 0 {
		cfg.MaxLockout = DefaultMaxLockout
	}
	if cfg.MaxLockout < cfg.Lockout {
		cfg.MaxLockout = cfg.Lockout
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultRateLimitTables
	}
	if cfg.AccountMaxFailures <= 0 {
		cfg.AccountMaxFailures = 4 * cfg.MaxFailures
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	rl := &RateLimiter{cfg: cfg, exempt: map[string]bool{}, good: map[string]time.Time{}}
	for _, u := range cfg.Exempt {
		rl.exempt[accountKey(u)] = true
	}
	rl.srcs.init(cfg.MaxEntries)
	rl.pairs.init(cfg.MaxEntries)
	rl.users.init(cfg.MaxEntries)
	return rl
}

// Allow reports whether a logon attempt from ip for user may be verified. It
// returns an error wrapping ErrRateLimited while the source or the account is
// locked out. user may be "" when the mechanism has no name yet.
func (rl *RateLimiter) Allow(ip netip.Addr, user string) error {
	if rl == nil {
		return nil
	}
	now := rl.cfg.Now()
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if d := rl.srcs.lockedFor(sourceKey(ip), now, rl.cfg.Window); d > 0 {
		return fmt.Errorf("%w: source %s locked out for %s", ErrRateLimited, ip, d.Round(time.Second))
	}
	if user != "" {
		acct := accountKey(user)
		pair := sourceKey(ip) + "\x00" + acct
		if d := rl.pairs.lockedFor(pair, now, rl.cfg.Window); d > 0 {
			return fmt.Errorf("%w: account locked out for this source for %s", ErrRateLimited, d.Round(time.Second))
		}
		if d := rl.users.lockedFor(acct, now, rl.cfg.Window); d > 0 && !rl.knownGood(pair, now) {
			return fmt.Errorf("%w: account locked out for sources it never logged on from, for %s", ErrRateLimited, d.Round(time.Second))
		}
	}
	return nil
}

func (rl *RateLimiter) knownGood(pair string, now time.Time) bool {
	t, ok := rl.good[pair]
	if ok && now.Sub(t) > knownGoodFor {
		delete(rl.good, pair)
		return false
	}
	return ok
}

// Fail records a failed attempt (bad password, unknown account, malformed
// credentials) from ip for user ("" counts the source only).
func (rl *RateLimiter) Fail(ip netip.Addr, user string) {
	if rl == nil {
		return
	}
	now := rl.cfg.Now()
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.srcs.fail(sourceKey(ip), now, &rl.cfg)
	if user != "" {
		acct := accountKey(user)
		rl.pairs.fail(sourceKey(ip)+"\x00"+acct, now, &rl.cfg)
		if !rl.exempt[acct] {
			rl.users.failFlat(acct, now, &rl.cfg)
		}
	}
}

// Success records a successful logon: the account's failures are forgotten.
// The source's are kept (see RateLimiter).
func (rl *RateLimiter) Success(ip netip.Addr, user string) {
	if rl == nil || user == "" {
		return
	}
	now := rl.cfg.Now()
	rl.mu.Lock()
	defer rl.mu.Unlock()
	acct := accountKey(user)
	pair := sourceKey(ip) + "\x00" + acct
	rl.pairs.remove(pair)
	rl.users.remove(acct)
	if _, ok := rl.good[pair]; !ok && len(rl.good) >= rl.cfg.MaxEntries {
		for k, t := range rl.good {
			if now.Sub(t) > knownGoodFor || len(rl.good) >= rl.cfg.MaxEntries {
				delete(rl.good, k) // expired first; else an arbitrary one
			}
			if len(rl.good) < rl.cfg.MaxEntries {
				break
			}
		}
	}
	rl.good[pair] = now
}

// sourceKey is the table key for a source address.
func sourceKey(ip netip.Addr) string {
	if !ip.IsValid() {
		return "invalid"
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, err := ip.WithZone("").Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// accountKey is the table key for an account name.
func accountKey(user string) string {
	if n := MapName(user, ""); n != "" {
		return foldName(n)
	}
	// Not a local name: still count it, under a key no local name has.
	if len(user) > MaxNameBytes {
		user = user[:MaxNameBytes]
	}
	return "\x00" + foldName(user)
}

type limitEntry struct {
	key         string
	failures    int       // failures in the current window
	windowStart time.Time // start of the current window
	lockouts    int       // lockouts so far (drives the back-off)
	lockedUntil time.Time
	last        time.Time // last failure
	elem        *list.Element
}

// expired reports whether the entry has been quiet for a whole window after
// its last failure and after its lockout.
func (e *limitEntry) expired(now time.Time, window time.Duration) bool {
	end := e.last
	if e.lockedUntil.After(end) {
		end = e.lockedUntil
	}
	return !now.Before(end.Add(window))
}

// limitTable is a bounded map with least-recently-failed eviction.
type limitTable struct {
	max int
	m   map[string]*limitEntry
	lru list.List // front: most recently failed
}

func (t *limitTable) init(limit int) {
	t.max = limit
	t.m = make(map[string]*limitEntry)
	t.lru.Init()
}

func (t *limitTable) size() int { return len(t.m) }

func (t *limitTable) remove(key string) {
	if e, ok := t.m[key]; ok {
		t.lru.Remove(e.elem)
		delete(t.m, key)
	}
}

// lockedFor returns how long key stays locked out (0 when it is not).
func (t *limitTable) lockedFor(key string, now time.Time, window time.Duration) time.Duration {
	e, ok := t.m[key]
	if !ok {
		return 0
	}
	if e.expired(now, window) {
		t.remove(key)
		return 0
	}
	if now.Before(e.lockedUntil) {
		return e.lockedUntil.Sub(now)
	}
	return 0
}

// count records one failure for key within cfg.Window (a new or expired
// entry starts a fresh window) and returns the entry; fail and failFlat
// differ only in what a full count does.
func (t *limitTable) count(key string, now time.Time, cfg *RateLimitConfig) *limitEntry {
	e, ok := t.m[key]
	if ok && e.expired(now, cfg.Window) {
		t.remove(key)
		ok = false
	}
	if !ok {
		t.makeRoom(now, cfg.Window)
		e = &limitEntry{key: key, windowStart: now}
		e.elem = t.lru.PushFront(e)
		t.m[key] = e
	} else {
		t.lru.MoveToFront(e.elem)
	}
	e.last = now
	if now.Sub(e.windowStart) >= cfg.Window {
		e.failures = 0
		e.windowStart = now
	}
	e.failures++
	return e
}

func (t *limitTable) fail(key string, now time.Time, cfg *RateLimitConfig) {
	e := t.count(key, now, cfg)
	if e.lockouts > 0 || e.failures >= cfg.MaxFailures {
		e.lockouts++
		e.lockedUntil = now.Add(backoff(cfg.Lockout, cfg.MaxLockout, e.lockouts))
		e.failures = 0
		e.windowStart = now
	}
}

// failFlat counts a failure against the account-wide threshold: a lockout
// of cfg.Lockout each time AccountMaxFailures accumulate, never escalated.
func (t *limitTable) failFlat(key string, now time.Time, cfg *RateLimitConfig) {
	e := t.count(key, now, cfg)
	if e.failures >= cfg.AccountMaxFailures {
		e.lockedUntil = now.Add(cfg.Lockout)
		e.failures = 0
		e.windowStart = now
	}
}

// makeRoom drops expired entries from the cold end, then the coldest entry
// if the table is still full.
func (t *limitTable) makeRoom(now time.Time, window time.Duration) {
	for i := 0; i < 8; i++ {
		b := t.lru.Back()
		if b == nil {
			return
		}
		e := b.Value.(*limitEntry)
		if !e.expired(now, window) {
			break
		}
		t.remove(e.key)
	}
	for len(t.m) >= t.max {
		b := t.lru.Back()
		if b == nil {
			return
		}
		t.remove(b.Value.(*limitEntry).key)
	}
}

// backoff is base doubled n-1 times, capped at max.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n; i++ {
		if d >= limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}
