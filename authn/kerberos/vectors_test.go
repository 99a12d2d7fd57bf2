package kerberos

import (
	"bytes"
	"context"
	"encoding/hex"
	"runtime"
	"testing"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/crypto"
	gspnego "github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/spnego"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// RFC 8009 Appendix A sample encryptions (key usage 2) decrypt through the
// same checked path the acceptor and the wrap use.
func TestRFC8009Vectors(t *testing.T) {
	for _, v := range []struct {
		etype      int32
		key, plain string
		ciphertext string
	}{
		{19, "3705d96080c17728a0e800eab6e0d23c", "", "ef85fb890bb8472f4dab20394dca781dad877eda39d50c870c0d5a0a8e48c718"},
		{19, "3705d96080c17728a0e800eab6e0d23c", "000102030405", "84d7f30754ed987bab0bf3506beb09cfb55402cef7e6877ce99e247e52d16ed4421dfdf8976c"},
		{19, "3705d96080c17728a0e800eab6e0d23c", "000102030405060708090a0b0c0d0e0f1011121314", "720f73b18d9859cd6ccb4346115cd336c70f58edc0c4437c5573544c31c813bce1e6d072c186b39a413c2f92ca9b8334a287ffcbfc"},
		{20, "6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52", "", "41f53fa5bfe7026d91faf9be959195a058707273a96a40f0a01960621ac612748b9bbfbe7eb4ce3c"},
		{20, "6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52", "000102030405060708090a0b0c0d0e0f1011121314", "40013e2df58e8751957d2878bcd2d6fe101ccfd556cb1eae79db3c3ee86429f2b2a602ac86fef6ecb647d6295fae077a1feb517508d2c16b4192e01f62"},
	} {
		key := types.EncryptionKey{KeyType: v.etype, KeyValue: unhex(v.key)}
		got, err := decrypt(types.EncryptedData{EType: v.etype, Cipher: unhex(v.ciphertext)}, key, 2)
		if err != nil || !bytes.Equal(got, unhex(v.plain)) {
			t.Fatalf("etype %d plain %s: got %x, %v", v.etype, v.plain, got, err)
		}
		bad := unhex(v.ciphertext)
		bad[len(bad)/2] ^= 0x80
		if _, err := decrypt(types.EncryptedData{EType: v.etype, Cipher: bad}, key, 2); err == nil {
			t.Fatalf("etype %d: tampered vector decrypted", v.etype)
		}
	}
}

// RFC 3962 Appendix B: AES-CTS with the zero IV, the cipher under the SHA-1
// enctypes' wrap tokens.
func TestRFC3962Vectors(t *testing.T) {
	et, err := crypto.GetEtype(17)
	if err != nil {
		t.Fatal(err)
	}
	key := unhex("636869636b656e207465726979616b69")
	for _, v := range []struct{ in, out string }{
		{"4920776f756c64206c696b652074686520", "c6353568f2bf8cb4d8a580362da7ff7f97"},
		{"4920776f756c64206c696b65207468652047656e6572616c20476175277320", "fc00783e0efdb2c1d445d4c8eff7ed2297687268d6ecccc0c07b25e25ecfe5"},
		{"4920776f756c64206c696b65207468652047656e6572616c2047617527732043", "39312523a78662d5be7fcbcc98ebf5a897687268d6ecccc0c07b25e25ecfe584"},
	} {
		_, c, err := et.EncryptData(key, unhex(v.in))
		if err != nil || hex.EncodeToString(c) != v.out {
			t.Fatalf("AES-CTS(%s) = %x, %v; want %s", v.in, c, err, v.out)
		}
		p, err := et.DecryptData(key, unhex(v.out))
		if err != nil || hex.EncodeToString(p) != v.in {
			t.Fatalf("AES-CTS^-1(%s) = %x, %v", v.out, p, err)
		}
	}
}

// Every supported enctype wraps and unwraps both ways with the WinRM
// layout (data part as long as the plaintext; signature = header, the
// rotated trailer and the confounder); RC4 has no wrap here.
func TestWrapAllEnctypes(t *testing.T) {
	for _, tc := range []struct {
		etype  int32
		keyLen int
		sig    int
	}{{17, 16, 60}, {18, 32, 60}, {19, 16, 64}, {20, 32, 72}} {
		key := types.EncryptionKey{KeyType: tc.etype, KeyValue: bytes.Repeat([]byte{byte(tc.etype)}, tc.keyLen)}
		ini, err := newSeqState(key, false, true, 7, 9)
		if err != nil {
			t.Fatal(err)
		}
		acc, _ := newSeqState(key, true, true, 9, 7)
		for _, n := range []int{0, 1, 15, 16, 17, 100000} {
			msg := bytes.Repeat([]byte{0xa5}, n)
			sig, data, err := sealer{acc}.Seal(msg)
			if err != nil || len(sig) != tc.sig || len(data) != n {
				t.Fatalf("etype %d n %d: sig %d data %d err %v", tc.etype, n, len(sig), len(data), err)
			}
			got, err := ini.Unwrap(append(append([]byte{}, sig...), data...))
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("etype %d n %d: initiator unwrap %v", tc.etype, n, err)
			}
			tok, k, _ := ini.Wrap(msg)
			if got, err := (sealer{acc}).Unseal(tok[:k], tok[k:]); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("etype %d n %d: acceptor unseal %v", tc.etype, n, err)
			}
			// In place (the sealing decoder's path; 100000 bytes take a
			// pooled rotation buffer): the plaintext, left in data.
			tok, k, _ = ini.Wrap(msg)
			if got, err := (sealer{acc}).UnsealInPlace(tok[:k], tok[k:]); err != nil || !bytes.Equal(got, msg) ||
				(n > 0 && &got[0] != &tok[k]) {
				t.Fatalf("etype %d n %d: acceptor unseal in place %v", tc.etype, n, err)
			}
			// AppendSeal (sealing.Encode's path): the same token, built
			// after what dst holds, which it leaves alone.
			if s := (sealer{acc}).SignatureSize(); s != tc.sig {
				t.Fatalf("etype %d: SignatureSize %d, want %d", tc.etype, s, tc.sig)
			}
			prefix := []byte("--Encrypted Boundary")
			out, err := sealer{acc}.AppendSeal(append(make([]byte, 0, 7), prefix...), msg)
			if err != nil || len(out) != len(prefix)+tc.sig+n || !bytes.Equal(out[:len(prefix)], prefix) {
				t.Fatalf("etype %d n %d: AppendSeal gave %d bytes, %v", tc.etype, n, len(out), err)
			}
			if got, err := ini.Unwrap(out[len(prefix):]); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("etype %d n %d: initiator unwrap of AppendSeal's token %v", tc.etype, n, err)
			}
		}
	}
	if _, err := newSeqState(types.EncryptionKey{KeyType: 23, KeyValue: make([]byte, 16)}, true, true, 0, 0); err == nil {
		t.Fatal("RC4 wrap context made")
	}
}

