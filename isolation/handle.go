package isolation

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// writeStall bounds one frame write to the worker. The worker's reader never
// blocks, so a worker that stops reading for this long is broken or hostile.
const writeStall = 30 * time.Second

// process is the daemon's view of the worker process (faked in tests).
type process interface {
	Kill() error             // SIGKILL; harmless once it is gone
	Exited() <-chan struct{} // closed once it is reaped
	State() string           // how it ended, after Exited
}

type cmdState uint8

const (
	cmdStarting  cmdState = iota // Start sent, no answer yet
	cmdRunning                   // Started received
	cmdExited                    // Exit received
	cmdReleasing                 // Release sent, Released not yet received
)

// dcmd is the daemon's bookkeeping of one command. Every frame the worker
// sends about it is checked against this state.
type dcmd struct {
	state       cmdState
	expectStart bool // releasing a command whose Started/StartErr is still due
	pid         int
	window      int // output bytes delivered but not yet Consumed
	// grant is the command's output credit: the bytes it may have in the
	// daemon (window) plus what the worker may still send; at most
	// OutputWindow. What exceeds outputFloor is reserved in the budget.
	grant    int
	started  chan error
	gone     chan struct{} // closed on Release (and StartErr)
	stdinSem chan struct{} // one Stdin caller at a time
	stdinOut bool          // a Stdin frame awaits its StdinAck
	ackCh    chan bool
	eofSent  bool
}

// workerHandle is the daemon's Worker: one reader goroutine checks and
// demultiplexes the worker's frames; a pump goroutine delivers events so
// that a slow Events consumer never stalls acknowledgements.
type workerHandle struct {
	log  *slog.Logger
	pid  int
	conn *net.UnixConn
	r    io.Reader
	proc process
	// reap kills the shell's processes (proctree.go), the strategy the
	// spawner chose when it started.
	reap   shellReaper
	stderr *stderrLog // the worker's stderr, copied into the log; or nil
	// ccacheDir holds the shell's delegated Kerberos credentials (ccache.go),
	// removed when the worker is closed; "" for none.
	ccacheDir string

	wmu sync.Mutex

	// budget reserves every command's output credit (nil: unlimited), for
	// the account uid.
	budget *OutputBudget
	uid    uint32
	// pids keeps the shell's kernel process limit at its budget plus the
	// worker's own threads (nil: no limit).
	pids *pidsLimit

	mu      sync.Mutex
	qcond   *sync.Cond
	cmds    map[string]*dcmd
	q       []Event
	ended   bool // the reader has finished: the worker is gone
	closing bool // Close was called
	stopped bool // the pump must stop
	err     error

	events chan Event
	// sink, when set (SetEventSink, before the first Start), takes every
	// event on the reader's goroutine instead of the queue and Events.
	sink     EventSink
	done     chan struct{} // closed when the reader has finished
	stopPump chan struct{}
	pumpDone chan struct{}

	// pendingStarts counts Start frames not yet answered (Started or
	// StartErr): until they are, the worker may still fork. Close waits
	// for startsIdle, closed when the count drops to 0.
	pendingStarts int
	startsIdle    chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var _ Worker = (*workerHandle)(nil)

func newWorkerHandle(log *slog.Logger, pid int, conn *net.UnixConn, r io.Reader, proc process, reap shellReaper) *workerHandle {
	h := &workerHandle{
		log: log, pid: pid, conn: conn, r: r, proc: proc, reap: reap,
		cmds:     map[string]*dcmd{},
		events:   make(chan Event, 64),
		done:     make(chan struct{}),
		stopPump: make(chan struct{}),
		pumpDone: make(chan struct{}),
	}
	h.qcond = sync.NewCond(&h.mu)
	return h
}

func (h *workerHandle) run() {
	go h.readLoop()
	go h.pump()
}

func (h *workerHandle) Pid() int             { return h.pid }
func (h *workerHandle) Events() <-chan Event { return h.events }

func (h *workerHandle) SetEventSink(sink EventSink) {
	h.mu.Lock()
	h.sink = sink
	h.mu.Unlock()
}

func (h *workerHandle) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// goneErr is what calls return once the worker is gone.
func (h *workerHandle) goneErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return h.err
	}
	return ErrWorkerGone
}

func (h *workerHandle) aliveLocked() error {
	if h.ended || h.closing {
		if h.err != nil {
			return h.err
		}
		return ErrWorkerGone
	}
	return nil
}

