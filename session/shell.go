package session

import (
	"context"
	"fmt"
	"strconv"
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

// Shell is one WinRS shell and its worker process.
type Shell struct {
	m           *Manager
	id          string
	owner       string // identity key
	user        string
	remoteAddr  string
	resourceURI string
	created     time.Time
	idleTimeout time.Duration
	maxRunTime  time.Duration
	inStreams   string
	outStreams  string
	codepage    string
	env         []wsman.EnvVar // as the Create gave them, echoed in its response
	dir         string
	worker      isolation.Worker
	ps          *psShell // a PowerShell (PSRP) shell; nil for cmd

	mu           sync.Mutex
	state        shellState
	lastActivity time.Time
	receiving    int // pending Receives (keep-alive)
	commands     map[string]*Command
	order        []string // command ids in creation order
	// running counts the commands in commands still in cmdRunning, for
	// MaxProcessesPerShell without a pass over every retained command
	// (256 by default): incremented with sh.mu held as one is added,
	// decremented by Command.to as one leaves cmdRunning.
	running   atomic.Int32
	done      chan struct{} // closed when the shell is closed
	workerErr error         // why the worker ended, in state broken
}

// shellState is where a shell is in its life (see the package doc).
type shellState uint8

const (
	shellSpawning shellState = iota // registered, worker starting
	shellOpen                       // worker running
	shellBroken                     // worker ended on its own; commands failed
	shellClosed                     // deleted, reaped or shut down; final
)

func (s shellState) String() string {
	return [...]string{"spawning", "open", "broken", "closed"}[s]
}

// to moves the shell to next and reports whether that transition exists;
// an impossible one changes nothing. sh.mu held.
func (sh *Shell) to(next shellState) bool {
	ok := false
	switch sh.state {
	case shellSpawning:
		ok = next == shellOpen || next == shellClosed
	case shellOpen:
		ok = next == shellBroken || next == shellClosed
	case shellBroken:
		ok = next == shellClosed
	}
	if ok {
		sh.state = next
	}
	return ok
}

func validGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
				return false
			}
		}
	}
	return true
}

func isCmdShell(uri string) bool { return strings.EqualFold(uri, wsman.ResourceCmdShell) }

