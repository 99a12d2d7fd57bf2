package isolation

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// A descriptor inherited without close-on-exec does not reach a program
// started after MarkInheritedCloseOnExec (issue 14.8).
func TestMarkInheritedCloseOnExec(t *testing.T) {
	f, err := os.Open("/etc/hostname")
	if err != nil {
		t.Skip("no /etc/hostname to hold open:", err)
	}
	defer f.Close()
	fd := int(f.Fd())
	// What a wrapper's `exec 9<file` leaves: a descriptor without CLOEXEC.
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFD, 0); e != 0 {
		t.Fatal(e)
	}
	list := func() string {
		out, err := exec.Command("/bin/sh", "-c", "ls /proc/$$/fd").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(string(out)), " ")
	}
	if got := list(); !strings.Contains(" "+got+" ", " "+strconv.Itoa(fd)+" ") {
		t.Fatalf("precondition: descriptor %d should reach a child before marking, got %q", fd, got)
	}
	if err := MarkInheritedCloseOnExec(3); err != nil {
		t.Fatal(err)
	}
	if got := list(); got != "0 1 2" {
		t.Fatalf("a child sees descriptors %q, want exactly 0 1 2", got)
	}
}
