package e2e

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

const labUser = "winrmd-lab"

// portFree tells whether 127.0.0.1:port can be bound now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// `winrmd lab --dir DIR` is what `make run` runs: it must print how to
// connect, and the printed pywinrm one-liner must run `id` as the lab
// account. When 5985/5986/9985 are taken (another lab on this machine), the
// lab directory is seeded with the same template on port 0, which the
// command keeps.
func TestLab(t *testing.T) {
	w := need(t)
	if _, err := os.Stat(w.python); err != nil {
		t.Fatalf("client virtualenv missing (%v): run `make venv`", err)
	}
	_, labExisted := user.Lookup(labUser)
	groupExisted := groupExists(adminGroup)
	dir, err := os.MkdirTemp(w.work, "lab-")
	if err != nil {
		t.Fatal(err)
	}
	if !(portFree(5985) && portFree(5986) && portFree(9985)) {
		text := strings.ReplaceAll(string(configs.Lab()), "{{DIR}}", dir)
		text = strings.ReplaceAll(text, "port: 5985", "port: 0")
		text = strings.ReplaceAll(text, "port: 5986", "port: 0")
		text = strings.ReplaceAll(text, "127.0.0.1:9985", "127.0.0.1:0")
		if err := os.WriteFile(filepath.Join(dir, "winrmd.yaml"), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Logf("lab ports in use: seeded %s/winrmd.yaml with port 0", dir)
	}

	cmd := exec.Command(w.bin, "lab", "--dir", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, _ := cmd.StdoutPipe()
	logf, _ := os.Create(filepath.Join(dir, "stderr.log"))
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("lab daemon after SIGTERM: %v", err)
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Errorf("lab daemon ignored SIGTERM for 15s")
			<-done
		}
		logf.Close()
		if u, err := user.Lookup(labUser); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			if ps := userProcs(uid); len(ps) > 0 {
				t.Errorf("lab account processes left after stop: %v", ps)
			}
		}
		if labExisted != nil { // we created it: remove it again
			killUserProcesses2(labUser)
			if out, err := exec.Command("userdel", "--remove", labUser).CombinedOutput(); err != nil {
				t.Errorf("userdel %s: %v %s", labUser, err, out)
			}
		}
		if !groupExisted && !w.created {
			removeGroupIfUnused()
		}
		if t.Failed() {
			t.Logf("lab stderr:\n%s", tail(filepath.Join(dir, "stderr.log"), 40))
		}
	})

	var out []string
	var account, password string
	var oneLiners []string
	deadline := time.After(30 * time.Second)
	reAcct := regexp.MustCompile(`^\s*account:\s*(\S+)`)
	rePw := regexp.MustCompile(`^\s*password:\s*(\S+)`)
collect:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("lab exited before it was ready:\n%s\n%s", strings.Join(out, "\n"), tail(filepath.Join(dir, "stderr.log"), 30))
			}
			out = append(out, l)
			if m := reAcct.FindStringSubmatch(l); m != nil {
				account = m[1]
			}
			if m := rePw.FindStringSubmatch(l); m != nil {
				password = m[1]
			}
			if s := strings.TrimSpace(l); strings.HasPrefix(s, "python3 -c ") {
				oneLiners = append(oneLiners, s)
			}
			if strings.HasPrefix(strings.TrimSpace(l), "Stop with") {
				break collect
			}
		case <-deadline:
			t.Fatalf("lab printed no connection help within 30s:\n%s", strings.Join(out, "\n"))
		}
	}
	if account == "" || password == "" || len(oneLiners) == 0 {
		t.Fatalf("lab output lacks account, password or a pywinrm one-liner:\n%s", strings.Join(out, "\n"))
	}
	if account != labUser {
		t.Errorf("lab account %q, want %q when run as root", account, labUser)
	}
	if u, err := user.Lookup(account); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		addExtraUID(uid)
	}
	// Run the printed one-liners exactly, with the venv's python3.
	for _, ol := range oneLiners {
		script := strings.TrimPrefix(ol, "python3 ")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		c := exec.CommandContext(ctx, "sh", "-c", w.python+" "+script)
		c.Env = append(os.Environ(), "NO_PROXY=*")
		b, err := c.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("lab one-liner failed: %v\n%s\n%s", err, ol, b)
			continue
		}
		if !strings.Contains(string(b), "uid=") || !strings.Contains(string(b), "("+account+")") {
			t.Errorf("lab one-liner printed %q, want `id` output for %s", b, account)
		}
	}
	checkNoLeftovers(t, "after the lab one-liners", 5*time.Second)
}

func killUserProcesses2(name string) {
	u, err := user.Lookup(name)
	if err != nil {
		return
	}
	uid, _ := strconv.Atoi(u.Uid)
	for i := 0; i < 50; i++ {
		ps := userProcs(uid)
		if len(ps) == 0 {
			return
		}
		for _, p := range ps {
			syscall.Kill(p.PID, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
