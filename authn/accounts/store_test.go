package accounts

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn"
)

// testParams keep unit tests fast; TestDefaultCost and the benchmark use the
// real parameters.
var testParams = Params{MemoryKiB: 64, Time: 1, Threads: 1, SaltBytes: 16, KeyBytes: 32}

func openTest(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.setParams(testParams)
	return s
}

func newStore(t testing.TB) (*Store, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "accounts")
	return openTest(t, p), p
}

func TestStoreBasics(t *testing.T) {
	s, path := newStore(t)
	if len(s.List()) != 0 || s.Has("alice") {
		t.Fatal("new store not empty")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("Open created the file")
	}
	if err := s.Add("Alice", "Password"); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify("Alice", "Password"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := s.Verify("alice", "Password"); err != nil {
		t.Fatalf("case-insensitive name: %v", err)
	}
	if err := s.Verify("ALICE", "password"); !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := s.Verify("ALICE", "Password\x00"); !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("password with suffix: %v", err)
	}
	if err := s.Verify("bob", "Password"); !errors.Is(err, authn.ErrUnknownAccount) {
		t.Fatalf("unknown user: %v", err)
	}
	if err := s.Verify("", ""); !errors.Is(err, authn.ErrUnknownAccount) {
		t.Fatalf("empty user: %v", err)
	}
	nt, err := s.NTHash("aLiCe")
	if err != nil || hex.EncodeToString(nt) != "a4f49c406510bdcab6824ee7c30fd852" {
		t.Fatalf("NTHash = %x, %v", nt, err)
	}
	nt[0] ^= 0xff // a copy: the store is unaffected
	if nt2, _ := s.NTHash("alice"); hex.EncodeToString(nt2) != "a4f49c406510bdcab6824ee7c30fd852" {
		t.Fatal("NTHash returned the store's own slice")
	}
	if _, err := s.NTHash("bob"); !errors.Is(err, authn.ErrUnknownAccount) {
		t.Fatalf("NTHash unknown: %v", err)
	}
	if err := s.Add("ALICE", "x"); !errors.Is(err, ErrExists) {
		t.Fatalf("Add existing (other case): %v", err)
	}
	if err := s.Add("bob", "hunter2"); err != nil {
		t.Fatal(err)
	}
	if got := s.List(); !slices.Equal(got, []string{"Alice", "bob"}) {
		t.Fatalf("List = %q", got)
	}
	if err := s.SetPassword("BOB", "new pass"); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify("bob", "hunter2"); !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("old password after SetPassword: %v", err)
	}
	if err := s.Verify("bob", "new pass"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if got := s.List(); !slices.Equal(got, []string{"Alice", "bob"}) {
		t.Fatalf("SetPassword changed the spelling: %q", got)
	}
	if err := s.SetPassword("carol", "x"); !errors.Is(err, authn.ErrUnknownAccount) {
		t.Fatalf("SetPassword unknown: %v", err)
	}
	if err := s.Delete("alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("alice"); !errors.Is(err, authn.ErrUnknownAccount) {
		t.Fatalf("Delete twice: %v", err)
	}
	if s.Has("alice") || !s.Has("bob") {
		t.Fatal("Delete removed the wrong account")
	}
	for _, bad := range []struct{ u, p string }{{"", "x"}, {"a:b", "x"}, {"a", ""}, {"a", "a\x00b"}, {`C\a`, "x"}} {
		if err := s.Add(bad.u, bad.p); err == nil {
			t.Errorf("Add(%q, %q) accepted", bad.u, bad.p)
		}
	}
}

func TestStoreFileFormat(t *testing.T) {
	s, path := newStore(t)
	if err := s.Add("alice", "Password"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if lines[0] != Header {
		t.Fatalf("first line %q", lines[0])
	}
	last := lines[len(lines)-1]
	f := strings.Split(last, ":")
	if len(f) != 3 || f[0] != "alice" || !strings.HasPrefix(f[1], "$argon2id$v=19$m=64,t=1,p=1$") || f[2] != "a4f49c406510bdcab6824ee7c30fd852" {
		t.Fatalf("record %q", last)
	}
	if strings.Contains(string(data), "Password") {
		t.Fatal("password in the file")
	}
	// Salts are random: the same password hashes differently.
	if err := s.Add("bob", "Password"); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	lines = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	ha := strings.Split(lines[len(lines)-2], ":")[1]
	hb := strings.Split(lines[len(lines)-1], ":")[1]
	if ha == hb {
		t.Fatal("two accounts with one password share a hash")
	}
	// No temporary files left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %q", names)
	}
}

