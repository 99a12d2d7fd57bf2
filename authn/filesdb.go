package authn

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// AccountDB is an account database the Authorizer can use instead of NSS.
type AccountDB interface {
	LookupUser(name string) (Account, error)
	LookupGroup(name string) (uint32, error)
}

// MaxAccountFileBytes bounds /etc/passwd and /etc/group read by FilesDB: the
// files belong to another container and are as hostile as the network.
const MaxAccountFileBytes = 8 << 20

// FilesDB reads accounts from the /etc/passwd and /etc/group of another
// root file system, as a container sees them: sidecar mode resolves the
// account a shell runs as inside the target container. Root returns that
// root (e.g. /proc/<pid>/root) at each lookup, so a restarted container is
// read afresh. The files are opened with RESOLVE_IN_ROOT, so symbolic links
// inside the container cannot point the daemon at its own files.
type FilesDB struct {
	Root func() (string, error)
}

var _ AccountDB = FilesDB{}

func (d FilesDB) read(name string) ([]byte, error) {
	root, err := d.Root()
	if err != nil {
		return nil, fmt.Errorf("%w: account files: %v", ErrBackend, err)
	}
	dfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: account files: open %s: %v", ErrBackend, root, err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, "etc/"+name, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return nil, fmt.Errorf("%w: account files: %s/etc/%s: %v", ErrBackend, root, name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: account files: %s/etc/%s is not a regular file", ErrBackend, root, name)
	}
	var buf bytes.Buffer
	for {
		b := make([]byte, 64<<10)
		n, err := unix.Read(fd, b)
		if n > 0 {
			buf.Write(b[:n])
		}
		if buf.Len() > MaxAccountFileBytes {
			unix.Close(fd)
			return nil, fmt.Errorf("%w: account files: %s/etc/%s is larger than %d bytes", ErrBackend, root, name, MaxAccountFileBytes)
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("%w: account files: read %s/etc/%s: %v", ErrBackend, root, name, err)
		}
		if n == 0 {
			break
		}
	}
	unix.Close(fd)
	return buf.Bytes(), nil
}

// lines calls f with the colon-separated fields of each line of b that has
// exactly n fields (others, comments and NIS "+" entries are skipped).
func lines(b []byte, n int, f func([]string) bool) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' || l[0] == '+' || l[0] == '-' {
			continue
		}
		fs := strings.Split(l, ":")
		if len(fs) != n {
			continue
		}
		if f(fs) {
			return nil
		}
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		return fmt.Errorf("%w: account files: %v", ErrBackend, err)
	}
	return nil
}

func parseID(s string) (uint32, bool) {
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}

// LookupUser returns the account name in the root's /etc/passwd, with the
// groups of /etc/group that list it (and its primary group).
func (d FilesDB) LookupUser(name string) (Account, error) {
	pw, err := d.read("passwd")
	if err != nil {
		return Account{}, err
	}
	var acct Account
	found := false
	var bad error
	err = lines(pw, 7, func(f []string) bool {
		if f[0] != name {
			return false
		}
		uid, ok1 := parseID(f[2])
		gid, ok2 := parseID(f[3])
		if !ok1 || !ok2 {
			bad = fmt.Errorf("%w: account files: %q has uid %q gid %q", ErrBackend, name, f[2], f[3])
			return true
		}
		shell := f[6]
		if shell == "" {
			shell = "/bin/sh" // passwd(5)
		}
		acct = Account{Username: name, UID: uid, GID: gid, Home: f[5], Shell: shell, Groups: []uint32{gid}}
		found = true
		return true
	})
	if err != nil {
		return Account{}, err
	}
	if bad != nil {
		return Account{}, bad
	}
	if !found {
		return Account{}, fmt.Errorf("%w: %q (in the target's /etc/passwd)", ErrUnknownAccount, name)
	}
	gr, err := d.read("group")
	if err != nil {
		return Account{}, err
	}
	err = lines(gr, 4, func(f []string) bool {
		gid, ok := parseID(f[2])
		if ok && slices.Contains(strings.Split(f[3], ","), name) && !slices.Contains(acct.Groups, gid) {
			acct.Groups = append(acct.Groups, gid)
		}
		return false
	})
	return acct, err
}

// LookupGroup returns the gid of the group name in the root's /etc/group.
func (d FilesDB) LookupGroup(name string) (uint32, error) {
	gr, err := d.read("group")
	if err != nil {
		return 0, err
	}
	var gid uint32
	found := false
	err = lines(gr, 4, func(f []string) bool {
		if f[0] != name {
			return false
		}
		gid, found = parseID(f[2])
		return true
	})
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%w: group %q (in the target's /etc/group)", ErrUnknownAccount, name)
	}
	return gid, nil
}
