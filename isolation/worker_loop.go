package isolation

// The worker's command loop, after Setup: it runs in the worker process
// only, as the account. The daemon's end of the same protocol is handle.go.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// --- the worker's loop ---

// workerLoop serves one daemon connection: it starts commands as its
// children, moves their output out under the credit window, feeds their
// stdin from bounded queues, and reports exits. The reading goroutine
// (serve) never blocks on a command.
type workerLoop struct {
	conn *net.UnixConn
	r    io.Reader
	env  []string
	out  *outQueue

	mu     sync.Mutex
	cmds   map[string]*wcmd // live and exited, until Release
	byPid  map[int]*wcmd    // unreaped children
	closed bool

	stopOnce sync.Once
	sigchld  chan os.Signal
	done     chan struct{}
}

type wcmd struct {
	id  string
	pid int
	w   *workerLoop

	mu       sync.Mutex
	cond     *sync.Cond // window, stdin queue and release changes
	window   int        // output bytes that may still be sent
	inflight int        // window reserved by a pump blocked in read
	released bool
	reaped   bool
	status   unix.WaitStatus
	open     int // output pipes not yet at EOF
	exitSent bool
	outR     [2]*os.File

	stdinW      *os.File
	stdinOnce   sync.Once
	sq          []stdinChunk
	sqBytes     int
	sqEOF       bool        // eof queued
	stdinDone   bool        // no more stdin will be written
	pending     *stdinChunk // waiting for room in the queue (not yet acknowledged)
	stdinFailed bool
}

// stdinChunk is the data of one Stdin frame, in the buffer the frame was
// read into: serve hands that buffer to the command with the data in it
// rather than copying the data out (up to a MiB per frame), and feed gives
// it back to frameBufs once the data is in the pipe.
type stdinChunk struct {
	data, buf []byte
	eof       bool
}

// frameBufs holds frame buffers for serve to read the next frame into, the
// ones Stdin data went out of (of *[]byte).
var frameBufs sync.Pool

// recycle gives a chunk's buffer back: its data has been written or dropped.
func (s stdinChunk) recycle() {
	if s.buf != nil {
		b := s.buf[:0]
		frameBufs.Put(&b)
	}
}

func newWorkerLoop(conn *net.UnixConn, r io.Reader, env []string) *workerLoop {
	w := &workerLoop{
		conn:    conn,
		r:       r,
		env:     env,
		cmds:    map[string]*wcmd{},
		byPid:   map[int]*wcmd{},
		sigchld: make(chan os.Signal, 1),
		done:    make(chan struct{}),
	}
	w.out = newOutQueue(conn, w.stop)
	return w
}

// stop ends serve: the read fails and the loop shuts down.
func (w *workerLoop) stop() {
	w.stopOnce.Do(func() {
		close(w.done)
		_ = w.conn.SetReadDeadline(time.Unix(1, 0))
	})
}

// serve runs until the daemon closes the socket (io.EOF), stop is called or
// the daemon breaks the protocol. Every command is killed before it returns.
func (w *workerLoop) serve() (err error) {
	signal.Notify(w.sigchld, unix.SIGCHLD)
	go w.reaper()
	defer func() {
		w.shutdown()
		signal.Stop(w.sigchld)
	}()
	var buf []byte
	for {
		var typ byte
		var p []byte
		if buf == nil {
			if b, ok := frameBufs.Get().(*[]byte); ok {
				buf = *b
			}
		}
		typ, p, buf, err = readFrame(w.r, buf)
		if err != nil {
			select {
			case <-w.done:
				return io.EOF
			default:
			}
			if errors.Is(err, errFrameTooLarge) || errors.Is(err, errFrameEmpty) {
				return w.protocolError(err)
			}
			return err
		}
		m, err := decodeDaemonToWorker(typ, p)
		if err != nil {
			return w.protocolError(err)
		}
		kept, err := w.handle(m, buf)
		if err != nil {
			return w.protocolError(err)
		}
		if kept {
			buf = nil // a command's stdin queue has it now
		}
	}
}

// protocolError tells the daemon why the worker gives up.
func (w *workerLoop) protocolError(err error) error {
	err = fmt.Errorf("protocol violation by the daemon: %w", err)
	w.out.push(msgFatal{Msg: truncate(err.Error(), maxMsgLen)})
	w.out.flush(time.Second)
	return err
}

