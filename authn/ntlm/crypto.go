package ntlm

// NTLMv2 computations (MS-NLMP 3.3.2) and the session-security key
// derivations (MS-NLMP 3.4.5), from the specification's pseudo-code.

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rc4"
	"encoding/binary"
	"math/bits"
	"strings"
	"unicode"
)

// NTHash returns the NT hash (MD4 of the UTF-16LE password), the value an
// NTHashSource stores for each account.
func NTHash(password string) []byte {
	s := md4Sum(encodeUTF16(password))
	return s[:]
}

// NTOWFv2 is HMAC_MD5(NT hash, UTF16LE(UPPER(user) || domain)).
func NTOWFv2(ntHash []byte, user, domain string) []byte {
	return hmacMD5(ntHash, encodeUTF16(upper(user)+domain))
}

// upper upper-cases per code point, close to Windows' RtlUpcaseUnicodeString:
// no special casing that changes the length (so "ß" stays "ß").
func upper(s string) string {
	return strings.Map(unicode.ToUpper, s)
}

func hmacMD5(key []byte, data ...[]byte) []byte {
	h := hmac.New(md5.New, key)
	for _, d := range data {
		h.Write(d)
	}
	return h.Sum(nil)
}

// ntProofStr is HMAC_MD5(NTOWFv2, ServerChallenge || temp).
func ntProofStr(respKeyNT []byte, serverChallenge []byte, temp []byte) []byte {
	return hmacMD5(respKeyNT, serverChallenge, temp)
}

// sessionBaseKeyV2 is HMAC_MD5(NTOWFv2, NTProofStr).
func sessionBaseKeyV2(respKeyNT, proof []byte) []byte {
	return hmacMD5(respKeyNT, proof)
}

// rc4Once encrypts (or decrypts) data with a fresh RC4 key.
func rc4Once(key, data []byte) []byte {
	c, err := rc4.NewCipher(key)
	if err != nil {
		panic("ntlm: rc4: " + err.Error()) // key length is always 5..16
	}
	out := make([]byte, len(data))
	c.XORKeyStream(out, data)
	return out
}

var (
	magicClientSign = []byte("session key to client-to-server signing key magic constant\x00")
	magicServerSign = []byte("session key to server-to-client signing key magic constant\x00")
	magicClientSeal = []byte("session key to client-to-server sealing key magic constant\x00")
	magicServerSeal = []byte("session key to server-to-client sealing key magic constant\x00")
)

// signKey is SIGNKEY with extended session security.
func signKey(esk, magic []byte) []byte {
	h := md5.New()
	h.Write(esk)
	h.Write(magic)
	return h.Sum(nil)
}

// sealKey is SEALKEY with extended session security: the exported session
// key is cut to 16, 7 or 5 bytes per NEGOTIATE_128 / NEGOTIATE_56.
func sealKey(flags uint32, esk, magic []byte) []byte {
	k := esk
	switch {
	case flags&Flag128 != 0:
		k = esk[:16]
	case flags&Flag56 != 0:
		k = esk[:7]
	default:
		k = esk[:5]
	}
	h := md5.New()
	h.Write(k)
	h.Write(magic)
	return h.Sum(nil)
}

// computeMIC is HMAC_MD5(ExportedSessionKey, NEGOTIATE || CHALLENGE ||
// AUTHENTICATE) where the AUTHENTICATE's MIC field is zero.
func computeMIC(esk, negotiate, challenge, authenticate []byte, micAt int) []byte {
	h := hmac.New(md5.New, esk)
	h.Write(negotiate)
	h.Write(challenge)
	h.Write(authenticate[:micAt])
	var zero [micLength]byte
	h.Write(zero[:])
	h.Write(authenticate[micAt+micLength:])
	return h.Sum(nil)
}

// md4Sum is MD4 (RFC 1320). It exists only for NT hashes.
func md4Sum(msg []byte) [16]byte {
	a, b, c, d := uint32(0x67452301), uint32(0xefcdab89), uint32(0x98badcfe), uint32(0x10325476)
	n := len(msg)
	padLen := 64 - (n+9)%64
	if padLen == 64 {
		padLen = 0
	}
	buf := make([]byte, n+1+padLen+8)
	copy(buf, msg)
	buf[n] = 0x80
	binary.LittleEndian.PutUint64(buf[len(buf)-8:], uint64(n)*8)

	var x [16]uint32
	r1 := [4]int{3, 7, 11, 19}
	r2 := [4]int{3, 5, 9, 13}
	r3 := [4]int{3, 9, 11, 15}
	o2 := [16]int{0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15}
	o3 := [16]int{0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15}
	for blk := 0; blk < len(buf); blk += 64 {
		for i := range x {
			x[i] = binary.LittleEndian.Uint32(buf[blk+4*i:])
		}
		aa, bb, cc, dd := a, b, c, d
		// Each step updates one of a, d, c, b in turn; rotating the four
		// names keeps the code to one expression per round.
		for i := 0; i < 16; i++ {
			f := (b & c) | (^b & d)
			a = bits.RotateLeft32(a+f+x[i], r1[i%4])
			a, b, c, d = d, a, b, c
		}
		for i := 0; i < 16; i++ {
			g := (b & c) | (b & d) | (c & d)
			a = bits.RotateLeft32(a+g+x[o2[i]]+0x5a827999, r2[i%4])
			a, b, c, d = d, a, b, c
		}
		for i := 0; i < 16; i++ {
			h := b ^ c ^ d
			a = bits.RotateLeft32(a+h+x[o3[i]]+0x6ed9eba1, r3[i%4])
			a, b, c, d = d, a, b, c
		}
		a += aa
		b += bb
		c += cc
		d += dd
	}
	var out [16]byte
	binary.LittleEndian.PutUint32(out[0:], a)
	binary.LittleEndian.PutUint32(out[4:], b)
	binary.LittleEndian.PutUint32(out[8:], c)
	binary.LittleEndian.PutUint32(out[12:], d)
	return out
}
