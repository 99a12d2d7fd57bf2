package session

import (
	"context"
	"strconv"
	"time"

	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/session/wsman"
)

// receiveOverhead is what a ReceiveResponse costs besides base64 payload:
// the envelope, headers, two Stream elements with End markers and the
// CommandState. Measured at under 1.6 KB; kept generous.
const receiveOverhead = 2560

// DefaultExitGrace is how long a Receive that found output of a command
// still running waits for that command's exit before answering Running.
// Windows answers a command that writes and exits at once with its output,
// the End markers, Done and the ExitCode in one response, and the Ruby
// WinRM library reads ExitCode only from a response that carries output:
// split in two, a failing command reads as exit 0. Here the exit arrives
// after the output, once the worker has seen both pipes close and reaped
// the process: isolation's BenchmarkOutputToExitGap measured that gap at
// p50 0.07–0.2 ms, p99 0.7–6 ms and at most 20 ms (3×1000 `echo`/`ls`
// commands on a 2-core machine shared with seven other builds). 100 ms is
// five times the worst seen. It costs nothing to a command that exits (the
// wait ends at its exit) or that fills the response (answered at once); a
// command that writes a little and keeps running answers at most 100 ms
// later than it would, with whatever more it wrote meanwhile.
const DefaultExitGrace = 100 * time.Millisecond

// defaultClientEnvelope is used when the client sends no MaxEnvelopeSize.
const defaultClientEnvelope = 153600

// payloadBudget is how many raw output bytes fit in one response for a
// client that accepts envelopes of max bytes: base64 costs 4/3.
func payloadBudget(max int) int {
	n := (max - receiveOverhead) / 4 * 3
	if n < 3 {
		n = 3
	}
	return n
}

func (m *Manager) operationTimeout(h *wsman.Header) time.Duration {
	d := h.OperationTimeout
	if d <= 0 {
		d = m.cfg.Limits.DefaultReceiveTimeout
	}
	if m.cfg.Limits.MaxTimeout > 0 && d > m.cfg.Limits.MaxTimeout {
		d = m.cfg.Limits.MaxTimeout
	}
	// Answer a little before the client's own HTTP timeout, which clients
	// set to about OperationTimeout.
	if d > 10*time.Second {
		d -= time.Second
	}
	return d
}

