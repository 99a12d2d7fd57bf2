package isolation

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// daemonNoNewPrivs reports whether the thread-group leader (the main
// thread) has no_new_privs now, by /proc/self/status: the file's word
// against the prctl startedWithNoNewPrivs made during initialisation.
func daemonNoNewPrivs() bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "NoNewPrivs:"); ok {
			return strings.TrimSpace(v) == "1"
		}
	}
	return false
}

// TestDaemonNoNewPrivs: a daemon started with no_new_privs (here by
// setpriv, as a container without privilege escalation starts it) sees
// the flag, so its spawner stops asking workers for new privileges they
// could never have; a daemon started without it does not.
func TestDaemonNoNewPrivs(t *testing.T) {
	if os.Getenv("WINRMD_TEST_NNP_CHILD") == "1" {
		if !startedWithNoNewPrivs || !daemonNoNewPrivs() {
			t.Fatalf("started under setpriv --no-new-privs, but startedWithNoNewPrivs is %v, daemonNoNewPrivs %v", startedWithNoNewPrivs, daemonNoNewPrivs())
		}
		return
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	if startedWithNoNewPrivs {
		t.Skip("the test itself runs with no_new_privs; the negative case cannot be checked")
	}
	cmd := exec.Command(setpriv, "--no-new-privs", os.Args[0], "-test.run=^TestDaemonNoNewPrivs$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WINRMD_TEST_NNP_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child under setpriv: %v\n%s", err, out)
	}
}
