package main

// Micro-benchmarks of the per-byte costs on the NTLM-sealed stdout path, to
// tell the bench client's share from the daemon's: the client's unseal
// (bodgit/ntlmssp) and base64 decode, and the daemon's ntlm.Session.Seal,
// over one 512000-byte ReceiveResponse-sized message.

import (
	"bytes"
	"context"
	"encoding/base64"
	"github.com/winrmd/winrmd/authn"
	"testing"

	"github.com/bodgit/ntlmssp"

	"github.com/winrmd/winrmd/authn/ntlm"
)

type oneHash []byte

func (h oneHash) NTHash(string) ([]byte, error) { return h, nil }

// pair runs a real handshake between bodgit's client and the project's
// acceptor and returns both sides' sessions.
func pair(tb testing.TB) (*ntlmssp.SecuritySession, *ntlm.Session) {
	acc := ntlm.NewAcceptor(ntlm.Config{Verifier: ntlm.NewNTHashVerifier(oneHash(ntlm.NTHash("Passw0rd!"))),
		NetBIOSComputer: "BENCH", NetBIOSDomain: "BENCH"})
	cl, err := ntlmssp.NewClient(ntlmssp.SetUserInfo("u", "Passw0rd!"), ntlmssp.SetDomain(""), ntlmssp.SetVersion(ntlmssp.DefaultVersion()))
	if err != nil {
		tb.Fatal(err)
	}
	neg, _ := cl.Authenticate(nil, nil)
	chal, _, err := acc.Step(context.Background(), authn.ConnInfo{}, neg)
	if err != nil {
		tb.Fatal(err)
	}
	auth, err := cl.Authenticate(chal, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if _, done, err := acc.Step(context.Background(), authn.ConnInfo{}, auth); err != nil || !done {
		tb.Fatalf("acceptor: done=%v err=%v", done, err)
	}
	return cl.SecuritySession(), acc.Session()
}

const msgSize = 512000

func TestSealRoundTrip(t *testing.T) {
	c, s := pair(t)
	msg := bytes.Repeat([]byte("<rsp:Stream>AAAA</rsp:Stream>"), 100)
	sig, data, err := s.Seal(msg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Unwrap(data, sig)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("unwrap: %v", err)
	}
}

func BenchmarkServerSeal(b *testing.B) {
	_, s := pair(b)
	msg := make([]byte, msgSize)
	b.SetBytes(msgSize)
	for b.Loop() {
		if _, _, err := s.Seal(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClientUnseal(b *testing.B) {
	c, s := pair(b)
	msg := make([]byte, msgSize)
	type m struct{ sig, data []byte }
	var ms []m
	for i := 0; i < 64; i++ {
		sig, data, _ := s.Seal(msg)
		ms = append(ms, m{sig, data})
	}
	b.SetBytes(msgSize)
	i := 0
	for b.Loop() {
		if i == len(ms) {
			b.StopTimer()
			c, s = pair(b)
			for j := range ms {
				ms[j].sig, ms[j].data, _ = s.Seal(msg)
			}
			i = 0
			b.StartTimer()
		}
		if _, err := c.Unwrap(ms[i].data, ms[i].sig); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkBase64Decode(b *testing.B) {
	raw := make([]byte, msgSize*3/4)
	enc := []byte(base64.StdEncoding.EncodeToString(raw))
	dst := make([]byte, len(raw))
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := base64.StdEncoding.Decode(dst, enc); err != nil {
			b.Fatal(err)
		}
	}
}
