package authn

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func filesRoot(t *testing.T, passwd, group string) string {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(passwd), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte(group), 0o644)
	return root
}

func TestFilesDB(t *testing.T) {
	root := filesRoot(t,
		"root:x:0:0:root:/root:/bin/sh\n# comment\n+nis\nbad:line\nalice:x:1001:1001:Alice:/home/alice:\nbob:x:1002:oops::/:/bin/sh\n",
		"root:x:0:\nwinrm-remote-users:x:999:carol,alice\nalice:x:1001:\nstaff:x:50:alice\n")
	db := FilesDB{Root: func() (string, error) { return root, nil }}
	a, err := db.LookupUser("alice")
	if err != nil {
		t.Fatal(err)
	}
	if a.UID != 1001 || a.GID != 1001 || a.Home != "/home/alice" || a.Shell != "/bin/sh" || !slices.Equal(a.Groups, []uint32{1001, 999, 50}) {
		t.Errorf("alice: %+v", a)
	}
	if _, err := db.LookupUser("nobody-here"); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := db.LookupUser("bob"); !errors.Is(err, ErrBackend) {
		t.Errorf("bad gid: %v", err)
	}
	if g, err := db.LookupGroup("winrm-remote-users"); err != nil || g != 999 {
		t.Errorf("group: %d %v", g, err)
	}
	if _, err := db.LookupGroup("nope"); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("unknown group: %v", err)
	}
}

// A symbolic link inside the other root resolves inside it: it cannot
// point the daemon at its own /etc/shadow or passwd.
func TestFilesDBSymlinkStaysInRoot(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(filepath.Join(root, "real"), 0o755)
	os.WriteFile(filepath.Join(root, "real/passwd"), []byte("inside:x:5:5::/:/bin/sh\n"), 0o644)
	os.Symlink("/real/passwd", filepath.Join(root, "etc/passwd"))
	os.Symlink("/etc/group", filepath.Join(root, "etc/group")) // absolute: must not reach the host's
	db := FilesDB{Root: func() (string, error) { return root, nil }}
	if a, err := db.LookupUser("inside"); err == nil {
		t.Fatalf("found %+v although etc/group is a dangling link inside the root", a)
	} else if !errors.Is(err, ErrBackend) {
		t.Errorf("dangling group link: %v", err)
	}
	os.WriteFile(filepath.Join(root, "real/group"), []byte("g:x:7:inside\n"), 0o644)
	os.Remove(filepath.Join(root, "etc/group"))
	os.Symlink("../real/group", filepath.Join(root, "etc/group"))
	a, err := db.LookupUser("inside")
	if err != nil || a.UID != 5 || !slices.Contains(a.Groups, 7) {
		t.Errorf("links inside the root: %+v %v", a, err)
	}
	if _, err := db.LookupUser("root"); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("the host's root leaked through: %v", err)
	}
}

func TestFilesDBLimit(t *testing.T) {
	root := filesRoot(t, strings.Repeat("x", MaxAccountFileBytes+10), "")
	db := FilesDB{Root: func() (string, error) { return root, nil }}
	if _, err := db.LookupUser("x"); !errors.Is(err, ErrBackend) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized passwd: %v", err)
	}
}
