package ntlm_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gontlm "github.com/Azure/go-ntlmssp"
	bodgit "github.com/bodgit/ntlmssp"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
	"github.com/winrmd/winrmd/authn/ntlm/ntlmtest"
)

type source map[string]string // user -> password

func (s source) NTHash(user string) ([]byte, error) {
	p, ok := s[user]
	if !ok {
		return nil, authn.ErrUnknownAccount
	}
	return ntlm.NTHash(p), nil
}

var users = source{"alice": "Secr3t!pass", "bob": "hunter2", "jürgen": "pässwörd"}

func newAcceptor(mod ...func(*ntlm.Config)) *ntlm.Acceptor {
	cfg := ntlm.Config{
		Verifier:        ntlm.NewNTHashVerifier(users),
		NetBIOSComputer: "WINRMD",
		DNSComputer:     "winrmd.example.test",
	}
	for _, m := range mod {
		m(&cfg)
	}
	return ntlm.NewAcceptor(cfg)
}

func challengeFlags(t *testing.T, ch []byte) uint32 {
	t.Helper()
	if len(ch) < 56 {
		t.Fatalf("challenge of %d bytes", len(ch))
	}
	return binary.LittleEndian.Uint32(ch[20:])
}

// --- go-ntlmssp, the client masterzen/winrm and many Go tools use -------

func TestGoNTLMSSPHandshake(t *testing.T) {
	for _, tc := range []struct {
		name, login, pass string
		wantName, wantDom string
		wantErr           error
	}{
		{"bare user", "alice", "Secr3t!pass", "alice", "", nil},
		{"domain user", `WINRMD\alice`, "Secr3t!pass", `WINRMD\alice`, "WINRMD", nil},
		{"non-ASCII", "jürgen", "pässwörd", "jürgen", "", nil},
		{"wrong password", "alice", "wrong", "", "", authn.ErrBadCredentials},
		{"unknown user", "mallory", "x", "", "", authn.ErrUnknownAccount},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAcceptor()
			neg, err := gontlm.NewNegotiateMessage("", "")
			if err != nil {
				t.Fatal(err)
			}
			ch, done, err := a.Step(context.Background(), authn.ConnInfo{}, neg)
			if err != nil || done {
				t.Fatalf("negotiate: %v %v", done, err)
			}
			auth, err := gontlm.NewAuthenticateMessage(ch, tc.login, tc.pass, &gontlm.AuthenticateMessageOptions{WorkstationName: "WS1"})
			if err != nil {
				t.Fatal(err)
			}
			_, done, err = a.Step(context.Background(), authn.ConnInfo{}, auth)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || done {
					t.Fatalf("got %v (done=%v), want %v", err, done, tc.wantErr)
				}
				if a.Sealer() != nil || a.Session() != nil {
					t.Fatal("failed context exposes session security")
				}
				if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, auth); err == nil {
					t.Fatal("failed context accepted another step")
				}
				return
			}
			if err != nil || !done {
				t.Fatalf("authenticate: %v %v", done, err)
			}
			p := a.Principal()
			if p.Name != tc.wantName || p.Domain != tc.wantDom || p.Mechanism != "ntlm" {
				t.Errorf("principal %+v", p)
			}
			// go-ntlmssp negotiates no SEAL: no sealer, but session security
			// for SPNEGO's MIC exists (ESS).
			if a.Sealer() != nil {
				t.Error("sealer without SEAL")
			}
			if a.Session() == nil {
				t.Error("no session with ESS")
			}
		})
	}
}

