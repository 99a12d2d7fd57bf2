package deploytest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildDeb runs `make deb`'s script into a temporary directory.
func buildDeb(t *testing.T) string {
	t.Helper()
	repo := repoRoot(t)
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(repo, "deploy", "debian", "build-deb.sh"))
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "DEB_OUT="+out)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, b)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	deb := lines[len(lines)-1]
	if !filepath.IsAbs(deb) {
		deb = filepath.Join(repo, deb)
	}
	if !regexp.MustCompile(`/winrmd_[0-9][^_/]*_[a-z0-9]+\.deb$`).MatchString(deb) {
		t.Fatalf("build-deb.sh printed %q, not a winrmd_<version>_<arch>.deb", deb)
	}
	return deb
}

// TestDebLintian: lintian reports no error for the package, and
// systemd-analyze verify accepts its unit (against this machine's systemd
// units, the package's files and /bin/kill, in a scratch root).
func TestDebLintian(t *testing.T) {
	needRoot(t)
	t.Parallel() // independent roots, containers and namespaces
	for _, tool := range []string{"lintian", "systemd-analyze", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make test installs it): %v", tool, err)
		}
	}
	deb := buildDeb(t)
	out, _ := exec.Command("lintian", "--tag-display-limit", "0", deb).CombinedOutput()
	var errs []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "E: ") {
			errs = append(errs, l)
		}
	}
	if len(errs) > 0 {
		t.Errorf("lintian errors:\n%s", strings.Join(errs, "\n"))
	}
	t.Logf("lintian (errors fail the test; warnings are listed):\n%s", strings.TrimSpace(string(out)))

	root := t.TempDir()
	if b, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v: %s", err, b)
	}
	units := filepath.Join(root, "lib", "systemd", "system")
	if b, err := exec.Command("cp", "-an", "/lib/systemd/system/.", units).CombinedOutput(); err != nil {
		t.Fatalf("copy the systemd units: %v: %s", err, b)
	}
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	if b, err := exec.Command("cp", "/bin/kill", filepath.Join(root, "bin", "kill")).CombinedOutput(); err != nil {
		t.Fatalf("cp /bin/kill: %v: %s", err, b)
	}
	b, err := exec.Command("systemd-analyze", "verify", "--root="+root, "/lib/systemd/system/winrmd.service").CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(b))) > 0 {
		t.Errorf("systemd-analyze verify winrmd.service: %v\n%s", err, b)
	}
}

