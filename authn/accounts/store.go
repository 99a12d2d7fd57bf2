// Package accounts is winrmd's local account store: a file of accounts with
// a slow password hash (for Basic) and the NT hash (for NTLM), managed with
// `winrmd user`.
//
// # File format (version 1)
//
// UTF-8 text, LF line ends, at most MaxFileBytes bytes and MaxLineBytes per
// line. An empty file is an empty store; otherwise the first line is exactly
//
//	# winrmd account store v1
//
// and every further line is empty, a comment starting with '#', or one
// account:
//
//	NAME:$argon2id$v=19$m=MEM,t=TIME,p=LANES$SALT$HASH:NTHASH
//
// with these fields:
//
//   - NAME: 1..64 bytes, as the administrator gave it; see ValidName. Lookups
//     are case-insensitive (as Windows compares account names) and two names
//     that differ only in case are an error.
//   - The password hash in the PHC string format: argon2id version 19, memory
//     in KiB, passes and lanes in canonical decimal, salt and hash in unpadded
//     standard base64 (salt 8..64 bytes, hash 16..64 bytes).
//   - NTHASH: MD4 of the UTF-16LE password, 32 lower-case hex digits. It is
//     password-equivalent for NTLM: whoever reads it can log on.
//
// Anything else (a missing or different first line, a fourth field, upper-case
// hex, CR, a parameter out of bounds) makes the whole file unusable: the store
// refuses to guess.
//
// # Protection
//
// Because of the NT hashes the file must be a regular file owned by the
// daemon's effective uid with no permission bits for group or others (0600);
// anything else is refused at every load, not only at start. Writes replace
// the file atomically (temporary file in the same directory, fsync, rename,
// fsync of the directory), so a reader sees the old or the new file, never a
// mix; they run under an flock(2) of the directory so two `winrmd user`
// commands cannot lose each other's change. A rewrite drops comments, and a
// symbolic link at the path is replaced by the file.
//
// # Reloading
//
// Every access stats the path (one syscall) and reloads when the device,
// inode, size, modification or change time differ, so changes made by
// `winrmd user` reach a running daemon without a signal. A file that turns
// bad (wrong owner or mode, a parse error) fails closed: every access returns
// an error wrapping authn.ErrBackend until it is fixed. A removed file is an
// empty store.
package accounts

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
)

// ErrExists is returned by Add for a name already in the store.
var ErrExists = errors.New("account already exists")

// Store is the local account store. It is safe for concurrent use.
type Store struct {
	path   string
	params Params
	sem    chan struct{} // bounds concurrent argon2 runs (memory)
	dummy  *phc          // verified against for unknown names

	derives atomic.Int64 // argon2 runs by Verify (tests)

	mu   sync.RWMutex
	snap *snapshot

	wmu sync.Mutex // serialises this process's writers
}

// snapshot is one load of the file.
type snapshot struct {
	stamp   stamp
	byName  map[string]*record // fold(name)
	records []*record          // file order
	err     error              // load failure: the store fails closed
}

// stamp identifies a version of the file cheaply.
type stamp struct {
	exists    bool
	dev, ino  uint64
	size      int64
	mtimeSec  int64
	mtimeNsec int64
	ctimeSec  int64
	ctimeNsec int64
	mode, uid uint32
}

func stampOf(st *syscall.Stat_t) stamp {
	return stamp{
		exists: true,
		dev:    uint64(st.Dev), ino: uint64(st.Ino), size: st.Size,
		mtimeSec: int64(st.Mtim.Sec), mtimeNsec: int64(st.Mtim.Nsec),
		ctimeSec: int64(st.Ctim.Sec), ctimeNsec: int64(st.Ctim.Nsec),
		mode: uint32(st.Mode), uid: st.Uid,
	}
}

// Open returns the store at path, loading it now. A missing file is an
// empty store (the first Add creates it); a file with the wrong owner or
// mode, or that does not parse, is an error.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("accounts: empty store path")
	}
	s := &Store{
		path: path,
		sem:  make(chan struct{}, min(max(runtime.GOMAXPROCS(0), 1), 4)),
	}
	s.setParams(DefaultParams)
	if _, err := s.current(); err != nil {
		return nil, err
	}
	return s, nil
}

// setParams sets the cost of new hashes and of the dummy hash.
func (s *Store) setParams(p Params) {
	s.params = p
	s.dummy = &phc{memory: p.MemoryKiB, time: p.Time, threads: p.Threads,
		salt: make([]byte, p.SaltBytes), key: make([]byte, p.KeyBytes)}
}

// Path is the file the store reads and writes.
func (s *Store) Path() string { return s.path }

