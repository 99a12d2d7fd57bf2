package main

// The lean client's NTLM and CredSSP paths against a real daemon: winrmd
// built from this tree, served in lab mode (shells run as the test's own
// user), configured as the bench configures it (CredSSP on).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn/credssp/credssptest"
)

// labDaemon builds bin/winrmd from this tree and starts it in lab mode
// for target's user.
func labDaemon(t *testing.T) (*daemon, *wsTarget) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and starts winrmd")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain to build winrmd")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "winrmd")
	build := exec.Command(goBin, "build", "-o", bin, "github.com/winrmd/winrmd/cmd/winrmd")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building winrmd: %v\n%s", err, out)
	}
	cl := &cleanups{}
	t.Cleanup(cl.run)
	password := randomPassword()
	d, err := startDaemon(bin, dir, password, "", true, cl)
	if err != nil {
		t.Fatal(err)
	}
	return d, &wsTarget{httpAddr: d.http, httpsAddr: d.https, user: benchUser, password: password,
		envelopeSize: 512000, timeout: time.Minute}
}

// exactShell logs on with kind, opens a shell and checks that the
// connection carries bytes unchanged both ways (exact: a command's output
// byte for byte, the digest of two full-size Sends). The client is closed
// when the test ends.
func exactShell(t *testing.T, d *daemon, target *wsTarget, kind authKind) (*wsClient, string) {
	t.Helper()
	c, err := dialWS(target, kind)
	if err != nil {
		t.Fatalf("%s logon: %v\n%s", kind, err, tail(d.logFile, 20))
	}
	t.Cleanup(func() { c.Close() })
	shell, err := c.CreateShell()
	if err != nil {
		t.Fatal(err)
	}
	if err := exact(c, shell); err != nil {
		t.Fatal(err)
	}
	return c, shell
}

// TestNTLMClient: the lean NTLM path (ntlmtest's handshake, authn/ntlm's
// initiator session with keystream drawn ahead) against the daemon. The
// streams are long enough for runs of full-size messages both ways, so
// prepared keystreams are used (counted) and, where the size changes, set
// aside: a wrong keystream or sequence would fail the daemon's or the
// client's integrity check, and the bytes are compared (exact) or
// digested.
func TestNTLMClient(t *testing.T) {
	d, target := labDaemon(t)
	c, shell := exactShell(t, d, target, authNTLM)
	// 8 MiB of output: about 22 full responses and a short last one.
	const n = 8 << 20
	c.resetPhases()
	t0 := time.Now()
	res, err := c.Run(shell, fmt.Sprintf("head -c %d /dev/zero", n))
	wall := time.Since(t0)
	if err != nil || res.stdout != n || res.exitCode != 0 {
		t.Fatalf("stdout: %d bytes, exit %d, %v", res.stdout, res.exitCode, err)
	}
	// The phases of its round trips are disjoint parts of its time.
	var split phaseSplit
	split.add(c, wall, n)
	e := split.extra()
	if ph := c.ph; ph.daemon <= 0 || ph.read <= 0 || ph.write <= 0 || ph.daemon+ph.read+ph.write > wall ||
		e["client_ms_per_mb"].(float64) <= 0 || e["client_cpu_ms_per_mb"].(float64) <= 0 {
		t.Fatalf("phases of a %v stream: %+v, %v", wall, ph, e)
	}
	// 20 full Sends and a short one, digested by the command.
	in := make([]byte, 20*stdinChunk+1234)
	for i := range in {
		in[i] = byte(i*31 ^ i>>11)
	}
	id, err := c.Command(shell, "sha256sum")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(in); i += stdinChunk {
		end := min(i+stdinChunk, len(in))
		if err := c.Send(shell, id, in[i:end], end == len(in)); err != nil {
			t.Fatalf("send at %d: %v", i, err)
		}
	}
	var got bytes.Buffer
	if res, err = c.ReceiveAll(shell, id, &got); err != nil || res.exitCode != 0 {
		t.Fatalf("sha256sum: exit %d, %v", res.exitCode, err)
	}
	if sum := sha256.Sum256(in); got.String() != hex.EncodeToString(sum[:])+"  -\n" {
		t.Fatalf("sha256sum of %d bytes sent: %q", len(in), got.String())
	}
	// 22 full responses and 20 full Sends: all but the first of each run
	// could take the keystream the last one prepared.
	if out, in := c.sealer.(*leanNTLM).s.KeystreamsUsed(); out < 15 || in < 15 {
		t.Fatalf("keystreams drawn ahead used: %d Sends, %d responses; want 15 or more of each", out, in)
	}
	if err := c.DeleteShell(shell); err != nil {
		t.Fatal(err)
	}
}

func TestCredSSPClient(t *testing.T) {
	d, target := labDaemon(t)
	password := target.password
	// Sealed both ways, several 16 KiB parts each (exactShell).
	c, shell := exactShell(t, d, target, authCredSSP)
	if err := c.DeleteShell(shell); err != nil {
		t.Fatal(err)
	}

	// A wrong password fails the NTLM logon inside the TLS channel: the
	// 401 carries TSRequest{errorCode}, which the initiator reads.
	wrong := *target
	wrong.password = "not-" + password
	if c, err := dialWS(&wrong, authCredSSP); err == nil {
		c.Close()
		t.Fatal("a wrong password logged on")
	} else if !errors.Is(err, credssptest.ErrServer) {
		t.Fatalf("wrong password: %v", err)
	}
	// No password reaches the daemon's log.
	d.stop()
	if strings.Contains(tail(d.logFile, 1<<20), password) {
		t.Error("the password appears in the daemon's log")
	}
}
