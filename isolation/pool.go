package isolation

// The pool of pre-started workers (winrs.prestarted_workers).
//
// Starting a worker (fork, exec of the daemon's binary, the Go runtime's
// start, warmThreads, Hello) is most of a shell's Create: about 10 ms of
// a 16 ms cold command here (BENCH.md). The pool does that part before a
// client asks, so Create only sends Setup to a worker that already waits.
//
// A pooled worker is started exactly as a cold one (launch): the same
// binary and spawn thread, its own cgroup (named pool-<random>, known to
// the watchdog like every shell group), Hello checked against the kernel's
// credentials. It then waits as the daemon's user (root), with no account,
// no environment beyond GOMAXPROCS and no secret: nothing of any user has
// reached it. Spawn takes one, writes the shell's limits into its cgroup
// and goes on as a cold start does from Hello (assign: Setup, the ordered
// drop of drop.go, SetupOK checked by SO_PASSCRED and /proc). From there
// it is that shell's worker, closed with it; a worker never returns to the
// pool, so nothing is ever shared between shells or users. A second Setup
// is a protocol error to the worker, which then exits.
//
// Each pooled worker moves through:
//
//	launching ──Hello──▶ idle ──take──▶ assigned (the shell's; Close kills it)
//	    │                 │
//	    └──error──▶ discarded ◀──exit / older than poolMaxIdle / pool closed
//
// A filler goroutine keeps up to size idle workers, one launch at a time,
// so a burst of Creates is not also charged a burst of background starts.
// Workers are forked for the configured new-privileges flavour only (the
// two spawn threads differ in no_new_privs, which a worker cannot shed): a
// shell of the other flavour starts cold. Sidecar mode has no pool: its
// workers are born inside the target container as it is at Create.
// Close stops the filler (a launch in progress is cancelled) and kills the
// idle workers: shutdown waits for no worker to start.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// poolMaxIdle retires a pooled worker that has waited this long and starts
// a fresh one, well inside the worker's own wait for Setup (setupWait,
// twice it), so the pool never hands out a worker about to give up.
const poolMaxIdle = setupWait / 2

// poolRefillDelay is how long after a worker is taken the pool starts its
// replacement: a command of automation (Create, Command, Receive, Delete)
// takes a few ms after its Create (BENCH.md's cold row: a refill at once
// made that Delete 4.7 ms instead of 1.1). Takes within the delay are served
// by the same refill, so a steady stream of Creates still finds workers.
const poolRefillDelay = 20 * time.Millisecond

// poolRetryDelay spaces launches after one failed, so a host that cannot
// start workers (out of pids, memory) is not hammered by the filler.
const poolRetryDelay = time.Second

// PoolStats are the pool's counters, for metrics.
type PoolStats struct {
	Idle  int    // workers waiting now
	Taken uint64 // Spawns served by a pooled worker
	Cold  uint64 // Spawns that started a worker themselves (pool empty, other flavour, or off)
}

type workerPool struct {
	s        *procSpawner
	log      *slog.Logger
	size     int
	newPrivs bool // the flavour of every pooled worker

	ctx    context.Context // cancelled by close: aborts a launch
	cancel context.CancelFunc
	wake   chan struct{} // a worker was taken or died: refill
	done   chan struct{} // the filler has ended

	mu     sync.Mutex
	idle   []*launched // oldest first
	closed bool

	taken atomic.Uint64
}

func newWorkerPool(s *procSpawner, size int, newPrivs bool) *workerPool {
	p := &workerPool{s: s, log: s.log.WithGroup("pool"), size: size, newPrivs: newPrivs,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	go p.fill()
	return p
}

// take hands out the oldest live idle worker of the flavour, or nil.
func (p *workerPool) take(newPrivs bool) *launched {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	var l *launched
	var dead []*launched
	for len(p.idle) > 0 && l == nil && newPrivs == p.newPrivs {
		c := p.idle[0]
		p.idle = p.idle[1:]
		select {
		case <-c.proc.exited:
			dead = append(dead, c)
		default:
			l = c
		}
	}
	p.mu.Unlock()
	for _, c := range dead {
		p.drop(c, "exited while idle")
	}
	if l != nil {
		p.taken.Add(1)
		p.poke()
	}
	return l
}

func (p *workerPool) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// fill keeps the pool full until close.
func (p *workerPool) fill() {
	defer close(p.done)
	tick := time.NewTicker(poolMaxIdle / 4)
	defer tick.Stop()
	for {
		p.retire()
		for p.want() {
			l, err := p.launch()
			if err != nil {
				if p.ctx.Err() != nil {
					return
				}
				p.log.Warn("pre-starting a worker failed; retrying", slog.Any("error", err))
				select {
				case <-p.ctx.Done():
					return
				case <-time.After(poolRetryDelay):
				}
				continue
			}
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				p.drop(l, "pool closed")
				return
			}
			p.idle = append(p.idle, l)
			p.mu.Unlock()
			go p.watch(l)
		}
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
			// A worker was just taken: its shell's first requests are on
			// their way. Start the next one poolRefillDelay later, so the
			// launch (about 10 ms of CPU) does not compete with them.
			if !p.sleep(poolRefillDelay) {
				return
			}
		case <-tick.C:
		}
	}
}

