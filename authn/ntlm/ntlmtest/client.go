// Package ntlmtest is an independent client side of NTLM for tests,
// written from MS-NLMP: it builds NEGOTIATE/AUTHENTICATE with knobs the
// real client libraries do not expose (MIC, KEY_EXCH, CBT, forged NTLMv1,
// anonymous) and implements client-side sealing and GetMIC, which
// go-ntlmssp lacks. It shares no code with package ntlm except NTHash,
// which is checked against MS-NLMP's own vector; the sealing half is
// checked against the MS-NLMP 4.2.4 vectors (ntlm's TestClientSealVectors),
// so round trips against the acceptor are not circular.
//
// Never use it outside tests and the bench (cmd/winrmd-bench, whose NTLM
// handshake it is): it makes no effort to be safe.
package ntlmtest

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

// Client is one NTLM client handshake.
type Client struct {
	User, Domain, Password string
	NegotiateFlags         uint32 // NEGOTIATE flags; DefaultFlags when 0
	KeyExch                bool   // send an EncryptedRandomSessionKey
	MIC                    bool   // MsvAvFlags 0x2 + MIC
	MICSlotWithoutFlag     []byte // MIC bytes without announcing them
	CBT                    []byte // MsvAvChannelBindings value; nil = absent
	TargetName             string // MsvAvTargetName (an SPN); "" = absent
	ForgeV1                bool   // 24-byte NtChallengeResponse
	Anonymous              bool
	TamperMIC              bool
	DropAVFlagsButKeepMIC  bool // valid MIC, MsvAvFlags not announcing it
	MICFlagNoSlot          bool // MsvAvFlags announces a MIC, message has no slot
	OEM                    bool // send names in OEM (no UNICODE flag)

	// Results of Authenticate.
	Flags   uint32   // flags sent in AUTHENTICATE
	ESK     []byte   // exported session key
	Session *Session // client-side session security

	negotiate, challenge []byte
}

// DefaultFlags are a Windows-like client's NEGOTIATE flags.
const DefaultFlags = ntlm.FlagUnicode | ntlm.FlagRequestTarget | ntlm.FlagSign | ntlm.FlagSeal |
	ntlm.FlagNTLM | ntlm.FlagAlwaysSign | ntlm.FlagESS | ntlm.FlagTargetInfo | ntlm.FlagVersion |
	ntlm.Flag128 | ntlm.FlagKeyExch | ntlm.Flag56

