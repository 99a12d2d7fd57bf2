package session

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/winrmd/winrmd/session/psrp"
)

// These tests script the far end of the bridge by hand, to play a hostile
// pwsh (malformed lines, stray acks, silence, death) that neither real
// PowerShell nor the stand-in would ever be; the bridge's life with those
// two is proven end to end in test/ (pypsrp through the daemon).

// scriptedPwsh is the pwsh side of a bridge: lines the bridge wrote arrive
// on in; the test writes pwsh's stdout lines with say.
type scriptedPwsh struct {
	in     chan string
	outQ   chan []byte // pwsh's stdout, written in order by one goroutine
	outR   *io.PipeReader
	outW   *io.PipeWriter
	mu     sync.Mutex
	killed bool
	closed bool
}

func newScriptedPwsh() *scriptedPwsh {
	r, w := io.Pipe()
	s := &scriptedPwsh{in: make(chan string, 64), outQ: make(chan []byte, 1024), outR: r, outW: w}
	go func() {
		for b := range s.outQ {
			if _, err := s.outW.Write(b); err != nil {
				return
			}
		}
	}()
	return s
}

func (s *scriptedPwsh) Read(b []byte) (int, error) { return s.outR.Read(b) }
func (s *scriptedPwsh) WriteLine(_ context.Context, line []byte) error {
	s.in <- string(line)
	return nil
}
func (s *scriptedPwsh) CloseStdin(context.Context) error { return nil }
func (s *scriptedPwsh) Kill() error {
	s.mu.Lock()
	s.killed = true
	s.mu.Unlock()
	s.outW.CloseWithError(errors.New("pwsh killed"))
	return nil
}
func (s *scriptedPwsh) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.outR.CloseWithError(errors.New("closed"))
	return nil
}
func (s *scriptedPwsh) wasKilled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killed
}

func (s *scriptedPwsh) say(t *testing.T, p psrp.Packet) {
	t.Helper()
	b, err := psrp.AppendPacket(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	s.sayRaw(b)
}

// sayRaw queues pwsh output (the bridge may be holding off reading).
func (s *scriptedPwsh) sayRaw(b []byte) { s.outQ <- b }

// expect reads the next line the bridge wrote and parses it as a client
// packet.
func (s *scriptedPwsh) expect(t *testing.T, kind psrp.PacketKind, g psrp.GUID) psrp.Packet {
	t.Helper()
	select {
	case line := <-s.in:
		p, err := psrp.ParseClientPacket([]byte(strings.TrimSuffix(line, "\n")), 0)
		if err != nil {
			t.Fatalf("bridge wrote %q: %v", line, err)
		}
		if p.Kind != kind || p.GUID != g {
			t.Fatalf("bridge wrote %s %s, want %s %s", p.Kind, p.GUID, kind, g)
		}
		return p
	case <-time.After(10 * time.Second):
		t.Fatalf("bridge wrote nothing, waiting for %s", kind)
	}
	return psrp.Packet{}
}

var (
	testPool = mustGUID("d1d2d3d4-0000-4000-8000-000000000001")
	testPipe = mustGUID("a1a2a3a4-0000-4000-8000-000000000002")
)

func mustGUID(s string) psrp.GUID {
	g, err := psrp.ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

func fragsOf(objectID uint64, m psrp.Message, maxBlob int) []byte {
	return psrp.Fragments(nil, objectID, psrp.AppendMessage(nil, m), maxBlob)
}

func stateMsg(pid psrp.GUID, s psrp.InvocationState) psrp.Message {
	return psrp.Message{Destination: psrp.ToClient, Type: psrp.PipelineState, RPID: testPool, PID: pid,
		Data: []byte(fmt.Sprintf(`<Obj RefId="0"><MS><I32 N="PipelineState">%d</I32></MS></Obj>`, s))}
}

func outputMsg(pid psrp.GUID, text string) psrp.Message {
	return psrp.Message{Destination: psrp.ToClient, Type: psrp.PipelineOutput, RPID: testPool, PID: pid, Data: []byte("<S>" + text + "</S>")}
}

func newTestBridge(t *testing.T, lim bridgeLimits) (*bridge, *scriptedPwsh) {
	t.Helper()
	s := newScriptedPwsh()
	b := newBridge(s, zaptest.NewLogger(t), lim)
	t.Cleanup(func() {
		b.fail(errBridgeClosed)
		_ = s.Close()
		b.readerWG.Wait()
	})
	return b, s
}

// async runs f and returns its error on a channel.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("operation hangs")
	}
	return nil
}

