package session

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/session/obs"
	"github.com/winrmd/winrmd/session/wsman"
)

// Command is one command of a shell and its undelivered output. Output held
// here is bounded by isolation.OutputWindow: the worker sends no more until
// Receive hands bytes to a client and returns the window.
type Command struct {
	id      string
	shell   *Shell
	line    string
	started time.Time

	mu       sync.Mutex
	state    cmdState
	out      [3][]byte // indexed by isolation.Stream; unread bytes are out[s][off[s]:]
	off      [3]int
	exitCode int32 // from exited on
	err      error // why the worker went, from failed on
	released bool  // counted out of metrics
	// notify is closed (and replaced) to wake what waits for the command:
	// on every change of state, and on output only when a waiter wants
	// it. recvWaiting: the command's Receive (one at a time) waits for
	// any output; prepWant > 0: prepareNext waits for more than prepWant
	// bytes of stdout. A stream's output comes in 64 KiB chunks and a
	// response takes about six of them, so the preparer is woken once per
	// response rather than per chunk.
	notify      chan struct{}
	recvWaiting bool
	prepWant    int

	// recv is the Receive semaphore (capacity 1): one Receive at a time
	// per command.
	recv chan struct{}

	// The next ReceiveResponse, rendered while the client still reads the
	// last one (receive.go, prepareNext). recvGen counts the responses that
	// took output; a preparation is valid only for the generation it was
	// made in, so it never carries bytes another response took.
	prep      *preparedReceive
	recvGen   uint64
	preparing bool
}

// cmdState is where a command is in its life (see the package doc).
type cmdState uint8

const (
	cmdRunning    cmdState = iota
	cmdExited              // exit code known; output may remain
	cmdFailed              // worker gone before the exit
	cmdFinished            // Done (or the failure) delivered to a client
	cmdTerminated          // released by Signal terminate while running; final
)

func (s cmdState) String() string {
	return [...]string{"running", "exited", "failed", "finished", "terminated"}[s]
}

// to moves the command to next and reports whether that transition exists;
// an impossible one changes nothing. c.mu held.
func (c *Command) to(next cmdState) bool {
	ok := false
	switch c.state {
	case cmdRunning:
		ok = next == cmdExited || next == cmdFailed || next == cmdTerminated
	case cmdExited, cmdFailed:
		ok = next == cmdFinished
	case cmdFinished:
		ok = next == cmdFinished // a repeated Receive delivers it again
	}
	if ok {
		if c.state == cmdRunning && c.shell != nil {
			c.shell.running.Add(-1)
		}
		c.state = next
	}
	return ok
}

func newCommand(id string, sh *Shell, line string) *Command {
	return &Command{id: id, shell: sh, line: line, started: time.Now(),
		notify: make(chan struct{}), recv: make(chan struct{}, 1)}
}

func (c *Command) wakeLocked() {
	close(c.notify)
	c.notify = make(chan struct{})
}

func (c *Command) addOutput(s isolation.Stream, b []byte) {
	if s != isolation.Stdout && s != isolation.Stderr {
		return
	}
	c.mu.Lock()
	buf, off := c.out[s], c.off[s]
	switch {
	case off == len(buf): // all delivered: reuse the buffer from its start
		buf, off = buf[:0], 0
	case off > cap(buf)/2: // mostly delivered: move the rest to the front
		n := copy(buf, buf[off:])
		buf, off = buf[:n], 0
	}
	c.out[s], c.off[s] = append(buf, b...), off
	if c.recvWaiting || (c.prepWant > 0 && c.pending(isolation.Stdout) > c.prepWant) {
		c.wakeLocked()
	}
	c.mu.Unlock()
}

// pending is how many undelivered bytes a stream holds. c.mu held.
func (c *Command) pending(s isolation.Stream) int { return len(c.out[s]) - c.off[s] }

// take hands out the next n undelivered bytes of a stream; they stay valid
// until c.mu is released. c.mu held.
func (c *Command) take(s isolation.Stream, n int) []byte {
	b := c.out[s][c.off[s] : c.off[s]+n]
	c.off[s] += n
	c.recvGen++
	c.prep = nil
	if c.prepWant > 0 {
		c.wakeLocked() // a waiting preparer's generation is over: it leaves
	}
	return b
}

