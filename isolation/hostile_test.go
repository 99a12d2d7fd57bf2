package isolation

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeProc stands in for the worker process when the test plays the worker.
type fakeProc struct {
	once   sync.Once
	exited chan struct{}
}

func (p *fakeProc) Kill() error {
	p.once.Do(func() { close(p.exited) })
	return nil
}
func (p *fakeProc) Exited() <-chan struct{} { return p.exited }
func (p *fakeProc) State() string           { return "fake" }

func unixPair(t testing.TB) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b = conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// fakeWorker is the test playing a (possibly hostile) worker against a real
// daemon-side handle.
type fakeWorker struct {
	t    testing.TB
	h    *workerHandle
	proc *fakeProc
	conn *net.UnixConn
	r    *bufio.Reader
}

func newFakeWorker(t testing.TB) *fakeWorker {
	d, w := unixPair(t)
	proc := &fakeProc{exited: make(chan struct{})}
	h := newWorkerHandle(testLogger(t), 4242, d, bufio.NewReader(d), proc, noReaper{})
	h.run()
	t.Cleanup(func() { h.Close() })
	return &fakeWorker{t: t, h: h, proc: proc, conn: w, r: bufio.NewReader(w)}
}

func (f *fakeWorker) send(m msg) {
	f.t.Helper()
	if _, err := f.conn.Write(encodeT(f.t, m)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeWorker) raw(b []byte) {
	f.t.Helper()
	if _, err := f.conn.Write(b); err != nil {
		f.t.Fatal(err)
	}
}

// recv reads what the daemon sent.
func (f *fakeWorker) recv() msg {
	f.t.Helper()
	_ = f.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, p, _, err := readFrame(f.r, nil)
	if err != nil {
		f.t.Fatalf("fake worker read: %v", err)
	}
	m, err := decodeDaemonToWorker(typ, p)
	if err != nil {
		f.t.Fatalf("daemon sent a bad frame: %v", err)
	}
	return m
}

// start makes the daemon start id and answers Started.
func (f *fakeWorker) start(id string) {
	f.t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- f.h.Start(context.Background(), CommandSpec{ID: id, Line: "x"}) }()
	if m, ok := f.recv().(msgStart); !ok || m.ID != id {
		f.t.Fatalf("expected Start %s", id)
	}
	f.send(msgStarted{ID: id, Pid: 777})
	if err := <-errc; err != nil {
		f.t.Fatalf("Start: %v", err)
	}
}

// waitGone waits for Events to close and returns Err.
func (f *fakeWorker) waitGone() error {
	f.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-f.h.Events():
			if !ok {
				return f.h.Err()
			}
		case <-deadline:
			f.t.Fatal("Events did not close")
		}
	}
}