// handle acts on one frame from the daemon, decoded from buf. kept reports
// that a command's stdin queue took buf (a Stdin's Data is in it).
func (w *workerLoop) handle(m msg, buf []byte) (kept bool, err error) {
	switch m := m.(type) {
	case msgStart:
		return false, w.start(m)
	case msgStdin:
		c, err := w.lookup(m.ID)
		if err != nil {
			return false, err
		}
		return c.stdin(stdinChunk{data: m.Data, buf: buf, eof: m.EOF})
	case msgSignal:
		c, err := w.lookup(m.ID)
		if err != nil {
			return false, err
		}
		c.signal(m.Sig)
		return false, nil
	case msgCredit:
		c, err := w.lookup(m.ID)
		if err != nil {
			return false, err
		}
		return false, c.credit(int(m.N))
	case msgRelease:
		w.release(m.ID)
		return false, nil
	default:
		return false, fmt.Errorf("frame 0x%02x after Setup", m.frameType())
	}
}

func (w *workerLoop) lookup(id string) (*wcmd, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.cmds[id]
	if c == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknown, id)
	}
	return c, nil
}

// start forks the command on this (locked) thread. The lock on w.mu keeps
// the reaper from reaping the child before it is registered.
func (w *workerLoop) start(m msgStart) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, dup := w.cmds[m.ID]; dup {
		return fmt.Errorf("duplicate command id %q", m.ID)
	}
	fail := func(err error) error {
		w.out.push(msgStartErr{ID: m.ID, Msg: truncate(err.Error(), maxMsgLen)})
		return nil
	}
	var path string
	var argv []string
	if len(m.Argv) > 0 {
		p, err := exec.LookPath(m.Argv[0])
		if err != nil {
			return fail(err)
		}
		path, argv = p, m.Argv
	} else {
		path, argv = "/bin/sh", []string{"/bin/sh", "-c", m.Line}
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return fail(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return fail(err)
	}
	// Fd() puts the child's ends in blocking mode, as a child expects.
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   w.env,
		Files: []uintptr{inR.Fd(), outW.Fd(), errW.Fd()},
		Sys: &syscall.SysProcAttr{
			Setpgid:   true, // its own process group: signals reach the whole group
			Pdeathsig: syscall.SIGKILL,
		},
	})
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return fail(fmt.Errorf("%s: %w", path, err))
	}
	c := &wcmd{id: m.ID, pid: pid, w: w, window: int(m.Window), open: 2, stdinW: inW, outR: [2]*os.File{outR, errR}}
	c.cond = sync.NewCond(&c.mu)
	w.cmds[m.ID] = c
	w.byPid[pid] = c
	w.out.push(msgStarted{ID: m.ID, Pid: uint32(pid)})
	go c.pump(Stdout, outR)
	go c.pump(Stderr, errR)
	go c.feed()
	if fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK); err == nil {
		go w.awaitExit(c, os.NewFile(uintptr(fd), "pidfd"))
	} // else (before Linux 5.10) the SIGCHLD reaper alone reaps it
	return nil
}

// awaitExit reaps c's process once its pidfd, in Go's poller, reports the
// exit: one wake-up, where SIGCHLD takes two (the runtime's signal
// goroutine, then the reaper's) before the Exit a waiting Receive answers
// with. The reaper may still get there first, as it does for every other
// child; then c is no longer under its pid and this does nothing.
func (w *workerLoop) awaitExit(c *wcmd, pf *os.File) {
	defer pf.Close()
	if rc, err := pf.SyscallConn(); err == nil {
		_ = rc.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 0)
			return err != unix.EINTR && (err != nil || n > 0)
		})
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byPid[c.pid] != c {
		return // reaped already
	}
	// Still a zombie, so the pid is still c's.
	var ws unix.WaitStatus
	if pid, err := unix.Wait4(c.pid, &ws, unix.WNOHANG, nil); pid == c.pid && err == nil {
		delete(w.byPid, c.pid)
		c.reapedWith(ws)
	}
}