// send writes one frame.
func (h *workerHandle) send(m msg) error {
	b, err := appendFrame(nil, m)
	if err != nil {
		return err
	}
	return h.write(net.Buffers{b})
}

// sendStdin writes the frame of msgStdin{ID: id, EOF: eof, Data: data}:
// its head and the data in one writev, so the data (up to maxStdinChunk of
// a Send) is not copied into a frame buffer first. data is not used after
// it returns.
func (h *workerHandle) sendStdin(id string, eof bool, data []byte) error {
	head, err := appendStdinHead(make([]byte, 0, frameHeader+4+len(id)+1+4), id, eof, len(data))
	if err != nil {
		return err
	}
	return h.write(net.Buffers{head, data})
}

// write writes one frame, in pieces.
func (h *workerHandle) write(frame net.Buffers) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	_ = h.conn.SetWriteDeadline(time.Now().Add(writeStall))
	if _, err := frame.WriteTo(h.conn); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			h.hostile(errors.New("the worker stopped reading its socket"))
		}
		if gone := h.goneErr(); gone != ErrWorkerGone {
			return gone
		}
		return fmt.Errorf("%w: %v", ErrWorkerGone, err)
	}
	return nil
}

// hostile ends the worker after a protocol violation.
func (h *workerHandle) hostile(err error) {
	h.log.Error("worker broke the protocol; killing it", slog.Any("error", err))
	_ = h.proc.Kill()
	_ = h.conn.Close()
}

func (h *workerHandle) Start(ctx context.Context, spec CommandSpec) error {
	m := msgStart{ID: spec.ID, Line: spec.Line, Argv: spec.Argv}
	if err := checkOutgoing(m); err != nil {
		return fmt.Errorf("isolation: command %q: %w", spec.ID, err)
	}
	c := &dcmd{
		state:    cmdStarting,
		started:  make(chan error, 1),
		gone:     make(chan struct{}),
		stdinSem: make(chan struct{}, 1),
		ackCh:    make(chan bool, 1),
	}
	h.mu.Lock()
	if err := h.aliveLocked(); err != nil {
		h.mu.Unlock()
		return err
	}
	if _, dup := h.cmds[spec.ID]; dup {
		h.mu.Unlock()
		return fmt.Errorf("isolation: command id %q is in use", spec.ID)
	}
	h.cmds[spec.ID] = c
	h.pendingStarts++
	pids := h.pids
	// The credit the command starts with, from the budget: possibly less
	// than a window, possibly none (it then waits for budget; Started).
	c.grant = outputFloor + h.budget.take(h.uid, OutputWindow-outputFloor)
	m.Window = uint32(c.grant)
	h.mu.Unlock()

	if pids != nil {
		// A failure leaves the last value, which counted fewer of the
		// worker's threads: the limit only errs strict.
		if err := pids.set(h.pid); err != nil {
			h.log.Warn("pids limit not refreshed before a start", slog.String("command", spec.ID), slog.Any("error", err))
		}
	}
	if err := h.send(m); err != nil {
		h.mu.Lock()
		h.startAnsweredLocked() // the worker never got it whole
		h.returnGrantLocked(spec.ID, c)
		h.mu.Unlock()
		return err
	}
	select {
	case err := <-c.started:
		return err
	case <-h.done:
		return h.goneErr()
	case <-ctx.Done():
	}
	h.mu.Lock()
	if c.state == cmdStarting {
		// Forget it; the worker kills it if it started after all.
		c.state, c.expectStart = cmdReleasing, true
		close(c.gone)
		h.returnGrantLocked(spec.ID, c)
		h.mu.Unlock()
		_ = h.send(msgRelease{ID: spec.ID})
		return ctx.Err()
	}
	h.mu.Unlock()
	select { // the answer crossed the cancellation
	case err := <-c.started:
		return err
	case <-h.done:
		return h.goneErr()
	}
}

// startAnsweredLocked counts one Start as answered.
func (h *workerHandle) startAnsweredLocked() {
	h.pendingStarts--
	if h.pendingStarts == 0 && h.startsIdle != nil {
		close(h.startsIdle)
		h.startsIdle = nil
	}
}

// lookup returns a command the caller may act on.
func (h *workerHandle) lookupLocked(id string) (*dcmd, error) {
	if err := h.aliveLocked(); err != nil {
		return nil, err
	}
	c := h.cmds[id]
	if c == nil || c.state == cmdReleasing || c.state == cmdStarting {
		return nil, fmt.Errorf("%w %q", ErrUnknown, id)
	}
	return c, nil
}

