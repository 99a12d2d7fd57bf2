package session

// The PowerShell (PSRP) shell: resource URI
// http://schemas.microsoft.com/powershell/<endpoint>. Its worker runs
// PowerShell's out-of-process server as the user (isolation.PwshProcess) and
// a bridge (psrp_bridge.go) maps the WinRS operations onto that transport
// (MS-PSRP 3.1.4 over MS-WSMV):
//
//	Create (creationXml)        -> spawn, Data(pool)            -> CreateResponse
//	Send stdin|pr [CommandId]   -> Data(pool|P) Default|PromptResponse
//	Command CommandId=P, Args   -> Command(P), Data(P)          -> CommandResponse(P)
//	Receive [CommandId]         <- queued fragments (whole), Done with the
//	                               fragment that completes a terminal
//	                               PIPELINE_STATE (ExitCode 0)
//	Signal ctrl_c|crtl_c on P   -> Signal(P)
//	Signal terminate on P       -> Close(P)
//	Delete / idle timeout       -> Close(pool), stdin closed, processes reaped
//	Disconnect / Reconnect      -> delivery paused / resumed; output buffered
//	                               within the bridge's bound
//	Connect CommandId=P         -> (same client, after Reconnect) answered
//	Connect connectXml          -> refused: the out-of-process transport has
//	                               no way to attach a second client
//
// A Create with rsp:CompressionType xpress makes every Send and Receive
// stream payload xpress-compressed (wsman/xpress.go); the bridge and pwsh
// always see raw fragments.
//
// An endpoint's run_as_user makes the pool's processes run as that service
// account; authorization (the service policy, then allowed_groups) is the
// caller's, before anything starts, and the pool stays the caller's. Its
// startup_script reaches pwsh as the server mode's initial command
// (configs.PowerShell.Argv). A pool may start on a warm spare, an idle pwsh
// started for the same user and endpoint after their previous pool
// (psrp_spare.go).
//
// The daemon only reads PSRP headers and states; pwsh does everything else,
// the session-key exchange included.

import (
	"context"
	"encoding/base64"
	"errors"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/session/obs"
	"github.com/winrmd/winrmd/session/psrp"
	"github.com/winrmd/winrmd/session/wsman"
)

// psProvider names the plugin in faults, as Windows' PowerShell plugin does.
const psProvider = "microsoft.powershell"

// psShell is the PSRP part of a Shell.
type psShell struct {
	endpoint string
	runAs    string // the endpoint's run_as_user account, "" for the caller
	// xpress: the Create asked for xpress compression, so every Send
	// payload arrives compressed and every Receive payload leaves
	// compressed (wsman/xpress.go). pwsh always sees raw fragments.
	xpress bool
	proc   *isolation.PwshProcess
	br     *bridge

	mu           sync.Mutex
	disconnected bool
	recv         map[psrp.GUID]chan struct{} // one Receive per pool/pipeline at a time
	started      map[psrp.GUID]time.Time     // live pipelines, for enumeration
}

func isPowerShellURI(uri string) bool {
	return len(uri) > len(wsman.PowerShellPrefix) && strings.EqualFold(uri[:len(wsman.PowerShellPrefix)], wsman.PowerShellPrefix)
}

// endpointFor resolves the endpoint of a PowerShell resource URI; nil
// endpoint with ok is Microsoft.PowerShell.
func (m *Manager) endpointFor(uri string) (ep *configs.Endpoint, name string, ok bool) {
	name = uri[len(wsman.PowerShellPrefix):]
	if strings.EqualFold(name, configs.DefaultEndpoint) {
		return nil, configs.DefaultEndpoint, true
	}
	ep, ok = m.cfg.PowerShell.Endpoint(name)
	if ok {
		name = ep.Name
	}
	return ep, name, ok
}