// reaper collects every exited child on SIGCHLD without holding a thread per
// command (a blocked wait would cost one OS thread, and threads count
// against the shell's process limit).
func (w *workerLoop) reaper() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-w.sigchld:
		case <-tick.C:
		case <-w.done:
			return
		}
		w.mu.Lock()
		// The worker is a child subreaper: everything its commands
		// orphan becomes its child and is reaped here.
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			if c := w.byPid[pid]; c != nil {
				delete(w.byPid, pid)
				c.reapedWith(ws)
			}
		}
		w.mu.Unlock()
	}
}

func (w *workerLoop) release(id string) {
	w.mu.Lock()
	c := w.cmds[id]
	delete(w.cmds, id)
	w.mu.Unlock()
	if c == nil {
		// Benign: the command failed to start, and the daemon's Release
		// crossed our StartErr.
		w.out.push(msgReleased{ID: id})
		return
	}
	c.mu.Lock()
	c.released = true
	if !c.reaped {
		_ = unix.Kill(-c.pid, unix.SIGKILL)
	}
	c.stopStdinLocked()
	c.out().push(msgReleased{ID: id}) // ordered after everything this command sent
	c.cond.Broadcast()
	c.mu.Unlock()
	// Unblock the pumps even if an escaped grandchild still holds the pipes.
	for _, f := range c.outR {
		f.Close()
	}
}

// shutdown kills every command's process group and everything left in the
// worker's session.
func (w *workerLoop) shutdown() {
	w.stop()
	w.mu.Lock()
	w.closed = true
	all := make(map[*wcmd]bool)
	for _, c := range w.cmds {
		all[c] = true
	}
	for _, c := range w.byPid {
		all[c] = true
	}
	w.mu.Unlock()
	for c := range all {
		_ = unix.Kill(-c.pid, unix.SIGKILL)
		c.mu.Lock()
		c.released = true
		c.stopStdinLocked()
		c.mu.Unlock()
		for _, f := range c.outR {
			f.Close()
		}
	}
	// Kill everything below the worker (a child subreaper: every process
	// of the shell is below it) and reap it, round after round, so that
	// what a dying process forked is caught too and nothing is left for
	// init, not even a zombie.
	self, uid := os.Getpid(), uint32(os.Getuid())
	deadline := time.Now().Add(2 * time.Second)
	for pause := 250 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		if killBelow(self, uid) < 0 {
			killSession(self, uid, self) // no children files: the session too
		}
		if reapChildren() || time.Now().After(deadline) {
			break
		}
		time.Sleep(pause)
	}
	w.out.close()
}

// reapChildren reaps every child that has exited and reports whether none
// is left (ECHILD).
func reapChildren() bool {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ECHILD) {
			return true
		}
		if pid <= 0 || err != nil {
			return false
		}
	}
}

func (c *wcmd) out() *outQueue { return c.w.out }

// reapedWith is called under w.mu by the reaper or awaitExit.
func (c *wcmd) reapedWith(ws unix.WaitStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reaped = true
	c.status = ws
	c.stopStdinLocked() // a command that exited just drops its stdin
	c.maybeExitLocked()
}

func (c *wcmd) maybeExitLocked() {
	if c.reaped && c.open == 0 && !c.exitSent && !c.released {
		c.exitSent = true
		c.out().push(msgExit{ID: c.id, Code: exitCode(c.status)})
	}
}

// exitCode is what sh reports: the exit status, or 128+signal.
func exitCode(ws unix.WaitStatus) int32 {
	switch {
	case ws.Exited():
		return int32(ws.ExitStatus())
	case ws.Signaled():
		return 128 + int32(ws.Signal())
	default:
		return 255
	}
}

