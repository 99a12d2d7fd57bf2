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

	nanosleep := strconv.Itoa(unix.SYS_NANOSLEEP) + " "
	seen := map[string]int{}
	deadline := time.Now().Add(5 * time.Second)
	for seen[strconv.Itoa(tid)] == 0 && time.Now().Before(deadline) {
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
	if seen[strconv.Itoa(tid)] == 0 {
		t.Fatalf("thread %d (the second in /proc/self/task) was never seen in nanosleep; threads that were: %v", tid, seen)
	}
	delete(seen, strconv.Itoa(tid))
	if len(seen) > 0 {
		t.Errorf("other threads napped in nanosleep too, so the check cannot tell sysmon apart: %v", seen)
	}
}
