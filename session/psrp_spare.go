package session

// Warm spares: PowerShell takes 0.5 s to several seconds to start, which a
// client pays at every pool open. After a user's pool opens, the manager
// starts one idle pwsh (worker and all) for that user and endpoint; the
// user's next pool on that endpoint takes it, and the spare is replaced.
//
//   - Keyed by the identity key (user and uid) and the endpoint: a spare is
//     never handed to another user, nor to another endpoint's pool. It is
//     taken only if it still runs as the account the new pool would run as
//     (re-resolved for that Create) with the same program line.
//   - Started without the Create's environment, working directory or
//     delegated credentials, so only a Create that has none of those takes
//     one (pypsrp and the Windows PowerShell client send none).
//   - Bounded: at most powershell.warm_spares alive or starting at once,
//     each ended after warm_spare_lifetime_s unused.
//   - Shutdown ends every spare at once (no Close handshake: a spare has no
//     session yet) and waits only for spares still starting, whose spawn is
//     cancelled.

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/session/obs"
	"github.com/winrmd/winrmd/session/wsman"
)

// spare is one idle pwsh.
type spare struct {
	key     string
	id      string // the spare worker's shell id (logs, cgroup)
	acct    isolation.Account
	argv    []string
	newPriv bool
	w       isolation.Worker
	proc    *isolation.PwshProcess
	timer   *time.Timer
}

// spares is the manager's set of warm spares.
type spares struct {
	m        *Manager
	ctx      context.Context // cancelled at shutdown: spawns in progress end
	cancel   context.CancelFunc
	wg       sync.WaitGroup // spares being started or closed
	mu       sync.Mutex
	idle     map[string]*spare
	starting map[string]bool
	closing  bool
}

func newSpares(m *Manager) *spares {
	ctx, cancel := context.WithCancel(context.Background())
	return &spares{m: m, ctx: ctx, cancel: cancel, idle: map[string]*spare{}, starting: map[string]bool{}}
}

func spareKey(owner, endpoint string) string { return owner + "\x00" + endpoint }

// spareRequest is what a pool's worker would be; a spare must match it.
type spareRequest struct {
	key     string
	acct    isolation.Account
	argv    []string
	newPriv bool
}

func (r spareRequest) matches(sp *spare) bool {
	a, b := r.acct, sp.acct
	return a.Username == b.Username && a.UID == b.UID && a.GID == b.GID && slices.Equal(a.Groups, b.Groups) &&
		a.Home == b.Home && a.Shell == b.Shell && slices.Equal(r.argv, sp.argv) && r.newPriv == sp.newPriv
}

// take hands the caller the spare for r, or nil (none, dead or not a match:
// then it is ended).
func (s *spares) take(r spareRequest) *spare {
	s.mu.Lock()
	sp := s.idle[r.key]
	if sp != nil {
		delete(s.idle, r.key)
		sp.timer.Stop()
	}
	s.mu.Unlock()
	if sp == nil {
		return nil
	}
	if met := s.m.cfg.Metrics; met != nil {
		met.PSRPSpares.Dec()
	}
	if sp.proc.Err() != nil || !r.matches(sp) {
		s.m.log.Info("warm spare discarded", zap.String(obs.FShellID, sp.id), zap.String(obs.FUser, sp.acct.Username))
		s.closeAsync(sp)
		return nil
	}
	return sp
}

// start begins a spare for r unless spares are off, the limit is reached or
// the key has one already.
func (s *spares) start(r spareRequest) {
	max := s.m.cfg.PowerShell.WarmSpares
	s.mu.Lock()
	if s.closing || max <= 0 || s.idle[r.key] != nil || s.starting[r.key] || len(s.idle)+len(s.starting) >= max {
		s.mu.Unlock()
		return
	}
	s.starting[r.key] = true
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		sp, err := s.spawn(r)
		s.mu.Lock()
		delete(s.starting, r.key)
		if err != nil || s.closing {
			s.mu.Unlock()
			if err != nil {
				s.m.log.Info("warm spare not started", zap.String(obs.FUser, r.acct.Username), zap.Error(err))
			} else {
				s.close(sp)
			}
			return
		}
		s.idle[r.key] = sp
		life := time.Duration(s.m.cfg.PowerShell.WarmSpareLifetimeS) * time.Second
		sp.timer = time.AfterFunc(life, func() { s.expire(sp) })
		s.mu.Unlock()
		if met := s.m.cfg.Metrics; met != nil {
			met.PSRPSpares.Inc()
		}
		s.m.log.Info("warm spare ready", zap.String(obs.FShellID, sp.id), zap.String(obs.FUser, sp.acct.Username), zap.Int("worker_pid", sp.w.Pid()))
	}()
}

func (s *spares) spawn(r spareRequest) (*spare, error) {
	id := wsman.NewGUID()
	w, err := s.m.cfg.Spawner.Spawn(s.ctx, isolation.SpawnRequest{Account: r.acct, ShellID: id, Limits: s.m.limits(), AllowNewPrivileges: r.newPriv})
	if err != nil {
		return nil, err
	}
	proc, err := isolation.StartPwsh(s.ctx, w, r.argv)
	if err != nil {
		w.Close()
		return nil, err
	}
	return &spare{key: r.key, id: id, acct: r.acct, argv: slices.Clone(r.argv), newPriv: r.newPriv, w: w, proc: proc}, nil
}

// expire ends a spare that nobody took within its lifetime.
func (s *spares) expire(sp *spare) {
	s.mu.Lock()
	mine := s.idle[sp.key] == sp
	if mine {
		delete(s.idle, sp.key)
	}
	s.mu.Unlock()
	if !mine {
		return // taken meanwhile
	}
	if met := s.m.cfg.Metrics; met != nil {
		met.PSRPSpares.Dec()
	}
	s.m.log.Info("warm spare expired", zap.String(obs.FShellID, sp.id), zap.String(obs.FUser, sp.acct.Username))
	s.close(sp)
}

func (s *spares) closeAsync(sp *spare) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.close(sp)
	}()
}

// close kills the spare's pwsh and everything of its worker.
func (s *spares) close(sp *spare) {
	_ = sp.proc.Kill()
	_ = sp.proc.Close()
}

// shutdown ends every spare and waits (within ctx) for those starting.
func (s *spares) shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closing = true
	idle := make([]*spare, 0, len(s.idle))
	for k, sp := range s.idle {
		sp.timer.Stop()
		idle = append(idle, sp)
		delete(s.idle, k)
	}
	s.mu.Unlock()
	s.cancel()
	if met := s.m.cfg.Metrics; met != nil {
		met.PSRPSpares.Sub(float64(len(idle)))
	}
	for _, sp := range idle {
		s.closeAsync(sp)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
