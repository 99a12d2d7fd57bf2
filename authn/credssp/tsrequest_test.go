package credssp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/internal/der"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

func TestTSRequestRoundTrip(t *testing.T) {
	code := uint32(0xC000006D)
	nonce := bytes.Repeat([]byte{7}, NonceSize)
	for _, r := range []*TSRequest{
		{Version: 6, NegoToken: []byte("NTLMSSP\x00\x01")},
		{Version: 2, NegoToken: []byte{}},
		{Version: 5, NegoToken: []byte{1, 2}, PubKeyAuth: bytes.Repeat([]byte{9}, 300), ClientNonce: nonce},
		{Version: 6, AuthInfo: bytes.Repeat([]byte{3}, 70000/2)},
		{Version: 3, ErrorCode: &code},
	} {
		b := r.Marshal()
		got, err := ParseTSRequest(b)
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if !bytes.Equal(got.Marshal(), b) || got.Version != r.Version || !bytes.Equal(got.NegoToken, r.NegoToken) ||
			(r.ErrorCode != nil && (got.ErrorCode == nil || *got.ErrorCode != *r.ErrorCode)) {
			t.Errorf("round trip: %+v -> %+v", r, got)
		}
	}
}

// A TSRequest as pyspnego 0.12 sends its first leg (version 6, an SPNEGO
// NegTokenInit elided to 3 bytes), bytes written out by hand from MS-CSSP
// 2.2.1's ASN.1.
func TestTSRequestKnownBytes(t *testing.T) {
	b, _ := hex.DecodeString("30" + "12" + "a003020106" + "a10b" + "3009" + "3007" + "a005" + "0403" + "600102")
	r, err := ParseTSRequest(b)
	if err != nil || r.Version != 6 || !bytes.Equal(r.NegoToken, []byte{0x60, 1, 2}) {
		t.Fatalf("%+v %v", r, err)
	}
	if !bytes.Equal(r.Marshal(), b) {
		t.Errorf("marshal %x, want %x", r.Marshal(), b)
	}
}

