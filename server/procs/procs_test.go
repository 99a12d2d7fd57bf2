package procs

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// sampler feeds a Governor samples at a given load: each call advances the
// clock by step and the CPU time by load×step.
type sampler struct {
	t   *testing.T
	g   *Governor
	now time.Time
	cpu time.Duration
}

func newSampler(t *testing.T, cfg Config) *sampler {
	s := &sampler{t: t, g: New(cfg), now: time.Unix(1000, 0), cpu: time.Second}
	if got := s.g.Step(s.now, s.cpu); got != 1 {
		t.Fatalf("first sample: %d Ps, want 1 (a Governor starts at one)", got)
	}
	return s
}

// run takes n samples of step at load CPUs and returns the last decision.
func (s *sampler) run(n int, step time.Duration, load float64) int {
	got := 0
	for i := 0; i < n; i++ {
		s.now = s.now.Add(step)
		s.cpu += time.Duration(load * float64(step))
		got = s.g.Step(s.now, s.cpu)
	}
	return got
}

func TestRaisesWhenOnePIsFull(t *testing.T) {
	s := newSampler(t, Config{Max: 4, Window: 50 * time.Millisecond})
	if got := s.run(100, 10*time.Millisecond, 0.7); got != 1 {
		t.Fatalf("0.7 CPUs at one P: %d Ps, want 1", got)
	}
	if got := s.run(4, 10*time.Millisecond, 0.95); got != 1 {
		t.Fatalf("40 ms of a full CPU, within a 50 ms window: %d Ps, want no decision yet", got)
	}
	if got := s.run(1, 10*time.Millisecond, 0.95); got != 4 {
		t.Fatalf("a whole window at 0.95 CPUs: %d Ps, want Max 4", got)
	}
}

func TestLowersAtOnceWhenABurstIsOver(t *testing.T) {
	s := newSampler(t, Config{Max: 2, Window: 50 * time.Millisecond, Quick: 100 * time.Millisecond})
	s.run(5, 10*time.Millisecond, 1.0) // a 50 ms burst, a Basic logon's argon2
	if s.g.Procs() != 2 {
		t.Fatalf("a full CPU at one P: %d Ps, want 2", s.g.Procs())
	}
	if got := s.run(9, 10*time.Millisecond, 0.3); got != 2 {
		t.Fatalf("90 ms at 0.3 CPUs at Max: %d Ps, want no decision within the 100 ms period", got)
	}
	if got := s.run(1, 10*time.Millisecond, 0.3); got != 1 {
		t.Fatalf("100 ms at 0.3 CPUs at Max: %d Ps, want 1 at once", got)
	}
}

func TestLowersAfterAHoldUnderOneCPU(t *testing.T) {
	s := newSampler(t, Config{Max: 2, Window: 50 * time.Millisecond, Quick: 100 * time.Millisecond, Hold: 2 * time.Second})
	s.run(5, 10*time.Millisecond, 1.0)
	if s.g.Procs() != 2 {
		t.Fatalf("a full CPU at one P: %d Ps, want 2", s.g.Procs())
	}
	// 0.9 CPUs at Max (the idle P's spinning included): above IdleAt,
	// under LowerAt, so it takes the whole hold.
	if got := s.run(199, 10*time.Millisecond, 0.9); got != 2 {
		t.Fatalf("1.99 s at 0.9 CPUs at Max: %d Ps, want no decision before the 2 s hold", got)
	}
	if got := s.run(1, 10*time.Millisecond, 0.9); got != 1 {
		t.Fatalf("a whole hold at 0.9 CPUs at Max: %d Ps, want 1", got)
	}
	// Busy on both CPUs, it stays at Max hold after hold.
	s.run(5, 10*time.Millisecond, 1.0)
	if got := s.run(1000, 10*time.Millisecond, 1.6); got != 2 {
		t.Fatalf("1.6 CPUs at Max for 10 s: %d Ps, want 2", got)
	}
}

func TestOneCPUNeverRaises(t *testing.T) {
	s := newSampler(t, Config{Max: 1})
	if got := s.run(100, 50*time.Millisecond, 1.0); got != 1 {
		t.Fatalf("Max 1: %d Ps", got)
	}
}

func TestClockOrCPUGoingBackDecidesNothing(t *testing.T) {
	s := newSampler(t, Config{Max: 2, Window: 50 * time.Millisecond})
	s.now = s.now.Add(-time.Second) // the wall clock stepped back
	if got := s.g.Step(s.now, s.cpu+time.Hour); got != 1 {
		t.Fatalf("a sample from before the last: %d Ps, want 1 and a new start", got)
	}
	s.cpu += time.Hour
	if got := s.g.Step(s.now.Add(time.Second), 0); got != 1 {
		t.Fatalf("CPU time going back: %d Ps, want 1 and a new start", got)
	}
	s.now, s.cpu = s.now.Add(time.Second), 0
	if got := s.run(5, 10*time.Millisecond, 0.9); got != 2 {
		t.Fatalf("a full window after the new start: %d Ps, want 2", got)
	}
}

// TestRunFollowsTheProcess drives the real runtime: one P once Run starts,
// every P while two goroutines spin, one again once they stop, and the
// runtime's own value back when Run ends. Its thresholds are low so that a
// machine busy with other tests still crosses them; what it checks is the
// loop, not a speed.
func TestRunFollowsTheProcess(t *testing.T) {
	ceiling := runtime.GOMAXPROCS(0)
	if ceiling < 2 {
		t.Skipf("needs 2 CPUs to raise GOMAXPROCS; this process may use %d", ceiling)
	}
	g := New(Config{Window: 20 * time.Millisecond, RaiseAt: 0.2, Quick: 50 * time.Millisecond, IdleAt: 0.1, LowerAt: 0.1})
	changes := make(chan int, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx, func(n int) { changes <- n })
	}()
	defer func() {
		cancel()
		<-done
	}()
	wait := func(want int, what string) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case n := <-changes:
				if n == want {
					if got := runtime.GOMAXPROCS(0); got != want {
						t.Fatalf("%s: told %d, runtime has %d", what, n, got)
					}
					return
				}
			case <-deadline:
				t.Fatalf("%s: GOMAXPROCS never became %d (now %d)", what, want, runtime.GOMAXPROCS(0))
			}
		}
	}
	wait(1, "at start")
	var stop atomic.Bool
	spun := make(chan struct{}, 2)
	for i := 0; i < 2; i++ {
		go func() {
			for !stop.Load() {
			}
			spun <- struct{}{}
		}()
	}
	wait(ceiling, "with two goroutines spinning")
	stop.Store(true)
	<-spun
	<-spun
	wait(1, "idle again")
	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != ceiling {
		t.Fatalf("after Run: GOMAXPROCS %d, want the runtime's %d back", got, ceiling)
	}
}
