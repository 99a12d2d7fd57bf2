package kerberos

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
)

// verifyAPRep checks our AP-REP with gokrb5's client-side types (the
// parse and decryption an initiator does) and returns the initiator's view
// of the context.
func verifyAPRep(t *testing.T, s *session, out []byte, auth types.Authenticator) *seqState {
	t.Helper()
	oid, tok, msg, err := ParseInitialToken(out)
	if err != nil || tok != tokAPRep || !bytes.Equal(oid, OIDKRB5) {
		t.Fatalf("AP-REP framing: oid %x tok %x err %v", oid, tok, err)
	}
	var rep messages.APRep
	if err := rep.Unmarshal(msg); err != nil {
		t.Fatalf("gokrb5 cannot parse our AP-REP: %v", err)
	}
	plain, err := crypto.DecryptEncPart(rep.EncPart, s.key, 12)
	if err != nil {
		t.Fatalf("AP-REP does not decrypt with the session key: %v", err)
	}
	var part messages.EncAPRepPart
	if err := part.Unmarshal(plain); err != nil {
		t.Fatalf("gokrb5 cannot parse EncAPRepPart: %v", err)
	}
	if !part.CTime.Equal(auth.CTime.Truncate(time.Second)) || part.Cusec != auth.Cusec {
		t.Fatalf("AP-REP ctime %v/%d, authenticator %v/%d", part.CTime, part.Cusec, auth.CTime, auth.Cusec)
	}
	if len(part.Subkey.KeyValue) == 0 || part.SequenceNumber == 0 {
		t.Fatalf("AP-REP without acceptor subkey or sequence number: %+v", part)
	}
	if bytes.Equal(part.Subkey.KeyValue, s.key.KeyValue) {
		t.Fatal("acceptor subkey equals the session key")
	}
	ini, err := newSeqState(part.Subkey, false, true, uint64(uint32(auth.SeqNumber)), uint64(part.SequenceNumber))
	if err != nil {
		t.Fatal(err)
	}
	return ini
}

func TestAcceptMutualAndWrap(t *testing.T) {
	for _, sub := range []bool{false, true} {
		s := login(t, "alice", "HTTP/localhost")
		cfg := newTestConfig(t)
		a := NewAcceptor(cfg)
		in, auth := s.apReq(t, apReqOpts{flags: flagMutual | flagSequence | flagConf | flagInteg, subkey: sub})
		out, done, err := a.Step(context.Background(), authn.ConnInfo{}, in)
		if err != nil || !done {
			t.Fatalf("Step: done %v err %v", done, err)
		}
		p := a.Principal()
		if p.Name != "alice" || p.Mechanism != "kerberos" || p.Client != "alice@"+cfg.Realm {
			t.Fatalf("principal %+v", p)
		}
		if inf := a.Info(); inf.Service != "HTTP/localhost@"+cfg.Realm || !inf.Mutual || inf.CBT != "not-checked" || !inf.PAC {
			t.Fatalf("info %+v", inf)
		}
		ini := verifyAPRep(t, s, out, auth)
		srv := a.Sealer()
		for i, msg := range [][]byte{[]byte("<s:Envelope>hello</s:Envelope>"), bytes.Repeat([]byte("x"), 70000), {}, []byte("z")} {
			tok, n, err := ini.Wrap(msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := srv.Unseal(tok[:n], tok[n:])
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("msg %d: server unseal: %v", i, err)
			}
			sig, data, err := srv.Seal(append([]byte("reply:"), msg...))
			if err != nil {
				t.Fatal(err)
			}
			if len(data) != len(msg)+6 || len(sig) != 60 {
				t.Fatalf("sealed layout sig %d data %d for %d bytes", len(sig), len(data), len(msg)+6)
			}
			back, err := ini.Unwrap(append(append([]byte{}, sig...), data...))
			if err != nil || !bytes.Equal(back, append([]byte("reply:"), msg...)) {
				t.Fatalf("msg %d: client unwrap: %v", i, err)
			}
		}
		// Tampering and replayed wrap tokens kill the message.
		tok, n, _ := ini.Wrap([]byte("payload"))
		bad := append([]byte{}, tok...)
		bad[len(bad)-1] ^= 1
		if _, err := srv.Unseal(bad[:n], bad[n:]); err == nil {
			t.Fatal("tampered wrap token accepted")
		}
		if _, err := srv.Unseal(tok[:n], tok[n:]); err != nil {
			t.Fatalf("intact token after a tampered one: %v", err)
		}
		if _, err := srv.Unseal(tok[:n], tok[n:]); err == nil {
			t.Fatal("replayed wrap token accepted")
		}
		// Kerberos completes in one leg.
		if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, in); !errors.Is(err, authn.ErrContextComplete) {
			t.Fatalf("second Step: %v", err)
		}
	}
}

