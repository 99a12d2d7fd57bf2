package spnego_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	gontlm "github.com/Azure/go-ntlmssp"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
	"github.com/winrmd/winrmd/authn/ntlm/ntlmtest"
	"github.com/winrmd/winrmd/authn/spnego"
)

// The test side of SPNEGO uses encoding/asn1, independently of the
// package's own DER code.

var (
	oidSPNEGO = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 2}
	oidNTLM   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 2, 10}
	oidKRB5   = asn1.ObjectIdentifier{1, 2, 840, 113554, 1, 2, 2}
	oidMSKRB5 = asn1.ObjectIdentifier{1, 2, 840, 48018, 1, 2, 2}
	oidNEGOEX = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 2, 30}
)

type negTokenInit struct {
	MechTypes   []asn1.ObjectIdentifier `asn1:"explicit,tag:0"`
	ReqFlags    asn1.BitString          `asn1:"explicit,optional,tag:1"`
	MechToken   []byte                  `asn1:"explicit,optional,tag:2"`
	MechListMIC []byte                  `asn1:"explicit,optional,tag:3"`
}

type negTokenResp struct {
	NegState      asn1.Enumerated       `asn1:"explicit,optional,default:-1,tag:0"`
	SupportedMech asn1.ObjectIdentifier `asn1:"explicit,optional,tag:1"`
	ResponseToken []byte                `asn1:"explicit,optional,tag:2"`
	MechListMIC   []byte                `asn1:"explicit,optional,tag:3"`
}

func mustMarshal(t testing.TB, v any, params string) []byte {
	t.Helper()
	b, err := asn1.MarshalWithParams(v, params)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func initToken(t testing.TB, mechs []asn1.ObjectIdentifier, tok, mic []byte) []byte {
	inner := mustMarshal(t, negTokenInit{MechTypes: mechs, MechToken: tok, MechListMIC: mic}, "")
	choice := mustMarshal(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner}, "")
	oid := mustMarshal(t, oidSPNEGO, "")
	return mustMarshal(t, asn1.RawValue{Class: asn1.ClassApplication, Tag: 0, IsCompound: true, Bytes: append(oid, choice...)}, "")
}

func respToken(t testing.TB, tok, mic []byte) []byte {
	inner := mustMarshal(t, struct {
		ResponseToken []byte `asn1:"explicit,optional,tag:2"`
		MechListMIC   []byte `asn1:"explicit,optional,tag:3"`
	}{tok, mic}, "")
	return mustMarshal(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: inner}, "")
}

func parseResp(t testing.TB, b []byte) negTokenResp {
	t.Helper()
	var outer asn1.RawValue
	if rest, err := asn1.Unmarshal(b, &outer); err != nil || len(rest) != 0 || outer.Class != asn1.ClassContextSpecific || outer.Tag != 1 {
		t.Fatalf("server token %x: %v", b, err)
	}
	var r negTokenResp
	if rest, err := asn1.Unmarshal(outer.Bytes, &r); err != nil || len(rest) != 0 {
		t.Fatalf("NegTokenResp %x: %v", outer.Bytes, err)
	}
	return r
}

type users map[string]string

func (u users) NTHash(user string) ([]byte, error) {
	if p, ok := u[user]; ok {
		return ntlm.NTHash(p), nil
	}
	return nil, authn.ErrUnknownAccount
}

var accounts = users{"alice": "Secr3t!pass"}

func ntlmFactory() *ntlm.Acceptor {
	return ntlm.NewAcceptor(ntlm.Config{Verifier: ntlm.NewNTHashVerifier(accounts), NetBIOSComputer: "WINRMD", DNSComputer: "winrmd", Hosts: authn.NewHostNames("winrmd.test")})
}

func newAcceptor() authn.Context { return spnego.NewAcceptor(spnego.Config{NTLM: ntlmFactory}) }

