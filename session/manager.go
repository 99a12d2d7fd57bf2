// Package session answers "what is a shell": the WinRS shell and command
// state, output buffers, the Receive long poll, quotas and idle timers. It
// acts on decoded messages (wsman.Message: headers and a typed body) for an
// authenticated identity and never sees XML, HTTP, tokens or sockets; the
// wire format is the wsman package's business, which process runs a shell
// is isolation's.
//
// Layering: server -> session -> isolation, with wsman (the wire), obs
// (logs, audit, metrics), authn (identities) and configs beside or below;
// session imports nothing under server/.
//
// # Shell states
//
// A shell's state changes only through (*Shell).to, which refuses every
// transition not drawn here:
//
//	spawning --worker up--> open --worker died--> broken
//	    |                    |                      |
//	    +--------------------+-------> closed <-----+
//	         (spawn failed, Delete, idle/run-time reaper, shutdown)
//
// # Command states
//
// A command's state changes only through (*Command).to:
//
//	running --exit--> exited --Done delivered--> finished
//	   |  \                                         ^
//	   |   +--worker gone--> failed --fault delivered-+
//	   +--Signal terminate--> terminated
//
// finished answers Done (or the failure fault) again to a repeated Receive;
// terminated answers the unknown-command fault. Terminating a command that
// already left running only forgets its output.
//
// One Receive per command runs at a time (a channel semaphore); a second
// one, a client retrying after its own read timeout, waits its turn within
// its OperationTimeout.
//
// # Limits
//
// Every quota and timeout is a field of Limits (limits.go), filled from
// the winrs.* and service.* keys by LimitsFor alone.
package session

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/session/obs"
	"github.com/winrmd/winrmd/session/wsman"
)

// Config is what the session layer needs from the daemon.
type Config struct {
	// Limits are the quotas and timeouts (LimitsFor maps the
	// configuration into them; zero fields take their defaults).
	Limits Limits
	// Winrs is winrm/config/winrs as configured, for its switches
	// (allow_remote_shell_access, allow_new_privileges); its quotas and
	// timeouts are read through Limits only.
	Winrs      configs.Winrs
	Spawner    isolation.Spawner
	PowerShell configs.PowerShell // the PSRP shells' pwsh and endpoints
	// ServiceAccount resolves an endpoint's run_as_user (the authorizer's
	// account database); nil: such endpoints refuse to open.
	ServiceAccount func(name string) (authn.Account, error)
	Log            *zap.Logger
	Audit          *obs.Audit
	Metrics        *obs.Metrics
	// MaxEnvelopeSizeKB and Service are winrm/config/service as
	// configured, reported by the config Get (SetService replaces Service
	// on reload); they decide nothing here.
	MaxEnvelopeSizeKB int
	Service           configs.Service
}

// Request is one authenticated, decoded WS-Management request.
type Request struct {
	// Msg is the decoded request. A Send's StreamData.Data may alias the
	// server's buffer of the request body (wsman.DecodeInPlace), which the
	// server reuses once Handle has returned: what is kept beyond the call
	// must be copied (the Send path hands it to the worker or to pwsh
	// before it returns).
	Msg         *wsman.Message
	Identity    *authn.Identity
	RemoteAddr  string // client IP
	ListenerURL string // e.g. http://host:5985/wsman, echoed in ResourceCreated

	// sent, set by Handle, gives back what the response borrowed (a
	// ReceiveResponse's pooled buffer) once it is written (Sent).
	sent func()
}

// Sent tells the session layer that the response Handle returned has been
// written, or dropped: the buffers it is in may be reused for the next
// response, so its bytes must not be used after. A caller that never calls
// it only leaves the buffer to the collector.
func (r *Request) Sent() {
	if f := r.sent; f != nil {
		r.sent = nil
		f()
	}
}

// Manager owns every shell of the daemon.
type Manager struct {
	cfg Config
	log *zap.Logger

	mu       sync.Mutex
	shells   map[string]*Shell // key: upper-case shell id
	perUser  map[string]int    // live shells per identity key
	ops      map[string]int    // in-flight operations per identity key
	enums    map[string]*enumeration
	closing  bool
	stopReap chan struct{}
	reapDone chan struct{}
	svc      atomic.Pointer[configs.Service] // SetService; nil: cfg.Service
	spares   *spares                         // warm pwsh per user and endpoint (psrp_spare.go)
}

// NewManager starts the manager and its idle reaper.
func NewManager(cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.MaxEnvelopeSizeKB <= 0 {
		cfg.MaxEnvelopeSizeKB = 500
	}
	m := &Manager{
		cfg:      cfg,
		log:      cfg.Log.Named("session"),
		shells:   map[string]*Shell{},
		perUser:  map[string]int{},
		ops:      map[string]int{},
		enums:    map[string]*enumeration{},
		stopReap: make(chan struct{}),
		reapDone: make(chan struct{}),
	}
	m.spares = newSpares(m)
	go m.reaper()
	return m
}

