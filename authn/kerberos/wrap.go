package kerberos

// RFC 4121 per-message tokens on a complete context: sealed Wrap tokens for
// the WinRM body (MS-WSMV 2.2.9.1, PROTOCOL 6.3) and MIC tokens for SPNEGO's
// mechListMIC.
//
//	Wrap header (16): 05 04 | flags | FF | EC (BE16) | RRC (BE16) | SND_SEQ (BE64)
//	flags: SentByAcceptor 0x01, Sealed 0x02, AcceptorSubkey 0x04
//	E     = encrypt(key, usage, M || filler(EC) || header-with-RRC-0)
//	        (confounder and HMAC added by the enctype: RFC 3962, RFC 8009)
//	token = header || rotate_right(E, RRC)
//
// We send EC = 0 and RRC = 16 + HMAC length (28 for the SHA-1 types), the
// layout MIT's gss_wrap_iov produces for WinRM: the WinRM signature is then
// header || the rotated trailer || confounder, and the data part is exactly
// as long as the plaintext. Received tokens are honoured as they come: any
// EC, any RRC; Windows rotates by RRC+EC (PROTOCOL 6.3), RFC 4121 by RRC,
// which differ only when EC > 0, so with EC > 0 both are tried.
//
//	MIC token: 04 04 | flags | FF FF FF FF FF | SND_SEQ (BE64) | checksum(M || header)
//
// Key usages (RFC 4121 2): acceptor seal 22, acceptor sign 23, initiator
// seal 24, initiator sign 25. Both directions count sequence numbers from
// the values exchanged in the AP-REQ/AP-REP; a MIC takes one like a wrap.

import (
	"crypto/hmac"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/crypto/etype"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
)

const (
	usageAcceptorSeal  = 22
	usageAcceptorSign  = 23
	usageInitiatorSeal = 24
	usageInitiatorSign = 25

	wrapFlagSentByAcceptor = 0x01
	wrapFlagSealed         = 0x02
	wrapFlagAcceptorSubkey = 0x04

	wrapHeaderLen = 16
)

// MaxWrapToken bounds one wrap token (a whole WinRM envelope plus overhead).
const MaxWrapToken = 16 << 20

// seqState is a context's per-message state: the key, the direction and
// both sequence counters. Not safe for concurrent use (the server
// serialises the requests of one connection).
type seqState struct {
	key       types.EncryptionKey
	et        etype.EType
	acceptor  bool // we are the acceptor (tests also drive the initiator side)
	subkey    bool // key is the acceptor's subkey
	sendSeq   uint64
	recvSeq   uint64
	checkRecv bool
	// fastOut/fastIn: the SHA-1 enctypes' seal keys, derived once
	// (aescts.go); nil for the SHA-2 enctypes, which use gokrb5's code.
	fastOut, fastIn *usageKeys
}

func newSeqState(key types.EncryptionKey, acceptor, subkey bool, sendSeq, recvSeq uint64) (*seqState, error) {
	et, err := crypto.GetEtype(key.KeyType)
	if err != nil {
		return nil, fmt.Errorf("kerberos: session key type %d: %w", key.KeyType, authn.ErrUnsupported)
	}
	switch key.KeyType {
	case 17, 18, 19, 20: // aes128/256-cts-hmac-sha1-96, aes128-sha256-128, aes256-sha384-192
	default:
		// RC4-HMAC and DES3 use the RFC 1964/4757 token formats, not
		// implemented: such contexts are refused before they complete.
		return nil, fmt.Errorf("kerberos: message protection for enctype %d not implemented: %w", key.KeyType, authn.ErrUnsupported)
	}
	s := &seqState{key: key, et: et, acceptor: acceptor, subkey: subkey, sendSeq: sendSeq, recvSeq: recvSeq, checkRecv: true}
	if key.KeyType == 17 || key.KeyType == 18 {
		sealOut, sealIn, _, _ := s.usages()
		if s.fastOut, err = deriveUsage(et, key.KeyValue, sealOut); err != nil {
			return nil, fmt.Errorf("kerberos: deriving keys: %v: %w", err, authn.ErrBackend)
		}
		if s.fastIn, err = deriveUsage(et, key.KeyValue, sealIn); err != nil {
			return nil, fmt.Errorf("kerberos: deriving keys: %v: %w", err, authn.ErrBackend)
		}
	}
	return s, nil
}