// sleep waits d, taking the wake-ups that come meanwhile (the refill after
// it serves them too); false if the pool closed.
func (p *workerPool) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return false
		case <-p.wake:
		case <-t.C:
			return true
		}
	}
}

func (p *workerPool) want() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && len(p.idle) < p.size
}

// launch starts one worker in a cgroup of its own.
func (p *workerPool) launch() (*launched, error) {
	cg, err := p.s.cg.create("pool-"+randomHex(8), 0)
	if err != nil {
		return nil, err
	}
	l, err := p.s.launch(p.ctx, p.log, cg, p.newPrivs, nil)
	if err != nil {
		cg.discard()
		return nil, err
	}
	l.pooled = true
	return l, nil
}

// watch removes l from the pool if it exits while idle, so the filler
// starts another without waiting for a Spawn to find it dead.
func (p *workerPool) watch(l *launched) {
	select {
	case <-l.proc.exited:
	case <-p.ctx.Done():
		return
	}
	if p.remove(l) {
		p.drop(l, "exited while idle")
		p.poke()
	}
}

// remove takes l out of the idle list; false if it was not there (taken).
func (p *workerPool) remove(l *launched) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, c := range p.idle {
		if c == l {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			return true
		}
	}
	return false
}

// retire drops the workers that have waited poolMaxIdle.
func (p *workerPool) retire() {
	p.mu.Lock()
	var old []*launched
	keep := p.idle[:0]
	for _, c := range p.idle {
		if time.Since(c.born) >= poolMaxIdle {
			old = append(old, c)
		} else {
			keep = append(keep, c)
		}
	}
	p.idle = keep
	p.mu.Unlock()
	for _, c := range old {
		p.drop(c, "retired after waiting")
	}
}

// drop kills a worker that will serve no shell and removes its cgroup.
func (p *workerPool) drop(l *launched, why string) {
	l.discard(5 * time.Second)
	l.cg.discard()
	p.log.Debug("pooled worker dropped", slog.Int("pid", l.pid), slog.String("why", why))
}

// close stops the filler and kills every idle worker; Spawn no longer takes.
func (p *workerPool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	p.cancel()
	<-p.done
	var wg sync.WaitGroup
	for _, l := range idle {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.drop(l, "pool closed")
		}()
	}
	wg.Wait()
}

func (p *workerPool) stats() PoolStats {
	if p == nil {
		return PoolStats{}
	}
	p.mu.Lock()
	n := len(p.idle)
	p.mu.Unlock()
	return PoolStats{Idle: n, Taken: p.taken.Load()}
}

// errPooledDied: a pooled worker was gone by the time its Setup was sent or
// answered; Spawn then starts a worker cold.
var errPooledDied = errors.New("isolation: the pre-started worker exited before its setup")

// assignPooled makes a pooled worker the shell's: the shell's memory limit
// on its group, then assign (pids limit, Setup, the verified drop). On error
// the worker and its group are gone; errPooledDied when it had exited.
func (s *procSpawner) assignPooled(ctx context.Context, log *slog.Logger, l *launched, acct Account, setup msgSetup, memMB, maxProcs int, noProfile bool) (*workerHandle, error) {
	if err := l.cg.setMemory(memMB); err != nil {
		l.discard(5 * time.Second)
		l.cg.discard()
		return nil, err
	}
	w, err := s.assign(ctx, log, l, acct, setup, maxProcs, noProfile)
	if err != nil {
		l.cg.discard()
		// The worker's end of the socket closed under the Setup: it had
		// exited (a worker closes it only by exiting), not refused.
		if ctx.Err() == nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
			errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)) {
			log.Info("pre-started worker had exited; starting one", slog.Any("error", err))
			return nil, fmt.Errorf("%w: %w", errPooledDied, err)
		}
		return nil, err
	}
	return w, nil
}
