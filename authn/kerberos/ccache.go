package kerberos

// A forwarded TGT as an MIT credential cache file (format version 4, the
// FILE: type every krb5 library reads; all integers big-endian):
//
//	u16 0x0504 | u16 header length (0: no header tags)
//	principal (the default principal: the client)
//	credential*:
//	    client principal | server principal
//	    keyblock: u16 enctype | u32 length | key
//	    u32 authtime | u32 starttime | u32 endtime | u32 renew_till
//	    u8 is_skey | u32 ticket flags (the KerberosFlags bits as a BE32)
//	    u32 address count | (u16 type | u32 length | bytes)*
//	    u32 authdata count | (u16 type | u32 length | bytes)*
//	    u32 length | ticket DER | u32 length | second ticket DER
//	principal: u32 name type | u32 component count | u32 length | realm |
//	           (u32 length | component)*

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/winrmd/winrmd/authn"
)

type ccWriter struct{ b []byte }

func (w *ccWriter) u8(v uint8)   { w.b = append(w.b, v) }
func (w *ccWriter) u16(v uint16) { w.b = binary.BigEndian.AppendUint16(w.b, v) }
func (w *ccWriter) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *ccWriter) data(d []byte) {
	w.u32(uint32(len(d)))
	w.b = append(w.b, d...)
}

func (w *ccWriter) principal(name types.PrincipalName, realm string) {
	w.u32(uint32(name.NameType))
	w.u32(uint32(len(name.NameString)))
	w.data([]byte(realm))
	for _, c := range name.NameString {
		w.data([]byte(c))
	}
}

func ccTime(t time.Time) uint32 {
	if t.IsZero() || t.Unix() < 0 {
		return 0
	}
	return uint32(t.Unix())
}

// CCache renders the delegated tickets as a ccache file whose default
// principal is the client.
func (d *Delegation) CCache() (*authn.Secret, error) {
	c := &d.Cred
	infos := c.DecryptedEncPart.TicketInfo
	if len(infos) == 0 || len(infos) != len(c.Tickets) {
		return nil, fmt.Errorf("kerberos: delegation without tickets: %w", authn.ErrMalformed)
	}
	var w ccWriter
	w.u16(0x0504)
	w.u16(0)
	first := infos[0]
	w.principal(first.PName, first.PRealm)
	for i, info := range infos {
		tkt, err := c.Tickets[i].Marshal()
		if err != nil {
			return nil, fmt.Errorf("kerberos: delegated ticket: %v: %w", err, authn.ErrMalformed)
		}
		w.principal(info.PName, info.PRealm)
		w.principal(info.SName, info.SRealm)
		w.u16(uint16(info.Key.KeyType))
		w.data(info.Key.KeyValue)
		w.u32(ccTime(info.AuthTime))
		w.u32(ccTime(info.StartTime))
		w.u32(ccTime(info.EndTime))
		w.u32(ccTime(info.RenewTill))
		w.u8(0)
		var fl [4]byte
		copy(fl[:], info.Flags.Bytes)
		w.b = append(w.b, fl[:]...)
		w.u32(uint32(len(info.CAddr)))
		for _, a := range info.CAddr {
			w.u16(uint16(a.AddrType))
			w.data(a.Address)
		}
		w.u32(0) // authdata
		w.data(tkt)
		w.data(nil) // second ticket
	}
	cc := authn.Secret(w.b)
	return &cc, nil
}
