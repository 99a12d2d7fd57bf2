package authn

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRateLimiter(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	v6a := netip.MustParseAddr("2001:db8::1")
	v6b := netip.MustParseAddr("2001:db8::ffff:1")    // same /64
	v6c := netip.MustParseAddr("2001:db8:0:1::1")     // other /64
	mapped := netip.MustParseAddr("::ffff:192.0.2.1") // same as a

	type step struct {
		op      string // allow | fail | success | wait
		ip      netip.Addr
		user    string
		wait    time.Duration
		limited bool // for allow
	}
	fail := func(ip netip.Addr, u string) step { return step{op: "fail", ip: ip, user: u} }
	ok := func(ip netip.Addr, u string) step { return step{op: "allow", ip: ip, user: u} }
	no := func(ip netip.Addr, u string) step { return step{op: "allow", ip: ip, user: u, limited: true} }
	wait := func(d time.Duration) step { return step{op: "wait", wait: d} }
	succ := func(ip netip.Addr, u string) step { return step{op: "success", ip: ip, user: u} }
	fails := func(n int, ip netip.Addr, u string) []step {
		s := make([]step, n)
		for i := range s {
			s[i] = fail(ip, u)
		}
		return s
	}
	manySources := func(n int, u string) []step {
		s := make([]step, n)
		for i := range s {
			s[i] = fail(netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), u)
		}
		return s
	}
	seq := func(parts ...any) []step {
		var out []step
		for _, p := range parts {
			switch v := p.(type) {
			case step:
				out = append(out, v)
			case []step:
				out = append(out, v...)
			}
		}
		return out
	}

	tests := []struct {
		name  string
		steps []step
	}{
		{"fresh source and account pass", seq(ok(a, "alice"))},
		{"four failures pass", seq(fails(4, a, "alice"), ok(a, "alice"))},
		{"fifth failure locks the source, not the account elsewhere", seq(fails(5, a, "alice"), no(a, "alice"), no(a, "bob"), ok(b, "alice"), ok(b, "bob"))},
		{"the right password from another source during a lockout (issue 14.7)",
			seq(fails(5, a, "alice"), wait(50*time.Second), fail(a, "alice"), no(a, "alice"), ok(b, "alice"), succ(b, "alice"), no(a, "alice"))},
		{"one source keeps nobody else out", seq(fails(5, a, "alice"), wait(31*time.Second), fail(a, "alice"), wait(61*time.Second),
			fail(a, "alice"), wait(121*time.Second), fail(a, "alice"), no(a, "alice"), ok(b, "alice"), ok(v6a, "alice"))},
		{"lockout ends after 30s", seq(fails(5, a, "alice"), wait(29*time.Second), no(a, "alice"), wait(time.Second), ok(a, "alice"))},
		{"failures outside the window do not add up",
			seq(fails(4, a, "alice"), wait(5*time.Minute), fails(4, a, "alice"), ok(a, "alice"))},
		{"back-off doubles after a lockout",
			seq(fails(5, a, "alice"), wait(30*time.Second), ok(a, "alice"), fail(a, "alice"),
				wait(59*time.Second), no(a, "alice"), wait(time.Second), ok(a, "alice"),
				fail(a, "alice"), wait(119*time.Second), no(a, "alice"), wait(time.Second), ok(a, "alice"))},
		{"back-off is bounded",
			seq(fails(5, a, "alice"), fails(20, a, "alice"), wait(15*time.Minute-time.Second), no(a, "alice"),
				wait(time.Second), ok(a, "alice"))},
		{"entry is forgotten after a quiet window",
			seq(fails(5, a, "alice"), wait(30*time.Second+5*time.Minute), fails(4, a, "alice"), ok(a, "alice"))},
		{"success clears the account, not the source",
			seq(fails(4, a, "alice"), succ(a, "alice"), fail(b, "alice"), ok(b, "alice"),
				fail(a, "bob"), no(a, "carol"))},
		{"success during lockout does not unlock source",
			seq(fails(5, a, "alice"), succ(a, "alice"), no(a, "bob"), ok(b, "alice"))},
		{"spraying many accounts from one source",
			seq(fail(a, "u1"), fail(a, "u2"), fail(a, "u3"), fail(a, "u4"), fail(a, "u5"), no(a, "u6"), ok(b, "u1"))},
		{"one account from many sources locks it for strangers",
			seq(manySources(19, "alice"), ok(a, "alice"), manySources(20, "alice")[19], no(a, "alice"), ok(b, "bob"),
				wait(30*time.Second), ok(a, "alice"))},
		{"a source that logged on before passes the account-wide lock",
			seq(succ(b, "alice"), manySources(20, "alice"), no(a, "alice"), ok(b, "alice"))},
		{"IPv6 counts per /64", seq(fails(5, v6a, "x"), no(v6b, "y"), ok(v6c, "y"))},
		{"IPv4-mapped IPv6 is the IPv4 source", seq(fails(5, mapped, "x"), no(a, "y"))},
		{"account names fold and map", seq(fail(a, "ALICE"), fail(a, "CORP\\alice"), fail(a, "alice@REALM"),
			fail(a, "Alice"), ok(b, "alice"), succ(b, "alice"), fail(b, "ALICE"), fail(b, "CORP\\alice"), fail(b, "alice@REALM"),
			fail(b, "Alice"), fail(b, "alice"), no(b, "alice"))},
		{"empty user counts the source only", seq(fails(5, a, ""), no(a, ""), no(a, "bob"), ok(b, "bob"))},
		{"unmappable names are counted too", seq(manySources(20, "HTTP/x@R"), ok(b, "bob"), no(b, "HTTP/x@R"))},
		{"invalid address is one source", seq(fails(5, netip.Addr{}, "x"), no(netip.Addr{}, "y"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
			rl := NewRateLimiter(RateLimitConfig{Now: clk.now})
			for i, s := range tt.steps {
				switch s.op {
				case "fail":
					rl.Fail(s.ip, s.user)
				case "success":
					rl.Success(s.ip, s.user)
				case "wait":
					clk.advance(s.wait)
				case "allow":
					err := rl.Allow(s.ip, s.user)
					if s.limited != (err != nil) {
						t.Fatalf("step %d: Allow(%v, %q) = %v, want limited=%v", i, s.ip, s.user, err, s.limited)
					}
					if err != nil && !errors.Is(err, ErrRateLimited) {
						t.Fatalf("step %d: error %v does not wrap ErrRateLimited", i, err)
					}
				}
			}
		})
	}
}