func TestBridgeLifecycle(t *testing.T) {
	b, s := newTestBridge(t, bridgeLimits{})
	ctx := context.Background()

	// Create: the creationXml goes to the pool and waits for its ack.
	creation := fragsOf(1, psrp.Message{Destination: psrp.ToServer, Type: psrp.SessionCapability, RPID: testPool, Data: []byte("<Obj/>")}, 1000)
	done := async(func() error { return b.sendData(ctx, psrp.NilGUID, psrp.StreamDefault, creation) })
	if p := s.expect(t, psrp.PacketData, psrp.NilGUID); !bytes.Equal(p.Data, creation) {
		t.Fatal("creationXml altered on its way to pwsh")
	}
	select {
	case <-done:
		t.Fatal("Send returned before pwsh acknowledged")
	default:
	}
	s.say(t, psrp.Packet{Kind: psrp.PacketDataAck, GUID: psrp.NilGUID})
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}

	// Pool output reaches a pool Receive as whole fragments.
	poolOut := fragsOf(1, psrp.Message{Destination: psrp.ToClient, Type: psrp.RunspacePoolState, RPID: testPool,
		Data: []byte(`<Obj RefId="0"><MS><I32 N="RunspaceState">2</I32></MS></Obj>`)}, 1<<16)
	s.say(t, psrp.Packet{Kind: psrp.PacketData, Stream: psrp.StreamDefault, GUID: psrp.NilGUID, Data: poolOut})
	frags, fin, err := b.receive(ctx, psrp.NilGUID, 1<<20)
	if err != nil || fin || len(frags) != 1 || !bytes.Equal(frags[0], poolOut) {
		t.Fatalf("pool receive: %d frags, done %v, %v", len(frags), fin, err)
	}

	// Command: Command, CommandAck, then the first fragments, DataAck.
	first := fragsOf(2, psrp.Message{Destination: psrp.ToServer, Type: psrp.CreatePipeline, RPID: testPool, PID: testPipe, Data: []byte("<Obj/>")}, 1000)
	done = async(func() error { return b.command(ctx, testPipe, first) })
	s.expect(t, psrp.PacketCommand, testPipe)
	s.say(t, psrp.Packet{Kind: psrp.PacketCommandAck, GUID: testPipe})
	s.expect(t, psrp.PacketData, testPipe)
	s.say(t, psrp.Packet{Kind: psrp.PacketDataAck, GUID: testPipe})
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}

	// Output in small fragments, then the terminal state: with a small
	// budget the output comes in several Receives, no fragment is split,
	// and done comes with the last fragment and not before.
	var want [][]byte
	for i := 0; i < 5; i++ {
		w := fragsOf(uint64(10+i), outputMsg(testPipe, strings.Repeat("x", 100)), 1<<16)
		want = append(want, w)
		s.say(t, psrp.Packet{Kind: psrp.PacketData, Stream: psrp.StreamDefault, GUID: testPipe, Data: w})
	}
	st := fragsOf(20, stateMsg(testPipe, psrp.Completed), 30) // the state message itself in several fragments
	stFrags, _ := psrp.SplitFragments(st, 0)
	for _, f := range stFrags {
		want = append(want, psrp.AppendFragment(nil, f))
	}
	s.say(t, psrp.Packet{Kind: psrp.PacketData, Stream: psrp.StreamDefault, GUID: testPipe, Data: st})
	var got [][]byte
	for !fin {
		frags, fin, err = b.receive(ctx, testPipe, 300)
		if err != nil {
			t.Fatal(err)
		}
		if len(frags) == 0 {
			t.Fatal("empty receive")
		}
		got = append(got, frags...)
		if fin && len(got) != len(want) {
			t.Fatalf("done after %d of %d fragments", len(got), len(want))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d fragments, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("fragment %d differs", i)
		}
	}
	if st, ok := b.pipelineState(testPipe); !ok || st != psrp.Completed {
		t.Fatalf("state %v %v", st, ok)
	}

	// terminate: Close P, CloseAck; the pipeline is then unknown.
	done = async(func() error { return b.closePipeline(ctx, testPipe) })
	s.expect(t, psrp.PacketClose, testPipe)
	s.say(t, psrp.Packet{Kind: psrp.PacketCloseAck, GUID: testPipe})
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.receive(ctx, testPipe, 1000); !errors.Is(err, errUnknownPipeline) {
		t.Fatalf("receive after terminate: %v", err)
	}

	// Delete: Close for the pool, CloseAck, then everything is torn down.
	done = async(func() error { return b.close(ctx) })
	s.expect(t, psrp.PacketClose, psrp.NilGUID)
	s.say(t, psrp.Packet{Kind: psrp.PacketCloseAck, GUID: psrp.NilGUID})
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.receive(ctx, psrp.NilGUID, 1000); !errors.Is(err, errBridgeClosed) {
		t.Fatalf("receive after close: %v", err)
	}
}

