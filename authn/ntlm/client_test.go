package ntlm_test

// An independent client side of NTLM, written from MS-NLMP for these tests
// only: it builds NEGOTIATE/AUTHENTICATE with knobs the real client
// libraries do not expose (MIC, KEY_EXCH, CBT, forged NTLMv1, anonymous)
// and implements client-side sealing, which go-ntlmssp lacks. It shares no
// code with the package under test except ntlm.NTHash, which is checked
// against MS-NLMP's own vector; the sealing half is checked against the
// MS-NLMP 4.2.4 vectors in TestClientSealVectors so the round trips are not
// circular.

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/rc4"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"

	"github.com/winrmd/winrmd/authn/ntlm"
)

type testClient struct {
	user, domain, password string
	negFlags               uint32 // NEGOTIATE flags
	keyExch                bool   // send an EncryptedRandomSessionKey
	mic                    bool   // MsvAvFlags 0x2 + MIC
	micSlotWithoutFlag     []byte // MIC bytes without announcing them
	cbt                    []byte // MsvAvChannelBindings value; nil = absent
	forgeV1                bool   // 24-byte NtChallengeResponse
	anonymous              bool
	tamperMIC              bool
	dropAVFlagsButKeepMIC  bool // valid MIC, MsvAvFlags not announcing it
	micFlagNoSlot          bool // MsvAvFlags announces a MIC, message has no slot
	oem                    bool // send names in OEM (no UNICODE flag)

	negotiate, challenge []byte
	flags                uint32
	esk                  []byte
	sess                 *clientSession
}

const defaultClientFlags = ntlm.FlagUnicode | ntlm.FlagRequestTarget | ntlm.FlagSign | ntlm.FlagSeal |
	ntlm.FlagNTLM | ntlm.FlagAlwaysSign | ntlm.FlagESS | ntlm.FlagTargetInfo | ntlm.FlagVersion |
	ntlm.Flag128 | ntlm.FlagKeyExch | ntlm.Flag56

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func hm(key []byte, data ...[]byte) []byte {
	h := hmac.New(md5.New, key)
	for _, d := range data {
		h.Write(d)
	}
	return h.Sum(nil)
}

func md5of(data ...[]byte) []byte {
	h := md5.New()
	for _, d := range data {
		h.Write(d)
	}
	return h.Sum(nil)
}