// exit records the command's exit; a terminated command ignores it.
func (c *Command) exit(code int32) {
	c.mu.Lock()
	if c.to(cmdExited) {
		c.exitCode = code
		c.wakeLocked()
	}
	c.mu.Unlock()
}

// fail records that the worker went before the command exited.
func (c *Command) fail(err error) {
	c.mu.Lock()
	if c.to(cmdFailed) {
		c.err = err
		c.wakeLocked()
	}
	c.mu.Unlock()
}

func (c *Command) isDone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state != cmdRunning
}

func commandSelectorFault(id string) error {
	return wsman.ShellFault(wsman.ShellUnknownCommand, "no command "+strconv.Quote(id)+" in this shell")
}

func (sh *Shell) getCommand(id string) (*Command, error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.state == shellClosed {
		return nil, wsman.InvalidSelectors("The WS-Management service cannot process the request because the shell has been closed.")
	}
	c := sh.commands[strings.ToUpper(id)]
	if c == nil {
		return nil, commandSelectorFault(id)
	}
	return c, nil
}

func (m *Manager) command(ctx context.Context, req *Request) ([]byte, error) {
	sh, err := m.lookup(req)
	if err != nil {
		return nil, err
	}
	sh.touch()
	h := &req.Msg.Header
	cl, ok := req.Msg.Body.(*wsman.CommandLine)
	if !ok {
		return nil, wsman.SchemaValidation("The Command request must carry an rsp:CommandLine element.")
	}
	id := wsman.NewGUID()
	if v := cl.CommandID; v != "" {
		if !validGUID(v) {
			return nil, wsman.ShellFault(wsman.ShellBadParameter, "the CommandId is not a GUID")
		}
		id = strings.ToUpper(v)
	}
	prog, args := cl.Command, cl.Arguments
	spec := isolation.CommandSpec{ID: id}
	// Windows joins Command and Arguments with spaces.
	line := prog
	if len(args) > 0 {
		line = prog + " " + strings.Join(args, " ")
	}
	if len(line) > 1<<20 || strings.ContainsRune(line, 0) {
		return nil, wsman.ShellFault(wsman.ShellBadParameter, "the command line is over 1 MiB or contains NUL")
	}
	if skip, _ := h.BoolOption("WINRS_SKIP_CMD_SHELL"); skip {
		if strings.TrimSpace(prog) == "" {
			return nil, wsman.ShellFault(wsman.ShellBadParameter, "WINRS_SKIP_CMD_SHELL with an empty Command")
		}
		spec.Argv = append([]string{prog}, args...)
		if len(args) == 0 {
			spec.Argv = strings.Fields(prog)
		}
	} else {
		// As `cmd /c <line>`: cmd's quote rule; an empty line runs
		// `sh -c ""`, which exits 0 as cmd does.
		line = cmdShellLine(line)
		spec.Line = line
	}
	// powershell / powershell.exe / pwsh: the configured PowerShell with
	// the client's arguments, or a clear "not installed" (pwsh_cmdline.go).
	if argv, ok := powershellArgv(line, m.cfg.PowerShell.Path); ok {
		spec.Line, spec.Argv = "", argv
	}

	c := newCommand(id, sh, line)
	sh.mu.Lock()
	if sh.state != shellOpen && sh.state != shellBroken {
		sh.mu.Unlock()
		return nil, wsman.InvalidSelectors("The WS-Management service cannot process the request because the shell has been closed.")
	}
	if sh.state == shellBroken {
		sh.mu.Unlock()
		return nil, wsman.ShellFault(wsman.ShellAborted, "the shell's worker process has ended: "+sh.workerErr.Error())
	}
	if _, dup := sh.commands[id]; dup {
		sh.mu.Unlock()
		return nil, wsman.ShellFault(wsman.ShellBadParameter, "a command with CommandId "+id+" already exists")
	}
	if int(sh.running.Load()) >= m.cfg.Limits.MaxProcessesPerShell {
		sh.mu.Unlock()
		return nil, m.processQuota(req)
	}
	sh.commands[id] = c
	sh.running.Add(1)
	sh.order = append(sh.order, id)
	sh.pruneLocked()
	w := sh.worker
	sh.mu.Unlock()

	if err := w.Start(ctx, spec); err != nil {
		sh.mu.Lock()
		delete(sh.commands, id)
		sh.mu.Unlock()
		c.mu.Lock()
		c.to(cmdFailed) // never started: no longer counts as running
		c.mu.Unlock()
		m.log.Info("command start failed", zap.String(obs.FShellID, sh.id), zap.String(obs.FCommandID, id), zap.Error(err))
		if errors.Is(err, isolation.ErrTooManyProcs) {
			// The count above allowed it, but the kernel's limit, which
			// also holds the commands' children, is full.
			return nil, m.processQuota(req)
		}
		if errors.Is(err, isolation.ErrStartFailed) {
			return nil, wsman.ShellFault(startFailure(err), "command "+strconv.Quote(programName(spec))+" could not be started: "+err.Error())
		}
		return nil, wsman.ShellFault(wsman.ShellAborted, "command could not be started: "+err.Error())
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.Commands.Inc()
	}
	m.cfg.Audit.Event(obs.EvCommandStart, zap.String(obs.FUser, sh.user), zap.String(obs.FRemoteAddr, req.RemoteAddr),
		zap.String(obs.FShellID, sh.id), zap.String(obs.FCommandID, id), zap.String("program", programName(spec)))

	return wsman.EncodeCommand(h.MessageID, id), nil
}

