package kerberos

import (
	"bytes"
	"testing"

	"github.com/jcmturner/gokrb5/v8/types"
)

// Per-message costs of the wrap at WinRM envelope size (the sealed
// stdout/stdin rows of make bench).
func benchPair(b *testing.B, etype int32, n int) (*seqState, *seqState, []byte) {
	kl := 32
	if etype == 17 || etype == 19 {
		kl = 16
	}
	key := types.EncryptionKey{KeyType: etype, KeyValue: bytes.Repeat([]byte{1}, kl)}
	ini, _ := newSeqState(key, false, true, 0, 0)
	acc, _ := newSeqState(key, true, true, 0, 0)
	ini.checkRecv, acc.checkRecv = false, false
	b.SetBytes(int64(n))
	return ini, acc, bytes.Repeat([]byte("x"), n)
}

func BenchmarkWrapAES256(b *testing.B) {
	_, acc, msg := benchPair(b, 18, 500<<10)
	for b.Loop() {
		if _, _, err := acc.Wrap(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnwrapAES256(b *testing.B) {
	ini, acc, msg := benchPair(b, 18, 500<<10)
	tok, _, _ := ini.Wrap(msg)
	for b.Loop() {
		if _, err := acc.Unwrap(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrapAES256Generic is the same wrap through gokrb5's generic
// EncryptMessage, for comparison with the direct CTS path.
func BenchmarkWrapAES256Generic(b *testing.B) {
	_, acc, msg := benchPair(b, 18, 500<<10)
	acc.fastOut, acc.fastIn = nil, nil
	for b.Loop() {
		if _, _, err := acc.Wrap(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnwrapAES256Generic(b *testing.B) {
	ini, acc, msg := benchPair(b, 18, 500<<10)
	acc.fastOut, acc.fastIn = nil, nil
	tok, _, _ := ini.Wrap(msg)
	for b.Loop() {
		if _, err := acc.Unwrap(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendSealAES256 is the daemon's path for a response:
// sealer.AppendSeal into a buffer reused from response to response (the
// server's bodyPool), the token built in place.
func BenchmarkAppendSealAES256(b *testing.B) {
	_, acc, msg := benchPair(b, 18, 500<<10)
	var buf []byte
	for b.Loop() {
		var err error
		if buf, err = (sealer{acc}).AppendSeal(buf[:0], msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnsealAES256 is the path of a sealed request: sealer.Unseal of
// the signature and data as they lie in the body.
func BenchmarkUnsealAES256(b *testing.B) {
	ini, acc, msg := benchPair(b, 18, 500<<10)
	tok, n, _ := ini.Wrap(msg)
	for b.Loop() {
		if _, err := (sealer{acc}).Unseal(tok[:n], tok[n:]); err != nil {
			b.Fatal(err)
		}
	}
}