// Verify checks password for user. It returns nil, or an error wrapping
// authn.ErrUnknownAccount, authn.ErrBadCredentials or authn.ErrBackend.
// Unknown names cost one hash too, and the comparison is constant-time, so
// timing does not tell which names exist.
func (s *Store) Verify(user, password string) error {
	snap, err := s.current()
	if err != nil {
		return err
	}
	r := snap.byName[fold(user)]
	h := s.dummy
	if r != nil {
		h = r.hash
	}
	s.sem <- struct{}{}
	key := h.derive(password)
	<-s.sem
	s.derives.Add(1)
	ok := subtle.ConstantTimeCompare(key, h.key) == 1
	clear(key)
	switch {
	case r == nil:
		return authn.ErrUnknownAccount
	case !ok || len(password) > MaxPasswordBytes:
		return authn.ErrBadCredentials
	}
	return nil
}

// NTHash returns the NT hash of user (16 bytes, a copy), or an error
// wrapping authn.ErrUnknownAccount or authn.ErrBackend. It satisfies
// ntlm.NTHashSource.
func (s *Store) NTHash(user string) ([]byte, error) {
	snap, err := s.current()
	if err != nil {
		return nil, err
	}
	r := snap.byName[fold(user)]
	if r == nil {
		return nil, authn.ErrUnknownAccount
	}
	return slices.Clone(r.nt[:]), nil
}

// Contains reports whether user is in the store, or why the store cannot
// say (an error wrapping authn.ErrBackend).
func (s *Store) Contains(user string) (bool, error) {
	snap, err := s.current()
	if err != nil {
		return false, err
	}
	return snap.byName[fold(user)] != nil, nil
}

// Has reports whether user is in the store (false when the store is
// unusable; use Contains to tell).
func (s *Store) Has(user string) bool {
	ok, _ := s.Contains(user)
	return ok
}

