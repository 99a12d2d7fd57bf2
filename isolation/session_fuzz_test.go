package isolation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// FuzzWorkerSession is the stateful fuzz target of the daemon side of the
// worker protocol (the conversation in proto.go's header, the states in
// handle.go). Each input is a sequence of operations: calls the session
// layer makes on a real workerHandle (Start, a cancelled Start, Release,
// Consumed) and frames a hostile worker sends back (Started, StartErr,
// Output, Exit, Released, StdinAck, Fatal, a frame of the wrong direction).
// A small model of the protocol, written from proto.go's header rather
// than from handle.go, says which worker frames are allowed; the handle
// must agree frame by frame:
//   - an allowed frame leaves the worker alive (proved at the end: the one
//     violation the test then sends is the one the handle reports);
//   - the first forbidden frame ends the worker with ErrProtocol (errFatal
//     for Fatal), and every caller still waiting returns.
func FuzzWorkerSession(f *testing.F) {
	f.Add([]byte{0x00, 0x03, 0x05, 0x40, 0x02, 0x40, 0x06, 0x01, 0x07})       // start, started, output, credit, exit, release, released
	f.Add([]byte{0x00, 0x04})                                                 // start, start error
	f.Add([]byte{0x00, 0x0b, 0x03, 0x05})                                     // start, cancel, late started, output (dropped)
	f.Add([]byte{0x05, 0x10})                                                 // output for nobody
	f.Add([]byte{0x00, 0x10, 0x03, 0x13, 0x05, 0xff, 0x15, 0x01, 0x11, 0x07}) // two commands interleaved
	f.Add([]byte{0x00, 0x03, 0x08})                                           // StdinAck without Stdin
	f.Add([]byte{0x00, 0x03, 0x09})                                           // Fatal
	f.Add([]byte{0x0a})                                                       // a daemon-direction frame
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 64 {
			ops = ops[:64]
		}
		runWorkerSession(t, ops)
	})
}

// mstate is the model's state of one command id.
type mstate uint8

const (
	mAbsent        mstate = iota
	mStarting             // Start sent, unanswered
	mRunning              // Started
	mExited               // Exit received
	mReleasing            // Release sent, Released due
	mReleasingLate        // Release sent before Started/StartErr, which is still due
)

type modelCmd struct {
	state  mstate
	window int
	errc   chan error // the pending Start call's result
	cancel func()     // cancels the pending Start
}