func (s *seqState) sendFlags() byte {
	var f byte
	if s.acceptor {
		f |= wrapFlagSentByAcceptor
	}
	if s.subkey {
		f |= wrapFlagAcceptorSubkey
	}
	return f
}

func (s *seqState) usages() (sealOut, sealIn, signOut, signIn uint32) {
	if s.acceptor {
		return usageAcceptorSeal, usageInitiatorSeal, usageAcceptorSign, usageInitiatorSign
	}
	return usageInitiatorSeal, usageAcceptorSeal, usageInitiatorSign, usageAcceptorSign
}

func (s *seqState) hmacLen() int { return s.et.GetHMACBitLength() / 8 }

// wrapHeader is the next outbound wrap token's header, EC and RRC 0.
func (s *seqState) wrapHeader() []byte {
	hdr := make([]byte, wrapHeaderLen)
	hdr[0], hdr[1] = 0x05, 0x04
	hdr[2] = s.sendFlags() | wrapFlagSealed
	hdr[3] = 0xff
	binary.BigEndian.PutUint64(hdr[8:], s.sendSeq)
	return hdr
}

// Wrap seals plain into a complete RFC 4121 wrap token (EC 0, RRC =
// 16 + HMAC length). sigLen is how much of it is the WinRM "signature".
func (s *seqState) Wrap(plain []byte) (tok []byte, sigLen int, err error) {
	sealOut, _, _, _ := s.usages()
	hdr := s.wrapHeader()
	if s.fastOut != nil {
		return s.wrapFast(hdr, plain)
	}
	// EC = 0 and RRC = 0 in the encrypted copy.
	p := make([]byte, 0, len(plain)+wrapHeaderLen)
	p = append(p, plain...)
	p = append(p, hdr...)
	_, e, err := s.et.EncryptMessage(s.key.KeyValue, p, sealOut)
	if err != nil {
		return nil, 0, fmt.Errorf("kerberos: wrap: %v: %w", err, authn.ErrBackend)
	}
	rrc := wrapHeaderLen + s.hmacLen()
	binary.BigEndian.PutUint16(hdr[6:], uint16(rrc))
	tok = make([]byte, 0, wrapHeaderLen+len(e))
	tok = append(tok, hdr...)
	tok = append(tok, e[len(e)-rrc:]...)
	tok = append(tok, e[:len(e)-rrc]...)
	s.sendSeq++
	return tok, len(tok) - len(plain), nil
}

// wrapFast is Wrap for the SHA-1 enctypes.
func (s *seqState) wrapFast(hdr, plain []byte) ([]byte, int, error) {
	tok, err := s.appendWrapFast(nil, hdr, plain)
	return tok, len(tok) - len(plain), err
}

// appendWrapFast appends the wrap token of plain to dst. E = C || MAC is
// never built: the token is header || C[last 16] || MAC || C[:len-16],
// which is E rotated right by RRC = 28, and C (confounder || plain ||
// header copy, encrypted in place) is laid out where C[:len-16] ends up,
// so that only its last block and the MAC move: the plaintext is copied
// once, into dst, and nothing else is allocated once dst has room.
//
//	dst: ... | hdr 16 | C[last 16] | MAC 12 | C[:len-16] ............ |
//	                                        | conf 16 | plain | hdr 16 |  (C before the seal)
func (s *seqState) appendWrapFast(dst, hdr, plain []byte) ([]byte, error) {
	n := len(plain)
	base := len(dst)
	cAt := base + wrapHeaderLen + aesBlock + sha1MACLen
	cLen := aesBlock + n + wrapHeaderLen
	dst = slices.Grow(dst, cAt+cLen-base)[:cAt+cLen]
	c := dst[cAt:]
	copy(c[aesBlock:], plain)
	copy(c[aesBlock+n:], hdr) // RRC still 0 in the encrypted copy
	mac, err := s.fastOut.seal(c)
	if err != nil {
		return dst[:base], fmt.Errorf("kerberos: wrap: %v: %w", err, authn.ErrBackend)
	}
	binary.BigEndian.PutUint16(hdr[6:], uint16(aesBlock+sha1MACLen))
	copy(dst[base:], hdr)
	copy(dst[base+wrapHeaderLen:], c[cLen-aesBlock:])
	copy(dst[base+wrapHeaderLen+aesBlock:], mac)
	s.sendSeq++
	return dst[:cAt+cLen-aesBlock], nil
}