// memberOf reports whether the account belongs to any of the groups (names
// looked up in the account database now, as the authorizer does).
func memberOf(acct authn.Account, groups []string) bool {
	for _, g := range groups {
		grp, err := user.LookupGroup(g)
		if err != nil {
			continue
		}
		gid, err := strconv.ParseUint(grp.Gid, 10, 32)
		if err != nil {
			continue
		}
		if acct.GID == uint32(gid) || slices.Contains(acct.Groups, uint32(gid)) {
			return true
		}
	}
	return false
}

func (m *Manager) createPS(ctx context.Context, req *Request) ([]byte, error) {
	h := &req.Msg.Header
	ep, epName, ok := m.endpointFor(h.ResourceURI)
	if !ok {
		return nil, wsman.DestinationUnreachable(h.ResourceURI)
	}
	if !m.cfg.Winrs.AllowRemoteShellAccess {
		return nil, wsman.RemoteShellsNotAllowed()
	}
	acct := req.Identity.Account()
	// The endpoint's own admission, before anything is spawned.
	if ep != nil && len(ep.AllowedGroups) > 0 && !memberOf(acct, ep.AllowedGroups) {
		m.cfg.Audit.Event(obs.EvAccessDenied, zap.String(obs.FUser, req.Identity.User()), zap.String(obs.FRemoteAddr, req.RemoteAddr),
			zap.String("endpoint", epName), zap.String(obs.FReason, "not in the endpoint's allowed_groups"), zap.String(obs.FAction, "Create"))
		return nil, wsman.AccessDenied("Access is denied. The session configuration " + epName + " does not admit this user.")
	}
	body, ok := req.Msg.Body.(*wsman.Shell)
	if !ok {
		return nil, wsman.SchemaValidation("The Create request must carry an rsp:Shell element.")
	}
	if !validGUID(body.ShellID) {
		return nil, wsman.InvalidParameter("A PowerShell shell needs the runspace pool id as its ShellId.")
	}
	creation, err := base64.StdEncoding.DecodeString(body.CreationXML)
	if err != nil || len(creation) == 0 {
		return nil, wsman.InvalidParameter("The creationXml is missing or not base64.")
	}
	if _, err := psrp.SplitFragments(creation, 0); err != nil {
		return nil, wsman.InvalidParameter("The creationXml does not hold PSRP fragments: " + err.Error())
	}
	// Stream compression: the Windows PowerShell client always asks for
	// xpress; nothing else is defined.
	xpress := false
	switch ct := h.CompressionType; {
	case ct == "":
	case strings.EqualFold(ct, wsman.CompressionXpress):
		xpress = true
	default:
		return nil, wsman.InvalidParameter("Unsupported CompressionType " + strconv.Quote(ct) + "; only xpress is known.")
	}
	sh := &Shell{
		m:            m,
		id:           strings.ToUpper(body.ShellID),
		owner:        req.Identity.Key(),
		user:         acct.Username,
		remoteAddr:   req.RemoteAddr,
		resourceURI:  wsman.PowerShellPrefix + epName,
		created:      time.Now(),
		lastActivity: time.Now(),
		idleTimeout:  m.cfg.Limits.IdleTimeout,
		maxRunTime:   m.cfg.Limits.MaxShellRunTime,
		inStreams:    "stdin pr",
		outStreams:   "stdout",
		commands:     map[string]*Command{},
		done:         make(chan struct{}),
		ps:           &psShell{endpoint: epName, xpress: xpress, recv: map[psrp.GUID]chan struct{}{}, started: map[psrp.GUID]time.Time{}},
	}
	if d := body.IdleTimeout; d > 0 && d < sh.idleTimeout {
		sh.idleTimeout = d
	}
	dir := body.WorkingDirectory
	if len(dir) > 4096 || strings.ContainsRune(dir, 0) {
		return nil, wsman.InvalidParameter("WorkingDirectory is not a valid path.")
	}
	env := map[string]string{}
	for _, v := range body.Environment {
		if v.Name == "" || strings.ContainsAny(v.Name, "=\x00") || len(v.Name) > 1024 || strings.ContainsRune(v.Value, 0) {
			return nil, wsman.InvalidParameter("Invalid environment variable name " + strconv.Quote(v.Name) + ".")
		}
		env[v.Name] = v.Value
	}
	// The account the pool's processes run as: the caller, or the
	// endpoint's fixed service account (the caller was authorized above;
	// the pool stays the caller's).
	runAs := isolation.Account(acct)
	creds := delegated(req.Identity)
	if ep != nil && ep.RunAsUser != "" {
		if m.cfg.ServiceAccount == nil {
			return nil, wsman.InternalError(2147942402, psProvider, "The session configuration "+epName+" runs as a service account, which this service cannot resolve.")
		}
		svc, err := m.cfg.ServiceAccount(ep.RunAsUser)
		if err != nil {
			m.log.Warn("endpoint's run_as_user unusable", zap.String("endpoint", epName), zap.String("run_as", ep.RunAsUser), zap.Error(err))
			m.cfg.Audit.Event(obs.EvWorkerFailed, zap.String(obs.FUser, req.Identity.User()), zap.String("endpoint", epName),
				zap.String("run_as", ep.RunAsUser), zap.String(obs.FReason, err.Error()))
			return nil, wsman.InternalError(2147942402, psProvider, "The session configuration "+epName+" cannot start: its run_as_user is unusable.")
		}
		runAs = isolation.Account(svc)
		sh.ps.runAs = svc.Username
		// The caller's forwarded Kerberos credentials are theirs alone.
		creds = nil
	}
	if err := m.register(req, sh); err != nil {
		return nil, err
	}
	fail := func(err error) ([]byte, error) {
		m.removeShell(sh)
		m.log.Warn("PowerShell shell failed to start", zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.Error(err))
		m.cfg.Audit.Event(obs.EvWorkerFailed, zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.String(obs.FReason, err.Error()))
		return nil, wsman.InternalError(2147942402, psProvider, "PowerShell could not be started: "+err.Error())
	}
	argv := m.cfg.PowerShell.Argv(ep)
	want := spareRequest{key: spareKey(sh.owner, epName), acct: runAs, argv: argv,
		newPriv: m.cfg.PowerShell.NewPrivileges(ep, m.cfg.Winrs.AllowNewPrivileges)}
	var (
		w    isolation.Worker
		proc *isolation.PwshProcess
		warm bool
	)
	// A warm spare only for a Create that asks nothing the spare was not
	// started with.
	if len(env) == 0 && dir == "" && len(creds) == 0 {
		if sp := m.spares.take(want); sp != nil {
			w, proc, warm = sp.w, sp.proc, true
			if m.cfg.Metrics != nil {
				m.cfg.Metrics.PSRPSparesUsed.Inc()
			}
		}
	}
	if !warm {
		var err error
		w, err = m.cfg.Spawner.Spawn(ctx, isolation.SpawnRequest{Account: runAs, ShellID: sh.id, Env: env, Dir: dir, Limits: m.limits(),
			Credentials: creds, AllowNewPrivileges: want.newPriv})
		if err != nil {
			return fail(err)
		}
		proc, err = isolation.StartPwsh(ctx, w, argv)
		if err != nil {
			w.Close()
			return fail(err)
		}
	}
	br := newBridge(proc, m.log.With(zap.String(obs.FShellID, sh.id)),
		bridgeLimits{MaxBuffered: m.cfg.Limits.PSRPMaxBuffered, AckTimeout: m.cfg.Limits.PSRPAckTimeout, Xpress: xpress})
	sh.mu.Lock()
	opened := sh.to(shellOpen)
	if opened {
		sh.worker = w
		sh.ps.proc, sh.ps.br = proc, br
	}
	sh.mu.Unlock()
	if !opened { // shut down while spawning
		_ = br.close(ctx)
		return nil, wsman.OperationAborted("The service is shutting down.")
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.Workers.Inc()
		m.cfg.Metrics.PSRPPools.Inc()
	}
	go sh.watchPS()
	if err := br.sendData(ctx, psrp.NilGUID, psrp.StreamDefault, creation); err != nil {
		m.removeShell(sh)
		return nil, psFault(err)
	}
	m.cfg.Audit.Event(obs.EvShellCreate, zap.String(obs.FUser, sh.user), zap.String(obs.FRemoteAddr, req.RemoteAddr),
		zap.String(obs.FShellID, sh.id), zap.String(obs.FScheme, string(req.Identity.Scheme())), zap.Int("worker_pid", w.Pid()),
		zap.String("endpoint", epName), sh.ps.runAsField(), zap.String("program", argv[0]), zap.Bool("warm_spare", warm))
	// This user's next pool here starts warm.
	m.spares.start(want)
	return wsman.EncodeCreate(h.MessageID, req.ListenerURL, sh.info(false)), nil
}