// Named accounts are never locked account-wide; per-source limits still
// hold for them.
func TestRateLimiterExempt(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	rl := NewRateLimiter(RateLimitConfig{Now: clk.now, Exempt: []string{"Administrator"}})
	for i := 0; i < 40; i++ {
		rl.Fail(netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), "administrator")
	}
	if err := rl.Allow(netip.MustParseAddr("192.0.2.7"), "Administrator"); err != nil {
		t.Fatalf("exempt account locked account-wide: %v", err)
	}
	src := netip.MustParseAddr("192.0.2.8")
	for i := 0; i < 5; i++ {
		rl.Fail(src, "Administrator")
	}
	if err := rl.Allow(src, "Administrator"); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("exempt account, guessing source not limited: %v", err)
	}
}

func TestRateLimiterBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	rl := NewRateLimiter(RateLimitConfig{Now: clk.now, MaxEntries: 100})
	victim := netip.MustParseAddr("192.0.2.1")
	for i := 0; i < 5; i++ {
		rl.Fail(victim, "alice")
	}
	if rl.Allow(victim, "") == nil {
		t.Fatal("victim source not locked")
	}
	for i := 0; i < 10000; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		rl.Fail(ip, fmt.Sprintf("user%d", i))
		clk.advance(time.Millisecond)
	}
	if n := rl.srcs.size(); n > 100 {
		t.Fatalf("source table holds %d entries, bound 100", n)
	}
	if n := rl.users.size(); n > 100 {
		t.Fatalf("account table holds %d entries, bound 100", n)
	}
	if len(rl.srcs.m) != rl.srcs.lru.Len() || len(rl.users.m) != rl.users.lru.Len() {
		t.Fatal("map and LRU list disagree")
	}
}

func TestRateLimiterExpiredEvictedFirst(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	rl := NewRateLimiter(RateLimitConfig{Now: clk.now, MaxEntries: 3})
	old := netip.MustParseAddr("192.0.2.1")
	rl.Fail(old, "")
	clk.advance(10 * time.Minute)
	locked := netip.MustParseAddr("192.0.2.2")
	for i := 0; i < 5; i++ {
		rl.Fail(locked, "")
	}
	rl.Fail(netip.MustParseAddr("192.0.2.3"), "")
	rl.Fail(netip.MustParseAddr("192.0.2.4"), "")
	if rl.Allow(locked, "") == nil {
		t.Fatal("locked source was evicted before an expired one")
	}
	if _, ok := rl.srcs.m[sourceKey(old)]; ok {
		t.Fatal("expired entry kept")
	}
}

func TestRateLimiterNil(t *testing.T) {
	var rl *RateLimiter
	if err := rl.Allow(netip.Addr{}, "x"); err != nil {
		t.Fatal(err)
	}
	rl.Fail(netip.Addr{}, "x")
	rl.Success(netip.Addr{}, "x")
}

func TestRateLimiterConcurrent(t *testing.T) {
	rl := NewRateLimiter(RateLimitConfig{MaxEntries: 50})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				ip := netip.AddrFrom4([4]byte{10, 0, byte(g), byte(i)})
				u := fmt.Sprintf("u%d", i%70)
				_ = rl.Allow(ip, u)
				if i%3 == 0 {
					rl.Success(ip, u)
				} else {
					rl.Fail(ip, u)
				}
			}
		}()
	}
	wg.Wait()
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		n    int
		want time.Duration
	}{
		{1, 30 * time.Second}, {2, time.Minute}, {3, 2 * time.Minute}, {5, 8 * time.Minute},
		{6, 15 * time.Minute}, {7, 15 * time.Minute}, {1000, 15 * time.Minute},
	}
	for _, tt := range tests {
		if got := backoff(30*time.Second, 15*time.Minute, tt.n); got != tt.want {
			t.Errorf("backoff(n=%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
}
