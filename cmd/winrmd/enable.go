package main

// winrmd enable / disable / status: the twin of Enable-PSRemoting,
// Disable-PSRemoting and `winrm enumerate winrm/config/listener`.
//
// enable only ever adds what is missing: a configuration (with the host's
// names), a certificate for them, the winrm-remote-users group, the PAM
// service file, the systemd enablement. An existing configuration is kept as
// it is; a flag that would loosen it (today: --basic on a configuration with
// Basic off) is refused with the key named, never applied silently. Run
// twice, it changes nothing the second time. --root DIR applies everything
// to another root file system (groupadd --prefix, systemctl --root): that is
// how the package tests exercise it, and how an image is prepared.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/winrmd/winrmd/configs"
)

const (
	enableConfig   = "/etc/winrmd/winrmd.yaml"
	enableCert     = "/etc/winrmd/cert.pem"
	enableKey      = "/etc/winrmd/key.pem"
	enableAudit    = "/var/log/winrmd/audit.log"
	enableUnit     = "winrmd.service"
	enablePAMFile  = "/etc/pam.d/winrmd"
	enableUnitWant = "/etc/systemd/system/multi-user.target.wants/winrmd.service"
)

// pamServiceFile is deploy/pam.winrmd (a test keeps the two equal).
const pamServiceFile = `# /etc/pam.d/winrmd — Basic authentication against the host's accounts.
# winrmd calls pam_authenticate and pam_acct_mgmt (lockout, expiry) only;
# sessions are not opened through PAM.
auth     required   pam_faildelay.so delay=2000000
auth     include    common-auth
account  include    common-account
`

// unitPaths are where systemd looks for an installed unit (package first).
var unitPaths = []string{"/etc/systemd/system/winrmd.service", "/lib/systemd/system/winrmd.service", "/usr/lib/systemd/system/winrmd.service"}

type enableOpts struct {
	root    string
	config  string
	cert    string
	key     string
	hosts   []string
	basic   bool
	noStart bool
	out     io.Writer
	changes int
}

func (o *enableOpts) path(p string) string { return filepath.Join(o.root, p) }

func (o *enableOpts) did(format string, a ...any) {
	o.changes++
	fmt.Fprintf(o.out, "enable: "+format+"\n", a...)
}

func (o *enableOpts) kept(format string, a ...any) {
	fmt.Fprintf(o.out, "enable: "+format+"\n", a...)
}

func systemdRunning(root string) bool {
	st, err := os.Stat(filepath.Join(root, "/run/systemd/system"))
	return err == nil && st.IsDir()
}

func enableCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("enable", stderr)
	o := &enableOpts{out: stdout}
	var hosts multiFlag
	fs.StringVar(&o.root, "root", "/", "apply to the root file system at DIR (groupadd --prefix, systemctl --root)")
	fs.StringVar(&o.config, "config", enableConfig, "configuration file (inside --root)")
	fs.StringVar(&o.cert, "cert", "", "use this certificate (PEM) instead of a self-signed one; with --key")
	fs.StringVar(&o.key, "key", "", "the private key of --cert")
	fs.Var(&hosts, "host", "a name the certificate and clients use (repeatable; default: this host's names)")
	fs.BoolVar(&o.basic, "basic", false, "allow Basic logons (HTTPS only) in a new configuration")
	fs.BoolVar(&o.noStart, "no-start", false, "enable the unit but do not start it")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.hosts = hosts
	if (o.cert == "") != (o.key == "") {
		fmt.Fprintln(stderr, "winrmd enable: --cert and --key go together")
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "winrmd enable: run as root (it writes /etc/winrmd, creates a group and enables a service)")
		return 1
	}
	if err := o.enable(); err != nil {
		fmt.Fprintf(stderr, "winrmd enable: %v\n", err)
		return 1
	}
	return 0
}

func (o *enableOpts) hostNames() []string {
	if len(o.hosts) > 0 {
		return o.hosts
	}
	var h []string
	if name, err := os.Hostname(); err == nil && name != "" {
		if cname, err := net.LookupCNAME(name); err == nil && strings.Contains(strings.TrimSuffix(cname, "."), ".") {
			h = append(h, strings.TrimSuffix(cname, "."))
		}
		h = append(h, name)
	}
	return append(h, "localhost", "127.0.0.1", "::1")
}

