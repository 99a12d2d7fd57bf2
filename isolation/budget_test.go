package isolation

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The output budget (issue 14.6): a command nobody reads holds at most the
// account's budget in the daemon, a second command then waits for budget
// beyond the floor every command has (nothing lost); a command under a
// budget far smaller than its output still delivers all of it; everything
// reserved comes back.
func TestOutputBudget(t *testing.T) {
	u := newTestUser(t)
	const perUser = 256 << 10
	b := NewOutputBudget(0, perUser)
	s := newTestSpawner(t, SpawnerOptions{OutputBudget: b})
	h, c := spawn(t, s, SpawnRequest{Account: u.acct})
	used := func() int64 { _, n := b.Used(u.acct.UID); return n }
	waitUsed := func(what string, ok func(int64) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok(used()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d bytes reserved", what, used())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// 4 MiB through a 256 KiB budget, all of it, in order.
	out, _, code := c.run(t, sh("head -c 4194304 /dev/zero | tr '\\0' x"), nil)
	if code != 0 || len(out) != 4<<20 || strings.Trim(out, "x") != "" {
		t.Fatalf("4 MiB under a 256 KiB budget: exit %d, %d bytes", code, len(out))
	}
	waitUsed("after a finished command", func(n int64) bool { return n == 0 })

	// A flood nobody reads holds the whole budget and no more.
	c.setHold(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Start(ctx, CommandSpec{ID: "FLOOD", Line: "yes"}); err != nil {
		t.Fatal(err)
	}
	waitUsed("the flood", func(n int64) bool { return n == perUser })
	if err := h.Start(ctx, CommandSpec{ID: "SECOND", Line: "echo second"}); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	if g := h.cmds["SECOND"]; g != nil && g.grant > outputFloor {
		t.Errorf("the second command got %d bytes of credit with the budget spent, more than the %d of the floor", g.grant, outputFloor)
	}
	h.mu.Unlock()
	if n := used(); n != perUser {
		t.Errorf("%d bytes reserved with the budget spent, want %d", n, perUser)
	}
	// Released, the flood's budget is returned.
	if err := h.Release("FLOOD"); err != nil {
		t.Fatal(err)
	}
	c.setHold(false)
	if code := c.waitExit(t, "SECOND", 30*time.Second); code != 0 || string(c.output("SECOND", Stdout)) != "second\n" {
		t.Fatalf("the waiting command: exit %d, %q", code, c.output("SECOND", Stdout))
	}
	if err := h.Release("SECOND"); err != nil {
		t.Fatal(err)
	}
	waitUsed("after both were released", func(n int64) bool { return n == 0 })
	if total, _ := b.Used(u.acct.UID); total != 0 {
		t.Errorf("%d bytes still reserved daemon-wide", total)
	}
}
