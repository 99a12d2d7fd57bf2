package session

// The PSRP bridge: one per PowerShell shell, between the WinRS operations of
// a runspace pool and PowerShell's out-of-process transport on the pwsh
// process's stdin/stdout (psrp/outofproc.go has the packets).
//
//   - One writer: every packet to pwsh goes through send, which holds the
//     writer until pwsh acknowledged it (pwsh handles each line on a thread-
//     pool thread, so a second packet before the ack could overtake the
//     first). An ack that does not arrive within AckTimeout ends the shell.
//   - One reader: each line from pwsh is parsed strictly; Data is split into
//     whole fragments and queued per GUID (Guid.Empty = the pool, else a
//     pipeline id), so a Receive never splits a fragment. The fragments are
//     also reassembled (keeping at most 64 KiB of each message) only to read
//     the message headers: a pipeline is complete when its PIPELINE_STATE
//     says Stopped, Completed or Failed — the transport has no other
//     "finished" signal.
//   - Bounded: at most MaxBuffered bytes of output wait for Receives (also
//     while the client is disconnected); beyond that the reader stops
//     reading, so pwsh blocks on its stdout instead of growing our memory.
//   - Hostile pwsh (it runs as the user): a malformed line, an ack nobody
//     waits for, fragments out of order, a line over its cap, EOF or exit
//     all end the bridge with an error; every waiter is woken with it and
//     pwsh is killed. Nothing waits forever.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/winrmd/winrmd/session/psrp"
	"github.com/winrmd/winrmd/session/wsman"
)

// pwshPipe is what the bridge needs of the PowerShell process
// (isolation.PwshProcess).
type pwshPipe interface {
	io.Reader // stdout; ends with an error, never a quiet EOF
	WriteLine(ctx context.Context, line []byte) error
	CloseStdin(ctx context.Context) error
	Kill() error
	Close() error
}

// bridgeLimits bound one bridge.
type bridgeLimits struct {
	MaxBuffered int           // output bytes queued for Receives
	MaxData     int           // decoded bytes of one Data packet, either way
	AckTimeout  time.Duration // one packet's wait for its acknowledgement
	// Xpress: Receives compress each fragment, which may add its chunk
	// headers (wsman.XpressOverhead) to the response.
	Xpress bool
}

func (l bridgeLimits) withDefaults() bridgeLimits {
	if l.MaxBuffered <= 0 {
		l.MaxBuffered = 16 << 20
	}
	if l.MaxData <= 0 {
		l.MaxData = psrp.DefaultMaxData
	}
	if l.AckTimeout <= 0 {
		// The PowerShell client gives pwsh 60 s to acknowledge a Close.
		l.AckTimeout = 60 * time.Second
	}
	return l
}

// Errors of the bridge.
var (
	errPwshProtocol    = errors.New("PowerShell broke the out-of-process protocol")
	errAckTimeout      = errors.New("PowerShell did not acknowledge in time")
	errUnknownPipeline = errors.New("unknown pipeline")
	errBridgeClosed    = errors.New("the runspace pool was closed")
)

// outQueue is the output of one GUID.
type outQueue struct {
	frags  [][]byte // whole fragments, wire form
	bytes  int
	defrag psrp.Defragmenter
	// doneAt counts the queued fragments up to and including the one that
	// completed the terminal PIPELINE_STATE; -1 while the pipeline runs.
	doneAt int
	state  psrp.InvocationState
	// delivered: the terminal state went out in a Receive.
	delivered bool
}

func newOutQueue() *outQueue {
	return &outQueue{doneAt: -1, defrag: psrp.Defragmenter{Truncate: true, MaxMessage: psrp.DefaultMaxMessage}}
}

type bridge struct {
	p   pwshPipe
	log *zap.Logger
	lim bridgeLimits

	wmu sync.Mutex // the one writer

	mu       sync.Mutex
	space    *sync.Cond // the reader waits here for buffer space
	acks     psrp.AckWaiter
	ackDone  chan struct{} // closed when the outstanding packet was acknowledged
	queues   map[psrp.GUID]*outQueue
	buffered int
	poolDown bool // RUNSPACEPOOL_STATE Closed or Broken seen
	failing  bool // fail was called (err follows once pwsh was killed)
	err      error
	dead     chan struct{}
	changed  chan struct{} // closed and replaced on every queue change
	readerWG sync.WaitGroup
}