func (h *workerHandle) Stdin(ctx context.Context, id string, data []byte, eof bool) error {
	h.mu.Lock()
	c, err := h.lookupLocked(id)
	if err != nil {
		h.mu.Unlock()
		return err
	}
	if c.state == cmdExited || c.eofSent || (len(data) == 0 && !eof) {
		h.mu.Unlock()
		return nil // nothing to deliver, or nobody to deliver it to
	}
	h.mu.Unlock()

	select {
	case c.stdinSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.gone:
		return fmt.Errorf("%w %q", ErrUnknown, id)
	case <-h.done:
		return h.goneErr()
	}
	defer func() { <-c.stdinSem }()

	for {
		n := min(len(data), maxStdinChunk)
		chunk := data[:n]
		data = data[n:]
		last := len(data) == 0
		if err := h.waitAck(ctx, id, c); err != nil { // a cancelled caller's frame
			return err
		}
		h.mu.Lock()
		if c.state == cmdReleasing {
			h.mu.Unlock()
			return fmt.Errorf("%w %q", ErrUnknown, id)
		}
		if c.state == cmdExited || c.eofSent {
			h.mu.Unlock()
			return nil
		}
		c.stdinOut = true
		select { // drop a stale acknowledgement
		case <-c.ackCh:
		default:
		}
		if last && eof {
			c.eofSent = true
		}
		h.mu.Unlock()
		if err := h.sendStdin(id, last && eof, chunk); err != nil {
			return err
		}
		if last {
			// The frame is in the socket (data may be reused now); its
			// acknowledgement is waited for by the command's next Stdin,
			// at the top of the loop, so one frame per command is in
			// flight and the client's next Send overlaps the worker's
			// write into the pipe (0.3 ms of a 375 KB Send).
			return nil
		}
	}
}

func (h *workerHandle) waitAck(ctx context.Context, id string, c *dcmd) error {
	h.mu.Lock()
	out := c.stdinOut
	h.mu.Unlock()
	if !out {
		return nil
	}
	select {
	case <-c.ackCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.gone:
		return fmt.Errorf("%w %q", ErrUnknown, id)
	case <-h.done:
		return h.goneErr()
	}
}

func (h *workerHandle) Signal(id string, sig Signal) error {
	if sig < SignalInterrupt || sig > SignalTerminate {
		return fmt.Errorf("isolation: unknown signal %d", sig)
	}
	h.mu.Lock()
	_, err := h.lookupLocked(id)
	h.mu.Unlock()
	if err != nil {
		return err
	}
	return h.send(msgSignal{ID: id, Sig: sig})
}

func (h *workerHandle) Consumed(id string, n int) error {
	if n <= 0 {
		return nil
	}
	h.mu.Lock()
	c, err := h.lookupLocked(id)
	if err != nil {
		h.mu.Unlock()
		return err
	}
	if n > c.window {
		h.mu.Unlock()
		return fmt.Errorf("isolation: Consumed(%d) for %q exceeds the %d bytes delivered", n, id, c.window)
	}
	c.window -= n
	if c.state != cmdRunning {
		// The worker sends nothing more: the bytes go back to the budget.
		h.shrinkGrantLocked(c, c.grant-n)
		h.mu.Unlock()
		return nil
	}
	// The consumed bytes stay the command's credit; a command granted less
	// than a window takes what the budget has meanwhile.
	more := h.budget.take(h.uid, OutputWindow-c.grant)
	c.grant += more
	h.mu.Unlock()
	return h.send(msgCredit{ID: id, N: uint32(n + more)})
}

// topUp offers a running command granted less than a window what the
// budget has now (OutputBudget.wake).
func (h *workerHandle) topUp(id string) {
	h.mu.Lock()
	c := h.cmds[id]
	if c == nil || h.ended || c.state == cmdExited || c.state == cmdReleasing || c.grant >= OutputWindow {
		h.mu.Unlock()
		h.budget.unwait(h, id)
		return
	}
	if c.state != cmdRunning {
		h.mu.Unlock() // Started will ask again
		return
	}
	more := h.budget.take(h.uid, OutputWindow-c.grant)
	c.grant += more
	full := c.grant >= OutputWindow
	h.mu.Unlock()
	if full {
		h.budget.unwait(h, id)
	}
	if more > 0 {
		_ = h.send(msgCredit{ID: id, N: uint32(more)})
	}
}

