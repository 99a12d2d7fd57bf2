package addc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Member is the winrmd host joined to the domain: a private winbindd
// (its own smb.conf, state and sockets below Dir/member) running in the
// member namespace. Processes that should see domain users run in a
// private mount namespace (Wrap): /run/samba is the member's socket
// directory, /etc/nsswitch.conf resolves passwd and group through
// "files winbind", /etc/samba/smb.conf is the member's (for ntlm_auth),
// /etc/krb5.conf is the host-side one (KDC through the relay). Nothing is
// mounted outside those namespaces.
type Member struct {
	Dir      string
	Conf     string // the member's smb.conf
	nsswitch string
	run      string // bound on /run/samba
	wb       *exec.Cmd
	wbDone   chan struct{}
}

// Names as NSS spells them on the member (winbind use default domain):
// the domain's users and groups without the DOMAIN\ prefix.
const (
	NSSDomainAdmins = "domain admins"
	NSSOperators    = "winrm operators"
	idmapLow        = 4000000
)

// JoinMember joins the member to the domain (net ads join) and starts its
// winbindd; Close stops it with the domain.
func (d *Domain) JoinMember(ctx context.Context) (*Member, error) {
	if d.member != nil {
		return d.member, nil
	}
	for _, tool := range []string{"net", "winbindd", "wbinfo"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not installed (Debian package winbind)", tool)
		}
	}
	if _, err := os.Stat("/lib/x86_64-linux-gnu/libnss_winbind.so.2"); err != nil {
		if _, err2 := os.Stat("/usr/lib/x86_64-linux-gnu/libnss_winbind.so.2"); err2 != nil {
			return nil, errors.New("libnss_winbind.so.2 missing (Debian package libnss-winbind)")
		}
	}
	begin := time.Now()
	m := &Member{Dir: d.path("member")}
	m.run = d.path("member/run")
	for _, s := range []string{"private", "lock", "state", "cache", "pid", "log", "ncalrpc", "run/winbindd", "etc"} {
		if err := os.MkdirAll(d.path("member", s), 0o755); err != nil {
			return nil, err
		}
	}
	m.Conf = d.path("member/etc/smb.conf")
	conf := fmt.Sprintf(`[global]
  workgroup = %[2]s
  realm = %[3]s
  security = ads
  netbios name = %[4]s
  password server = %[5]s.%[6]s
  private dir = %[1]s/private
  lock directory = %[1]s/lock
  state directory = %[1]s/state
  cache directory = %[1]s/cache
  pid directory = %[1]s/pid
  ncalrpc dir = %[1]s/ncalrpc
  winbindd socket directory = %[1]s/run/winbindd
  log file = %[1]s/log/log.%%m
  interfaces = eth0
  bind interfaces only = yes
  disable netbios = yes
  smb ports = 445
  winbind use default domain = yes
  winbind enum users = no
  winbind enum groups = no
  winbind refresh tickets = no
  template shell = /bin/sh
  template homedir = /tmp
  idmap config * : backend = tdb
  idmap config * : range = 3000000-3999999
  idmap config %[2]s : backend = rid
  idmap config %[2]s : range = %[7]d-%[8]d
  kerberos method = secrets only
  panic action =
`, m.Dir, NetBIOS, Realm, MemberNetBIOS, DCName, DNSDomain, idmapLow, idmapLow+999999)
	files := map[string]string{
		"etc/smb.conf":      conf,
		"etc/nsswitch.conf": "passwd: files winbind\ngroup: files winbind\nshadow: files\nhosts: files dns\n",
		"etc/hosts":         fmt.Sprintf("127.0.0.1 localhost\n%s %s.%s %s\n%s %s\n", dcAddr, DCName, DNSDomain, DCName, memberAddr, Host),
		"etc/resolv.conf":   fmt.Sprintf("nameserver %s\nsearch %s\n", dcAddr, DNSDomain),
		"etc/krb5.conf":     d.MemberKrb5Conf(),
	}
	for name, body := range files {
		if err := os.WriteFile(d.path("member", name), []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	m.nsswitch = d.path("member/etc/nsswitch.conf")

	// net ads join in the member namespaces.
	join := d.memberCmd(ctx, "net", "ads", "join", "-s", m.Conf, "-U", "Administrator%"+d.Administrator.Password, "--no-dns-updates")
	if out, err := join.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("net ads join: %v\n%s", err, clip(string(out), 3000))
	}
	d.logf("addc: member %s joined after %v", MemberNetBIOS, time.Since(begin).Round(time.Millisecond))

	logf, err := os.Create(d.path("member/log/winbindd.out"))
	if err != nil {
		return nil, err
	}
	m.wb = d.memberCmd(context.Background(), "winbindd", "--foreground", "--no-process-group", "-s", m.Conf)
	m.wb.Stdout, m.wb.Stderr = logf, logf
	m.wb.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := m.wb.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	m.wbDone = make(chan struct{})
	go func() { m.wb.Wait(); logf.Close(); close(m.wbDone) }()
	d.member = m

	// Ready when a domain user resolves through NSS in a wrapped process.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := m.Wrap(exec.Command("getent", "passwd", d.Operator.Name)).CombinedOutput()
		if err == nil && strings.HasPrefix(string(out), d.Operator.Name+":") {
			break
		}
		select {
		case <-m.wbDone:
			return nil, fmt.Errorf("winbindd exited: %s", m.LogTail(30))
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("domain users do not resolve through winbind after 60s (getent: %v %s)\n%s", err, out, m.LogTail(30))
		}
		time.Sleep(300 * time.Millisecond)
	}
	d.logf("addc: winbindd up, domain users resolve, after %v", time.Since(begin).Round(time.Millisecond))
	return m, nil
}

