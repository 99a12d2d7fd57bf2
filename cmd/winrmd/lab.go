package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/winrmd/winrmd/authn/accounts"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/server"
)

// labUser is the account `winrmd lab` creates when it runs as root.
const labUser = "winrmd-lab"

// labGroup is the twin of Windows' Remote Management Users.
const labGroup = "winrm-remote-users"

// labCmd prepares a lab directory (certificate, configuration, account
// store, a lab account) and serves from it on loopback.
func labCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("lab", stderr)
	dir := fs.String("dir", ".lab", "lab directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "winrmd lab: %v\n", err)
		return 1
	}
	name, password, err := prepareLab(abs, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "winrmd lab: %v\n", err)
		return 1
	}
	cfgPath := filepath.Join(abs, "winrmd.yaml")
	cfg, err := configs.Load(cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "winrmd lab: %v\n", err)
		return 1
	}
	err = serve(cfg, cfgPath, filepath.Join(abs, "ready.json"), os.Geteuid() != 0, func(info server.Ready) {
		printLabHelp(stdout, info, name, password, abs)
	})
	if err != nil {
		fmt.Fprintf(stderr, "winrmd lab: %v\n", err)
		return 1
	}
	return 0
}

func prepareLab(dir string, stdout io.Writer) (name, password string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	certF, keyF := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := os.Stat(certF); errors.Is(err, os.ErrNotExist) {
		if err := generateCert(certF, keyF, defaultCertHosts(), 825); err != nil {
			return "", "", err
		}
		fmt.Fprintf(stdout, "lab: generated a self-signed certificate in %s\n", certF)
	}
	cfgPath := filepath.Join(dir, "winrmd.yaml")
	if _, err := os.Stat(cfgPath); errors.Is(err, os.ErrNotExist) {
		text := strings.ReplaceAll(string(configs.Lab()), "{{DIR}}", dir)
		if err := writeAtomic(cfgPath, []byte(text), 0o600); err != nil {
			return "", "", err
		}
	}
	// The lab account: a real Linux user when we are root (shells run as
	// it), else the invoking user (unprivileged lab mode).
	if os.Geteuid() == 0 {
		name = labUser
		if err := ensureLabUser(stdout); err != nil {
			return "", "", err
		}
	} else {
		u, err := user.Current()
		if err != nil {
			return "", "", err
		}
		name = u.Username
	}
	pwFile := filepath.Join(dir, "password")
	if b, err := os.ReadFile(pwFile); err == nil && len(strings.TrimSpace(string(b))) >= 8 {
		password = strings.TrimSpace(string(b))
	} else {
		password = randomPassword()
		if err := writeAtomic(pwFile, []byte(password+"\n"), 0o600); err != nil {
			return "", "", err
		}
	}
	store, err := accounts.Open(filepath.Join(dir, "accounts"))
	if err != nil {
		return "", "", err
	}
	if store.Has(name) {
		err = store.SetPassword(name, password)
	} else {
		err = store.Add(name, password)
	}
	if err != nil {
		return "", "", fmt.Errorf("account store: %w", err)
	}
	return name, password, nil
}

func ensureLabUser(stdout io.Writer) error {
	if _, err := user.LookupGroup(labGroup); err != nil {
		if out, err := exec.Command("groupadd", "--system", labGroup).CombinedOutput(); err != nil {
			return fmt.Errorf("groupadd %s: %v: %s", labGroup, err, out)
		}
	}
	if _, err := user.Lookup(labUser); err != nil {
		out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/bash", "--groups", labGroup, labUser).CombinedOutput()
		if err != nil {
			return fmt.Errorf("useradd %s: %v: %s", labUser, err, out)
		}
		fmt.Fprintf(stdout, "lab: created the Linux account %s (group %s)\n", labUser, labGroup)
		return nil
	}
	if out, err := exec.Command("usermod", "--append", "--groups", labGroup, labUser).CombinedOutput(); err != nil {
		return fmt.Errorf("usermod %s: %v: %s", labUser, err, out)
	}
	return nil
}

func randomPassword() string {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func printLabHelp(w io.Writer, info server.Ready, name, password, dir string) {
	httpA, httpsA := info.Address("http"), info.Address("https")
	fmt.Fprintf(w, `
winrmd lab is serving (pid %d).
  account:   %s
  password:  %s            (also in %s/password)
  HTTP:      http://%s/wsman   (NTLM/Negotiate with message encryption)
  HTTPS:     https://%s/wsman  (Basic or NTLM; self-signed certificate %s/cert.pem)
  metrics:   http://%s/metrics
  audit log: %s/audit.log

Try it (pip install pywinrm):
  python3 -c "import winrm; s = winrm.Session('http://%s/wsman', auth=('%s', '%s'), transport='ntlm'); r = s.run_cmd('id'); print(r.std_out.decode())"
  python3 -c "import winrm; s = winrm.Session('https://%s/wsman', auth=('%s', '%s'), transport='basic', server_cert_validation='ignore'); print(s.run_cmd('id').std_out.decode())"
Stop with Ctrl-C.
`, info.PID, name, password, dir, httpA, httpsA, dir, info.Metrics, dir,
		httpA, name, password, httpsA, name, password)
}