func TestStoreCreatesDirectory(t *testing.T) {
	p := filepath.Join(t.TempDir(), "etc", "winrmd", "accounts")
	s := openTest(t, p)
	if err := s.Add("alice", "pw"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Dir(p))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v %v", st.Mode(), err)
	}
}

func TestStorePermissionRefusal(t *testing.T) {
	_, path := newStore(t)
	good := Header + "\n" + goodLine + "\n"
	for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o602, 0o644, 0o666, 0o610} {
		t.Run(mode.String(), func(t *testing.T) {
			if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(path); err == nil || !errors.Is(err, authn.ErrBackend) {
				t.Fatalf("Open of a %v file: %v", mode, err)
			}
		})
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		os.Chmod(path, mode)
		if _, err := Open(path); err != nil {
			t.Fatalf("Open of a %v file: %v", mode, err)
		}
	}
	os.Chmod(path, 0o600)

	t.Run("other owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("chown needs root")
		}
		if err := os.Chown(path, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		defer os.Chown(path, 0, 0)
		_, err := Open(path)
		if err == nil || !strings.Contains(err.Error(), "owned by uid 12345") {
			t.Fatalf("Open of a file owned by another uid: %v", err)
		}
		// Writers refuse too: they must not take the file over.
		s := &Store{path: path, sem: make(chan struct{}, 1)}
		s.setParams(testParams)
		if err := s.Add("bob", "x"); err == nil {
			t.Fatal("Add replaced a file owned by another uid")
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := Open(t.TempDir()); err == nil {
			t.Fatal("Open of a directory")
		}
	})
	t.Run("fifo", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "fifo")
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Skip(err)
		}
		done := make(chan error, 1)
		go func() { _, err := Open(p); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("Open of a FIFO")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Open of a FIFO blocked")
		}
	})
	t.Run("symlink", func(t *testing.T) {
		l := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(path, l); err != nil {
			t.Fatal(err)
		}
		s, err := Open(l)
		if err != nil {
			t.Fatalf("Open through a symlink: %v", err)
		}
		if !s.Has("alice") {
			t.Fatal("symlinked store empty")
		}
	})
	t.Run("garbage", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "accounts")
		os.WriteFile(p, []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o600)
		if _, err := Open(p); err == nil {
			t.Fatal("Open of /etc/passwd-like file")
		}
	})
}

func TestStoreReload(t *testing.T) {
	daemon, path := newStore(t)
	cli := openTest(t, path) // another handle, as `winrmd user` would be
	if err := cli.Add("alice", "one"); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Verify("alice", "one"); err != nil {
		t.Fatalf("daemon did not see Add: %v", err)
	}
	if err := cli.SetPassword("alice", "two"); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Verify("alice", "two"); err != nil {
		t.Fatalf("daemon did not see SetPassword: %v", err)
	}
	if err := daemon.Verify("alice", "one"); !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("old password still works: %v", err)
	}
	// A change the daemon's own handle makes is seen by the other.
	if err := daemon.Add("bob", "b"); err != nil {
		t.Fatal(err)
	}
	if !cli.Has("bob") {
		t.Fatal("cli did not see daemon's Add")
	}
	if err := cli.Delete("alice"); err != nil {
		t.Fatal(err)
	}
	if daemon.Has("alice") {
		t.Fatal("daemon did not see Delete")
	}

	// Turning bad fails closed; fixing it recovers.
	os.Chmod(path, 0o644)
	if err := daemon.Verify("bob", "b"); !errors.Is(err, authn.ErrBackend) {
		t.Fatalf("group-readable file: %v", err)
	}
	if _, err := daemon.NTHash("bob"); !errors.Is(err, authn.ErrBackend) {
		t.Fatalf("NTHash on a bad file: %v", err)
	}
	if _, err := daemon.Contains("bob"); !errors.Is(err, authn.ErrBackend) {
		t.Fatalf("Contains on a bad file: %v", err)
	}
	if daemon.Has("bob") || daemon.List() != nil {
		t.Fatal("bad file still answers")
	}
	os.Chmod(path, 0o600)
	if err := daemon.Verify("bob", "b"); err != nil {
		t.Fatalf("after chmod 600: %v", err)
	}
	// A corrupt rewrite fails closed too.
	os.WriteFile(path, []byte(Header+"\nbob:garbage:x\n"), 0o600)
	if err := daemon.Verify("bob", "b"); !errors.Is(err, authn.ErrBackend) {
		t.Fatalf("corrupt file: %v", err)
	}
	// Removing the file empties the store.
	os.Remove(path)
	if err := daemon.Verify("bob", "b"); !errors.Is(err, authn.ErrUnknownAccount) {
		t.Fatalf("removed file: %v", err)
	}
	// An in-place rewrite of the same size is noticed (mtime/ctime).
	if err := cli.Add("carol", "c"); err != nil {
		t.Fatal(err)
	}
	if !daemon.Has("carol") {
		t.Fatal("daemon missed the new file")
	}
	data, _ := os.ReadFile(path)
	renamed := strings.Replace(string(data), "\ncarol:", "\ncarla:", 1)
	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	f.WriteAt([]byte(renamed), 0)
	f.Close()
	if daemon.Has("carol") || !daemon.Has("carla") {
		t.Fatal("daemon missed an in-place rewrite")
	}
}