// watchPS ends the shell when its PowerShell went away on its own: the
// waiting operations got the fault from the bridge already; the worker and
// whatever pwsh left running (its whole cgroup) go now, not at the idle
// timeout.
func (sh *Shell) watchPS() {
	<-sh.ps.br.Dead()
	err := sh.ps.br.Err()
	sh.mu.Lock()
	broken := sh.to(shellBroken)
	if broken {
		sh.workerErr = err
	}
	sh.mu.Unlock()
	if broken && !errors.Is(err, errBridgeClosed) {
		sh.m.log.Warn("PowerShell ended unexpectedly", zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.Error(err))
		sh.m.cfg.Audit.Event(obs.EvWorkerFailed, zap.String(obs.FShellID, sh.id), zap.String(obs.FUser, sh.user), zap.String(obs.FReason, err.Error()))
		sh.m.removeShell(sh)
	}
}

// psFault turns a bridge error into the fault a client sees. A PowerShell
// that died is reported as Windows reports a host process that died: the
// operation aborted (995), which clients do not retry.
func psFault(err error) error {
	var f *wsman.Fault
	if errors.As(err, &f) {
		return f
	}
	switch {
	case errors.Is(err, errUnknownPipeline):
		return commandSelectorFault("")
	case errors.Is(err, errBridgeClosed):
		return wsman.OperationAborted("The runspace pool was closed.")
	case errors.Is(err, psrp.ErrShortFragment), errors.Is(err, psrp.ErrBlobTooLarge), errors.Is(err, psrp.ErrBadFlags):
		return wsman.InvalidParameter("The stream does not hold PSRP fragments: " + err.Error())
	}
	return wsman.InternalError(wsman.CodeOperationAborted, psProvider, "The PowerShell host process ended: "+err.Error())
}