// Tokens with EC > 0 are honoured, rotated the RFC 4121 way (RRC) and the
// Windows way (RRC+EC).
func TestUnwrapFillerAndRotation(t *testing.T) {
	key := types.EncryptionKey{KeyType: 18, KeyValue: bytes.Repeat([]byte{3}, 32)}
	acc, _ := newSeqState(key, true, true, 1, 1)
	for i, rot := range []func(ec, rrc int) int{func(ec, rrc int) int { return rrc }, func(ec, rrc int) int { return rrc + ec }} {
		msg := []byte("filler test message")
		ec, rrc := 16, 28
		hdr := []byte{0x05, 0x04, 0x02 | 0x04, 0xff, 0, byte(ec), 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(1 + i)}
		p := append(append(append([]byte{}, msg...), make([]byte, ec)...), hdr...)
		_, e, err := acc.et.EncryptMessage(key.KeyValue, p, usageInitiatorSeal)
		if err != nil {
			t.Fatal(err)
		}
		hdr[7] = byte(rrc)
		r := rot(ec, rrc) % len(e)
		tok := append(append(append([]byte{}, hdr...), e[len(e)-r:]...), e[:len(e)-r]...)
		got, err := acc.Unwrap(tok)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("rotation %d: %q %v", i, got, err)
		}
		// The same token, in place: split as WinRM sends it (the
		// signature, then the data); the sequence moved on, so rewind it.
		acc.recvSeq--
		in := bytes.Clone(tok)
		sigLen := wrapHeaderLen + 16 + ec + wrapHeaderLen + 12
		got, err = sealer{acc}.UnsealInPlace(in[:sigLen], in[sigLen:])
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("rotation %d in place: %q %v", i, got, err)
		}
	}
}