// TestGoNTLMSSPForged starts from go-ntlmssp's genuine AUTHENTICATE and
// forges what it cannot produce: an NTLMv1-sized response, an anonymous
// logon, and (go-ntlmssp sends no CBT) the strict channel-binding level.
func TestGoNTLMSSPForged(t *testing.T) {
	good := md5.Sum([]byte("tls"))
	for _, tc := range []struct {
		name    string
		cfg     func(*ntlm.Config)
		forge   func([]byte) []byte
		wantErr error
	}{
		{"genuine", nil, func(b []byte) []byte { return b }, nil},
		{"NTLMv1-sized response", nil, func(b []byte) []byte { b[20], b[21], b[22], b[23] = 24, 0, 24, 0; return b }, authn.ErrUnsupported},
		{"LM only", nil, func(b []byte) []byte { b[20], b[21], b[22], b[23] = 0, 0, 0, 0; return b }, authn.ErrUnsupported},
		{"anonymous flag", nil, func(b []byte) []byte { b[61] |= 0x08; return b }, authn.ErrUnsupported},
		{"anonymous: no user, no response", nil, func(b []byte) []byte {
			for _, off := range []int{12, 20, 36} { // Lm/NtChallengeResponse, UserName
				b[off], b[off+1], b[off+2], b[off+3] = 0, 0, 0, 0
			}
			return b
		}, authn.ErrUnsupported},
		{"CBT absent, relaxed", func(c *ntlm.Config) { c.ChannelBinding, c.CBTLevel = good[:], ntlm.CBTRelaxed }, func(b []byte) []byte { return b }, nil},
		{"CBT absent, strict", func(c *ntlm.Config) { c.ChannelBinding, c.CBTLevel = good[:], ntlm.CBTStrict }, func(b []byte) []byte { return b }, authn.ErrChannelBinding},
		{"CBT absent, none", func(c *ntlm.Config) { c.ChannelBinding, c.CBTLevel = good[:], ntlm.CBTNone }, func(b []byte) []byte { return b }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mods []func(*ntlm.Config)
			if tc.cfg != nil {
				mods = append(mods, tc.cfg)
			}
			a := newAcceptor(mods...)
			neg, _ := gontlm.NewNegotiateMessage("", "")
			ch, _, err := a.Step(context.Background(), authn.ConnInfo{}, neg)
			if err != nil {
				t.Fatal(err)
			}
			auth, err := gontlm.NewAuthenticateMessage(ch, "alice", "Secr3t!pass", nil)
			if err != nil {
				t.Fatal(err)
			}
			_, done, err := a.Step(context.Background(), authn.ConnInfo{}, tc.forge(auth))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != done {
				t.Fatalf("got %v (done=%v), want %v", err, done, tc.wantErr)
			}
		})
	}
}