// psHandle serves Command, Send, Receive, Signal, Disconnect, Reconnect and
// Connect on a PowerShell resource URI.
func (m *Manager) psHandle(ctx context.Context, req *Request) ([]byte, error) {
	sh, err := m.lookup(req)
	if err != nil {
		return nil, err
	}
	if sh.ps == nil {
		return nil, wsman.InvalidSelectors("The WS-Management service cannot process the request because the shell is not a PowerShell shell.")
	}
	sh.mu.Lock()
	ready := sh.ps.br != nil
	sh.mu.Unlock()
	if !ready {
		return nil, wsman.OperationAborted("The runspace pool is not open.")
	}
	sh.touch()
	h := &req.Msg.Header
	switch h.Action {
	case wsman.ActionCommand:
		return m.psCommand(ctx, req, sh)
	case wsman.ActionSend:
		return m.psSend(ctx, req, sh)
	case wsman.ActionReceive:
		return m.psReceive(ctx, req, sh)
	case wsman.ActionSignal:
		return m.psSignal(ctx, req, sh)
	case wsman.ActionDisconnect:
		if d, ok := req.Msg.Body.(*wsman.Disconnect); ok && d.IdleTimeout > 0 {
			sh.mu.Lock()
			if d.IdleTimeout < m.cfg.Limits.IdleTimeout {
				sh.idleTimeout = d.IdleTimeout
			}
			sh.mu.Unlock()
		}
		sh.ps.setDisconnected(true)
		return wsman.EncodeEmpty(wsman.ActionDisconnect, h.MessageID), nil
	case wsman.ActionReconnect:
		sh.ps.setDisconnected(false)
		return wsman.EncodeEmpty(wsman.ActionReconnect, h.MessageID), nil
	case wsman.ActionConnect:
		c, ok := req.Msg.Body.(*wsman.Connect)
		if !ok {
			return nil, wsman.SchemaValidation("The Connect request must carry an rsp:Connect element.")
		}
		if c.CommandID == "" {
			// A new client taking over the pool: pwsh's out-of-process
			// transport has no packet for it.
			return nil, wsman.ActionNotSupported(h.Action)
		}
		pid, err := psrp.ParseGUID(c.CommandID)
		if err != nil || !sh.ps.br.hasPipeline(pid) {
			return nil, commandSelectorFault(c.CommandID)
		}
		sh.ps.setDisconnected(false)
		return wsman.EncodeConnect(h.MessageID), nil
	}
	return nil, wsman.ActionNotSupported(h.Action)
}