// RFC 4178 with Kerberos as the client's second choice (NTLM first, and
// NTLM not enabled): request-mic, then the AP-REQ, our AP-REP with our
// mechListMIC, the client's MIC; parsed and built with gokrb5's own SPNEGO
// types. The MICs consume sequence numbers like wrap tokens, so the first
// sealed message continues after them.
func TestSPNEGOKerberosNotFirstMIC(t *testing.T) {
	kt := fuzzKeytab()
	cfg := fuzzConfig(kt)
	a := spnego.NewAcceptor(spnego.Config{Kerberos: func() authn.Context { return NewAcceptor(cfg) }})
	init, mechList := spnegoInitWith([][]byte{oidNTLM, OIDKRB5}, []byte("NTLMSSP\x00\x01\x00\x00\x00"))
	out, done, err := a.Step(context.Background(), authn.ConnInfo{}, init)
	if err != nil || done {
		t.Fatalf("init: done %v err %v", done, err)
	}
	var r1 gspnego.NegTokenResp
	if err := r1.Unmarshal(out); err != nil {
		t.Fatalf("gokrb5 cannot parse our NegTokenResp: %v", err)
	}
	if r1.NegState != 3 || !r1.SupportedMech.Equal(asn1.ObjectIdentifier{1, 2, 840, 113554, 1, 2, 2}) || r1.ResponseToken != nil {
		t.Fatalf("first reply: state %d mech %v token %x", r1.NegState, r1.SupportedMech, r1.ResponseToken)
	}
	apreq, auth, sessKey := fuzzAPReq(kt, flagMutual|flagConf|flagInteg, 9)
	resp, _ := (&gspnego.NegTokenResp{NegState: 1, ResponseToken: apreq}).Marshal()
	out, done, err = a.Step(context.Background(), authn.ConnInfo{}, resp)
	if err != nil || done {
		t.Fatalf("AP-REQ leg: done %v err %v", done, err)
	}
	var r2 gspnego.NegTokenResp
	if err := r2.Unmarshal(out); err != nil {
		t.Fatal(err)
	}
	if r2.NegState != 1 || r2.ResponseToken == nil || r2.MechListMIC == nil {
		t.Fatalf("second reply: state %d token %d mic %d", r2.NegState, len(r2.ResponseToken), len(r2.MechListMIC))
	}
	ini := verifyAPRep(t, &session{key: sessKey}, r2.ResponseToken, auth)
	if err := ini.VerifyMIC(mechList, r2.MechListMIC); err != nil {
		t.Fatalf("our mechListMIC: %v", err)
	}
	mic, _ := ini.MIC(mechList)
	resp, _ = (&gspnego.NegTokenResp{NegState: 1, MechListMIC: mic}).Marshal()
	out, done, err = a.Step(context.Background(), authn.ConnInfo{}, resp)
	if err != nil || !done {
		t.Fatalf("MIC leg: done %v err %v", done, err)
	}
	var r3 gspnego.NegTokenResp
	if err := r3.Unmarshal(out); err != nil || r3.NegState != 0 {
		t.Fatalf("final reply: %v state %d", err, r3.NegState)
	}
	tok, n, _ := ini.Wrap([]byte("after the MICs"))
	if got, err := a.Sealer().Unseal(tok[:n], tok[n:]); err != nil || string(got) != "after the MICs" {
		t.Fatalf("first sealed message: %v", err)
	}
	// A wrong client MIC fails the context.
	b := spnego.NewAcceptor(spnego.Config{Kerberos: func() authn.Context { return NewAcceptor(fuzzConfig(kt)) }})
	b.Step(context.Background(), authn.ConnInfo{}, init)
	apreq2, _, _ := fuzzAPReq(kt, flagMutual, 10)
	resp, _ = (&gspnego.NegTokenResp{NegState: 1, ResponseToken: apreq2}).Marshal()
	if _, _, err := b.Step(context.Background(), authn.ConnInfo{}, resp); err != nil {
		t.Fatal(err)
	}
	resp, _ = (&gspnego.NegTokenResp{NegState: 1, MechListMIC: bytes.Repeat([]byte{1}, 28)}).Marshal()
	if _, done, err := b.Step(context.Background(), authn.ConnInfo{}, resp); err == nil || done {
		t.Fatal("forged mechListMIC accepted")
	}
}

