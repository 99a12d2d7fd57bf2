package winbind_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
	"github.com/winrmd/winrmd/authn/ntlm/ntlmtest"
	"github.com/winrmd/winrmd/authn/winbind"
)

func ntlmAuth(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ntlm_auth")
	if err != nil {
		t.Skip("ntlm_auth not installed (Debian package winbind)")
	}
	return p
}

// handshake runs an NTLM handshake (MIC, KEY_EXCH) against an acceptor
// whose verifier is v, then a sealing round trip, which only works if the
// verifier returned the right session key.
func handshake(t *testing.T, v ntlm.Verifier, user, domain, password string) error {
	t.Helper()
	a := ntlm.NewAcceptor(ntlm.Config{Verifier: v, NetBIOSComputer: "WBHOST", DNSComputer: "wbhost"})
	c := &ntlmtest.Client{User: user, Domain: domain, Password: password, MIC: true, KeyExch: true}
	ch, _, err := a.Step(context.Background(), authn.ConnInfo{}, c.Negotiate())
	if err != nil {
		t.Fatal(err)
	}
	auth, err := c.Authenticate(ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, auth); err != nil {
		return err
	}
	sig, data := c.Session.Seal([]byte("<s:Envelope/>"))
	if plain, err := a.Sealer().Unseal(sig, data); err != nil || string(plain) != "<s:Envelope/>" {
		t.Fatalf("sealing with the winbind session key: %v", err)
	}
	sig, data, _ = a.Sealer().Seal([]byte("reply"))
	if plain, err := c.Session.Unseal(sig, data); err != nil || string(plain) != "reply" {
		t.Fatalf("client unseal: %v", err)
	}
	return nil
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "helper.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRealNTLMAuthPasswordMode drives the real ntlm_auth binary. With
// --password it verifies the NTLMv2 response itself (no winbindd), which
// exercises the whole helper protocol exchange and Samba's own NTLMv2 and
// session-key computation against our acceptor.
func TestRealNTLMAuthPasswordMode(t *testing.T) {
	path := ntlmAuth(t)
	// Count helper starts through a wrapper.
	starts := filepath.Join(t.TempDir(), "starts")
	wrapper := writeScript(t, fmt.Sprintf("echo x >> %s\nexec %s \"$@\"\n", starts, path))
	v := winbind.New(wrapper, winbind.WithArgs("--password=Secr3t!pass"), winbind.WithPool(1))
	defer v.Close()
	for i := 0; i < 3; i++ {
		if err := handshake(t, v, "alice", "WORKGROUP", "Secr3t!pass"); err != nil {
			t.Fatalf("good password #%d: %v", i, err)
		}
	}
	b, _ := os.ReadFile(starts)
	if n := bytes.Count(b, []byte("x")); n != 1 {
		t.Errorf("%d helper starts for 3 successes with a pool, want 1", n)
	}
	err := handshake(t, v, "alice", "WORKGROUP", "wrong")
	if !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	t.Logf("wrong password: %v", err)
	// Success again after a failure (the failed helper was discarded).
	if err := handshake(t, v, "alice", "", "Secr3t!pass"); err != nil {
		t.Fatalf("after failure: %v", err)
	}
	// Names that could break the line protocol travel base64-encoded.
	if err := handshake(t, v, "al\nice", "WORK\r\nGROUP", "Secr3t!pass"); err != nil {
		t.Fatalf("names with line breaks: %v", err)
	}
}

// isolatedRun returns a wrapper that runs ntlm_auth in a private mount
// namespace whose /run/samba is dir, so tests can point it at their own
// winbindd (or at none) without touching the host's.
func isolatedRun(t *testing.T, path, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	if err := exec.Command("unshare", "-m", "--propagation", "private", "true").Run(); err != nil {
		t.Skipf("unshare -m not available: %v", err)
	}
	return writeScript(t, fmt.Sprintf("exec unshare -m --propagation private sh -c 'mount --bind %s /run/samba && exec %s \"$@\"' ntlm_auth \"$@\"\n", dir, path))
}

// TestRealWinbindNotRunning: the real ntlm_auth with no winbindd behind
// /run/samba/winbindd answers an error that maps to ErrBackend.
func TestRealWinbindNotRunning(t *testing.T) {
	path := ntlmAuth(t)
	empty := t.TempDir()
	v := winbind.New(isolatedRun(t, path, empty))
	defer v.Close()
	err := handshake(t, v, "alice", "WORKGROUP", "Secr3t!pass")
	if !errors.Is(err, authn.ErrBackend) {
		t.Fatalf("got %v, want ErrBackend", err)
	}
	t.Logf("winbind not running: %v", err)
}

func TestMissingBinary(t *testing.T) {
	v := winbind.New(filepath.Join(t.TempDir(), "no-such-ntlm_auth"))
	err := handshake(t, v, "alice", "", "x")
	if !errors.Is(err, authn.ErrBackend) || !strings.Contains(err.Error(), "no-such-ntlm_auth") {
		t.Fatalf("got %v", err)
	}
}

// readRequest is the shell fragment every fake helper uses: read lines up to
// ".", remembering the user.
const readRequest = `read_req() { while IFS= read -r l; do case "$l" in .) return 0;; Username::*) U="$l";; esac; done; exit 0; }
`

func TestFakeHelpers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  string
		want    error
		inError string
	}{
		{"success", readRequest + "while read_req; do echo 'Authenticated: Yes'; echo 'User-Session-Key: 000102030405060708090A0B0C0D0E0F'; echo .; done", nil, ""},
		{"wrong password, double dot", readRequest + "while read_req; do echo 'Authenticated: No'; echo 'Authentication-Error: Wrong Password'; echo .; echo .; done", authn.ErrBadCredentials, "Wrong Password"},
		{"no such user", readRequest + "while read_req; do echo 'Authenticated: No'; echo 'Authentication-Error: NT_STATUS_NO_SUCH_USER'; echo .; done", authn.ErrUnknownAccount, "NO_SUCH_USER"},
		{"locked out", readRequest + "while read_req; do echo 'Authenticated: No'; echo 'Authentication-Error: NT_STATUS_ACCOUNT_LOCKED_OUT'; echo .; done", authn.ErrBadCredentials, "LOCKED_OUT"},
		{"no logon servers", readRequest + "while read_req; do echo 'Authenticated: No'; echo 'Authentication-Error: NT_STATUS_NO_LOGON_SERVERS'; echo .; done", authn.ErrBackend, "NO_LOGON_SERVERS"},
		{"no session key", readRequest + "while read_req; do echo 'Authenticated: Yes'; echo .; done", authn.ErrBackend, "privileged pipe"},
		{"bad session key", readRequest + "while read_req; do echo 'Authenticated: Yes'; echo 'User-Session-Key: zz'; echo .; done", authn.ErrBackend, "session key"},
		{"protocol error", readRequest + "while read_req; do echo 'Error: Unknown request'; echo .; done", authn.ErrBackend, "Unknown request"},
		{"exits at once", "echo 'cannot load smb.conf' >&2; exit 1", authn.ErrBackend, "smb.conf"},
		{"hangs", "sleep 30", authn.ErrBackend, "in time"},
		{"endless output", "yes 'Foo: bar'", authn.ErrBackend, "lines"},
		{"long line", "head -c 100000 /dev/zero | tr '\\0' a; echo", authn.ErrBackend, "line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			timeout := 10 * time.Second // generous: shared, loaded machines
			if tc.name == "hangs" {
				timeout = time.Second
			}
			v := winbind.New(writeScript(t, tc.script), winbind.WithTimeout(timeout))
			defer v.Close()
			var ch [8]byte
			res, err := v.Verify(context.Background(), ntlm.VerifyRequest{User: "alice", ServerChallenge: ch, NtResponse: make([]byte, 64)})
			if tc.want == nil {
				if err != nil || len(res.SessionBaseKey) != 16 || res.SessionBaseKey[15] != 0x0f {
					t.Fatalf("%v %x", err, res.SessionBaseKey)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.inError) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.inError)
			}
		})
	}
}

