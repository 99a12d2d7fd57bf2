// Package delegation builds the credential cache that lets a user's shell
// use Kerberos constrained delegation (MS-SFU S4U2Proxy) when the client did
// not forward a TGT.
//
// The cache has MIT krb5's "proxy credential" shape (what MIT's own GSS
// acceptor stores as the delegated credential of a forwardable ticket when
// the service holds a TGT): its default principal is the user; it holds
// the service account's TGT, the user's evidence ticket (the ticket the
// client presented to winrmd) filed under the service account's name, and
// the configuration entry proxy_impersonator naming the service account.
// With it, every GSSAPI initiator built on MIT krb5 (curl --negotiate,
// python-gssapi, smbclient, ssh) running as the user asks the KDC for
// S4U2Proxy tickets: the KDC issues them for the services in the account's
// msDS-AllowedToDelegateTo and refuses every other (KDC_ERR_BADOPTION).
// Plain krb5 tools (kvno) do not do S4U2Proxy from it; they see the
// tickets the GSS layer stored.
//
// Security trade-off (see README "Constrained delegation"): the service
// account's TGT is in a file the user can read, so the user holds the
// service account's network identity until that TGT expires.
//
// File format (MIT ccache version 4, big-endian; ccache(5)):
//
//	u16 0x0504, u16 header length, header (tags: u16 tag, u16 len, value)
//	principal (default)
//	credential*  until end of file
//
//	principal:  u32 name type, u32 component count, data realm, data component*
//	credential: principal client, principal server,
//	            u16 enctype, data key,
//	            u32 authtime, starttime, endtime, renew-till,
//	            u8 is-skey, u32 ticket flags,
//	            u32 address count, (u16 type, data)*,
//	            u32 authdata count, (u16 type, data)*,
//	            data ticket, data second ticket
//	data:       u32 length, bytes
//
// A configuration entry is a credential whose server is
// "krb5_ccache_conf_data/<key>@X-CACHECONF:" and whose ticket is the value.
package delegation

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Limits of Decode. A real cache of a few tickets with large PACs is tens
// of kilobytes; these bound what a hostile file can make Decode allocate.
const (
	MaxCacheBytes  = 1 << 20 // whole file
	MaxCredentials = 256
	MaxComponents  = 16 // per principal (RFC 4120 names have 1-3)
	MaxFieldBytes  = 64 << 10
	MaxListEntries = 64 // addresses, authdata
)

// ErrMalformed is wrapped by every Decode error.
var ErrMalformed = errors.New("malformed credential cache")

// Name types (RFC 4120 6.2).
const (
	NTPrincipal = 1
	NTSrvInst   = 2
)

// Principal is a Kerberos principal name.
type Principal struct {
	Type       uint32
	Realm      string
	Components []string
}

// String is the unparsed form, "a/b@REALM".
func (p Principal) String() string { return strings.Join(p.Components, "/") + "@" + p.Realm }

// Equal compares names (not types).
func (p Principal) Equal(q Principal) bool {
	if p.Realm != q.Realm || len(p.Components) != len(q.Components) {
		return false
	}
	for i := range p.Components {
		if p.Components[i] != q.Components[i] {
			return false
		}
	}
	return true
}

// IsTGT reports whether p is krbtgt/REALM@REALM.
func (p Principal) IsTGT() bool {
	return len(p.Components) == 2 && p.Components[0] == "krbtgt" && p.Components[1] == p.Realm
}

// Credential is one ticket with its session key, or a configuration entry.
type Credential struct {
	Client, Server                          Principal
	KeyType                                 uint16
	Key                                     []byte
	AuthTime, StartTime, EndTime, RenewTill time.Time
	Flags                                   uint32 // ticket flags, RFC 4120 bit order (forwardable = 0x40000000)
	Ticket                                  []byte // DER Ticket (or the config value)
	SecondTicket                            []byte
}