// processQuota is the fault for a shell at winrs.max_processes_per_shell,
// with its audit event.
func (m *Manager) processQuota(req *Request) error {
	m.quotaEvent(req, "max_processes_per_shell")
	return wsman.QuotaLimit(wsman.CodeQuotaLimit, "The WS-Management service cannot process the request. The maximum number of processes per shell ("+strconv.Itoa(m.cfg.Limits.MaxProcessesPerShell)+") has been reached.")
}

// startFailure maps a start failure to Windows' fault: the worker reports
// exec's error as text, so "permission denied" (EACCES, EPERM) is Access
// Denied and everything else the file-not-found Windows answers.
func startFailure(err error) wsman.ShellFaultKind {
	msg := err.Error()
	if strings.Contains(msg, "permission denied") || strings.Contains(msg, "operation not permitted") {
		return wsman.ShellStartDenied
	}
	return wsman.ShellFileNotFound
}

// programName is what the audit trail records of a command: the program,
// never its arguments (they may carry secrets). In a shell line, leading
// assignments ("TOKEN=secret cmd", a shell's per-command environment) are
// not the program: they are skipped, and each is recorded only as its
// variable name ("TOKEN=… cmd"), so the value never reaches the audit.
func programName(spec isolation.CommandSpec) string {
	if len(spec.Argv) > 4 && spec.Argv[3] == pwshLauncherName {
		return spec.Argv[4] // the PowerShell the launcher runs
	}
	if len(spec.Argv) > 0 {
		return clipProgram(spec.Argv[0])
	}
	f := strings.Fields(spec.Line)
	var vars []string
	for len(f) > 0 && isAssignment(f[0]) {
		name, _, _ := strings.Cut(f[0], "=")
		vars = append(vars, name+"=…")
		f = f[1:]
	}
	prog := ""
	if len(f) > 0 {
		prog = clipProgram(f[0])
	}
	if len(vars) == 0 {
		return prog
	}
	if prog != "" {
		vars = append(vars, prog)
	}
	return clipProgram(strings.Join(vars, " "))
}

