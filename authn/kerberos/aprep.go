package kerberos

// The mutual-authentication reply (RFC 4120 5.5.2), which gokrb5 can parse
// but not build:
//
//	AP-REP ::= [APPLICATION 15] SEQUENCE {
//	    pvno [0] INTEGER (5), msg-type [1] INTEGER (15),
//	    enc-part [2] EncryptedData -- EncAPRepPart, key usage 12, session key }
//	EncAPRepPart ::= [APPLICATION 27] SEQUENCE {
//	    ctime [0] KerberosTime, cusec [1] Microseconds,   -- the authenticator's
//	    subkey [2] EncryptionKey OPTIONAL,                -- our acceptor subkey
//	    seq-number [3] UInt32 OPTIONAL }                  -- our first SND_SEQ

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/asn1tools"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/asnAppTag"
	"github.com/jcmturner/gokrb5/v8/iana/msgtype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
)

const usageAPRepEncPart = 12

// newSubkey makes a fresh random key of the session key's enctype.
func newSubkey(etype int32) (types.EncryptionKey, error) {
	et, err := crypto.GetEtype(etype)
	if err != nil {
		return types.EncryptionKey{}, err
	}
	seed := make([]byte, et.GetKeySeedBitLength()/8)
	if _, err := rand.Read(seed); err != nil {
		return types.EncryptionKey{}, err
	}
	return types.EncryptionKey{KeyType: etype, KeyValue: et.RandomToKey(seed)}, nil
}

// newSeqNumber is a random initial sequence number in 1..2^30 (MIT's
// range: positive as a signed 32-bit value, never zero, which ASN.1
// OPTIONAL encoding would drop).
func newSeqNumber() (uint64, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, err
	}
	return uint64(binary.BigEndian.Uint32(b[:])&0x3fffffff) | 1, nil
}

// buildAPRep encrypts EncAPRepPart under the ticket session key.
func buildAPRep(sessionKey types.EncryptionKey, ctime time.Time, cusec int, subkey *types.EncryptionKey, seq uint64) ([]byte, error) {
	part := messages.EncAPRepPart{CTime: ctime.UTC().Truncate(time.Second), Cusec: cusec, SequenceNumber: int64(seq)}
	if subkey != nil {
		part.Subkey = *subkey
	}
	b, err := asn1.Marshal(part)
	if err != nil {
		return nil, fmt.Errorf("kerberos: encoding EncAPRepPart: %v: %w", err, authn.ErrBackend)
	}
	b = asn1tools.AddASNAppTag(b, asnAppTag.EncAPRepPart)
	ed, err := crypto.GetEncryptedData(b, sessionKey, usageAPRepEncPart, 0)
	if err != nil {
		return nil, fmt.Errorf("kerberos: encrypting EncAPRepPart: %v: %w", err, authn.ErrBackend)
	}
	rep := messages.APRep{PVNO: 5, MsgType: msgtype.KRB_AP_REP, EncPart: ed}
	out, err := asn1.Marshal(rep)
	if err != nil {
		return nil, fmt.Errorf("kerberos: encoding AP-REP: %v: %w", err, authn.ErrBackend)
	}
	return asn1tools.AddASNAppTag(out, asnAppTag.APREP), nil
}