// Ticket flags used here (RFC 4120 5.3, bit 0 is the most significant).
const (
	FlagForwardable = 0x40000000
)

const confRealm = "X-CACHECONF:"

// ConfigEntry is a cache configuration entry for key with value.
func ConfigEntry(client Principal, key string, value []byte) Credential {
	return Credential{
		Client: client,
		Server: Principal{Type: NTPrincipal, Realm: confRealm, Components: []string{"krb5_ccache_conf_data", key}},
		Ticket: value,
	}
}

// IsConfig reports whether c is a configuration entry, and its key.
func (c Credential) IsConfig() (string, bool) {
	if c.Server.Realm == confRealm && len(c.Server.Components) >= 2 && c.Server.Components[0] == "krb5_ccache_conf_data" {
		return c.Server.Components[1], true
	}
	return "", false
}

// Cache is a decoded credential cache.
type Cache struct {
	Default     Principal
	Credentials []Credential
}

// ProxyCache composes the S4U2Proxy cache for user (see the package
// comment). tgt is the service account's TGT (client: the service
// account); evidence is the user's ticket to the service as the acceptor
// decrypted it: client the user, server the SPN it was issued for, with the
// ticket's session key, times and flags. The evidence ticket must be
// forwardable: the KDC refuses S4U2Proxy with any other.
func ProxyCache(tgt, evidence Credential) (*Cache, error) {
	impersonator := tgt.Client
	switch {
	case !tgt.Server.IsTGT():
		return nil, fmt.Errorf("delegation: %s is not a TGT", tgt.Server)
	case len(impersonator.Components) == 0 || impersonator.Realm == "":
		return nil, errors.New("delegation: TGT without a client name")
	case len(evidence.Client.Components) == 0 || evidence.Client.Realm == "":
		return nil, errors.New("delegation: evidence ticket without a client name")
	case evidence.Flags&FlagForwardable == 0:
		return nil, fmt.Errorf("delegation: the evidence ticket of %s is not forwardable (the account may be sensitive, or its TGT was not forwardable)", evidence.Client)
	case len(evidence.Ticket) == 0 || len(evidence.Key) == 0 || len(tgt.Ticket) == 0 || len(tgt.Key) == 0:
		return nil, errors.New("delegation: ticket or session key missing")
	}
	// MIT looks the evidence up by the impersonator's name, so it is filed
	// under the service account (the ticket inside still names the SPN;
	// the KDC matches it by account).
	ev := evidence
	ev.Server = impersonator
	return &Cache{
		Default: evidence.Client,
		Credentials: []Credential{
			tgt,
			ev,
			ConfigEntry(evidence.Client, "proxy_impersonator", []byte(impersonator.String())),
		},
	}, nil
}

// Encode renders c in the version 4 format.
func (c *Cache) Encode() []byte {
	var b bytes.Buffer
	put16 := func(v uint16) { binary.Write(&b, binary.BigEndian, v) }
	put32 := func(v uint32) { binary.Write(&b, binary.BigEndian, v) }
	data := func(d []byte) { put32(uint32(len(d))); b.Write(d) }
	princ := func(p Principal) {
		put32(p.Type)
		put32(uint32(len(p.Components)))
		data([]byte(p.Realm))
		for _, s := range p.Components {
			data([]byte(s))
		}
	}
	unix := func(t time.Time) uint32 {
		if t.IsZero() {
			return 0
		}
		return uint32(t.Unix())
	}
	put16(0x0504)
	put16(0) // no header tags
	princ(c.Default)
	for _, cr := range c.Credentials {
		princ(cr.Client)
		princ(cr.Server)
		put16(cr.KeyType)
		data(cr.Key)
		put32(unix(cr.AuthTime))
		put32(unix(cr.StartTime))
		put32(unix(cr.EndTime))
		put32(unix(cr.RenewTill))
		b.WriteByte(0) // is_skey
		put32(cr.Flags)
		put32(0) // addresses
		put32(0) // authdata
		data(cr.Ticket)
		data(cr.SecondTicket)
	}
	return b.Bytes()
}

