package isolation

// What only the tests need from the package's types: test doubles and
// accessors, kept out of the production files.

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
)

// noReaper is the shellReaper of a handle whose worker the test plays: it
// has no processes to kill.
type noReaper struct{}

func (noReaper) killAll() error                           { return nil }
func (noReaper) drain(_, _ <-chan struct{}) (bool, error) { return false, nil }
func (noReaper) sweep(bool) error                         { return nil }

// keepOrphans wraps a handle's reaper so that an unexpected end of the
// worker leaves the shell's processes alone: the test checks that the
// worker itself killed them. Close still kills everything.
type keepOrphans struct{ shellReaper }

func (keepOrphans) killAll() error { return nil }

// cgroup is the shell's cgroup (nil without one).
func (h *workerHandle) cgroup() *shellCgroup {
	if r, ok := h.reap.(*cgroupReaper); ok {
		return r.cg
	}
	return nil
}

// commandPid is the pid the worker reported for a command.
func (h *workerHandle) commandPid(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.cmds[id]; c != nil {
		return c.pid
	}
	return 0
}

// cgroupMode reports how shells are confined.
func (s *procSpawner) cgroupMode() cgroupMode { return s.cg.mode }

// workerLoopHelper is the "workerloop" helper program (main_test.go): the
// worker's command loop alone, with no handshake or privilege drop, on the
// socket at fd 3, for the tests that play the daemon (newFakeDaemon). It
// exits 0 when serve ends at EOF, 1 when the loop gave up.
func workerLoopHelper() int {
	f := os.NewFile(workerFD, "workerloop-socket")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return 2
	}
	conn := c.(*net.UnixConn)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WRMDTEST_HELPER=") {
			env = append(env, kv)
		}
	}
	err = newWorkerLoop(conn, bufio.NewReader(conn), env).serve()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		return 1
	}
	return 0
}
