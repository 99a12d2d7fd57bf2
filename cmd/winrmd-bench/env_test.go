package main

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"
)

// descendants, read from the kernel's children lists, finds what the walk
// over all of /proc finds: here a shell's background sleep, and a second
// shell with its own sleep.
func TestDescendantsMatchesProcWalk(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "sh -c 'sleep 30 & wait' & sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var got, want []int
	for t0 := time.Now(); time.Since(t0) < 5*time.Second; time.Sleep(20 * time.Millisecond) {
		got, want = descendants(cmd.Process.Pid), descendantsOf(allProcs(), cmd.Process.Pid)
		if len(want) == 3 {
			break
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if len(want) != 3 || !slices.Equal(got, want) {
		t.Fatalf("descendants %v, the /proc walk %v (want 3: a sleep, a shell and its sleep)", got, want)
	}
	// The tree itself is in them, and nothing above it.
	if slices.Contains(got, cmd.Process.Pid) {
		t.Fatalf("descendants %v include the root %d", got, cmd.Process.Pid)
	}
}

// Children forked by different threads of a process (as the daemon's are)
// are on different threads' lists: descendants reads them all.
func TestDescendantsOfEveryThread(t *testing.T) {
	const n = 4
	cmds := make(chan *exec.Cmd, n)
	release := make(chan struct{})
	defer close(release)
	for i := 0; i < n; i++ {
		go func() {
			// Each on a thread of its own, held until the end: a thread
			// that exits hands its children to another.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			c := exec.Command("sleep", "30")
			if err := c.Start(); err != nil {
				t.Error(err)
			}
			cmds <- c
			<-release
		}()
	}
	var pids []int
	for i := 0; i < n; i++ {
		c := <-cmds
		defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
		pids = append(pids, c.Process.Pid)
	}
	got := descendants(os.Getpid())
	for _, p := range pids {
		if !slices.Contains(got, p) {
			t.Fatalf("child %d (of %v) missing from descendants %v", p, pids, got)
		}
	}
}
