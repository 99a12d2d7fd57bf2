package isolation

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// setEveryThreadSlack gives every thread of this process the timer slack v
// (and so every thread they start) and returns how many it set.
func setEveryThreadSlack(t *testing.T, v int) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range tasks {
		err := os.WriteFile("/proc/"+task.Name()+"/timerslack_ns", []byte(strconv.Itoa(v)), 0)
		if errors.Is(err, os.ErrPermission) {
			t.Skip("setting another thread's timer slack needs CAP_SYS_NICE: run as root")
		}
		if err == nil { // a thread that ended meanwhile has nothing to set
			n++
		}
	}
	return n
}

// A worker and the commands it forks start with the timer slack the daemon
// started with, whatever slack the daemon's threads carry: the runtime's
// sysmon carries 0.5 ms in the daemon (procs.RelaxSysmon), so do the threads
// it starts, and the kernel gives a child the slack of the thread that
// forked it. Here every thread of the test process carries another value;
// only the spawn thread's reset stands between it and the command.
func TestCommandsKeepStartingTimerSlack(t *testing.T) {
	if startingTimerSlack <= 0 {
		t.Skip("PR_GET_TIMERSLACK gave no slack at start")
	}
	u := newTestUser(t)
	s := newTestSpawner(t, SpawnerOptions{})
	other := startingTimerSlack*7 + 1000
	if setEveryThreadSlack(t, other) == 0 {
		t.Fatal("no thread's slack was set")
	}
	t.Cleanup(func() { setEveryThreadSlack(t, startingTimerSlack) })

	h, c := spawn(t, s, SpawnRequest{Account: u.acct})
	out, errOut, code := c.run(t, sh("cat /proc/self/timerslack_ns"), nil)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if got := strings.TrimSpace(out); got != strconv.Itoa(startingTimerSlack) {
		t.Errorf("the command's timer slack is %s ns, want the daemon's starting %d (the daemon's threads carry %d)", got, startingTimerSlack, other)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(h.Pid()) + "/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(startingTimerSlack) {
		t.Errorf("the worker's main thread has timer slack %s ns, want %d", got, startingTimerSlack)
	}
}