// Decode parses a version 4 cache within the limits above.
func Decode(in []byte) (*Cache, error) {
	if len(in) > MaxCacheBytes {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrMalformed, len(in), MaxCacheBytes)
	}
	r := &reader{b: in}
	if v := r.u16(); v != 0x0504 {
		if r.err != nil {
			return nil, r.err
		}
		return nil, fmt.Errorf("%w: version 0x%04x (want 0x0504)", ErrMalformed, v)
	}
	r.skip(int(r.u16()))
	c := &Cache{Default: r.principal()}
	for r.err == nil && r.off < len(r.b) {
		if len(c.Credentials) == MaxCredentials {
			return nil, fmt.Errorf("%w: more than %d credentials", ErrMalformed, MaxCredentials)
		}
		var cr Credential
		cr.Client = r.principal()
		cr.Server = r.principal()
		cr.KeyType = r.u16()
		cr.Key = r.data()
		cr.AuthTime = r.time()
		cr.StartTime = r.time()
		cr.EndTime = r.time()
		cr.RenewTill = r.time()
		r.skip(1)
		cr.Flags = r.u32()
		r.list()
		r.list()
		cr.Ticket = r.data()
		cr.SecondTicket = r.data()
		if r.err == nil {
			c.Credentials = append(c.Credentials, cr)
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return c, nil
}

// Find returns the first ticket (not a config entry) whose server is s.
func (c *Cache) Find(s Principal) (Credential, bool) {
	for _, cr := range c.Credentials {
		if _, conf := cr.IsConfig(); !conf && cr.Server.Equal(s) {
			return cr, true
		}
	}
	return Credential{}, false
}

// Config returns the value of configuration entry key.
func (c *Cache) Config(key string) ([]byte, bool) {
	for _, cr := range c.Credentials {
		if k, ok := cr.IsConfig(); ok && k == key {
			return cr.Ticket, true
		}
	}
	return nil, false
}

type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) need(n int, what string) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = fmt.Errorf("%w: %s truncated at offset %d", ErrMalformed, what, r.off)
		return false
	}
	return true
}

func (r *reader) u16() uint16 {
	if !r.need(2, "u16") {
		return 0
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v
}

func (r *reader) u32() uint32 {
	if !r.need(4, "u32") {
		return 0
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) skip(n int) {
	if r.need(n, "field") {
		r.off += n
	}
}

func (r *reader) data() []byte {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if n > MaxFieldBytes {
		r.err = fmt.Errorf("%w: field of %d bytes at offset %d (limit %d)", ErrMalformed, n, r.off, MaxFieldBytes)
		return nil
	}
	if !r.need(int(n), "data") {
		return nil
	}
	d := bytes.Clone(r.b[r.off : r.off+int(n)])
	r.off += int(n)
	return d
}

func (r *reader) time() time.Time {
	v := r.u32()
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(int64(v), 0)
}

func (r *reader) principal() Principal {
	var p Principal
	p.Type = r.u32()
	n := r.u32()
	if r.err == nil && n > MaxComponents {
		r.err = fmt.Errorf("%w: principal with %d components (limit %d)", ErrMalformed, n, MaxComponents)
	}
	p.Realm = string(r.data())
	for i := uint32(0); r.err == nil && i < n; i++ {
		p.Components = append(p.Components, string(r.data()))
	}
	return p
}

func (r *reader) list() {
	n := r.u32()
	if r.err == nil && n > MaxListEntries {
		r.err = fmt.Errorf("%w: list of %d entries (limit %d)", ErrMalformed, n, MaxListEntries)
		return
	}
	for i := uint32(0); r.err == nil && i < n; i++ {
		r.u16()
		r.data()
	}
}
