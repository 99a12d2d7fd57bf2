package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/accounts"
)

type cliResult struct {
	code           int
	stdout, stderr string
}

func runUser(stdin string, args ...string) cliResult {
	var out, errb bytes.Buffer
	code := userCmd(args, strings.NewReader(stdin), &out, &errb)
	return cliResult{code, out.String(), errb.String()}
}

func TestUserCmd(t *testing.T) {
	store := filepath.Join(t.TempDir(), "accounts")
	const secret = "S3cret-pässword"
	steps := []struct {
		name   string
		stdin  string
		args   []string
		code   int
		stdout string // exact, when checkOut
		inErr  string // substring of stderr
	}{
		{"no args", "", nil, 2, "", "usage"},
		{"unknown verb", "", []string{"frob"}, 2, "", "unknown subcommand"},
		{"add without name", secret, []string{"add", "--store", store}, 2, "", "exactly one NAME"},
		{"add two names", secret, []string{"add", "--store", store, "a", "b"}, 2, "", "exactly one NAME"},
		{"bad flag", secret, []string{"add", "--nope", "alice"}, 2, "", "flag provided but not defined"},
		{"bad name", secret, []string{"add", "--store", store, "a:b"}, 2, "", "account name"},
		{"list takes no name", "", []string{"list", "--store", store, "x"}, 2, "", "takes no NAME"},
		{"empty store flag", "", []string{"list", "--store", ""}, 2, "", "--store is empty"},
		{"list empty", "", []string{"list", "--store", store}, 0, "", ""},
		{"add", secret + "\n", []string{"add", "--store", store, "Alice"}, 0, "", "added"},
		{"add flag after name", "pw2\r\n", []string{"add", "bob", "--store", store}, 0, "", "added"},
		{"add flag with =", "pw3", []string{"add", "--store=" + store, "carol"}, 0, "", "added"},
		{"add existing", secret + "\n", []string{"add", "--store", store, "alice"}, 1, "", "already exists"},
		{"add empty password", "\n", []string{"add", "--store", store, "dave"}, 1, "", "no password"},
		{"add no stdin", "", []string{"add", "--store", store, "dave"}, 1, "", "no password"},
		{"add NUL password", "a\x00b\n", []string{"add", "--store", store, "dave"}, 1, "", "NUL"},
		{"add long password", strings.Repeat("p", 2000) + "\n", []string{"add", "--store", store, "dave"}, 1, "", "longer than"},
		{"list", "", []string{"list", "--store", store}, 0, "Alice\nbob\ncarol\n", ""},
		{"passwd", "newpw\n", []string{"passwd", "--store", store, "ALICE"}, 0, "", "changed"},
		{"passwd unknown", "x\n", []string{"passwd", "--store", store, "zed"}, 1, "", "no account"},
		{"del", "", []string{"del", "--store", store, "BOB"}, 0, "", "deleted"},
		{"del unknown", "", []string{"del", "--store", store, "bob"}, 1, "", "no account"},
		{"list after", "", []string{"list", "--store", store}, 0, "Alice\ncarol\n", ""},
		{"help", "", []string{"add", "--help"}, 0, "", ""},
	}
	for _, s := range steps {
		r := runUser(s.stdin, s.args...)
		if r.code != s.code {
			t.Fatalf("%s: exit %d, want %d (stderr %q)", s.name, r.code, s.code, r.stderr)
		}
		if s.stdout != "" && r.stdout != s.stdout {
			t.Fatalf("%s: stdout %q, want %q", s.name, r.stdout, s.stdout)
		}
		if !strings.Contains(r.stderr, s.inErr) {
			t.Fatalf("%s: stderr %q lacks %q", s.name, r.stderr, s.inErr)
		}
		for _, out := range []string{r.stdout, r.stderr} {
			if strings.Contains(out, secret) || strings.Contains(out, "newpw") || strings.Contains(out, "pw2") {
				t.Fatalf("%s: password printed: %q", s.name, out)
			}
		}
	}
	st, err := accounts.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Verify("alice", "newpw"); err != nil {
		t.Fatalf("passwd did not take: %v", err)
	}
	if err := st.Verify("carol", "pw3"); err != nil {
		t.Fatalf("password without newline: %v", err)
	}
	if err := st.Verify("bob", "pw2"); !errors.Is(err, authn.ErrUnknownAccount) {
		t.Fatalf("deleted user: %v", err)
	}
	// Only the first line is the password.
	if r := runUser("first\nsecond\n", "add", "--store", store, "erin"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if err := st.Verify("erin", "first"); err != nil {
		t.Fatalf("first line: %v", err)
	}
	// A store with a bad mode is refused, not rewritten.
	os.Chmod(store, 0o644)
	if r := runUser("x\n", "add", "--store", store, "frank"); r.code != 1 || !strings.Contains(r.stderr, "chmod 600") {
		t.Fatalf("bad mode: %+v", r)
	}
	if r := runUser("", "list", "--store", store); r.code != 1 {
		t.Fatalf("list of a bad store: %+v", r)
	}
}

// openPTY returns a pseudo-terminal pair (master, slave) without cgo.
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		m.Close()
		t.Skipf("unlockpt: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		m.Close()
		t.Skipf("ptsname: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

func TestUserCmdTerminal(t *testing.T) {
	store := filepath.Join(t.TempDir(), "accounts")
	for _, tc := range []struct {
		name        string
		first, next string
		code        int
	}{
		{"matching", "tty-secret", "tty-secret", 0},
		{"mismatch", "tty-secret", "other-secret", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, slave := openPTY(t)
			var errb, echoed syncBuffer
			var out bytes.Buffer
			done := make(chan int, 1)
			name := "tty" + tc.name
			go func() { done <- userCmd([]string{"add", "--store", store, name}, slave, &out, &errb) }()
			// Feed the two answers; collect whatever the terminal echoes.
			go func() {
				buf := make([]byte, 256)
				for {
					n, err := master.Read(buf)
					echoed.Write(buf[:n])
					if err != nil {
						return
					}
				}
			}()
			waitFor(t, &errb, "Password: ")
			waitEcho(t, slave)
			master.Write([]byte(tc.first + "\n"))
			waitFor(t, &errb, "Password (again): ")
			waitEcho(t, slave)
			master.Write([]byte(tc.next + "\n"))
			var code int
			select {
			case code = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("userCmd did not finish")
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tc.code, errb.String())
			}
			time.Sleep(50 * time.Millisecond)
			if strings.Contains(echoed.String(), "secret") || strings.Contains(errb.String(), "secret") {
				t.Fatalf("password echoed: %q / %q", echoed.String(), errb.String())
			}
			if tc.code != 0 && !strings.Contains(errb.String(), "do not match") {
				t.Fatalf("stderr %q", errb.String())
			}
		})
	}
	st, _ := accounts.Open(store)
	if err := st.Verify("ttymatching", "tty-secret"); err != nil {
		t.Fatal(err)
	}
	if st.Has("ttymismatch") {
		t.Fatal("mismatched passwords still added the account")
	}
}

// syncBuffer is a bytes.Buffer the command writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor waits until b contains s.
func waitFor(t *testing.T, b *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in %q", s, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitEcho waits until the terminal's echo is off (term.ReadPassword turned
// it off), so the answer is typed into a silent terminal as a user would.
func waitEcho(t *testing.T, slave *os.File) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var tio syscall.Termios
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, slave.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&tio))); e == 0 && tio.Lflag&syscall.ECHO == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("echo never turned off")
}