func TestGoNTLMSSPPasswordHash(t *testing.T) {
	a := newAcceptor()
	neg, _ := gontlm.NewNegotiateMessage("", "")
	ch, _, _ := a.Step(context.Background(), authn.ConnInfo{}, neg)
	auth, err := gontlm.NewAuthenticateMessage(ch, "bob", hex.EncodeToString(ntlm.NTHash("hunter2")), &gontlm.AuthenticateMessageOptions{PasswordHashed: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, done, err := a.Step(context.Background(), authn.ConnInfo{}, auth); err != nil || !done {
		t.Fatalf("pass-the-hash client: %v", err)
	}
}

func TestChallengeShape(t *testing.T) {
	a := newAcceptor()
	neg, _ := gontlm.NewNegotiateMessage("", "")
	ch, _, _ := a.Step(context.Background(), authn.ConnInfo{}, neg)
	f := challengeFlags(t, ch)
	for _, want := range []uint32{ntlm.FlagUnicode, ntlm.FlagRequestTarget, ntlm.FlagNTLM, ntlm.FlagAlwaysSign,
		ntlm.FlagTargetInfo, ntlm.FlagTypeServer, ntlm.FlagVersion, ntlm.FlagESS, ntlm.Flag128, ntlm.Flag56} {
		if f&want == 0 {
			t.Errorf("challenge flags %#x miss %#x", f, want)
		}
	}
	if f&(ntlm.FlagKeyExch|ntlm.FlagSeal|ntlm.FlagOEM|ntlm.FlagLMKey) != 0 {
		t.Errorf("challenge flags %#x carry options the client did not ask for", f)
	}
	// TargetName "WINRMD" in UTF-16, target info in Windows' order.
	nl := int(binary.LittleEndian.Uint16(ch[12:]))
	no := int(binary.LittleEndian.Uint32(ch[16:]))
	if got := ch[no : no+nl]; !bytes.Equal(got, []byte("W\x00I\x00N\x00R\x00M\x00D\x00")) {
		t.Errorf("target name %q", got)
	}
	tl := int(binary.LittleEndian.Uint16(ch[40:]))
	to := int(binary.LittleEndian.Uint32(ch[44:]))
	pairs, err := ntlmtest.ReadAVPairs(ch[to : to+tl])
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint16
	for _, p := range pairs {
		ids = append(ids, p.ID)
	}
	if want := []uint16{2, 1, 3, 7}; !equalU16(ids, want) {
		t.Errorf("AV ids %v, want %v", ids, want)
	}
	if ch[55] != 15 {
		t.Errorf("NTLM revision %d", ch[55])
	}
}

func equalU16(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestChallengeFlagsWindows reproduces the flags recorded from Windows for
// a Windows client's NEGOTIATE (0xE20882B7).
func TestChallengeFlagsWindows(t *testing.T) {
	neg := []byte("NTLMSSP\x00\x01\x00\x00\x00\xb7\x82\x08\xe2\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0a\x00\x61\x4a\x00\x00\x00\x0f")
	ch, _, err := newAcceptor().Step(context.Background(), authn.ConnInfo{}, neg)
	if err != nil {
		t.Fatal(err)
	}
	if f := challengeFlags(t, ch); f != 0xE28A8235 {
		t.Errorf("standalone: %#x, want 0xE28A8235", f)
	}
	ch, _, err = newAcceptor(func(c *ntlm.Config) { c.NetBIOSDomain = "CORP" }).Step(context.Background(), authn.ConnInfo{}, neg)
	if err != nil {
		t.Fatal(err)
	}
	if f := challengeFlags(t, ch); f != 0xE2898235 {
		t.Errorf("domain member: %#x, want 0xE2898235", f)
	}
}

// TestNegotiateShapes: every first message clients send is answered.
func TestNegotiateShapes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		msg       []byte
		wantOEM   bool
		wantFlags uint32
	}{
		{"minimal 16 bytes, no flags", []byte("NTLMSSP\x00\x01\x00\x00\x00\x00\x00\x00\x00"), false, ntlm.FlagUnicode},
		// curl: OEM | REQUEST_TARGET | NTLM | ESS | ALWAYS_SIGN, 32 bytes, empty fields.
		{"curl", append([]byte("NTLMSSP\x00\x01\x00\x00\x00\x06\x82\x08\x00"), make([]byte, 16)...), true, ntlm.FlagESS},
		{"no NTLM flag", []byte("NTLMSSP\x00\x01\x00\x00\x00\x01\x00\x88\x20"), false, ntlm.FlagNTLM | ntlm.Flag128},
		{"with OEM domain and workstation", append(append([]byte("NTLMSSP\x00\x01\x00\x00\x00\x07\x32\x00\x00"),
			6, 0, 6, 0, 32, 0, 0, 0, 2, 0, 2, 0, 38, 0, 0, 0), "DOMAINWS"...), false, ntlm.FlagUnicode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, done, err := newAcceptor().Step(context.Background(), authn.ConnInfo{}, tc.msg)
			if err != nil || done {
				t.Fatalf("%v %v", done, err)
			}
			f := challengeFlags(t, ch)
			if tc.wantOEM != (f&ntlm.FlagOEM != 0) || (f&ntlm.FlagUnicode != 0) == (f&ntlm.FlagOEM != 0) {
				t.Errorf("charset flags %#x", f)
			}
			if f&tc.wantFlags != tc.wantFlags {
				t.Errorf("flags %#x miss %#x", f, tc.wantFlags)
			}
			if tc.wantOEM {
				nl := int(binary.LittleEndian.Uint16(ch[12:]))
				no := int(binary.LittleEndian.Uint32(ch[16:]))
				if string(ch[no:no+nl]) != "WINRMD" {
					t.Errorf("OEM target name %q", ch[no:no+nl])
				}
			}
		})
	}
}