// spnegoNTLM runs a full SPNEGO/NTLM exchange; mangle may alter the client's
// final mechListMIC. It returns the acceptor, the client and the error of
// the last leg.
func spnegoNTLM(t *testing.T, mechs []asn1.ObjectIdentifier, c *ntlmtest.Client, mangle func([]byte) []byte) (authn.Context, error) {
	t.Helper()
	a := newAcceptor()
	mechList := mustMarshal(t, mechs, "")
	var first []byte
	if mechs[0].Equal(oidNTLM) {
		first = initToken(t, mechs, c.Negotiate(), nil)
	} else {
		first = initToken(t, mechs, []byte("optimistic token of another mechanism"), nil)
	}
	out, done, err := a.Step(context.Background(), authn.ConnInfo{}, first)
	if err != nil || done {
		t.Fatalf("leg 1: %v %v", done, err)
	}
	r := parseResp(t, out)
	if !r.SupportedMech.Equal(oidNTLM) {
		t.Fatalf("supportedMech %v", r.SupportedMech)
	}
	if !mechs[0].Equal(oidNTLM) {
		// request-mic, no token: send NEGOTIATE in a NegTokenResp.
		if r.NegState != 3 || r.ResponseToken != nil {
			t.Fatalf("non-preferred selection: %+v", r)
		}
		out, done, err = a.Step(context.Background(), authn.ConnInfo{}, respToken(t, c.Negotiate(), nil))
		if err != nil || done {
			t.Fatalf("leg 2: %v %v", done, err)
		}
		r = parseResp(t, out)
		if r.SupportedMech != nil {
			t.Error("supportedMech repeated")
		}
	}
	if r.NegState != 1 || !ntlm.IsNTLMToken(r.ResponseToken) {
		t.Fatalf("challenge leg: %+v", r)
	}
	auth, err := c.Authenticate(r.ResponseToken)
	if err != nil {
		t.Fatal(err)
	}
	var mic []byte
	if c.MIC {
		mic = c.Session.GetMIC(mechList)
	}
	if mangle != nil {
		mic = mangle(mic)
	}
	out, done, err = a.Step(context.Background(), authn.ConnInfo{}, respToken(t, auth, mic))
	if err != nil {
		return a, err
	}
	if !done {
		t.Fatal("not done")
	}
	r = parseResp(t, out)
	if r.NegState != 0 || r.ResponseToken != nil {
		t.Fatalf("final token %+v", r)
	}
	if mic != nil {
		if err := c.Session.VerifyMIC(mechList, r.MechListMIC); err != nil {
			t.Fatalf("server mechListMIC: %v", err)
		}
		c.Session.Reset()
	}
	return a, nil
}

func TestSPNEGONTLMWithMIC(t *testing.T) {
	c := &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true}
	a, err := spnegoNTLM(t, []asn1.ObjectIdentifier{oidNTLM}, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := a.Principal(); p.Name != "alice" || p.Mechanism != "ntlm" {
		t.Errorf("principal %+v", p)
	}
	if m := a.(*spnego.Acceptor).Mechanism(); m != "ntlm" {
		t.Errorf("mechanism %q", m)
	}
	// PROTOCOL 5.3 step 4: the first WinRM message in each direction uses
	// sequence number 1 after the RC4 reset.
	roundTrip(t, a.Sealer(), c.Session, 1)
}

func roundTrip(t *testing.T, s authn.Sealer, c *ntlmtest.Session, seq uint32) {
	t.Helper()
	if s == nil {
		t.Fatal("no sealer")
	}
	for i := uint32(0); i < 3; i++ {
		msg := []byte(strings.Repeat("<s:Envelope/>", int(i)*100+1))
		sig, data := c.Seal(msg)
		if got := binary.LittleEndian.Uint32(sig[12:]); got != seq+i {
			t.Fatalf("client seq %d, want %d", got, seq+i)
		}
		plain, err := s.Unseal(sig, data)
		if err != nil || !bytes.Equal(plain, msg) {
			t.Fatalf("server unseal: %v", err)
		}
		sig, data, err = s.Seal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.LittleEndian.Uint32(sig[12:]); got != seq+i {
			t.Fatalf("server seq %d, want %d", got, seq+i)
		}
		if back, err := c.Unseal(sig, data); err != nil || !bytes.Equal(back, msg) {
			t.Fatalf("client unseal: %v", err)
		}
	}
}

func TestFinalTokenShape(t *testing.T) {
	c := &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true}
	a := newAcceptor()
	mechs := []asn1.ObjectIdentifier{oidNTLM}
	out, _, err := a.Step(context.Background(), authn.ConnInfo{}, initToken(t, mechs, c.Negotiate(), nil))
	if err != nil {
		t.Fatal(err)
	}
	auth, _ := c.Authenticate(parseResp(t, out).ResponseToken)
	out, done, err := a.Step(context.Background(), authn.ConnInfo{}, respToken(t, auth, c.Session.GetMIC(mustMarshal(t, mechs, ""))))
	if err != nil || !done {
		t.Fatal(err)
	}
	// a1 1b 30 19 a0 03 0a 01 00 a3 12 04 10 <16-byte MIC> (PROTOCOL 5.3).
	if want := "a11b3019a0030a0100a3120410"; len(out) != 29 || hex.EncodeToString(out[:13]) != want {
		t.Fatalf("final token %x", out)
	}
}

