package procs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// SysmonSlack is the timer slack RelaxSysmon gives the runtime's sysmon
// thread: 0.5 ms, ten times the kernel's default of 50 µs.
//
// Why. sysmon is the Go runtime's monitor thread. After every wake-up from
// its deep sleep (any request to an idle daemon, any command in an idle
// worker) it polls in 20 µs naps for at least 50 rounds, and the kernel's
// 50 µs slack makes each about 70 µs: a wake-up every 70 µs while any of
// the process's Ps is busy. On a host with few CPUs
// each wake-up takes a CPU from the command the request waits for, and a
// nap that spans a system call of the process's one P hands that P to a
// spinning thread (retake): more wake-ups. A profile of the warm-command
// row (`make bench -rows warm_ntlm -perf`, BENCH.md) put sysmon at 19% of
// the daemon's CPU. With 0.5 ms of slack the kernel may hold each nap for
// up to half a millisecond, and sysmon polls far less often (it is still
// woken at the first system call after every idle spell); A/B on 2 CPUs
// (BENCH.md): a warm command 2–4% faster, 0.1–0.15 ms less server
// CPU per command, the 200-shell and cold rows no slower.
//
// What it costs. sysmon's duties are late by at most the slack: a P held in
// a system call longer than that is handed on up to 0.5 ms later, a
// goroutine running for 10 ms is preempted up to 5% later, the forced GC
// every 2 minutes is unaffected. Timers and the network poller are not
// sysmon's and keep their precision. Threads sysmon starts inherit its
// slack (the kernel copies the creating thread's); package isolation
// therefore gives its spawn threads the process's own slack back, so that
// workers and the users' commands start with the slack the daemon was
// started with, never this one.
const SysmonSlack = 500 * time.Microsecond

// ErrNoSysmon: the process has no second thread, so sysmon cannot be told
// apart (a runtime without it).
var ErrNoSysmon = errors.New("procs: no sysmon thread found")

// RelaxSysmon sets the timer slack of the calling process's sysmon thread
// and returns that thread's id.
//
// Which thread. The runtime starts sysmon before anything else can start a
// thread (runtime.main, before the first package initialiser), and
// /proc/self/task lists a process's threads in the order they were made (the
// kernel's thread list), so sysmon is its second entry. TestRelaxSysmon
// checks that this is so on the Go version the project is built with: the
// thread it names is the one seen in sysmon's nanosleep.
//
// Setting another thread's slack takes CAP_SYS_NICE (the daemon as root, a
// worker before its privilege drop); without it the error wraps
// os.ErrPermission and nothing changed.
func RelaxSysmon(slack time.Duration) (tid int, err error) {
	f, err := os.Open("/proc/self/task")
	if err != nil {
		return 0, fmt.Errorf("procs: sysmon: %w", err)
	}
	// Two entries are enough: the main thread and sysmon.
	names, err := f.Readdirnames(2)
	f.Close()
	if err != nil || len(names) < 2 {
		return 0, fmt.Errorf("%w (/proc/self/task: %d entries, %v)", ErrNoSysmon, len(names), err)
	}
	if tid, err = strconv.Atoi(names[1]); err != nil || tid == os.Getpid() {
		return 0, fmt.Errorf("%w (/proc/self/task's second entry is %q)", ErrNoSysmon, names[1])
	}
	// /proc/<tid> reaches a thread of any process by its id (/proc/self/task
	// has no timerslack_ns), and the write applies to that thread alone.
	path := "/proc/" + names[1] + "/timerslack_ns"
	if err := os.WriteFile(path, []byte(strconv.FormatInt(slack.Nanoseconds(), 10)), 0); err != nil {
		return tid, fmt.Errorf("procs: sysmon's timer slack (%s): %w", path, err)
	}
	return tid, nil
}