// TestDebInstallServePurge installs the package into a Debian 12 root with
// dpkg --root, checks what the maintainer scripts made, runs the installed
// daemon from that root and reaches it with pywinrm (NTLM over HTTP with
// message encryption; Basic over HTTPS through the package's PAM file and a
// host account), then purges the package and finds the root as it was,
// apart from dpkg's own records.
func TestDebInstallServePurge(t *testing.T) {
	needRoot(t)
	t.Parallel() // independent roots, containers and namespaces
	deb := buildDeb(t)
	root := scratchRoot(t, minbaseRoot(t))

	// The account exists before the package, as on a real host; it joins
	// the package's group after the install.
	const user = "wrmde2edeb"
	const password = "Deb-Pw-9f3c2e1a!x"
	if out, err := inRoot(t, root, "", "useradd", "--create-home", "--shell", "/bin/sh", user); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	if out, err := inRoot(t, root, user+":"+password+"\n", "chpasswd"); err != nil {
		t.Fatalf("chpasswd: %v: %s", err, out)
	}
	before := snapshot(t, root)

	if out, err := exec.Command("dpkg", "--root="+root, "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg --root -i: %v\n%s", err, out)
	} else {
		t.Logf("dpkg -i:\n%s", strings.TrimSpace(string(out)))
	}

	// What the maintainer scripts and conffiles made.
	if out, err := inRoot(t, root, "", "getent", "group", "winrm-remote-users"); err != nil {
		t.Errorf("postinst did not create winrm-remote-users: %v %s", err, out)
	}
	for _, f := range []string{"/etc/winrmd/cert.pem", "/etc/winrmd/key.pem", "/usr/sbin/winrmd", "/usr/sbin/winrmd-worker", "/etc/pam.d/winrmd", "/lib/systemd/system/winrmd.service"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("after install: %v", err)
		}
	}
	if st, err := os.Stat(filepath.Join(root, "/etc/winrmd/key.pem")); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("key.pem mode %v, want 0600", st.Mode().Perm())
	}
	conf, err := exec.Command("dpkg-query", "--root="+root, "-W", "-f=${Conffiles}", "winrmd").CombinedOutput()
	if err != nil || !strings.Contains(string(conf), "/etc/winrmd/winrmd.yaml") || !strings.Contains(string(conf), "/etc/pam.d/winrmd") {
		t.Errorf("conffiles: %v %q", err, conf)
	}
	if out, err := inRoot(t, root, "", "winrmd", "config", "check", "--config", "/etc/winrmd/winrmd.yaml"); err != nil {
		t.Errorf("the default configuration does not check: %v: %s", err, out)
	}

	// Serve the packaged configuration, changed as an operator would: ports
	// chosen at run time on loopback (this is a test), Basic on (HTTPS
	// only) so PAM is reached. Editing the conffile also proves purge
	// removes a changed one.
	cfgPath := filepath.Join(root, "etc/winrmd/winrmd.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	// Fixed ports (free ones, chosen now) rather than 0, so that `winrmd
	// status` can read them from the configuration as on a real host.
	edited := strings.NewReplacer(
		`address: "*", port: 5985`, `address: 127.0.0.1, port: `+freePort(t),
		`address: "*", port: 5986`, `address: 127.0.0.1, port: `+freePort(t),
		"basic: false", "basic: true",
		"address: 127.0.0.1:9985", "address: 127.0.0.1:"+freePort(t),
		`audit_file: ""`, `audit_file: /var/log/winrmd/audit.log`,
	).Replace(string(cfg))
	os.MkdirAll(filepath.Join(root, "var/log/winrmd"), 0o750)
	if edited == string(cfg) || strings.Contains(edited, "598") {
		t.Fatalf("the packaged configuration changed shape; cannot point it at loopback:\n%s", cfg)
	}
	if err := os.WriteFile(cfgPath, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := inRoot(t, root, "", "usermod", "--append", "--groups", "winrm-remote-users", user); err != nil {
		t.Fatalf("usermod: %v: %s", err, out)
	}
	if out, err := inRoot(t, root, password+"\n", "winrmd", "user", "add", "--store", "/etc/winrmd/accounts", user); err != nil {
		t.Fatalf("winrmd user add: %v: %s", err, out)
	}

	unmount := mountRuntime(t, root)
	ready := "/tmp/winrmd.ready"
	var logb syncBuffer
	daemon := exec.Command("chroot", root, "/usr/sbin/winrmd", "serve", "--config", "/etc/winrmd/winrmd.yaml", "--ready-file", ready)
	daemon.Env = rootEnv()
	daemon.Stdout, daemon.Stderr = &logb, &logb
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- daemon.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		syscall.Kill(daemon.Process.Pid, syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("installed daemon exited badly after SIGTERM: %v\n%s", err, logb.String())
			}
		case <-time.After(30 * time.Second):
			syscall.Kill(-daemon.Process.Pid, syscall.SIGKILL)
			<-done
			t.Errorf("installed daemon did not stop within 30s of SIGTERM\n%s", logb.String())
		}
	}
	defer stop()

	var info struct {
		Listeners []struct{ Transport, Address string } `json:"listeners"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(root, ready))
		if err == nil && json.Unmarshal(b, &info) == nil && len(info.Listeners) > 0 {
			break
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("installed daemon exited before it was ready: %v\n%s", err, logb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("installed daemon not ready after 60s\n%s", logb.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	addr := map[string]string{}
	for _, l := range info.Listeners {
		addr[l.Transport] = l.Address
	}

	wantID := regexp.MustCompile(`^uid=\d+\(` + user + `\) gid=\d+\(` + user + `\) groups=.*\(winrm-remote-users\)`)
	r := pywinrm(t, "http", addr["http"], "ntlm", user, password, "id")
	if !r.OK || r.ExitCode == nil || *r.ExitCode != 0 || !wantID.Match(r.Stdout) {
		t.Errorf("pywinrm NTLM over HTTP, id: ok=%v exit=%v stdout=%q stderr=%q error=%s %s", r.OK, r.ExitCode, r.Stdout, r.Stderr, r.ErrorType, r.Error)
	} else {
		t.Logf("pywinrm NTLM (HTTP, sealed) id: %s", strings.TrimSpace(string(r.Stdout)))
	}
	// The shell ran in the package's worker-only binary, not a re-exec of
	// the daemon.
	if !strings.Contains(logb.String(), `"worker_binary":"/usr/sbin/winrmd-worker"`) {
		t.Errorf("the installed daemon does not run /usr/sbin/winrmd-worker for its shells:\n%s", logb.String())
	}
	// Its watchdog (a mode of the daemon's own binary, where there are
	// cgroups) does not end and restart.
	if strings.Contains(logb.String(), "the watchdog ended while the daemon runs") {
		t.Errorf("the installed daemon's watchdog is not running:\n%s", logb.String())
	}
	// Basic: an account in the store is answered by the store alone; with
	// the account removed from it, PAM (the package's /etc/pam.d/winrmd,
	// the root's common-auth and /etc/shadow) must accept the account's
	// system password.
	if out, err := inRoot(t, root, "", "winrmd", "user", "del", "--store", "/etc/winrmd/accounts", user); err != nil {
		t.Fatalf("winrmd user del: %v: %s", err, out)
	}
	r = pywinrm(t, "https", addr["https"], "basic", user, password, "id")
	if !r.OK || r.ExitCode == nil || *r.ExitCode != 0 || !wantID.Match(r.Stdout) {
		t.Errorf("pywinrm Basic over HTTPS (PAM), id: ok=%v exit=%v stdout=%q stderr=%q error=%s %s", r.OK, r.ExitCode, r.Stdout, r.Stderr, r.ErrorType, r.Error)
	} else {
		t.Logf("pywinrm Basic (HTTPS, PAM) id: %s", strings.TrimSpace(string(r.Stdout)))
	}
	if strings.Contains(logb.String(), password) {
		t.Errorf("the daemon logged the password")
	}

	// winrmd status, from inside the root, against the running daemon.
	st, err := inRoot(t, root, "", "winrmd", "status")
	if err != nil || strings.Count(st, "listening") != 2 || !strings.Contains(st, "success") || !strings.Contains(st, user) ||
		!regexp.MustCompile(`shells: 0 live`).MatchString(st) {
		t.Errorf("winrmd status: %v\n%s", err, st)
	} else {
		t.Logf("winrmd status:\n%s", st)
	}

	stop()
	if left := rootProcs(root); len(left) > 0 {
		t.Errorf("processes left in the root after the daemon stopped: %v", left)
	}
	unmount()

	if out, err := exec.Command("dpkg", "--root="+root, "--purge", "winrmd").CombinedOutput(); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	} else {
		t.Logf("dpkg --purge:\n%s", strings.TrimSpace(string(out)))
	}
	after := snapshot(t, root)
	if diff := compareSnapshots(before, after); len(diff) > 0 {
		t.Errorf("after purge the root differs from before the install:\n  %s", strings.Join(diff, "\n  "))
	}
}

// snapshot maps every path in root (but the runtime mounts and the
// bookkeeping dpkg, useradd and groupadd keep) to its type, mode, owner and
// content hash.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if bookkeeping(rel) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		v := info.Mode().String() + " " + itoa(st.Uid) + ":" + itoa(st.Gid)
		switch {
		case info.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			v += " " + hex.EncodeToString(h.Sum(nil))[:16]
		case info.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		m[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// bookkeeping: paths expected to change across install and purge that are
// records, not leftovers: dpkg's database and log, the shadow tools'
// backups (/etc/group- ...), the runtime mount points and /tmp.
func bookkeeping(rel string) bool {
	switch rel {
	case "/proc", "/sys", "/dev", "/tmp", "/run",
		"/var/lib/dpkg/status", "/var/lib/dpkg/status-old", "/var/lib/dpkg/lock", "/var/lib/dpkg/lock-frontend",
		"/var/lib/dpkg/triggers", "/var/lib/dpkg/updates", "/var/log/dpkg.log",
		"/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-", "/etc/subuid-", "/etc/subgid-":
		return true
	}
	return false
}

func compareSnapshots(before, after map[string]string) []string {
	var diff []string
	for p, v := range after {
		if w, ok := before[p]; !ok {
			diff = append(diff, "left: "+p+" ("+v+")")
		} else if w != v {
			diff = append(diff, "changed: "+p+" ("+w+" -> "+v+")")
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			diff = append(diff, "gone: "+p)
		}
	}
	sort.Strings(diff)
	return diff
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func itoa(u uint32) string { return strconv.FormatUint(uint64(u), 10) }