// isAssignment reports whether a shell word is NAME=value (POSIX: NAME is
// letters, digits and '_', not starting with a digit).
func isAssignment(w string) bool {
	name, _, ok := strings.Cut(w, "=")
	if !ok || name == "" || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for _, c := range name {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func clipProgram(s string) string {
	if len(s) > 256 {
		return s[:256]
	}
	return s
}

// pruneLocked forgets the oldest finished, fully delivered commands once
// there are more than Limits.MaxRetainedCommands (clients that never send
// terminate). It forgets down to three quarters of the limit, so that a
// client running command after command on one shell pays for a pass over
// them once every quarter of the limit, not on every Command.
func (sh *Shell) pruneLocked() {
	limit := sh.m.cfg.Limits.MaxRetainedCommands
	if len(sh.commands) <= limit {
		return
	}
	target := limit - limit/4
	keep := sh.order[:0]
	for _, id := range sh.order {
		c := sh.commands[id]
		if c == nil {
			continue
		}
		c.mu.Lock()
		drop := c.state == cmdFinished && len(sh.commands) > target
		c.mu.Unlock()
		if drop {
			delete(sh.commands, id)
			continue
		}
		keep = append(keep, id)
	}
	sh.order = keep
}

func (m *Manager) send(ctx context.Context, req *Request) ([]byte, error) {
	sh, err := m.lookup(req)
	if err != nil {
		return nil, err
	}
	sh.touch()
	body, ok := req.Msg.Body.(*wsman.Send)
	if !ok {
		return nil, wsman.SchemaValidation("The Send request must carry an rsp:Send element.")
	}
	for _, s := range body.Streams {
		if s.Name != "stdin" {
			return nil, wsman.ShellFault(wsman.ShellBadParameter, "unsupported input stream "+strconv.Quote(s.Name))
		}
		if s.CommandID == "" {
			return nil, wsman.ShellFault(wsman.ShellBadParameter, "Send without CommandId on a cmd shell")
		}
		c, err := sh.getCommand(s.CommandID)
		if err != nil {
			return nil, err
		}
		data, end := s.Data, s.End
		if c.isDone() {
			continue // the command is gone; Windows drops input likewise
		}
		if err := sh.worker.Stdin(ctx, c.id, data, end); err != nil {
			if errors.Is(err, isolation.ErrUnknown) {
				continue
			}
			if ctx.Err() != nil {
				return nil, wsman.OperationAborted("The client went away.")
			}
			return nil, wsman.ShellFault(wsman.ShellAborted, "input could not be delivered: "+err.Error())
		}
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.StreamBytes.WithLabelValues("stdin").Add(float64(len(data)))
		}
	}
	return wsman.EncodeSend(req.Msg.Header.MessageID), nil
}

func (m *Manager) signal(ctx context.Context, req *Request) ([]byte, error) {
	sh, err := m.lookup(req)
	if err != nil {
		return nil, err
	}
	sh.touch()
	body, ok := req.Msg.Body.(*wsman.Signal)
	if !ok {
		return nil, wsman.SchemaValidation("The Signal request must carry an rsp:Signal element.")
	}
	cid, code := body.CommandID, body.Code
	if cid == "" {
		return nil, wsman.ShellFault(wsman.ShellBadParameter, "Signal without CommandId on a cmd shell")
	}
	c, err := sh.getCommand(cid)
	if err != nil {
		return nil, err
	}
	lc := strings.ToLower(code)
	var sig isolation.Signal
	switch {
	case strings.EqualFold(code, wsman.SignalTerminate):
		sig = isolation.SignalTerminate
	case strings.EqualFold(code, wsman.SignalCtrlC),
		strings.HasSuffix(lc, "powershell/signal/crtl_c"), strings.HasSuffix(lc, "powershell/signal/ctrl_c"):
		sig = isolation.SignalInterrupt
	case strings.EqualFold(code, wsman.SignalCtrlBreak):
		sig = isolation.SignalQuit
	default:
		return nil, wsman.ShellFault(wsman.ShellBadParameter, "unknown signal code "+strconv.Quote(code))
	}
	if sig == isolation.SignalTerminate {
		sh.releaseCommand(c)
	} else if !c.isDone() {
		if err := sh.worker.Signal(c.id, sig); err != nil && !errors.Is(err, isolation.ErrUnknown) {
			return nil, wsman.ShellFault(wsman.ShellAborted, "the signal could not be delivered: "+err.Error())
		}
	}
	return wsman.EncodeSignal(req.Msg.Header.MessageID), nil
}

// releaseCommand kills a command (if running) and forgets it.
func (sh *Shell) releaseCommand(c *Command) {
	sh.mu.Lock()
	if sh.commands[c.id] == c {
		delete(sh.commands, c.id)
	}
	w := sh.worker
	sh.mu.Unlock()
	c.mu.Lock()
	wasReleased := c.released
	c.released = true
	c.out, c.off = [3][]byte{}, [3]int{}
	c.prep = nil
	c.to(cmdTerminated) // only from running; otherwise its output is simply gone
	c.wakeLocked()
	c.mu.Unlock()
	if w != nil {
		_ = w.Release(c.id)
	}
	if !wasReleased && sh.m.cfg.Metrics != nil {
		sh.m.cfg.Metrics.Commands.Dec()
	}
}