func TestStoreConcurrent(t *testing.T) {
	s, path := newStore(t)
	for i := 0; i < 4; i++ {
		if err := s.Add(fmt.Sprintf("u%d", i), "pw"); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.Verify("u1", "pw"); err != nil {
					errs <- fmt.Errorf("Verify: %w", err)
					return
				}
				if _, err := s.NTHash("u2"); err != nil {
					errs <- fmt.Errorf("NTHash: %w", err)
					return
				}
				if len(s.List()) < 4 {
					errs <- errors.New("List lost accounts")
					return
				}
				// A raw reader never sees a partial file.
				data, err := os.ReadFile(path)
				if err != nil {
					errs <- err
					return
				}
				if _, err := parse(data); err != nil {
					errs <- fmt.Errorf("reader saw a partial file: %w", err)
					return
				}
			}
		}()
	}
	// Writers through separate handles (separate "processes") do not lose
	// each other's changes.
	var ww sync.WaitGroup
	for w := 0; w < 4; w++ {
		ww.Add(1)
		go func() {
			defer ww.Done()
			h := openTest(t, path)
			for i := 0; i < 10; i++ {
				name := fmt.Sprintf("w%d-%d", w, i)
				if err := h.Add(name, "x"); err != nil {
					errs <- err
					return
				}
				if err := h.SetPassword("u3", fmt.Sprintf("pw%d", i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	ww.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := s.List()
	if len(got) != 4+40 {
		t.Fatalf("%d accounts after concurrent writers, want 44", len(got))
	}
	if !sort.SliceIsSorted(got, func(i, j int) bool { return fold(got[i]) < fold(got[j]) }) {
		t.Fatal("List not sorted")
	}
}

func TestStoreLimits(t *testing.T) {
	s, path := newStore(t)
	long := strings.Repeat("p", MaxPasswordBytes+1)
	if err := s.Add("alice", "pw"); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify("alice", long); !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("over-long password: %v", err)
	}
	// A file over the limit is refused.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Truncate(MaxFileBytes + 1)
	f.Close()
	if err := s.Verify("alice", "pw"); !errors.Is(err, authn.ErrBackend) {
		t.Fatalf("oversized file: %v", err)
	}
}

// TestDummyHash checks that an unknown name costs one hash with the real
// parameters, as a known name does, so timing does not reveal which names
// exist. The timings are logged, not asserted: a shared machine is too noisy.
func TestDummyHash(t *testing.T) {
	s, _ := newStore(t)
	s.setParams(DefaultParams)
	if err := s.Add("alice", "correct horse"); err != nil {
		t.Fatal(err)
	}
	d := s.dummy
	if d.memory != DefaultParams.MemoryKiB || d.time != DefaultParams.Time || d.threads != DefaultParams.Threads ||
		len(d.salt) != DefaultParams.SaltBytes || len(d.key) != DefaultParams.KeyBytes {
		t.Fatalf("dummy hash parameters %s differ from the defaults", d)
	}
	for _, u := range []string{"nobody", "", "ALICE", strings.Repeat("x", 500)} {
		before := s.derives.Load()
		s.Verify(u, "wrong")
		if s.derives.Load() != before+1 {
			t.Fatalf("Verify(%q) ran %d hashes, want 1", u, s.derives.Load()-before)
		}
	}
	if testing.Short() {
		return
	}
	minOf := func(f func()) time.Duration {
		best := time.Hour
		for i := 0; i < 5; i++ {
			start := time.Now()
			f()
			best = min(best, time.Since(start))
		}
		return best
	}
	known := minOf(func() { s.Verify("alice", "wrong") })
	unknown := minOf(func() { s.Verify("nobody", "wrong") })
	t.Logf("fastest verify: known name %v, unknown name %v", known, unknown)
}

func BenchmarkStoreVerify(b *testing.B) {
	p := filepath.Join(b.TempDir(), "accounts")
	s, err := Open(p)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Add("alice", "correct horse battery staple"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Verify("alice", "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
