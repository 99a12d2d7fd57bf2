package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hostBinary builds winrmd for this machine (enable runs from the host with
// --root, as an operator preparing a root file system would).
func hostBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "winrmd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/winrmd")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func runEnable(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

// TestEnableBareRoot: `winrmd enable --root` on a Debian root without the
// package writes a configuration with the host's names, a certificate, the
// group and the PAM file; says that no unit is installed and how to start
// the daemon; changes nothing when run again; refuses --basic on the
// configuration it wrote (Basic off) and leaves it untouched.
func TestEnableBareRoot(t *testing.T) {
	needRoot(t)
	t.Parallel() // independent roots, containers and namespaces
	bin := hostBinary(t)
	root := scratchRoot(t, minbaseRoot(t))

	out, err := runEnable(t, bin, "enable", "--root", root, "--host", "winrmd-test.example")
	if err != nil {
		t.Fatalf("enable: %v\n%s", err, out)
	}
	t.Logf("first enable:\n%s", out)
	cfgPath := filepath.Join(root, "etc/winrmd/winrmd.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`dns_name: "winrmd-test.example"`, "audit_file: /var/log/winrmd/audit.log", "basic: false", "allow_unencrypted: false"} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("written configuration lacks %q", want)
		}
	}
	if out, err := exec.Command(bin, "config", "check", "--config", cfgPath).CombinedOutput(); err != nil {
		t.Errorf("written configuration does not check: %v %s", err, out)
	}
	for _, f := range []string{"etc/winrmd/cert.pem", "etc/winrmd/key.pem", "etc/pam.d/winrmd", "var/log/winrmd"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("after enable: %v", err)
		}
	}
	certOut, err := exec.Command("openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", filepath.Join(root, "etc/winrmd/cert.pem")).CombinedOutput()
	if err == nil && !strings.Contains(string(certOut), "winrmd-test.example") {
		t.Errorf("certificate names: %s", certOut)
	}
	if g, err := inRoot(t, root, "", "getent", "group", "winrm-remote-users"); err != nil {
		t.Errorf("group not created: %v %s", err, g)
	}
	if !strings.Contains(out, "no systemd unit is installed") || !strings.Contains(out, "winrmd serve --config /etc/winrmd/winrmd.yaml") {
		t.Errorf("enable did not say how to start the daemon without a unit:\n%s", out)
	}
	if !strings.Contains(out, "transport='ntlm'") || !strings.Contains(out, "TrustedHosts") {
		t.Errorf("enable did not print the client one-liners:\n%s", out)
	}
	pam, _ := os.ReadFile(filepath.Join(root, "etc/pam.d/winrmd"))
	shipped, _ := os.ReadFile(filepath.Join(repoRoot(t), "deploy/pam.winrmd"))
	if string(pam) != string(shipped) {
		t.Errorf("enable's PAM file differs from deploy/pam.winrmd")
	}

	before := snapshot(t, root)
	out, err = runEnable(t, bin, "enable", "--root", root, "--host", "winrmd-test.example")
	if err != nil || !strings.Contains(out, "nothing to change") {
		t.Errorf("second enable: %v\n%s", err, out)
	}
	out, err = runEnable(t, bin, "enable", "--root", root, "--basic")
	if err == nil || !strings.Contains(out, "service.auth.basic") || !strings.Contains(out, "refusing to weaken") {
		t.Errorf("enable --basic on a configuration with Basic off: err=%v\n%s", err, out)
	}
	if diff := compareSnapshots(before, snapshot(t, root)); len(diff) > 0 {
		t.Errorf("a repeated or refused enable changed the root:\n  %s", strings.Join(diff, "\n  "))
	}
}

// TestEnableWithPackage: with the package installed (dpkg --root), enable
// keeps the packaged configuration, certificate and group and enables the
// unit with `systemctl --root` (systemd does not run here, so it says how to
// start the daemon instead of starting it); a second run changes nothing;
// disable removes the enablement and keeps the configuration.
func TestEnableWithPackage(t *testing.T) {
	needRoot(t)
	t.Parallel() // independent roots, containers and namespaces
	if _, err := exec.LookPath("systemctl"); err != nil {
		t.Fatalf("systemctl is not installed (make test installs systemd): %v", err)
	}
	bin := hostBinary(t)
	deb := buildDeb(t)
	root := scratchRoot(t, minbaseRoot(t))
	if out, err := exec.Command("dpkg", "--root="+root, "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg --root -i: %v\n%s", err, out)
	}
	want := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/winrmd.service")

	out, err := runEnable(t, bin, "enable", "--root", root)
	t.Logf("enable:\n%s", out)
	if err != nil {
		t.Fatalf("enable: %v", err)
	}
	for _, s := range []string{"kept the existing /etc/winrmd/winrmd.yaml", "kept the certificate", "kept the group winrm-remote-users", "enabled winrmd.service (systemctl --root=", "systemd is not running here"} {
		if !strings.Contains(out, s) {
			t.Errorf("enable output lacks %q", s)
		}
	}
	if l, err := os.Readlink(want); err != nil || !strings.HasSuffix(l, "/winrmd.service") {
		t.Errorf("enablement link: %q %v", l, err)
	}
	out, err = runEnable(t, bin, "enable", "--root", root)
	if err != nil || !strings.Contains(out, "nothing to change") {
		t.Errorf("second enable: %v\n%s", err, out)
	}
	out, err = runEnable(t, bin, "disable", "--root", root)
	if err != nil || !strings.Contains(out, "disabled winrmd.service") {
		t.Errorf("disable: %v\n%s", err, out)
	}
	if _, err := os.Lstat(want); err == nil {
		t.Errorf("disable left %s", want)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/winrmd/winrmd.yaml")); err != nil {
		t.Errorf("disable removed the configuration: %v", err)
	}
	out, err = runEnable(t, bin, "disable", "--root", root)
	if err != nil || !strings.Contains(out, "nothing to change") {
		t.Errorf("second disable: %v\n%s", err, out)
	}
	if out, err := exec.Command("dpkg", "--root="+root, "--purge", "winrmd").CombinedOutput(); err != nil {
		t.Errorf("dpkg --purge: %v\n%s", err, out)
	}
}
