package isolation

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startPwshAs starts argv as the PowerShell process of a fresh worker of u.
// (Real PowerShell and the PSRP stand-in are exercised end to end in test/;
// here any program that reads lines and writes lines shows the plumbing.)
func startPwshAs(t *testing.T, u *testUser, argv ...string) *PwshProcess {
	t.Helper()
	s := newTestSpawner(t, SpawnerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := s.Spawn(ctx, SpawnRequest{Account: u.acct, ShellID: "wrmdtest-psrp-" + randomHex(4)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := StartPwsh(ctx, w, argv)
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func TestPwshProcessLinesAsUser(t *testing.T) {
	u := newTestUser(t)
	// Echo each line back with the uid; stderr gets a remark; the second
	// line ends it with code 7.
	p := startPwshAs(t, u, "/bin/sh", "-c", `read a; echo "$(id -u) $a"; echo "remoting error" >&2; read b; echo "$b"; exit 7`)
	ctx := context.Background()
	r := bufio.NewReader(p)
	if err := p.WriteLine(ctx, []byte("<DataAck PSGuid='x' />\n")); err != nil {
		t.Fatal(err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(int(u.acct.UID)) + " <DataAck PSGuid='x' />\n"; line != want {
		t.Fatalf("got %q, want %q (pwsh must run as the user)", line, want)
	}
	if err := p.WriteLine(ctx, []byte("no newline")); err == nil {
		t.Fatal("a partial line was written")
	}
	if err := p.WriteLine(ctx, []byte("last\n")); err != nil {
		t.Fatal(err)
	}
	if line, _ := r.ReadString('\n'); line != "last\n" {
		t.Fatalf("second line %q", line)
	}
	// The end of pwsh is an error for the reader, never a quiet EOF, and
	// it carries the exit code and the stderr tail.
	_, err = r.ReadString('\n')
	if !errors.Is(err, ErrPwshExited) || errors.Is(err, io.EOF) {
		t.Fatalf("after exit: %v", err)
	}
	if !strings.Contains(err.Error(), "code 7") || !strings.Contains(err.Error(), "remoting error") {
		t.Errorf("exit error lacks the code or stderr: %v", err)
	}
	if code, ok := p.Exited(); !ok || code != 7 {
		t.Errorf("Exited = %d %v", code, ok)
	}
	if !bytes.Contains(p.Stderr(), []byte("remoting error")) {
		t.Errorf("stderr tail %q", p.Stderr())
	}
	if err := p.WriteLine(ctx, []byte("late\n")); err == nil {
		t.Error("write after exit accepted")
	}
}

// TestPwshProcessKilled: a PowerShell killed mid-conversation ends the
// reader with an error at once (the bridge turns that into a fault).
func TestPwshProcessKilled(t *testing.T) {
	u := newTestUser(t)
	p := startPwshAs(t, u, "/bin/sh", "-c", "echo ready; exec sleep 600")
	r := bufio.NewReader(p)
	if line, err := r.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatal(line, err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.ReadString('\n'); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrPwshExited) {
			t.Fatalf("after kill: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("reader hangs after pwsh was killed")
	}
}

// TestPwshProcessUnreadOutput: Close works while pwsh is blocked writing
// output nobody reads (the window is full), and leaves no process (the test
// user's cleanup checks).
func TestPwshProcessUnreadOutput(t *testing.T) {
	u := newTestUser(t)
	p := startPwshAs(t, u, "/bin/sh", "-c", "yes output-line-nobody-reads")
	time.Sleep(200 * time.Millisecond) // let it fill the window; Close must not care
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Read(make([]byte, 10)); err == nil {
		t.Fatal("read after Close succeeded")
	}
}

func TestStartPwshRefusals(t *testing.T) {
	u := newTestUser(t)
	s := newTestSpawner(t, SpawnerOptions{})
	ctx := context.Background()
	w, err := s.Spawn(ctx, SpawnRequest{Account: u.acct, ShellID: "wrmdtest-psrp-" + randomHex(4)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := StartPwsh(ctx, w, nil); !errors.Is(err, ErrStartFailed) {
		t.Errorf("empty argv: %v", err)
	}
	if _, err := StartPwsh(ctx, w, []string{"/nonexistent/pwsh", "-s"}); !errors.Is(err, ErrStartFailed) {
		t.Errorf("missing program: %v", err)
	}
}