func (m *Manager) create(ctx context.Context, req *Request) ([]byte, error) {
	h := &req.Msg.Header
	if isPowerShellURI(h.ResourceURI) {
		return m.createPS(ctx, req)
	}
	if !isCmdShell(h.ResourceURI) {
		return nil, wsman.DestinationUnreachable(h.ResourceURI)
	}
	if !m.cfg.Winrs.AllowRemoteShellAccess {
		return nil, wsman.RemoteShellsNotAllowed()
	}
	body, ok := req.Msg.Body.(*wsman.Shell)
	if !ok {
		return nil, wsman.SchemaValidation("The Create request must carry an rsp:Shell element.")
	}
	acct := req.Identity.Account()
	sh := &Shell{
		m:            m,
		id:           wsman.NewGUID(),
		owner:        req.Identity.Key(),
		user:         acct.Username,
		remoteAddr:   req.RemoteAddr,
		resourceURI:  wsman.ResourceCmdShell,
		created:      time.Now(),
		lastActivity: time.Now(),
		idleTimeout:  m.cfg.Limits.IdleTimeout,
		maxRunTime:   m.cfg.Limits.MaxShellRunTime,
		inStreams:    "stdin",
		outStreams:   "stdout stderr",
		commands:     map[string]*Command{},
		done:         make(chan struct{}),
	}
	if id := body.ShellID; id != "" {
		if !validGUID(id) {
			return nil, wsman.ShellFault(wsman.ShellBadParameter, "the ShellId is not a GUID")
		}
		sh.id = strings.ToUpper(id)
	}
	if body.InputStreams != "" {
		sh.inStreams = body.InputStreams
	}
	if body.OutputStreams != "" {
		sh.outStreams = body.OutputStreams
	}
	for _, s := range strings.Fields(sh.inStreams) {
		if s != "stdin" {
			return nil, wsman.ShellFault(wsman.ShellBadParameter, "unsupported input stream "+strconv.Quote(s)+"; a cmd shell has stdin")
		}
	}
	for _, s := range strings.Fields(sh.outStreams) {
		if s != "stdout" && s != "stderr" {
			return nil, wsman.ShellFault(wsman.ShellBadParameter, "unsupported output stream "+strconv.Quote(s)+"; a cmd shell has stdout and stderr")
		}
	}
	if d := body.IdleTimeout; d > 0 && d < sh.idleTimeout {
		sh.idleTimeout = d
	}
	dir := body.WorkingDirectory
	if len(dir) > 4096 || strings.ContainsRune(dir, 0) {
		return nil, wsman.ShellFault(wsman.ShellBadDirectory, "WorkingDirectory is over 4096 bytes or contains NUL")
	}
	env := map[string]string{}
	for _, v := range body.Environment {
		if v.Name == "" || strings.ContainsAny(v.Name, "=\x00") || len(v.Name) > 1024 || strings.ContainsRune(v.Value, 0) {
			return nil, wsman.ShellFault(wsman.ShellBadParameter, "invalid environment variable name "+strconv.Quote(v.Name))
		}
		env[v.Name] = v.Value
	}
	sh.env, sh.dir = body.Environment, dir
	if o, ok := h.Option("WINRS_CODEPAGE"); ok {
		sh.codepage = o.Value
	}
	noProfile, _ := h.BoolOption("WINRS_NOPROFILE")

	if err := m.register(req, sh); err != nil {
		return nil, err
	}
	lim := m.limits()
	w, err := m.cfg.Spawner.Spawn(ctx, isolation.SpawnRequest{
		Account: isolation.Account(acct), ShellID: sh.id, Env: env, Dir: dir, NoProfile: noProfile, Limits: lim,
		Credentials: delegated(req.Identity), AllowNewPrivileges: m.cfg.Winrs.AllowNewPrivileges,
	})
	if err != nil {
		m.removeShell(sh)
		m.log.Warn("worker spawn failed", zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.Error(err))
		m.cfg.Audit.Event(obs.EvWorkerFailed, zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.String(obs.FReason, err.Error()))
		if dir != "" {
			return nil, wsman.ShellFault(wsman.ShellBadDirectory, "the shell could not be started in "+strconv.Quote(dir)+": "+err.Error())
		}
		return nil, wsman.ShellFault(wsman.ShellFileNotFound, "the shell could not be started: "+err.Error())
	}
	sh.mu.Lock()
	opened := sh.to(shellOpen)
	if opened {
		sh.worker = w
	}
	sh.mu.Unlock()
	if !opened { // shut down while spawning
		w.Close()
		return nil, wsman.OperationAborted("The service is shutting down.")
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.Workers.Inc()
	}
	w.SetEventSink(sh.event) // before any command starts
	go sh.pump()
	m.cfg.Audit.Event(obs.EvShellCreate, zap.String(obs.FUser, sh.user), zap.String(obs.FRemoteAddr, req.RemoteAddr),
		zap.String(obs.FShellID, sh.id), zap.String(obs.FScheme, string(req.Identity.Scheme())), zap.Int("worker_pid", w.Pid()))

	return wsman.EncodeCreate(h.MessageID, req.ListenerURL, sh.info(false)), nil
}

