// Package hosttest creates real users, groups and PAM services for tests
// that need the host's account database, and removes them afterwards. Every
// name starts with "wrmdtest" and a random suffix, so parallel test runs (and
// other packages' tests) do not collide. Tests that use it are skipped unless
// they run as root.
package hosttest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Prefix starts every name this package creates.
const Prefix = "wrmdtest"

// RequireRoot skips t unless it runs as root with the shadow tools present.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create users and groups")
	}
	for _, tool := range []string{"useradd", "userdel", "groupadd", "groupdel", "chpasswd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// Name returns a fresh name: Prefix, then kind, then random hex.
func Name(kind string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return Prefix + kind + hex.EncodeToString(b)
}

// run runs a shadow tool, retrying while another process holds the
// account database's lock.
func run(t testing.TB, stdin string, name string, args ...string) {
	t.Helper()
	var out []byte
	var err error
	for i := 0; i < 20; i++ {
		cmd := exec.Command(name, args...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		out, err = cmd.CombinedOutput()
		if err == nil {
			return
		}
		if !strings.Contains(string(out), "lock") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
}

// runQuiet is run for clean-ups: failures are logged, not fatal.
func runQuiet(t testing.TB, name string, args ...string) {
	for i := 0; i < 20; i++ {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err == nil {
			return
		}
		if !strings.Contains(string(out), "lock") {
			t.Logf("cleanup %s %s: %v: %s", name, strings.Join(args, " "), err, out)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AddGroup creates a group and removes it when t ends.
func AddGroup(t testing.TB) string {
	t.Helper()
	g := Name("g")
	run(t, "", "groupadd", g)
	t.Cleanup(func() { runQuiet(t, "groupdel", g) })
	return g
}

// AddUser creates a user with password (none if ""), member of groups, and
// removes it (and its home) when t ends.
func AddUser(t testing.TB, password string, groups ...string) string {
	t.Helper()
	u := Name("u")
	args := []string{"--create-home", "--shell", "/bin/sh", "--user-group"}
	if len(groups) > 0 {
		args = append(args, "--groups", strings.Join(groups, ","))
	}
	run(t, "", "useradd", append(args, u)...)
	t.Cleanup(func() { runQuiet(t, "userdel", "--remove", u) })
	if password != "" {
		run(t, u+":"+password+"\n", "chpasswd")
	}
	return u
}

// AddPAMService writes /etc/pam.d/winrmd-test-<random> with content and
// removes it when t ends. It returns the service name.
func AddPAMService(t testing.TB, content string) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	svc := "winrmd-test-" + hex.EncodeToString(b)
	p := filepath.Join("/etc/pam.d", svc)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
	t.Cleanup(func() { os.Remove(p) })
	return svc
}

// UnixService is a PAM service that checks passwords with pam_unix only
// (no delay on failure, so tests stay fast).
const UnixService = `auth     required pam_unix.so nodelay
account  required pam_unix.so
`

// Run runs a command (a shadow tool such as usermod) and fails t if it
// fails.
func Run(t testing.TB, name string, args ...string) {
	t.Helper()
	run(t, "", name, args...)
}