func (m *Manager) receive(ctx context.Context, req *Request) ([]byte, error) {
	sh, err := m.lookup(req)
	if err != nil {
		return nil, err
	}
	sh.touch()
	h := &req.Msg.Header
	body, ok := req.Msg.Body.(*wsman.Receive)
	if !ok {
		return nil, wsman.SchemaValidation("The Receive request must carry an rsp:Receive element.")
	}
	cid := body.CommandID
	if cid == "" {
		return nil, wsman.ShellFault(wsman.ShellBadParameter, "Receive without CommandId on a cmd shell")
	}
	want := [3]bool{}
	for _, s := range body.Streams {
		switch s {
		case "stdout":
			want[isolation.Stdout] = true
		case "stderr":
			want[isolation.Stderr] = true
		default:
			return nil, wsman.ShellFault(wsman.ShellBadParameter, "unsupported output stream "+strconv.Quote(s))
		}
	}
	if !want[isolation.Stdout] && !want[isolation.Stderr] {
		want[isolation.Stdout], want[isolation.Stderr] = true, true
	}
	c, err := sh.getCommand(cid)
	if err != nil {
		return nil, err
	}
	maxEnv := h.MaxEnvelopeSize
	if maxEnv <= 0 {
		maxEnv = defaultClientEnvelope
	}
	budget := payloadBudget(maxEnv)
	timeout := m.operationTimeout(h)

	// One Receive per command at a time; a second one (a client retrying
	// after its own read timeout) waits for the first.
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case c.recv <- struct{}{}:
	case <-timer.C:
		return nil, wsman.TimedOut()
	case <-ctx.Done():
		return nil, wsman.OperationAborted("The client went away.")
	}
	defer func() { <-c.recv }()

	sh.mu.Lock()
	sh.receiving++
	sh.mu.Unlock()
	defer func() {
		sh.mu.Lock()
		sh.receiving--
		sh.lastActivity = time.Now()
		sh.mu.Unlock()
	}()

	defer func() {
		c.mu.Lock()
		c.recvWaiting = false
		c.mu.Unlock()
	}()
	start := time.Now()
	// grace runs once output of a still running command is there.
	var grace *time.Timer
	graceOver := m.cfg.Limits.ExitGrace < 0
	defer func() {
		if grace != nil {
			grace.Stop()
		}
	}()
	for {
		c.mu.Lock()
		c.recvWaiting = false
		if p := c.usablePrep(want, budget); p != nil {
			c.take(isolation.Stdout, p.n)
			c.schedulePrep(want, budget, sh.done)
			c.mu.Unlock()
			_ = sh.worker.Consumed(c.id, p.n)
			if m.cfg.Metrics != nil {
				m.cfg.Metrics.ReceiveLatency.Observe(time.Since(start).Seconds())
			}
			req.sent = p.r.Release
			return p.r.Finish(h.MessageID), nil
		}
		running := c.state == cmdRunning
		pending := 0
		for _, s := range []isolation.Stream{isolation.Stdout, isolation.Stderr} {
			if want[s] {
				pending += c.pending(s)
			}
		}
		if running && pending > 0 && pending < budget && !graceOver {
			// Give the exit DefaultExitGrace to join this output.
			if grace == nil {
				grace = time.NewTimer(m.cfg.Limits.ExitGrace)
			}
			wake := c.notify
			c.recvWaiting = true
			c.mu.Unlock()
			select {
			case <-wake:
			case <-grace.C:
				graceOver = true
			case <-timer.C:
				graceOver = true // answer with the output rather than TimedOut
			case <-ctx.Done():
				return nil, wsman.OperationAborted("The client went away.")
			case <-sh.done:
				return nil, wsman.OperationAborted("The shell was closed.")
			}
			continue
		}
		if !running || pending > 0 {
			resp, consumed, ferr := m.buildReceive(c, want, budget, h.MessageID, req)
			if ferr == nil && consumed > 0 {
				c.schedulePrep(want, budget, sh.done)
			}
			c.mu.Unlock()
			if consumed > 0 {
				_ = sh.worker.Consumed(c.id, consumed)
			}
			if m.cfg.Metrics != nil {
				m.cfg.Metrics.ReceiveLatency.Observe(time.Since(start).Seconds())
			}
			if ferr != nil {
				return nil, ferr
			}
			return resp, nil
		}
		wake := c.notify
		c.recvWaiting = true
		c.mu.Unlock()
		select {
		case <-wake:
		case <-timer.C:
			return nil, wsman.TimedOut()
		case <-ctx.Done():
			return nil, wsman.OperationAborted("The client went away.")
		case <-sh.done:
			return nil, wsman.OperationAborted("The shell was closed.")
		}
	}
}

// buildReceive takes up to budget bytes of buffered output and renders the
// ReceiveResponse. Called with c.mu held.
func (m *Manager) buildReceive(c *Command, want [3]bool, budget int, relatesTo string, req *Request) ([]byte, int, error) {
	if c.state == cmdTerminated {
		return nil, 0, commandSelectorFault(c.id)
	}
	var chunks [4]wsman.StreamChunk
	r := wsman.ReceiveResponse{CommandID: c.id, Streams: chunks[:0]}
	consumed := 0
	for _, s := range []isolation.Stream{isolation.Stdout, isolation.Stderr} {
		avail := c.pending(s)
		if !want[s] || avail == 0 || budget <= 0 {
			continue
		}
		n := avail
		if n > budget {
			n = budget / 3 * 3
			if n == 0 {
				continue
			}
		}
		r.Streams = append(r.Streams, wsman.StreamChunk{Name: streamName(s), Data: c.take(s, n)})
		budget -= n
		consumed += n
	}
	drained := c.pending(isolation.Stdout) == 0 && c.pending(isolation.Stderr) == 0
	switch {
	case drained && c.err == nil && c.to(cmdFinished): // exited, or finished before
		for _, s := range []isolation.Stream{isolation.Stdout, isolation.Stderr} {
			if want[s] {
				r.Streams = append(r.Streams, wsman.StreamChunk{Name: streamName(s), End: true})
			}
		}
		r.Done, r.ExitCode = true, c.exitCode
	case drained && c.err != nil && consumed == 0 && c.to(cmdFinished): // failed, or finished so
		return nil, 0, wsman.ShellFault(wsman.ShellAborted, "the command's worker process ended: "+c.err.Error())
	}
	// Render while c.mu is held: the taken bytes stay valid until the next
	// addOutput may reuse the buffer.
	p := r.Prepare(wsman.EscapedLen(relatesTo))
	req.sent = p.Release
	return p.Finish(relatesTo), consumed, nil
}