func newBridge(p pwshPipe, log *zap.Logger, lim bridgeLimits) *bridge {
	b := &bridge{
		p: p, log: log, lim: lim.withDefaults(),
		queues:  map[psrp.GUID]*outQueue{psrp.NilGUID: newOutQueue()},
		dead:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	b.space = sync.NewCond(&b.mu)
	b.readerWG.Add(1)
	go b.read()
	return b
}

// fail ends the bridge (first error wins), wakes every waiter and kills
// pwsh. Called without b.mu.
func (b *bridge) fail(err error) {
	b.mu.Lock()
	first := !b.failing
	b.failing = true
	b.mu.Unlock()
	if !first {
		return
	}
	if !errors.Is(err, errBridgeClosed) {
		b.log.Warn("PowerShell bridge ended", zap.Error(err))
	}
	// pwsh dies before anyone hears of the end, so no caller can act on a
	// bridge whose process still runs.
	_ = b.p.Kill()
	b.mu.Lock()
	b.err = err
	close(b.dead)
	b.wakeLocked()
	b.space.Broadcast()
	b.mu.Unlock()
}

func (b *bridge) wakeLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Err is nil while the bridge works, then why it ended.
func (b *bridge) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Dead is closed when the bridge ended.
func (b *bridge) Dead() <-chan struct{} { return b.dead }

// read is the one reader of pwsh's stdout.
func (b *bridge) read() {
	defer b.readerWG.Done()
	lr := psrp.NewLineReader(b.p, psrp.MaxLineFor(b.lim.MaxData))
	for {
		line, err := lr.Line()
		if err != nil {
			if errors.Is(err, psrp.ErrLineTooLong) {
				err = fmt.Errorf("%w: %v", errPwshProtocol, err)
			}
			b.fail(err)
			return
		}
		pkt, err := psrp.ParseServerPacket(line, b.lim.MaxData)
		if err != nil {
			b.fail(fmt.Errorf("%w: %v", errPwshProtocol, err))
			return
		}
		if pkt.Kind != psrp.PacketData {
			if err := b.acked(pkt); err != nil {
				b.fail(fmt.Errorf("%w: %v", errPwshProtocol, err))
				return
			}
			continue
		}
		if err := b.queue(pkt); err != nil {
			b.fail(fmt.Errorf("%w: %v", errPwshProtocol, err))
			return
		}
	}
}

func (b *bridge) acked(pkt psrp.Packet) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.acks.Acked(pkt); err != nil {
		return err
	}
	close(b.ackDone)
	b.ackDone = nil
	return nil
}

// queue files the fragments of one Data packet under its GUID and waits
// while the buffer is full.
func (b *bridge) queue(pkt psrp.Packet) error {
	frags, err := psrp.SplitFragments(pkt.Data, b.lim.MaxData)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[pkt.GUID]
	if q == nil {
		// Output for a pipeline the client already closed (or never
		// created): nobody can receive it.
		b.log.Debug("dropping PowerShell output for an unknown pipeline", zap.String("pipeline", pkt.GUID.String()))
		return nil
	}
	for _, f := range frags {
		a, complete, err := q.defrag.Add(f)
		if err != nil {
			return err
		}
		q.frags = append(q.frags, psrp.AppendFragment(nil, f))
		n := psrp.FragmentHeaderLen + len(f.Blob)
		q.bytes += n
		b.buffered += n
		if !complete {
			continue
		}
		m, err := psrp.ParseMessage(a.Message)
		if err != nil {
			return err
		}
		switch {
		case !pkt.GUID.IsNil() && m.Type == psrp.PipelineState:
			v, err := psrp.StateOf(m.Data, "PipelineState")
			if err != nil {
				return err
			}
			if s := psrp.InvocationState(v); s.Terminal() && q.doneAt < 0 {
				q.doneAt, q.state = len(q.frags), s
			}
		case pkt.GUID.IsNil() && m.Type == psrp.RunspacePoolState:
			if v, err := psrp.StateOf(m.Data, "RunspaceState"); err == nil && (v == psrp.PoolClosed || v == psrp.PoolBroken) {
				b.poolDown = true
			}
		}
	}
	b.wakeLocked()
	for b.buffered > b.lim.MaxBuffered && b.err == nil {
		b.space.Wait()
	}
	return nil
}

// send writes one packet and waits for its acknowledgement.
func (b *bridge) send(ctx context.Context, pkt psrp.Packet) error {
	line, err := psrp.AppendPacket(nil, pkt)
	if err != nil {
		return err
	}
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return err
	}
	if err := b.acks.Sent(pkt); err != nil {
		b.mu.Unlock()
		return err
	}
	done := make(chan struct{})
	b.ackDone = done
	b.mu.Unlock()

	if err := b.p.WriteLine(ctx, line); err != nil {
		b.fail(fmt.Errorf("writing to PowerShell: %w", err))
		return b.Err()
	}
	// The ack is awaited even if the client goes away meanwhile: the next
	// packet must not overtake this one. AckTimeout bounds the wait.
	t := time.NewTimer(b.lim.AckTimeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-b.dead:
		return b.Err()
	case <-t.C:
		b.fail(fmt.Errorf("%w: %s for %s after %v", errAckTimeout, pkt.Kind, pkt.GUID, b.lim.AckTimeout))
		return b.Err()
	}
}

