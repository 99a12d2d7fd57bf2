package isolation

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOutQueueOrderWithDirectWrites: frames pushed by several goroutines,
// some written directly by the pusher and some, once the socket is full,
// by the queue's goroutine (with the rest of a frame the socket took only
// part of), all arrive whole and, per pusher, in the order pushed; flush
// returns once everything is out.
func TestOutQueueOrderWithDirectWrites(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A small send buffer, so that 64 KiB frames fill it and split.
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10); err != nil {
		t.Fatal(err)
	}
	wf, rf := os.NewFile(uintptr(fds[0]), "w"), os.NewFile(uintptr(fds[1]), "r")
	wc, err := net.FileConn(wf)
	wf.Close()
	if err != nil {
		t.Fatal(err)
	}
	o := newOutQueue(wc, func() {})
	defer func() {
		// The socket first: that frees a writer a broken queue left
		// blocked (with o.mu held), so the test ends either way.
		wc.Close()
		rf.Close()
		o.close()
	}()
	if o.raw == nil {
		t.Fatal("no direct write on a unix socket")
	}

	const pushers, frames = 4, 200
	var wg sync.WaitGroup
	for p := 0; p < pushers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < frames; i++ {
				size := 1 + (i*7919+p*104729)%(maxOutChunk) // 1 byte to 64 KiB
				data := make([]byte, size)
				for k := range data {
					data[k] = byte(p*31 + i)
				}
				o.push(msgOutput{ID: fmt.Sprintf("P%d-%d", p, i), Stream: Stdout, Data: data})
			}
		}(p)
	}
	next := make([]int, pushers)
	r := bufio.NewReader(rf)
	done := make(chan error, 1)
	go func() {
		var buf []byte
		for n := 0; n < pushers*frames; n++ {
			if n%50 == 0 {
				time.Sleep(2 * time.Millisecond) // let the socket fill
			}
			typ, payload, nbuf, err := readFrame(r, buf)
			buf = nbuf
			if err != nil {
				done <- err
				return
			}
			m, err := decodeWorkerToDaemon(typ, payload)
			if err != nil {
				done <- err
				return
			}
			out, ok := m.(msgOutput)
			var p, i int
			if ok {
				_, err = fmt.Sscanf(out.ID, "P%d-%d", &p, &i)
			}
			if !ok || err != nil || p < 0 || p >= pushers {
				done <- fmt.Errorf("frame %d: %#v", n, m)
				return
			}
			if i != next[p] {
				done <- fmt.Errorf("pusher %d: frame %d arrived where %d was due", p, i, next[p])
				return
			}
			size := 1 + (i*7919+p*104729)%(maxOutChunk)
			if len(out.Data) != size || out.Data[0] != byte(p*31+i) || out.Data[size-1] != byte(p*31+i) {
				done <- fmt.Errorf("pusher %d frame %d: %d bytes, want %d, or wrong content", p, i, len(out.Data), size)
				return
			}
			next[p]++
		}
		done <- nil
	}()
	// A broken queue may deadlock rather than misorder: the checks run
	// under one deadline, so the test fails instead of hanging.
	flushed := make(chan string, 1)
	go func() {
		wg.Wait()
		o.flush(20 * time.Second)
		o.mu.Lock()
		left, busy := len(o.q), o.busy
		o.mu.Unlock()
		if left != 0 || busy {
			flushed <- fmt.Sprintf("flush returned with %d frames queued (busy %v)", left, busy)
			return
		}
		flushed <- ""
	}()
	deadline := time.After(40 * time.Second)
	select {
	case msg := <-flushed:
		if msg != "" {
			t.Fatal(msg)
		}
	case <-deadline:
		t.Fatal("pushing and flushing did not finish: the queue is stuck")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-deadline:
		t.Fatal("the reader did not get every frame")
	}
}

// TestPidfdReapsWithoutSIGCHLD: a command's exit is reaped and reported
// through its pidfd alone. The loop here never runs serve, so there is
// no SIGCHLD reaper: without awaitExit the Exit frame would never come.
func TestPidfdReapsWithoutSIGCHLD(t *testing.T) {
	if fd, err := unix.PidfdOpen(os.Getpid(), unix.PIDFD_NONBLOCK); err != nil {
		t.Skipf("this kernel has no pidfd_open with PIDFD_NONBLOCK (Linux 5.10): %v", err)
	} else {
		unix.Close(fd)
	}
	ours, theirs := unixPair(t)
	w := newWorkerLoop(ours, bufio.NewReader(ours), nil)
	defer w.out.close()
	if err := w.start(msgStart{ID: "C1", Line: "exit 7", Window: OutputWindow}); err != nil {
		t.Fatal(err)
	}
	_ = theirs.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(theirs)
	for {
		typ, p, _, err := readFrame(r, nil)
		if err != nil {
			t.Fatalf("no Exit frame: %v", err)
		}
		m, err := decodeWorkerToDaemon(typ, p)
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case msgStartErr:
			t.Fatalf("start failed: %s", m.Msg)
		case msgExit:
			if m.ID != "C1" || m.Code != 7 {
				t.Fatalf("Exit %+v, want C1 with code 7", m)
			}
			w.mu.Lock()
			left := len(w.byPid)
			w.mu.Unlock()
			if left != 0 {
				t.Fatalf("%d processes still registered after the exit", left)
			}
			return
		}
	}
}
