package procs

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func readSlack(t *testing.T, tid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/timerslack_ns")
	if err != nil {
		t.Fatalf("timer slack of thread %d: %v", tid, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("timer slack of thread %d: %q", tid, b)
	}
	return v
}

// The thread RelaxSysmon names is sysmon: the one thread of a Go process
// that naps in nanosleep (the runtime's usleep; every other thread sleeps
// on a futex or in the network poller). It gets the slack; the main thread
// keeps its own.
func TestRelaxSysmon(t *testing.T) {
	// sysmon polls only while a P is busy (with every P idle it sleeps on a
	// futex until woken): keep one busy.
	var stop atomic.Bool
	defer stop.Store(true)
	go func() {
		for !stop.Load() { // spins on purpose
		}
	}()

	mainBefore := readSlack(t, os.Getpid())
	tid, err := RelaxSysmon(SysmonSlack)
	if errors.Is(err, os.ErrPermission) {
		t.Skip("setting another thread's timer slack needs CAP_SYS_NICE: run as root")
	}
	if err != nil {
		t.Fatalf("RelaxSysmon: %v", err)
	}
	t.Cleanup(func() { // sysmon had the main thread's slack, its creator's
		_ = os.WriteFile("/proc/"+strconv.Itoa(tid)+"/timerslack_ns", []byte(strconv.FormatInt(mainBefore, 10)), 0)
	})
	if got := readSlack(t, tid); got != SysmonSlack.Nanoseconds() {
		t.Errorf("thread %d's timer slack is %d ns, want %d", tid, got, SysmonSlack.Nanoseconds())
	}
	if got := readSlack(t, os.Getpid()); got != mainBefore {
		t.Errorf("the main thread's timer slack changed: %d -> %d ns", mainBefore, got)
	}

	// Count, per thread, the samples that find it in nanosleep until the
	// named one has been seen 20 times. sysmon naps there nearly all the
	// time; another thread may be caught in the runtime's 3 µs nap while it
	// steals work (runqgrab), rarely: the named thread must lead by far.
	nanosleep := strconv.Itoa(unix.SYS_NANOSLEEP) + " "
	name := strconv.Itoa(tid)
	seen := map[string]int{}
	deadline := time.Now().Add(5 * time.Second)
	for seen[name] < 20 && time.Now().Before(deadline) {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/syscall")
			if err == nil && strings.HasPrefix(string(b), nanosleep) {
				seen[task.Name()]++
			}
		}
		runtime.Gosched()
	}
	if seen[name] == 0 {
		t.Fatalf("thread %d (the second in /proc/self/task) was never seen in nanosleep; threads that were: %v", tid, seen)
	}
	for other, n := range seen {
		if other != name && n*4 > seen[name] {
			t.Errorf("thread %s was seen in nanosleep %d times against the named thread's %d: the check cannot tell sysmon apart (%v)", other, n, seen[name], seen)
		}
	}
}
