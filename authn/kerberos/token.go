package kerberos

// The GSS-API framing of RFC 1964 3.1 / RFC 4121 4.1 around krb5 context
// tokens, and the authenticator checksum of RFC 4121 4.1.1:
//
//	InitialContextToken ::= [APPLICATION 0] IMPLICIT SEQUENCE {
//	    thisMech MechType,           -- 06 09 2a864886f712010202 (or MS 2a864882f712010202)
//	    innerToken ANY }             -- TOK_ID (2 bytes) || DER message
//	TOK_ID: 01 00 AP-REQ, 02 00 AP-REP, 03 00 KRB-ERROR
//
//	checksum type 0x8003:
//	    Lgth   LE32  = 16
//	    Bnd    16    MD5 of the gss_channel_bindings, or zeros
//	    Flags  LE32  DELEG 1, MUTUAL 2, REPLAY 4, SEQUENCE 8, CONF 16, INTEG 32, ...
//	    [DlgOpt LE16 = 1, Dlgth LE16, Deleg KRB-CRED]   when DELEG is set
//	    [Exts ...]                                      ignored
//
// The reader is strict (authn/internal/der, on cryptobyte): definite
// minimal DER lengths, the exact OIDs, no trailing bytes after the outer
// element, every length checked against what is left.

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/internal/der"
	"golang.org/x/crypto/cryptobyte/asn1"
)

var (
	// OIDKRB5 is 1.2.840.113554.1.2.2 (DER content octets).
	OIDKRB5 = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02}
	// OIDMSKRB5 is 1.2.840.48018.1.2.2, the OID Windows lists first.
	OIDMSKRB5 = []byte{0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02}
)

// Token identifiers (RFC 4121 4.1).
var (
	tokAPReq    = [2]byte{0x01, 0x00}
	tokAPRep    = [2]byte{0x02, 0x00}
	tokKRBError = [2]byte{0x03, 0x00}
)

// GSS checksum flags (RFC 4121 4.1.1.1).
const (
	flagDeleg    = 1
	flagMutual   = 2
	flagReplay   = 4
	flagSequence = 8
	flagConf     = 16
	flagInteg    = 32
)

// gssChecksumType is the authenticator checksum type of RFC 4121 4.1.1.
const gssChecksumType = 0x8003

func malformed(format string, args ...any) error { return rd.Errorf(format, args...) }

// rd reads the GSS-API framing's DER (authn/internal/der, on cryptobyte).
const rd der.Reader = "kerberos"

// ParseInitialToken splits a GSS-framed krb5 token into its mechanism OID
// (either krb5 OID), its TOK_ID and the DER message. The returned slices
// alias in.
func ParseInitialToken(in []byte) (oid []byte, tokID [2]byte, msg []byte, err error) {
	oid, rest, err := rd.InitialContextToken(in, authn.MaxTokenSize)
	if err != nil {
		return nil, tokID, nil, err
	}
	if !bytes.Equal(oid, OIDKRB5) && !bytes.Equal(oid, OIDMSKRB5) {
		return nil, tokID, nil, fmt.Errorf("kerberos: GSS token for mechanism %x: %w", oid, authn.ErrUnsupported)
	}
	if len(rest) < 2 {
		return nil, tokID, nil, malformed("GSS token without TOK_ID")
	}
	copy(tokID[:], rest[:2])
	return oid, tokID, rest[2:], nil
}

// frameToken wraps msg in the GSS framing with oid and tokID.
func frameToken(oid []byte, tokID [2]byte, msg []byte) []byte {
	return der.Element(der.TagApp0, der.Element(asn1.OBJECT_IDENTIFIER, oid), tokID[:], msg)
}

// gssChecksum is the decoded 0x8003 authenticator checksum.
type gssChecksum struct {
	bnd   []byte // 16 bytes
	flags uint32
	deleg []byte // KRB-CRED, when flagDeleg is set
}

// parseGSSChecksum decodes the 0x8003 checksum value.
func parseGSSChecksum(b []byte) (gssChecksum, error) {
	var c gssChecksum
	if len(b) < 24 {
		return c, malformed("authenticator checksum of %d bytes, want at least 24", len(b))
	}
	if l := binary.LittleEndian.Uint32(b[0:4]); l != 16 {
		return c, malformed("authenticator checksum Lgth %d, want 16", l)
	}
	c.bnd = b[4:20]
	c.flags = binary.LittleEndian.Uint32(b[20:24])
	rest := b[24:]
	if c.flags&flagDeleg != 0 {
		if len(rest) < 4 {
			// Some initiators set DELEG without delegating (RFC 4121 says
			// the fields are then present; a missing pair means none).
			c.flags &^= flagDeleg
			return c, nil
		}
		opt := binary.LittleEndian.Uint16(rest[0:2])
		dl := int(binary.LittleEndian.Uint16(rest[2:4]))
		if opt != 1 {
			return c, malformed("authenticator checksum DlgOpt %d, want 1", opt)
		}
		if len(rest) < 4+dl {
			return c, malformed("authenticator checksum Dlgth %d, %d bytes present", dl, len(rest)-4)
		}
		if dl > 0 {
			c.deleg = rest[4 : 4+dl]
		}
	}
	return c, nil
}
