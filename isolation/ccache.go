package isolation

// Delegated Kerberos credentials for a shell. This runs as root before the
// worker starts, so it is small and loud (every step logged by the caller,
// every failure refuses the shell):
//
//	/run/winrmd/krb5cc/<daemon pid>    root 0711: traversable, not listable
//	    <shell>-<random>/              the user's, 0700: kinit inside the
//	                                   shell may replace its cache here
//	        ccache                     the user's, 0600, KRB5CCNAME=FILE:…
//
// The shell's directory and file are created with O_EXCL/Mkdir (never an
// existing path), owned by the account before anything is written, and
// removed with the shell (RemoveAll works on directory descriptors and
// does not follow symbolic links the user may have put there). Only the
// account (and root) can read the ticket; other shells of other users and
// other processes of the daemon never see it. In lab mode the directory
// is under the temporary directory, owned by the daemon's user.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// CCacheRoot is where shells' credential caches live (root-run daemon).
const CCacheRoot = "/run/winrmd/krb5cc"

// maxCCacheBytes bounds a delegated credential cache.
const maxCCacheBytes = 1 << 20

func ccacheBase() string {
	if os.Geteuid() == 0 {
		return CCacheRoot
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("winrmd-krb5cc-%d", os.Geteuid()))
}

// ccacheRoot is this daemon's directory: daemons running side by side
// (tests) never touch each other's caches.
func ccacheRoot() string { return filepath.Join(ccacheBase(), strconv.Itoa(os.Getpid())) }

// checkCCacheRoot creates the root directory if needed and refuses one that
// is not ours or that others could write to (a squatted path).
func checkCCacheRoot(root string) error {
	if err := os.MkdirAll(root, 0o711); err != nil {
		return err
	}
	for _, d := range []string{ccacheBase(), root} {
		var st syscall.Stat_t
		if err := syscall.Lstat(d, &st); err != nil {
			return err
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
			return fmt.Errorf("%s: not a directory of uid %d without group/other write (mode %o, uid %d)", d, os.Geteuid(), st.Mode, st.Uid)
		}
	}
	return nil
}

// writeCCache stores the credentials for acct and returns the shell's
// directory and the KRB5CCNAME value.
func writeCCache(acct Account, shellID string, cc []byte, chown bool) (dir, name string, err error) {
	if len(cc) == 0 || len(cc) > maxCCacheBytes {
		return "", "", fmt.Errorf("isolation: delegated credential cache of %d bytes", len(cc))
	}
	root := ccacheRoot()
	if err := checkCCacheRoot(root); err != nil {
		return "", "", fmt.Errorf("isolation: credential cache directory: %w", err)
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", "", err
	}
	id := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' {
			return r
		}
		return -1
	}, shellID)
	if len(id) > 40 {
		id = id[:40]
	}
	dir = filepath.Join(root, id+"-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("isolation: credential cache directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	if chown {
		if err := os.Chown(dir, int(acct.UID), int(acct.GID)); err != nil {
			return "", "", fmt.Errorf("isolation: credential cache directory: %w", err)
		}
	}
	path := filepath.Join(dir, "ccache")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("isolation: credential cache: %w", err)
	}
	if chown {
		if err := f.Chown(int(acct.UID), int(acct.GID)); err != nil {
			f.Close()
			return "", "", fmt.Errorf("isolation: credential cache: %w", err)
		}
	}
	_, werr := f.Write(cc)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return "", "", fmt.Errorf("isolation: credential cache: %w", werr)
	}
	return dir, "FILE:" + path, nil
}

// removeCCache destroys a shell's credential cache directory.
func removeCCache(dir string) error {
	if dir == "" {
		return nil
	}
	if !strings.HasPrefix(dir, ccacheRoot()+string(filepath.Separator)) {
		return errors.New("isolation: refusing to remove " + dir)
	}
	return os.RemoveAll(dir)
}

// SweepCCaches removes the credential caches of daemons that are gone (a
// daemon that was killed cannot have removed its shells'). Called at start.
func SweepCCaches() error {
	base := ccacheBase()
	ents, err := os.ReadDir(base)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", e.Name())); err == nil && pid != os.Getpid() {
			continue // a live daemon's
		}
		errs = append(errs, os.RemoveAll(filepath.Join(base, e.Name())))
	}
	return errors.Join(errs...)
}
