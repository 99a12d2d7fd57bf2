package deploytest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dockerDefaultCaps is the capability set Docker, podman and Kubernetes give
// a container by default: the image must work with it (the daemon needs
// SETUID/SETGID for the privilege drop and KILL to end shells).
var dockerDefaultCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}

const identifyXML = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsmid="http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"><s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>`

// TestImage builds the OCI image layout (make image's script), unpacks it
// with umoci and runs it with runc as a real container: its own pid, ipc,
// uts and mount namespaces, the network namespace a test-made one (so the
// image's own ports, 5985/5986, are used unchanged, on that namespace's
// loopback), Docker's default capabilities, and what an operator mounts read
// only (certificate, account store, passwd and group). An anonymous
// Identify and a pywinrm NTLM command answer through it; stopping it leaves
// nothing.
func TestImage(t *testing.T) {
	needRoot(t)
	t.Parallel() // independent roots, containers and namespaces
	for _, tool := range []string{"umoci", "runc", "ip", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make test installs it): %v", tool, err)
		}
	}
	repo := repoRoot(t)
	work := t.TempDir()
	layout := filepath.Join(work, "oci")
	cmd := exec.Command(filepath.Join(repo, "deploy", "image", "build-image.sh"))
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "IMAGE_OUT="+layout, "IMAGE_TAG=test")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-image.sh: %v\n%s", err, out)
	}
	bundle := filepath.Join(work, "bundle")
	if out, err := exec.Command("umoci", "unpack", "--image", layout+":test", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	// Minimal: the static daemon, busybox as /bin/sh, configuration and
	// account files; nothing else.
	var files []string
	filepath.Walk(rootfs, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, strings.TrimPrefix(p, rootfs))
		}
		return nil
	})
	if got := strings.Join(files, " "); got != "/bin/busybox /bin/sh /etc/group /etc/passwd /etc/winrmd/winrmd.yaml /usr/sbin/winrmd /usr/sbin/winrmd-worker" {
		t.Errorf("image files: %s", got)
	}
	for _, b := range []string{"usr/sbin/winrmd", "usr/sbin/winrmd-worker"} {
		if out, err := exec.Command("ldd", filepath.Join(rootfs, b)).CombinedOutput(); err == nil {
			t.Errorf("the image's %s is dynamically linked:\n%s", b, out)
		}
	}

	// What an operator mounts: made with the host's winrmd.
	bin := hostBinary(t)
	mounts := filepath.Join(work, "mounts")
	const user, password = "wrmde2eimg", "Img-Pw-4b7d91c2!x"
	tls, secret := filepath.Join(mounts, "tls"), filepath.Join(mounts, "secret")
	if out, err := exec.Command(bin, "cert", "generate", "--cert", filepath.Join(tls, "tls.crt"), "--key", filepath.Join(tls, "tls.key"), "--host", "localhost").CombinedOutput(); err != nil {
		t.Fatalf("cert generate: %v %s", err, out)
	}
	os.MkdirAll(secret, 0o700)
	uc := exec.Command(bin, "user", "add", "--store", filepath.Join(secret, "accounts"), user)
	uc.Stdin = strings.NewReader(password + "\n")
	if out, err := uc.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v %s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(rootfs, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(rootfs, "etc/group"))
	os.WriteFile(filepath.Join(mounts, "passwd"), append(passwd, []byte(user+":x:2000:2000::/tmp:/bin/sh\n")...), 0o644)
	os.WriteFile(filepath.Join(mounts, "group"), []byte(strings.Replace(string(group), "winrm-remote-users:x:999:", "winrm-remote-users:x:999:"+user, 1)+user+":x:2000:\n"), 0o644)

	netns := fmt.Sprintf("wrmdimg%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", netns).Run() })
	if out, err := exec.Command("ip", "-n", netns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}

	cfgPath := filepath.Join(bundle, "config.json")
	var spec map[string]any
	b, _ := os.ReadFile(cfgPath)
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	caps := map[string]any{}
	for _, k := range []string{"bounding", "effective", "permitted"} {
		caps[k] = dockerDefaultCaps
	}
	proc["capabilities"] = caps
	spec["hostname"] = "winrmd-image"
	linux := spec["linux"].(map[string]any)
	for _, ns := range linux["namespaces"].([]any) {
		if m := ns.(map[string]any); m["type"] == "network" {
			m["path"] = "/run/netns/" + netns
		}
	}
	ms := spec["mounts"].([]any)
	for _, m := range [][2]string{{tls, "/etc/winrmd/tls"}, {secret, "/etc/winrmd/secret"},
		{filepath.Join(mounts, "passwd"), "/etc/passwd"}, {filepath.Join(mounts, "group"), "/etc/group"}} {
		ms = append(ms, map[string]any{"source": m[0], "destination": m[1], "type": "bind", "options": []string{"rbind", "ro"}})
	}
	spec["mounts"] = ms
	b, _ = json.MarshalIndent(spec, "", " ")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}

	state := filepath.Join(work, "runc")
	id := fmt.Sprintf("wrmde2e-image-%d", os.Getpid())
	var logb syncBuffer
	run := exec.Command("runc", "--root", state, "run", "--bundle", bundle, id)
	run.Stdout, run.Stderr = &logb, &logb
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		exec.Command("runc", "--root", state, "kill", id, "TERM").Run()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("container did not stop within 30s of SIGTERM\n%s", logb.String())
			exec.Command("runc", "--root", state, "kill", id, "KILL").Run()
			<-done
		}
		if out, err := exec.Command("runc", "--root", state, "delete", "--force", id).CombinedOutput(); err != nil && !strings.Contains(string(out), "does not exist") {
			t.Errorf("runc delete: %v %s", err, out)
		}
	}
	t.Cleanup(stop)

	var identify string
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "exec", netns, "curl", "-sS", "--max-time", "5",
			"-H", "WSMANIDENTIFY: unauthenticated", "-H", "Content-Type: application/soap+xml;charset=UTF-8",
			"--data", identifyXML, "http://127.0.0.1:5985/wsman").CombinedOutput()
		if err == nil && strings.Contains(string(out), "IdentifyResponse") {
			identify = string(out)
			break
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("container exited before answering Identify: %v\n%s", err, logb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Identify answer from the container after 60s (last: %v %s)\n%s", err, out, logb.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("Identify through the container: %d bytes, %s", len(identify), regexp.MustCompile(`<wsmid:ProductVersion>[^<]*`).FindString(identify))

	// The probe the Kubernetes manifests use, run inside the container.
	for _, url := range []string{"http://127.0.0.1:5985/wsman", "https://127.0.0.1:5986/wsman"} {
		if out, err := exec.Command("runc", "--root", state, "exec", id, "/usr/sbin/winrmd", "probe", "--url", url).CombinedOutput(); err != nil || !strings.Contains(string(out), "IdentifyResponse") {
			t.Errorf("winrmd probe %s inside the container: %v %s", url, err, out)
		}
	}
	if out, err := exec.Command("runc", "--root", state, "exec", id, "/usr/sbin/winrmd", "probe", "--url", "http://127.0.0.1:1/wsman").CombinedOutput(); err == nil {
		t.Errorf("winrmd probe of a closed port succeeded: %s", out)
	}
	r := pywinrmIn(t, netns, "http", "127.0.0.1:5985", "ntlm", user, password, "hostname; id; echo image-ok")
	want := regexp.MustCompile(`^winrmd-image\nuid=2000\(` + user + `\) gid=2000\(` + user + `\) groups=[^\n]*999\(winrm-remote-users\)[^\n]*\nimage-ok\n$`)
	if !r.OK || r.ExitCode == nil || *r.ExitCode != 0 || !want.Match(r.Stdout) {
		t.Errorf("pywinrm through the container: ok=%v exit=%v stdout=%q stderr=%q error=%s %s\n%s", r.OK, r.ExitCode, r.Stdout, r.Stderr, r.ErrorType, r.Error, logb.String())
	} else {
		t.Logf("pywinrm NTLM through the container:\n%s", r.Stdout)
	}
	r = pywinrmIn(t, netns, "https", "127.0.0.1:5986", "ntlm", user, password, "echo over-https")
	if !r.OK || string(r.Stdout) != "over-https\n" {
		t.Errorf("pywinrm over HTTPS through the container: ok=%v stdout=%q error=%s %s", r.OK, r.Stdout, r.ErrorType, r.Error)
	}
	// The daemon is the container's pid 1 (the image's entrypoint). A worker
	// killed under its commands hands their orphans to pid 1; none may stay
	// a zombie (isolation/init.go). The command kills its own worker.
	pywinrmIn(t, netns, "http", "127.0.0.1:5985", "ntlm", user, password,
		"sleep 300 >/dev/null 2>&1 & sleep 301 >/dev/null 2>&1 & kill -9 $PPID; sleep 5")
	ns := containerPidNS(t, state, id)
	var left []string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		left = processesIn(ns, func(stat string) bool { return statState(stat) == 'Z' || strings.Contains(stat, "(sleep)") })
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("after its worker was killed, the shell's orphans stay in the container (zombies or sleeps): %q\n%s", left, tail([]byte(logb.String()), 20))
	}
	if !strings.Contains(logb.String(), "worker ended") {
		t.Errorf("the daemon did not see the worker killed:\n%s", tail([]byte(logb.String()), 20))
	}
	stop()
	if strings.Contains(logb.String(), password) {
		t.Errorf("the daemon logged the password")
	}
	if !strings.Contains(logb.String(), "built without cgo") {
		t.Errorf("the static daemon did not say what it lacks at start-up:\n%s", tail([]byte(logb.String()), 20))
	}
}

// containerPidNS is the pid namespace of the container's init, as
// /proc/<pid>/ns/pid names it on the host.
func containerPidNS(t *testing.T, state, id string) string {
	t.Helper()
	out, err := exec.Command("runc", "--root", state, "state", id).Output()
	if err != nil {
		t.Fatalf("runc state: %v", err)
	}
	var st struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal(out, &st); err != nil || st.Pid <= 0 {
		t.Fatalf("runc state %q: %v", out, err)
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// processesIn lists the host's processes in pid namespace ns whose stat
// line match says yes to.
func processesIn(ns string, match func(stat string) bool) []string {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, f := range stats {
		dir := filepath.Dir(f)
		if l, err := os.Readlink(dir + "/ns/pid"); err != nil || l != ns {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if match(string(b)) {
			out = append(out, strings.TrimSpace(string(b)))
		}
	}
	return out
}

// statState is the state letter of a /proc/<pid>/stat line.
func statState(stat string) byte {
	if i := strings.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 {
		return stat[i+2]
	}
	return 0
}
