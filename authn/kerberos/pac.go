package kerberos

// The PAC (MS-PAC 2.3-2.8), which Active Directory, Samba and MIT KDCs
// (1.20+) put in AD-WIN2K-PAC inside AD-IF-RELEVANT:
//
//	PACTYPE:       cBuffers LE32 | Version LE32 (0) | cBuffers × PAC_INFO_BUFFER
//	PAC_INFO_BUFFER: ulType LE32 | cbBufferSize LE32 | Offset LE64 (8-aligned)
//	types: 1 KERB_VALIDATION_INFO (logon info), 6 server checksum,
//	       7 KDC (privsvr) checksum, 10 client info, 12 UPN/DNS, ...
//	PAC_SIGNATURE_DATA: SignatureType LE32 | Signature | [RODCIdentifier LE16]
//
// The server signature is the keyed checksum (key usage 17) with the
// service key over the whole PAC with both signatures' Signature bytes
// zeroed. It is verified here for every PAC (gokrb5's check and
// authn/pac need a logon-info buffer, which MIT's minimal PAC lacks);
// PACs with logon information then go through authn/pac for the SIDs.

import (
	"crypto/hmac"
	"encoding/binary"
	"fmt"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/types"
)

const (
	pacLogonInfo       = 1
	pacServerChecksum  = 6
	pacKDCChecksum     = 7
	usagePACServerSign = 17
	// MaxPACBuffers bounds the buffer count (Windows writes about 10).
	MaxPACBuffers = 64
)

type pacBuffer struct {
	typ       uint32
	off, size int
}

// parsePACBuffers reads and bounds-checks the buffer table.
func parsePACBuffers(b []byte) ([]pacBuffer, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("PAC of %d bytes", len(b))
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if n == 0 || n > MaxPACBuffers {
		return nil, fmt.Errorf("PAC with %d buffers", n)
	}
	if v := binary.LittleEndian.Uint32(b[4:8]); v != 0 {
		return nil, fmt.Errorf("PAC version %d", v)
	}
	if len(b) < 8+int(n)*16 {
		return nil, fmt.Errorf("PAC buffer table truncated")
	}
	out := make([]pacBuffer, 0, n)
	for i := 0; i < int(n); i++ {
		e := b[8+16*i:]
		typ := binary.LittleEndian.Uint32(e[0:4])
		size := uint64(binary.LittleEndian.Uint32(e[4:8]))
		off := binary.LittleEndian.Uint64(e[8:16])
		if off > uint64(len(b)) || size > uint64(len(b))-off {
			return nil, fmt.Errorf("PAC buffer %d (type %d) outside the PAC", i, typ)
		}
		out = append(out, pacBuffer{typ: typ, off: int(off), size: int(size)})
	}
	return out, nil
}

// pacInfo says what a PAC with a valid server signature holds.
type pacInfo struct {
	logon bool // it has logon information (KERB_VALIDATION_INFO)
}

// verifyPAC checks the server signature with key and decodes the logon
// info when present.
func verifyPAC(b []byte, key types.EncryptionKey) (info pacInfo, err error) {
	bufs, err := parsePACBuffers(b)
	if err != nil {
		return info, err
	}
	var server, kdc *pacBuffer
	var logon *pacBuffer
	for i := range bufs {
		switch bufs[i].typ {
		case pacServerChecksum:
			if server != nil {
				return info, fmt.Errorf("PAC with two server signatures")
			}
			server = &bufs[i]
		case pacKDCChecksum:
			if kdc != nil {
				return info, fmt.Errorf("PAC with two KDC signatures")
			}
			kdc = &bufs[i]
		case pacLogonInfo:
			if logon == nil {
				logon = &bufs[i]
			}
		}
	}
	if server == nil || kdc == nil {
		return info, fmt.Errorf("PAC without server or KDC signature")
	}
	zeroed := append([]byte(nil), b...)
	var sig []byte
	var sigType int32
	for _, sb := range []*pacBuffer{server, kdc} {
		if sb.size < 4 {
			return info, fmt.Errorf("PAC signature buffer of %d bytes", sb.size)
		}
		st := int32(binary.LittleEndian.Uint32(b[sb.off:]))
		et, err := crypto.GetChksumEtype(st)
		if err != nil {
			return info, fmt.Errorf("PAC signature type %d: %v", st, err)
		}
		l := et.GetHMACBitLength() / 8
		if st == -138 { // KERB_CHECKSUM_HMAC_MD5
			l = 16
		}
		if sb.size < 4+l {
			return info, fmt.Errorf("PAC signature of type %d truncated", st)
		}
		clear(zeroed[sb.off+4 : sb.off+4+l])
		if sb == server {
			sig, sigType = b[sb.off+4:sb.off+4+l], st
		}
	}
	et, err := crypto.GetChksumEtype(sigType)
	if err != nil {
		return info, err
	}
	if et.GetETypeID() != key.KeyType && sigType != -138 {
		// The server signature is made with the service key's enctype.
		return info, fmt.Errorf("PAC server signature type %d does not fit the service key enctype %d", sigType, key.KeyType)
	}
	sum, err := et.GetChecksumHash(key.KeyValue, zeroed, usagePACServerSign)
	if err != nil {
		return info, fmt.Errorf("PAC server signature: %v", err)
	}
	if len(sum) < len(sig) || !hmac.Equal(sum[:len(sig)], sig) {
		return info, fmt.Errorf("PAC server signature does not verify with the service key")
	}
	info.logon = logon != nil
	return info, nil
}