// List returns the account names as stored, sorted case-insensitively (nil
// when the store is unusable).
func (s *Store) List() []string {
	snap, err := s.current()
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(snap.records))
	for _, r := range snap.records {
		names = append(names, r.name)
	}
	slices.SortFunc(names, func(a, b string) int {
		if c := strings.Compare(fold(a), fold(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return names
}

// Add creates an account; it fails with ErrExists if the name (in any case)
// is taken.
func (s *Store) Add(user, password string) error {
	r, err := s.newRecord(user, password)
	if err != nil {
		return err
	}
	return s.modify(func(recs []*record) ([]*record, error) {
		if i := index(recs, user); i >= 0 {
			return nil, fmt.Errorf("%w: %q", ErrExists, recs[i].name)
		}
		return append(recs, r), nil
	})
}

// SetPassword replaces the password of an existing account (error wrapping
// authn.ErrUnknownAccount otherwise). The name keeps its stored spelling.
func (s *Store) SetPassword(user, password string) error {
	r, err := s.newRecord(user, password)
	if err != nil {
		return err
	}
	return s.modify(func(recs []*record) ([]*record, error) {
		i := index(recs, user)
		if i < 0 {
			return nil, fmt.Errorf("%w: %q", authn.ErrUnknownAccount, user)
		}
		r.name = recs[i].name
		recs[i] = r
		return recs, nil
	})
}

// Delete removes an account (error wrapping authn.ErrUnknownAccount if there
// is none).
func (s *Store) Delete(user string) error {
	return s.modify(func(recs []*record) ([]*record, error) {
		i := index(recs, user)
		if i < 0 {
			return nil, fmt.Errorf("%w: %q", authn.ErrUnknownAccount, user)
		}
		return slices.Delete(recs, i, i+1), nil
	})
}

func index(recs []*record, user string) int {
	k := fold(user)
	return slices.IndexFunc(recs, func(r *record) bool { return fold(r.name) == k })
}

func (s *Store) newRecord(user, password string) (*record, error) {
	if err := ValidName(user); err != nil {
		return nil, err
	}
	if err := ValidPassword(password); err != nil {
		return nil, err
	}
	s.sem <- struct{}{}
	h, err := newPHC(password, s.params)
	<-s.sem
	if err != nil {
		return nil, err
	}
	return &record{name: user, hash: h, nt: [16]byte(ntlm.NTHash(password))}, nil
}

// current returns the snapshot for the file as it is now, reloading it if
// it changed.
func (s *Store) current() (*snapshot, error) {
	st, err := statPath(s.path)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	snap := s.snap
	s.mu.RUnlock()
	if snap == nil || snap.stamp != st {
		s.mu.Lock()
		snap = s.snap
		if snap == nil || snap.stamp != st {
			snap = load(s.path)
			s.snap = snap
		}
		s.mu.Unlock()
	}
	if snap.err != nil {
		return nil, snap.err
	}
	return snap, nil
}

// Version identifies the file's current version cheaply (one stat): it
// changes whenever the file is rewritten. Connections that verified a
// password against the store verify again when it changes.
func (s *Store) Version() string {
	st, err := statPath(s.path)
	if err != nil {
		return "error"
	}
	return string(st.appendTo(make([]byte, 0, 96)))
}

// appendTo writes every field of the stamp, for Version: a request asks
// for it each time (Basic's re-check), so strconv rather than fmt's
// reflection.
func (s stamp) appendTo(b []byte) []byte {
	if !s.exists {
		return append(b, '-')
	}
	for _, v := range [...]int64{int64(s.dev), int64(s.ino), s.size, s.mtimeSec, s.mtimeNsec, s.ctimeSec, s.ctimeNsec, int64(s.mode), int64(s.uid)} {
		b = strconv.AppendInt(b, v, 10)
		b = append(b, '.')
	}
	return b
}

func statPath(path string) (stamp, error) {
	var st syscall.Stat_t
	err := syscall.Stat(path, &st)
	if errors.Is(err, syscall.ENOENT) {
		return stamp{}, nil
	}
	if err != nil {
		return stamp{}, fmt.Errorf("%w: account store %s: %v", authn.ErrBackend, path, err)
	}
	return stampOf(&st), nil
}

// load reads and checks the file; the snapshot carries any error.
func load(path string) *snapshot {
	st, data, err := readFile(path)
	snap := &snapshot{stamp: st, byName: make(map[string]*record)}
	if err != nil {
		snap.err = fmt.Errorf("%w: account store %s: %v", authn.ErrBackend, path, err)
		return snap
	}
	recs, err := parse(data)
	if err != nil {
		snap.err = fmt.Errorf("%w: account store %s: %v", authn.ErrBackend, path, err)
		return snap
	}
	snap.records = recs
	for _, r := range recs {
		snap.byName[fold(r.name)] = r
	}
	return snap
}

// readFile opens path without blocking (a FIFO cannot hang the daemon),
// checks the opened file's type, owner and mode, and reads it with a bound.
// A missing file reads as empty.
func readFile(path string) (stamp, []byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if errors.Is(err, syscall.ENOENT) {
		return stamp{}, nil, nil
	}
	if err != nil {
		return stamp{}, nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return stamp{}, nil, err
	}
	sp := stampOf(&st)
	if err := checkOwnerMode(&st); err != nil {
		return sp, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return sp, nil, err
	}
	if len(data) > MaxFileBytes {
		return sp, nil, fmt.Errorf("larger than %d bytes", MaxFileBytes)
	}
	return sp, data, nil
}

func checkOwnerMode(st *syscall.Stat_t) error {
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return errors.New("not a regular file")
	}
	if euid := uint32(os.Geteuid()); st.Uid != euid {
		return fmt.Errorf("owned by uid %d, not by the daemon's uid %d (it holds password-equivalent NT hashes)", st.Uid, euid)
	}
	if perm := st.Mode & 0o7777; perm&0o077 != 0 {
		return fmt.Errorf("mode %04o gives group or others access to password-equivalent NT hashes (chmod 600)", perm)
	}
	return nil
}

// modify applies fn to the file's records under the write locks and writes
// the result atomically.
func (s *Store) modify(fn func([]*record) ([]*record, error)) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	// Read the file afresh: another process may have changed it.
	_, data, err := readFile(s.path)
	if err != nil {
		return fmt.Errorf("account store %s: %w", s.path, err)
	}
	recs, err := parse(data)
	if err != nil {
		return fmt.Errorf("account store %s: %w", s.path, err)
	}
	recs, err = fn(recs)
	if err != nil {
		return err
	}
	out := format(recs)
	if len(out) > MaxFileBytes {
		return fmt.Errorf("account store %s: would exceed %d bytes", s.path, MaxFileBytes)
	}
	if err := writeAtomic(s.path, out); err != nil {
		return fmt.Errorf("account store %s: %w", s.path, err)
	}
	s.mu.Lock()
	s.snap = nil // the next access loads what was written
	s.mu.Unlock()
	return nil
}

// lockDir takes an exclusive flock on dir.
func lockDir(dir string) (func(), error) {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	for {
		err = syscall.Flock(fd, syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { syscall.Close(fd) }, nil
}

// writeAtomic replaces path with data: a 0600 temporary file in the same
// directory, fsync, rename over path, fsync of the directory.
func writeAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
