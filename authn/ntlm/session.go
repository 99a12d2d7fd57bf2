package ntlm

// NTLM session security with extended session security (MS-NLMP 3.4.4.2,
// 3.4.3): SEAL encrypts with a per-direction RC4 stream that runs across
// messages, SIGN computes HMAC_MD5(SignKey, seq || message)[:8], encrypted
// with the same stream when KEY_EXCH was negotiated.

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"slices"

	"github.com/winrmd/winrmd/authn"
)

// SignatureSize is the size of an NTLM message signature.
const SignatureSize = 16

var (
	// ErrIntegrity is returned when a signature, checksum or sequence
	// number does not verify. The session is dead afterwards.
	ErrIntegrity = errors.New("ntlm: message signature or sequence number mismatch")
	// ErrSessionDead is returned by every call after a failure.
	ErrSessionDead = errors.New("ntlm: session security failed earlier; context is dead")
	// ErrNoSealing is returned by Seal/Unseal when confidentiality was not
	// negotiated.
	ErrNoSealing = errors.New("ntlm: sealing was not negotiated")
)

// Session holds the NTLM signing and sealing state of one authenticated
// context. It is not safe for concurrent use.
type Session struct {
	flags   uint32
	keyExch bool
	seal    bool

	outSign, inSign       []byte
	outSealKey, inSealKey []byte
	out, in               *rc4Cipher
	outSeq, inSeq         uint32
	dead                  bool
	outHMAC, inHMAC       hash.Hash

	// scratch space, so that signing allocates nothing
	mac    [md5.Size]byte
	seqBuf [4]byte
	expSig [SignatureSize]byte

	// keystream drawn ahead for the next Seal and Unseal
	outAhead, inAhead ahead
}

var _ authn.InPlaceUnsealer = (*Session)(nil)

// NewServerSession returns the acceptor's session security for an exported
// session key obtained elsewhere (tests, other acceptors wrapping NTLM).
// flags are the negotiated flags; extended session security is assumed.
func NewServerSession(flags uint32, exportedSessionKey []byte) *Session {
	return newSession(flags, exportedSessionKey, true)
}

// NewClientSession is the initiator's side of the same keys: outbound
// uses the client's. The daemon never acts as an NTLM client; the
// benchmark's lean client (cmd/winrmd-bench) does, so that it draws its
// keystream ahead as the daemon does instead of measuring a slower cipher
// path than the one it talks to.
func NewClientSession(flags uint32, exportedSessionKey []byte) *Session {
	return newSession(flags, exportedSessionKey, false)
}

// newSession derives the keys for one side from the exported session key.
// server selects the acceptor's view: outbound uses the server keys.
func newSession(flags uint32, esk []byte, server bool) *Session {
	if len(esk) != sessionKeyLength {
		panic("ntlm: exported session key must be 16 bytes")
	}
	cSign := signKey(esk, magicClientSign)
	sSign := signKey(esk, magicServerSign)
	cSeal := sealKey(flags, esk, magicClientSeal)
	sSeal := sealKey(flags, esk, magicServerSeal)
	s := &Session{
		flags:   flags,
		keyExch: flags&FlagKeyExch != 0,
		seal:    flags&FlagSeal != 0,
	}
	if server {
		s.outSign, s.inSign, s.outSealKey, s.inSealKey = sSign, cSign, sSeal, cSeal
	} else {
		s.outSign, s.inSign, s.outSealKey, s.inSealKey = cSign, sSign, cSeal, sSeal
	}
	s.outHMAC = hmac.New(md5.New, s.outSign)
	s.inHMAC = hmac.New(md5.New, s.inSign)
	s.ResetRC4()
	return s
}

// ResetRC4 re-initialises both RC4 streams from the sealing keys; sequence
// numbers continue. SPNEGO does this after the mechListMIC exchange.
func (s *Session) ResetRC4() {
	s.out, s.in = newRC4(s.outSealKey), newRC4(s.inSealKey)
}

// Flags returns the negotiated flags.
func (s *Session) Flags() uint32 { return s.flags }

// Sequence returns the next outbound and inbound sequence numbers.
func (s *Session) Sequence() (out, in uint32) { return s.outSeq, s.inSeq }

// checksum computes HMAC_MD5(key, LE32(seq) || msg)[:8] into dst.
func (s *Session) checksum(h hash.Hash, seq uint32, msg []byte, dst []byte) {
	h.Reset()
	binary.LittleEndian.PutUint32(s.seqBuf[:], seq)
	h.Write(s.seqBuf[:])
	h.Write(msg)
	sum := h.Sum(s.mac[:0])
	copy(dst, sum[:8])
}

// sign writes the outbound signature of msg into sig (16 bytes) and
// advances the sequence number.
func (s *Session) sign(sig []byte, msg []byte) {
	s.signWith(sig, msg, nil)
}

