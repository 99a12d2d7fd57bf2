package session

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/beevik/etree"
	"go.uber.org/zap"

	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/server/obs"
	"github.com/winrmd/winrmd/server/wsman"
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
	worker      isolation.Worker

	mu           sync.Mutex
	lastActivity time.Time
	receiving    int // pending Receives (keep-alive)
	commands     map[string]*Command
	order        []string // command ids in creation order
	closed       bool
	done         chan struct{} // closed when the shell is closed
	workerErr    error
}

const maxRetainedCommands = 256

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
	h := &req.Env.Header
	if !isCmdShell(h.ResourceURI) {
		f := wsman.DestinationUnreachable(h.ResourceURI)
		if strings.HasPrefix(strings.ToLower(h.ResourceURI), strings.ToLower(wsman.PowerShellPrefix)) {
			f.Message = "PowerShell remoting (PSRP) is not served by this host yet; use the cmd shell resource " + wsman.ResourceCmdShell + "."
		}
		return nil, f
	}
	if !m.cfg.Winrs.AllowRemoteShellAccess {
		return nil, wsman.RemoteShellsNotAllowed()
	}
	body := req.Env.Body
	if !isElem(body, wsman.NsShell, "Shell") {
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
		idleTimeout:  time.Duration(m.cfg.Winrs.IdleTimeoutMS) * time.Millisecond,
		maxRunTime:   time.Duration(m.cfg.Winrs.MaxShellRunTimeMS) * time.Millisecond,
		inStreams:    "stdin",
		outStreams:   "stdout stderr",
		commands:     map[string]*Command{},
		done:         make(chan struct{}),
	}
	if id := wsman.Attr(body, "ShellId"); id != "" {
		if !validGUID(id) {
			return nil, wsman.InvalidParameter("The ShellId is not a GUID.")
		}
		sh.id = strings.ToUpper(id)
	}
	if e := wsman.Child(body, wsman.NsShell, "InputStreams"); e != nil {
		if s := strings.Join(strings.Fields(e.Text()), " "); s != "" {
			sh.inStreams = s
		}
	}
	if e := wsman.Child(body, wsman.NsShell, "OutputStreams"); e != nil {
		if s := strings.Join(strings.Fields(e.Text()), " "); s != "" {
			sh.outStreams = s
		}
	}
	for _, s := range strings.Fields(sh.inStreams) {
		if s != "stdin" {
			return nil, wsman.InvalidParameter("Unsupported input stream " + strconv.Quote(s) + "; a cmd shell has stdin.")
		}
	}
	for _, s := range strings.Fields(sh.outStreams) {
		if s != "stdout" && s != "stderr" {
			return nil, wsman.InvalidParameter("Unsupported output stream " + strconv.Quote(s) + "; a cmd shell has stdout and stderr.")
		}
	}
	if e := wsman.Child(body, wsman.NsShell, "IdleTimeOut"); e != nil {
		d, err := parseIdle(e.Text())
		if err != nil {
			return nil, wsman.InvalidParameter("IdleTimeOut: " + err.Error())
		}
		if d > 0 && d < sh.idleTimeout {
			sh.idleTimeout = d
		}
	}
	dir := ""
	if e := wsman.Child(body, wsman.NsShell, "WorkingDirectory"); e != nil {
		dir = strings.TrimSpace(e.Text())
		if len(dir) > 4096 || strings.ContainsRune(dir, 0) {
			return nil, wsman.InvalidParameter("WorkingDirectory is not a valid path.")
		}
	}
	env := map[string]string{}
	if e := wsman.Child(body, wsman.NsShell, "Environment"); e != nil {
		vars := wsman.Children(e, wsman.NsShell, "Variable")
		if len(vars) > 1024 {
			return nil, wsman.InvalidParameter("Too many environment variables.")
		}
		for _, v := range vars {
			name := wsman.Attr(v, "Name")
			if name == "" || strings.ContainsAny(name, "=\x00") || len(name) > 1024 || strings.ContainsRune(v.Text(), 0) {
				return nil, wsman.InvalidParameter("Invalid environment variable name " + strconv.Quote(name) + ".")
			}
			env[name] = v.Text()
		}
	}
	if o, ok := h.Option("WINRS_CODEPAGE"); ok {
		sh.codepage = o.Value
	}
	noProfile, _ := h.BoolOption("WINRS_NOPROFILE")

	// Quotas, then register before spawning so concurrent Creates count.
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return nil, wsman.OperationAborted("The service is shutting down.")
	}
	if _, dup := m.shells[sh.id]; dup {
		m.mu.Unlock()
		return nil, wsman.InvalidParameter("A shell with this ShellId already exists.")
	}
	if m.perUser[sh.owner] >= m.cfg.Winrs.MaxShellsPerUser {
		m.mu.Unlock()
		m.quotaEvent(req, "max_shells_per_user")
		return nil, wsman.QuotaLimit(wsman.CodeQuotaMaxShells, fmt.Sprintf(
			"The WS-Management service cannot process the request. This user is allowed a maximum number of %d shells, which has been exceeded. Close existing shells or raise the quota for this user.",
			m.cfg.Winrs.MaxShellsPerUser))
	}
	if m.perUser[sh.owner] == 0 && len(m.perUser) >= m.cfg.Winrs.MaxConcurrentUsers {
		m.mu.Unlock()
		m.quotaEvent(req, "max_concurrent_users")
		return nil, wsman.QuotaLimit(wsman.CodeQuotaMaxShellUsers, fmt.Sprintf(
			"The WS-Management service cannot process the request. The maximum number of %d concurrent shell users has been exceeded. Retry after other users close their shells.",
			m.cfg.Winrs.MaxConcurrentUsers))
	}
	m.shells[sh.id] = sh
	m.perUser[sh.owner]++
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.Shells.Inc()
	}
	m.mu.Unlock()

	lim := isolation.Limits{}
	if v := m.cfg.Winrs.MaxMemoryPerShellMB; v < configs.Unlimited {
		lim.MemoryMB = v
	}
	if v := m.cfg.Winrs.MaxProcessesPerShell; v < configs.Unlimited {
		lim.MaxProcesses = v
	}
	w, err := m.cfg.Spawner.Spawn(ctx, isolation.SpawnRequest{
		Account: acct, ShellID: sh.id, Env: env, Dir: dir, NoProfile: noProfile, Limits: lim,
		Credentials: req.Identity.Principal().Delegated,
	})
	if err != nil {
		m.removeShell(sh)
		m.log.Warn("worker spawn failed", zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.Error(err))
		m.cfg.Audit.Event(obs.EvWorkerFailed, zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.String(obs.FReason, err.Error()))
		if dir != "" {
			return nil, wsman.InternalError(2147942667, "Shell cmd plugin", "The shell could not be started in the working directory "+strconv.Quote(dir)+": "+err.Error())
		}
		return nil, wsman.InternalError(2147942402, "Shell cmd plugin", "The shell could not be started: "+err.Error())
	}
	sh.mu.Lock()
	sh.worker = w
	closedEarly := sh.closed
	sh.mu.Unlock()
	if closedEarly { // shut down while spawning
		w.Close()
		return nil, wsman.OperationAborted("The service is shutting down.")
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.Workers.Inc()
	}
	go sh.pump()
	m.cfg.Audit.Event(obs.EvShellCreate, zap.String(obs.FUser, sh.user), zap.String(obs.FRemoteAddr, req.RemoteAddr),
		zap.String(obs.FShellID, sh.id), zap.String(obs.FScheme, string(req.Identity.Scheme())), zap.Int("worker_pid", w.Pid()))

	r := wsman.NewResponse(wsman.ActionCreate+"Response", h.MessageID)
	b := r.Body()
	rc := b.CreateElement("x:ResourceCreated")
	addText(rc, "a:Address", req.ListenerURL)
	rp := rc.CreateElement("a:ReferenceParameters")
	addText(rp, "w:ResourceURI", sh.resourceURI)
	sel := rp.CreateElement("w:SelectorSet").CreateElement("w:Selector")
	sel.CreateAttr("Name", "ShellId")
	sel.SetText(sh.id)
	sh.describe(b, false)
	return r.Bytes(), nil
}

