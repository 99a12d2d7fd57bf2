package ntlm

// MS-NLMP 4.2.4 (NTLMv2 authentication) test vectors, for every derivation
// the acceptor performs.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn"

	//lint:ignore SA1019 RFC 1320 vectors for the MD4 the NT hash is made of.
	"golang.org/x/crypto/md4"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

const (
	vUser     = "User"
	vDomain   = "Domain"
	vPassword = "Password"
	vFlags    = FlagKeyExch | Flag56 | Flag128 | FlagVersion | FlagTargetInfo | FlagESS |
		FlagTypeServer | FlagAlwaysSign | FlagNTLM | FlagSeal | FlagSign | FlagOEM | FlagUnicode
)

var (
	vServerChallenge = []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	vClientChallenge = bytes.Repeat([]byte{0xaa}, 8)
	vRandomKey       = bytes.Repeat([]byte{0x55}, 16)
)

// vTemp is the NTLMv2 client blob of MS-NLMP 4.2.4.1.3: time 0, client
// challenge aa*8, the CHALLENGE's AV pairs (NbDomainName "Domain",
// NbComputerName "Server", EOL) and 4 zero bytes.
func vTemp() []byte {
	var b []byte
	b = append(b, 1, 1, 0, 0, 0, 0, 0, 0)
	b = append(b, make([]byte, 8)...)
	b = append(b, vClientChallenge...)
	b = append(b, 0, 0, 0, 0)
	b = appendAV(b, avNbDomainName, encodeUTF16("Domain"))
	b = appendAV(b, avNbComputerName, encodeUTF16("Server"))
	b = appendAV(b, avEOL, nil)
	b = append(b, 0, 0, 0, 0)
	return b
}

func TestMD4(t *testing.T) {
	// RFC 1320 appendix A.5.
	for _, tc := range []struct{ in, want string }{
		{"", "31d6cfe0d16ae931b73c59d7e0c089c0"},
		{"a", "bde52cb31de33e46245e05fbdbd6fb24"},
		{"abc", "a448017aaf21d8525fc10ae87aa6729d"},
		{"message digest", "d9130a8164549fe818874806e1c7014b"},
		{"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"},
		{"12345678901234567890123456789012345678901234567890123456789012345678901234567890", "e33b4ddc9c38f2199c3e7b164fcc0536"},
	} {
		h := md4.New()
		h.Write([]byte(tc.in))
		got := h.Sum(nil)
		if hex.EncodeToString(got[:]) != tc.want {
			t.Errorf("MD4(%q) = %x, want %s", tc.in, got, tc.want)
		}
	}
	// MS-NLMP 4.2.2.1.2 NTOWFv1("Password").
	if got := hex.EncodeToString(NTHash(vPassword)); got != "a4f49c406510bdcab6824ee7c30fd852" {
		t.Errorf("NTHash(Password) = %s", got)
	}
}

