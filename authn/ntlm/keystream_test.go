package ntlm

import (
	"bytes"
	"crypto/rand"
	"testing"
)

// TestPreparedKeystreamSealsIdentically: sealing with keystream drawn ahead
// (PrepareKeystream) gives byte for byte the body and signature of sealing
// without it, and a keystream that no longer fits — another length,
// another Seal or a MIC in between, a reset of RC4 — is never used, so a
// sealed message is never out of sequence. With and without key exchange.
func TestPreparedKeystreamSealsIdentically(t *testing.T) {
	for _, flags := range []uint32{vFlags, vFlags &^ FlagKeyExch} {
		key := make([]byte, 16)
		_, _ = rand.Read(key)
		plainSession := NewServerSession(flags, key)
		prepSession := NewServerSession(flags, key)
		msg := func(n int) []byte {
			b := make([]byte, n)
			_, _ = rand.Read(b)
			return b
		}
		seal := func(m []byte) {
			t.Helper()
			want, err := plainSession.AppendSeal([]byte("head"), m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := prepSession.AppendSeal([]byte("head"), m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("flags %#x: a %d-byte message sealed differently with a prepared keystream", flags, len(m))
			}
		}
		seal(msg(1000))
		for _, step := range []struct {
			prepare, seal int
			between       func()
		}{
			{prepare: 5000, seal: 5000},                                   // used
			{prepare: 5000, seal: 5000},                                   // used again, spare buffer
			{prepare: 5000, seal: 4999},                                   // other length: not used
			{prepare: 70000, seal: 70000},                                 // grows the buffer
			{prepare: 300, seal: 300, between: func() { seal(msg(300)) }}, // another Seal first
			{prepare: 300, seal: 300, between: func() {
				m := msg(20)
				a, _ := plainSession.SignMIC(m)
				b, _ := prepSession.SignMIC(m)
				if !bytes.Equal(a, b) {
					t.Fatal("MIC differs after a prepared keystream")
				}
			}},
			{prepare: 300, seal: 300, between: func() { plainSession.ResetRC4(); prepSession.ResetRC4() }},
			{prepare: 1, seal: 1},
		} {
			prepSession.PrepareKeystream(step.prepare)
			if step.between != nil {
				step.between()
			}
			seal(msg(step.seal))
		}
		if a, b := plainSession.outSeq, prepSession.outSeq; a != b {
			t.Fatalf("sequence numbers diverged: %d and %d", a, b)
		}
	}
}