func (m *Manager) quotaEvent(req *Request, which string) {
	m.cfg.Audit.Event(obs.EvQuotaExceeded, zap.String(obs.FUser, req.Identity.User()),
		zap.String(obs.FRemoteAddr, req.RemoteAddr), zap.String(obs.FReason, which))
}

// parseIdle accepts an xs:duration or a bare number of seconds (pywinrm).
func parseIdle(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 || n > 1e9 {
			return 0, errors.New("out of range")
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := wsman.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, errors.New("negative")
	}
	return d, nil
}

// describe appends the rsp:Shell element (CreateResponse, Get, Enumerate).
func (sh *Shell) describe(parent *etree.Element, full bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := time.Now()
	e := parent.CreateElement("rsp:Shell")
	addText(e, "rsp:ShellId", sh.id)
	addText(e, "rsp:ResourceUri", sh.resourceURI)
	addText(e, "rsp:Owner", sh.user)
	addText(e, "rsp:ClientIP", sh.remoteAddr)
	if sh.worker != nil {
		addText(e, "rsp:ProcessId", strconv.Itoa(sh.worker.Pid()))
	}
	addText(e, "rsp:IdleTimeOut", wsman.FormatDuration(sh.idleTimeout))
	addText(e, "rsp:InputStreams", sh.inStreams)
	addText(e, "rsp:OutputStreams", sh.outStreams)
	addText(e, "rsp:ShellRunTime", dayDuration(now.Sub(sh.created)))
	addText(e, "rsp:ShellInactivity", dayDuration(now.Sub(sh.lastActivity)))
	if full {
		addText(e, "rsp:State", "Connected")
		n := 0
		for _, c := range sh.commands {
			if !c.isDone() {
				n++
			}
		}
		addText(e, "rsp:ChildProcesses", strconv.Itoa(n))
	}
}