// signWith is sign with the checksum's 8 bytes of RC4 keystream given
// (from a Keystream) instead of drawn from the outbound cipher.
func (s *Session) signWith(sig, msg, ks []byte) {
	binary.LittleEndian.PutUint32(sig[0:], 1)
	s.checksum(s.outHMAC, s.outSeq, msg, sig[4:12])
	if s.keyExch {
		if ks != nil {
			subtle.XORBytes(sig[4:12], sig[4:12], ks)
		} else {
			s.out.xorKeyStream(sig[4:12], sig[4:12])
		}
	}
	binary.LittleEndian.PutUint32(sig[12:], s.outSeq)
	s.outSeq++
}

// verify checks an inbound signature over msg and advances the sequence.
func (s *Session) verify(sig []byte, msg []byte) error {
	return s.verifyWith(sig, msg, nil)
}

// verifyWith is verify with the checksum's keystream given (as signWith).
func (s *Session) verifyWith(sig, msg, ks []byte) error {
	if len(sig) != SignatureSize {
		s.dead = true
		return fmt.Errorf("%w: signature of %d bytes", ErrIntegrity, len(sig))
	}
	exp := s.expSig[:]
	binary.LittleEndian.PutUint32(exp[0:], 1)
	s.checksum(s.inHMAC, s.inSeq, msg, exp[4:12])
	if s.keyExch {
		if ks != nil {
			subtle.XORBytes(exp[4:12], exp[4:12], ks)
		} else {
			s.in.xorKeyStream(exp[4:12], exp[4:12])
		}
	}
	binary.LittleEndian.PutUint32(exp[12:], s.inSeq)
	if subtle.ConstantTimeCompare(exp, sig) != 1 {
		s.dead = true
		return ErrIntegrity
	}
	s.inSeq++
	return nil
}

// Seal encrypts plain and signs it: sig is the 16-byte NTLM signature, data
// the ciphertext (same length as plain). plain is not modified.
func (s *Session) Seal(plain []byte) (sig, data []byte, err error) {
	if s.dead {
		return nil, nil, ErrSessionDead
	}
	if !s.seal {
		return nil, nil, ErrNoSealing
	}
	buf := make([]byte, SignatureSize+len(plain))
	sig, data = buf[:SignatureSize:SignatureSize], buf[SignatureSize:]
	s.out.xorKeyStream(data, plain)
	s.sign(sig, plain)
	return sig, data, nil
}

// SignatureSize is the length of the signature Seal produces (16).
func (s *Session) SignatureSize() int { return SignatureSize }

// AppendSeal appends the signature and then the ciphertext of plain to dst,
// so that a framing codec can seal straight into its output buffer.
func (s *Session) AppendSeal(dst, plain []byte) ([]byte, error) {
	if s.dead {
		return dst, ErrSessionDead
	}
	if !s.seal {
		return dst, ErrNoSealing
	}
	// Room for the signature and the ciphertext, not zeroed: every byte of
	// it is written below (the signature's 16, the XOR's len(plain)), and
	// a 500 KB response's clearing was 1.5-2.4% of the daemon's CPU (perf).
	n := len(dst)
	dst = slices.Grow(dst, SignatureSize+len(plain))[:n+SignatureSize+len(plain)]
	sig, data := dst[n:n+SignatureSize], dst[n+SignatureSize:]
	if k := s.outAhead.take(s.out, s.outSeq, len(plain)); k != nil {
		// Byte for byte what the cipher would give: the keystream was
		// drawn from this very state (checked) by a copy of it.
		subtle.XORBytes(data, plain, k.ks[:len(plain)])
		s.signWith(sig, plain, s.checksumStream(k))
		s.outAhead.used(s.out, k)
		return dst, nil
	}
	s.out.xorKeyStream(data, plain)
	s.sign(sig, plain)
	return dst, nil
}

// Keystream is RC4 keystream drawn ahead of time, by a copy of the
// cipher, for a message of one given length. RC4 is a stream cipher:
// sealing XORs the plaintext with the next bytes of the stream (and
// unsealing the ciphertext), so those bytes can be made while the peer
// still works on the last message — the costly half of the cipher, off
// the reply's path. The session itself does not move until a Seal (or
// Unseal) of exactly that length, from exactly that state, uses it; any
// other Seal, Unseal, MIC or ResetRC4 first makes it stale.
type Keystream struct {
	n      int
	seq    uint32
	before rc4Cipher // the state it was drawn from
	after  rc4Cipher // the state after it
	ks     []byte    // n bytes, plus the checksum's 8 with key exchange
	done   chan struct{}
}

// ahead is one direction's keystream drawn ahead, and the buffer of the
// last one used.
type ahead struct {
	pending *Keystream
	spare   []byte
	uses    int // messages that used a keystream drawn ahead
}

