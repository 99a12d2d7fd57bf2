//go:build !cgo || !unix

package authn

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// NSSFromLibc reports whether account lookups go through the C library's NSS.
// False here: without cgo, os/user and loginShell read /etc/passwd and
// /etc/group only, so accounts from sssd, winbind or LDAP do not resolve.
const NSSFromLibc = false

// loginShell reads /etc/passwd, as os/user does without cgo. Such a build
// resolves only local files accounts: build winrmd with cgo so NSS (sssd,
// winbind) is used.
func loginShell(name string, uid uint32) (string, error) {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) != 7 || fields[0] != name {
			continue
		}
		if fields[2] != strconv.FormatUint(uint64(uid), 10) {
			return "", fmt.Errorf("account %q changed during lookup", name)
		}
		return fields[6], nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("account %q not in /etc/passwd", name)
}
