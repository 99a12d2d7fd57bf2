package isolation

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain is the same hook the daemon's main has: the test binary is its
// own worker, so the tests run the real re-exec and privilege drop. It also
// serves as a helper program that commands run (WRMDTEST_HELPER).
func TestMain(m *testing.M) {
	if IsWorker() {
		WorkerMain()
	}
	if h := os.Getenv("WRMDTEST_HELPER"); h != "" {
		os.Exit(runHelper(h))
	}
	code := m.Run()
	removeHelperDir()
	os.Exit(code)
}

// runHelper implements the helper program's modes.
func runHelper(mode string) int {
	switch {
	case mode == "workerloop":
		return workerLoopHelper()
	case mode == "init":
		return initHelper()
	case mode == "ids":
		r, e, s := syscall.Getuid(), syscall.Geteuid(), -1
		fmt.Printf("uid=%d euid=%d suid=%d\n", r, e, s)
		return 0
	case mode == "setuid0":
		// Try every way back to root; print what happened.
		err := syscall.Setuid(0)
		fmt.Printf("setuid0=%v euid=%d\n", err, syscall.Geteuid())
		if err == nil || syscall.Geteuid() == 0 {
			return 1
		}
		return 0
	case len(mode) > 6 && mode[:6] == "alloc:":
		mb, _ := strconv.Atoi(mode[6:])
		var keep [][]byte
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Printf("allocated %d MiB\n", len(keep))
		runtime.KeepAlive(keep)
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

var (
	helperOnce sync.Once
	helperDir  string
	helperErr  error
)

// helperBinary is a copy of the test binary that any user may execute
// (go test's build directory is private to root).
func helperBinary(t *testing.T) string {
	t.Helper()
	helperOnce.Do(func() {
		helperDir, helperErr = os.MkdirTemp("/var/tmp", "wrmdtest-bin-")
		if helperErr != nil {
			return
		}
		if helperErr = os.Chmod(helperDir, 0o755); helperErr != nil {
			return
		}
		self, err := os.Executable()
		if err != nil {
			helperErr = err
			return
		}
		if helperErr = copyFile(self, filepath.Join(helperDir, "helper")); helperErr != nil {
			return
		}
		helperErr = os.Chmod(filepath.Join(helperDir, "helper"), 0o755)
	})
	if helperErr != nil {
		t.Fatalf("helper binary: %v", helperErr)
	}
	return filepath.Join(helperDir, "helper")
}

// setuidHelper is a setuid-root copy of the test binary that only the test
// user's group can reach, removed at the end of the test.
func setuidHelper(t *testing.T, gid uint32) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "wrmdtest-suid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, 0, int(gid)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper-suid")
	if err := copyFile(self, bin); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bin, os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func removeHelperDir() {
	if helperDir != "" {
		os.RemoveAll(helperDir)
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o700)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// eventually polls cond until it holds or timeout passes.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
