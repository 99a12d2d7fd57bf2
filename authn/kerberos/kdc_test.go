package kerberos

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn/kerberos/krbtest"
)

// The unit tests run against a real MIT KDC (krbtest), started once for
// the package: users alice and bob, services HTTP/localhost and
// WSMAN/localhost in the keytab, HOST/other (a service not in it).

const alicePW = "Al1ce-krb-pass"

type kdcEnv struct {
	kdc    *krbtest.KDC
	keytab string
	cfg    *config.Config
	err    error
}

var (
	kdcOnce sync.Once
	kenv    kdcEnv
)

func needKDC(t testing.TB) *kdcEnv {
	t.Helper()
	if why := krbtest.Available(); why != "" {
		t.Skip("MIT KDC unavailable: " + why)
	}
	kdcOnce.Do(func() {
		dir, err := os.MkdirTemp("", "winrmd-krbunit-")
		if err != nil {
			kenv.err = err
			return
		}
		k, err := krbtest.Start(dir)
		if err != nil {
			kenv.err = err
			return
		}
		kenv.kdc = k
		for _, u := range []string{"alice", "bob"} {
			if kenv.err = k.AddUser(u, alicePW); kenv.err != nil {
				return
			}
		}
		for _, s := range []string{"HTTP/localhost", "WSMAN/localhost", "HOST/other"} {
			if kenv.err = k.AddService(s); kenv.err != nil {
				return
			}
		}
		kenv.keytab = filepath.Join(dir, "service.keytab")
		kenv.err = k.Keytab(kenv.keytab, "HTTP/localhost", "WSMAN/localhost")
		c := config.New()
		c.LibDefaults.DefaultRealm = krbtest.Realm
		c.LibDefaults.UDPPreferenceLimit = 1
		c.LibDefaults.Forwardable = true
		c.LibDefaults.DNSLookupKDC = false
		c.Realms = []config.Realm{{Realm: krbtest.Realm, KDC: []string{fmt.Sprintf("127.0.0.1:%d", k.Port)}}}
		kenv.cfg = c
	})
	if kenv.err != nil {
		t.Fatalf("KDC set-up: %v", kenv.err)
	}
	return &kenv
}

func TestMain(m *testing.M) {
	code := m.Run()
	if kenv.kdc != nil {
		kenv.kdc.Stop()
		os.RemoveAll(kenv.kdc.Dir)
	}
	os.Exit(code)
}

// session is a gokrb5 client with a service ticket.
type session struct {
	cl  *client.Client
	tkt messages.Ticket
	key types.EncryptionKey
}

func login(t testing.TB, user, spn string) *session {
	t.Helper()
	e := needKDC(t)
	cl := client.NewWithPassword(user, krbtest.Realm, alicePW, e.cfg, client.DisablePAFXFAST(true))
	if err := cl.Login(); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	tkt, key, err := cl.GetServiceTicket(spn)
	if err != nil {
		t.Fatalf("service ticket %s: %v", spn, err)
	}
	return &session{cl: cl, tkt: tkt, key: key}
}

// apReqOpts shape the initiator's AP-REQ.
type apReqOpts struct {
	flags  uint32
	bnd    []byte
	subkey bool
	ctime  time.Time
	oid    []byte
}

// apReq builds a GSS-framed AP-REQ as an RFC 4121 initiator does. It
// returns the token, the authenticator (for the initiator's keys) and the
// subkey.
func (s *session) apReq(t testing.TB, o apReqOpts) ([]byte, types.Authenticator) {
	t.Helper()
	auth, err := types.NewAuthenticator(s.cl.Credentials.Domain(), s.cl.Credentials.CName())
	if err != nil {
		t.Fatal(err)
	}
	if !o.ctime.IsZero() {
		auth.CTime, auth.Cusec = o.ctime.Truncate(time.Second), 0
	}
	ck := make([]byte, 24)
	binary.LittleEndian.PutUint32(ck[0:4], 16)
	copy(ck[4:20], o.bnd)
	binary.LittleEndian.PutUint32(ck[20:24], o.flags)
	auth.Cksum = types.Checksum{CksumType: gssChecksumType, Checksum: ck}
	if o.subkey {
		if err := auth.GenerateSeqNumberAndSubKey(s.key.KeyType, len(s.key.KeyValue)); err != nil {
			t.Fatal(err)
		}
	} else {
		auth.SubKey = types.EncryptionKey{}
	}
	req, err := messages.NewAPReq(s.tkt, s.key, auth)
	if err != nil {
		t.Fatal(err)
	}
	if o.flags&flagMutual != 0 {
		types.SetFlag(&req.APOptions, flags.APOptionMutualRequired)
	}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	oid := o.oid
	if oid == nil {
		oid = OIDKRB5
	}
	return frameToken(oid, tokAPReq, b), auth
}

func newTestConfig(t testing.TB) *Config {
	t.Helper()
	e := needKDC(t)
	kt, err := OpenKeytab(e.keytab)
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{Keytab: kt, Replay: NewReplayCache(0)}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}
