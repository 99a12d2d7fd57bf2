package accounts

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/winrmd/winrmd/authn"
)

// Limits of the file format.
const (
	MaxFileBytes     = 16 << 20 // a larger file is refused
	MaxLineBytes     = 1024     // a longer line is refused
	MaxNameBytes     = 64       // account names
	MaxPasswordBytes = 1024     // passwords given to Add and SetPassword
)

// Header is the first line of every non-empty store file.
const Header = "# winrmd account store v1"

// Bounds on argon2id parameters read from a file. They keep a corrupt or
// hostile file from making every logon allocate gigabytes.
const (
	minMemoryKiB = 8
	maxMemoryKiB = 1 << 20 // 1 GiB
	maxTime      = 32
	maxThreads   = 64
	minSaltBytes = 8
	maxSaltBytes = 64
	minKeyBytes  = 16
	maxKeyBytes  = 64
)

// Params are argon2id cost parameters.
type Params struct {
	MemoryKiB uint32
	Time      uint32
	Threads   uint8
	SaltBytes int
	KeyBytes  int
}

// DefaultParams are OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): a
// logon costs tens of milliseconds and bounded memory, and Store limits how
// many run at once.
var DefaultParams = Params{MemoryKiB: 19 * 1024, Time: 2, Threads: 1, SaltBytes: 16, KeyBytes: 32}

// phc is a parsed "$argon2id$v=19$m=..,t=..,p=..$salt$key" field.
type phc struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

var b64 = base64.RawStdEncoding.Strict()

func (h *phc) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		h.memory, h.time, h.threads, b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

// derive runs argon2id over password with h's parameters and salt.
func (h *phc) derive(password string) []byte {
	return argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
}

func newPHC(password string, p Params) (*phc, error) {
	salt := make([]byte, p.SaltBytes)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	h := &phc{memory: p.MemoryKiB, time: p.Time, threads: p.Threads, salt: salt, key: make([]byte, p.KeyBytes)}
	h.key = h.derive(password)
	return h, nil
}

func parsePHC(s string) (*phc, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" {
		return nil, errors.New("password hash: not $argon2id$v=..$m=..,t=..,p=..$salt$hash")
	}
	if parts[1] != "argon2id" {
		return nil, errors.New("password hash: algorithm is not argon2id")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, errors.New("password hash: unsupported argon2 version")
	}
	ps := strings.Split(parts[3], ",")
	if len(ps) != 3 {
		return nil, errors.New("password hash: parameters are not m=N,t=N,p=N")
	}
	m, err1 := decimalParam(ps[0], "m=", minMemoryKiB, maxMemoryKiB)
	t, err2 := decimalParam(ps[1], "t=", 1, maxTime)
	p, err3 := decimalParam(ps[2], "p=", 1, maxThreads)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("password hash: %w", err)
	}
	if m < 8*p {
		return nil, errors.New("password hash: m is less than 8*p")
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < minSaltBytes || len(salt) > maxSaltBytes {
		return nil, fmt.Errorf("password hash: salt is not %d..%d bytes of unpadded base64", minSaltBytes, maxSaltBytes)
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < minKeyBytes || len(key) > maxKeyBytes {
		return nil, fmt.Errorf("password hash: hash is not %d..%d bytes of unpadded base64", minKeyBytes, maxKeyBytes)
	}
	return &phc{memory: uint32(m), time: uint32(t), threads: uint8(p), salt: salt, key: key}, nil
}

// decimalParam parses "k=N" with N canonical decimal in [lo, hi].
func decimalParam(s, prefix string, lo, hi uint64) (uint64, error) {
	v, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return 0, fmt.Errorf("expected %s", prefix)
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || strconv.FormatUint(n, 10) != v || n < lo || n > hi {
		return 0, fmt.Errorf("%s must be %d..%d", prefix, lo, hi)
	}
	return n, nil
}

// record is one account.
type record struct {
	name string // as given
	hash *phc
	nt   [16]byte
}

func (r *record) line() string {
	return r.name + ":" + r.hash.String() + ":" + hex.EncodeToString(r.nt[:])
}

// ValidName reports why name cannot be an account name, or nil. Names are
// 1..MaxNameBytes bytes of UTF-8, exactly what authn.MapName keeps as a bare
// local name (so no ':', '\\', '/', '@', control or invisible characters, no
// leading '-' or surrounding spaces), and do not start with '#'.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty account name")
	case len(name) > MaxNameBytes:
		return fmt.Errorf("account name longer than %d bytes", MaxNameBytes)
	case name[0] == '#':
		return errors.New("account name starts with '#'")
	case authn.MapName(name, "") != name:
		return errors.New(`account name contains ':', '\', '/', '@', a control or invisible character, surrounding spaces or a leading '-'`)
	}
	return nil
}