// Any violation by the worker: log, kill, close Events with ErrProtocol.
func TestHostileWorker(t *testing.T) {
	hdr := func(n uint32, typ byte) []byte { return append(binary.BigEndian.AppendUint32(nil, n), typ) }
	cases := []struct {
		name string
		play func(f *fakeWorker)
	}{
		{"output for an unknown command", func(f *fakeWorker) {
			f.send(msgOutput{ID: "C9", Stream: Stdout, Data: []byte("x")})
		}},
		{"output before Started", func(f *fakeWorker) {
			go f.h.Start(context.Background(), CommandSpec{ID: "C1", Line: "x"})
			f.recv()
			f.send(msgOutput{ID: "C1", Stream: Stdout, Data: []byte("x")})
		}},
		{"Started twice", func(f *fakeWorker) {
			f.start("C1")
			f.send(msgStarted{ID: "C1", Pid: 778})
		}},
		{"Started never asked for", func(f *fakeWorker) {
			f.send(msgStarted{ID: "C1", Pid: 778})
		}},
		{"exit twice", func(f *fakeWorker) {
			f.start("C1")
			f.send(msgExit{ID: "C1"})
			f.send(msgExit{ID: "C1"})
		}},
		{"output after exit", func(f *fakeWorker) {
			f.start("C1")
			f.send(msgExit{ID: "C1"})
			f.send(msgOutput{ID: "C1", Stream: Stderr, Data: []byte("late")})
		}},
		{"output beyond the window", func(f *fakeWorker) {
			f.start("C1")
			chunk := bytes.Repeat([]byte("a"), maxOutChunk)
			for i := 0; i < OutputWindow/maxOutChunk; i++ {
				f.send(msgOutput{ID: "C1", Stream: Stdout, Data: chunk})
			}
			f.send(msgOutput{ID: "C1", Stream: Stdout, Data: []byte("!")})
		}},
		{"StdinAck without Stdin", func(f *fakeWorker) {
			f.start("C1")
			f.send(msgStdinAck{ID: "C1"})
		}},
		{"Released without Release", func(f *fakeWorker) {
			f.start("C1")
			f.send(msgReleased{ID: "C1"})
		}},
		{"Hello after Setup", func(f *fakeWorker) { f.send(msgHello{Version: protoVersion, Pid: 4242}) }},
		{"SetupOK after Setup", func(f *fakeWorker) { f.send(msgSetupOK{}) }},
		{"unknown frame type", func(f *fakeWorker) { f.raw(hdr(1, 0x77)) }},
		{"daemon frame type", func(f *fakeWorker) { f.raw(encodeT(f.t, msgRelease{ID: "C1"})) }},
		{"oversize frame", func(f *fakeWorker) { f.raw(hdr(maxPayload+2, tOutput)) }},
		{"zero-length frame", func(f *fakeWorker) { f.raw([]byte{0, 0, 0, 0, 0}) }},
		{"malformed Output", func(f *fakeWorker) {
			f.start("C1")
			b := encodeT(f.t, msgOutput{ID: "C1", Stream: Stdout, Data: []byte("x")})
			b[5+4+2] = 7 // the stream byte
			f.raw(b)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeWorker(t)
			c.play(f)
			err := f.waitGone()
			if !errors.Is(err, ErrProtocol) || !errors.Is(err, ErrWorkerGone) {
				t.Fatalf("Err = %v, want ErrProtocol and ErrWorkerGone", err)
			}
			select {
			case <-f.proc.Exited():
			default:
				t.Fatal("the hostile worker was not killed")
			}
			if err := f.h.Signal("C1", SignalInterrupt); err == nil {
				t.Error("Signal after the end succeeded")
			}
		})
	}
}

