package kerberos

import (
	"fmt"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
)

const usageKRBCred = 14

// MaxDelegatedTickets bounds the tickets of one KRB-CRED.
const MaxDelegatedTickets = 4

// decodeDelegation decrypts a forwarded KRB-CRED (key usage 14). MIT
// encrypts it with the authenticator subkey, Windows with the ticket
// session key; some initiators send it unencrypted (enctype 0, RFC 6448).
func decodeDelegation(b []byte, session, subkey types.EncryptionKey) (*Delegation, error) {
	var c messages.KRBCred
	if err := c.Unmarshal(b); err != nil {
		return nil, malformed("delegated KRB-CRED: %v", err)
	}
	if len(c.Tickets) == 0 || len(c.Tickets) > MaxDelegatedTickets {
		return nil, malformed("delegated KRB-CRED with %d tickets", len(c.Tickets))
	}
	var err error
	switch {
	case c.EncPart.EType == 0:
		err = c.DecryptedEncPart.Unmarshal(c.EncPart.Cipher)
	default:
		var plain []byte
		if len(subkey.KeyValue) > 0 && subkey.KeyType == c.EncPart.EType {
			plain, err = decrypt(c.EncPart, subkey, usageKRBCred)
		}
		if plain == nil {
			plain, err = decrypt(c.EncPart, session, usageKRBCred)
		}
		if err == nil {
			err = c.DecryptedEncPart.Unmarshal(plain)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kerberos: delegated KRB-CRED does not decrypt: %v: %w", err, authn.ErrBadCredentials)
	}
	if len(c.DecryptedEncPart.TicketInfo) != len(c.Tickets) {
		return nil, malformed("delegated KRB-CRED: %d tickets, %d ticket infos", len(c.Tickets), len(c.DecryptedEncPart.TicketInfo))
	}
	return &Delegation{Cred: c}, nil
}

// decrypt is crypto.DecryptEncPart with the length checks gokrb5 leaves
// out (it slices ciphertext[:len-hmac] unchecked: a short enc-part in a
// hostile AP-REQ would panic).
func decrypt(ed types.EncryptedData, key types.EncryptionKey, usage uint32) ([]byte, error) {
	if ed.EType != key.KeyType {
		return nil, fmt.Errorf("enctype %d, key enctype %d", ed.EType, key.KeyType)
	}
	et, err := crypto.GetEtype(key.KeyType)
	if err != nil {
		return nil, err
	}
	min := et.GetConfounderByteSize() + et.GetHMACBitLength()/8
	if min < 16+12 {
		min = 16 + 12
	}
	if len(ed.Cipher) < min {
		return nil, fmt.Errorf("ciphertext of %d bytes, at least %d needed", len(ed.Cipher), min)
	}
	return crypto.DecryptMessage(ed.Cipher, key, usage)
}