// Unwrap verifies and decrypts one sealed wrap token from the peer.
func (s *seqState) Unwrap(tok []byte) ([]byte, error) {
	return s.unwrap(tok, nil)
}

// unwrap is Unwrap of the token head || tail, given in two pieces (the
// WinRM signature and data) so that they are never joined: the one copy
// an unwrap makes is the rotation, read from both pieces.
func (s *seqState) unwrap(head, tail []byte) ([]byte, error) {
	return s.unwrapInto(nil, head, tail)
}

// unwrapInto is unwrap with the rotation written into buf when it is large
// enough (else into a new slice); the plaintext returned lies in it. The
// pieces are only read, so a second rotation can be tried from them.
func (s *seqState) unwrapInto(buf, head, tail []byte) ([]byte, error) {
	_, sealIn, _, _ := s.usages()
	n := len(head) + len(tail)
	if n > MaxWrapToken {
		return nil, malformed("wrap token of %d bytes exceeds %d", n, MaxWrapToken)
	}
	conf := s.et.GetConfounderByteSize()
	hl := s.hmacLen()
	if n < wrapHeaderLen+conf+wrapHeaderLen+hl || len(head) < wrapHeaderLen {
		return nil, malformed("wrap token of %d bytes is too short", n)
	}
	hdr := head[:wrapHeaderLen]
	if hdr[0] != 0x05 || hdr[1] != 0x04 || hdr[3] != 0xff {
		return nil, malformed("not a wrap token (%x)", hdr[:4])
	}
	flags := hdr[2]
	wantDir := byte(0)
	if !s.acceptor {
		wantDir = wrapFlagSentByAcceptor
	}
	if flags&wrapFlagSentByAcceptor != wantDir {
		return nil, fmt.Errorf("kerberos: wrap token from the wrong direction (flags %#x): %w", flags, authn.ErrBadCredentials)
	}
	if flags&wrapFlagSealed == 0 {
		return nil, fmt.Errorf("kerberos: wrap token without confidentiality (flags %#x): %w", flags, authn.ErrBadCredentials)
	}
	if (flags&wrapFlagAcceptorSubkey != 0) != s.subkey {
		return nil, fmt.Errorf("kerberos: wrap token AcceptorSubkey flag %v, context %v: %w", flags&wrapFlagAcceptorSubkey != 0, s.subkey, authn.ErrBadCredentials)
	}
	if flags&^0x07 != 0 {
		return nil, malformed("wrap token flags %#x", flags)
	}
	ec := int(binary.BigEndian.Uint16(hdr[4:6]))
	rrc := int(binary.BigEndian.Uint16(hdr[6:8]))
	seq := binary.BigEndian.Uint64(hdr[8:16])
	body, bodyLen := head[wrapHeaderLen:], n-wrapHeaderLen // body || tail
	if ec > bodyLen-conf-wrapHeaderLen-hl {
		return nil, malformed("wrap token EC %d exceeds its size", ec)
	}
	rotations := []int{rrc}
	if ec > 0 {
		rotations = []int{rrc + ec, rrc}
	}
	var p []byte
	var derr error
	for _, r := range rotations {
		e := rotateLeftInto(buf, body, tail, r)
		p, derr = s.decrypt(e, sealIn)
		if derr == nil {
			break
		}
	}
	if derr != nil {
		return nil, fmt.Errorf("kerberos: wrap token does not decrypt: %v: %w", derr, authn.ErrBadCredentials)
	}
	if len(p) < ec+wrapHeaderLen {
		return nil, malformed("wrap token plaintext too short")
	}
	inner := p[len(p)-wrapHeaderLen:]
	// The encrypted header copy has RRC 0 (RFC 4121 4.2.5); everything
	// else must equal the outer header.
	want := make([]byte, wrapHeaderLen)
	copy(want, hdr)
	want[6], want[7] = 0, 0
	if !hmac.Equal(inner, want) {
		return nil, fmt.Errorf("kerberos: wrap token header does not match its encrypted copy: %w", authn.ErrBadCredentials)
	}
	if s.checkRecv && seq != s.recvSeq {
		return nil, fmt.Errorf("kerberos: wrap token sequence %d, expected %d: %w", seq, s.recvSeq, authn.ErrBadCredentials)
	}
	s.recvSeq = seq + 1
	return p[:len(p)-ec-wrapHeaderLen], nil
}