// returnGrantLocked gives a command's whole reservation back: it holds
// nothing in the daemon any more.
func (h *workerHandle) returnGrantLocked(id string, c *dcmd) {
	h.shrinkGrantLocked(c, 0)
	h.budget.unwait(h, id)
}

// outputFloor is the credit every command has whatever the budget says:
// its first bytes are not reserved, so a command started while the
// budget is spent (by floods nobody reads, even the same account's) still
// moves one chunk per Receive instead of waiting for budget that the
// waiting floods would take first. The daemon's bound is therefore the
// budget plus outputFloor per live command.
const outputFloor = maxOutChunk

// shrinkGrantLocked lowers a command's grant to g and returns the
// reserved bytes above the floor to the budget.
func (h *workerHandle) shrinkGrantLocked(c *dcmd, g int) {
	reserved := func(g int) int { return max(0, g-outputFloor) }
	h.budget.give(h.uid, reserved(c.grant)-reserved(g))
	c.grant = g
}

func (h *workerHandle) Release(id string) error {
	h.mu.Lock()
	c, err := h.lookupLocked(id)
	if err != nil {
		h.mu.Unlock()
		return err
	}
	c.state = cmdReleasing
	close(c.gone)
	h.returnGrantLocked(id, c) // output crossing the Release is dropped
	h.mu.Unlock()
	return h.send(msgRelease{ID: id})
}

// --- reading ---

