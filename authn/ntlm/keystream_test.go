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
		for i, step := range []struct {
			prepare, seal int
			between       func()
			used          bool
		}{
			{prepare: 5000, seal: 5000, used: true},                       // used
			{prepare: 5000, seal: 5000, used: true},                       // used again, spare buffer
			{prepare: 5000, seal: 4999},                                   // other length: not used
			{prepare: 70000, seal: 70000, used: true},                     // grows the buffer
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
			{prepare: 1, seal: 1, used: true},
		} {
			prepSession.PrepareKeystream(step.prepare)
			if step.between != nil {
				step.between() // a Seal of the prepared size here takes it
			}
			before, _ := prepSession.KeystreamsUsed()
			seal(msg(step.seal))
			if after, _ := prepSession.KeystreamsUsed(); (after > before) != step.used {
				t.Fatalf("flags %#x step %d: the keystream drawn ahead used: %v, want %v", flags, i, after > before, step.used)
			}
		}
		if a, b := plainSession.outSeq, prepSession.outSeq; a != b {
			t.Fatalf("sequence numbers diverged: %d and %d", a, b)
		}
	}
}

// TestPreparedUnsealKeystream: unsealing with inbound keystream drawn ahead
// (PrepareUnsealKeystream), in place, verifies and decrypts exactly as
// Unseal does; a keystream that no longer fits is not used, and a tampered
// message still kills the session.
func TestPreparedUnsealKeystream(t *testing.T) {
	for _, flags := range []uint32{vFlags, vFlags &^ FlagKeyExch} {
		key := make([]byte, 16)
		_, _ = rand.Read(key)
		client := newSession(flags, key, false)
		plainSession := NewServerSession(flags, key)
		prepSession := NewServerSession(flags, key)
		for i, step := range []struct {
			prepare, n int
			used       bool
		}{
			{5000, 5000, true}, {5000, 5000, true}, {5000, 4999, false}, {0, 70000, false},
			{70000, 70000, true}, {300, 301, false}, {1, 1, true},
		} {
			_, before := prepSession.KeystreamsUsed()
			m := make([]byte, step.n)
			_, _ = rand.Read(m)
			sig, data, err := client.Seal(m)
			if err != nil {
				t.Fatal(err)
			}
			a, err := plainSession.Unseal(sig, bytes.Clone(data))
			if err != nil || !bytes.Equal(a, m) {
				t.Fatalf("step %d: Unseal: %v", i, err)
			}
			if step.prepare > 0 {
				prepSession.PrepareUnsealKeystream(step.prepare)
			}
			b, err := prepSession.UnsealInPlace(sig, bytes.Clone(data))
			if err != nil || !bytes.Equal(b, m) {
				t.Fatalf("flags %#x step %d: unseal with a prepared keystream: %v", flags, i, err)
			}
			if _, after := prepSession.KeystreamsUsed(); (after > before) != step.used {
				t.Fatalf("flags %#x step %d: the keystream drawn ahead used: %v, want %v", flags, i, after > before, step.used)
			}
		}
		m := make([]byte, 4096)
		sig, data, _ := client.Seal(m)
		data[100] ^= 1
		prepSession.PrepareUnsealKeystream(len(data))
		if _, err := prepSession.UnsealInPlace(sig, data); err == nil {
			t.Fatal("a tampered message unsealed with a prepared keystream")
		}
		if _, err := prepSession.Unseal(sig, data); err != ErrSessionDead {
			t.Fatalf("after a failed unseal: %v, want ErrSessionDead", err)
		}
	}
}

// TestAppendSealIntoUsedBuffer: AppendSeal does not clear the room it
// appends into, so a buffer that held an earlier message (its spare
// capacity full of old bytes) must give exactly the bytes a fresh one
// does: the signature and the ciphertext overwrite all of it.
func TestAppendSealIntoUsedBuffer(t *testing.T) {
	for _, flags := range []uint32{vFlags, vFlags &^ FlagKeyExch} {
		key := make([]byte, 16)
		_, _ = rand.Read(key)
		fresh, used := NewServerSession(flags, key), NewServerSession(flags, key)
		old := bytes.Repeat([]byte{0xee}, 4096)
		for _, n := range []int{0, 1, 100, 3000} {
			m := make([]byte, n)
			_, _ = rand.Read(m)
			want, err := fresh.AppendSeal([]byte("head"), m)
			if err != nil {
				t.Fatal(err)
			}
			buf := append(old[:0:len(old)], "head"...)
			got, err := used.AppendSeal(buf, m)
			if err != nil {
				t.Fatal(err)
			}
			if &got[0] != &old[0] {
				t.Fatalf("%d bytes: sealed into a new buffer, not the used one", n)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("flags %#x, %d bytes: sealed into a used buffer, the bytes differ", flags, n)
			}
			copy(old, bytes.Repeat([]byte{0xee}, len(old)))
		}
	}
}