func (c *testClient) Negotiate() []byte {
	f := c.negFlags
	if f == 0 {
		f = defaultClientFlags
	}
	m := make([]byte, 40)
	copy(m, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(m[8:], 1)
	binary.LittleEndian.PutUint32(m[12:], f)
	binary.LittleEndian.PutUint32(m[20:], 40)
	binary.LittleEndian.PutUint32(m[28:], 40)
	copy(m[32:], []byte{10, 0, 0x61, 0x4a, 0, 0, 0, 15})
	c.negotiate = m
	return m
}

type avp struct {
	id uint16
	v  []byte
}

func readAV(b []byte) ([]avp, error) {
	var out []avp
	for len(b) >= 4 {
		id := binary.LittleEndian.Uint16(b)
		l := int(binary.LittleEndian.Uint16(b[2:]))
		if id == 0 {
			return out, nil
		}
		if 4+l > len(b) {
			return nil, errors.New("bad av")
		}
		out = append(out, avp{id, b[4 : 4+l]})
		b = b[4+l:]
	}
	return nil, errors.New("no EOL")
}

func (c *testClient) Authenticate(challenge []byte) ([]byte, error) {
	if len(challenge) < 56 || string(challenge[:8]) != "NTLMSSP\x00" || binary.LittleEndian.Uint32(challenge[8:]) != 2 {
		return nil, errors.New("not a CHALLENGE")
	}
	c.challenge = challenge
	flags := binary.LittleEndian.Uint32(challenge[20:])
	serverCh := challenge[24:32]
	tiLen := int(binary.LittleEndian.Uint16(challenge[40:]))
	tiOff := int(binary.LittleEndian.Uint32(challenge[44:]))
	ti := challenge[tiOff : tiOff+tiLen]
	pairs, err := readAV(ti)
	if err != nil {
		return nil, err
	}
	if !c.keyExch {
		flags &^= ntlm.FlagKeyExch
	}
	if c.oem {
		flags = flags&^ntlm.FlagUnicode | ntlm.FlagOEM
	}
	if c.anonymous {
		flags |= ntlm.FlagAnonymous
	}
	c.flags = flags

	var ts []byte
	var blobPairs []byte
	for _, p := range pairs {
		if p.id == 7 {
			ts = p.v
		}
		blobPairs = binary.LittleEndian.AppendUint16(blobPairs, p.id)
		blobPairs = binary.LittleEndian.AppendUint16(blobPairs, uint16(len(p.v)))
		blobPairs = append(blobPairs, p.v...)
	}
	if ts == nil {
		ts = make([]byte, 8)
	}
	if (c.mic && !c.dropAVFlagsButKeepMIC) || c.micFlagNoSlot {
		blobPairs = append(blobPairs, 6, 0, 4, 0, 2, 0, 0, 0)
	}
	if c.cbt != nil {
		blobPairs = append(blobPairs, 10, 0, 16, 0)
		blobPairs = append(blobPairs, c.cbt...)
	}
	blobPairs = append(blobPairs, 0, 0, 0, 0)

	cc := make([]byte, 8)
	rand.Read(cc)
	temp := []byte{1, 1, 0, 0, 0, 0, 0, 0}
	temp = append(temp, ts...)
	temp = append(temp, cc...)
	temp = append(temp, 0, 0, 0, 0)
	temp = append(temp, blobPairs...)
	temp = append(temp, 0, 0, 0, 0)

	respKey := hm(ntlm.NTHash(c.password), utf16le(strings.ToUpper(c.user)+c.domain))
	proof := hm(respKey, serverCh, temp)
	nt := append(append([]byte(nil), proof...), temp...)
	lm := make([]byte, 24)
	sbk := hm(respKey, proof)
	switch {
	case c.forgeV1:
		nt = nt[:24]
	case c.anonymous:
		nt, lm = nil, []byte{0}
	}

	c.esk = sbk
	var encKey []byte
	if flags&ntlm.FlagKeyExch != 0 {
		c.esk = make([]byte, 16)
		rand.Read(c.esk)
		r, _ := rc4.NewCipher(sbk)
		encKey = make([]byte, 16)
		r.XORKeyStream(encKey, c.esk)
	}

	var dom, usr, ws []byte
	if flags&ntlm.FlagUnicode != 0 {
		dom, usr, ws = utf16le(c.domain), utf16le(c.user), utf16le("WORKSTATION")
	} else {
		dom, usr, ws = []byte(c.domain), []byte(c.user), []byte("WORKSTATION")
	}
	if c.anonymous {
		usr, dom = nil, nil
	}
	header := 64
	withMIC := (c.mic || c.micSlotWithoutFlag != nil) && !c.micFlagNoSlot
	if withMIC {
		header = 88
	}
	payload := [][]byte{lm, nt, dom, usr, ws, encKey}
	msg := make([]byte, header)
	copy(msg, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(msg[8:], 3)
	off := header
	for i, p := range payload {
		binary.LittleEndian.PutUint16(msg[12+8*i:], uint16(len(p)))
		binary.LittleEndian.PutUint16(msg[14+8*i:], uint16(len(p)))
		binary.LittleEndian.PutUint32(msg[16+8*i:], uint32(off))
		off += len(p)
	}
	if withMIC {
		flags |= ntlm.FlagVersion
		copy(msg[64:], []byte{10, 0, 0x61, 0x4a, 0, 0, 0, 15})
	} else {
		flags &^= ntlm.FlagVersion
	}
	binary.LittleEndian.PutUint32(msg[60:], flags)
	for _, p := range payload {
		msg = append(msg, p...)
	}
	if c.mic && withMIC {
		mic := hm(c.esk, c.negotiate, c.challenge, msg)
		if c.tamperMIC {
			mic[3] ^= 0x40
		}
		copy(msg[72:], mic)
	} else if c.micSlotWithoutFlag != nil {
		copy(msg[72:], c.micSlotWithoutFlag)
	}
	c.sess = newClientSession(flags, c.esk)
	return msg, nil
}

// clientSession is client-side NTLM session security with extended session
// security, from MS-NLMP 3.4.4.2 / 3.4.5.
type clientSession struct {
	keyExch          bool
	sendSign, recvSg []byte
	sendKey, recvKey []byte
	send, recv       *rc4.Cipher
	sendSeq, recvSeq uint32
}

func newClientSession(flags uint32, esk []byte) *clientSession {
	k := esk
	switch {
	case flags&ntlm.Flag128 != 0:
	case flags&ntlm.Flag56 != 0:
		k = esk[:7]
	default:
		k = esk[:5]
	}
	s := &clientSession{
		keyExch:  flags&ntlm.FlagKeyExch != 0,
		sendSign: md5of(esk, []byte("session key to client-to-server signing key magic constant\x00")),
		recvSg:   md5of(esk, []byte("session key to server-to-client signing key magic constant\x00")),
		sendKey:  md5of(k, []byte("session key to client-to-server sealing key magic constant\x00")),
		recvKey:  md5of(k, []byte("session key to server-to-client sealing key magic constant\x00")),
	}
	s.reset()
	return s
}

func (s *clientSession) reset() {
	s.send, _ = rc4.NewCipher(s.sendKey)
	s.recv, _ = rc4.NewCipher(s.recvKey)
}

func (s *clientSession) mac(key []byte, h *rc4.Cipher, seq uint32, msg []byte) []byte {
	var sq [4]byte
	binary.LittleEndian.PutUint32(sq[:], seq)
	cs := hm(key, sq[:], msg)[:8]
	if s.keyExch {
		h.XORKeyStream(cs, cs)
	}
	sig := []byte{1, 0, 0, 0}
	sig = append(sig, cs...)
	return append(sig, sq[:]...)
}

func (s *clientSession) Seal(plain []byte) (sig, data []byte) {
	data = make([]byte, len(plain))
	s.send.XORKeyStream(data, plain)
	sig = s.mac(s.sendSign, s.send, s.sendSeq, plain)
	s.sendSeq++
	return sig, data
}

func (s *clientSession) Unseal(sig, data []byte) ([]byte, error) {
	plain := make([]byte, len(data))
	s.recv.XORKeyStream(plain, data)
	want := s.mac(s.recvSg, s.recv, s.recvSeq, plain)
	if !hmac.Equal(want, sig) {
		return nil, fmt.Errorf("client: bad server signature %x, want %x", sig, want)
	}
	s.recvSeq++
	return plain, nil
}

func (s *clientSession) GetMIC(msg []byte) []byte {
	sig := s.mac(s.sendSign, s.send, s.sendSeq, msg)
	s.sendSeq++
	return sig
}

func (s *clientSession) VerifyMIC(msg, sig []byte) error {
	want := s.mac(s.recvSg, s.recv, s.recvSeq, msg)
	if !hmac.Equal(want, sig) {
		return errors.New("client: bad server MIC")
	}
	s.recvSeq++
	return nil
}