func TestOEMAuthenticate(t *testing.T) {
	c := &ntlmtest.Client{User: "bob", Password: "hunter2", NegotiateFlags: 0x00088206, OEM: true}
	a := newAcceptor()
	ch, _, err := a.Step(context.Background(), authn.ConnInfo{}, c.Negotiate())
	if err != nil {
		t.Fatal(err)
	}
	auth, _ := c.Authenticate(ch)
	if _, done, err := a.Step(context.Background(), authn.ConnInfo{}, auth); err != nil || !done {
		t.Fatalf("OEM client: %v", err)
	}
	if a.Principal().Name != "bob" {
		t.Errorf("principal %+v", a.Principal())
	}
}

// --- our spec-derived client: MIC, KEY_EXCH, CBT, refusals ---------------

func handshake(t *testing.T, a *ntlm.Acceptor, c *ntlmtest.Client) error {
	t.Helper()
	ch, done, err := a.Step(context.Background(), authn.ConnInfo{}, c.Negotiate())
	if err != nil || done {
		t.Fatalf("negotiate: %v %v", done, err)
	}
	auth, err := c.Authenticate(ch)
	if err != nil {
		t.Fatal(err)
	}
	_, done, err = a.Step(context.Background(), authn.ConnInfo{}, auth)
	if err == nil && !done {
		t.Fatal("not done without error")
	}
	return err
}

func TestClientSealVectors(t *testing.T) {
	// MS-NLMP 4.2.4: the test client's sealing reproduces the spec.
	flags := uint32(0xE28A8233)
	s := ntlmtest.NewSession(flags, bytes.Repeat([]byte{0x55}, 16))
	sig, data := s.Seal(ntlmtest.UTF16("Plaintext"))
	if hex.EncodeToString(data) != "54e50165bf1936dc996020c1811b0f06fb5f" || hex.EncodeToString(sig) != "010000007fb38ec5c55d497600000000" {
		t.Fatalf("client seal %x %x", sig, data)
	}
	s = ntlmtest.NewSession(flags&^ntlm.FlagKeyExch, bytes.Repeat([]byte{0x55}, 16))
	if sig, _ := s.Seal(ntlmtest.UTF16("Plaintext")); hex.EncodeToString(sig) != "0100000070352851f256430900000000" {
		t.Fatalf("client seal without KEY_EXCH %x", sig)
	}
}

func TestHandshakeVariants(t *testing.T) {
	for _, tc := range []struct {
		name    string
		c       ntlmtest.Client
		wantErr error
	}{
		{"MIC + KEY_EXCH", ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true}, nil},
		{"MIC without KEY_EXCH", ntlmtest.Client{User: "alice", Domain: "WINRMD", Password: "Secr3t!pass", MIC: true}, nil},
		{"no MIC", ntlmtest.Client{User: "alice", Password: "Secr3t!pass", KeyExch: true}, nil},
		{"MIC tampered", ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true, TamperMIC: true}, authn.ErrBadCredentials},
		{"MIC slot zero, not announced", ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MICSlotWithoutFlag: make([]byte, 16), KeyExch: true}, nil},
		{"valid MIC, not announced", ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, DropAVFlagsButKeepMIC: true, KeyExch: true}, nil},
		{"MIC announced, stripped", ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MICFlagNoSlot: true, KeyExch: true}, authn.ErrBadCredentials},
		{"MIC slot garbage without flag", ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MICSlotWithoutFlag: bytes.Repeat([]byte{7}, 16), KeyExch: true}, authn.ErrBadCredentials},
		{"NTLMv1 forged", ntlmtest.Client{User: "alice", Password: "Secr3t!pass", ForgeV1: true}, authn.ErrUnsupported},
		{"anonymous", ntlmtest.Client{Anonymous: true}, authn.ErrUnsupported},
		{"empty user", ntlmtest.Client{User: "", Password: "x"}, authn.ErrBadCredentials},
		{"wrong password with MIC", ntlmtest.Client{User: "alice", Password: "nope", MIC: true, KeyExch: true}, authn.ErrBadCredentials},
		{"unknown user", ntlmtest.Client{User: "nobody", Password: "x", MIC: true}, authn.ErrUnknownAccount},
		{"sealing with 56-bit keys", ntlmtest.Client{User: "alice", Password: "Secr3t!pass", NegotiateFlags: ntlmtest.DefaultFlags &^ ntlm.Flag128}, authn.ErrUnsupported},
		{"signing without ESS", ntlmtest.Client{User: "alice", Password: "Secr3t!pass", NegotiateFlags: ntlmtest.DefaultFlags &^ ntlm.FlagESS}, authn.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			a := newAcceptor()
			err := handshake(t, a, &c)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if (c.MIC && !c.MICFlagNoSlot) != a.MICVerified() {
				t.Errorf("MICVerified = %v", a.MICVerified())
			}
			sealRoundTrips(t, a.Sealer(), c.Session, 0)
		})
	}
}