func (h *workerHandle) readLoop() {
	var (
		buf = make([]byte, 0, smallFrameCap)
		err error
		typ byte
		p   []byte
	)
	large := false
	for {
		typ, p, buf, err = readFrame(h.r, buf)
		if err == nil && !large && len(p) > frameReadSmall {
			// Output streams: read ahead in larger pieces from now on,
			// the small reader's buffered bytes first (frameReadSmall).
			h.r, large = bufio.NewReaderSize(h.r, frameReadLarge), true
		}
		if err != nil {
			if errors.Is(err, errFrameTooLarge) || errors.Is(err, errFrameEmpty) {
				err = fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			break
		}
		var m msg
		if m, err = decodeWorkerToDaemon(typ, p); err != nil {
			err = fmt.Errorf("%w: %w", ErrProtocol, err)
			break
		}
		var ev *Event
		var sink EventSink
		if sink, ev, err = h.apply(m); err != nil {
			break
		}
		if ev != nil {
			// Checked by apply; outside h.mu, since the sink takes the
			// session's locks, and before the next frame is read, so a
			// command's output always comes before its exit.
			sink(*ev)
		}
	}
	h.end(err)
}

var errFatal = errors.New("worker reported a fatal error")

// apply checks one frame against the commands' state and records it. It
// returns the event the caller must hand to the sink, if any.
func (h *workerHandle) apply(m msg) (EventSink, *Event, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	violation := func(format string, args ...any) (EventSink, *Event, error) {
		return nil, nil, fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
	}
	switch m := m.(type) {
	case msgStarted:
		c := h.cmds[m.ID]
		switch {
		case c != nil && c.state == cmdStarting:
			c.state, c.pid = cmdRunning, int(m.Pid)
			c.started <- nil
			if c.grant < OutputWindow {
				h.budget.wait(h, m.ID) // tops it up as budget comes back
			}
		case c != nil && c.state == cmdReleasing && c.expectStart:
			c.expectStart = false
		default:
			return violation("Started for %q", m.ID)
		}
		h.startAnsweredLocked()
	case msgStartErr:
		c := h.cmds[m.ID]
		switch {
		case c != nil && c.state == cmdStarting:
			delete(h.cmds, m.ID)
			close(c.gone)
			h.returnGrantLocked(m.ID, c)
			if h.pids != nil && strings.Contains(m.Msg, syscall.EAGAIN.Error()) {
				// The fork met pids.max. The text is the worker's (so the
				// user's), but it can only choose its own shell's fault.
				c.started <- fmt.Errorf("%w: %w: %s", ErrStartFailed, ErrTooManyProcs, m.Msg)
			} else {
				c.started <- fmt.Errorf("%w: %s", ErrStartFailed, m.Msg)
			}
		case c != nil && c.state == cmdReleasing && c.expectStart:
			c.expectStart = false
		default:
			return violation("StartErr for %q", m.ID)
		}
		h.startAnsweredLocked()
	case msgStdinAck:
		c := h.cmds[m.ID]
		if c == nil || !c.stdinOut {
			return violation("StdinAck for %q without a pending Stdin", m.ID)
		}
		c.stdinOut = false
		select {
		case c.ackCh <- m.Dropped:
		default:
		}
	case msgOutput:
		c := h.cmds[m.ID]
		switch {
		case c != nil && c.state == cmdRunning:
			c.window += len(m.Data)
			if c.window > c.grant {
				return violation("output of %q beyond its credit (%d bytes unacknowledged, %d granted)", m.ID, c.window, c.grant)
			}
			ev := Event{Kind: EventOutput, CommandID: m.ID, Stream: m.Stream, Data: m.Data}
			if h.sink != nil {
				return h.sink, &ev, nil // Data lent for the call (EventSink)
			}
			ev.Data = bytes.Clone(m.Data) // queued past this frame
			h.pushLocked(ev)
		case c != nil && c.state == cmdReleasing && !c.expectStart:
			// sent before the worker saw Release: dropped
		default:
			return violation("Output for %q", m.ID)
		}
	case msgExit:
		c := h.cmds[m.ID]
		switch {
		case c != nil && c.state == cmdRunning:
			c.state = cmdExited
			// Only what it holds stays reserved (returned as consumed).
			h.shrinkGrantLocked(c, c.window)
			h.budget.unwait(h, m.ID)
			ev := Event{Kind: EventExit, CommandID: m.ID, ExitCode: m.Code}
			if h.sink != nil {
				return h.sink, &ev, nil
			}
			h.pushLocked(ev)
		case c != nil && c.state == cmdReleasing && !c.expectStart:
		default:
			return violation("Exit for %q", m.ID)
		}
	case msgReleased:
		c := h.cmds[m.ID]
		if c == nil || c.state != cmdReleasing || c.expectStart {
			return violation("Released for %q", m.ID)
		}
		delete(h.cmds, m.ID)
	case msgFatal:
		return nil, nil, fmt.Errorf("%w: %q", errFatal, m.Msg)
	default:
		return violation("frame 0x%02x after Setup", m.frameType())
	}
	return nil, nil, nil
}

// pushLocked queues an event, merging output into the previous event of the
// same command and stream while it is still queued, so a worker sending many
// tiny chunks cannot multiply the queue's overhead.
func (h *workerHandle) pushLocked(ev Event) {
	if n := len(h.q); n > 0 && ev.Kind == EventOutput {
		last := &h.q[n-1]
		if last.Kind == EventOutput && last.CommandID == ev.CommandID && last.Stream == ev.Stream &&
			len(last.Data)+len(ev.Data) <= maxOutChunk {
			last.Data = append(last.Data, ev.Data...)
			return
		}
	}
	h.q = append(h.q, ev)
	h.qcond.Signal()
}

// pump delivers queued events until the worker is gone and the queue is
// drained, or Close stops it; then it closes Events.
func (h *workerHandle) pump() {
	defer close(h.pumpDone)
	defer close(h.events)
	for {
		h.mu.Lock()
		for len(h.q) == 0 && !h.ended && !h.stopped {
			h.qcond.Wait()
		}
		if h.stopped || len(h.q) == 0 {
			h.mu.Unlock()
			return
		}
		ev := h.q[0]
		h.q[0] = Event{}
		h.q = h.q[1:]
		h.mu.Unlock()
		select {
		case h.events <- ev:
		case <-h.stopPump:
			return
		}
	}
}

// end runs when the reader stops: the socket closed or the worker broke the
// protocol. The worker is killed and reaped; after an unexpected end every
// process of the shell is killed too (nothing can control them any more).
func (h *workerHandle) end(readErr error) {
	h.mu.Lock()
	closing := h.closing
	h.mu.Unlock()

	var err error
	switch {
	case closing:
	case errors.Is(readErr, ErrProtocol):
		h.hostile(readErr)
		err = fmt.Errorf("%w: %w", ErrWorkerGone, readErr)
	case errors.Is(readErr, errFatal):
		h.log.Error("worker failed", slog.Any("error", readErr))
		err = fmt.Errorf("%w: %w", ErrWorkerGone, readErr)
	}
	if !closing && err == nil {
		// The socket closed: the worker died or is about to.
		select {
		case <-h.proc.Exited():
		case <-time.After(2 * time.Second):
		}
	}
	_ = h.proc.Kill()
	select {
	case <-h.proc.Exited():
	case <-time.After(5 * time.Second):
		h.log.Error("worker did not exit after SIGKILL")
	}
	if !closing && err == nil {
		err = fmt.Errorf("%w (%s)", ErrWorkerGone, h.proc.State())
		h.log.Warn("worker ended", slog.Any("error", err))
	}
	if !closing {
		if err := h.reap.killAll(); err != nil {
			h.log.Error("killing the shell's processes", slog.Any("error", err))
		}
	}
	_ = h.conn.Close()

	h.mu.Lock()
	h.ended = true
	if !h.closing {
		h.err = err
	}
	for id, c := range h.cmds {
		if c.state == cmdStarting {
			c.state = cmdReleasing
		}
		h.returnGrantLocked(id, c)
	}
	h.qcond.Broadcast()
	h.mu.Unlock()
	close(h.done)
}

// Close kills every process of the shell, reaps the worker and stops every
// goroutine of the handle. Idempotent.
//
// Every process but the worker dies first, and the worker, a child
// subreaper, reaps them, so not even a zombie is left to init; then the
// worker is killed and reaped. The processes are found in the shell's
// cgroup and below the worker in the process tree, never by a scan of every
// process on the host, and no lock is held while Close waits.
func (h *workerHandle) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closing = true // from now on no Start is sent
		var startsIdle chan struct{}
		if h.pendingStarts > 0 {
			startsIdle = make(chan struct{})
			h.startsIdle = startsIdle
		}
		h.mu.Unlock()
		var errs []error
		complete, err := h.reap.drain(startsIdle, h.done)
		if err != nil {
			errs = append(errs, err)
		}
		_ = h.proc.Kill()
		select {
		case <-h.proc.Exited():
		case <-time.After(5 * time.Second):
			errs = append(errs, errors.New("isolation: worker did not exit after SIGKILL"))
		}
		_ = h.conn.Close()
		<-h.done

		h.mu.Lock()
		h.stopped = true
		h.qcond.Broadcast()
		h.mu.Unlock()
		close(h.stopPump)
		<-h.pumpDone

		h.stderr.finish(time.Second)
		if err := h.reap.sweep(complete); err != nil {
			errs = append(errs, err)
		}
		if h.ccacheDir != "" {
			// After every process of the shell is gone: nothing can use
			// the ticket any more.
			if err := removeCCache(h.ccacheDir); err != nil {
				errs = append(errs, err)
			} else {
				h.log.Info("delegated Kerberos credentials destroyed")
			}
		}
		h.closeErr = errors.Join(errs...)
		if h.closeErr != nil {
			h.log.Warn("closing worker", slog.Any("error", h.closeErr))
		}
	})
	return h.closeErr
}