func TestNoMutual(t *testing.T) {
	s := login(t, "alice", "HTTP/localhost")
	a := NewAcceptor(newTestConfig(t))
	in, auth := s.apReq(t, apReqOpts{flags: flagConf | flagInteg})
	out, done, err := a.Step(context.Background(), authn.ConnInfo{}, in)
	if err != nil || !done || out != nil {
		t.Fatalf("out %x done %v err %v", out, done, err)
	}
	ini, _ := newSeqState(s.key, false, false, uint64(uint32(auth.SeqNumber)), uint64(uint32(auth.SeqNumber)))
	tok, n, _ := ini.Wrap([]byte("abc"))
	if got, err := a.Sealer().Unseal(tok[:n], tok[n:]); err != nil || string(got) != "abc" {
		t.Fatalf("unseal: %q %v", got, err)
	}
}

func TestMSOIDEchoed(t *testing.T) {
	s := login(t, "alice", "WSMAN/localhost")
	a := NewAcceptor(newTestConfig(t))
	in, _ := s.apReq(t, apReqOpts{flags: flagMutual, oid: OIDMSKRB5})
	out, _, err := a.Step(context.Background(), authn.ConnInfo{}, in)
	if err != nil {
		t.Fatal(err)
	}
	if oid, _, _, err := ParseInitialToken(out); err != nil || !bytes.Equal(oid, OIDMSKRB5) {
		t.Fatalf("reply OID %x, %v", oid, err)
	}
}

func TestReplayRefused(t *testing.T) {
	s := login(t, "alice", "HTTP/localhost")
	cfg := newTestConfig(t)
	in, _ := s.apReq(t, apReqOpts{flags: flagMutual})
	if _, _, err := NewAcceptor(cfg).Step(context.Background(), authn.ConnInfo{}, in); err != nil {
		t.Fatal(err)
	}
	_, _, err := NewAcceptor(cfg).Step(context.Background(), authn.ConnInfo{}, in)
	if err == nil || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("replayed AP-REQ: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	s := login(t, "alice", "HTTP/localhost")
	cbt := bytes.Repeat([]byte{0x42}, 16)
	other := bytes.Repeat([]byte{0x17}, 16)
	cases := []struct {
		name string
		cfg  func(*Config)
		opts apReqOpts
		sess *session
		want string
		is   error
	}{
		{name: "clock skew", opts: apReqOpts{ctime: time.Now().Add(-10 * time.Minute)}, want: "clock skew"},
		{name: "expired ticket", cfg: func(c *Config) { c.Now = func() time.Time { return time.Now().Add(11 * time.Hour) } }, want: "expired"},
		{name: "not yet valid", cfg: func(c *Config) { c.Now = func() time.Time { return time.Now().Add(-time.Hour) } }, want: "not valid until"},
		{name: "service not allowed", cfg: func(c *Config) { c.ServicePrincipals = []string{"WSMAN/localhost"} }, want: "service_principals"},
		{name: "other realm", cfg: func(c *Config) { c.Realm = "OTHER.TEST" }, want: "realm", is: authn.ErrUnknownAccount},
		{name: "cbt mismatch", cfg: func(c *Config) { c.ChannelBinding = cbt }, opts: apReqOpts{bnd: other}, is: authn.ErrChannelBinding},
		{name: "cbt strict absent", cfg: func(c *Config) { c.ChannelBinding, c.CBTLevel = cbt, CBTStrict }, is: authn.ErrChannelBinding},
		{name: "ticket for another service", sess: login(t, "alice", "HOST/other"), want: "no keytab entry"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newTestConfig(t)
			if tc.cfg != nil {
				tc.cfg(cfg)
			}
			ss := s
			if tc.sess != nil {
				ss = tc.sess
			}
			in, _ := ss.apReq(t, tc.opts)
			a := NewAcceptor(cfg)
			_, done, err := a.Step(context.Background(), authn.ConnInfo{}, in)
			if err == nil || done {
				t.Fatalf("accepted (done %v)", done)
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
			if a.Sealer() != nil {
				t.Fatal("failed context has a sealer")
			}
		})
	}
}

func TestCBTLevels(t *testing.T) {
	s := login(t, "alice", "HTTP/localhost")
	cbt := bytes.Repeat([]byte{0x42}, 16)
	for _, tc := range []struct {
		level string
		bnd   []byte
		want  string
	}{
		{CBTStrict, cbt, "match"},
		{CBTRelaxed, cbt, "match"},
		{CBTRelaxed, nil, "absent"},
		{CBTNone, bytes.Repeat([]byte{1}, 16), "not-checked"},
	} {
		cfg := newTestConfig(t)
		cfg.ChannelBinding, cfg.CBTLevel = cbt, tc.level
		a := NewAcceptor(cfg)
		in, _ := s.apReq(t, apReqOpts{bnd: tc.bnd})
		if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, in); err != nil {
			t.Fatalf("%s: %v", tc.level, err)
		}
		if a.Info().CBT != tc.want {
			t.Fatalf("%s: CBT %q want %q", tc.level, a.Info().CBT, tc.want)
		}
	}
}