// register checks the quotas and adds sh to the shells, before its worker
// is spawned so concurrent Creates count.
func (m *Manager) register(req *Request, sh *Shell) error {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return wsman.OperationAborted("The service is shutting down.")
	}
	if _, dup := m.shells[sh.id]; dup {
		m.mu.Unlock()
		return wsman.InvalidParameter("A shell with this ShellId already exists.")
	}
	if m.perUser[sh.owner] >= m.cfg.Limits.MaxShellsPerUser {
		m.mu.Unlock()
		m.quotaEvent(req, "max_shells_per_user")
		return wsman.QuotaLimit(wsman.CodeQuotaMaxShells, fmt.Sprintf(
			"The WS-Management service cannot process the request. This user is allowed a maximum number of %d shells, which has been exceeded. Close existing shells or raise the quota for this user.",
			m.cfg.Limits.MaxShellsPerUser))
	}
	if m.perUser[sh.owner] == 0 && len(m.perUser) >= m.cfg.Limits.MaxConcurrentUsers {
		m.mu.Unlock()
		m.quotaEvent(req, "max_concurrent_users")
		return wsman.QuotaLimit(wsman.CodeQuotaMaxShellUsers, fmt.Sprintf(
			"The WS-Management service cannot process the request. The maximum number of %d concurrent shell users has been exceeded. Retry after other users close their shells.",
			m.cfg.Limits.MaxConcurrentUsers))
	}
	m.shells[sh.id] = sh
	m.perUser[sh.owner]++
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.Shells.Inc()
	}
	m.mu.Unlock()
	return nil
}

// delegated is the caller's delegated Kerberos credential cache, as
// isolation takes it (nil: none): isolation knows nothing of authn.
func delegated(id *authn.Identity) isolation.CredentialCache {
	if d := id.Principal().Delegated; d != nil {
		return isolation.CredentialCache(*d)
	}
	return nil
}

// limits are the per-shell resource limits of the configuration.
func (m *Manager) limits() isolation.Limits {
	lim := isolation.Limits{}
	if v := m.cfg.Limits.MaxMemoryPerShellMB; v < configs.Unlimited {
		lim.MemoryMB = v
	}
	if v := m.cfg.Limits.MaxProcessesPerShell; v < configs.Unlimited {
		lim.MaxProcesses = v
	}
	return lim
}

func (m *Manager) quotaEvent(req *Request, which string) {
	m.cfg.Audit.Event(obs.EvQuotaExceeded, zap.String(obs.FUser, req.Identity.User()),
		zap.String(obs.FRemoteAddr, req.RemoteAddr), zap.String(obs.FReason, which))
}

// info describes the shell for a CreateResponse (full false), a Get or an
// enumeration item (full true).
func (sh *Shell) info(full bool) *wsman.ShellInfo {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := time.Now()
	i := &wsman.ShellInfo{
		ShellID:       sh.id,
		ResourceURI:   sh.resourceURI,
		Owner:         sh.user,
		ClientIP:      sh.remoteAddr,
		IdleTimeout:   sh.idleTimeout,
		InputStreams:  sh.inStreams,
		OutputStreams: sh.outStreams,
		RunTime:       now.Sub(sh.created),
		Inactivity:    now.Sub(sh.lastActivity),
		Full:          full,
	}
	if !full {
		i.Environment, i.WorkingDirectory = sh.env, sh.dir
	}
	if sh.worker != nil {
		i.ProcessID = sh.worker.Pid()
	}
	if sh.ps != nil && sh.ps.xpress {
		i.CompressionMode = wsman.CompressionModeXpress
	}
	if full {
		for _, c := range sh.commands {
			if !c.isDone() {
				i.ChildProcesses++
			}
		}
	}
	return i
}

// touch records activity.
func (sh *Shell) touch() {
	sh.mu.Lock()
	sh.lastActivity = time.Now()
	sh.mu.Unlock()
}

// expired says why the shell must be reaped, or "".
func (sh *Shell) expired(now time.Time) string {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.state != shellOpen && sh.state != shellBroken {
		return ""
	}
	if now.Sub(sh.created) > sh.maxRunTime {
		return "max_shell_run_time"
	}
	if sh.receiving == 0 && now.Sub(sh.lastActivity) > sh.idleTimeout {
		return "idle_timeout"
	}
	return ""
}

