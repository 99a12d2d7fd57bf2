// Package procs adapts the daemon's GOMAXPROCS to its load: one P while the
// daemon's work fits on one CPU, all of them while it does not.
//
// Why. The daemon is a broker: most of what it does per request is short
// hand-offs between goroutines (a connection, a worker's socket reader, a
// waiting Receive). At every hand-off the Go scheduler wakes an idle P's
// thread to look for work, and that thread spins and sleeps in 3 µs and
// 20 µs naps before it parks again. On a host with few CPUs those threads
// take the CPU from the user's commands the requests wait for. Measured
// with `make bench` on 2 CPUs (BENCH.md): a warm command `true` cost the
// daemon and its worker 2.0–2.3 ms of CPU at GOMAXPROCS=2 and 1.5–1.7 ms at
// 1, and ran 0.68–0.73× of OpenSSH's time against 0.72–0.76×. But at one P
// the CPU-bound work is halved where it comes in bursts: Basic logons
// against the account store (argon2, 25 ms of CPU each) fell from 63–65 to
// 38–39 per second, and 200 shells opened at once took 20% longer.
//
// So the Governor samples the daemon's CPU time (getrusage: every thread,
// in the kernel too) and decides:
//
//   - at one P, over each Window (20 ms): if the daemon used at least RaiseAt
//     (0.8) of a CPU, its one P is the limit, and it gets Max;
//   - at Max, over each Quick period (100 ms): if it used less than IdleAt
//     (0.5), the burst is over and it goes back to one P at once. A single
//     Basic logon is such a burst: it raises Max for its 25 ms, and the
//     warm commands after it would otherwise run at Max for a whole Hold;
//   - at Max, over each Hold (2 s): if it used less than LowerAt (1.0) of a
//     CPU, one P would have carried it, and it goes back to one. The idle
//     Ps' spinning counts in that CPU, so a load that is light at one P
//     reads heavier at Max; LowerAt is therefore above RaiseAt, and a load
//     between the two (a CPU nearly full at one P) may move between one P
//     and Max every Hold, losing at most one Window at one P in each: 1%.
//
// Max is the runtime's own choice at start (the CPUs the process may use,
// and its cgroup's CPU limit). An operator who sets GOMAXPROCS in the
// daemon's environment keeps that value: the daemon then runs no Governor.
// A runtime.GOMAXPROCS call stops the world for a few microseconds; it is
// made only when the decision changes.
//
// RelaxSysmon (sysmon.go) quiets the runtime's monitor thread for the same
// reason, in the daemon and in every worker: SysmonSlack says why and what it
// costs.
package procs

import (
	"context"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Config is a Governor's policy. The zero value of a field takes the default.
type Config struct {
	Max     int           // Ps under load; default runtime.GOMAXPROCS(0) at New
	Window  time.Duration // sampling period at one P; default 20 ms
	RaiseAt float64       // CPUs used over a Window at one P to go to Max; default 0.8
	Quick   time.Duration // sampling period at Max; default 100 ms
	IdleAt  float64       // CPUs used over a Quick period at Max to go back to one; default 0.5
	Hold    time.Duration // averaging period at Max; default 2 s
	LowerAt float64       // CPUs used over a Hold at Max to go back to one; default 1.0
}

// Defaults.
const (
	DefaultWindow  = 20 * time.Millisecond
	DefaultRaiseAt = 0.8
	DefaultQuick   = 100 * time.Millisecond
	DefaultIdleAt  = 0.5
	DefaultHold    = 2 * time.Second
	DefaultLowerAt = 1.0
)

// Governor decides the daemon's GOMAXPROCS from samples of its CPU time
// (Step). It is not safe for concurrent use; Run drives it from one
// goroutine.
type Governor struct {
	cfg   Config
	procs int
	// since is the start of the short period being measured (a Window at
	// one P, a Quick period at Max), cpu the process's CPU time then; zero
	// before the first sample. holdSince and holdCPU: the same for the
	// Hold, at Max.
	since     time.Time
	cpu       time.Duration
	holdSince time.Time
	holdCPU   time.Duration
}

// New returns a Governor at one P (the caller applies it: Run does).
func New(cfg Config) *Governor {
	if cfg.Max <= 0 {
		cfg.Max = runtime.GOMAXPROCS(0)
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.Window, DefaultWindow}, {&cfg.Quick, DefaultQuick}, {&cfg.Hold, DefaultHold}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	for _, f := range []struct {
		v   *float64
		def float64
	}{
		{&cfg.RaiseAt, DefaultRaiseAt}, {&cfg.IdleAt, DefaultIdleAt}, {&cfg.LowerAt, DefaultLowerAt}} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
	return &Governor{cfg: cfg, procs: 1}
}

// Procs is the current decision.
func (g *Governor) Procs() int { return g.procs }

// period is how often Run samples at the current decision.
func (g *Governor) period() time.Duration {
	if g.procs > 1 {
		return g.cfg.Quick
	}
	return g.cfg.Window
}

// Step takes a sample, the wall clock and the process's CPU time (both
// monotonic as far as the caller can tell), and returns the number of Ps
// the daemon should run with. A sample before the end of the current
// period only counts once the period is over.
func (g *Governor) Step(now time.Time, cpu time.Duration) int {
	if g.since.IsZero() || cpu < g.cpu || now.Before(g.since) {
		// The first sample, or a clock that went back: start again.
		g.since, g.cpu, g.holdSince, g.holdCPU = now, cpu, now, cpu
		return g.procs
	}
	wall := now.Sub(g.since)
	if wall < g.period() {
		return g.procs
	}
	used := float64(cpu-g.cpu) / float64(wall)
	g.since, g.cpu = now, cpu
	if g.procs == 1 {
		if used >= g.cfg.RaiseAt && g.cfg.Max > 1 {
			g.procs = g.cfg.Max
			g.holdSince, g.holdCPU = now, cpu
		}
		return g.procs
	}
	if used < g.cfg.IdleAt {
		g.procs = 1 // a burst is over: one P at once
		return g.procs
	}
	if hold := now.Sub(g.holdSince); hold >= g.cfg.Hold {
		used = float64(cpu-g.holdCPU) / float64(hold)
		g.holdSince, g.holdCPU = now, cpu
		if used < g.cfg.LowerAt {
			g.procs = 1 // a steady load one P can carry
		}
	}
	return g.procs
}

// ProcessCPU is the calling process's CPU time, user and system, over all
// its threads (getrusage RUSAGE_SELF); its children are not counted.
func ProcessCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// Run applies the Governor's decisions with runtime.GOMAXPROCS until ctx
// ends, and then restores Max. It samples every Window at one P (50
// wake-ups a second, about 2 µs each) and every Quick period at Max.
// changed, if not nil, is called after each setting with the new value,
// the first one (one P, at start) included.
func (g *Governor) Run(ctx context.Context, changed func(procs int)) {
	apply := func(n int) {
		runtime.GOMAXPROCS(n)
		if changed != nil {
			changed(n)
		}
	}
	apply(g.procs)
	defer func() {
		if g.procs != g.cfg.Max {
			apply(g.cfg.Max)
		}
	}()
	t := time.NewTimer(g.period())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if cpu, err := ProcessCPU(); err == nil {
				before := g.procs
				if g.Step(now, cpu) != before {
					apply(g.procs)
				}
			}
			t.Reset(g.period())
		}
	}
}
