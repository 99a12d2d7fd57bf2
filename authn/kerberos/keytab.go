package kerberos

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
)

// Keytab is the service's keytab file, re-read when it changes on disk
// (a key rotation with ktutil or `net ads keytab` needs no restart).
type Keytab struct {
	path string

	mu      sync.Mutex
	kt      *keytab.Keytab
	modTime time.Time
	size    int64
	checked time.Time
}

// MaxKeytabBytes bounds the keytab file.
const MaxKeytabBytes = 4 << 20

// keytabRecheck is how often the file's mtime is looked at.
const keytabRecheck = 2 * time.Second

// OpenKeytab loads path. It fails when the file is missing, unreadable or
// holds no keys.
func OpenKeytab(path string) (*Keytab, error) {
	k := &Keytab{path: path}
	if _, err := k.load(); err != nil {
		return nil, err
	}
	return k, nil
}

// NewKeytab wraps an in-memory keytab (tests).
func NewKeytab(kt *keytab.Keytab) *Keytab { return &Keytab{kt: kt} }

func (k *Keytab) load() (*keytab.Keytab, error) {
	fi, err := os.Stat(k.path)
	if err != nil {
		return nil, fmt.Errorf("kerberos: keytab: %w", err)
	}
	if fi.Size() > MaxKeytabBytes {
		return nil, fmt.Errorf("kerberos: keytab %s: %d bytes exceeds %d", k.path, fi.Size(), MaxKeytabBytes)
	}
	b, err := os.ReadFile(k.path)
	if err != nil {
		return nil, fmt.Errorf("kerberos: keytab: %w", err)
	}
	kt := keytab.New()
	if err := kt.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("kerberos: keytab %s: %v", k.path, err)
	}
	if len(kt.Entries) == 0 {
		return nil, fmt.Errorf("kerberos: keytab %s holds no keys", k.path)
	}
	k.kt, k.modTime, k.size = kt, fi.ModTime(), fi.Size()
	return kt, nil
}

// current returns the keytab, re-reading the file when it changed. A
// keytab that became unreadable keeps the last good copy (and says so).
func (k *Keytab) current() (*keytab.Keytab, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.path == "" {
		return k.kt, nil
	}
	now := time.Now()
	if now.Sub(k.checked) < keytabRecheck && k.kt != nil {
		return k.kt, nil
	}
	k.checked = now
	fi, err := os.Stat(k.path)
	if err == nil && fi.ModTime().Equal(k.modTime) && fi.Size() == k.size && k.kt != nil {
		return k.kt, nil
	}
	kt, err := k.load()
	if err != nil {
		if k.kt != nil {
			return k.kt, nil
		}
		return nil, fmt.Errorf("%v: %w", err, authn.ErrBackend)
	}
	return kt, nil
}

// Principals lists the service principals of the keytab ("HTTP/host@R").
func (k *Keytab) Principals() []string {
	kt, err := k.current()
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range kt.Entries {
		p := strings.Join(e.Principal.Components, "/") + "@" + e.Principal.Realm
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// errNoKey says why no key decrypts a ticket, in an administrator's terms.
type keyLookup struct {
	key types.EncryptionKey
	err error
}

// lookup finds the key for sname@realm, kvno, etype; its error says which
// of the three did not match (the common keytab mistakes).
func (k *Keytab) lookup(sname types.PrincipalName, realm string, kvno int, etype int32) keyLookup {
	kt, err := k.current()
	if err != nil {
		return keyLookup{err: err}
	}
	name := strings.Join(sname.NameString, "/") + "@" + realm
	var havePrinc, haveKVNO bool
	var kvnos []uint32
	var etypes []int32
	var best types.EncryptionKey
	var bestTime time.Time
	for _, e := range kt.Entries {
		if e.Principal.Realm != realm || !slices.Equal(e.Principal.Components, sname.NameString) {
			continue
		}
		havePrinc = true
		if kvno != 0 && e.KVNO != uint32(kvno) {
			kvnos = append(kvnos, e.KVNO)
			continue
		}
		haveKVNO = true
		if e.Key.KeyType != etype {
			etypes = append(etypes, e.Key.KeyType)
			continue
		}
		if len(best.KeyValue) == 0 || e.Timestamp.After(bestTime) {
			best, bestTime = e.Key, e.Timestamp
		}
	}
	switch {
	case len(best.KeyValue) > 0:
		return keyLookup{key: best}
	case !havePrinc:
		return keyLookup{err: fmt.Errorf("kerberos: no keytab entry for the ticket's service principal %s (keytab has %s): %w", name, strings.Join(k.Principals(), ", "), authn.ErrBadCredentials)}
	case !haveKVNO:
		return keyLookup{err: fmt.Errorf("kerberos: kvno mismatch for %s: ticket kvno %d, keytab has %v (re-export the keytab after a password change): %w", name, kvno, kvnos, authn.ErrBadCredentials)}
	default:
		return keyLookup{err: fmt.Errorf("kerberos: no key of enctype %d for %s kvno %d (keytab has enctypes %v): %w", etype, name, kvno, etypes, authn.ErrBadCredentials)}
	}
}
