package kerberos

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/winrmd/winrmd/authn"
)

// ReplayCache remembers every authenticator accepted within the clock skew
// window (RFC 4120 3.2.3): an AP-REQ captured on the wire and sent again
// is refused. Entries are the SHA-256 of the encrypted authenticator
// (unique per authenticator: fresh confounder) and expire when the
// authenticator's time leaves the window. It is safe for concurrent use.
type ReplayCache struct {
	mu      sync.Mutex
	seen    map[[32]byte]time.Time // hash -> expiry
	max     int
	lastGC  time.Time
	now     func() time.Time
	refused uint64
}

// DefaultReplayEntries bounds the cache: at 100 bytes an entry, 25 MiB.
const DefaultReplayEntries = 250000

// NewReplayCache returns an empty cache holding at most max entries
// (DefaultReplayEntries when max <= 0).
func NewReplayCache(max int) *ReplayCache {
	if max <= 0 {
		max = DefaultReplayEntries
	}
	return &ReplayCache{seen: make(map[[32]byte]time.Time), max: max, now: time.Now}
}

// check records the authenticator ciphertext with its expiry; it fails when
// it was seen before or when the cache is full of live entries (fail
// closed: a flood of fresh authenticators must not open a replay window).
func (c *ReplayCache) check(cipher []byte, expires time.Time) error {
	h := sha256.Sum256(cipher)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.seen[h]; ok && now.Before(exp) {
		c.refused++
		return fmt.Errorf("kerberos: replayed authenticator (the same AP-REQ was accepted before): %w", authn.ErrBadCredentials)
	}
	if len(c.seen) >= c.max || now.Sub(c.lastGC) > time.Minute {
		for k, exp := range c.seen {
			if !now.Before(exp) {
				delete(c.seen, k)
			}
		}
		c.lastGC = now
		if len(c.seen) >= c.max {
			return fmt.Errorf("kerberos: replay cache full (%d live authenticators): %w", c.max, authn.ErrBackend)
		}
	}
	c.seen[h] = expires
	return nil
}

// Len is the number of remembered authenticators.
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}
