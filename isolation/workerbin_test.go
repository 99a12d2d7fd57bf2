package isolation

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The worker-only binary is used only where nobody but its owner can
// replace it or its directory.
func TestWorkerBinaryIn(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := workerBinaryIn(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("absent: %v, want ErrNotExist", err)
	}
	p := filepath.Join(dir, WorkerBinary)
	if err := os.WriteFile(p, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := workerBinaryIn(dir)
	if err != nil || got.Name() != p {
		t.Fatalf("installed: %v %v", got, err)
	}
	got.Close()
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{p, 0o775}, {p, 0o757}, {p, 0o644}, {dir, 0o775}, {dir, 0o777}} {
		if err := os.Chmod(c.path, c.mode); err != nil {
			t.Fatal(err)
		}
		if f, err := workerBinaryIn(dir); err == nil {
			f.Close()
			t.Errorf("%s mode %v accepted", c.path, c.mode)
		}
		_ = os.Chmod(c.path, 0o755)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(p, 12345, 0); err != nil {
			t.Fatal(err)
		}
		if f, err := workerBinaryIn(dir); err == nil {
			f.Close()
			t.Error("a binary owned by another user accepted")
		}
	}
}

// The worker-only binary (cmd/winrmd-worker, static) serves a shell as
// `winrmd worker` does, and says so when run by hand.
func TestWorkerBinaryServesShell(t *testing.T) {
	u := newTestUser(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, WorkerBinary)
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/winrmd-worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/winrmd-worker: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin).CombinedOutput(); err == nil || !strings.Contains(string(out), "not run by hand") {
		t.Errorf("run by hand: %v %q", err, out)
	}
	s := newTestSpawner(t, SpawnerOptions{Exe: bin, PrestartedWorkers: 1, PrestartNewPrivileges: true})
	waitPoolFull(t, s, 1)
	for i := 0; i < 2; i++ { // pooled, then cold
		h, c := spawn(t, s, SpawnRequest{Account: u.acct, AllowNewPrivileges: i == 0})
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(h.Pid()) + "/exe"); err != nil || exe != bin {
			t.Errorf("worker %d runs %q (%v), want %s", h.Pid(), exe, err, bin)
		}
		out, _, code := c.run(t, sh("id -u; cat"), []byte("stdin through the worker\n"))
		if want := strconv.Itoa(int(u.acct.UID)) + "\nstdin through the worker\n"; code != 0 || out != want {
			t.Errorf("shell %d: %q exit %d, want %q", i, out, code, want)
		}
	}
}