// rotateLeft reads a token given in two pieces (signature and data) as if
// joined: every length, split point and rotation up to twice the length.
func TestRotateLeftPieces(t *testing.T) {
	for l := 0; l <= 40; l++ {
		whole := make([]byte, l)
		for i := range whole {
			whole[i] = byte(i + 1)
		}
		for k := 0; k <= l; k++ {
			for n := 0; n <= 2*l; n++ {
				want := append([]byte{}, whole...)
				if l > 0 {
					want = append(append([]byte{}, whole[n%l:]...), whole[:n%l]...)
				}
				if got := rotateLeft(whole[:k], whole[k:], n); !bytes.Equal(got, want) {
					t.Fatalf("length %d split at %d rotated by %d: %v, want %v", l, k, n, got, want)
				}
			}
		}
	}
}

// TestUnsealInPlaceAllocatesNoRotation: a stream of large sealed requests
// (Sends of stdin) is unsealed in place without a new rotation buffer for
// each; the plaintext is every message's, in its data. Until then each
// 500 KB request allocated and cleared its rotation (930 MB and 440
// collections in 256 MiB of Kerberos stdin).
func TestUnsealInPlaceAllocatesNoRotation(t *testing.T) {
	ini, acc := fuzzContext()
	const rounds = 40
	msgs := make([][]byte, rounds)
	toks := make([][]byte, rounds)
	ns := make([]int, rounds)
	for i := range toks {
		msgs[i] = bytes.Repeat([]byte{byte(i), '<'}, 250000)
		tok, n, err := ini.Wrap(msgs[i])
		if err != nil {
			t.Fatal(err)
		}
		toks[i], ns[i] = tok, n
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i, tok := range toks {
		got, err := sealer{acc}.UnsealInPlace(tok[:ns[i]], tok[ns[i]:])
		if err != nil || !bytes.Equal(got, msgs[i]) || &got[0] != &tok[ns[i]] {
			t.Fatalf("message %d: %v (plaintext right: %v)", i, err, bytes.Equal(got, msgs[i]))
		}
	}
	runtime.ReadMemStats(&after)
	// The pool may drop a buffer (at a collection; under the race detector
	// a quarter of Puts): one new buffer each. Allocating for every
	// message is what this catches; three in five is far from both.
	if got := (after.TotalAlloc - before.TotalAlloc) / 500000; got > rounds*3/5 {
		t.Fatalf("%d unseals allocated %d rotations' worth", rounds, got)
	}
}