// sealRoundTrips exchanges messages both ways; firstSeq is the sequence
// number the first message in each direction carries.
func sealRoundTrips(t *testing.T, s authn.Sealer, c *ntlmtest.Session, firstSeq uint32) {
	t.Helper()
	if s == nil {
		t.Fatal("no sealer")
	}
	for i, size := range []int{0, 1, 18, 4096, 70000} {
		msg := bytes.Repeat([]byte{byte(i + 'a')}, size)
		sig, data := c.Seal(msg)
		if got := binary.LittleEndian.Uint32(sig[12:]); got != firstSeq+uint32(i) {
			t.Fatalf("client seq %d", got)
		}
		plain, err := s.Unseal(sig, data)
		if err != nil || !bytes.Equal(plain, msg) {
			t.Fatalf("server unseal #%d (%d bytes): %v", i, size, err)
		}
		reply := append([]byte("reply:"), msg...)
		sig, data, err = s.Seal(reply)
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.LittleEndian.Uint32(sig[12:]); got != firstSeq+uint32(i) {
			t.Fatalf("server seq %d", got)
		}
		if bytes.Equal(data, reply) && size > 0 {
			t.Fatal("not encrypted")
		}
		got, err := c.Unseal(sig, data)
		if err != nil || !bytes.Equal(got, reply) {
			t.Fatalf("client unseal #%d: %v", i, err)
		}
	}
}

func TestUnsealTamper(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mangle func(sig, data []byte) ([]byte, []byte)
	}{
		{"ciphertext bit", func(s, d []byte) ([]byte, []byte) { d[5] ^= 1; return s, d }},
		{"checksum bit", func(s, d []byte) ([]byte, []byte) { s[6] ^= 1; return s, d }},
		{"sequence", func(s, d []byte) ([]byte, []byte) { s[12] = 9; return s, d }},
		{"version", func(s, d []byte) ([]byte, []byte) { s[0] = 2; return s, d }},
		{"short signature", func(s, d []byte) ([]byte, []byte) { return s[:15], d }},
		{"truncated data", func(s, d []byte) ([]byte, []byte) { return s, d[:len(d)-1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true}
			a := newAcceptor()
			if err := handshake(t, a, c); err != nil {
				t.Fatal(err)
			}
			s := a.Sealer()
			sig, data := c.Session.Seal([]byte("0123456789abcdef"))
			sig, data = tc.mangle(sig, data)
			if _, err := s.Unseal(sig, data); !errors.Is(err, ntlm.ErrIntegrity) {
				t.Fatalf("tampered message: %v", err)
			}
			// The context is dead: even a correct next message fails.
			sig, data = c.Session.Seal([]byte("next"))
			if _, err := s.Unseal(sig, data); !errors.Is(err, ntlm.ErrSessionDead) {
				t.Fatalf("after tamper: %v", err)
			}
			if _, _, err := s.Seal([]byte("x")); !errors.Is(err, ntlm.ErrSessionDead) {
				t.Fatalf("seal after tamper: %v", err)
			}
		})
	}
}