func TestFakeWorkerEnds(t *testing.T) {
	t.Run("fatal", func(t *testing.T) {
		f := newFakeWorker(t)
		f.send(msgFatal{Msg: "cannot go on"})
		err := f.waitGone()
		if !errors.Is(err, ErrWorkerGone) || errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "cannot go on") {
			t.Fatalf("Err = %v", err)
		}
	})
	t.Run("eof", func(t *testing.T) {
		f := newFakeWorker(t)
		f.conn.Close()
		f.proc.Kill()
		if err := f.waitGone(); !errors.Is(err, ErrWorkerGone) {
			t.Fatalf("Err = %v", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		f := newFakeWorker(t)
		f.h.Close()
		f.h.Close()
		if err := f.waitGone(); err != nil {
			t.Fatalf("Err after Close = %v", err)
		}
	})
}

// The daemon side of the flow: window accounting, stdin acknowledgement,
// release while late frames cross, and start failures.
func TestHandleFlow(t *testing.T) {
	f := newFakeWorker(t)
	ctx := context.Background()
	f.start("C1")

	// Output is delivered and merged while queued; Consumed returns credit.
	f.send(msgOutput{ID: "C1", Stream: Stdout, Data: []byte("ab")})
	f.send(msgOutput{ID: "C1", Stream: Stdout, Data: []byte("cd")})
	var got []byte
	for len(got) < 4 {
		ev := <-f.h.Events()
		got = append(got, ev.Data...)
	}
	if string(got) != "abcd" {
		t.Fatalf("output %q", got)
	}
	if err := f.h.Consumed("C1", 5); err == nil {
		t.Error("Consumed beyond what was delivered")
	}
	if err := f.h.Consumed("C1", 4); err != nil {
		t.Fatal(err)
	}
	if m, ok := f.recv().(msgCredit); !ok || m.N != 4 {
		t.Fatalf("credit %#v", m)
	}

	// Big data goes in 1 MiB frames, each sent once the last is
	// acknowledged; Stdin returns once its last frame is written.
	errc := make(chan error, 1)
	go func() { errc <- f.h.Stdin(ctx, "C1", make([]byte, maxStdinChunk+10), false) }()
	m1 := f.recv().(msgStdin)
	if len(m1.Data) != maxStdinChunk || m1.EOF {
		t.Fatalf("first stdin frame: %d bytes eof=%v", len(m1.Data), m1.EOF)
	}
	select {
	case err := <-errc:
		t.Fatalf("Stdin returned before its first frame's acknowledgement: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	f.send(msgStdinAck{ID: "C1"})
	m2 := f.recv().(msgStdin)
	if len(m2.Data) != 10 || m2.EOF {
		t.Fatalf("second stdin frame: %d bytes eof=%v", len(m2.Data), m2.EOF)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// The next Stdin sends nothing before the last frame's acknowledgement;
	// a caller cancelled while it waits gets its context's error and sends
	// nothing.
	cctx, cancel := context.WithCancel(ctx)
	go func() { errc <- f.h.Stdin(cctx, "C1", []byte("x"), false) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Stdin: %v", err)
	}
	go func() { errc <- f.h.Stdin(ctx, "C1", []byte("y"), true) }()
	time.Sleep(50 * time.Millisecond) // it must not send before the late ack
	f.send(msgStdinAck{ID: "C1"})     // for the second frame
	if m := f.recv().(msgStdin); string(m.Data) != "y" || !m.EOF {
		t.Fatalf("after the late ack: %#v", m)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	f.send(msgStdinAck{ID: "C1"})
	if err := f.h.Stdin(ctx, "C1", []byte("z"), false); err != nil { // after eof: dropped
		t.Fatal(err)
	}

	// Release: frames the worker sent before it saw Release are dropped.
	if err := f.h.Release("C1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.recv().(msgRelease); !ok {
		t.Fatal("no Release")
	}
	f.send(msgOutput{ID: "C1", Stream: Stdout, Data: []byte("late")})
	f.send(msgExit{ID: "C1", Code: 1})
	f.send(msgReleased{ID: "C1"})
	if err := f.h.Stdin(ctx, "C1", []byte("x"), false); !errors.Is(err, ErrUnknown) {
		t.Errorf("Stdin after Release: %v", err)
	}
	// The id is free again once Released arrived.
	if !eventually(2*time.Second, func() bool { f.h.mu.Lock(); defer f.h.mu.Unlock(); return f.h.cmds["C1"] == nil }) {
		t.Fatal("C1 not forgotten")
	}

	// StartErr wraps ErrStartFailed.
	go func() { errc <- f.h.Start(ctx, CommandSpec{ID: "C2", Argv: []string{"nope"}}) }()
	f.recv()
	f.send(msgStartErr{ID: "C2", Msg: "not found"})
	if err := <-errc; !errors.Is(err, ErrStartFailed) {
		t.Fatalf("StartErr: %v", err)
	}
	// A cancelled Start releases the command; a Started crossing it is fine.
	sctx, scancel := context.WithCancel(ctx)
	go func() { errc <- f.h.Start(sctx, CommandSpec{ID: "C3", Line: "x"}) }()
	f.recv()
	scancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Start: %v", err)
	}
	if _, ok := f.recv().(msgRelease); !ok {
		t.Fatal("no Release after a cancelled Start")
	}
	f.send(msgStarted{ID: "C3", Pid: 779})
	f.send(msgReleased{ID: "C3"})
	f.start("C4")
	f.send(msgExit{ID: "C4", Code: 3})
	for ev := range f.h.Events() {
		if ev.Kind == EventExit && ev.CommandID == "C4" {
			if ev.ExitCode != 3 {
				t.Fatalf("exit %d", ev.ExitCode)
			}
			break
		}
	}
	if err := f.h.Err(); err != nil {
		t.Fatalf("Err %v", err)
	}
}

// The worker's loop checks the daemon too: run it against the test playing
// the daemon. The loop reaps every child of its process, as a worker does,
// so it runs in a process of its own: this test binary started as the
// "workerloop" helper (workerLoopHelper), its socket on fd 3.
type fakeDaemon struct {
	t    testing.TB
	conn *net.UnixConn
	r    *bufio.Reader
	done chan error // the helper's exit: nil when serve returned nil or EOF
}

func newFakeDaemon(t testing.TB) *fakeDaemon {
	d, w := unixPair(t)
	wf, err := w.File()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "WRMDTEST_HELPER=workerloop")
	cmd.ExtraFiles = []*os.File{wf}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	wf.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd := &fakeDaemon{t: t, conn: d, r: bufio.NewReader(d), done: make(chan error, 1)}
	go func() { fd.done <- cmd.Wait() }()
	t.Cleanup(func() {
		d.Close()
		<-fd.done
	})
	return fd
}

func (d *fakeDaemon) send(m msg) {
	d.t.Helper()
	if _, err := d.conn.Write(encodeT(d.t, m)); err != nil {
		d.t.Fatal(err)
	}
}

func (d *fakeDaemon) recv() msg {
	d.t.Helper()
	_ = d.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, p, _, err := readFrame(d.r, nil)
	if err != nil {
		d.t.Fatalf("fake daemon read: %v", err)
	}
	m, err := decodeWorkerToDaemon(typ, p)
	if err != nil {
		d.t.Fatalf("worker sent a bad frame: %v", err)
	}
	return m
}

// expectFatal reads until a Fatal and checks the loop ended.
func (d *fakeDaemon) expectFatal() {
	d.t.Helper()
	for {
		if m, ok := d.recv().(msgFatal); ok {
			if !strings.Contains(m.Msg, "protocol violation") {
				d.t.Fatalf("fatal %q", m.Msg)
			}
			break
		}
	}
	select {
	case err := <-d.done:
		d.done <- err
		if err == nil {
			d.t.Fatal("serve returned nil (the helper exited 0)")
		}
	case <-time.After(5 * time.Second):
		d.t.Fatal("worker loop did not end")
	}
}

func TestWorkerLoopRejects(t *testing.T) {
	cases := []struct {
		name string
		play func(d *fakeDaemon)
	}{
		{"stdin for an unknown command", func(d *fakeDaemon) { d.send(msgStdin{ID: "C9", Data: []byte("x")}) }},
		{"signal for an unknown command", func(d *fakeDaemon) { d.send(msgSignal{ID: "C9", Sig: SignalInterrupt}) }},
		{"Setup twice", func(d *fakeDaemon) { d.send(msgSetup{User: "x"}) }},
		{"unknown frame type", func(d *fakeDaemon) { d.conn.Write([]byte{0, 0, 0, 1, 0x55}) }},
		{"duplicate command id", func(d *fakeDaemon) {
			d.send(msgStart{ID: "C1", Line: "sleep 5", Window: OutputWindow})
			d.recv()
			d.send(msgStart{ID: "C1", Line: "sleep 5", Window: OutputWindow})
		}},
		{"credit beyond the window", func(d *fakeDaemon) {
			d.send(msgStart{ID: "C1", Line: "sleep 5", Window: OutputWindow})
			d.recv()
			d.send(msgCredit{ID: "C1", N: 1})
		}},
		{"second Stdin before its acknowledgement", func(d *fakeDaemon) {
			d.send(msgStart{ID: "C1", Line: "sleep 5", Window: OutputWindow}) // never reads stdin
			d.recv()
			chunk := make([]byte, maxStdinChunk)
			for i := 0; i < stdinQueueCap/maxStdinChunk+1; i++ {
				d.send(msgStdin{ID: "C1", Data: chunk})
				if i < 8 { // the queue has room: acknowledged
					for {
						if _, ok := d.recv().(msgStdinAck); ok {
							break
						}
					}
				}
			}
			d.send(msgStdin{ID: "C1", Data: chunk})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := newFakeDaemon(t)
			c.play(d)
			d.expectFatal()
		})
	}
}

func TestWorkerLoopFlow(t *testing.T) {
	d := newFakeDaemon(t)
	d.send(msgRelease{ID: "never"}) // benign: crossing a StartErr
	if m, ok := d.recv().(msgReleased); !ok || m.ID != "never" {
		t.Fatalf("got %#v", m)
	}
	d.send(msgStart{ID: "C1", Argv: []string{"wrmd-no-such-program"}, Window: OutputWindow})
	if _, ok := d.recv().(msgStartErr); !ok {
		t.Fatal("no StartErr")
	}
	d.send(msgStart{ID: "C2", Line: "cat; echo done >&2; exit 4", Window: OutputWindow})
	if _, ok := d.recv().(msgStarted); !ok {
		t.Fatal("no Started")
	}
	d.send(msgStdin{ID: "C2", Data: []byte("in"), EOF: true})
	var out, errOut []byte
	for {
		switch m := d.recv().(type) {
		case msgStdinAck:
		case msgOutput:
			if m.Stream == Stdout {
				out = append(out, m.Data...)
			} else {
				errOut = append(errOut, m.Data...)
			}
		case msgExit:
			if string(out) != "in" || string(errOut) != "done\n" || m.Code != 4 {
				t.Fatalf("out %q err %q code %d", out, errOut, m.Code)
			}
			d.send(msgRelease{ID: "C2"})
			if _, ok := d.recv().(msgReleased); !ok {
				t.Fatal("no Released")
			}
			return
		default:
			t.Fatalf("unexpected %#v", m)
		}
	}
}

// Handshake violations: a fake worker program that speaks out of turn.
func TestHandshakeRejects(t *testing.T) {
	requireRoot(t)
	cases := map[string]string{
		"SetupOK before Hello":   `printf '\000\000\000\001\202' >&3`,
		"Hello with a wrong pid": `printf '\000\000\000\007\201\000\001\000\000\000\001' >&3`,
		"oversize first frame":   `printf '\001\000\000\000\201' >&3`,
		"silence":                `exec sleep 100`,
		"exit at once":           `exit 0`,
	}
	dir := t.TempDir()
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			exe := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".sh")
			// The marker proves the fake worker ran: a spawner that could
			// not execute it at all fails Spawn too, for another reason.
			ran := exe + ".ran"
			if err := os.WriteFile(exe, []byte("#!/bin/sh\ntouch "+ran+"\n"+body+"\nsleep 5\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if _, err := os.Stat(ran); err != nil {
					t.Errorf("the fake worker never ran: %v", err)
				}
			}()
			s := newTestSpawner(t, SpawnerOptions{Exe: exe, AllowRoot: true, CgroupRoot: "off"})
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := s.Spawn(ctx, SpawnRequest{Account: selfAccountT(t), ShellID: "wrmdtest-hs"})
			if err == nil {
				t.Fatal("Spawn succeeded")
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			t.Logf("%v", err)
		})
	}
}

func selfAccountT(t testing.TB) Account {
	acct, err := selfAccount()
	if err != nil {
		t.Fatal(err)
	}
	return acct
}
