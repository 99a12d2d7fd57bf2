package kerberos

// A direct implementation of the RFC 3962 simplified profile for the two
// SHA-1 enctypes (17, 18) on the message path, where gokrb5's generic
// code re-derives the keys and copies the message several times per call:
// here Ke and Ki are derived once per key usage, the cipher runs in place
// and the HMAC reuses its state. The RFC 3962 vectors and gokrb5's own
// EncryptMessage/DecryptMessage check it (aescts_test.go).
//
//	E = AES-CBC-CS3(Ke, IV 0, confounder16 || M) || HMAC-SHA1(Ki, confounder16 || M)[:12]
//
// CBC-CS3 (RFC 3962 5): CBC over the zero-padded input, then the last two
// ciphertext blocks swapped and the output cut to the input length; a
// single block is plain CBC.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"errors"
	"hash"

	"github.com/jcmturner/gokrb5/v8/crypto/common"
	"github.com/jcmturner/gokrb5/v8/crypto/etype"
)

const (
	aesBlock   = 16
	sha1MACLen = 12
)

// usageKeys is one key usage's derived keys.
type usageKeys struct {
	ke  cipher.Block
	mac hash.Hash // HMAC-SHA1 keyed with Ki
}

func deriveUsage(et etype.EType, key []byte, usage uint32) (*usageKeys, error) {
	ke, err := et.DeriveKey(key, common.GetUsageKe(usage))
	if err != nil {
		return nil, err
	}
	ki, err := et.DeriveKey(key, common.GetUsageKi(usage))
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(ke)
	if err != nil {
		return nil, err
	}
	return &usageKeys{ke: b, mac: hmac.New(sha1.New, ki)}, nil
}

// seal encrypts p in place (p = confounder || message, len >= 16; the
// confounder is filled here) and returns the 12-byte MAC.
func (u *usageKeys) seal(p []byte) ([]byte, error) {
	if len(p) < aesBlock {
		return nil, errors.New("aes-cts: input shorter than a block")
	}
	if _, err := rand.Read(p[:aesBlock]); err != nil {
		return nil, err
	}
	u.mac.Reset()
	u.mac.Write(p)
	sum := u.mac.Sum(nil)[:sha1MACLen]
	ctsEncrypt(u.ke, p)
	return sum, nil
}

// open decrypts c in place and checks mac; it returns the message (c
// without the confounder).
func (u *usageKeys) open(c, mac []byte) ([]byte, error) {
	if len(c) < aesBlock || len(mac) != sha1MACLen {
		return nil, errors.New("aes-cts: ciphertext too short")
	}
	ctsDecrypt(u.ke, c)
	u.mac.Reset()
	u.mac.Write(c)
	if !hmac.Equal(u.mac.Sum(nil)[:sha1MACLen], mac) {
		return nil, errors.New("integrity check failed")
	}
	return c[aesBlock:], nil
}

// ctsEncrypt is AES-CBC-CS3 with a zero IV, in place; len(p) >= 16.
func ctsEncrypt(b cipher.Block, p []byte) {
	n := len(p)
	var iv [aesBlock]byte
	if n == aesBlock {
		cipher.NewCBCEncrypter(b, iv[:]).CryptBlocks(p, p)
		return
	}
	m := (n + aesBlock - 1) / aesBlock // blocks, the last possibly partial
	d := n - (m-1)*aesBlock            // bytes in the last block, 1..16
	full := (m - 1) * aesBlock         // everything before the last block
	enc := cipher.NewCBCEncrypter(b, iv[:])
	enc.CryptBlocks(p[:full], p[:full])
	// C_{m-1} is p[full-16:full]; C_m = E(C_{m-1} xor zero-padded P_m).
	var last [aesBlock]byte
	copy(last[:], p[full:])
	prev := p[full-aesBlock : full]
	for i := range last {
		last[i] ^= prev[i]
	}
	b.Encrypt(last[:], last[:])
	// Output ... C_{m-2} | C_m | C_{m-1}[:d].
	var cm1 [aesBlock]byte
	copy(cm1[:], prev)
	copy(p[full-aesBlock:], last[:])
	copy(p[full:], cm1[:d])
}

// ctsDecrypt reverses ctsEncrypt in place; len(c) >= 16.
func ctsDecrypt(b cipher.Block, c []byte) {
	n := len(c)
	var iv [aesBlock]byte
	if n == aesBlock {
		cipher.NewCBCDecrypter(b, iv[:]).CryptBlocks(c, c)
		return
	}
	m := (n + aesBlock - 1) / aesBlock
	d := n - (m-1)*aesBlock
	full := (m - 1) * aesBlock
	// X = C_m (at the second-to-last position), Y = C_{m-1}[:d] (the tail).
	var dd, cm1 [aesBlock]byte
	b.Decrypt(dd[:], c[full-aesBlock:full]) // C_{m-1} xor zero-padded P_m
	copy(cm1[:], c[full:])                  // C_{m-1}[:d]
	copy(cm1[d:], dd[d:])                   // the rest of C_{m-1}: P_m is zero there
	var pm [aesBlock]byte
	for i := 0; i < d; i++ {
		pm[i] = dd[i] ^ cm1[i]
	}
	// Now CBC-decrypt C_1..C_{m-1}.
	copy(c[full-aesBlock:full], cm1[:])
	cipher.NewCBCDecrypter(b, iv[:]).CryptBlocks(c[:full], c[:full])
	copy(c[full:], pm[:d])
}