func (o *enableOpts) enable() error {
	cfgPath := o.path(o.config)
	hosts := o.hostNames()

	// 1. The configuration: written when absent, else kept and checked.
	var cfg *configs.Config
	if _, err := os.Stat(cfgPath); errors.Is(err, os.ErrNotExist) {
		text := string(configs.Example())
		certF, keyF := enableCert, enableKey
		if o.cert != "" {
			certF, keyF = o.cert, o.key
		}
		rep := strings.NewReplacer(
			"cert_file: /etc/winrmd/cert.pem, key_file: /etc/winrmd/key.pem", "cert_file: "+certF+", key_file: "+keyF,
			`audit_file: ""                    # "" sends audit events to the main log`, "audit_file: "+enableAudit+"  # winrmd status reads the last logons here",
			`dns_name: ""                      # default: host name`, `dns_name: "`+hosts[0]+`"`,
		)
		text = rep.Replace(text)
		if o.basic {
			text = strings.Replace(text, "    basic: false ", "    basic: true  ", 1)
		}
		c, err := configs.Parse([]byte(text))
		if err != nil {
			return fmt.Errorf("the configuration enable writes does not check (a bug): %w", err)
		}
		if c.Host.DNSName != hosts[0] || c.Logging.AuditFile != enableAudit || c.Service.Auth.Basic != o.basic {
			return fmt.Errorf("the default configuration changed shape; enable cannot fill it in (a bug)")
		}
		if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
			return err
		}
		if err := writeAtomic(cfgPath, []byte(text), 0o644); err != nil {
			return err
		}
		if err := os.MkdirAll(o.path(filepath.Dir(enableAudit)), 0o750); err != nil {
			return err
		}
		cfg = c
		o.did("wrote %s (HTTP 5985 with message encryption, HTTPS 5986, Negotiate%s; host %s)", o.config, map[bool]string{true: " and Basic over HTTPS", false: ""}[o.basic], hosts[0])
	} else if err != nil {
		return err
	} else {
		c, err := configs.Load(cfgPath)
		if err != nil {
			return fmt.Errorf("the existing configuration does not check; fix it first: %w", err)
		}
		cfg = c
		// Never loosen what an administrator chose.
		if o.basic && !c.Service.Auth.Basic {
			return fmt.Errorf("%s has service.auth.basic: false and --basic would turn it on: refusing to weaken an existing configuration; edit the file if that is what you want", o.config)
		}
		if o.cert != "" {
			for _, l := range c.Listeners {
				if l.Transport == "https" && (l.CertFile != o.cert || l.KeyFile != o.key) {
					return fmt.Errorf("%s serves HTTPS with cert_file %s, not --cert %s: refusing to change an existing configuration; edit the file", o.config, l.CertFile, o.cert)
				}
			}
		}
		o.kept("kept the existing %s (it checks; enable does not change an existing configuration)", o.config)
		for _, w := range weakerThanDefault(c) {
			o.kept("note: %s", w)
		}
	}

	// 2. The certificate of every HTTPS listener.
	for _, l := range cfg.Listeners {
		if l.Transport != "https" {
			continue
		}
		cf, kf := o.path(l.CertFile), o.path(l.KeyFile)
		_, cerr := os.Stat(cf)
		_, kerr := os.Stat(kf)
		switch {
		case cerr == nil && kerr == nil:
			o.kept("kept the certificate %s", l.CertFile)
		case errors.Is(cerr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist):
			if o.cert != "" {
				return fmt.Errorf("--cert %s / --key %s: not found", l.CertFile, l.KeyFile)
			}
			if err := generateCert(cf, kf, hosts, 825); err != nil {
				return fmt.Errorf("certificate: %w", err)
			}
			o.did("made a self-signed certificate %s for %s (825 days; replace it with one your clients trust)", l.CertFile, strings.Join(hosts, ", "))
		default:
			return fmt.Errorf("only one of %s and %s exists: refusing to overwrite either", l.CertFile, l.KeyFile)
		}
	}

	// 3. The group, the twin of Remote Management Users.
	if groupIn(o.path("/etc/group"), labGroup) {
		o.kept("kept the group %s", labGroup)
	} else {
		args := []string{"--system", labGroup}
		if o.root != "/" {
			args = append([]string{"--prefix", o.root}, args...)
		}
		if out, err := exec.Command("groupadd", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("groupadd %s: %v: %s", labGroup, err, out)
		}
		o.did("created the group %s (add users with: usermod -aG %s NAME)", labGroup, labGroup)
	}

	// 4. The PAM service file, when the configuration uses PAM.
	if cfg.Accounts.PAMService != "" {
		pf := o.path("/etc/pam.d/" + cfg.Accounts.PAMService)
		if _, err := os.Stat(pf); err == nil {
			o.kept("kept %s", "/etc/pam.d/"+cfg.Accounts.PAMService)
		} else if cfg.Accounts.PAMService == "winrmd" {
			if err := writeAtomic(pf, []byte(pamServiceFile), 0o644); err != nil {
				return err
			}
			o.did("wrote %s", enablePAMFile)
		} else {
			return fmt.Errorf("accounts.pam_service %q has no file in /etc/pam.d", cfg.Accounts.PAMService)
		}
	}

	// 5. systemd.
	o.systemdStep()
	o.printHowTo(cfg, hosts)
	if o.changes == 0 {
		fmt.Fprintln(o.out, "enable: nothing to change: this host was already enabled")
	}
	return nil
}