// runAsField names the service account in audit records (user stays the
// caller who was authorized); nothing when the pool runs as the caller.
func (ps *psShell) runAsField() zap.Field {
	if ps.runAs == "" {
		return zap.Skip()
	}
	return zap.String("run_as", ps.runAs)
}

func (ps *psShell) setDisconnected(v bool) {
	ps.mu.Lock()
	ps.disconnected = v
	ps.mu.Unlock()
}

func (m *Manager) psCommand(ctx context.Context, req *Request, sh *Shell) ([]byte, error) {
	body, ok := req.Msg.Body.(*wsman.CommandLine)
	if !ok {
		return nil, wsman.SchemaValidation("The Command request must carry an rsp:CommandLine element.")
	}
	var first []byte
	for _, a := range body.Arguments {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a))
		if err != nil {
			return nil, wsman.InvalidParameter("The pipeline's Arguments are not base64.")
		}
		first = append(first, b...)
	}
	var pid psrp.GUID
	if body.CommandID != "" {
		g, err := psrp.ParseGUID(body.CommandID)
		if err != nil {
			return nil, wsman.InvalidParameter("The CommandId is not a GUID.")
		}
		pid = g
	} else {
		// No CommandId: the pipeline id is the PID of CREATE_PIPELINE.
		m, err := psrp.FirstMessageHeader(first, 0)
		if err != nil || m.PID.IsNil() {
			return nil, wsman.InvalidParameter("The Command carries no pipeline id.")
		}
		pid = m.PID
	}
	if err := sh.ps.br.command(ctx, pid, first); err != nil {
		return nil, psFault(err)
	}
	sh.ps.mu.Lock()
	sh.ps.started[pid] = time.Now()
	sh.ps.mu.Unlock()
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.Commands.Inc()
		m.cfg.Metrics.PSRPPipelines.Inc()
	}
	m.cfg.Audit.Event(obs.EvCommandStart, zap.String(obs.FUser, sh.user), zap.String(obs.FRemoteAddr, req.RemoteAddr),
		zap.String(obs.FShellID, sh.id), zap.String(obs.FCommandID, pid.Upper()), zap.String("endpoint", sh.ps.endpoint),
		sh.ps.runAsField(), zap.String("program", "PowerShell pipeline"))
	return wsman.EncodeCommand(req.Msg.Header.MessageID, pid.Upper()), nil
}