// TestBridgeStop: ctrl_c is Signal P, acknowledged by SignalAck.
func TestBridgeStop(t *testing.T) {
	b, s := newTestBridge(t, bridgeLimits{})
	ctx := context.Background()
	done := async(func() error { return b.command(ctx, testPipe, nil) })
	s.expect(t, psrp.PacketCommand, testPipe)
	s.say(t, psrp.Packet{Kind: psrp.PacketCommandAck, GUID: testPipe})
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	done = async(func() error { return b.stop(ctx, testPipe) })
	s.expect(t, psrp.PacketSignal, testPipe)
	s.say(t, psrp.Packet{Kind: psrp.PacketSignalAck, GUID: testPipe})
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	if err := b.stop(ctx, testPool); !errors.Is(err, errUnknownPipeline) {
		t.Fatalf("stop of an unknown pipeline: %v", err)
	}
}

// TestBridgeHostilePwsh: each misbehaviour ends the bridge with an error —
// the waiting Send and the waiting Receive both return, pwsh is killed.
func TestBridgeHostilePwsh(t *testing.T) {
	frag := fragsOf(1, outputMsg(testPipe, "x"), 1<<16)
	for name, bad := range map[string]func(s *scriptedPwsh){
		"garbage line":     func(s *scriptedPwsh) { s.sayRaw([]byte("<html>\n")) },
		"stray ack":        func(s *scriptedPwsh) { s.sayRaw([]byte("<CommandAck PSGuid='" + testPipe.String() + "' />\n")) },
		"client packet":    func(s *scriptedPwsh) { s.sayRaw([]byte("<Close PSGuid='" + testPipe.String() + "' />\n")) },
		"overlong line":    func(s *scriptedPwsh) { s.sayRaw(bytes.Repeat([]byte("A"), psrp.MaxLineFor(4096)+10)) },
		"partial fragment": func(s *scriptedPwsh) { s.sayRaw(mustPacket(psrp.NilGUID, frag[:len(frag)-1])) },
		"fragment order": func(s *scriptedPwsh) {
			s.sayRaw(mustPacket(psrp.NilGUID, fragsOf(1, outputMsg(testPipe, "x"), 10)[31:]))
		},
		"exit": func(s *scriptedPwsh) {
			go s.outW.CloseWithError(errors.New("PowerShell process exited with code 1"))
		},
	} {
		t.Run(name, func(t *testing.T) {
			b, s := newTestBridge(t, bridgeLimits{MaxData: 4096})
			ctx := context.Background()
			recv := async(func() error { _, _, err := b.receive(ctx, psrp.NilGUID, 1000); return err })
			send := async(func() error { return b.sendData(ctx, psrp.NilGUID, psrp.StreamDefault, frag) })
			s.expect(t, psrp.PacketData, psrp.NilGUID)
			bad(s)
			if err := waitErr(t, send); err == nil {
				t.Error("Send succeeded")
			}
			if err := waitErr(t, recv); err == nil {
				t.Error("Receive succeeded")
			}
			if b.Err() == nil {
				t.Fatal("bridge still up")
			}
			if name != "exit" && !errors.Is(b.Err(), errPwshProtocol) {
				t.Errorf("error %v does not say protocol", b.Err())
			}
			if !s.wasKilled() {
				t.Error("pwsh not killed")
			}
			if err := b.sendData(ctx, psrp.NilGUID, psrp.StreamDefault, frag); err == nil {
				t.Error("Send after the end succeeded")
			}
		})
	}
}