// pump moves one output pipe to the daemon, never more than the window.
func (c *wcmd) pump(stream Stream, f *os.File) {
	buf := make([]byte, maxOutChunk)
	for {
		// Credit is reserved only once the pipe has something to read (or
		// ended): a pump blocked in read holds its reservation, so a quiet
		// stderr would otherwise sit on a small window (a command started
		// on the output budget's floor) while stdout waits for it.
		waitReadable(f)
		c.mu.Lock()
		for c.window == 0 && !c.released {
			c.cond.Wait()
		}
		if c.released {
			c.mu.Unlock()
			break
		}
		n := min(c.window, maxOutChunk)
		c.window -= n // reserved while reading
		c.inflight += n
		c.mu.Unlock()

		k, err := f.Read(buf[:n])

		c.mu.Lock()
		c.inflight -= n
		c.window += n - k
		if k > 0 && !c.released {
			c.out().push(msgOutput{ID: c.id, Stream: stream, Data: buf[:k]})
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		if err != nil {
			break
		}
	}
	f.Close()
	c.mu.Lock()
	c.open--
	c.maybeExitLocked()
	c.mu.Unlock()
}

// waitReadable returns once f has data or reached its end (or at once when
// f cannot be polled: the read then blocks as before).
func waitReadable(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err != unix.EINTR && (err != nil || n > 0)
	})
}

func (c *wcmd) credit(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.window+c.inflight+n > OutputWindow {
		return fmt.Errorf("credit %d for %q overflows the window", n, c.id)
	}
	c.window += n
	c.cond.Broadcast()
	return nil
}

func (c *wcmd) signal(s Signal) {
	sig := map[Signal]unix.Signal{SignalInterrupt: unix.SIGINT, SignalQuit: unix.SIGQUIT, SignalTerminate: unix.SIGKILL}[s]
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		return
	}
	// After the leader is reaped its group may live on (background jobs);
	// terminate still reaches them.
	if !c.reaped || s == SignalTerminate {
		_ = unix.Kill(-c.pid, sig)
	}
}

// stdin queues a Stdin frame's data, or holds it until the queue has room;
// the daemon has at most one unacknowledged Stdin per command. kept reports
// that the queue took m's buffer.
func (c *wcmd) stdin(m stdinChunk) (kept bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending != nil {
		return false, fmt.Errorf("second Stdin for %q before its acknowledgement", c.id)
	}
	if c.stdinDone || c.sqEOF || c.released {
		c.out().push(msgStdinAck{ID: c.id, Dropped: true})
		return false, nil
	}
	if len(m.data) == 0 {
		m.buf = nil // nothing to keep it for
	}
	if c.sqBytes > 0 && c.sqBytes+len(m.data) > stdinQueueCap {
		c.pending = &m
		return m.buf != nil, nil
	}
	c.enqueueLocked(m)
	return m.buf != nil, nil
}

func (c *wcmd) enqueueLocked(m stdinChunk) {
	if len(m.data) > 0 {
		c.sq = append(c.sq, m)
		c.sqBytes += len(m.data)
	}
	if m.eof {
		c.sqEOF = true
	}
	c.out().push(msgStdinAck{ID: c.id})
	c.cond.Broadcast()
}

// stopStdinLocked drops queued stdin and closes the pipe.
func (c *wcmd) stopStdinLocked() {
	c.stdinDone = true
	for _, s := range c.sq {
		s.recycle()
	}
	c.sq, c.sqBytes = nil, 0
	if c.pending != nil {
		c.pending.recycle()
		c.pending = nil
		c.out().push(msgStdinAck{ID: c.id, Dropped: true})
	}
	c.stdinOnce.Do(func() { c.stdinW.Close() })
	c.cond.Broadcast()
}

// feed writes the stdin queue to the pipe.
func (c *wcmd) feed() {
	for {
		c.mu.Lock()
		for len(c.sq) == 0 && !c.sqEOF && !c.stdinDone {
			c.cond.Wait()
		}
		if c.stdinDone {
			c.mu.Unlock()
			return
		}
		if len(c.sq) == 0 { // eof after the data
			c.stdinDone = true
			c.stdinOnce.Do(func() { c.stdinW.Close() })
			if c.pending != nil {
				c.pending.recycle()
				c.pending = nil
				c.out().push(msgStdinAck{ID: c.id, Dropped: true})
			}
			c.mu.Unlock()
			return
		}
		chunk := c.sq[0]
		c.sq[0] = stdinChunk{}
		c.sq = c.sq[1:]
		c.mu.Unlock()

		_, err := c.stdinW.Write(chunk.data)
		chunk.recycle()

		c.mu.Lock()
		c.sqBytes -= len(chunk.data)
		if c.sqBytes < 0 {
			c.sqBytes = 0
		}
		if err != nil && !c.stdinDone {
			// The command closed its stdin (EPIPE): nothing more can go in.
			c.stdinFailed = true
			c.stopStdinLocked()
		}
		if c.pending != nil && (c.sqBytes == 0 || c.sqBytes+len(c.pending.data) <= stdinQueueCap) {
			p := *c.pending
			c.pending = nil
			c.enqueueLocked(p)
		}
		c.mu.Unlock()
	}
}