// weakerThanDefault names what an existing configuration allows beyond the
// defaults enable would write (reported, never changed).
func weakerThanDefault(c *configs.Config) []string {
	var w []string
	if c.Service.AllowUnencrypted {
		w = append(w, "service.allow_unencrypted is true: unencrypted messages (and Basic over HTTP) are accepted")
	}
	if strings.EqualFold(c.Service.Auth.CBTHardeningLevel, "none") {
		w = append(w, "service.auth.cbt_hardening_level is none: channel binding is not checked on HTTPS")
	}
	if c.Authorization.AllowRoot {
		w = append(w, "authorization.allow_root is true: root may log on")
	}
	if c.Service.Auth.CredSSP {
		w = append(w, "service.auth.credssp is true: credentials are delegated to this host")
	}
	return w
}

func groupIn(groupFile, name string) bool {
	f, err := os.Open(groupFile)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if n, _, ok := strings.Cut(sc.Text(), ":"); ok && n == name {
			return true
		}
	}
	return false
}

func (o *enableOpts) unitInstalled() string {
	for _, p := range unitPaths {
		if _, err := os.Stat(o.path(p)); err == nil {
			return p
		}
	}
	return ""
}

func (o *enableOpts) systemdStep() {
	unit := o.unitInstalled()
	serveLine := "winrmd serve --config " + o.config
	if unit == "" {
		o.kept("no systemd unit is installed (the package has one: make deb; or install deploy/winrmd.service); start the daemon with: %s", serveLine)
		return
	}
	systemctl, err := exec.LookPath("systemctl")
	if err != nil {
		o.kept("systemctl is not installed here: start the daemon with: %s", serveLine)
		return
	}
	if _, err := os.Lstat(o.path(enableUnitWant)); err == nil {
		o.kept("kept the systemd enablement of %s", enableUnit)
	} else {
		args := []string{"enable", enableUnit}
		if o.root != "/" {
			args = []string{"--root=" + o.root, "enable", enableUnit}
		} else if !systemdRunning("/") {
			args = []string{"--no-reload", "enable", enableUnit}
		}
		if out, err := exec.Command(systemctl, args...).CombinedOutput(); err != nil {
			o.kept("systemctl %s failed: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			return
		}
		o.did("enabled %s (systemctl %s)", enableUnit, strings.Join(args, " "))
	}
	if o.root != "/" || !systemdRunning("/") {
		o.kept("systemd is not running here, so the service was not started: start the daemon with: %s (or boot with systemd)", serveLine)
		return
	}
	if o.noStart {
		return
	}
	if exec.Command(systemctl, "--quiet", "is-active", enableUnit).Run() == nil {
		o.kept("kept the running %s (systemctl reload winrmd applies configuration changes)", enableUnit)
		return
	}
	if out, err := exec.Command(systemctl, "start", enableUnit).CombinedOutput(); err != nil {
		o.kept("systemctl start %s failed: %v: %s (see: journalctl -u winrmd)", enableUnit, err, strings.TrimSpace(string(out)))
		return
	}
	o.did("started %s", enableUnit)
}

func (o *enableOpts) printHowTo(cfg *configs.Config, hosts []string) {
	host := hosts[0]
	var httpPort, httpsPort int
	for _, l := range cfg.Listeners {
		if l.Transport == "http" && httpPort == 0 {
			httpPort = l.Port
		}
		if l.Transport == "https" && httpsPort == 0 {
			httpsPort = l.Port
		}
	}
	fmt.Fprintf(o.out, "\nAllow an account: usermod -aG %s NAME", labGroup)
	if cfg.Accounts.StoreFile != "" {
		fmt.Fprintf(o.out, "; for NTLM also: winrmd user add --store %s NAME", cfg.Accounts.StoreFile)
	}
	fmt.Fprintln(o.out)
	if httpPort != 0 {
		fmt.Fprintf(o.out, `From Windows (PowerShell, as administrator, once): Set-Item WSMan:\localhost\Client\TrustedHosts -Concatenate -Value %s
  then: winrs -r:http://%s:%d -u:NAME id
From Python (pip install pywinrm):
  python3 -c "import winrm; print(winrm.Session('http://%s:%d/wsman', auth=('NAME', 'PASSWORD'), transport='ntlm').run_cmd('id').std_out.decode())"
`, host, host, httpPort, host, httpPort)
	}
	if httpsPort != 0 {
		fmt.Fprintf(o.out, "  or over HTTPS: winrm.Session('https://%s:%d/wsman', ..., transport='ntlm', server_cert_validation='ignore') (or trust the certificate)\n", host, httpsPort)
	}
	fmt.Fprintln(o.out, "Undo with: winrmd disable")
}

// disableCmd stops and disables the service; it keeps the configuration,
// the certificate, the account store and the group (as Disable-PSRemoting
// keeps the listeners' configuration), and says so.
func disableCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("disable", stderr)
	root := fs.String("root", "/", "apply to the root file system at DIR (systemctl --root)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "winrmd disable: run as root")
		return 1
	}
	systemctl, err := exec.LookPath("systemctl")
	if err != nil {
		fmt.Fprintln(stdout, "disable: systemctl is not installed here: stop a daemon started by hand with SIGTERM (kill PID)")
		return 0
	}
	changed := false
	if *root == "/" && systemdRunning("/") && exec.Command(systemctl, "--quiet", "is-active", enableUnit).Run() == nil {
		if out, err := exec.Command(systemctl, "stop", enableUnit).CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "winrmd disable: systemctl stop: %v: %s\n", err, out)
			return 1
		}
		fmt.Fprintln(stdout, "disable: stopped winrmd.service (its shells ended)")
		changed = true
	}
	if _, err := os.Lstat(filepath.Join(*root, enableUnitWant)); err == nil {
		args := []string{"--no-reload", "disable", enableUnit}
		if *root != "/" {
			args = []string{"--root=" + *root, "disable", enableUnit}
		}
		if out, err := exec.Command(systemctl, args...).CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "winrmd disable: systemctl %s: %v: %s\n", strings.Join(args, " "), err, out)
			return 1
		}
		fmt.Fprintln(stdout, "disable: disabled winrmd.service")
		changed = true
	}
	if !changed {
		fmt.Fprintln(stdout, "disable: nothing to change: winrmd.service was neither enabled nor running")
	}
	fmt.Fprintf(stdout, "disable: kept %s, the certificate, the account store and the group %s (remove the package with purge to delete them)\n", enableConfig, labGroup)
	return 0
}