// Handle dispatches one request. It returns the response envelope or an
// error that is a *wsman.Fault.
func (m *Manager) Handle(ctx context.Context, req *Request) ([]byte, error) {
	if !req.Identity.Valid() {
		// Unreachable by construction: the server only calls Handle after
		// authentication. Refuse loudly rather than act for nobody.
		return nil, wsman.AccessDenied("the request is not authenticated")
	}
	key := req.Identity.Key()
	if err := m.beginOp(key); err != nil {
		return nil, err
	}
	defer m.endOp(key)

	h := &req.Msg.Header
	switch h.Action {
	case wsman.ActionCreate:
		return m.create(ctx, req)
	case wsman.ActionDelete:
		return m.delete(ctx, req)
	case wsman.ActionCommand, wsman.ActionSend, wsman.ActionReceive, wsman.ActionSignal,
		wsman.ActionDisconnect, wsman.ActionReconnect, wsman.ActionConnect:
		if isPowerShellURI(h.ResourceURI) {
			return m.psHandle(ctx, req)
		}
	}
	switch h.Action {
	case wsman.ActionCommand:
		return m.command(ctx, req)
	case wsman.ActionSend:
		return m.send(ctx, req)
	case wsman.ActionReceive:
		return m.receive(ctx, req)
	case wsman.ActionSignal:
		return m.signal(ctx, req)
	case wsman.ActionGet:
		return m.get(ctx, req)
	case wsman.ActionEnumerate:
		return m.enumerate(ctx, req)
	case wsman.ActionPull:
		return m.pull(ctx, req)
	case wsman.ActionRelease:
		return m.release(ctx, req)
	case wsman.ActionDisconnect, wsman.ActionReconnect, wsman.ActionConnect:
		return nil, wsman.ActionNotSupported(h.Action)
	default:
		return nil, wsman.ActionNotSupported(h.Action)
	}
}

func (m *Manager) beginOp(key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ops[key] >= m.cfg.Limits.MaxOperationsPerUser {
		return wsman.QuotaLimit(wsman.CodeQuotaMaxOperations, fmt.Sprintf(
			"The WS-Management service cannot process the request. This user is allowed a maximum number of %d concurrent operations, which has been exceeded. Close existing operations for this user, or raise the quota for this user.",
			m.cfg.Limits.MaxOperationsPerUser))
	}
	m.ops[key]++
	return nil
}

func (m *Manager) endOp(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops[key]--
	if m.ops[key] <= 0 {
		delete(m.ops, key)
	}
}

// lookup finds a shell by its selector and checks ownership. Another
// identity's shell answers Access Denied (never its contents).
func (m *Manager) lookup(req *Request) (*Shell, error) {
	id, ok := req.Msg.Header.Selector("ShellId")
	if !ok || id == "" {
		return nil, wsman.InvalidSelectors("The WS-Management service cannot process the request because the request contained invalid selectors for the resource.")
	}
	m.mu.Lock()
	sh := m.shells[strings.ToUpper(id)]
	m.mu.Unlock()
	if sh == nil {
		return nil, wsman.InvalidSelectors("The WS-Management service cannot process the request because the request contained invalid selectors for the resource.")
	}
	if sh.owner != req.Identity.Key() {
		m.cfg.Audit.Event(obs.EvAccessDenied, zap.String(obs.FUser, req.Identity.User()),
			zap.String(obs.FRemoteAddr, req.RemoteAddr), zap.String(obs.FShellID, sh.id),
			zap.String(obs.FReason, "shell belongs to another user"), zap.String(obs.FAction, shortAction(req.Msg.Header.Action)))
		return nil, wsman.AccessDenied("Access is denied. The shell belongs to another user.")
	}
	// A PowerShell shell's worker runs pwsh and nothing else: the cmd
	// shell's Command/Send/Receive/Signal never reach it.
	switch req.Msg.Header.Action {
	case wsman.ActionCommand, wsman.ActionSend, wsman.ActionReceive, wsman.ActionSignal:
		if (sh.ps != nil) != isPowerShellURI(req.Msg.Header.ResourceURI) {
			return nil, wsman.InvalidSelectors("The WS-Management service cannot process the request because the resource URI does not match the shell.")
		}
	}
	return sh, nil
}

// Shutdown terminates every shell and its processes.
func (m *Manager) Shutdown(ctx context.Context) {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return
	}
	m.closing = true
	shells := make([]*Shell, 0, len(m.shells))
	for _, s := range m.shells {
		shells = append(shells, s)
	}
	m.mu.Unlock()
	close(m.stopReap)
	<-m.reapDone
	m.spares.shutdown(ctx)
	var wg sync.WaitGroup
	for _, s := range shells {
		wg.Add(1)
		go func(s *Shell) {
			defer wg.Done()
			m.removeShell(s)
		}(s)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// ShellCount is the number of live shells.
func (m *Manager) ShellCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.shells)
}

func (m *Manager) reaper() {
	defer close(m.reapDone)
	t := time.NewTicker(m.cfg.Limits.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stopReap:
			return
		case now := <-t.C:
			m.reapOnce(now)
		}
	}
}

func (m *Manager) reapOnce(now time.Time) {
	var victims []*Shell
	var reasons []string
	m.mu.Lock()
	for _, s := range m.shells {
		if r := s.expired(now); r != "" {
			victims = append(victims, s)
			reasons = append(reasons, r)
		}
	}
	for k, e := range m.enums {
		if now.After(e.expires) {
			delete(m.enums, k)
		}
	}
	m.mu.Unlock()
	for i, s := range victims {
		m.log.Info("reaping shell", zap.String(obs.FShellID, s.id), zap.String(obs.FUser, s.user), zap.String(obs.FReason, reasons[i]))
		m.cfg.Audit.Event(obs.EvShellReaped, zap.String(obs.FShellID, s.id), zap.String(obs.FUser, s.user), zap.String(obs.FReason, reasons[i]))
		m.removeShell(s)
	}
}

// removeShell unregisters the shell and kills its processes.
func (m *Manager) removeShell(s *Shell) {
	m.mu.Lock()
	key := strings.ToUpper(s.id)
	if m.shells[key] == s {
		delete(m.shells, key)
		m.perUser[s.owner]--
		if m.perUser[s.owner] <= 0 {
			delete(m.perUser, s.owner)
		}
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.Shells.Dec()
		}
	}
	m.mu.Unlock()
	s.close()
}

func shortAction(a string) string {
	if i := strings.LastIndexByte(a, '/'); i >= 0 {
		return a[i+1:]
	}
	return a
}