func streamName(s isolation.Stream) string {
	if s == isolation.Stderr {
		return "stderr"
	}
	return "stdout"
}

// The speculative Receive. A client streams a command's output with one
// Receive after another, and reads (unseals, decodes) each response before
// it sends the next request, while the worker has already refilled the
// output window. So after answering a Receive that took output, the
// daemon renders the next response at once — output taken and base64
// encoded, everything but the header, which needs the next request's
// MessageID — and the next Receive only finishes it. A preparation is
// used only when the response it holds is exactly the one that Receive
// would render: the same streams and budget asked for, no output taken
// since (recvGen), more output pending than it carries (so the state is
// Running, no End marker), and no stderr that would have joined it. Its
// bytes are taken from the command only when it is used; anything else
// (Signal, a Receive of other streams, a terminate) finds it stale or
// drops it, and renders as before.

// prepareWait bounds how long a preparation waits for output to fill a
// response; a command that writes slowly is answered as before.
const prepareWait = 2 * time.Second

type preparedReceive struct {
	gen    uint64
	want   [3]bool
	budget int
	n      int // stdout bytes it carries
	r      *wsman.PreparedReceive
}

// usablePrep returns the prepared response if it is the one a Receive
// for want and budget would render now, and forgets it. c.mu held.
func (c *Command) usablePrep(want [3]bool, budget int) *preparedReceive {
	p := c.prep
	if p == nil {
		return nil
	}
	c.prep = nil
	rem := budget - p.n
	stderrJoins := want[isolation.Stderr] && rem > 0 && c.pending(isolation.Stderr) > 0 && c.pending(isolation.Stderr) <= rem
	if p.gen != c.recvGen || p.want != want || p.budget != budget || c.state == cmdTerminated ||
		c.pending(isolation.Stdout) <= p.n || stderrJoins {
		p.r.Release() // stale, never finished
		return nil
	}
	return p
}

// schedulePrep starts preparing the response after the one just taken,
// unless a preparation is under way. c.mu held.
func (c *Command) schedulePrep(want [3]bool, budget int, shellDone <-chan struct{}) {
	if c.preparing || !want[isolation.Stdout] || budget/3*3 == 0 {
		return
	}
	c.preparing = true
	go c.prepareNext(c.recvGen, want, budget, shellDone)
}

// prepareNext renders the next full response of stdout once the output is
// there, unless a Receive took output meanwhile (then that Receive's own
// preparation follows) or the command ends.
func (c *Command) prepareNext(gen uint64, want [3]bool, budget int, shellDone <-chan struct{}) {
	n := budget / 3 * 3
	idle := time.NewTimer(prepareWait)
	defer idle.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() { c.preparing, c.prepWant = false, 0 }()
	for c.recvGen == gen && c.state != cmdTerminated && c.state != cmdFinished {
		if c.pending(isolation.Stdout) > n {
			off := c.off[isolation.Stdout]
			r := wsman.ReceiveResponse{CommandID: c.id,
				Streams: []wsman.StreamChunk{{Name: "stdout", Data: c.out[isolation.Stdout][off : off+n]}}}
			c.prep = &preparedReceive{gen: gen, want: want, budget: budget, n: n, r: r.Prepare(wsman.ReceiveHeadRoom)}
			return
		}
		if c.state != cmdRunning {
			return // no more output comes
		}
		wake := c.notify
		c.prepWant = n // woken when there is more than a response's worth
		c.mu.Unlock()
		select {
		case <-wake:
		case <-idle.C:
			c.mu.Lock()
			return
		case <-shellDone:
			c.mu.Lock()
			return
		}
		c.mu.Lock()
	}
}