func TestVectorsDerivations(t *testing.T) {
	respKey := NTOWFv2(NTHash(vPassword), vUser, vDomain)
	if got, want := respKey, unhex(t, "0c868a403bfd7a93a3001ef22ef02e3f"); !bytes.Equal(got, want) {
		t.Fatalf("NTOWFv2 = %x, want %x", got, want)
	}
	proof := ntProofStr(respKey, vServerChallenge, vTemp())
	if want := unhex(t, "68cd0ab851e51c96aabc927bebef6a1c"); !bytes.Equal(proof, want) {
		t.Fatalf("NTProofStr = %x, want %x", proof, want)
	}
	sbk := sessionBaseKeyV2(respKey, proof)
	if want := unhex(t, "8de40ccadbc14a82f15cb0ad0de95ca3"); !bytes.Equal(sbk, want) {
		t.Fatalf("SessionBaseKey = %x, want %x", sbk, want)
	}
	// The client encrypts the random session key with the KeyExchangeKey;
	// the acceptor decrypts it back.
	enc := rc4Once(sbk, vRandomKey)
	if want := unhex(t, "c5dad2544fc9799094ce1ce90bc9d03e"); !bytes.Equal(enc, want) {
		t.Fatalf("EncryptedRandomSessionKey = %x, want %x", enc, want)
	}
	if got := rc4Once(sbk, enc); !bytes.Equal(got, vRandomKey) {
		t.Fatalf("decrypted session key = %x", got)
	}
	// LMv2 response (HMAC_MD5(NTOWFv2, SC || CC) || CC), a further check
	// of NTOWFv2 and the HMAC helper.
	lm := append(hmacMD5(respKey, vServerChallenge, vClientChallenge), vClientChallenge...)
	if want := unhex(t, "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"); !bytes.Equal(lm, want) {
		t.Fatalf("LMv2 = %x, want %x", lm, want)
	}
	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"ClientSignKey", signKey(vRandomKey, magicClientSign), "4788dc861b4782f35d43fd98fe1a2d39"},
		{"ServerSignKey", signKey(vRandomKey, magicServerSign), "d04d6f10741041d1d246d64188d7a8ad"},
		{"ClientSealKey", sealKey(vFlags, vRandomKey, magicClientSeal), "59f600973cc4960a25480a7c196e4c58"},
		{"ServerSealKey", sealKey(vFlags, vRandomKey, magicServerSeal), "9355f3a957c1583d25c4c2f11e40390e"},
	} {
		if hex.EncodeToString(tc.got) != tc.want {
			t.Errorf("%s = %x, want %s", tc.name, tc.got, tc.want)
		}
	}
}

var vPlaintext = encodeUTF16("Plaintext")

func TestVectorsSealKeyExch(t *testing.T) {
	// Client view seals "Plaintext" with seq 0.
	c := NewClientSession(vFlags, vRandomKey)
	sig, data, err := c.Seal(vPlaintext)
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, "54e50165bf1936dc996020c1811b0f06fb5f"); !bytes.Equal(data, want) {
		t.Errorf("sealed = %x, want %x", data, want)
	}
	if want := unhex(t, "010000007fb38ec5c55d497600000000"); !bytes.Equal(sig, want) {
		t.Errorf("signature = %x, want %x", sig, want)
	}
	// The acceptor unseals it.
	s := newSession(vFlags, vRandomKey, true)
	plain, err := s.Unseal(sig, data)
	if err != nil || !bytes.Equal(plain, vPlaintext) {
		t.Fatalf("Unseal = %x, %v", plain, err)
	}
	if out, in := s.Sequence(); out != 0 || in != 1 {
		t.Errorf("sequence after one inbound message = %d/%d", out, in)
	}
}

func TestVectorsSignatureWithoutKeyExch(t *testing.T) {
	flags := vFlags &^ FlagKeyExch
	c := newSession(flags, vRandomKey, false)
	sig, _, err := c.Seal(vPlaintext)
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, "0100000070352851f256430900000000"); !bytes.Equal(sig, want) {
		t.Errorf("signature without KEY_EXCH = %x, want %x", sig, want)
	}
	s := newSession(flags, vRandomKey, true)
	data := rc4Once(sealKey(flags, vRandomKey, magicClientSeal), vPlaintext)
	if plain, err := s.Unseal(sig, data); err != nil || !bytes.Equal(plain, vPlaintext) {
		t.Fatalf("Unseal = %x, %v", plain, err)
	}
}

// vectorAuthenticate builds the MS-NLMP 4.2.4 AUTHENTICATE (no MIC: the
// example CHALLENGE has no timestamp) from the listed values.
func vectorAuthenticate(t testing.TB) []byte {
	respKey := NTOWFv2(NTHash(vPassword), vUser, vDomain)
	temp := vTemp()
	nt := append(ntProofStr(respKey, vServerChallenge, temp), temp...)
	lm := make([]byte, 24)
	enc := unhex(t, "c5dad2544fc9799094ce1ce90bc9d03e")
	payload := [][]byte{lm, nt, encodeUTF16(vDomain), encodeUTF16(vUser), encodeUTF16("COMPUTER"), enc}
	msg := make([]byte, 72)
	copy(msg, signature)
	binary.LittleEndian.PutUint32(msg[8:], typeAuthenticate)
	off := 72
	for i, p := range payload {
		putField(msg[12+8*i:], len(p), off)
		off += len(p)
	}
	binary.LittleEndian.PutUint32(msg[60:], vFlags)
	copy(msg[64:], []byte{5, 0, 0x28, 0x0a, 0, 0, 0, 0x0f})
	for _, p := range payload {
		msg = append(msg, p...)
	}
	return msg
}