func mustPacket(g psrp.GUID, data []byte) []byte {
	b, err := psrp.AppendPacket(nil, psrp.Packet{Kind: psrp.PacketData, Stream: psrp.StreamDefault, GUID: g, Data: data})
	if err != nil {
		panic(err)
	}
	return b
}

// TestBridgeAckTimeout: a pwsh that never acknowledges ends the bridge
// after AckTimeout instead of holding the writer forever.
func TestBridgeAckTimeout(t *testing.T) {
	b, s := newTestBridge(t, bridgeLimits{AckTimeout: 50 * time.Millisecond})
	err := waitErr(t, async(func() error { return b.command(context.Background(), testPipe, nil) }))
	if !errors.Is(err, errAckTimeout) || !s.wasKilled() {
		t.Fatalf("got %v, killed %v", err, s.wasKilled())
	}
}

// TestBridgeRefusesClientGarbage: Send bytes that are not whole fragments
// never reach pwsh.
func TestBridgeRefusesClientGarbage(t *testing.T) {
	b, s := newTestBridge(t, bridgeLimits{})
	if err := b.sendData(context.Background(), psrp.NilGUID, psrp.StreamDefault, []byte("not fragments")); err == nil {
		t.Fatal("accepted")
	}
	select {
	case l := <-s.in:
		t.Fatalf("pwsh got %q", l)
	default:
	}
	if b.Err() != nil {
		t.Fatal("a client's garbage ended the bridge")
	}
}

// TestBridgeBoundedBuffer: with nobody receiving, the bridge holds at most
// MaxBuffered plus one packet; pwsh's writes then block. Draining
// delivers everything, in order.
func TestBridgeBoundedBuffer(t *testing.T) {
	const limit, n = 4096, 40
	b, s := newTestBridge(t, bridgeLimits{MaxBuffered: limit})
	var all bytes.Buffer
	for i := 0; i < n; i++ {
		w := fragsOf(uint64(i+1), outputMsg(psrp.NilGUID, fmt.Sprintf("%04d%s", i, strings.Repeat("y", 500))), 1<<16)
		all.Write(w)
	}
	var pw sync.WaitGroup
	pw.Add(1)
	wr := bufio.NewWriter(s.outW)
	go func() {
		defer pw.Done()
		frags, _ := psrp.SplitFragments(all.Bytes(), 0)
		for _, f := range frags {
			_, _ = wr.Write(mustPacket(psrp.NilGUID, psrp.AppendFragment(nil, f)))
			_ = wr.Flush()
		}
	}()
	var got bytes.Buffer
	for got.Len() < all.Len() {
		frags, _, err := b.receive(context.Background(), psrp.NilGUID, 2000)
		if err != nil {
			t.Fatal(err)
		}
		b.mu.Lock()
		held := b.buffered
		b.mu.Unlock()
		if held > limit+600 {
			t.Fatalf("bridge holds %d bytes, limit %d", held, limit)
		}
		for _, f := range frags {
			got.Write(f)
		}
	}
	pw.Wait()
	if !bytes.Equal(got.Bytes(), all.Bytes()) {
		t.Fatal("output reordered or altered")
	}
}
