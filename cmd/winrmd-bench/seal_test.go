package main

// Micro-benchmarks of the per-byte costs on the NTLM-sealed stdout path, to
// tell the bench client's share from the daemon's: the client's unseal
// (leanNTLM, with and without its keystream drawn ahead) and base64
// decode, and the daemon's seal as sealing.Encode runs it
// (ntlm.Session.AppendSeal into a reused buffer), over one
// 512000-byte ReceiveResponse-sized message.

import (
	"bytes"
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
	"github.com/winrmd/winrmd/authn/ntlm/ntlmtest"
)

type oneHash []byte

func (h oneHash) NTHash(string) ([]byte, error) { return h, nil }

// pair runs a real handshake between the bench's NTLM client (ntlmtest's
// handshake) and the project's acceptor and returns both sides' sessions.
func pair(tb testing.TB) (*leanNTLM, *ntlm.Session) {
	acc := ntlm.NewAcceptor(ntlm.Config{Verifier: ntlm.NewNTHashVerifier(oneHash(ntlm.NTHash("Passw0rd!"))),
		NetBIOSComputer: "BENCH", NetBIOSDomain: "BENCH"})
	cl := &ntlmtest.Client{User: "u", Password: "Passw0rd!", MIC: true, KeyExch: true}
	chal, _, err := acc.Step(context.Background(), authn.ConnInfo{}, cl.Negotiate())
	if err != nil {
		tb.Fatal(err)
	}
	auth, err := cl.Authenticate(chal)
	if err != nil {
		tb.Fatal(err)
	}
	if _, done, err := acc.Step(context.Background(), authn.ConnInfo{}, auth); err != nil || !done {
		tb.Fatalf("acceptor: done=%v err=%v", done, err)
	}
	return &leanNTLM{s: ntlm.NewClientSession(cl.Flags, cl.ESK)}, acc.Session()
}

const msgSize = 512000

// TestSealRoundTrip: the client's and the acceptor's sessions agree both
// ways, also when the client prepares its keystreams: a message of the
// prepared size uses them, one of another size does not, and the streams
// stay in step either way.
func TestSealRoundTrip(t *testing.T) {
	c, s := pair(t)
	// Whether each message could use what the last one prepared: the
	// client prepares for the next of the same size from aheadFrom up.
	ahead := []bool{false, false, true, false, true, false}
	for i, n := range []int{100, aheadFrom, aheadFrom, aheadFrom + 1, aheadFrom + 1, 300} {
		out0, in0 := c.s.KeystreamsUsed()
		msg := bytes.Repeat([]byte{byte(i)}, n)
		sig, data, err := s.Seal(msg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Unseal(sig, append([]byte(nil), data...))
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("message %d (%d bytes) from the acceptor: %v", i, n, err)
		}
		out, err := c.AppendSeal(nil, msg) // the path AppendSealed takes
		if err != nil {
			t.Fatal(err)
		}
		if got, err = s.Unseal(out[:c.SignatureSize()], out[c.SignatureSize():]); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("message %d (%d bytes) to the acceptor: %v", i, n, err)
		}
		if out1, in1 := c.s.KeystreamsUsed(); (out1 > out0) != ahead[i] || (in1 > in0) != ahead[i] {
			t.Fatalf("message %d (%d bytes): keystreams drawn ahead used out %v, in %v; want %v", i, n, out1 > out0, in1 > in0, ahead[i])
		}
		c.prepare(n, n)
	}
}

// BenchmarkServerSeal is the daemon's seal with the keystream drawn on the
// spot: what remains when the one drawn ahead does not fit.
func BenchmarkServerSeal(b *testing.B) {
	_, s := pair(b)
	msg := make([]byte, msgSize)
	var buf []byte
	b.SetBytes(msgSize)
	for b.Loop() {
		var err error
		if buf, err = s.AppendSeal(buf[:0], msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientUnseal: the client's unseal of one response, with the
// keystream drawn on the spot (cold) and drawn ahead between responses
// (ahead: the time counted is what stays on the response's path).
func BenchmarkClientUnseal(b *testing.B) {
	for _, ahead := range []bool{false, true} {
		name := "cold"
		if ahead {
			name = "ahead"
		}
		b.Run(name, func(b *testing.B) {
			c, s := pair(b)
			msg := make([]byte, msgSize)
			data := make([]byte, msgSize)
			b.SetBytes(msgSize)
			for b.Loop() {
				b.StopTimer()
				sig, ct, err := s.Seal(msg)
				if err != nil {
					b.Fatal(err)
				}
				copy(data, ct)
				if ahead {
					c.prepare(0, msgSize)
					// Between two responses the client has the daemon's
					// whole seal (about 2 ms for this size) for it.
					time.Sleep(5 * time.Millisecond)
				}
				b.StartTimer()
				if _, err := c.Unseal(sig, data); err != nil {
					b.Fatal(err)
				}
			}
		})
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