func TestSPNEGOVariants(t *testing.T) {
	good := func(c *ntlmtest.Client) *ntlmtest.Client { return c }
	for _, tc := range []struct {
		name    string
		mechs   []asn1.ObjectIdentifier
		c       *ntlmtest.Client
		mangle  func([]byte) []byte
		wantErr error
		seq     uint32
	}{
		{"NTLM first, no MIC anywhere", []asn1.ObjectIdentifier{oidNTLM}, good(&ntlmtest.Client{User: "alice", Password: "Secr3t!pass", KeyExch: true}), nil, nil, 0},
		{"NTLM first, MIC", []asn1.ObjectIdentifier{oidNTLM, oidKRB5}, good(&ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true}), nil, nil, 1},
		{"NTLM second (Kerberos disabled)", []asn1.ObjectIdentifier{oidMSKRB5, oidKRB5, oidNTLM}, &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true}, nil, nil, 1},
		{"NEGOEX first", []asn1.ObjectIdentifier{oidNEGOEX, oidNTLM}, &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true}, nil, nil, 1},
		{"mechListMIC missing after NTLM MIC", []asn1.ObjectIdentifier{oidNTLM}, &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true},
			func([]byte) []byte { return nil }, authn.ErrBadCredentials, 0},
		{"mechListMIC missing after request-mic", []asn1.ObjectIdentifier{oidKRB5, oidNTLM}, &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", KeyExch: true},
			nil, authn.ErrBadCredentials, 0},
		{"mechListMIC tampered", []asn1.ObjectIdentifier{oidNTLM}, &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true},
			func(m []byte) []byte { m[5] ^= 1; return m }, authn.ErrBadCredentials, 0},
		{"mechListMIC short", []asn1.ObjectIdentifier{oidNTLM}, &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true},
			func(m []byte) []byte { return m[:12] }, authn.ErrBadCredentials, 0},
		{"wrong password", []asn1.ObjectIdentifier{oidNTLM}, &ntlmtest.Client{User: "alice", Password: "x", MIC: true}, nil, authn.ErrBadCredentials, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := spnegoNTLM(t, tc.mechs, tc.c, tc.mangle)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if a.Sealer() != nil || a.Principal() != (authn.Principal{}) {
					t.Fatal("failed context leaks state")
				}
				return
			}
			roundTrip(t, a.Sealer(), tc.c.Session, tc.seq)
		})
	}
}

// TestOldMICQuirk: some old initiators repeat the responseToken as the
// mechListMIC; it is ignored (the context still needs no MIC here).
func TestOldMICQuirk(t *testing.T) {
	c := &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", KeyExch: true}
	a := newAcceptor()
	out, _, err := a.Step(context.Background(), authn.ConnInfo{}, initToken(t, []asn1.ObjectIdentifier{oidNTLM}, c.Negotiate(), nil))
	if err != nil {
		t.Fatal(err)
	}
	auth, _ := c.Authenticate(parseResp(t, out).ResponseToken)
	if _, done, err := a.Step(context.Background(), authn.ConnInfo{}, respToken(t, auth, auth)); err != nil || !done {
		t.Fatalf("%v %v", done, err)
	}
}

func TestRawNTLMInNegotiate(t *testing.T) {
	for _, ctor := range []func(spnego.Config) authn.Context{spnego.NewAcceptor, spnego.NewNTLMSchemeAcceptor} {
		c := &ntlmtest.Client{User: "alice", Password: "Secr3t!pass", MIC: true, KeyExch: true}
		a := ctor(spnego.Config{NTLM: ntlmFactory})
		ch, done, err := a.Step(context.Background(), authn.ConnInfo{}, c.Negotiate())
		if err != nil || done || !ntlm.IsNTLMToken(ch) {
			t.Fatalf("raw leg 1: %x %v %v", ch, done, err)
		}
		auth, _ := c.Authenticate(ch)
		out, done, err := a.Step(context.Background(), authn.ConnInfo{}, auth)
		if err != nil || !done || out != nil {
			t.Fatalf("raw leg 2: %x %v %v", out, done, err)
		}
		// No SPNEGO, no mechListMIC, no reset: sequence numbers start at 0.
		roundTrip(t, a.Sealer(), c.Session, 0)
		if _, done, err := a.Step(context.Background(), authn.ConnInfo{}, auth); !done || !errors.Is(err, authn.ErrContextComplete) {
			t.Fatalf("step after completion: %v", err)
		}
	}
}