// --- outbound queue ---

// outQueue is the worker's single writer: frames are encoded when pushed
// and written in order, so no reader ever blocks on the socket. A frame
// pushed while nothing is queued or being written is tried at once with
// one non-blocking write from the pushing goroutine; what the socket does
// not take, and every frame pushed behind others or larger than
// directWriteMax, is written by the queue's goroutine. The direct write
// spares a goroutine wake-up on the paths a client waits on (Started,
// Exit, a command's short output): the warm command row's Command and
// Receive each waited for one. Output is bounded by the credit windows;
// control frames by the daemon's own requests.
type outQueue struct {
	conn    net.Conn
	raw     syscall.RawConn // conn's, for the direct write; nil: none
	onError func()

	mu     sync.Mutex
	cond   *sync.Cond
	q      [][]byte
	busy   bool
	failed bool
}

func newOutQueue(conn net.Conn, onError func()) *outQueue {
	o := &outQueue{conn: conn, onError: onError}
	if sc, ok := conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			o.raw = rc
		}
	}
	o.cond = sync.NewCond(&o.mu)
	go o.run()
	return o
}

func (o *outQueue) push(m msg) {
	b, err := appendFrame(nil, m)
	if err != nil {
		// Only a bug can produce this: every field is bounded below the cap.
		b, _ = appendFrame(nil, msgFatal{Msg: "worker: " + err.Error()})
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failed {
		return
	}
	if len(o.q) == 0 && !o.busy && len(b) <= directWriteMax {
		// Nothing ahead of it, and o.mu keeps the writer out meanwhile.
		b = b[o.tryWrite(b):]
		if len(b) == 0 {
			return
		}
	}
	o.q = append(o.q, b)
	o.cond.Broadcast()
}

// directWriteMax bounds the frames written directly: control frames and
// small output. A stream's 64 KiB chunks go through the writer, so that
// the pump reads the pipe's next chunk while the writer sends this one
// (the HTTPS stdout row ran 5% slower with every frame written by its
// pump).
const directWriteMax = 8 << 10

// tryWrite makes one non-blocking write of b and returns how much of it
// went out; on an error it returns 0 and leaves the error to the writer,
// whose write meets it too. o.mu held.
func (o *outQueue) tryWrite(b []byte) int {
	if o.raw == nil {
		return 0
	}
	n := 0
	_ = o.raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			k, err := unix.Write(int(fd), b[n:])
			if err == unix.EINTR {
				continue
			}
			if err != nil || k <= 0 {
				break
			}
			n += k
		}
		return true // never wait for the socket here
	})
	return n
}

func (o *outQueue) run() {
	for {
		o.mu.Lock()
		for len(o.q) == 0 && !o.failed {
			o.cond.Wait()
		}
		if o.failed {
			o.mu.Unlock()
			return
		}
		batch := o.q
		o.q = nil
		o.busy = true
		o.mu.Unlock()

		bufs := net.Buffers(batch)
		_, err := bufs.WriteTo(o.conn)

		o.mu.Lock()
		o.busy = false
		if err != nil {
			o.failed = true
			o.q = nil
		}
		o.cond.Broadcast()
		o.mu.Unlock()
		if err != nil {
			o.onError()
			return
		}
	}
}

// close stops the writer (what is queued is dropped).
func (o *outQueue) close() {
	o.mu.Lock()
	o.failed = true
	o.q = nil
	o.cond.Broadcast()
	o.mu.Unlock()
}

// flush waits until everything pushed so far is written (or timeout).
func (o *outQueue) flush(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		o.mu.Lock()
		o.cond.Broadcast()
		o.mu.Unlock()
	})
	defer t.Stop()
	o.mu.Lock()
	defer o.mu.Unlock()
	for (len(o.q) > 0 || o.busy) && !o.failed && time.Now().Before(deadline) {
		o.cond.Wait()
	}
}