// sendData forwards fragments from the client (a Send payload, creationXml,
// a Command's arguments) to the pool (NilGUID) or a pipeline. The client's
// bytes must be whole fragments: pwsh would choke on anything else.
func (b *bridge) sendData(ctx context.Context, g psrp.GUID, stream psrp.StreamKind, data []byte) error {
	if len(data) == 0 {
		return nil // pwsh cannot read an empty Data packet; nothing to say
	}
	if _, err := psrp.SplitFragments(data, b.lim.MaxData); err != nil {
		return err
	}
	return b.send(ctx, psrp.Packet{Kind: psrp.PacketData, GUID: g, Stream: stream, Data: data})
}

// command creates pipeline pid (its output queue first, so nothing pwsh
// writes for it is dropped) and forwards its first fragments.
func (b *bridge) command(ctx context.Context, pid psrp.GUID, first []byte) error {
	if pid.IsNil() {
		return fmt.Errorf("%w: the empty GUID is the pool", errUnknownPipeline)
	}
	b.mu.Lock()
	if _, ok := b.queues[pid]; ok {
		b.mu.Unlock()
		return fmt.Errorf("pipeline %s exists already", pid)
	}
	b.queues[pid] = newOutQueue()
	b.mu.Unlock()
	if err := b.send(ctx, psrp.Packet{Kind: psrp.PacketCommand, GUID: pid}); err != nil {
		b.drop(pid)
		return err
	}
	if err := b.sendData(ctx, pid, psrp.StreamDefault, first); err != nil {
		return err
	}
	return nil
}

// hasPipeline reports whether pid is a live pipeline of this pool.
func (b *bridge) hasPipeline(pid psrp.GUID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.queues[pid]
	return ok && !pid.IsNil()
}

// stop asks pwsh to stop pipeline pid (ctrl_c).
func (b *bridge) stop(ctx context.Context, pid psrp.GUID) error {
	if !b.hasPipeline(pid) {
		return errUnknownPipeline
	}
	return b.send(ctx, psrp.Packet{Kind: psrp.PacketSignal, GUID: pid})
}

// closePipeline tells pwsh to forget pid (terminate) and drops its output.
func (b *bridge) closePipeline(ctx context.Context, pid psrp.GUID) error {
	if !b.hasPipeline(pid) {
		return errUnknownPipeline
	}
	err := b.send(ctx, psrp.Packet{Kind: psrp.PacketClose, GUID: pid})
	b.drop(pid)
	return err
}

func (b *bridge) drop(pid psrp.GUID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.queues[pid]; q != nil {
		b.buffered -= q.bytes
		delete(b.queues, pid)
		b.space.Broadcast()
		b.wakeLocked()
	}
}

// receive waits until g has output (or its terminal state) and takes whole
// fragments worth at most budget bytes (always at least one). done reports
// that the taken fragments include the pipeline's terminal state.
func (b *bridge) receive(ctx context.Context, g psrp.GUID, budget int) (frags [][]byte, done bool, err error) {
	for {
		b.mu.Lock()
		q := b.queues[g]
		if q == nil {
			b.mu.Unlock()
			return nil, false, errUnknownPipeline
		}
		if len(q.frags) > 0 {
			n, size := 0, 0
			for n < len(q.frags) {
				// Each fragment is one rsp:Stream element: its own
				// markup costs about 64 bytes of budget.
				c := len(q.frags[n]) + 64
				if b.lim.Xpress {
					c += wsman.XpressOverhead(len(q.frags[n]))
				}
				if n > 0 && size+c > budget {
					break
				}
				size += c
				n++
			}
			frags = append(frags, q.frags[:n]...)
			for _, f := range q.frags[:n] {
				q.bytes -= len(f)
				b.buffered -= len(f)
			}
			q.frags = append(q.frags[:0:0], q.frags[n:]...)
			if q.doneAt >= 0 {
				q.doneAt -= n
				if q.doneAt <= 0 {
					q.doneAt, done, q.delivered = 0, true, true
				}
			}
			b.space.Broadcast()
			b.mu.Unlock()
			return frags, done, nil
		}
		if q.delivered {
			b.mu.Unlock()
			return nil, true, nil
		}
		if b.err != nil {
			err := b.err
			b.mu.Unlock()
			return nil, false, err
		}
		wake := b.changed
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// pipelineState reports a pipeline's terminal state once known.
func (b *bridge) pipelineState(pid psrp.GUID) (psrp.InvocationState, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[pid]
	if q == nil || q.doneAt < 0 && !q.delivered {
		return 0, false
	}
	return q.state, true
}

// close ends the pool as the PowerShell client does — Close for the pool,
// wait (bounded) for CloseAck, end pwsh's stdin — and then kills whatever
// is left and reaps the worker. Safe to call more than once.
func (b *bridge) close(ctx context.Context) error {
	var err error
	if b.Err() == nil {
		err = b.send(ctx, psrp.Packet{Kind: psrp.PacketClose, GUID: psrp.NilGUID})
		if err == nil {
			_ = b.p.CloseStdin(ctx)
		}
	}
	b.fail(errBridgeClosed)
	cerr := b.p.Close()
	b.readerWG.Wait()
	if err != nil && !errors.Is(err, errBridgeClosed) {
		return err
	}
	return cerr
}
