package main

// The lean client's CredSSP path against a real daemon: bin/winrmd, built
// from this tree, served in lab mode (shells run as the test's own user),
// with CredSSP on as the bench configures it.

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn/credssp/credssptest"
)

func TestCredSSPClient(t *testing.T) {
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
	target := &wsTarget{httpAddr: d.http, httpsAddr: d.https, user: benchUser, password: password,
		envelopeSize: 512000, timeout: time.Minute}
	c, err := dialWS(target, authCredSSP)
	if err != nil {
		t.Fatalf("CredSSP logon: %v\n%s", err, tail(d.logFile, 20))
	}
	defer c.Close()
	shell, err := c.CreateShell()
	if err != nil {
		t.Fatal(err)
	}
	// Sealed both ways, several 16 KiB parts each: a command's output
	// byte for byte and the digest of two 375000-byte Sends.
	if err := exact(c, shell); err != nil {
		t.Fatal(err)
	}
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