func TestChannelBinding(t *testing.T) {
	good := md5.Sum([]byte("channel"))
	bad := md5.Sum([]byte("other channel"))
	zero := make([]byte, 16)
	type row struct {
		level    string
		listener []byte // nil = HTTP
		client   []byte // nil = absent
		wantErr  bool
	}
	var rows []row
	for _, level := range []string{"none", "relaxed", "strict", ""} {
		for _, cl := range []struct {
			name string
			v    []byte
		}{{"absent", nil}, {"zero", zero}, {"match", good[:]}, {"mismatch", bad[:]}} {
			_ = cl.name
			r := row{level: level, listener: good[:], client: cl.v}
			switch level {
			case "none":
			case "relaxed", "":
				r.wantErr = cl.name == "mismatch"
			case "strict":
				r.wantErr = cl.name != "match"
			}
			rows = append(rows, r)
			// On plain HTTP nothing is bound: always accepted.
			rows = append(rows, row{level: level, listener: nil, client: cl.v})
		}
	}
	for _, r := range rows {
		name := r.level + "/listener=" + map[bool]string{true: "https", false: "http"}[r.listener != nil] + "/client=" + hex.EncodeToString(r.client)
		t.Run(name, func(t *testing.T) {
			a := newAcceptor(func(c *ntlm.Config) { c.CBTLevel, c.ChannelBinding = r.level, r.listener })
			err := handshake(t, a, &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true, CBT: r.client})
			if r.wantErr != (err != nil) || (err != nil && !errors.Is(err, authn.ErrChannelBinding)) {
				t.Fatalf("err = %v, want error %v", err, r.wantErr)
			}
		})
	}
}

