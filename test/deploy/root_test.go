// Package deploytest tests how winrmd is installed and run: the Debian
// package (make deb) installed into a real Debian 12 root, and the other
// deployment forms. Everything here needs root (dpkg --root, chroot, mounts)
// and skips, saying so, without it.
//
// The Debian root comes from debootstrap (--variant=minbase, Debian's
// mirror as apt is configured), cached in .cache/debian-minbase (gitignored)
// and never changed: each test works on an overlay of it, so a test's
// installs and removals can be compared file by file with the pristine root.
package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// needRoot skips a test that cannot run unprivileged.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root: dpkg --root, chroot and mounts")
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", wd)
		}
	}
}

// debianMirror is the bookworm mirror apt is configured with: the only
// Debian mirror this machine is meant to reach.
func debianMirror() (string, error) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, stanza := range strings.Split(string(b), "\n\n") {
			var uri string
			var hit bool
			for _, line := range strings.Split(stanza, "\n") {
				k, v, ok := strings.Cut(line, ":")
				if !ok {
					continue
				}
				switch strings.TrimSpace(k) {
				case "URIs":
					if f := strings.Fields(v); len(f) > 0 {
						uri = f[0]
					}
				case "Suites":
					for _, s := range strings.Fields(v) {
						hit = hit || s == "bookworm"
					}
				}
			}
			if uri != "" && hit {
				return uri, nil
			}
		}
	}
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	for _, f := range append([]string{"/etc/apt/sources.list"}, lists...) {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if fl := strings.Fields(sc.Text()); len(fl) >= 3 && fl[0] == "deb" && fl[2] == "bookworm" {
				fh.Close()
				return fl[1], nil
			}
		}
		fh.Close()
	}
	return "", fmt.Errorf("no Debian bookworm mirror in /etc/apt/sources.list*")
}

// minbaseRoot returns the cached Debian 12 minbase root, building it with
// debootstrap on first use (about a minute). A lock keeps parallel test
// processes from building it twice.
func minbaseRoot(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Fatalf("debootstrap is not installed (make test installs it): %v", err)
	}
	cache := filepath.Join(repoRoot(t), ".cache")
	root := filepath.Join(cache, "debian-minbase")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, "debian-minbase.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".complete")); err == nil {
		return root
	}
	mirror, err := debianMirror()
	if err != nil {
		t.Fatal(err)
	}
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	t.Logf("building the Debian 12 minbase root with debootstrap from %s (cached in %s)", mirror, root)
	start := time.Now()
	out, err := exec.Command("debootstrap", "--variant=minbase", "bookworm", tmp, mirror).CombinedOutput()
	if err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, tail(out, 30))
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	t.Logf("minbase root built in %v", time.Since(start).Round(time.Second))
	return root
}

// scratchRoot returns a writable copy of base: an overlay (upper layer in a
// temporary directory), or a full copy where overlayfs is unavailable. It is
// unmounted and removed when the test ends.
func scratchRoot(t *testing.T, base string) string {
	t.Helper()
	dir, err := os.MkdirTemp(filepath.Dir(base), "scratch-")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", base, filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := syscall.Mount("overlay", root, "overlay", 0, opts); err != nil {
		t.Logf("overlayfs unavailable (%v): copying the root instead", err)
		if out, err := exec.Command("cp", "-a", base+"/.", root).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v: %s", err, out)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		return root
	}
	t.Cleanup(func() {
		killRootProcs(t, root)
		if err := syscall.Unmount(root, 0); err != nil {
			t.Errorf("unmount %s: %v", root, err)
			syscall.Unmount(root, syscall.MNT_DETACH)
		}
		os.RemoveAll(dir)
	})
	return root
}

