package kerberos

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/internal/der"
	"github.com/winrmd/winrmd/authn/spnego"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// The fuzz targets need no KDC: an in-memory keytab and tickets made with
// gokrb5's NewTicket, at a fixed time, so the seeds stay valid forever and
// the fuzzer starts from tokens that reach every check.

var fuzzNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func fuzzKeytab() *keytab.Keytab {
	kt := keytab.New()
	if err := kt.AddEntry("HTTP/fuzz.test", "FUZZ.TEST", "fuzz-service-pw", fuzzNow, 2, 18); err != nil {
		panic(err)
	}
	return kt
}

func fuzzConfig(kt *keytab.Keytab) *Config {
	c := &Config{Keytab: NewKeytab(kt), Replay: NewReplayCache(16), Now: func() time.Time { return fuzzNow }}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return c
}

// fuzzAPReq builds a GSS-framed AP-REQ for alice@FUZZ.TEST.
func fuzzAPReq(kt *keytab.Keytab, flagsGSS uint32, cusec int) ([]byte, types.Authenticator, types.EncryptionKey) {
	cname := types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, "alice")
	sname := types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "HTTP/fuzz.test")
	tkt, key, err := messages.NewTicket(cname, "FUZZ.TEST", sname, "FUZZ.TEST", types.NewKrbFlags(), kt, 18, 2,
		fuzzNow, fuzzNow, fuzzNow.Add(10*time.Hour), fuzzNow.Add(10*time.Hour))
	if err != nil {
		panic(err)
	}
	auth, err := types.NewAuthenticator("FUZZ.TEST", cname)
	if err != nil {
		panic(err)
	}
	auth.CTime, auth.Cusec, auth.SeqNumber = fuzzNow, cusec, 12345
	ck := make([]byte, 24)
	binary.LittleEndian.PutUint32(ck, 16)
	binary.LittleEndian.PutUint32(ck[20:], flagsGSS)
	auth.Cksum = types.Checksum{CksumType: gssChecksumType, Checksum: ck}
	req, err := messages.NewAPReq(tkt, key, auth)
	if err != nil {
		panic(err)
	}
	types.SetFlag(&req.APOptions, flags.APOptionMutualRequired)
	b, err := req.Marshal()
	if err != nil {
		panic(err)
	}
	return frameToken(OIDKRB5, tokAPReq, b), auth, key
}

var oidNTLM = []byte{0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a}

// spnegoInit wraps a krb5 token in a NegTokenInit offering MS-KRB5, KRB5
// and NTLM (as Windows does).
func spnegoInit(mech []byte) []byte {
	tok, _ := spnegoInitWith([][]byte{OIDMSKRB5, OIDKRB5, oidNTLM}, mech)
	return tok
}

// spnegoInitWith builds a NegTokenInit; it also returns the MechTypeList
// DER the mechListMIC covers.
func spnegoInitWith(mechs [][]byte, mech []byte) ([]byte, []byte) {
	oids := []byte{}
	for _, o := range mechs {
		oids = append(oids, 0x06, byte(len(o)))
		oids = append(oids, o...)
	}
	seq := derElem(0x30, oids)
	body := append(derElem(0xa0, seq), derElem(0xa2, derElem(0x04, mech))...)
	init := derElem(0xa0, derElem(0x30, body))
	spnegoOID := []byte{0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02}
	return derElem(0x60, append(spnegoOID, init...)), seq
}

func derElem(tag byte, content []byte) []byte { return der.Element(asn1.Tag(tag), content) }

func seedTokens() [][]byte {
	kt := fuzzKeytab()
	mutual, _, _ := fuzzAPReq(kt, flagMutual|flagConf|flagInteg, 1)
	plain, _, _ := fuzzAPReq(kt, flagConf, 2)
	return [][]byte{mutual, plain, spnegoInit(mutual), mutual[:40], {0x60, 0x00}}
}

func FuzzAcceptAPReq(f *testing.F) {
	for _, s := range seedTokens() {
		f.Add(s)
	}
	kt := fuzzKeytab()
	f.Fuzz(func(t *testing.T, in []byte) {
		a := NewAcceptor(fuzzConfig(kt))
		out, done, err := a.Step(context.Background(), authn.ConnInfo{}, in)
		if err != nil {
			if done || out != nil || a.Sealer() != nil {
				t.Fatalf("failed Step returned done=%v out=%d sealer", done, len(out))
			}
			return
		}
		if !done || a.Principal().Name == "" {
			t.Fatalf("accepted without a principal")
		}
		if _, _, err := a.Step(context.Background(), authn.ConnInfo{}, in); err == nil {
			t.Fatal("second Step on a complete context accepted")
		}
	})
}

func FuzzSPNEGOKerberos(f *testing.F) {
	for _, s := range seedTokens() {
		f.Add(s, []byte(nil))
	}
	kt := fuzzKeytab()
	f.Fuzz(func(t *testing.T, first, second []byte) {
		cfg := fuzzConfig(kt)
		a := spnego.NewAcceptor(spnego.Config{Kerberos: func() authn.Context { return NewAcceptor(cfg) }})
		_, done, err := a.Step(context.Background(), authn.ConnInfo{}, first)
		if err != nil || done || second == nil {
			return
		}
		_, _, _ = a.Step(context.Background(), authn.ConnInfo{}, second)
	})
}