type mapSource map[string][]byte

func (m mapSource) NTHash(user string) ([]byte, error) {
	if h, ok := m[user]; ok {
		return h, nil
	}
	return nil, authn.ErrUnknownAccount
}

type fixedReader []byte

func (f fixedReader) Read(p []byte) (int, error) { return copy(p, f), nil }

// TestVectorsAcceptor runs the acceptor over the spec's AUTHENTICATE and
// then unseals the spec's client message.
func TestVectorsAcceptor(t *testing.T) {
	a := NewAcceptor(Config{
		Verifier: NewNTHashVerifier(mapSource{vUser: NTHash(vPassword)}),
		Now:      func() time.Time { return time.Unix(0, 0) },
	})
	a.rand = fixedReader(vServerChallenge)
	neg := []byte("NTLMSSP\x00\x01\x00\x00\x00\x33\x82\x8a\xe2")
	if _, done, err := a.Step(context.Background(), authn.ConnInfo{}, neg); err != nil || done {
		t.Fatalf("negotiate: done=%v err=%v", done, err)
	}
	if _, done, err := a.Step(context.Background(), authn.ConnInfo{}, vectorAuthenticate(t)); err != nil || !done {
		t.Fatalf("authenticate: done=%v err=%v", done, err)
	}
	if p := a.Principal(); p.Name != `Domain\User` || p.Domain != "Domain" || p.Mechanism != "ntlm" {
		t.Errorf("principal = %+v", p)
	}
	s := a.Sealer()
	if s == nil {
		t.Fatal("no sealer")
	}
	plain, err := s.Unseal(unhex(t, "010000007fb38ec5c55d497600000000"), unhex(t, "54e50165bf1936dc996020c1811b0f06fb5f"))
	if err != nil || !bytes.Equal(plain, vPlaintext) {
		t.Fatalf("Unseal = %x, %v", plain, err)
	}
	// Replaying the same message must fail (sequence 1 expected now) and
	// kill the session.
	_, err = s.Unseal(unhex(t, "010000007fb38ec5c55d497600000000"), unhex(t, "54e50165bf1936dc996020c1811b0f06fb5f"))
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("replay: %v", err)
	}
	if _, _, err := s.Seal([]byte("x")); !errors.Is(err, ErrSessionDead) {
		t.Fatalf("after failure: %v", err)
	}
	if _, done, err := a.Step(context.Background(), authn.ConnInfo{}, neg); !done || !errors.Is(err, authn.ErrContextComplete) {
		t.Fatalf("step after completion: %v %v", done, err)
	}
}

func TestVerifierWrongDomainFallsBackToEmpty(t *testing.T) {
	// A client that hashed with an empty domain but sent one.
	h := NTHash(vPassword)
	respKey := NTOWFv2(h, vUser, "")
	temp := vTemp()
	nt := append(ntProofStr(respKey, vServerChallenge, temp), temp...)
	var ch [8]byte
	copy(ch[:], vServerChallenge)
	res, err := NewNTHashVerifier(mapSource{vUser: h}).Verify(context.Background(), VerifyRequest{
		User: vUser, Domain: "SOMEWHERE", ServerChallenge: ch, NtResponse: nt,
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := sessionBaseKeyV2(respKey, nt[:16]); !bytes.Equal(res.SessionBaseKey, want) {
		t.Errorf("session key %x, want %x", res.SessionBaseKey, want)
	}
}