// UTF16 encodes s as UTF-16LE.
func UTF16(s string) []byte {
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

// Negotiate returns the NEGOTIATE message.
func (c *Client) Negotiate() []byte {
	f := c.NegotiateFlags
	if f == 0 {
		f = DefaultFlags
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

// AVPair is one AV pair.
type AVPair struct {
	ID    uint16
	Value []byte
}

// ReadAVPairs reads AV pairs up to MsvAvEOL.
func ReadAVPairs(b []byte) ([]AVPair, error) {
	var out []AVPair
	for len(b) >= 4 {
		id := binary.LittleEndian.Uint16(b)
		l := int(binary.LittleEndian.Uint16(b[2:]))
		if id == 0 {
			return out, nil
		}
		if 4+l > len(b) {
			return nil, errors.New("bad av")
		}
		out = append(out, AVPair{id, b[4 : 4+l]})
		b = b[4+l:]
	}
	return nil, errors.New("no EOL")
}

// Authenticate answers a CHALLENGE and sets up Session.
func (c *Client) Authenticate(challenge []byte) ([]byte, error) {
	if len(challenge) < 56 || string(challenge[:8]) != "NTLMSSP\x00" || binary.LittleEndian.Uint32(challenge[8:]) != 2 {
		return nil, errors.New("not a CHALLENGE")
	}
	c.challenge = challenge
	flags := binary.LittleEndian.Uint32(challenge[20:])
	serverCh := challenge[24:32]
	tiLen := int(binary.LittleEndian.Uint16(challenge[40:]))
	tiOff := int(binary.LittleEndian.Uint32(challenge[44:]))
	ti := challenge[tiOff : tiOff+tiLen]
	pairs, err := ReadAVPairs(ti)
	if err != nil {
		return nil, err
	}
	if !c.KeyExch {
		flags &^= ntlm.FlagKeyExch
	}
	if c.OEM {
		flags = flags&^ntlm.FlagUnicode | ntlm.FlagOEM
	}
	if c.Anonymous {
		flags |= ntlm.FlagAnonymous
	}
	c.Flags = flags

	var ts []byte
	var blobPairs []byte
	for _, p := range pairs {
		if p.ID == 7 {
			ts = p.Value
		}
		blobPairs = binary.LittleEndian.AppendUint16(blobPairs, p.ID)
		blobPairs = binary.LittleEndian.AppendUint16(blobPairs, uint16(len(p.Value)))
		blobPairs = append(blobPairs, p.Value...)
	}
	if ts == nil {
		ts = make([]byte, 8)
	}
	if (c.MIC && !c.DropAVFlagsButKeepMIC) || c.MICFlagNoSlot {
		blobPairs = append(blobPairs, 6, 0, 4, 0, 2, 0, 0, 0)
	}
	if c.CBT != nil {
		blobPairs = append(blobPairs, 10, 0, 16, 0)
		blobPairs = append(blobPairs, c.CBT...)
	}
	if c.TargetName != "" {
		tn := UTF16(c.TargetName)
		blobPairs = binary.LittleEndian.AppendUint16(blobPairs, 9)
		blobPairs = binary.LittleEndian.AppendUint16(blobPairs, uint16(len(tn)))
		blobPairs = append(blobPairs, tn...)
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

	respKey := hm(ntlm.NTHash(c.Password), UTF16(strings.ToUpper(c.User)+c.Domain))
	proof := hm(respKey, serverCh, temp)
	nt := append(append([]byte(nil), proof...), temp...)
	lm := make([]byte, 24)
	sbk := hm(respKey, proof)
	switch {
	case c.ForgeV1:
		nt = nt[:24]
	case c.Anonymous:
		nt, lm = nil, []byte{0}
	}

	c.ESK = sbk
	var encKey []byte
	if flags&ntlm.FlagKeyExch != 0 {
		c.ESK = make([]byte, 16)
		rand.Read(c.ESK)
		r, _ := rc4.NewCipher(sbk)
		encKey = make([]byte, 16)
		r.XORKeyStream(encKey, c.ESK)
	}

	var dom, usr, ws []byte
	if flags&ntlm.FlagUnicode != 0 {
		dom, usr, ws = UTF16(c.Domain), UTF16(c.User), UTF16("WORKSTATION")
	} else {
		dom, usr, ws = []byte(c.Domain), []byte(c.User), []byte("WORKSTATION")
	}
	if c.Anonymous {
		usr, dom = nil, nil
	}
	header := 64
	withMIC := (c.MIC || c.MICSlotWithoutFlag != nil) && !c.MICFlagNoSlot
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
	if c.MIC && withMIC {
		mic := hm(c.ESK, c.negotiate, c.challenge, msg)
		if c.TamperMIC {
			mic[3] ^= 0x40
		}
		copy(msg[72:], mic)
	} else if c.MICSlotWithoutFlag != nil {
		copy(msg[72:], c.MICSlotWithoutFlag)
	}
	c.Session = NewSession(flags, c.ESK)
	return msg, nil
}

// Session is client-side NTLM session security with extended session
// security, from MS-NLMP 3.4.4.2 / 3.4.5.
type Session struct {
	keyExch          bool
	sendSign, recvSg []byte
	sendKey, recvKey []byte
	send, recv       *rc4.Cipher
	sendSeq, recvSeq uint32
}

// NewSession derives the client keys from the exported session key.
func NewSession(flags uint32, esk []byte) *Session {
	k := esk
	switch {
	case flags&ntlm.Flag128 != 0:
	case flags&ntlm.Flag56 != 0:
		k = esk[:7]
	default:
		k = esk[:5]
	}
	s := &Session{
		keyExch:  flags&ntlm.FlagKeyExch != 0,
		sendSign: md5of(esk, []byte("session key to client-to-server signing key magic constant\x00")),
		recvSg:   md5of(esk, []byte("session key to server-to-client signing key magic constant\x00")),
		sendKey:  md5of(k, []byte("session key to client-to-server sealing key magic constant\x00")),
		recvKey:  md5of(k, []byte("session key to server-to-client sealing key magic constant\x00")),
	}
	s.Reset()
	return s
}

// Reset re-initialises both RC4 streams (SPNEGO after mechListMIC).
func (s *Session) Reset() {
	s.send, _ = rc4.NewCipher(s.sendKey)
	s.recv, _ = rc4.NewCipher(s.recvKey)
}

func (s *Session) mac(key []byte, h *rc4.Cipher, seq uint32, msg []byte) []byte {
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

// Seal encrypts and signs an outbound message.
func (s *Session) Seal(plain []byte) (sig, data []byte) {
	data = make([]byte, len(plain))
	s.send.XORKeyStream(data, plain)
	sig = s.mac(s.sendSign, s.send, s.sendSeq, plain)
	s.sendSeq++
	return sig, data
}

// Unseal decrypts and verifies an inbound message.
func (s *Session) Unseal(sig, data []byte) ([]byte, error) {
	plain := make([]byte, len(data))
	s.recv.XORKeyStream(plain, data)
	want := s.mac(s.recvSg, s.recv, s.recvSeq, plain)
	if !hmac.Equal(want, sig) {
		return nil, fmt.Errorf("client: bad server signature %x, want %x", sig, want)
	}
	s.recvSeq++
	return plain, nil
}

// GetMIC signs msg (outbound sequence).
func (s *Session) GetMIC(msg []byte) []byte {
	sig := s.mac(s.sendSign, s.send, s.sendSeq, msg)
	s.sendSeq++
	return sig
}

// VerifyMIC checks a server signature over msg.
func (s *Session) VerifyMIC(msg, sig []byte) error {
	want := s.mac(s.recvSg, s.recv, s.recvSeq, msg)
	if !hmac.Equal(want, sig) {
		return errors.New("client: bad server MIC")
	}
	s.recvSeq++
	return nil
}