// memberCmd runs argv in the member's network namespace with the member's
// hosts, resolv.conf and krb5.conf (a private mount namespace).
func (d *Domain) memberCmd(ctx context.Context, argv ...string) *exec.Cmd {
	e := func(f string) string { return d.path("member/etc", f) }
	script := fmt.Sprintf(`set -e
mount --bind %s /etc/hosts
mount --bind %s /etc/resolv.conf
mount --bind %s /etc/krb5.conf
exec "$@"`, e("hosts"), e("resolv.conf"), e("krb5.conf"))
	args := append([]string{"netns", "exec", d.NSMember, "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"}, argv...)
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "KRB5_CONFIG=" + e("krb5.conf")}
	return cmd
}

// WrapArgs returns the argv prefix that runs a command (appended) in a
// private mount namespace where domain users resolve through this
// member's winbindd (see Member). The command is exec'd: its pid is the
// wrapper's.
func (m *Member) WrapArgs(hostKrb5Conf string) []string {
	script := fmt.Sprintf(`set -e
mount --bind %s /run/samba
mount --bind %s /etc/nsswitch.conf
mount --bind %s /etc/samba/smb.conf
mount --bind %s /etc/krb5.conf
exec "$@"`, m.run, m.nsswitch, m.Conf, hostKrb5Conf)
	return []string{"unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"}
}

// Wrap rewrites cmd to run inside the member's view (see WrapArgs), with
// the member's krb5.conf.
func (m *Member) Wrap(cmd *exec.Cmd) *exec.Cmd {
	w := m.WrapArgs(m.Dir + "/etc/krb5.conf")
	c := exec.Command(w[0], append(append(w[1:], cmd.Path), cmd.Args[1:]...)...)
	c.Env, c.Dir, c.Stdin, c.Stdout, c.Stderr = cmd.Env, cmd.Dir, cmd.Stdin, cmd.Stdout, cmd.Stderr
	return c
}

// LogTail is the end of winbindd's logs.
func (m *Member) LogTail(n int) string {
	var b strings.Builder
	for _, f := range []string{"log/winbindd.out", "log/log.winbindd", "log/log.wb-" + NetBIOS} {
		data, _ := os.ReadFile(m.Dir + "/" + f)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

func (m *Member) stop() {
	if m.wb != nil && m.wb.Process != nil {
		syscall.Kill(-m.wb.Process.Pid, syscall.SIGTERM)
		select {
		case <-m.wbDone:
		case <-time.After(5 * time.Second):
			syscall.Kill(-m.wb.Process.Pid, syscall.SIGKILL)
			<-m.wbDone
		}
	}
}