func TestKvnoMismatch(t *testing.T) {
	e := needKDC(t)
	// A keytab exported before the key changed: a clear kvno message.
	if err := e.kdc.AddService("HTTP/rekeyed"); err != nil {
		t.Fatal(err)
	}
	old := e.kdc.Dir + "/old.keytab"
	if err := e.kdc.Keytab(old, "HTTP/rekeyed"); err != nil {
		t.Fatal(err)
	}
	if err := e.kdc.Rekey("HTTP/rekeyed"); err != nil {
		t.Fatal(err)
	}
	kt, err := OpenKeytab(old)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Keytab: kt, Replay: NewReplayCache(0)}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := login(t, "alice", "HTTP/rekeyed")
	in, _ := s.apReq(t, apReqOpts{})
	_, _, err = NewAcceptor(cfg).Step(context.Background(), authn.ConnInfo{}, in)
	if err == nil || !strings.Contains(err.Error(), "kvno mismatch") {
		t.Fatalf("stale keytab: %v", err)
	}
}

// A keytab replaced on disk (a key rotation) is picked up without a
// restart: the old copy keeps working until the file changes.
func TestKeytabReloaded(t *testing.T) {
	e := needKDC(t)
	if err := e.kdc.AddService("HTTP/rotated"); err != nil {
		t.Fatal(err)
	}
	path := e.kdc.Dir + "/rotating.keytab"
	if err := e.kdc.Keytab(path, "HTTP/rotated"); err != nil {
		t.Fatal(err)
	}
	kt, err := OpenKeytab(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Keytab: kt, Replay: NewReplayCache(0)}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := login(t, "alice", "HTTP/rotated")
	in, _ := s.apReq(t, apReqOpts{})
	if _, _, err := NewAcceptor(cfg).Step(context.Background(), authn.ConnInfo{}, in); err != nil {
		t.Fatal(err)
	}
	// Rotate: new key in the KDC, new keytab file (written aside, renamed).
	if err := e.kdc.Rekey("HTTP/rotated"); err != nil {
		t.Fatal(err)
	}
	if err := e.kdc.Keytab(path+".new", "HTTP/rotated"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	kt.mu.Lock()
	kt.checked = time.Time{} // skip the recheck interval
	kt.mu.Unlock()
	s2 := login(t, "bob", "HTTP/rotated")
	in2, _ := s2.apReq(t, apReqOpts{})
	if _, _, err := NewAcceptor(cfg).Step(context.Background(), authn.ConnInfo{}, in2); err != nil {
		t.Fatalf("ticket under the new key after the keytab changed: %v", err)
	}
}