// mountRuntime mounts /proc, /dev and /sys into root for a daemon started
// there (workers re-execute /proc/self/exe, shells need /dev/null and ptys,
// per-shell cgroups live under /sys/fs/cgroup). The returned function
// unmounts them; it is also registered as cleanup.
func mountRuntime(t *testing.T, root string) func() {
	t.Helper()
	var mounted []string
	undo := func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			if err := syscall.Unmount(mounted[i], syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", mounted[i], err)
			}
		}
		mounted = nil
	}
	t.Cleanup(undo)
	mount := func(src, dst, fstype string, flags uintptr) {
		if err := syscall.Mount(src, dst, fstype, flags, ""); err != nil {
			undo()
			t.Fatalf("mount %s on %s: %v", src, dst, err)
		}
		mounted = append(mounted, dst)
		if flags&syscall.MS_BIND != 0 {
			// Unmounting the copy must not reach the host's own mounts.
			syscall.Mount("", dst, "", syscall.MS_REC|syscall.MS_SLAVE, "")
		}
	}
	mount("proc", filepath.Join(root, "proc"), "proc", 0)
	mount("/dev", filepath.Join(root, "dev"), "", syscall.MS_BIND|syscall.MS_REC)
	mount("/sys", filepath.Join(root, "sys"), "", syscall.MS_BIND|syscall.MS_REC)
	return undo
}

// inRoot runs a command chrooted into root and returns its combined output.
func inRoot(t *testing.T, root, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chroot", append([]string{root}, args...)...)
	cmd.Env = rootEnv()
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func rootEnv() []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root"}
}

// killRootProcs kills every process whose root directory is root (there
// should be none when a test ends: each one found is an error).
func killRootProcs(t *testing.T, root string) {
	t.Helper()
	for _, p := range rootProcs(root) {
		t.Errorf("process %d left running in %s: killing it", p, root)
		syscall.Kill(p, syscall.SIGKILL)
	}
}

func rootProcs(root string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if r, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err == nil && r == root {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pyResult is what test/clients/pywinrm_client.py reports (its "run" op).
type pyResult struct {
	OK        bool   `json:"ok"`
	Stdout    []byte `json:"stdout"`
	Stderr    []byte `json:"stderr"`
	ExitCode  *int   `json:"exit_code"`
	SHA256    string `json:"stdout_sha256"`
	Len       int    `json:"stdout_len"`
	WSMan     int64  `json:"wsman_code"`
	Error     string `json:"error"`
	ErrorType string `json:"error_type"`
}

// pywinrm runs command through the daemon at scheme://addr with pywinrm
// (the repository's client driver, from the .venv `make venv` makes).
func pywinrm(t *testing.T, scheme, addr, auth, user, password, command string) pyResult {
	t.Helper()
	return pywinrmIn(t, "", scheme, addr, auth, user, password, command)
}

// pywinrmIn is pywinrm run inside the network namespace netns (ip netns
// exec), or in this one when netns is "".
func pywinrmIn(t *testing.T, netns, scheme, addr, auth, user, password, command string) pyResult {
	t.Helper()
	return pywinrmSpec(t, netns, scheme, addr, auth, user, password, map[string]any{"op": "run", "command": command})
}

// pywinrmSpec runs one scenario of test/clients/pywinrm_client.py.
func pywinrmSpec(t *testing.T, netns, scheme, addr, auth, user, password string, spec map[string]any) pyResult {
	t.Helper()
	repo := repoRoot(t)
	python := filepath.Join(repo, ".venv", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("client virtualenv missing (%v): run `make venv`", err)
	}
	host, port, ok := strings.Cut(addr, ":")
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		host, port, ok = addr[:i], addr[i+1:], true
	}
	if !ok {
		t.Fatalf("bad address %q", addr)
	}
	p, _ := strconv.Atoi(port)
	in, _ := json.Marshal(map[string]any{
		"conn": map[string]any{"scheme": scheme, "host": strings.Trim(host, "[]"), "port": p, "auth": auth,
			"encryption": "auto", "user": user, "password": password, "cbt": true},
		"spec": spec,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := []string{python, filepath.Join(repo, "test", "clients", "pywinrm_client.py")}
	if netns != "" {
		argv = append([]string{"ip", "netns", "exec", netns}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "NO_PROXY=*", "no_proxy=*")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var r pyResult
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		t.Fatalf("pywinrm: no result (%v, %v)\nstdout: %s\nstderr: %s", err, jerr, out.Bytes(), tail(errb.Bytes(), 30))
	}
	return r
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