// ValidPassword reports why password cannot be stored, or nil: it must be
// 1..MaxPasswordBytes bytes of UTF-8 without NUL (the NT hash needs UTF-16,
// and PAM and C callers would cut a password at NUL).
func ValidPassword(password string) error {
	switch {
	case password == "":
		return errors.New("empty password")
	case len(password) > MaxPasswordBytes:
		return fmt.Errorf("password longer than %d bytes", MaxPasswordBytes)
	case !utf8.ValidString(password):
		return errors.New("password is not valid UTF-8")
	case strings.IndexByte(password, 0) >= 0:
		return errors.New("password contains NUL")
	}
	return nil
}

// fold is the case-insensitive key of a name.
func fold(name string) string { return strings.ToLower(name) }

// parse decodes a store file. Errors name the line, never its content.
func parse(data []byte) ([]*record, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileBytes)
	}
	if len(data) == 0 {
		return nil, nil
	}
	if !utf8.Valid(data) {
		return nil, errors.New("not valid UTF-8")
	}
	var recs []*record
	seen := make(map[string]int)
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) > MaxLineBytes {
			return nil, fmt.Errorf("line %d: longer than %d bytes", n, MaxLineBytes)
		}
		if bytes.IndexByte(line, '\r') >= 0 {
			return nil, fmt.Errorf("line %d: carriage return (the file must use LF line ends)", n)
		}
		if n == 1 {
			if string(line) != Header {
				return nil, fmt.Errorf("line 1: not %q", Header)
			}
			continue
		}
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		r, err := parseRecord(string(line))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		k := fold(r.name)
		if prev, dup := seen[k]; dup {
			return nil, fmt.Errorf("line %d: account name repeats line %d (names are case-insensitive)", n, prev)
		}
		seen[k] = n
		recs = append(recs, r)
	}
	return recs, nil
}

func parseRecord(line string) (*record, error) {
	f := strings.Split(line, ":")
	if len(f) != 3 {
		return nil, errors.New("not name:hash:nthash")
	}
	if err := ValidName(f[0]); err != nil {
		return nil, err
	}
	h, err := parsePHC(f[1])
	if err != nil {
		return nil, err
	}
	if len(f[2]) != 32 || strings.ToLower(f[2]) != f[2] {
		return nil, errors.New("NT hash is not 32 lower-case hex digits")
	}
	r := &record{name: f[0], hash: h}
	if _, err := hex.Decode(r.nt[:], []byte(f[2])); err != nil {
		return nil, errors.New("NT hash is not 32 lower-case hex digits")
	}
	return r, nil
}

// format encodes records as a store file.
func format(recs []*record) []byte {
	var b bytes.Buffer
	b.WriteString(Header + "\n")
	b.WriteString("# name:argon2id(password):md4(utf16le(password)) -- written by winrmd user; keep mode 0600\n")
	for _, r := range recs {
		b.WriteString(r.line())
		b.WriteByte('\n')
	}
	return b.Bytes()
}