// decrypt checks the length the enctype needs before calling it (gokrb5
// slices without checking).
func (s *seqState) decrypt(e []byte, usage uint32) ([]byte, error) {
	if len(e) < s.et.GetConfounderByteSize()+s.hmacLen() || len(e)-s.hmacLen() < 16 {
		return nil, fmt.Errorf("ciphertext too short")
	}
	if s.fastIn != nil {
		// e is a fresh copy (rotateLeft): decrypting it in place is fine.
		return s.fastIn.open(e[:len(e)-sha1MACLen], e[len(e)-sha1MACLen:])
	}
	return s.et.DecryptMessage(s.key.KeyValue, e, usage)
}

// rotateLeft returns a || b rotated left by n (mod its length), in a new
// slice.
func rotateLeft(a, b []byte, n int) []byte { return rotateLeftInto(nil, a, b, n) }

// rotateLeftInto is rotateLeft into buf when its capacity suffices. Every
// byte of the result is written (the two copyRange calls cover it all).
func rotateLeftInto(buf, a, b []byte, n int) []byte {
	l := len(a) + len(b)
	var out []byte
	if cap(buf) >= l {
		out = buf[:l]
	} else {
		out = make([]byte, l)
	}
	if l == 0 {
		return out
	}
	n %= l
	copyRange(out, a, b, n, l)
	copyRange(out[l-n:], a, b, 0, n)
	return out
}

// copyRange copies (a || b)[from:to] to dst.
func copyRange(dst, a, b []byte, from, to int) {
	if from < len(a) {
		k := copy(dst, a[from:min(to, len(a))])
		dst, from = dst[k:], from+k
	}
	if from < to {
		copy(dst, b[from-len(a):to-len(a)])
	}
}

// MIC makes a MIC token over msg.
func (s *seqState) MIC(msg []byte) ([]byte, error) {
	_, _, signOut, _ := s.usages()
	hdr := micHeader(s.sendFlags(), s.sendSeq)
	sum, err := s.et.GetChecksumHash(s.key.KeyValue, append(append([]byte{}, msg...), hdr...), signOut)
	if err != nil {
		return nil, fmt.Errorf("kerberos: MIC: %v: %w", err, authn.ErrBackend)
	}
	s.sendSeq++
	return append(hdr, sum...), nil
}

// VerifyMIC checks a MIC token from the peer over msg.
func (s *seqState) VerifyMIC(msg, tok []byte) error {
	_, _, _, signIn := s.usages()
	if len(tok) < 16+s.hmacLen() || len(tok) > 16+64 {
		return malformed("MIC token of %d bytes", len(tok))
	}
	hdr := tok[:16]
	if hdr[0] != 0x04 || hdr[1] != 0x04 || string(hdr[3:8]) != "\xff\xff\xff\xff\xff" {
		return malformed("not a MIC token (%x)", hdr[:8])
	}
	wantDir := byte(0)
	if !s.acceptor {
		wantDir = wrapFlagSentByAcceptor
	}
	if hdr[2]&wrapFlagSentByAcceptor != wantDir || (hdr[2]&wrapFlagAcceptorSubkey != 0) != s.subkey || hdr[2]&^0x05 != 0 {
		return fmt.Errorf("kerberos: MIC token flags %#x: %w", hdr[2], authn.ErrBadCredentials)
	}
	sum, err := s.et.GetChecksumHash(s.key.KeyValue, append(append([]byte{}, msg...), hdr...), signIn)
	if err != nil {
		return fmt.Errorf("kerberos: MIC: %v: %w", err, authn.ErrBackend)
	}
	if !hmac.Equal(sum, tok[16:]) {
		return fmt.Errorf("kerberos: MIC does not verify: %w", authn.ErrBadCredentials)
	}
	seq := binary.BigEndian.Uint64(hdr[8:16])
	if s.checkRecv && seq != s.recvSeq {
		return fmt.Errorf("kerberos: MIC sequence %d, expected %d: %w", seq, s.recvSeq, authn.ErrBadCredentials)
	}
	s.recvSeq = seq + 1
	return nil
}

