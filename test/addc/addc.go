// Package addc runs a throwaway Active Directory domain for the tests: a real
// Samba AD DC (Debian's samba-ad-dc), provisioned from scratch into a
// temporary directory and running in its own network namespace, joined by a
// veth pair to a second namespace for the domain member (the winrmd host's
// winbindd). Nothing touches /etc/samba, the system's services or any address
// outside the namespaces made here; host-side clients reach the KDC through
// a TCP relay on 127.0.0.1 that dials from inside the member namespace.
//
// The domain (see Start): three users — one in Domain Admins, one in a
// custom group that the tests allow by SID, one in no allowed group — a
// service account for the winrmd host with the SPN HTTP/<Host> and an
// exported keytab, trusted for constrained delegation (msDS-AllowedToDelegateTo)
// to exactly one service (AllowedSPN, owned by another account), and a
// second service (RefusedSPN) it is not trusted for.
//
// Provisioning and the accounts take ~30 s on the test machine; everything
// is torn down by Close: the processes in both namespaces, the namespaces,
// the directory.
package addc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Names of the throwaway domain. The .test TLD is reserved (RFC 2606).
const (
	Realm     = "WRMDAD.TEST"
	DNSDomain = "wrmdad.test"
	NetBIOS   = "WRMDAD"
	DCName    = "dc1"
	// Host is the winrmd host's name in the domain: its service account
	// carries HTTP/Host and its member join uses MemberNetBIOS.
	Host          = "winrmd." + DNSDomain
	MemberNetBIOS = "WRMDHOST"
	// ClientHost is the name host-side clients use for the daemon on
	// loopback; krb5.conf maps it to the realm.
	ClientHost = "localhost"
	// ServiceAccount owns HTTP/Host and is trusted to delegate to AllowedSPN.
	ServiceAccount = "wrmdsvc"
	AllowedSPN     = "cifs/files." + DNSDomain
	RefusedSPN     = "cifs/other." + DNSDomain
	// OperatorsGroup is the custom group the tests allow by its SID.
	OperatorsGroup = "WinRM Operators"
	// BigGroups is how many extra groups Big is in: ~8 bytes of PAC each,
	// so the ticket and its base64 Authorization header are ~12 KiB and
	// ~16 KiB.
	BigGroups = 1000

	dcAddr     = "10.231.77.1"
	memberAddr = "10.231.77.2"
	prefixLen  = "24"
	nsPrefix   = "wrmdad"
)

// User is a domain account with its password.
type User struct {
	Name     string // sAMAccountName
	Password string
}

// Principal is the user's Kerberos name.
func (u User) Principal() string { return u.Name + "@" + Realm }

// Domain is a running throwaway domain.
type Domain struct {
	Dir       string // everything lives below it (0700)
	DomainSID string // S-1-5-21-…
	// Admin is in Domain Admins; Operator in OperatorsGroup; Plain in no
	// allowed group; Big in OperatorsGroup and BigGroups more groups (a
	// large PAC). Administrator is the domain's built-in administrator.
	Admin, Operator, Plain, Big, Administrator User
	OperatorsSID                               string // OperatorsGroup's objectSid
	Keytab                                     string // HTTP/Host and ServiceAccount keys, 0600
	// Krb5Conf is a krb5.conf for host-side clients: the realm's KDC is the
	// relay on 127.0.0.1 (TCP only).
	Krb5Conf string
	KDCAddr  string // the relay, 127.0.0.1:port
	// NSDC and NSMember are the network namespaces.
	NSDC, NSMember string

	conf    string // the DC's smb.conf
	samba   *exec.Cmd
	sambaWG chan struct{}
	relay   net.Listener
	dialer  chan dialReq
	logf    func(string, ...any)
	closed  sync.Once
	member  *Member
}

// Available reports why the domain cannot run here ("" when it can).
func Available() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces)"
	}
	for _, tool := range []string{"samba", "samba-tool", "ip", "kinit", "unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not installed (Debian packages samba-ad-dc, krb5-user, iproute2)"
		}
	}
	if _, err := os.Stat("/usr/share/samba/setup/ad-schema"); err != nil {
		return "the AD schema files are missing (Debian package samba-ad-provision)"
	}
	return ""
}