func TestTSRequestRefusals(t *testing.T) {
	good := (&TSRequest{Version: 6, NegoToken: []byte{1}}).Marshal()
	cases := map[string][]byte{
		"truncated":         good[:len(good)-1],
		"trailing":          append(append([]byte{}, good...), 0),
		"no version":        {0x30, 0x00},
		"indefinite":        {0x30, 0x80, 0x00, 0x00},
		"out of order":      {0x30, 0x0a, 0xa1, 0x03, 0x30, 0x01, 0x00, 0xa0, 0x03, 0x02, 0x01, 0x06},
		"short nonce":       (&TSRequest{Version: 6, ClientNonce: []byte{1, 2}}).Marshal(),
		"non-minimal int":   {0x30, 0x06, 0xa0, 0x04, 0x02, 0x02, 0x00, 0x06},
		"two nego tokens":   {0x30, 0x17, 0xa0, 0x03, 0x02, 0x01, 0x06, 0xa1, 0x10, 0x30, 0x0e, 0x30, 0x05, 0xa0, 0x03, 0x04, 0x01, 0x00, 0x30, 0x05, 0xa0, 0x03, 0x04, 0x01, 0x00},
		"empty nego data":   {0x30, 0x09, 0xa0, 0x03, 0x02, 0x01, 0x06, 0xa1, 0x02, 0x30, 0x00},
		"version 0":         {0x30, 0x05, 0xa0, 0x03, 0x02, 0x01, 0x00},
		"high tag":          {0x30, 0x05, 0xbf, 0x03, 0x02, 0x01, 0x06},
		"unknown field [6]": {0x30, 0x0a, 0xa0, 0x03, 0x02, 0x01, 0x06, 0xa6, 0x03, 0x04, 0x01, 0x00},
	}
	for name, b := range cases {
		if _, err := ParseTSRequest(b); !errors.Is(err, authn.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	big := make([]byte, MaxMessage+1)
	if _, err := ParseTSRequest(big); !errors.Is(err, authn.ErrMalformed) {
		t.Errorf("oversized: %v", err)
	}
}

func TestTSCredentials(t *testing.T) {
	pw := utf16LE("pässwörd")
	b := MarshalTSCredentials("CORP", "alice", pw)
	c, err := ParseTSCredentials(b)
	if err != nil || c.Domain != "CORP" || c.User != "alice" || !bytes.Equal(c.Password, pw) {
		t.Fatalf("%+v %v", c, err)
	}
	c.Zero()
	if c.Password != nil || !bytes.Equal(b[len(b)-len(pw):], make([]byte, len(pw))) {
		t.Errorf("Zero left the password in the message buffer")
	}
	// Smart-card credentials (credType 2) are not accepted.
	var b2 cryptobyte.Builder
	b2.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(der.Context(0), func(b *cryptobyte.Builder) { b.AddASN1Int64(2) })
		field(b, 1, []byte{0x30, 0x00})
	})
	sc := b2.BytesOrPanic()
	if _, err := ParseTSCredentials(sc); !errors.Is(err, authn.ErrUnsupported) {
		t.Errorf("credType 2: %v", err)
	}
	for name, b := range map[string][]byte{
		"odd password":  MarshalTSCredentials("", "alice", []byte{1, 2, 3}),
		"empty user":    MarshalTSCredentials("", "", pw),
		"NUL in user":   MarshalTSCredentials("", "al\x00ice", pw),
		"long password": MarshalTSCredentials("", "alice", make([]byte, MaxPasswordBytes+2)),
		"empty message": {},
	} {
		if _, err := ParseTSCredentials(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The binding values of MS-CSSP 3.1.5: hashes over the literal magic
// strings (with their NUL), the nonce and the key, and for v2-4 the key
// and the key with its first byte plus one. Computed here independently
// with crypto/sha256 on the spelled-out input.
func TestBindings(t *testing.T) {
	key := []byte{0x30, 0x82, 0x01, 0x0a, 0x02}
	nonce := bytes.Repeat([]byte{0xab}, 32)
	in := append(append([]byte("CredSSP Client-To-Server Binding Hash\x00"), nonce...), key...)
	want := sha256.Sum256(in)
	if !bytes.Equal(ClientBinding(6, nonce, key), want[:]) {
		t.Error("v6 client binding")
	}
	in = append(append([]byte("CredSSP Server-To-Client Binding Hash\x00"), nonce...), key...)
	want = sha256.Sum256(in)
	if !bytes.Equal(ServerBinding(5, nonce, key), want[:]) {
		t.Error("v5 server binding")
	}
	if !bytes.Equal(ClientBinding(4, nil, key), key) {
		t.Error("v4 client binding is the key")
	}
	if sb := ServerBinding(2, nil, key); sb[0] != 0x31 || !bytes.Equal(sb[1:], key[1:]) || key[0] != 0x30 {
		t.Errorf("v2 server binding %x", sb)
	}
}

func FuzzTSRequest(f *testing.F) {
	nonce := bytes.Repeat([]byte{1}, NonceSize)
	f.Add((&TSRequest{Version: 6, NegoToken: []byte{1, 2, 3}}).Marshal())
	f.Add((&TSRequest{Version: 5, PubKeyAuth: []byte{4}, ClientNonce: nonce}).Marshal())
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseTSRequest(b)
		if err != nil {
			return
		}
		// Anything accepted re-encodes to the same bytes (DER is unique)
		// and parses again.
		if out := r.Marshal(); !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, out)
		}
	})
}

func FuzzTSCredentials(f *testing.F) {
	f.Add(MarshalTSCredentials("CORP", "alice", utf16LE("secret")))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseTSCredentials(b)
		if err != nil {
			return
		}
		if len(c.Password) > MaxPasswordBytes || c.User == "" {
			t.Fatalf("limits not applied: %+v", c)
		}
		if !bytes.Equal(MarshalTSCredentials(c.Domain, c.User, c.Password), b) {
			t.Fatalf("round trip differs")
		}
	})
}