func micHeader(flags byte, seq uint64) []byte {
	h := make([]byte, 16)
	h[0], h[1], h[2] = 0x04, 0x04, flags
	copy(h[3:8], "\xff\xff\xff\xff\xff")
	binary.BigEndian.PutUint64(h[8:], seq)
	return h
}

// sealer adapts seqState to authn.Sealer (the WinRM split into signature
// and data).
type sealer struct{ s *seqState }

func (x sealer) Seal(plain []byte) (sig, data []byte, err error) {
	tok, n, err := x.s.Wrap(plain)
	if err != nil {
		return nil, nil, err
	}
	return tok[:n], tok[n:], nil
}

// AppendSeal appends the signature and then the data of plain's wrap
// token to dst (sealing.Encode's appendSealer): for the SHA-1 enctypes the
// token is built in dst itself (appendWrapFast).
func (x sealer) AppendSeal(dst, plain []byte) ([]byte, error) {
	if x.s.fastOut != nil {
		return x.s.appendWrapFast(dst, x.s.wrapHeader(), plain)
	}
	tok, _, err := x.s.Wrap(plain)
	if err != nil {
		return dst, err
	}
	return append(dst, tok...), nil
}

// SignatureSize is the signature's length in every token Seal makes:
// the header, the rotated trailer (the header copy and the MAC) and the
// confounder (16 bytes for every AES enctype).
func (x sealer) SignatureSize() int { return 3*wrapHeaderLen + x.s.hmacLen() }

func (x sealer) Unseal(sig, data []byte) ([]byte, error) {
	if err := checkPieces(sig, data); err != nil {
		return nil, err
	}
	return x.s.unwrap(sig, data)
}

func checkPieces(sig, data []byte) error {
	if len(sig) < wrapHeaderLen {
		return malformed("wrap signature of %d bytes", len(sig))
	}
	if len(sig)+len(data) > MaxWrapToken {
		return malformed("wrap token of %d bytes exceeds %d", len(sig)+len(data), MaxWrapToken)
	}
	return nil
}

// UnsealInPlace is Unseal with the plaintext left in data (what the
// sealing layer's decoder asks of a sealer that can): the rotation is
// made in a pooled buffer instead of a new one, and the plaintext copied
// back over the ciphertext it came from. A 500 KB Send allocated and
// cleared its rotation anew, and the daemon then collected every few
// requests (256 MiB of Kerberos stdin: 930 MB allocated, 440
// collections). The plaintext is never longer than data for a token as
// MS-KILE lays it out (the signature holds the header, the confounder,
// the filler, the header copy and the MAC, or less); a longer one, which
// only an odd sender makes, is returned in a new slice.
func (x sealer) UnsealInPlace(sig, data []byte) ([]byte, error) {
	if err := checkPieces(sig, data); err != nil {
		return nil, err
	}
	var buf []byte
	var bp *[]byte
	if n := len(sig) - wrapHeaderLen + len(data); n >= rotPooledMin && n <= rotPooledMax {
		if bp, _ = rotBufs.Get().(*[]byte); bp == nil || cap(*bp) < n {
			b := make([]byte, 0, n)
			bp = &b
		}
		buf = *bp
	}
	p, err := x.s.unwrapInto(buf, sig, data)
	if err == nil {
		if len(p) <= len(data) {
			p = data[:copy(data, p)]
		} else {
			p = slices.Clone(p)
		}
	}
	// The buffer holds what was decrypted, or tried: it goes back only
	// now that nothing returned points into it.
	if bp != nil {
		rotBufs.Put(bp)
	}
	return p, err
}

var _ authn.InPlaceUnsealer = sealer{}

// rotBufs keeps UnsealInPlace's rotation buffers. A smaller token is cheap
// to rotate into a new one; a larger one's is not kept.
var rotBufs sync.Pool // of *[]byte

const (
	rotPooledMin = 64 << 10
	rotPooledMax = 4 << 20
)
