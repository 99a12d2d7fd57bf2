package kerberos

import (
	"fmt"
	"io"
	"log"

	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
)

// discardLogger receives gokrb5's diagnostic lines (PAC buffers it skips).
var discardLogger = log.New(io.Discard, "", 0)

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
	case len(subkey.KeyValue) > 0 && subkey.KeyType == c.EncPart.EType:
		if err = c.DecryptEncPart(subkey); err != nil {
			err = c.DecryptEncPart(session)
		}
	default:
		err = c.DecryptEncPart(session)
	}
	if err != nil {
		return nil, fmt.Errorf("kerberos: delegated KRB-CRED does not decrypt: %v: %w", err, authn.ErrBadCredentials)
	}
	if len(c.DecryptedEncPart.TicketInfo) != len(c.Tickets) {
		return nil, malformed("delegated KRB-CRED: %d tickets, %d ticket infos", len(c.Tickets), len(c.DecryptedEncPart.TicketInfo))
	}
	return &Delegation{Cred: c}, nil
}
