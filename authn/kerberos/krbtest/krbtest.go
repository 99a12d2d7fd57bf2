// Package krbtest runs a real MIT KDC (Debian's krb5-kdc) for tests: a
// throwaway realm in a temporary directory, its own krb5.conf (KRB5_CONFIG)
// and kdc.conf (KRB5_KDC_PROFILE), a free loopback port chosen at run time
// (never 88), principals and keytabs made with kadmin.local, tickets with
// kinit. Nothing outlives Stop: the KDC process is killed and the directory
// removed.
//
// Host name: service principals use "localhost" (it resolves to the
// loopback address everywhere, no /etc/hosts edit): krb5.conf turns off DNS
// canonicalisation and reverse lookups and maps localhost to the realm, so
// clients ask for exactly HTTP/localhost@REALM.
package krbtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Realm is the throwaway realm's name.
const Realm = "WINRMD.TEST"

// Host is the service host name used in SPNs.
const Host = "localhost"

// KDC is a running krb5kdc.
type KDC struct {
	Dir     string
	Port    int
	Conf    string // krb5.conf
	Profile string // kdc.conf
	cmd     *exec.Cmd
	done    chan struct{}
	mu      sync.Mutex
}

// Available reports why a KDC cannot run here ("" when it can).
func Available() string {
	for _, b := range []string{"krb5kdc", "kdb5_util", "kadmin.local", "kinit"} {
		if _, err := lookPath(b); err != nil {
			return fmt.Sprintf("%s not installed (Debian packages krb5-kdc, krb5-admin-server, krb5-user)", b)
		}
	}
	return ""
}

func lookPath(b string) (string, error) {
	if p, err := exec.LookPath(b); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		p := filepath.Join(d, b)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start creates the realm in dir (which must exist and be empty or new)
// and starts the KDC.
func Start(dir string) (*KDC, error) {
	if why := Available(); why != "" {
		return nil, fmt.Errorf("krbtest: %s", why)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var k *KDC
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		k, err = start(dir)
		if err == nil {
			return k, nil
		}
	}
	return nil, err
}

func start(dir string) (*KDC, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	k := &KDC{Dir: dir, Port: port, Conf: filepath.Join(dir, "krb5.conf"), Profile: filepath.Join(dir, "kdc.conf"), done: make(chan struct{})}
	krb5conf := fmt.Sprintf(`[libdefaults]
	default_realm = %[1]s
	dns_lookup_realm = false
	dns_lookup_kdc = false
	dns_canonicalize_hostname = false
	rdns = false
	udp_preference_limit = 1
	forwardable = true
	ticket_lifetime = 10h
	default_ccache_name = FILE:%[3]s/ccache-default
[realms]
	%[1]s = {
		kdc = 127.0.0.1:%[2]d
	}
[domain_realm]
	localhost = %[1]s
	.localhost = %[1]s
`, Realm, port, dir)
	kdcconf := fmt.Sprintf(`[kdcdefaults]
	kdc_ports = %[2]d
	kdc_tcp_listen = 127.0.0.1:%[2]d
	kdc_listen = 127.0.0.1:%[2]d
[realms]
	%[1]s = {
		database_name = %[3]s/principal
		key_stash_file = %[3]s/stash
		acl_file = %[3]s/kadm5.acl
		max_life = 10h
		max_renewable_life = 1d
		supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal aes256-cts-hmac-sha384-192:normal aes128-cts-hmac-sha256-128:normal
		default_principal_flags = +forwardable
	}
[logging]
	kdc = FILE:%[3]s/kdc.log
`, Realm, port, dir)
	if err := os.WriteFile(k.Conf, []byte(krb5conf), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(k.Profile, []byte(kdcconf), 0o600); err != nil {
		return nil, err
	}
	_ = os.WriteFile(filepath.Join(dir, "kadm5.acl"), nil, 0o600)
	if _, err := os.Stat(filepath.Join(dir, "principal")); err != nil {
		if out, err := k.run(nil, "kdb5_util", "create", "-s", "-r", Realm, "-P", "krbtest-master-"+strconv.Itoa(os.Getpid())); err != nil {
			return nil, fmt.Errorf("krbtest: kdb5_util create: %v: %s", err, out)
		}
	}
	bin, _ := lookPath("krb5kdc")
	k.cmd = exec.Command(bin, "-n", "-r", Realm)
	k.cmd.Env = k.Env()
	log, _ := os.Create(filepath.Join(dir, "krb5kdc.out"))
	k.cmd.Stdout, k.cmd.Stderr = log, log
	if err := k.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { k.cmd.Wait(); log.Close(); close(k.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return k, nil
		}
		select {
		case <-k.done:
			out, _ := os.ReadFile(filepath.Join(dir, "krb5kdc.out"))
			return nil, fmt.Errorf("krbtest: krb5kdc exited: %s", out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			k.Stop()
			return nil, fmt.Errorf("krbtest: krb5kdc did not listen on %d", port)
		}
	}
}

// Env is the environment that points Kerberos tools at this realm.
func (k *KDC) Env() []string {
	env := []string{"KRB5_CONFIG=" + k.Conf, "KRB5_KDC_PROFILE=" + k.Profile}
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "KRB5_CONFIG=") || strings.HasPrefix(e, "KRB5_KDC_PROFILE=") || strings.HasPrefix(e, "KRB5CCNAME=") || strings.HasPrefix(e, "KRB5_KTNAME=") {
			continue
		}
		env = append(env, e)
	}
	return env
}

func (k *KDC) run(stdin []byte, name string, args ...string) ([]byte, error) {
	bin, err := lookPath(name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = k.Env()
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return cmd.CombinedOutput()
}

func (k *KDC) kadmin(q string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	out, err := k.run(nil, "kadmin.local", "-r", Realm, "-q", q)
	if err != nil || bytes.Contains(out, []byte("rror")) {
		return fmt.Errorf("krbtest: kadmin.local %q: %v: %s", strings.Fields(q)[0], err, out)
	}
	return nil
}

// AddUser creates name@REALM with a password.
func (k *KDC) AddUser(name, password string) error {
	return k.kadmin(fmt.Sprintf("addprinc -pw %s %s", password, name))
}

// AddService creates a principal with a random key ("HTTP/localhost").
func (k *KDC) AddService(name string) error {
	return k.kadmin("addprinc -randkey " + name)
}

// Keytab exports the principals' current keys to path (without changing
// them).
func (k *KDC) Keytab(path string, principals ...string) error {
	for _, p := range principals {
		if err := k.kadmin(fmt.Sprintf("ktadd -norandkey -k %s %s", path, p)); err != nil {
			return err
		}
	}
	return nil
}

// Rekey gives a principal a new random key (a new kvno) without exporting it.
func (k *KDC) Rekey(principal string) error {
	return k.kadmin("cpw -randkey " + principal)
}

// Kinit gets a TGT for principal into ccache (a path), with extra kinit
// options ("-f", "-l", "5s").
func (k *KDC) Kinit(principal, password, ccache string, opts ...string) error {
	args := append([]string{"-c", "FILE:" + ccache}, opts...)
	args = append(args, principal)
	out, err := k.run([]byte(password+"\n"), "kinit", args...)
	if err != nil {
		return fmt.Errorf("krbtest: kinit %s: %v: %s", principal, err, out)
	}
	return nil
}

// Stop kills the KDC.
func (k *KDC) Stop() {
	if k.cmd != nil && k.cmd.Process != nil {
		_ = k.cmd.Process.Kill()
		<-k.done
	}
}