// stderrLog copies a worker's stderr into the log, bounded: it is text a
// user-owned process wrote, so each line is a field value, cut at 1 KiB,
// and at most 64 KiB are logged per worker. It runs from the worker's start;
// a pooled worker (pool.go) gets its shell's logger when it is assigned.
type stderrLog struct {
	f    *os.File
	log  atomic.Pointer[slog.Logger]
	done chan struct{} // closed when the copy ends
}

func newStderrLog(f *os.File, log *slog.Logger) *stderrLog {
	l := &stderrLog{f: f, done: make(chan struct{})}
	l.log.Store(log)
	go l.run()
	return l
}

func (l *stderrLog) run() {
	defer close(l.done)
	defer l.f.Close()
	sc := bufio.NewScanner(l.f)
	sc.Buffer(make([]byte, 4096), 64<<10)
	budget := 64 << 10
	for sc.Scan() {
		line := sc.Text()
		if budget <= 0 {
			continue
		}
		if len(line) > 1024 {
			line = line[:1024]
		}
		budget -= len(line)
		l.log.Load().Warn("worker stderr", slog.String("line", line))
		if budget <= 0 {
			l.log.Load().Warn("worker stderr: further output not logged")
		}
	}
	_, _ = io.Copy(io.Discard, l.f)
}

// finish waits up to wait for the copy to reach the end of the stream (the
// worker and everything that inherited its stderr are gone), then closes it.
func (l *stderrLog) finish(wait time.Duration) {
	if l == nil {
		return
	}
	select {
	case <-l.done:
	case <-time.After(wait):
		l.f.Close()
		<-l.done
	}
}

// checkOutgoing makes sure the worker will accept what we send: the message
// is encoded and decoded with the worker's own decoder.
func checkOutgoing(m msg) error {
	b, err := appendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = decodeDaemonToWorker(b[4], b[frameHeader:])
	return err
}