// event is the shell's EventSink: a command's output and exit, from the
// worker's reader straight to the command.
func (sh *Shell) event(ev isolation.Event) {
	sh.mu.Lock()
	c, w := sh.commands[ev.CommandID], sh.worker
	sh.mu.Unlock()
	switch {
	case c == nil && ev.Kind == isolation.EventOutput:
		// Output of a released command: give the window back so the
		// worker is never stuck on it.
		_ = w.Consumed(ev.CommandID, len(ev.Data))
	case c == nil:
	case ev.Kind == isolation.EventOutput:
		c.addOutput(ev.Stream, ev.Data)
		if sh.m.cfg.Metrics != nil {
			name := "stdout"
			if ev.Stream == isolation.Stderr {
				name = "stderr"
			}
			sh.m.cfg.Metrics.StreamBytes.WithLabelValues(name).Add(float64(len(ev.Data)))
		}
	case ev.Kind == isolation.EventExit:
		c.exit(ev.ExitCode)
		sh.m.cfg.Audit.Event(obs.EvCommandExit, zap.String(obs.FUser, sh.user), zap.String(obs.FRemoteAddr, sh.remoteAddr),
			zap.String(obs.FShellID, sh.id), zap.String(obs.FCommandID, c.id), zap.Int32("exit_code", ev.ExitCode))
	}
}

// pump waits until the worker is gone (its events go to sh.event), then
// fails what is left.
func (sh *Shell) pump() {
	w := sh.worker
	for ev := range w.Events() {
		sh.event(ev) // only without a sink
	}
	err := w.Err()
	sh.mu.Lock()
	if err == nil {
		err = isolation.ErrWorkerGone
	}
	broken := sh.to(shellBroken) // false when the shell was closed first
	if broken {
		sh.workerErr = err
	}
	cmds := make([]*Command, 0, len(sh.commands))
	for _, c := range sh.commands {
		cmds = append(cmds, c)
	}
	sh.mu.Unlock()
	for _, c := range cmds {
		c.fail(err)
	}
	if broken {
		sh.m.log.Warn("worker ended unexpectedly", zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.Error(err))
		sh.m.cfg.Audit.Event(obs.EvWorkerFailed, zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.String(obs.FReason, err.Error()))
	}
}

// close kills the worker (and every process of the shell) once.
func (sh *Shell) close() {
	sh.mu.Lock()
	if !sh.to(shellClosed) {
		sh.mu.Unlock()
		return
	}
	w := sh.worker
	close(sh.done)
	sh.mu.Unlock()
	if sh.ps != nil {
		sh.closePS() // closes the worker too
		if w != nil && sh.m.cfg.Metrics != nil {
			sh.m.cfg.Metrics.Workers.Dec()
		}
		w = nil
	}
	if w != nil {
		if err := w.Close(); err != nil {
			sh.m.log.Warn("closing worker", zap.String(obs.FShellID, sh.id), zap.Error(err))
		}
		if sh.m.cfg.Metrics != nil {
			sh.m.cfg.Metrics.Workers.Dec()
		}
	}
	sh.mu.Lock()
	n := 0
	for _, c := range sh.commands {
		if !c.released {
			n++
		}
		c.released = true
	}
	sh.mu.Unlock()
	if sh.m.cfg.Metrics != nil {
		sh.m.cfg.Metrics.Commands.Sub(float64(n))
	}
}

func (m *Manager) delete(ctx context.Context, req *Request) ([]byte, error) {
	sh, err := m.lookup(req)
	if err != nil {
		return nil, err
	}
	m.removeShell(sh)
	m.cfg.Audit.Event(obs.EvShellDelete, zap.String(obs.FUser, sh.user), zap.String(obs.FRemoteAddr, req.RemoteAddr),
		zap.String(obs.FShellID, sh.id))
	return wsman.EncodeEmpty(wsman.ActionDelete, req.Msg.Header.MessageID), nil
}