// fuzzContext is a complete context pair on a fixed subkey.
func fuzzContext() (ini, acc *seqState) {
	key := types.EncryptionKey{KeyType: 18, KeyValue: bytes.Repeat([]byte{0x5a}, 32)}
	ini, _ = newSeqState(key, false, true, 100, 200)
	acc, _ = newSeqState(key, true, true, 200, 100)
	return ini, acc
}

func FuzzUnwrap(f *testing.F) {
	ini, _ := fuzzContext()
	for _, m := range [][]byte{nil, []byte("x"), []byte("<s:Envelope/>"), bytes.Repeat([]byte("y"), 100)} {
		tok, n, err := ini.Wrap(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok[:n], tok[n:])
	}
	f.Fuzz(func(t *testing.T, sig, data []byte) {
		_, acc := fuzzContext()
		plain, err := sealer{acc}.Unseal(sig, data)
		if err == nil && len(plain) > len(sig)+len(data) {
			t.Fatalf("plaintext longer than the token")
		}
		// In place, from a fresh context: the same verdict and plaintext,
		// and the plaintext within data whenever it fits there.
		_, acc2 := fuzzContext()
		sig2, data2 := bytes.Clone(sig), bytes.Clone(data)
		plain2, err2 := sealer{acc2}.UnsealInPlace(sig2, data2)
		if (err == nil) != (err2 == nil) || !bytes.Equal(plain, plain2) {
			t.Fatalf("in place: %q %v, not %q %v", plain2, err2, plain, err)
		}
		if err2 == nil && len(plain2) <= len(data2) && len(plain2) > 0 && &plain2[0] != &data2[0] {
			t.Fatal("in place: the plaintext is not in data")
		}
	})
}

// FuzzWrapRoundTrip: whatever the message, the acceptor opens what the
// initiator sealed and the initiator what the acceptor sealed.
func FuzzWrapRoundTrip(f *testing.F) {
	f.Add([]byte("hello"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, msg []byte) {
		ini, acc := fuzzContext()
		tok, n, err := ini.Wrap(msg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := sealer{acc}.UnsealInPlace(tok[:n], tok[n:])
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("acceptor: %v", err)
		}
		sig, data, err := sealer{acc}.Seal(msg)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ini.Unwrap(append(append([]byte{}, sig...), data...))
		if err != nil || !bytes.Equal(back, msg) {
			t.Fatalf("initiator: %v", err)
		}
	})
}

// TestFuzzSeedsAccepted: the seeds reach the end of the acceptor (a
// valid token is accepted), so the fuzzer starts from deep inputs.
func TestFuzzSeedsAccepted(t *testing.T) {
	kt := fuzzKeytab()
	tok, auth, key := fuzzAPReq(kt, flagMutual, 7)
	a := NewAcceptor(fuzzConfig(kt))
	out, done, err := a.Step(context.Background(), authn.ConnInfo{}, tok)
	if err != nil || !done || out == nil {
		t.Fatalf("seed AP-REQ: done %v err %v", done, err)
	}
	s := &session{key: key}
	ini := verifyAPRep(t, s, out, auth)
	w, n, _ := ini.Wrap([]byte("seed"))
	if got, err := a.Sealer().Unseal(w[:n], w[n:]); err != nil || string(got) != "seed" {
		t.Fatalf("seed wrap: %v", err)
	}
	sp := spnego.NewAcceptor(spnego.Config{Kerberos: func() authn.Context { return NewAcceptor(fuzzConfig(kt)) }})
	if _, done, err := sp.Step(context.Background(), authn.ConnInfo{}, spnegoInit(tok)); err != nil || !done {
		t.Fatalf("seed SPNEGO: done %v err %v", done, err)
	}
	if os.Getenv("WINRMD_WRITE_FUZZ_SEEDS") != "" {
		writeSeeds(t)
	}
}

// writeSeeds stores the seeds in testdata/fuzz (go test's corpus format).
func writeSeeds(t *testing.T) {
	ini, _ := fuzzContext()
	wrapTok, n, _ := ini.Wrap([]byte("<s:Envelope/>"))
	toks := seedTokens()
	files := map[string]string{
		"FuzzAcceptAPReq/mutual":      corpus(toks[0]),
		"FuzzAcceptAPReq/no-mutual":   corpus(toks[1]),
		"FuzzSPNEGOKerberos/init":     corpus(toks[2], nil),
		"FuzzUnwrap/envelope":         corpus(wrapTok[:n], wrapTok[n:]),
		"FuzzWrapRoundTrip/envelope":  corpus([]byte("<s:Envelope/>")),
		"FuzzAcceptAPReq/truncated":   corpus(toks[3]),
		"FuzzSPNEGOKerberos/raw-krb5": corpus(toks[0], nil),
	}
	for name, content := range files {
		p := filepath.Join("testdata", "fuzz", name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func corpus(args ...[]byte) string {
	s := "go test fuzz v1\n"
	for _, a := range args {
		s += fmt.Sprintf("[]byte(%q)\n", a)
	}
	return s
}