func TestNTLMSchemeRefusesSPNEGO(t *testing.T) {
	a := spnego.NewNTLMSchemeAcceptor(spnego.Config{NTLM: ntlmFactory})
	c := &ntlmtest.Client{User: "alice", Password: "Secr3t!pass"}
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, initToken(t, []asn1.ObjectIdentifier{oidNTLM}, c.Negotiate(), nil)); !errors.Is(err, authn.ErrMalformed) {
		t.Fatalf("SPNEGO on NTLM scheme: %v", err)
	}
}

func TestUnsupported(t *testing.T) {
	krbAPReq := append([]byte{0x60, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02}, 0x01, 0x00)
	for name, tok := range map[string][]byte{
		"raw Kerberos, no Kerberos":  krbAPReq,
		"SPNEGO with only Kerberos":  initToken(t, []asn1.ObjectIdentifier{oidMSKRB5, oidKRB5}, []byte("x"), nil),
		"GSS token of unknown mech":  []byte{0x60, 0x05, 0x06, 0x03, 0x2a, 0x03, 0x04},
		"SPNEGO with only NEGOEX":    initToken(t, []asn1.ObjectIdentifier{oidNEGOEX}, []byte("x"), nil),
		"SPNEGO: NTLM factory unset": nil,
	} {
		t.Run(name, func(t *testing.T) {
			a := newAcceptor()
			if tok == nil {
				a = spnego.NewAcceptor(spnego.Config{})
				tok = initToken(t, []asn1.ObjectIdentifier{oidNTLM}, []byte("NTLMSSP\x00"), nil)
			}
			if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, tok); !errors.Is(err, authn.ErrUnsupported) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

// --- the Kerberos hook, with a fake mechanism ----------------------------

type fakeKrb struct {
	key  []byte
	legs int
	done bool
}

func (f *fakeKrb) Step(_ context.Context, _ authn.ConnInfo, in []byte) ([]byte, bool, error) {
	f.legs++
	if !bytes.HasPrefix(in, []byte("AP-REQ")) {
		return nil, false, authn.ErrMalformed
	}
	f.done = true
	return []byte("AP-REP"), true, nil
}
func (f *fakeKrb) Principal() authn.Principal {
	return authn.Principal{Name: "alice@EXAMPLE.TEST", Mechanism: "kerberos"}
}
func (f *fakeKrb) Sealer() authn.Sealer { return nil }
func (f *fakeKrb) SignMIC(msg []byte) ([]byte, error) {
	h := hmac.New(sha256.New, append([]byte("acceptor"), f.key...))
	h.Write(msg)
	return h.Sum(nil), nil
}
func (f *fakeKrb) VerifyMIC(msg, sig []byte) error {
	h := hmac.New(sha256.New, append([]byte("initiator"), f.key...))
	h.Write(msg)
	if !hmac.Equal(h.Sum(nil), sig) {
		return errors.New("bad MIC")
	}
	return nil
}

func clientMIC(msg []byte) []byte {
	h := hmac.New(sha256.New, []byte("initiatork"))
	h.Write(msg)
	return h.Sum(nil)
}

func TestKerberosHook(t *testing.T) {
	krb := &fakeKrb{key: []byte("k")}
	cfg := spnego.Config{NTLM: ntlmFactory, Kerberos: func() authn.Context { return krb }}

	// Preferred Kerberos (Windows lists MS-KRB5 first): one leg, the
	// supportedMech is the client's first OID, no mechListMIC.
	a := spnego.NewAcceptor(cfg)
	mechs := []asn1.ObjectIdentifier{oidMSKRB5, oidKRB5, oidNTLM}
	out, done, err := a.Step(context.Background(), authn.ConnInfo{}, initToken(t, mechs, []byte("AP-REQ"), nil))
	if err != nil || !done {
		t.Fatalf("%v %v", done, err)
	}
	r := parseResp(t, out)
	if r.NegState != 0 || !r.SupportedMech.Equal(oidMSKRB5) || string(r.ResponseToken) != "AP-REP" || r.MechListMIC != nil {
		t.Fatalf("reply %+v", r)
	}
	if a.Principal().Mechanism != "kerberos" {
		t.Errorf("principal %+v", a.Principal())
	}

	// Kerberos not first: request-mic; the acceptor completes and sends its
	// MIC with the AP-REP, then waits for the client's.
	krb = &fakeKrb{key: []byte("k")}
	a = spnego.NewAcceptor(cfg)
	mechs = []asn1.ObjectIdentifier{oidNEGOEX, oidKRB5}
	list := mustMarshal(t, mechs, "")
	out, done, err = a.Step(context.Background(), authn.ConnInfo{}, initToken(t, mechs, []byte("negoex"), nil))
	if err != nil || done {
		t.Fatalf("%v %v", done, err)
	}
	if r := parseResp(t, out); r.NegState != 3 || !r.SupportedMech.Equal(oidKRB5) {
		t.Fatalf("reply %+v", r)
	}
	out, done, err = a.Step(context.Background(), authn.ConnInfo{}, respToken(t, []byte("AP-REQ"), nil))
	if err != nil || done {
		t.Fatalf("%v %v", done, err)
	}
	r = parseResp(t, out)
	srvMIC, _ := krb.SignMIC(list)
	if r.NegState != 1 || string(r.ResponseToken) != "AP-REP" || !bytes.Equal(r.MechListMIC, srvMIC) {
		t.Fatalf("reply %+v", r)
	}
	out, done, err = a.Step(context.Background(), authn.ConnInfo{}, respToken(t, nil, clientMIC(list)))
	if err != nil || !done {
		t.Fatalf("%v %v", done, err)
	}
	if r := parseResp(t, out); r.NegState != 0 || r.MechListMIC != nil || r.ResponseToken != nil {
		t.Fatalf("final %+v", r)
	}

	// Same, with a bad client MIC.
	krb = &fakeKrb{key: []byte("k")}
	a = spnego.NewAcceptor(cfg)
	a.Step(context.Background(), authn.ConnInfo{}, initToken(t, mechs, nil, nil))
	a.Step(context.Background(), authn.ConnInfo{}, respToken(t, []byte("AP-REQ"), nil))
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, respToken(t, nil, []byte("forged"))); !errors.Is(err, authn.ErrBadCredentials) {
		t.Fatalf("bad MIC: %v", err)
	}

	// Raw krb5 token (pywinrm): handed to the Kerberos context unchanged.
	krb = &fakeKrb{key: []byte("k")}
	a = spnego.NewAcceptor(cfg)
	raw := append([]byte{0x60, 0x11, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02}, "AP-REQ"...)
	raw[1] = byte(len(raw) - 2)
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, raw); !errors.Is(err, authn.ErrMalformed) { // fake wants a bare "AP-REQ" prefix
		t.Fatalf("raw krb5: %v", err)
	}
	if krb.legs != 1 {
		t.Fatal("raw krb5 token did not reach the Kerberos context")
	}
}

// --- go-ntlmssp's HTTP Negotiator (masterzen/winrm's transport) ----------

type connKey struct{}

type connState struct{ ctx authn.Context }

func TestGoNTLMSSPNegotiatorOverHTTP(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := r.Context().Value(connKey{}).(*connState)
		h := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Negotiate ")
		if !ok {
			w.Header().Add("WWW-Authenticate", "Negotiate")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		in, err := base64.StdEncoding.DecodeString(tok)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if st.ctx == nil {
			st.ctx = newAcceptor()
		}
		out, done, err := st.ctx.Step(context.Background(), authn.ConnInfo{}, in)
		if err != nil {
			st.ctx = nil
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if out != nil {
			w.Header().Set("WWW-Authenticate", "Negotiate "+base64.StdEncoding.EncodeToString(out))
		}
		if !done {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello "+st.ctx.Principal().Name)
	}))
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, &connState{})
	}
	srv.Start()
	defer srv.Close()

	client := &http.Client{Transport: gontlm.Negotiator{RoundTripper: &http.Transport{}}}
	for _, tc := range []struct {
		user, pass string
		status     int
	}{
		{`WINRMD\alice`, "Secr3t!pass", 200},
		{"alice", "wrong", 401},
	} {
		req, _ := http.NewRequest("POST", srv.URL+"/wsman", strings.NewReader("<s:Envelope/>"))
		req.SetBasicAuth(tc.user, tc.pass)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: status %d %s", tc.user, resp.StatusCode, body)
		}
		if tc.status == 200 && string(body) != `hello WINRMD\alice` {
			t.Errorf("body %q", body)
		}
	}
}

func TestStepAfterFailure(t *testing.T) {
	a := newAcceptor()
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, []byte{0xa1, 0x00}); !errors.Is(err, authn.ErrMalformed) {
		t.Fatalf("NegTokenResp first: %v", err)
	}
	c := &ntlmtest.Client{User: "alice", Password: "Secr3t!pass"}
	if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, initToken(t, []asn1.ObjectIdentifier{oidNTLM}, c.Negotiate(), nil)); err == nil {
		t.Fatal("failed context continued")
	}
}
