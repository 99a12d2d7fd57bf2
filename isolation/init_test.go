package isolation

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// As pid 1 of a new pid namespace, RunAsInit runs the program again as
// pid 2 and reaps the orphans the namespace gives it: none is left a
// zombie, and pid 1 exits with the program's status. The control runs the
// same program as pid 1 itself, without the init: its orphans stay zombies.
func TestInitReapsOrphans(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("a new pid namespace needs root")
	}
	run := func(extraEnv ...string) (string, int) {
		cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", os.Args[0])
		cmd.Env = append(os.Environ(), append([]string{"WRMDTEST_HELPER=init"}, extraEnv...)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := run(); code != 7 || !strings.Contains(out, "pid 1 is the init: no zombie") {
		t.Fatalf("under the init: exit %d, want the program's 7; output %q", code, out)
	}
	if out, code := run(initChildEnv + "=1"); code != 1 || !strings.Contains(out, "pid 1 is this program: zombie") {
		t.Fatalf("control, the program as pid 1 itself: exit %d, want 1 and a zombie; output %q", code, out)
	}
}

// initHelper is the program of TestInitReapsOrphans: under RunAsInit when
// it is pid 1. It leaves two orphans to the namespace's pid 1, lets them
// end, and looks for zombies; 7 when there are none.
func initHelper() int {
	if code, ran := RunAsInit(); ran {
		return code
	}
	if err := exec.Command("/bin/sh", "-c", "sleep 0.2 & sleep 0.2 & exit 0").Run(); err != nil {
		fmt.Println("sh:", err)
		return 2
	}
	time.Sleep(500 * time.Millisecond) // the sleeps end
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if zombies() == "" {
			fmt.Printf("pid 1 is %s: no zombie\n", whoIsPid1())
			return 7
		}
	}
	fmt.Printf("pid 1 is %s: zombie %s\n", whoIsPid1(), zombies())
	return 1
}

// whoIsPid1 says whether the helper runs as pid 1 or under the init.
func whoIsPid1() string {
	if os.Getpid() == 1 {
		return "this program"
	}
	return "the init"
}

// zombies lists the zombie processes /proc shows.
func zombies() string {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var z []string
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && len(s) > i+2 && s[i+2] == 'Z' {
			z = append(z, s[:strings.IndexByte(s, ' ')])
		}
	}
	return strings.Join(z, ",")
}
