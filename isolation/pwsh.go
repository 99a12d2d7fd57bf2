package isolation

// The process side of a PowerShell remoting (PSRP) shell: the shell's worker
// runs PowerShell's out-of-process server (`pwsh -NoLogo -NoProfile -s` by
// default; path and arguments come from the configuration) as its one
// command, as the authenticated user, with the same cgroup, limits and
// reaping as any command. The daemon then talks to pwsh through that
// command's stdin and stdout: PwshProcess turns the worker's events back into
// an io.Reader of pwsh's stdout (for psrp.LineReader) and a writer of whole
// lines, and keeps the last bytes of pwsh's stderr for the log, because
// that is where pwsh reports remoting errors as text.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// PwshCommandID is the command id of the PowerShell process in a PSRP
// shell's worker (the worker runs nothing else).
const PwshCommandID = "pwsh"

// pwshStderrTail is how much of pwsh's stderr is kept for diagnostics.
const pwshStderrTail = 8 << 10

// ErrPwshExited: the PowerShell process ended (Err gives the exit code and
// the tail of its stderr).
var ErrPwshExited = errors.New("PowerShell process exited")

// PwshProcess is PowerShell's out-of-process server running in a worker.
type PwshProcess struct {
	w    Worker
	pr   *io.PipeReader
	pw   *io.PipeWriter
	done chan struct{}

	wmu sync.Mutex // one line at a time on stdin

	mu     sync.Mutex
	stderr []byte // the last pwshStderrTail bytes
	exit   *int32
	err    error
}

// StartPwsh starts argv (argv[0] looked up in PATH as the user) in a fresh
// worker w, which it then owns: Close closes the worker.
func StartPwsh(ctx context.Context, w Worker, argv []string) (*PwshProcess, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("%w: no PowerShell program configured", ErrStartFailed)
	}
	if err := w.Start(ctx, CommandSpec{ID: PwshCommandID, Argv: argv}); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	p := &PwshProcess{w: w, pr: pr, pw: pw, done: make(chan struct{})}
	go p.pump()
	return p, nil
}

// pump moves the worker's events into the stdout pipe. Writing to the pipe
// blocks until the reader took the bytes, and only then is the window given
// back, so a reader that stops reading stops pwsh (bounded memory).
func (p *PwshProcess) pump() {
	defer close(p.done)
	for ev := range p.w.Events() {
		if ev.CommandID != PwshCommandID {
			continue
		}
		switch ev.Kind {
		case EventOutput:
			if ev.Stream == Stderr {
				p.mu.Lock()
				p.stderr = append(p.stderr, ev.Data...)
				if over := len(p.stderr) - pwshStderrTail; over > 0 {
					p.stderr = append(p.stderr[:0], p.stderr[over:]...)
				}
				p.mu.Unlock()
				_ = p.w.Consumed(PwshCommandID, len(ev.Data))
				continue
			}
			if _, err := p.pw.Write(ev.Data); err != nil {
				// The reader is gone (Close): keep draining so the worker
				// is never stuck on a full window.
				_ = p.w.Consumed(PwshCommandID, len(ev.Data))
				continue
			}
			_ = p.w.Consumed(PwshCommandID, len(ev.Data))
		case EventExit:
			code := ev.ExitCode
			p.mu.Lock()
			p.exit = &code
			p.err = fmt.Errorf("%w with code %d%s", ErrPwshExited, code, p.tailLocked())
			err := p.err
			p.mu.Unlock()
			p.pw.CloseWithError(err)
		}
	}
	p.mu.Lock()
	if p.err == nil {
		werr := p.w.Err()
		if werr == nil {
			werr = ErrWorkerGone
		}
		p.err = fmt.Errorf("PowerShell's worker ended: %w%s", werr, p.tailLocked())
	}
	err := p.err
	p.mu.Unlock()
	p.pw.CloseWithError(err)
}

func (p *PwshProcess) tailLocked() string {
	if len(p.stderr) == 0 {
		return ""
	}
	return fmt.Sprintf("; stderr: %q", p.stderr)
}

// Read reads pwsh's stdout. After pwsh ended it returns an error wrapping
// ErrPwshExited (or the worker's error) instead of io.EOF: for a PSRP
// bridge, pwsh going away is never a normal end of data.
func (p *PwshProcess) Read(b []byte) (int, error) { return p.pr.Read(b) }

// WriteLine writes one line (which must end in '\n') to pwsh's stdin and
// returns once it is written to the worker (Worker.Stdin).
func (p *PwshProcess) WriteLine(ctx context.Context, line []byte) error {
	if len(line) == 0 || line[len(line)-1] != '\n' {
		return errors.New("isolation: WriteLine needs one '\\n'-terminated line")
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.Err(); err != nil {
		return err
	}
	return p.w.Stdin(ctx, PwshCommandID, line, false)
}

// CloseStdin ends pwsh's input (pwsh then closes its session and exits).
func (p *PwshProcess) CloseStdin(ctx context.Context) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return p.w.Stdin(ctx, PwshCommandID, nil, true)
}

// Done is closed once the worker is gone and every event was handled.
func (p *PwshProcess) Done() <-chan struct{} { return p.done }

// Exited reports pwsh's exit code once it exited.
func (p *PwshProcess) Exited() (int32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exit == nil {
		return 0, false
	}
	return *p.exit, true
}

// Err is nil while pwsh runs, then why it ended.
func (p *PwshProcess) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Stderr returns the kept tail of pwsh's stderr.
func (p *PwshProcess) Stderr() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.stderr...)
}

// Kill ends pwsh and everything it started, at once.
func (p *PwshProcess) Kill() error { return p.w.Signal(PwshCommandID, SignalTerminate) }

// Close kills whatever is left of the shell (the worker's whole cgroup),
// reaps the worker and waits for the event pump.
func (p *PwshProcess) Close() error {
	// The reader side first, so a pump blocked on an unread pipe moves on.
	_ = p.pr.CloseWithError(ErrWorkerGone)
	err := p.w.Close()
	<-p.done
	return err
}

// Pid of the worker.
func (p *PwshProcess) Pid() int { return p.w.Pid() }
