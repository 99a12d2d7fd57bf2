package kerberos

import (
	"fmt"

	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
)

// FinishInitiator is the client side of mutual authentication, for tests
// and the benchmark's client: it checks the AP-REP token (GSS-framed)
// against the session key and returns the initiator's message protection
// (wrap with the acceptor subkey, our sequence numbers from initiatorSeq,
// the acceptor's from its AP-REP).
func FinishInitiator(apRep []byte, sessionKey types.EncryptionKey, initiatorSeq uint64) (authn.Sealer, error) {
	_, tok, msg, err := ParseInitialToken(apRep)
	if err != nil {
		return nil, err
	}
	if tok != tokAPRep {
		return nil, malformed("expected an AP-REP, got TOK_ID %x", tok)
	}
	var rep messages.APRep
	if err := rep.Unmarshal(msg); err != nil {
		return nil, malformed("AP-REP: %v", err)
	}
	plain, err := decrypt(rep.EncPart, sessionKey, usageAPRepEncPart)
	if err != nil {
		return nil, fmt.Errorf("kerberos: AP-REP does not decrypt: %v: %w", err, authn.ErrBadCredentials)
	}
	var part messages.EncAPRepPart
	if err := part.Unmarshal(plain); err != nil {
		return nil, malformed("EncAPRepPart: %v", err)
	}
	key, sub := sessionKey, false
	if len(part.Subkey.KeyValue) > 0 {
		key, sub = part.Subkey, true
	}
	s, err := newSeqState(key, false, sub, initiatorSeq, uint64(uint32(part.SequenceNumber)))
	if err != nil {
		return nil, err
	}
	return sealer{s}, nil
}