func (m *Manager) psSend(ctx context.Context, req *Request, sh *Shell) ([]byte, error) {
	body, ok := req.Msg.Body.(*wsman.Send)
	if !ok {
		return nil, wsman.SchemaValidation("The Send request must carry an rsp:Send element.")
	}
	for _, s := range body.Streams {
		var kind psrp.StreamKind
		switch s.Name {
		case "stdin":
			kind = psrp.StreamDefault
		case "pr":
			kind = psrp.StreamPromptResponse
		default:
			return nil, wsman.InvalidParameter("Unsupported input stream " + strconv.Quote(s.Name) + "; a PowerShell shell has stdin and pr.")
		}
		g := psrp.NilGUID
		if s.CommandID != "" {
			pid, err := psrp.ParseGUID(s.CommandID)
			if err != nil || !sh.ps.br.hasPipeline(pid) {
				return nil, commandSelectorFault(s.CommandID)
			}
			g = pid
		}
		data := s.Data
		if sh.ps.xpress {
			var err error
			if data, err = wsman.DecompressStream(data, psrp.DefaultMaxData); err != nil {
				return nil, wsman.InvalidParameter("The " + s.Name + " stream is not valid xpress data: " + err.Error())
			}
		}
		if err := sh.ps.br.sendData(ctx, g, kind, data); err != nil {
			return nil, psFault(err)
		}
	}
	return wsman.EncodeSend(req.Msg.Header.MessageID), nil
}

func (m *Manager) psReceive(ctx context.Context, req *Request, sh *Shell) ([]byte, error) {
	body, ok := req.Msg.Body.(*wsman.Receive)
	if !ok {
		return nil, wsman.SchemaValidation("The Receive request must carry an rsp:Receive element.")
	}
	for _, s := range body.Streams {
		if s != "stdout" {
			return nil, wsman.InvalidParameter("Unsupported output stream " + strconv.Quote(s) + "; a PowerShell shell has stdout.")
		}
	}
	g := psrp.NilGUID
	if body.CommandID != "" {
		pid, err := psrp.ParseGUID(body.CommandID)
		if err != nil || !sh.ps.br.hasPipeline(pid) {
			return nil, commandSelectorFault(body.CommandID)
		}
		g = pid
	}
	h := &req.Msg.Header
	maxEnv := h.MaxEnvelopeSize
	if maxEnv <= 0 {
		maxEnv = defaultClientEnvelope
	}
	timeout := m.operationTimeout(h)
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// One Receive per pool or pipeline at a time (a retried Receive waits).
	sh.ps.mu.Lock()
	sem := sh.ps.recv[g]
	if sem == nil {
		sem = make(chan struct{}, 1)
		sh.ps.recv[g] = sem
	}
	sh.ps.mu.Unlock()
	select {
	case sem <- struct{}{}:
	case <-tctx.Done():
		return nil, receiveEnd(ctx)
	}
	defer func() { <-sem }()

	sh.mu.Lock()
	sh.receiving++
	sh.mu.Unlock()
	defer func() {
		sh.mu.Lock()
		sh.receiving--
		sh.lastActivity = time.Now()
		sh.mu.Unlock()
	}()

	start := time.Now()
	frags, done, err := sh.ps.br.receive(tctx, g, payloadBudget(maxEnv))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return nil, receiveEnd(ctx)
		}
		return nil, psFault(err)
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.ReceiveLatency.Observe(time.Since(start).Seconds())
	}
	chunks := make([]wsman.StreamChunk, len(frags))
	n := 0
	for i, f := range frags {
		n += len(f)
		if sh.ps.xpress {
			f = wsman.CompressStream(nil, f)
		}
		chunks[i] = wsman.StreamChunk{Name: "stdout", Data: f}
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.StreamBytes.WithLabelValues("stdout").Add(float64(n))
	}
	r := wsman.ReceiveResponse{Streams: chunks}
	if g.IsNil() {
		r.Pool = true
	} else {
		r.CommandID = g.Upper()
		r.Done = done
		if done {
			state, _ := sh.ps.br.pipelineState(g)
			m.cfg.Audit.Event(obs.EvCommandExit, zap.String(obs.FUser, sh.user), zap.String(obs.FRemoteAddr, sh.remoteAddr),
				zap.String(obs.FShellID, sh.id), zap.String(obs.FCommandID, r.CommandID), zap.String("pipeline_state", state.String()))
		}
	}
	return r.Encode(h.MessageID), nil
}