// prepare starts drawing n (+8) bytes after c's state in another goroutine.
func (a *ahead) prepare(c *rc4Cipher, seq uint32, n int, keyExch bool) {
	buf := a.spare
	if old := a.pending; old != nil {
		<-old.done // never two generators: the buffer is reused
		buf = old.ks
	}
	a.spare = nil
	need := n
	if keyExch {
		need += 8
	}
	if cap(buf) < need {
		buf = make([]byte, need)
	}
	k := &Keystream{n: n, seq: seq, before: *c, ks: buf[:need], done: make(chan struct{})}
	k.after = k.before
	a.pending = k
	go func() {
		k.after.xorKeyStream(k.ks, nil)
		close(k.done)
	}()
}

// take returns the prepared keystream if it fits a message of n bytes
// processed now with c at seq, and forgets it either way.
func (a *ahead) take(c *rc4Cipher, seq uint32, n int) *Keystream {
	k := a.pending
	if k == nil {
		return nil
	}
	<-k.done
	a.pending = nil
	if k.n != n || k.seq != seq || k.before != *c {
		return nil // stale: the stream went elsewhere
	}
	return k
}

// used commits a taken keystream: c moves past it, and its buffer is kept
// for the next one while the stream goes on.
func (a *ahead) used(c *rc4Cipher, k *Keystream) {
	*c = k.after
	a.spare = k.ks
	a.uses++
}

// KeystreamsUsed counts the outbound and inbound messages that were sealed
// or unsealed with a keystream drawn ahead (PrepareKeystream,
// PrepareUnsealKeystream). The result is the same either way; this tells
// a caller (a test, the bench) that the costly half left the path.
func (s *Session) KeystreamsUsed() (out, in int) { return s.outAhead.uses, s.inAhead.uses }

// checksumStream is the part of k that encrypts the checksum (nil without
// key exchange).
func (s *Session) checksumStream(k *Keystream) []byte {
	if !s.keyExch {
		return nil
	}
	return k.ks[k.n:]
}

// PrepareKeystream starts drawing the keystream for a next outbound
// message of n bytes in another goroutine and returns at once; the next
// AppendSeal of exactly n bytes waits for it and uses it.
func (s *Session) PrepareKeystream(n int) {
	if s.dead || !s.seal || n <= 0 {
		return
	}
	s.outAhead.prepare(s.out, s.outSeq, n, s.keyExch)
}

// PrepareUnsealKeystream is PrepareKeystream for the next inbound message
// of n bytes: the next Unseal of exactly n bytes uses it.
func (s *Session) PrepareUnsealKeystream(n int) {
	if s.dead || !s.seal || n <= 0 {
		return
	}
	s.inAhead.prepare(s.in, s.inSeq, n, s.keyExch)
}

// Unseal decrypts data and verifies sig. Any failure kills the session.
func (s *Session) Unseal(sig, data []byte) ([]byte, error) {
	if err := s.canUnseal(sig); err != nil {
		return nil, err
	}
	return s.unsealInto(make([]byte, len(data)), sig, data)
}

// UnsealInPlace is Unseal decrypting data where it is: the plaintext
// returned is data itself, overwritten (also when it does not verify).
func (s *Session) UnsealInPlace(sig, data []byte) ([]byte, error) {
	if err := s.canUnseal(sig); err != nil {
		return nil, err
	}
	return s.unsealInto(data, sig, data)
}

// canUnseal checks the session and the signature's size; a wrong size
// kills the session.
func (s *Session) canUnseal(sig []byte) error {
	switch {
	case s.dead:
		return ErrSessionDead
	case !s.seal:
		return ErrNoSealing
	case len(sig) != SignatureSize:
		s.dead = true
		return fmt.Errorf("%w: signature of %d bytes", ErrIntegrity, len(sig))
	}
	return nil
}

// unsealInto decrypts data into plain (the same length; the same slice or
// not overlapping) and verifies sig.
func (s *Session) unsealInto(plain, sig, data []byte) ([]byte, error) {
	if k := s.inAhead.take(s.in, s.inSeq, len(data)); k != nil {
		subtle.XORBytes(plain, data, k.ks[:len(data)])
		if err := s.verifyWith(sig, plain, s.checksumStream(k)); err != nil {
			return nil, err
		}
		s.inAhead.used(s.in, k)
		return plain, nil
	}
	s.in.xorKeyStream(plain, data)
	if err := s.verify(sig, plain); err != nil {
		return nil, err
	}
	return plain, nil
}

// SignMIC is GSS_GetMIC: the outbound signature over msg (for SPNEGO's
// mechListMIC). It consumes an outbound sequence number.
func (s *Session) SignMIC(msg []byte) ([]byte, error) {
	if s.dead {
		return nil, ErrSessionDead
	}
	sig := make([]byte, SignatureSize)
	s.sign(sig, msg)
	return sig, nil
}

// VerifyMIC is GSS_VerifyMIC for an inbound signature over msg. It consumes
// an inbound sequence number; a mismatch kills the session.
func (s *Session) VerifyMIC(msg, sig []byte) error {
	if s.dead {
		return ErrSessionDead
	}
	return s.verify(sig, msg)
}