func runWorkerSession(t *testing.T, ops []byte) {
	fw := newFakeWorker(t)
	ids := [3]string{"C0", "C1", "C2"}
	var model [3]modelCmd
	violation := "" // the first forbidden frame, once sent
	wantFatal := false

	expectSent := func(want string) {
		t.Helper()
		m := fw.recv()
		if got := fmt.Sprintf("%T", m); got != want {
			t.Fatalf("daemon sent %s, want %s", got, want)
		}
	}
	for i := 0; i < len(ops) && violation == ""; i++ {
		op, k := ops[i]&0x0f, int(ops[i]>>4)%3
		id, c := ids[k], &model[k]
		arg := 1
		if i+1 < len(ops) {
			arg = int(ops[i+1])
		}
		switch op {
		case 0: // Start
			if c.state != mAbsent {
				continue // the session layer never reuses a live id
			}
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			c.errc, c.cancel = errc, cancel
			go func() { errc <- fw.h.Start(ctx, CommandSpec{ID: id, Line: "x"}) }()
			expectSent("isolation.msgStart")
			c.state, c.window = mStarting, 0
		case 11: // the Start's caller gives up: Release goes out, the answer is still due
			if c.state != mStarting {
				continue
			}
			c.cancel()
			if err := waitErr(t, c.errc); !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled Start returned %v", err)
			}
			expectSent("isolation.msgRelease")
			c.state, c.errc = mReleasingLate, nil
		case 1: // Release
			err := fw.h.Release(id)
			if c.state == mRunning || c.state == mExited {
				if err != nil {
					t.Fatalf("Release(%s) in state %d: %v", id, c.state, err)
				}
				expectSent("isolation.msgRelease")
				c.state = mReleasing
			} else if !errors.Is(err, ErrUnknown) {
				t.Fatalf("Release(%s) in state %d: %v, want ErrUnknown", id, c.state, err)
			}
		case 2: // Consumed
			n := arg%8 + 1
			err := fw.h.Consumed(id, n)
			switch {
			case (c.state == mRunning || c.state == mExited) && n <= c.window:
				if err != nil {
					t.Fatalf("Consumed(%s, %d) of %d: %v", id, n, c.window, err)
				}
				c.window -= n
				if c.state == mRunning {
					expectSent("isolation.msgCredit")
				}
			case err == nil:
				t.Fatalf("Consumed(%s, %d) in state %d with window %d accepted", id, n, c.state, c.window)
			}
		case 3: // Started
			fw.send(msgStarted{ID: id, Pid: 777})
			switch c.state {
			case mStarting:
				c.state = mRunning
				if err := waitErr(t, c.errc); err != nil {
					t.Fatalf("Start(%s) after Started: %v", id, err)
				}
				c.errc = nil
			case mReleasingLate:
				c.state = mReleasing
				settle(t, fw.h, id, func(d *dcmd) bool { return d != nil && !d.expectStart })
			default:
				violation = fmt.Sprintf("Started for %q", id)
			}
		case 4: // StartErr
			fw.send(msgStartErr{ID: id, Msg: "no such file"})
			switch c.state {
			case mStarting:
				if err := waitErr(t, c.errc); !errors.Is(err, ErrStartFailed) {
					t.Fatalf("Start(%s) after StartErr: %v", id, err)
				}
				c.state, c.errc = mAbsent, nil
			case mReleasingLate:
				c.state = mReleasing
				settle(t, fw.h, id, func(d *dcmd) bool { return d != nil && !d.expectStart })
			default:
				violation = fmt.Sprintf("StartErr for %q", id)
			}
		case 5: // Output
			n := arg%200 + 1
			fw.send(msgOutput{ID: id, Stream: Stdout, Data: make([]byte, n)})
			switch c.state {
			case mRunning:
				c.window += n // never near OutputWindow within 64 operations
				settle(t, fw.h, id, func(d *dcmd) bool { return d != nil && d.window == c.window })
			case mReleasing:
			default:
				violation = fmt.Sprintf("Output for %q", id)
			}
		case 6: // Exit
			fw.send(msgExit{ID: id, Code: 3})
			switch c.state {
			case mRunning:
				c.state = mExited
				settle(t, fw.h, id, func(d *dcmd) bool { return d != nil && d.state == cmdExited })
			case mReleasing:
			default:
				violation = fmt.Sprintf("Exit for %q", id)
			}
		case 7: // Released
			fw.send(msgReleased{ID: id})
			if c.state == mReleasing {
				c.state = mAbsent
				settle(t, fw.h, id, func(d *dcmd) bool { return d == nil })
			} else {
				violation = fmt.Sprintf("Released for %q", id)
			}
		case 8: // StdinAck: this harness never sends Stdin, so it is never due
			fw.send(msgStdinAck{ID: id})
			violation = fmt.Sprintf("StdinAck for %q", id)
		case 9: // Fatal
			fw.send(msgFatal{Msg: "gave up"})
			violation, wantFatal = "gave up", true
		case 10: // a frame only the daemon may send
			fw.raw(encodeT(t, msgCredit{ID: id, N: 1}))
			violation = "*" // a decoding error: any ErrProtocol
		}
	}
	if violation == "" {
		// Everything so far was allowed: the worker must still be alive,
		// so the violation sent now is the one it reports.
		fw.send(msgReleased{ID: "Z"})
		violation = `Released for "Z"`
	}
	err := fw.waitGone()
	switch {
	case wantFatal:
		if !errors.Is(err, errFatal) || !errors.Is(err, ErrWorkerGone) {
			t.Fatalf("after Fatal: %v", err)
		}
	case !errors.Is(err, ErrProtocol) || (violation != "*" && !strings.Contains(err.Error(), violation)):
		t.Fatalf("worker ended with %v, want ErrProtocol naming %s", err, violation)
	}
	// Every Start still waiting returns once the worker is gone.
	for k := range model {
		if model[k].errc != nil {
			if err := waitErr(t, model[k].errc); err == nil {
				t.Fatalf("Start(%s) succeeded after the worker ended", ids[k])
			}
			model[k].cancel()
		}
	}
}

func waitErr(t *testing.T, c chan error) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("a Start call did not return")
		return nil
	}
}

// settle waits until the handle's reader has applied the frames sent so
// far, as seen in its record of command id (frames are applied
// asynchronously; the model's next call must not overtake them).
func settle(t *testing.T, h *workerHandle, id string, ok func(*dcmd) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		done := ok(h.cmds[id]) || h.ended
		h.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handle did not apply the frames sent for %s", id)
		}
		time.Sleep(50 * time.Microsecond)
	}
}