// Start provisions and starts a domain below a new directory in base.
// logf receives progress lines (t.Logf).
func Start(ctx context.Context, base string, logf func(string, ...any)) (_ *Domain, err error) {
	if why := Available(); why != "" {
		return nil, errors.New(why)
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	sweepStale()
	// The private mount namespaces bind the DC's and the member's socket
	// directories over /run/samba: the mount point must exist (Samba's
	// packages make it when their services start, which they do not here).
	if err := os.MkdirAll("/run/samba", 0o755); err != nil {
		return nil, fmt.Errorf("addc: %w", err)
	}
	dir, err := os.MkdirTemp(base, "addc-")
	if err != nil {
		return nil, err
	}
	tag := strconv.Itoa(os.Getpid())
	d := &Domain{
		Dir:           dir,
		NSDC:          nsPrefix + tag + "-dc",
		NSMember:      nsPrefix + tag + "-m",
		Admin:         User{"adadmin", "Ad-" + randHex(8) + "!a1"},
		Operator:      User{"adoper", "Ad-" + randHex(8) + "!o1"},
		Plain:         User{"adplain", "Ad-" + randHex(8) + "!p1"},
		Big:           User{"adbig", "Ad-" + randHex(8) + "!b1"},
		Administrator: User{"Administrator", "Ad-" + randHex(8) + "!A1"},
		logf:          logf,
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	begin := time.Now()
	if err := d.network(); err != nil {
		return nil, fmt.Errorf("addc: network: %w", err)
	}
	if err := d.provision(ctx); err != nil {
		return nil, fmt.Errorf("addc: provision: %w", err)
	}
	logf("addc: provisioned %s (%s) in %v", Realm, d.DomainSID, time.Since(begin).Round(time.Millisecond))
	if err := d.accounts(ctx); err != nil {
		return nil, fmt.Errorf("addc: accounts: %w", err)
	}
	logf("addc: accounts ready after %v", time.Since(begin).Round(time.Millisecond))
	if err := d.start(ctx); err != nil {
		return nil, fmt.Errorf("addc: start samba: %w", err)
	}
	if err := d.startRelay(); err != nil {
		return nil, fmt.Errorf("addc: KDC relay: %w", err)
	}
	if err := d.waitKDC(ctx); err != nil {
		return nil, fmt.Errorf("addc: %w\n%s", err, d.LogTail(30))
	}
	logf("addc: DC up in %s after %v; KDC relay %s", d.NSDC, time.Since(begin).Round(time.Millisecond), d.KDCAddr)
	return d, nil
}

// network makes both namespaces and the veth pair between them (created
// directly inside the namespaces: nothing appears in the host's).
func (d *Domain) network() error {
	for _, args := range [][]string{
		{"netns", "add", d.NSDC},
		{"netns", "add", d.NSMember},
		{"link", "add", "name", "eth0", "netns", d.NSDC, "type", "veth", "peer", "name", "eth0", "netns", d.NSMember},
		{"-n", d.NSDC, "addr", "add", dcAddr + "/" + prefixLen, "dev", "eth0"},
		{"-n", d.NSMember, "addr", "add", memberAddr + "/" + prefixLen, "dev", "eth0"},
		{"-n", d.NSDC, "link", "set", "lo", "up"},
		{"-n", d.NSDC, "link", "set", "eth0", "up"},
		{"-n", d.NSMember, "link", "set", "lo", "up"},
		{"-n", d.NSMember, "link", "set", "eth0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func (d *Domain) path(p ...string) string { return filepath.Join(append([]string{d.Dir}, p...)...) }

// provision runs samba-tool domain provision with every state, lock, pid,
// socket and log path inside Dir.
func (d *Domain) provision(ctx context.Context) error {
	for _, s := range []string{"run/pid", "run/ncalrpc", "run/winbindd", "log"} {
		if err := os.MkdirAll(d.path(s), 0o755); err != nil {
			return err
		}
	}
	args := []string{"domain", "provision",
		"--targetdir=" + d.Dir,
		"--realm=" + Realm, "--domain=" + NetBIOS, "--server-role=dc",
		"--dns-backend=SAMBA_INTERNAL", "--host-name=" + DCName, "--host-ip=" + dcAddr,
		"--adminpass=" + d.Administrator.Password,
		"--option=interfaces=lo eth0",
		"--option=bind interfaces only=yes",
		"--option=pid directory=" + d.path("run/pid"),
		"--option=ncalrpc dir=" + d.path("run/ncalrpc"),
		"--option=winbindd socket directory=" + d.path("run/winbindd"),
		"--option=log file=" + d.path("log/log.%m"),
		"--option=dns forwarder=",
		// Never run the host's passwd for a domain password change, never
		// call Debian's panic script.
		"--option=unix password sync=no",
		"--option=panic action=",
		// AES only (24 = aes128|aes256): the tickets winrmd gets are AES.
		"--option=kdc default domain supported enctypes=24",
	}
	if _, err := d.tool(ctx, args...); err != nil {
		return err
	}
	d.conf = d.path("etc/smb.conf")
	sid, err := d.tool(ctx, "user", "show", "Administrator", "--attributes=objectSid")
	if err != nil {
		return err
	}
	m := regexp.MustCompile(`objectSid: (S-1-5-21-\d+-\d+-\d+)-500`).FindStringSubmatch(sid)
	if m == nil {
		return fmt.Errorf("no domain SID in %q", sid)
	}
	d.DomainSID = m[1]
	return nil
}

// tool runs samba-tool against the DC's database directly (the DC need not
// run).
func (d *Domain) tool(ctx context.Context, args ...string) (string, error) {
	if d.conf != "" {
		args = append(args, "-s", d.conf)
		if args[0] != "domain" {
			args = append(args, "-H", d.path("private/sam.ldb"))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	// In the DC's namespace: provisioning records the addresses it sees
	// in DNS (only the DC's there, not the host's).
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", d.NSDC, "samba-tool"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("samba-tool %s: %v\n%s", args[0]+" "+args[1], err, clip(out.String(), 2000))
	}
	return out.String(), nil
}

// accounts creates the users, groups, SPNs and delegation, and exports the
// service keytab.
func (d *Domain) accounts(ctx context.Context) error {
	svcPass := "Svc-" + randHex(12) + "!s1"
	steps := [][]string{
		{"user", "create", d.Admin.Name, d.Admin.Password},
		{"user", "create", d.Operator.Name, d.Operator.Password},
		{"user", "create", d.Plain.Name, d.Plain.Password},
		{"group", "add", OperatorsGroup},
		{"user", "create", d.Big.Name, d.Big.Password},
		{"group", "addmembers", OperatorsGroup, d.Operator.Name + "," + d.Big.Name},
		{"group", "addmembers", "Domain Admins", d.Admin.Name},
		{"user", "create", ServiceAccount, svcPass},
		{"spn", "add", "HTTP/" + Host, ServiceAccount},
		{"spn", "add", "WSMAN/" + Host, ServiceAccount},
		// Host-side clients connect to "localhost" (the daemon listens on
		// loopback and the tests cannot edit /etc/hosts): its SPNs belong
		// to the same service account.
		{"spn", "add", "HTTP/" + ClientHost, ServiceAccount},
		{"spn", "add", "WSMAN/" + ClientHost, ServiceAccount},
		// pypsrp's Kerberos asks for host/<name>.
		{"spn", "add", "host/" + ClientHost, ServiceAccount},
		{"user", "create", "wrmdfiles", "Svc-" + randHex(12) + "!f1"},
		{"spn", "add", AllowedSPN, "wrmdfiles"},
		{"user", "create", "wrmdother", "Svc-" + randHex(12) + "!o1"},
		{"spn", "add", RefusedSPN, "wrmdother"},
		// Kerberos-only constrained delegation (no protocol transition:
		// UF_TRUSTED_TO_AUTHENTICATE_FOR_DELEGATION stays off).
		{"delegation", "add-service", ServiceAccount, AllowedSPN},
	}
	for _, s := range steps {
		if _, err := d.tool(ctx, s...); err != nil {
			return err
		}
	}
	if err := d.bigGroups(ctx); err != nil {
		return err
	}
	out, err := d.tool(ctx, "group", "show", OperatorsGroup, "--attributes=objectSid")
	if err != nil {
		return err
	}
	m := regexp.MustCompile(`objectSid: (S-1-5-21-[\d-]+)`).FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("no objectSid for %q in %q", OperatorsGroup, out)
	}
	d.OperatorsSID = m[1]
	d.Keytab = d.path("winrmd.keytab")
	for _, p := range []string{"HTTP/" + Host, "WSMAN/" + Host, "HTTP/" + ClientHost, "WSMAN/" + ClientHost, "host/" + ClientHost, ServiceAccount} {
		if _, err := d.tool(ctx, "domain", "exportkeytab", d.Keytab, "--principal="+p); err != nil {
			return err
		}
	}
	return os.Chmod(d.Keytab, 0o600)
}

// bigGroups puts Big in BigGroups groups, in one samba python process
// (samba-tool would take a second per group).
func (d *Domain) bigGroups(ctx context.Context) error {
	script := `import sys
from samba.samdb import SamDB
from samba.param import LoadParm
from samba.auth import system_session
lp = LoadParm()
lp.load(sys.argv[1])
sam = SamDB(url=sys.argv[2], session_info=system_session(), lp=lp)
base = str(sam.domain_dn())
user = "CN=%s,CN=Users,%s" % (sys.argv[3], base)
sam.transaction_start()
for i in range(int(sys.argv[4])):
    sam.add({"dn": "CN=wrmdbig%04d,CN=Users,%s" % (i, base), "objectClass": "group",
             "sAMAccountName": "wrmdbig%04d" % i, "member": user})
sam.transaction_commit()
`
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-c", script, d.conf, d.path("private/sam.ldb"), d.Big.Name, strconv.Itoa(BigGroups))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("creating %d groups: %v\n%s", BigGroups, err, clip(string(out), 2000))
	}
	return nil
}

// start runs samba in the DC namespace, in its own process group.
func (d *Domain) start(ctx context.Context) error {
	logf, err := os.Create(d.path("log/samba.out"))
	if err != nil {
		return err
	}
	// The DC's smbd turns every session into a Unix token, which needs
	// the domain's users through NSS: its own winbindd, reached through
	// /run/samba and nsswitch.conf in a private mount namespace.
	nss := d.path("etc/nsswitch.conf")
	if err := os.WriteFile(nss, []byte("passwd: files winbind\ngroup: files winbind\nshadow: files\nhosts: files dns\n"), 0o644); err != nil {
		return err
	}
	script := fmt.Sprintf(`set -e
mount --bind %s /run/samba
mount --bind %s /etc/nsswitch.conf
exec "$@"`, d.path("run"), nss)
	cmd := exec.Command("ip", "netns", "exec", d.NSDC, "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
		"samba", "--foreground", "--no-process-group", "--model=single", "-s", d.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	d.samba = cmd
	d.sambaWG = make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(d.sambaWG) }()
	return nil
}

// LogTail is the end of the DC's logs, for failure messages.
func (d *Domain) LogTail(n int) string {
	var b strings.Builder
	for _, f := range []string{"log/samba.out", "log/log.samba"} {
		data, _ := os.ReadFile(d.path(f))
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

// dialReq asks the namespace dialer for a connection.
type dialReq struct {
	addr  string
	reply chan dialRes
}

type dialRes struct {
	c   net.Conn
	err error
}

// startRelay listens on 127.0.0.1:0 and relays every connection to the
// DC's KDC, dialled from a thread that lives in the member namespace (the
// thread is never returned to the Go scheduler: it exits with its
// goroutine).
func (d *Domain) startRelay() error {
	d.dialer = make(chan dialReq)
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open("/run/netns/" + d.NSMember)
		if err != nil {
			ready <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			ready <- fmt.Errorf("setns %s: %w", d.NSMember, err)
			return
		}
		ready <- nil
		for r := range d.dialer {
			c, err := net.DialTimeout("tcp", r.addr, 10*time.Second)
			r.reply <- dialRes{c, err}
		}
	}()
	if err := <-ready; err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	d.relay = l
	d.KDCAddr = l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go d.pipe(c, net.JoinHostPort(dcAddr, "88"))
		}
	}()
	d.Krb5Conf = d.path("krb5.conf")
	return os.WriteFile(d.Krb5Conf, []byte(d.krb5Conf(d.KDCAddr)), 0o644)
}

// DialMember connects to addr from inside the member namespace.
func (d *Domain) DialMember(addr string) (net.Conn, error) {
	r := dialReq{addr: addr, reply: make(chan dialRes, 1)}
	d.dialer <- r
	res := <-r.reply
	return res.c, res.err
}

func (d *Domain) pipe(c net.Conn, to string) {
	defer c.Close()
	up, err := d.DialMember(to)
	if err != nil {
		return // the client sees the connection close (refused while samba starts)
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// krb5Conf is a client configuration for the realm with kdc as its KDC.
// TCP only (udp_preference_limit 1): the relay speaks TCP.
func (d *Domain) krb5Conf(kdc string) string {
	return fmt.Sprintf(`[libdefaults]
  default_realm = %[1]s
  dns_lookup_kdc = false
  dns_lookup_realm = false
  rdns = false
  dns_canonicalize_hostname = false
  forwardable = true
  udp_preference_limit = 1
  default_ccache_name = FILE:/tmp/krb5cc_%%{uid}
[realms]
  %[1]s = {
    kdc = %[2]s
  }
[domain_realm]
  .%[3]s = %[1]s
  %[3]s = %[1]s
  %[4]s = %[1]s
`, Realm, kdc, DNSDomain, ClientHost)
}

// MemberKrb5Conf is a krb5.conf for use inside the member namespace (the
// DC's address directly).
func (d *Domain) MemberKrb5Conf() string { return d.krb5Conf(dcAddr) }

// DCAddr is the DC's address inside the namespaces.
func DCAddr() string { return dcAddr }

// MemberAddr is the member's address inside the namespaces.
func MemberAddr() string { return memberAddr }

// waitKDC waits until an AS exchange through the relay works.
func (d *Domain) waitKDC(ctx context.Context) error {
	deadline := time.Now().Add(90 * time.Second)
	cc := d.path("probe.ccache")
	defer os.Remove(cc)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-d.sambaWG:
			return errors.New("samba exited during start-up")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if last = d.Kinit(ctx, d.Plain, cc); last == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("KDC not answering after 90s: %v", last)
}

// Kinit gets a TGT for u into the credential cache file ccache (through
// the relay, with the host-side krb5.conf).
func (d *Domain) Kinit(ctx context.Context, u User, ccache string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kinit", "-c", "FILE:"+ccache, u.Principal())
	cmd.Env = d.Env(ccache)
	cmd.Stdin = strings.NewReader(u.Password + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kinit %s: %v: %s", u.Principal(), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Env is an environment for MIT krb5 tools on the host side: the relay's
// krb5.conf and ccache (a file path) as the default cache.
func (d *Domain) Env(ccache string) []string {
	env := []string{"KRB5_CONFIG=" + d.Krb5Conf, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	if ccache != "" {
		env = append(env, "KRB5CCNAME=FILE:"+ccache)
	}
	return env
}

// InMember returns a command running argv inside the member namespace.
func (d *Domain) InMember(argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", d.NSMember}, argv...)...)
}

// Close stops every process in both namespaces, deletes them and removes
// the directory. It is safe to call more than once.
func (d *Domain) Close() {
	d.closed.Do(func() {
		if d.relay != nil {
			d.relay.Close()
		}
		if d.dialer != nil {
			close(d.dialer)
		}
		if d.member != nil {
			d.member.stop()
		}
		for _, ns := range []string{d.NSMember, d.NSDC} {
			killNamespace(ns)
		}
		if d.samba != nil {
			syscall.Kill(-d.samba.Process.Pid, syscall.SIGKILL)
			<-d.sambaWG
		}
		for _, ns := range []string{d.NSMember, d.NSDC} {
			exec.Command("ip", "netns", "delete", ns).Run()
		}
		if d.Dir != "" && os.Getenv("WINRMD_ADDC_KEEP") == "" {
			var err error
			for i := 0; i < 30; i++ {
				if err = os.RemoveAll(d.Dir); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				d.logf("addc: removing %s: %v", d.Dir, err)
			}
		}
	})
}

// killNamespace terminates every process whose network namespace is ns
// (TERM, then KILL after 5 s) and waits until none is left.
func killNamespace(ns string) {
	pids := func() []int {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		var ps []int
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if p, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil && p > 1 && p != os.Getpid() {
				ps = append(ps, p)
			}
		}
		return ps
	}
	for _, p := range pids() {
		syscall.Kill(p, syscall.SIGTERM)
	}
	for i := 0; i < 100; i++ {
		ps := pids()
		if len(ps) == 0 {
			return
		}
		if i >= 50 {
			for _, p := range ps {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sweepStale removes namespaces left by a run that died (their pid tag is
// not a live process).
func sweepStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, nsPrefix) {
			continue
		}
		rest := strings.TrimPrefix(name, nsPrefix)
		i := strings.IndexByte(rest, '-')
		if i < 0 {
			continue
		}
		pid, err := strconv.Atoi(rest[:i])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		killNamespace(name)
		exec.Command("ip", "netns", "delete", name).Run()
	}
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
