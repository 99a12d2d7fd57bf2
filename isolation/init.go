package isolation

// The daemon as the first process of its pid namespace.
//
// A container's entrypoint is pid 1 of its pid namespace, and the kernel
// gives pid 1 every orphan of the namespace to reap. A worker is a child
// subreaper, so the orphans of a shell's commands go to their worker; but a
// worker that dies before its commands (SIGKILL, the OOM killer at the
// shell's memory limit) hands them on to pid 1, and the daemon's Go runtime
// waits only for the children it started itself. Each would stay a zombie
// for the container's life, holding a pid of the container's limit.
//
// So pid 1 starts the daemon again, as its child, and stays a minimal init:
// it reaps every child it is given, passes on to the daemon the signals a
// container runtime sends (TERM, INT, HUP, QUIT, USR1, USR2), and exits
// with the daemon's status (128 plus the signal's number for a signal).
// When it exits the kernel ends whatever is left in the namespace.

import (
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// initChildEnv marks the daemon that pid 1 started, so it does not start
// another.
const initChildEnv = "WINRMD_PID1_CHILD"

// RunAsInit is the init above, when this process is pid 1 and not the
// daemon it started. It reports whether it ran, and the status to exit with.
func RunAsInit() (code int, ran bool) {
	if os.Getpid() != 1 || os.Getenv(initChildEnv) != "" {
		return 0, false
	}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
	attr := &os.ProcAttr{
		Env:   append(os.Environ(), initChildEnv+"=1"),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	}
	// By its path, so that ps names the daemon; by /proc/self/exe if the
	// file at that path is gone.
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	child, err := os.StartProcess(exe, os.Args, attr)
	if err != nil && exe != "/proc/self/exe" {
		child, err = os.StartProcess("/proc/self/exe", os.Args, attr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "winrmd: as pid 1, starting the daemon: %v\n", err)
		return 1, true
	}
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			_ = child.Signal(sig)
			continue
		}
		// One SIGCHLD may stand for several children.
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
			if pid == child.Pid {
				if ws.Signaled() {
					return 128 + int(ws.Signal()), true
				}
				return ws.ExitStatus(), true
			}
		}
	}
	return 1, true // not reached: sigs is never closed
}
