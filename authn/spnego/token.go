package spnego

// SPNEGO tokens (RFC 4178 4.2, MS-SPNG): parsing of the client's
// NegTokenInit (inside the GSS-API framing) and NegTokenResp, building of
// our NegTokenResp.

// Mechanism OIDs as DER content octets.
var (
	oidSPNEGO = []byte{0x2b, 0x06, 0x01, 0x05, 0x05, 0x02}                         // 1.3.6.1.5.5.2
	oidNTLM   = []byte{0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a} // 1.3.6.1.4.1.311.2.2.10
	oidKRB5   = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02}       // 1.2.840.113554.1.2.2
	oidMSKRB5 = []byte{0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02}       // 1.2.840.48018.1.2.2
	oidNEGOEX = []byte{0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x1e} // 1.3.6.1.4.1.311.2.2.30
)

// negState values.
const (
	acceptCompleted  = 0
	acceptIncomplete = 1
	reject           = 2
	requestMIC       = 3
)

// Limits.
const (
	// MaxTokenSize bounds a decoded Negotiate token (Windows' MaxTokenSize
	// is 48000; Kerberos tickets with large PACs come close).
	MaxTokenSize = 64 << 10
	maxMechTypes = 32
)

// negTokenInit is the client's first SPNEGO token.
type negTokenInit struct {
	mechTypes    [][]byte // OID content octets, in client preference order
	mechTypesDER []byte   // the MechTypeList SEQUENCE exactly as received
	mechToken    []byte
	mechListMIC  []byte
}

// negTokenResp is a NegTokenResp from either side.
type negTokenResp struct {
	negState      int // -1 when absent
	supportedMech []byte
	responseToken []byte
	mechListMIC   []byte
}

// isGSSToken reports whether b is a GSS-API initial-context token (0x60).
func isGSSToken(b []byte) bool { return len(b) > 0 && b[0] == tagApp0 }

// parseGSSHeader splits a GSS-API InitialContextToken into its mechanism
// OID and inner token.
func parseGSSHeader(b []byte) (oid, inner []byte, err error) {
	if len(b) > MaxTokenSize {
		return nil, nil, malformed("token of %d bytes exceeds %d", len(b), MaxTokenSize)
	}
	app, err := readOnly(b, tagApp0, "InitialContextToken")
	if err != nil {
		return nil, nil, err
	}
	o, rest, err := readTLV(app.content)
	if err != nil {
		return nil, nil, err
	}
	if o.tag != tagOID {
		return nil, nil, malformed("InitialContextToken: tag %#x, want OID", o.tag)
	}
	if err := checkOID(o.content); err != nil {
		return nil, nil, err
	}
	return o.content, rest, nil
}

// parseNegTokenInit parses the inner token of a SPNEGO initial token:
// [0] NegTokenInit.
func parseNegTokenInit(inner []byte) (*negTokenInit, error) {
	choice, err := readOnly(inner, ctx(0), "NegotiationToken")
	if err != nil {
		return nil, err
	}
	seq, err := readOnly(choice.content, tagSequence, "NegTokenInit")
	if err != nil {
		return nil, err
	}
	f, err := readFields(seq.content, 3, "NegTokenInit")
	if err != nil {
		return nil, err
	}
	t := &negTokenInit{}
	if f[0] == nil {
		return nil, malformed("NegTokenInit without mechTypes")
	}
	list, err := readOnly(f[0], tagSequence, "mechTypes")
	if err != nil {
		return nil, err
	}
	t.mechTypesDER = list.raw
	for b := list.content; len(b) > 0; {
		o, rest, err := readTLV(b)
		if err != nil {
			return nil, err
		}
		if o.tag != tagOID {
			return nil, malformed("mechTypes: tag %#x, want OID", o.tag)
		}
		if err := checkOID(o.content); err != nil {
			return nil, err
		}
		if len(t.mechTypes) == maxMechTypes {
			return nil, malformed("more than %d mechTypes", maxMechTypes)
		}
		t.mechTypes = append(t.mechTypes, o.content)
		b = rest
	}
	if len(t.mechTypes) == 0 {
		return nil, malformed("empty mechTypes")
	}
	if f[1] != nil { // reqFlags: ignored, but must be a BIT STRING
		if _, err := readOnly(f[1], tagBitString, "reqFlags"); err != nil {
			return nil, err
		}
	}
	if f[2] != nil {
		v, err := readOnly(f[2], tagOctetString, "mechToken")
		if err != nil {
			return nil, err
		}
		t.mechToken = v.content
	}
	if f[3] != nil {
		v, err := readOnly(f[3], tagOctetString, "mechListMIC")
		if err != nil {
			return nil, err
		}
		t.mechListMIC = v.content
	}
	return t, nil
}

// parseNegTokenResp parses [1] NegTokenResp (the client's later legs).
func parseNegTokenResp(b []byte) (*negTokenResp, error) {
	if len(b) > MaxTokenSize {
		return nil, malformed("token of %d bytes exceeds %d", len(b), MaxTokenSize)
	}
	choice, err := readOnly(b, ctx(1), "NegotiationToken")
	if err != nil {
		return nil, err
	}
	seq, err := readOnly(choice.content, tagSequence, "NegTokenResp")
	if err != nil {
		return nil, err
	}
	f, err := readFields(seq.content, 3, "NegTokenResp")
	if err != nil {
		return nil, err
	}
	t := &negTokenResp{negState: -1}
	if f[0] != nil {
		v, err := readOnly(f[0], tagEnumerated, "negState")
		if err != nil {
			return nil, err
		}
		if len(v.content) != 1 || v.content[0] > requestMIC {
			return nil, malformed("negState %x", v.content)
		}
		t.negState = int(v.content[0])
	}
	if f[1] != nil {
		v, err := readOnly(f[1], tagOID, "supportedMech")
		if err != nil {
			return nil, err
		}
		if err := checkOID(v.content); err != nil {
			return nil, err
		}
		t.supportedMech = v.content
	}
	if f[2] != nil {
		v, err := readOnly(f[2], tagOctetString, "responseToken")
		if err != nil {
			return nil, err
		}
		t.responseToken = v.content
	}
	if f[3] != nil {
		v, err := readOnly(f[3], tagOctetString, "mechListMIC")
		if err != nil {
			return nil, err
		}
		t.mechListMIC = v.content
	}
	return t, nil
}

// marshal encodes a NegTokenResp; negState -1 and nil fields are omitted.
func (t *negTokenResp) marshal() []byte {
	var parts [][]byte
	if t.negState >= 0 {
		parts = append(parts, wrap(ctx(0), []byte{tagEnumerated, 1, byte(t.negState)}))
	}
	if t.supportedMech != nil {
		parts = append(parts, wrap(ctx(1), wrap(tagOID, t.supportedMech)))
	}
	if t.responseToken != nil {
		parts = append(parts, wrap(ctx(2), wrap(tagOctetString, t.responseToken)))
	}
	if t.mechListMIC != nil {
		parts = append(parts, wrap(ctx(3), wrap(tagOctetString, t.mechListMIC)))
	}
	return wrap(ctx(1), wrap(tagSequence, parts...))
}