// statusCmd shows the listeners (and whether each answers), the schemes, the
// live shells (from the metrics listener) and the last logons (from the
// audit file).
func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", stderr)
	path := fs.String("config", enableConfig, "configuration file")
	n := fs.Int("logons", 10, "how many recent logons to show")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := configs.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "winrmd status: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "configuration: %s\n", *path)
	fmt.Fprintln(stdout, "listeners:")
	for _, l := range cfg.Listeners {
		addr := l.Address
		if addr == "*" || addr == "" {
			addr = "127.0.0.1"
		}
		hp := net.JoinHostPort(addr, strconv.Itoa(l.Port))
		state := "not answering"
		if c, err := net.DialTimeout("tcp", hp, 2*time.Second); err == nil {
			c.Close()
			state = "listening"
		}
		fmt.Fprintf(stdout, "  %-5s %s:%d  %s\n", l.Transport, l.Address, l.Port, state)
	}
	a := cfg.Service.Auth
	var schemes []string
	for _, s := range []struct {
		on   bool
		name string
	}{{a.Negotiate, "Negotiate (NTLM)"}, {a.Kerberos, "Kerberos"}, {a.Basic, "Basic"}, {a.Certificate, "Certificate"}, {a.CredSSP, "CredSSP"}} {
		if s.on {
			schemes = append(schemes, s.name)
		}
	}
	fmt.Fprintf(stdout, "schemes: %s; unencrypted %s; channel binding %s\n", strings.Join(schemes, ", "),
		map[bool]string{true: "allowed", false: "refused"}[cfg.Service.AllowUnencrypted], cfg.Service.Auth.CBTHardeningLevel)
	if cfg.Metrics.Address == "" {
		fmt.Fprintln(stdout, "shells: unknown (metrics.address is empty)")
	} else if m, err := scrape("http://" + cfg.Metrics.Address + "/metrics"); err != nil {
		fmt.Fprintf(stdout, "shells: unknown (metrics at %s: %v)\n", cfg.Metrics.Address, err)
	} else {
		fmt.Fprintf(stdout, "shells: %s live, %s workers, %s commands\n", m["winrmd_shells"], m["winrmd_workers"], m["winrmd_commands"])
	}
	if cfg.Logging.AuditFile == "" {
		fmt.Fprintln(stdout, "last logons: audit events go to the main log (logging.audit_file is empty): journalctl -u winrmd | grep logon_")
		return 0
	}
	logons, err := lastLogons(cfg.Logging.AuditFile, *n)
	if err != nil {
		fmt.Fprintf(stdout, "last logons: %v\n", err)
		return 0
	}
	fmt.Fprintf(stdout, "last logons (%s):\n", cfg.Logging.AuditFile)
	if len(logons) == 0 {
		fmt.Fprintln(stdout, "  none")
	}
	for _, l := range logons {
		fmt.Fprintf(stdout, "  %s\n", l)
	}
	return 0
}

// scrape reads the gauges of a Prometheus text exposition (bounded).
func scrape(url string) (map[string]string, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if name, v, ok := strings.Cut(line, " "); ok && !strings.Contains(name, "{") {
			m[name] = v
		}
	}
	for _, k := range []string{"winrmd_shells", "winrmd_workers", "winrmd_commands"} {
		if m[k] == "" {
			m[k] = "?"
		}
	}
	return m, sc.Err()
}

// lastLogons returns the last n logon events of the audit file, formatted.
// Only the file's last 4 MiB are read.
func lastLogons(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 4<<20 {
		f.Seek(st.Size()-4<<20, io.SeekStart)
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev struct {
			TS     any    `json:"ts"`
			Event  string `json:"event"`
			User   string `json:"user"`
			Remote string `json:"remote_addr"`
			Scheme string `json:"scheme"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || !strings.HasPrefix(ev.Event, "logon_") {
			continue
		}
		out = append(out, fmt.Sprintf("%v %-13s %-20s from %-22s %s", ev.TS, strings.TrimPrefix(ev.Event, "logon_"), ev.User, ev.Remote, ev.Scheme))
		if len(out) > n {
			out = out[1:]
		}
	}
	return out, sc.Err()
}