// receiveEnd is the answer to a Receive whose wait ended without output:
// the client's own deadline (TimedOut, retried) or the client gone.
func receiveEnd(ctx context.Context) error {
	if ctx.Err() != nil {
		return wsman.OperationAborted("The client went away.")
	}
	return wsman.TimedOut()
}

func (m *Manager) psSignal(ctx context.Context, req *Request, sh *Shell) ([]byte, error) {
	body, ok := req.Msg.Body.(*wsman.Signal)
	if !ok {
		return nil, wsman.SchemaValidation("The Signal request must carry an rsp:Signal element.")
	}
	pid, err := psrp.ParseGUID(body.CommandID)
	if err != nil {
		return nil, commandSelectorFault(body.CommandID)
	}
	// Codes are compared by their last path segments, case-insensitively:
	// pypsrp sends "powershell/signal/ctrl_c" without the schema prefix,
	// Windows' client ".../powershell/signal/crtl_c" (sic).
	code := strings.ToLower(body.Code)
	switch {
	case code == strings.ToLower(wsman.SignalTerminate):
		if err := sh.ps.br.closePipeline(ctx, pid); err != nil {
			if errors.Is(err, errUnknownPipeline) {
				// terminate follows every pipeline, finished or not; a
				// second one for the same id is harmless.
				return wsman.EncodeSignal(req.Msg.Header.MessageID), nil
			}
			return nil, psFault(err)
		}
		sh.ps.mu.Lock()
		_, live := sh.ps.started[pid]
		delete(sh.ps.started, pid)
		delete(sh.ps.recv, pid)
		sh.ps.mu.Unlock()
		if live && m.cfg.Metrics != nil {
			m.cfg.Metrics.Commands.Dec()
			m.cfg.Metrics.PSRPPipelines.Dec()
		}
	case strings.HasSuffix(code, "powershell/signal/crtl_c"), strings.HasSuffix(code, "powershell/signal/ctrl_c"), code == strings.ToLower(wsman.SignalCtrlC):
		if err := sh.ps.br.stop(ctx, pid); err != nil {
			return nil, psFault(err)
		}
	default:
		return nil, wsman.InvalidParameter("Unsupported signal code " + strconv.Quote(body.Code) + ".")
	}
	return wsman.EncodeSignal(req.Msg.Header.MessageID), nil
}

// closePS ends the pool as the PowerShell client does and reaps it; called
// once by Shell.close.
func (sh *Shell) closePS() {
	sh.mu.Lock()
	br := sh.ps.br
	sh.mu.Unlock()
	if br == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sh.m.cfg.Limits.PSRPCloseTimeout)
	defer cancel()
	if err := br.close(ctx); err != nil && !errors.Is(err, isolation.ErrWorkerGone) {
		sh.m.log.Debug("closing PowerShell", zap.String(obs.FShellID, sh.id), zap.Error(err))
	}
	sh.ps.mu.Lock()
	n := len(sh.ps.started)
	sh.ps.started = map[psrp.GUID]time.Time{}
	sh.ps.mu.Unlock()
	if sh.m.cfg.Metrics != nil {
		sh.m.cfg.Metrics.Commands.Sub(float64(n))
		sh.m.cfg.Metrics.PSRPPipelines.Sub(float64(n))
		sh.m.cfg.Metrics.PSRPPools.Dec()
	}
}

// psPipelines lists a PowerShell shell's live pipelines for enumeration.
func (sh *Shell) psPipelines() []wsman.CommandInfo {
	sh.ps.mu.Lock()
	defer sh.ps.mu.Unlock()
	out := make([]wsman.CommandInfo, 0, len(sh.ps.started))
	for g := range sh.ps.started {
		_, done := sh.ps.br.pipelineState(g)
		out = append(out, wsman.CommandInfo{CommandID: g.Upper(), Done: done})
	}
	return out
}
