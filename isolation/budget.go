package isolation

import (
	"sync"
)

// OutputBudget bounds the command output the daemon holds undelivered
// (issue 14.6): every byte a worker may send before the daemon's client
// received it is reserved here first, daemon-wide and per account, so
// commands nobody reads (400 never-received `yes`) cannot grow the root
// daemon's memory, which no user's cgroup pays for, without bound.
//
// A command is granted up to OutputWindow of credit when it starts (its
// first outputFloor bytes free of the budget, so every command moves at
// least a chunk per Receive) and, while it has less, more whenever budget
// is returned; at its credit's end its worker stops reading its pipes and
// the command blocks on write: nothing is lost, it waits. Credit a client's
// Receive gave back stays with the command (Consumed); a command returns
// its whole grant when it ends. The daemon's bound is the budget plus
// outputFloor per live command.
type OutputBudget struct {
	total, perUser int64

	mu      sync.Mutex
	used    int64
	users   map[uint32]int64
	waiters map[budgetWaiter]struct{}
	waking  bool // a wake loop runs
	dirty   bool // budget was returned while it ran
}

// budgetWaiter is a running command granted less than OutputWindow.
type budgetWaiter struct {
	h  *workerHandle
	id string
}

// NewOutputBudget makes a budget of total bytes for the daemon and perUser
// bytes for each account (uid); 0 or less means unlimited.
func NewOutputBudget(total, perUser int64) *OutputBudget {
	return &OutputBudget{total: total, perUser: perUser, users: map[uint32]int64{}, waiters: map[budgetWaiter]struct{}{}}
}

// take reserves up to want bytes for uid and returns what it got (nil: all).
func (b *OutputBudget) take(uid uint32, want int) int {
	if b == nil || want <= 0 {
		return max(want, 0)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := int64(want)
	if b.total > 0 {
		n = min(n, b.total-b.used)
	}
	if b.perUser > 0 {
		n = min(n, b.perUser-b.users[uid])
	}
	if n <= 0 {
		return 0
	}
	b.used += n
	b.users[uid] += n
	return int(n)
}

// give returns n bytes of uid's reservation and lets waiting commands
// take them (asynchronously: the caller may hold a handle's lock).
func (b *OutputBudget) give(uid uint32, n int) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= int64(n)
	if b.users[uid] -= int64(n); b.users[uid] <= 0 {
		delete(b.users, uid)
	}
	b.kickLocked()
	b.mu.Unlock()
}

// kickLocked starts a wake loop, or tells the running one to go again.
func (b *OutputBudget) kickLocked() {
	if len(b.waiters) == 0 {
		return
	}
	if b.waking {
		b.dirty = true
		return
	}
	b.waking = true
	go b.wake()
}

// wake offers the returned budget to every waiting command until no more
// was returned meanwhile.
func (b *OutputBudget) wake() {
	for {
		b.mu.Lock()
		b.dirty = false
		ws := make([]budgetWaiter, 0, len(b.waiters))
		for w := range b.waiters {
			ws = append(ws, w)
		}
		b.mu.Unlock()
		for _, w := range ws {
			w.h.topUp(w.id)
		}
		b.mu.Lock()
		if !b.dirty {
			b.waking = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
	}
}

func (b *OutputBudget) wait(h *workerHandle, id string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.waiters[budgetWaiter{h, id}] = struct{}{}
	b.kickLocked()
	b.mu.Unlock()
}

func (b *OutputBudget) unwait(h *workerHandle, id string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.waiters, budgetWaiter{h, id})
	b.mu.Unlock()
}

// Used reports the bytes reserved, daemon-wide and for uid.
func (b *OutputBudget) Used(uid uint32) (total, user int64) {
	if b == nil {
		return 0, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.users[uid]
}