// TestStaleHelperRetried: a pooled helper that exited is replaced
// transparently.
func TestStaleHelperRetried(t *testing.T) {
	// Answers one request, then exits.
	v := winbind.New(writeScript(t, readRequest+"read_req; echo 'Authenticated: Yes'; echo 'User-Session-Key: 000102030405060708090A0B0C0D0E0F'; echo .; exit 0"))
	defer v.Close()
	var ch [8]byte
	for i := 0; i < 3; i++ {
		if _, err := v.Verify(context.Background(), ntlm.VerifyRequest{User: "alice", ServerChallenge: ch, NtResponse: make([]byte, 64)}); err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		time.Sleep(50 * time.Millisecond) // let the helper exit
	}
}

func TestConcurrencyAndCancel(t *testing.T) {
	v := winbind.New(writeScript(t, readRequest+"while read_req; do sleep 0.2; echo 'Authenticated: Yes'; echo 'User-Session-Key: 000102030405060708090A0B0C0D0E0F'; echo .; done"),
		winbind.WithMaxProcs(2), winbind.WithPool(2))
	defer v.Close()
	var ch [8]byte
	req := ntlm.VerifyRequest{User: "alice", ServerChallenge: ch, NtResponse: make([]byte, 64)}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := v.Verify(context.Background(), req)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := v.Verify(ctx, req); !errors.Is(err, authn.ErrBackend) {
		t.Fatalf("cancelled: %v", err)
	}
	// Refusals before any process is involved.
	for _, r := range []ntlm.VerifyRequest{
		{User: "alice", NtResponse: make([]byte, 24)},
		{User: "alice", NtResponse: make([]byte, 30)},
		{User: "", NtResponse: make([]byte, 64)},
	} {
		if _, err := v.Verify(context.Background(), r); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
}

// TestRealWinbindd runs a private winbindd (standalone server, tdbsam in
// a temporary directory, no network listeners) and verifies real logons
// through it: success with the right session key, wrong password, unknown
// user.
func TestRealWinbindd(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	path := ntlmAuth(t)
	for _, tool := range []string{"winbindd", "smbpasswd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	// Not t.TempDir: samba-dcerpcd, which winbindd starts on its own, can
	// still be writing its lock files for a moment after it is signalled;
	// the cleanup below waits for it and then removes the directory.
	dir, err := os.MkdirTemp("", "TestRealWinbindd")
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	for _, d := range []string{"private", "lock", "state", "cache", "pid", "log", "run/winbindd"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	wrapper := isolatedRun(t, path, run) // skips unless root with unshare
	conf := filepath.Join(dir, "smb.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`[global]
  workgroup = WBTEST
  netbios name = WBHOST
  server role = standalone server
  passdb backend = tdbsam:%[1]s/private/passdb.tdb
  private dir = %[1]s/private
  lock directory = %[1]s/lock
  state directory = %[1]s/state
  cache directory = %[1]s/cache
  pid directory = %[1]s/pid
  ncalrpc dir = %[1]s/ncalrpc
  winbindd socket directory = %[1]s/run/winbindd
  log file = %[1]s/log/log.%%m
  interfaces = lo
  bind interfaces only = yes
  disable netbios = yes
`, dir)), 0o644)
	begin := time.Now()
	add := exec.Command("smbpasswd", "-c", conf, "-a", "-s", "nobody")
	add.Stdin = strings.NewReader("Secr3t!pass\nSecr3t!pass\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Skipf("smbpasswd: %v %s", err, out)
	}
	// winbindd -F calls setsid(): its process group is its pid.
	wb := exec.Command("winbindd", "-F", "--configfile="+conf)
	if err := wb.Start(); err != nil {
		t.Skipf("winbindd: %v", err)
	}
	t.Cleanup(func() {
		// winbindd and the samba-dcerpcd it starts: our process group and pid files.
		syscall.Kill(-wb.Process.Pid, syscall.SIGTERM)
		for _, f := range []string{"winbindd.pid", "samba-dcerpcd.pid"} {
			if b, err := os.ReadFile(filepath.Join(dir, "pid", f)); err == nil {
				var pid int
				if fmt.Sscan(string(b), &pid); pid > 1 {
					syscall.Kill(pid, syscall.SIGTERM)
				}
			}
		}
		done := make(chan struct{})
		go func() { wb.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-wb.Process.Pid, syscall.SIGKILL)
			<-done
		}
		// samba-dcerpcd is not our child: wait until its pid is gone.
		if b, err := os.ReadFile(filepath.Join(dir, "pid", "samba-dcerpcd.pid")); err == nil {
			var pid int
			if fmt.Sscan(string(b), &pid); pid > 1 {
				for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
					if i == 40 {
						syscall.Kill(pid, syscall.SIGKILL)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
		var rmErr error
		for i := 0; i < 20; i++ {
			if rmErr = os.RemoveAll(dir); rmErr == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if rmErr != nil {
			t.Errorf("removing %s: %v", dir, rmErr)
		}
	})
	sock := filepath.Join(run, "winbindd", "pipe")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(dir, "log", "log.winbindd"))
			t.Fatalf("winbindd did not come up: %s", logs)
		}
	}
	v := winbind.New(wrapper, winbind.WithTimeout(20*time.Second))
	defer v.Close()
	// The local SAM domain is the NetBIOS name.
	if err := handshake(t, v, "nobody", "WBHOST", "Secr3t!pass"); err != nil {
		t.Fatalf("real winbind logon: %v", err)
	}
	err = handshake(t, v, "nobody", "WBHOST", "wrong")
	if !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	t.Logf("wrong password via winbindd: %v", err)
	err = handshake(t, v, "nosuchuser", "WBHOST", "x")
	if !errors.Is(err, authn.ErrUnknownAccount) && !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("unknown user: %v", err)
	}
	t.Logf("unknown user via winbindd: %v", err)
	t.Logf("real winbindd test took %v", time.Since(begin).Round(time.Millisecond))
}
