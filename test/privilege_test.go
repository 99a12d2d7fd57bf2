package e2e

// Privilege checks (issue 4 §5): a worker never runs as root unless
// authorization.allow_root; uid, gid and groups come only from the account
// database, never from request bytes; every worker carries no_new_privs and
// exactly the account's credentials. no_new_privs is as configured
// (winrs.allow_new_privileges; on by default so that sudo works).

import (
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// relRefused: an authentication or authorization refusal, or a fault.
func relRefused(r *reply, err error) bool {
	if err != nil {
		return true
	}
	return r.Closed || r.Status == 401 || r.Status == 403 || (r.Status != 200 && r.fault() != nil)
}

// relTryShell tries to create a shell and run cmd; "" and an error when refused.
func relTryShell(c soapClient, cmd string) (string, error) {
	sh, err := createShell(c)
	if err != nil {
		return "", err
	}
	defer sh.delete()
	r, err := sh.run(cmd)
	if err != nil {
		return "", err
	}
	return string(r.Stdout), nil
}

func TestPrivilegeRoot(t *testing.T) {
	need(t)
	dir := testDir(t)
	rootPass := randPassword()
	store := writeStore(t, dir, []*testUser{w.admin}, [2]string{"root", rootPass})
	checks := 0

	t.Run("allow_root_false", func(t *testing.T) {
		d := startDaemon(t, func(c *configs.Config) {
			c.Accounts.StoreFile = store
			c.Authorization.AllowRoot = false
			c.Service.MaxTimeoutMS = 3000
		})
		refused := 0
		// HTTPS Basic as root.
		r, err := postBasicFrom(srcAddr(), d.HTTPS, true, "root", rootPass, createXML())
		checks++
		if !relRefused(r, err) || (r != nil && r.Status == 200) {
			t.Errorf("Basic logon as root with allow_root false: %v, want a refusal", r)
		} else {
			refused++
			t.Logf("Basic as root: %v", r)
		}
		// NTLM (sealed HTTP) as root; and the spellings that map to root.
		for _, name := range []string{"root", `.\root`, "ROOT"} {
			checks++
			nc, r, err := dialNTLM(d.HTTP, false, name, rootPass, ntlmOpts{src: srcAddr()})
			switch {
			case err != nil && r == nil:
				t.Errorf("NTLM as %s: %v", name, err)
			case r.Status == 200:
				rr, err := nc.Post(createXML())
				if err == nil && rr.Status == 200 {
					t.Errorf("NTLM as %q with allow_root false created a shell: %s", name, rr)
				} else {
					refused++
				}
			default:
				refused++
			}
			if nc != nil {
				nc.Close()
			}
		}
		if n := d.AuditCount("shell_create", "root"); n != 0 {
			t.Errorf("%d shell(s) created for root with allow_root false", n)
		}
		for _, p := range workerProcs() {
			if p.UID == 0 {
				t.Errorf("a worker runs as root with allow_root false: %s", p)
			}
		}
		// The daemon still serves an ordinary administrator.
		out, err := relTryShell(&basicKeepAlive{addr: d.HTTPS, tls: true, user: w.admin.Name, pass: w.admin.Password}, "id -u")
		if err != nil || out != strconv.Itoa(w.admin.UID)+"\n" {
			t.Errorf("id -u as %s: %q %v", w.admin.Name, out, err)
		}
		testStat(t, "privilege_refused", int64(refused))
	})

	t.Run("allow_root_true", func(t *testing.T) {
		d := startDaemon(t, func(c *configs.Config) {
			c.Accounts.StoreFile = store
			c.Authorization.AllowRoot = true
			c.Service.MaxTimeoutMS = 3000
		})
		bc := &basicKeepAlive{addr: d.HTTPS, tls: true, user: "root", pass: rootPass}
		defer bc.Close()
		sh, err := createShell(bc)
		checks++
		if err != nil {
			t.Fatalf("root with allow_root true: %v", err)
		}
		defer sh.delete()
		r, err := sh.run("id -u")
		if err != nil || string(r.Stdout) != "0\n" {
			t.Errorf("id -u as root with allow_root true: %v %+v, want 0", err, r)
		}
		pid := workerPID(d, sh.ID, 5*time.Second)
		st, err := procStatus(pid)
		checks++
		if err != nil {
			t.Errorf("worker %d status: %v", pid, err)
		} else if st["NoNewPrivs"] != relNNP(d) {
			t.Errorf("root worker %d: NoNewPrivs %q, want %s", pid, st["NoNewPrivs"], relNNP(d))
		}
	})
	testStat(t, "privilege_checks", int64(checks))
}

// relIDSets parses `id -u; id -g; id -G` output.
type relIDs struct {
	uid, gid string
	groups   []string
}

func relParseIDs(out string) relIDs {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var r relIDs
	if len(lines) >= 3 {
		r.uid, r.gid = strings.TrimSpace(lines[0]), strings.TrimSpace(lines[1])
		r.groups = strings.Fields(lines[2])
		sort.Strings(r.groups)
	}
	return r
}

func (a relIDs) String() string {
	return fmt.Sprintf("uid=%s gid=%s groups=%v", a.uid, a.gid, a.groups)
}

func relHostIDs(t testing.TB, name string) relIDs {
	t.Helper()
	var parts []string
	for _, f := range []string{"-u", "-g", "-G"} {
		out, err := exec.Command("id", f, name).Output()
		if err != nil {
			t.Fatalf("id %s %s: %v", f, name, err)
		}
		parts = append(parts, strings.TrimSpace(string(out)))
	}
	return relParseIDs(strings.Join(parts, "\n"))
}

// relNNP is the NoNewPrivs value d's workers carry.
func relNNP(d *Daemon) string {
	if d.Config.Winrs.AllowNewPrivileges {
		return "0"
	}
	return "1"
}

// relCheckStatus checks Uid/Gid/Groups/NoNewPrivs/capabilities of a status map.
func relCheckStatus(t *testing.T, what string, st map[string]string, want relIDs, nnp string) {
	t.Helper()
	for _, k := range []string{"Uid", "Gid"} {
		f := strings.Fields(st[k])
		exp := want.uid
		if k == "Gid" {
			exp = want.gid
		}
		if len(f) != 4 {
			t.Errorf("%s: %s line %q", what, k, st[k])
			continue
		}
		for _, v := range f {
			if v != exp {
				t.Errorf("%s: %s: %q, want real, effective, saved and fs all %s", what, k, st[k], exp)
				break
			}
		}
	}
	g := strings.Fields(st["Groups"])
	sort.Strings(g)
	if strings.Join(g, ",") != strings.Join(want.groups, ",") {
		// The kernel's Groups line omits the primary gid unless it is also a
		// supplementary group; compare with the primary gid added.
		g2 := append(append([]string(nil), g...), want.gid)
		sort.Strings(g2)
		g2 = relUniq(g2)
		if strings.Join(g2, ",") != strings.Join(want.groups, ",") {
			t.Errorf("%s: Groups %v, want %v (the account database)", what, g, want.groups)
		}
	}
	if st["NoNewPrivs"] != nnp {
		t.Errorf("%s: NoNewPrivs %q, want %s", what, st["NoNewPrivs"], nnp)
	}
	for _, k := range []string{"CapEff", "CapPrm"} {
		if v := st[k]; v != "" && strings.Trim(v, "0") != "" {
			t.Errorf("%s: %s %s, want none", what, k, v)
		}
	}
}

func relUniq(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// The worker's uid, gid and groups are the account database's: `id` inside
// the shell matches `id <user>` on the host, for a user with supplementary
// groups, over both schemes; the worker's and the command's /proc status
// carry the same credentials and NoNewPrivs as configured.
func TestPrivilegeAccountDatabase(t *testing.T) {
	need(t)
	dir := testDir(t)
	g1 := makeGroup(t, fmt.Sprintf("%sq%s1", userPrefix, randHex(2)))
	g2 := makeGroup(t, fmt.Sprintf("%sq%s2", userPrefix, randHex(2)))
	u := makeUsers(t, "q", 1, true, g1, g2)[0]
	store := writeStore(t, dir, []*testUser{u, w.admin2})
	d := startDaemon(t, func(c *configs.Config) {
		c.Accounts.StoreFile = store
		c.Service.MaxTimeoutMS = 3000
	})
	checks := 0
	for _, who := range []*testUser{u, w.admin2} {
		want := relHostIDs(t, who.Name)
		if who == u && len(want.groups) < 4 {
			t.Fatalf("%s should have its own group, %s, %s and %s: %v", u.Name, adminGroup, g1, g2, want)
		}
		for _, tc := range []struct {
			name string
			c    soapClient
		}{
			{"https_basic", &basicKeepAlive{addr: d.HTTPS, tls: true, user: who.Name, pass: who.Password}},
			{"http_ntlm_sealed", nil},
		} {
			c := tc.c
			if c == nil {
				nc, err := dialNTLMSealed(d.HTTP, who.Name, who.Password)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				c = nc
			}
			t.Run(who.Name+"/"+tc.name, func(t *testing.T) {
				sh, err := createShell(c)
				if err != nil {
					t.Fatal(err)
				}
				defer sh.delete()
				r, err := sh.run("id -u; id -g; id -G")
				if err != nil {
					t.Fatal(err)
				}
				got := relParseIDs(string(r.Stdout))
				checks++
				if got.String() != want.String() {
					t.Errorf("inside the shell: %s\non the host (id %s): %s", got, who.Name, want)
				}
				// The worker's own credentials.
				pid := workerPID(d, sh.ID, 5*time.Second)
				st, err := procStatus(pid)
				if err != nil {
					t.Fatalf("worker %d: %v", pid, err)
				}
				checks++
				relCheckStatus(t, fmt.Sprintf("worker %d", pid), st, want, relNNP(d))
				// The command's: its own /proc/self/status.
				r, err = sh.run("cat /proc/self/status")
				if err != nil {
					t.Fatal(err)
				}
				cst := map[string]string{}
				for _, line := range strings.Split(string(r.Stdout), "\n") {
					if k, v, ok := strings.Cut(line, ":"); ok {
						cst[k] = strings.TrimSpace(v)
					}
				}
				checks++
				relCheckStatus(t, "command process", cst, want, relNNP(d))
			})
		}
	}
	testStat(t, "privilege_checks", int64(checks))
}

// A request cannot choose its uid: Environment variables naming root, a
// WorkingDirectory of root's, and unknown options change nothing of who the
// worker is.
func TestPrivilegeRequestCannotChooseUID(t *testing.T) {
	need(t)
	d := startDaemon(t, func(c *configs.Config) { c.Service.MaxTimeoutMS = 3000 })
	want := relHostIDs(t, w.admin.Name)
	checks := 0
	hostile := map[string]string{
		"USER": "root", "LOGNAME": "root", "HOME": "/root", "USERNAME": "root",
		"UID": "0", "EUID": "0", "GID": "0", "SUDO_UID": "0", "SUDO_GID": "0", "SUDO_USER": "root",
		"SHELL": "/bin/bash",
	}
	nc, err := dialNTLMSealed(d.HTTP, w.admin.Name, w.admin.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bc := &basicKeepAlive{addr: d.HTTPS, tls: true, user: w.admin.Name, pass: w.admin.Password}
	defer bc.Close()
	for _, tc := range []struct {
		name string
		c    soapClient
		dir  string
	}{
		{"ntlm_env", nc, ""},
		{"basic_env", bc, ""},
		{"basic_env_root_home", bc, "/root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sh, err := createShellWith(tc.c, hostile, tc.dir)
			if err != nil {
				if tc.dir != "" {
					t.Logf("WorkingDirectory %s refused: %v", tc.dir, err)
					return
				}
				t.Fatal(err)
			}
			defer sh.delete()
			r, err := sh.run("id -u; id -g; id -G")
			if err != nil {
				t.Fatal(err)
			}
			checks++
			if got := relParseIDs(string(r.Stdout)); got.String() != want.String() {
				t.Errorf("with Environment %v: %s, want %s", hostile, got, want)
			}
			pid := workerPID(d, sh.ID, 5*time.Second)
			if st, err := procStatus(pid); err == nil {
				checks++
				relCheckStatus(t, fmt.Sprintf("worker %d", pid), st, want, relNNP(d))
			} else {
				t.Errorf("worker %d: %v", pid, err)
			}
		})
	}
	// Options a client might invent to switch users are ignored.
	t.Run("options", func(t *testing.T) {
		soap := env(actCreate, uriCmd, "", `<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>`,
			"WINRS_NOPROFILE=FALSE", "RunAsUser=root", "WINRS_RUNAS=root", "UID=0")
		root, err := okBody(bc.Post(soap))
		if err != nil {
			t.Logf("Create with RunAs options refused: %v", err)
			return
		}
		var id string
		for _, sel := range root.all("Selector") {
			if sel.Attr["Name"] == "ShellId" {
				id = strings.TrimSpace(sel.Text)
			}
		}
		sh := &winrsShell{c: bc, ID: id}
		defer sh.delete()
		r, err := sh.run("id -u")
		checks++
		if err != nil || strings.TrimSpace(string(r.Stdout)) != want.uid {
			t.Errorf("with RunAs options: %v %+v, want uid %s", err, r, want.uid)
		}
	})
	testStat(t, "privilege_checks", int64(checks))
}
