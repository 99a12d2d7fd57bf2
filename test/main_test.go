package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// skipNotRoot is the one reason e2e tests skip on a developer machine.
const skipNotRoot = "requires root to create users"

// adminGroup is the twin of Windows' Remote Management Users; it is among the
// daemon's default allowed groups.
const adminGroup = "winrm-remote-users"

// userPrefix marks every account the tests create.
const userPrefix = "wrmde2e"

// world is what every test shares: the binary, the users, the store, the
// certificate. It is set up once, on first use, and torn down by TestMain.
type world struct {
	root string // repository root
	bin  string // winrmd binary
	// workerBin is the worker-only binary beside bin (absent with a
	// WINRMD_BIN that has none: the daemon then re-executes itself).
	workerBin string
	work      string // base directory (0755, so test users can traverse it)
	python    string // the venv's python
	store     string // account store holding the users below
	cert      string
	key       string
	admin     *testUser // in winrm-remote-users
	admin2    *testUser // in winrm-remote-users (another identity for cross-user checks)
	plain     *testUser // in no allowed group
	guess     *testUser // in winrm-remote-users; the target of refused logons (so lockouts hit no other account)
	created   bool      // we created adminGroup
	err       error     // set-up failure, reported by every test
}

var (
	w         world
	setupOnce sync.Once
	setupDone bool
	teardownM sync.Mutex
)

func TestMain(m *testing.M) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "e2e: %v: removing test users and processes\n", s)
		teardown()
		os.Exit(2)
	}()
	code := m.Run()
	teardown()
	os.Exit(code)
}

// need returns the shared world or skips/fails the test. Every e2e test
// starts with it.
func need(t testing.TB) *world {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(skipNotRoot)
	}
	if runtime.GOOS != "linux" {
		t.Skip("requires Linux")
	}
	setupOnce.Do(func() {
		w.err = setup()
		setupDone = true
	})
	if w.err != nil {
		t.Fatalf("e2e set-up failed: %v", w.err)
	}
	return &w
}

func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

func setup() error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	w.root = root
	sweepStaleUsers()

	w.work, err = os.MkdirTemp("", "wrmde2e-")
	if err != nil {
		return err
	}
	if err := os.Chmod(w.work, 0o755); err != nil {
		return err
	}

	if b := os.Getenv("WINRMD_BIN"); b != "" {
		if !filepath.IsAbs(b) {
			b = filepath.Join(root, b)
		}
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("WINRMD_BIN: %v", err)
		}
		w.bin = b
	} else {
		w.bin = filepath.Join(w.work, "winrmd")
		args := []string{"build", "-trimpath", "-o", w.bin}
		if os.Getenv("WINRMD_E2E_RACE") == "1" {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/winrmd")
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/winrmd: %v\n%s", err, out)
		}
		// The worker-only binary beside it, as make build and the package
		// install it: the daemons under test run their shells in it (with
		// the race detector too, when the daemon has it).
		wargs := []string{"build", "-trimpath", "-o", filepath.Join(w.work, "winrmd-worker")}
		if os.Getenv("WINRMD_E2E_RACE") == "1" {
			wargs = append(wargs, "-race")
		}
		cmd = exec.Command("go", append(wargs, "./cmd/winrmd-worker")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/winrmd-worker: %v\n%s", err, out)
		}
	}
	w.workerBin = filepath.Join(filepath.Dir(w.bin), "winrmd-worker")
	// Workers re-execute the binary as the test users: it must be reachable.
	if err := os.Chmod(filepath.Dir(w.bin), 0o755); err != nil && !os.IsPermission(err) {
		return err
	}

	w.python = os.Getenv("WINRMD_PYTHON")
	if w.python == "" {
		w.python = filepath.Join(root, ".venv", "bin", "python")
	}

	if err := ensureGroup(); err != nil {
		return err
	}
	suffix := randHex(3)
	for _, u := range []struct {
		dst   **testUser
		name  string
		admin bool
	}{
		{&w.admin, userPrefix + "a" + suffix, true},
		{&w.admin2, userPrefix + "b" + suffix, true},
		{&w.plain, userPrefix + "n" + suffix, false},
		{&w.guess, userPrefix + "g" + suffix, true},
	} {
		tu, err := createUser(u.name, u.admin)
		if err != nil {
			return err
		}
		*u.dst = tu
	}

	w.store = filepath.Join(w.work, "accounts")
	for _, u := range w.users() {
		if err := w.storeAdd(w.store, u.Name, u.Password); err != nil {
			return err
		}
	}

	w.cert = filepath.Join(w.work, "cert.pem")
	w.key = filepath.Join(w.work, "key.pem")
	if out, err := exec.Command(w.bin, "cert", "generate", "--cert", w.cert, "--key", w.key,
		"--host", "127.0.0.1", "--host", "localhost").CombinedOutput(); err != nil {
		return fmt.Errorf("winrmd cert generate: %v\n%s", err, out)
	}
	return nil
}

func (w *world) users() []*testUser { return []*testUser{w.admin, w.admin2, w.plain, w.guess} }

// storeAdd registers name with password in store through the CLI, as an
// administrator would.
func (w *world) storeAdd(store, name, password string) error {
	cmd := exec.Command(w.bin, "user", "add", "--store", store, name)
	cmd.Stdin = strings.NewReader(password + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("winrmd user add %s: %v\n%s", name, err, out.String())
	}
	return nil
}

func teardown() {
	teardownM.Lock()
	defer teardownM.Unlock()
	if !setupDone {
		return
	}
	setupDone = false
	stopAllDaemons()
	stopKDC()
	adTeardown()
	var names []string
	for _, u := range w.users() {
		if u != nil {
			names = append(names, u.Name)
		}
	}
	for _, n := range names {
		killUserProcesses(n, 5*time.Second)
		if err := deleteUser(n); err != nil {
			fmt.Fprintf(os.Stderr, "e2e teardown: %v\n", err)
		}
	}
	if w.created {
		removeGroupIfUnused()
	}
	if w.work != "" && os.Getenv("WINRMD_E2E_KEEP") == "" {
		os.RemoveAll(w.work)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func randPassword() string { return "Pw-" + randHex(10) + "!x" }