func dayDuration(d time.Duration) string {
	s := int64(d / time.Second)
	return fmt.Sprintf("P%dDT%dH%dM%dS", s/86400, s%86400/3600, s%3600/60, s%60)
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
	if sh.closed || sh.worker == nil {
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

// pump routes worker events to commands until the worker is gone.
func (sh *Shell) pump() {
	w := sh.worker
	for ev := range w.Events() {
		sh.mu.Lock()
		c := sh.commands[ev.CommandID]
		sh.mu.Unlock()
		if c == nil {
			// Output of a released command: give the window back so the
			// worker is never stuck on it.
			if ev.Kind == isolation.EventOutput {
				_ = w.Consumed(ev.CommandID, len(ev.Data))
			}
			continue
		}
		switch ev.Kind {
		case isolation.EventOutput:
			c.addOutput(ev.Stream, ev.Data)
			if sh.m.cfg.Metrics != nil {
				name := "stdout"
				if ev.Stream == isolation.Stderr {
					name = "stderr"
				}
				sh.m.cfg.Metrics.StreamBytes.WithLabelValues(name).Add(float64(len(ev.Data)))
			}
		case isolation.EventExit:
			c.exit(ev.ExitCode)
			sh.m.cfg.Audit.Event(obs.EvCommandExit, zap.String(obs.FUser, sh.user), zap.String(obs.FRemoteAddr, sh.remoteAddr),
				zap.String(obs.FShellID, sh.id), zap.String(obs.FCommandID, c.id), zap.Int32("exit_code", ev.ExitCode))
		}
	}
	err := w.Err()
	sh.mu.Lock()
	closed := sh.closed
	if err == nil {
		err = isolation.ErrWorkerGone
	}
	sh.workerErr = err
	cmds := make([]*Command, 0, len(sh.commands))
	for _, c := range sh.commands {
		cmds = append(cmds, c)
	}
	sh.mu.Unlock()
	for _, c := range cmds {
		c.fail(err)
	}
	if !closed {
		sh.m.log.Warn("worker ended unexpectedly", zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.Error(err))
		sh.m.cfg.Audit.Event(obs.EvWorkerFailed, zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.String(obs.FReason, err.Error()))
	}
}

// close kills the worker (and every process of the shell) once.
func (sh *Shell) close() {
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		return
	}
	sh.closed = true
	w := sh.worker
	close(sh.done)
	sh.mu.Unlock()
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
	r := wsman.NewResponse(wsman.ActionDelete+"Response", req.Env.Header.MessageID)
	return r.Bytes(), nil
}
