package ntlm

// NTLMv2 computations (MS-NLMP 3.3.2) and the session-security key
// derivations (MS-NLMP 3.4.5), from the specification's pseudo-code.

import (
	"crypto/hmac"
	"crypto/md5"
	"strings"
	"unicode"

	//lint:ignore SA1019 the NT hash is MD4 of the UTF-16LE password by definition (MS-NLMP 3.3.1, NTOWFv1).
	"golang.org/x/crypto/md4"
)

// NTHash returns the NT hash (MD4 of the UTF-16LE password, MS-NLMP 3.3.1
// NTOWFv1), the value an NTHashSource stores for each account and the one
// the local account store (authn/accounts) writes. The UTF-16 copy of the
// password is zeroed before it returns.
func NTHash(password string) []byte {
	b := encodeUTF16(password)
	defer clear(b)
	h := md4.New()
	h.Write(b)
	return h.Sum(nil)
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
	out := make([]byte, len(data))
	newRC4(key).xorKeyStream(out, data) // key length is always 5..16
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