// Service binding (issue 14.1): without a channel binding, a target name
// must name this host, on HTTPS (relaxed) and on plain HTTP; the relay of
// a logon meant for another server is refused.
func TestServiceBinding(t *testing.T) {
	good := md5.Sum([]byte("channel"))
	zero := make([]byte, 16)
	for _, r := range []struct {
		name     string
		level    string
		listener []byte
		cbt      []byte
		target   string
		want     string // ChannelBindingResult, or "error"
	}{
		{"https relaxed relayed from another host", "relaxed", good[:], nil, "HTTP/evil.attacker.example", "error"},
		{"https relaxed zero cbt relayed", "relaxed", good[:], zero, "HTTP/evil.attacker.example", "error"},
		{"https relaxed names this host", "relaxed", good[:], nil, "HTTP/server.example.com", "service-name"},
		{"https relaxed WSMAN class with port", "relaxed", good[:], zero, "WSMAN/SERVER.example.com:5986", "service-name"},
		{"https relaxed host class short name", "relaxed", good[:], nil, "host/server", "service-name"},
		{"https relaxed configured alias", "relaxed", good[:], nil, "HTTP/alias.example.net", "service-name"},
		{"https relaxed loopback literal", "relaxed", good[:], nil, "HTTP/127.0.0.1", "service-name"},
		{"https relaxed other service class", "relaxed", good[:], nil, "CIFS/server.example.com", "error"},
		{"https relaxed nothing sent", "relaxed", good[:], nil, "", "absent"},
		{"https relaxed cbt wins over a foreign name", "relaxed", good[:], good[:], "HTTP/elsewhere", "match"},
		{"https strict name is not enough", "strict", good[:], nil, "HTTP/server.example.com", "error"},
		{"http relayed from another host", "relaxed", nil, nil, "HTTP/evil.attacker.example", "error"},
		{"http names this host", "relaxed", nil, nil, "HTTP/server.example.com", "service-name"},
		{"http nothing sent", "relaxed", nil, nil, "", "not-checked"},
		{"none checks nothing", "none", good[:], nil, "HTTP/evil.attacker.example", "not-checked"},
	} {
		t.Run(r.name, func(t *testing.T) {
			a := newAcceptor(func(c *ntlm.Config) {
				c.CBTLevel, c.ChannelBinding = r.level, r.listener
				c.Hosts = authn.NewHostNames("server.example.com", "SERVER", "alias.example.net")
			})
			err := handshake(t, a, &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true, CBT: r.cbt, TargetName: r.target})
			if r.want == "error" {
				if !errors.Is(err, authn.ErrChannelBinding) {
					t.Fatalf("err = %v, want a binding refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := a.ChannelBindingResult(); got != r.want {
				t.Fatalf("binding %q, want %q", got, r.want)
			}
			if p := a.Principal(); p.Binding != r.want || p.Service != r.target {
				t.Fatalf("principal binding %q service %q", p.Binding, p.Service)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []ntlm.Config{
		{},
		{Verifier: ntlm.NewNTHashVerifier(users), CBTLevel: "paranoid"},
		{Verifier: ntlm.NewNTHashVerifier(users), ChannelBinding: []byte{1, 2, 3}},
	} {
		if _, _, err := ntlm.NewAcceptor(cfg).Step(context.Background(), authn.ConnInfo{}, []byte("NTLMSSP\x00\x01\x00\x00\x00\x00\x00\x00\x00")); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

func TestStepOrder(t *testing.T) {
	c := &ntlmtest.Client{User: "alice", Password: "Secr3t!pass"}
	a := newAcceptor()
	ch, _, _ := newAcceptor().Step(context.Background(), authn.ConnInfo{}, c.Negotiate())
	auth, _ := c.Authenticate(ch)
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, auth); !errors.Is(err, authn.ErrMalformed) {
		t.Fatalf("AUTHENTICATE first: %v", err)
	}
	a = newAcceptor()
	a.Step(context.Background(), authn.ConnInfo{}, c.Negotiate())
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, c.Negotiate()); !errors.Is(err, authn.ErrMalformed) {
		t.Fatalf("NEGOTIATE twice: %v", err)
	}
	// An AUTHENTICATE computed for another context's challenge fails.
	a = newAcceptor()
	a.Step(context.Background(), authn.ConnInfo{}, c.Negotiate())
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, auth); !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("foreign challenge: %v", err)
	}
}

// --- bodgit/ntlmssp, the client masterzen/winrm uses for encryption ------

func TestBodgitClient(t *testing.T) {
	good := md5.Sum([]byte("x"))
	for _, tc := range []struct {
		name     string
		cbt      *bodgit.ChannelBindings
		listener []byte
		level    string
		wantErr  error
	}{
		{"plain", nil, nil, "", nil},
		{"cbt strict match", &bodgit.ChannelBindings{ApplicationData: []byte("tls-server-end-point:abc")}, cbtOf("tls-server-end-point:abc"), "strict", nil},
		{"cbt relaxed mismatch", &bodgit.ChannelBindings{ApplicationData: []byte("tls-server-end-point:abc")}, good[:], "relaxed", authn.ErrChannelBinding},
		{"cbt strict absent", nil, good[:], "strict", authn.ErrChannelBinding},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := bodgit.NewClient(bodgit.SetUserInfo("alice", "Secr3t!pass"), bodgit.SetDomain("WINRMD"), bodgit.SetVersion(bodgit.DefaultVersion()))
			if err != nil {
				t.Fatal(err)
			}
			a := newAcceptor(func(c *ntlm.Config) { c.ChannelBinding, c.CBTLevel = tc.listener, tc.level })
			neg, err := cl.Authenticate(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ch, _, err := a.Step(context.Background(), authn.ConnInfo{}, neg)
			if err != nil {
				t.Fatal(err)
			}
			auth, err := cl.Authenticate(ch, tc.cbt)
			if err != nil {
				t.Fatal(err)
			}
			_, done, err := a.Step(context.Background(), authn.ConnInfo{}, auth)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && (err != nil || !done)) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if !a.MICVerified() || a.Flags()&ntlm.FlagKeyExch == 0 {
				t.Errorf("expected MIC and KEY_EXCH from bodgit (flags %#x)", a.Flags())
			}
			if a.Principal().Name != `WINRMD\alice` {
				t.Errorf("principal %+v", a.Principal())
			}
			s := a.Sealer()
			ss := cl.SecuritySession()
			for i := 0; i < 3; i++ {
				msg := []byte(strings.Repeat("<soap/>", i*1000+1))
				data, sig, err := ss.Wrap(msg)
				if err != nil {
					t.Fatal(err)
				}
				plain, err := s.Unseal(sig, data)
				if err != nil || !bytes.Equal(plain, msg) {
					t.Fatalf("unseal bodgit message %d: %v", i, err)
				}
				sig, data, err = s.Seal(msg)
				if err != nil {
					t.Fatal(err)
				}
				back, err := ss.Unwrap(data, sig)
				if err != nil || !bytes.Equal(back, msg) {
					t.Fatalf("bodgit unwrap %d: %v", i, err)
				}
			}
		})
	}
}

// cbtOf computes the CBT the way the client does: MD5 over the marshalled
// gss_channel_bindings with only application data.
func cbtOf(appData string) []byte {
	b := make([]byte, 20, 20+len(appData))
	binary.LittleEndian.PutUint32(b[16:], uint32(len(appData)))
	sum := md5.Sum(append(b, appData...))
	return sum[:]
}

// --- verifier plumbing ---------------------------------------------------

type funcVerifier func(context.Context, ntlm.VerifyRequest) (ntlm.VerifyResult, error)

func (f funcVerifier) Verify(ctx context.Context, r ntlm.VerifyRequest) (ntlm.VerifyResult, error) {
	return f(ctx, r)
}

func TestVerifierContract(t *testing.T) {
	var calls atomic.Int32
	inner := ntlm.NewNTHashVerifier(users)
	canon := funcVerifier(func(ctx context.Context, r ntlm.VerifyRequest) (ntlm.VerifyResult, error) {
		calls.Add(1)
		if r.Workstation != "WORKSTATION" || r.User != "alice" || r.Domain != "corp" {
			t.Errorf("request %+v", r)
		}
		res, err := inner.Verify(ctx, r)
		res.User, res.Domain = "Alice", "CORP"
		return res, err
	})
	a := ntlm.NewAcceptor(ntlm.Config{Verifier: canon})
	if err := handshake(t, a, &ntlmtest.Client{User: "alice", Domain: "corp", Password: "Secr3t!pass", MIC: true, KeyExch: true}); err != nil {
		t.Fatal(err)
	}
	if p := a.Principal(); p.Name != `CORP\Alice` || p.Domain != "CORP" {
		t.Errorf("principal %+v", p)
	}
	if calls.Load() != 1 {
		t.Errorf("%d verifier calls", calls.Load())
	}
	// A backend that returns a bad key or an error.
	for _, v := range []funcVerifier{
		func(context.Context, ntlm.VerifyRequest) (ntlm.VerifyResult, error) {
			return ntlm.VerifyResult{SessionBaseKey: []byte{1}}, nil
		},
		func(context.Context, ntlm.VerifyRequest) (ntlm.VerifyResult, error) {
			return ntlm.VerifyResult{}, authn.ErrBackend
		},
	} {
		a := ntlm.NewAcceptor(ntlm.Config{Verifier: v})
		if err := handshake(t, a, &ntlmtest.Client{User: "alice", Password: "x"}); !errors.Is(err, authn.ErrBackend) {
			t.Errorf("bad backend: %v", err)
		}
	}
	// Context cancellation reaches the verifier.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a = newAcceptor()
	c := &ntlmtest.Client{User: "alice", Password: "Secr3t!pass"}
	ch, _, _ := a.Step(context.Background(), authn.ConnInfo{}, c.Negotiate())
	auth, _ := c.Authenticate(ch)
	if _, _, err := a.Step(ctx, authn.ConnInfo{}, auth); !errors.Is(err, authn.ErrBackend) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestTimestampUsesNow(t *testing.T) {
	now := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	a := newAcceptor(func(c *ntlm.Config) { c.Now = func() time.Time { return now } })
	ch, _, _ := a.Step(context.Background(), authn.ConnInfo{}, (&ntlmtest.Client{}).Negotiate())
	tl := int(binary.LittleEndian.Uint16(ch[40:]))
	to := int(binary.LittleEndian.Uint32(ch[44:]))
	pairs, _ := ntlmtest.ReadAVPairs(ch[to : to+tl])
	for _, p := range pairs {
		if p.ID == 7 {
			ft := binary.LittleEndian.Uint64(p.Value)
			if got := time.Unix(0, int64(ft-116444736000000000)*100).UTC(); !got.Equal(now) {
				t.Errorf("timestamp %v", got)
			}
			return
		}
	}
	t.Fatal("no MsvAvTimestamp")
}
