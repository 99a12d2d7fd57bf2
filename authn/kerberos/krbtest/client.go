package krbtest

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Client is a Go initiator (gokrb5's client side) for crafting AP-REQs a
// library would never send: replays, wrong channel bindings, expired
// tickets.
type Client struct {
	cl *client.Client
}

// Login gets a TGT for user with password; lifetime 0 is the realm's.
func (k *KDC) Login(user, password string, lifetime time.Duration) (*Client, error) {
	c := config.New()
	c.LibDefaults.DefaultRealm = Realm
	c.LibDefaults.UDPPreferenceLimit = 1
	c.LibDefaults.DNSLookupKDC = false
	if lifetime > 0 {
		c.LibDefaults.TicketLifetime = lifetime
	}
	c.Realms = []config.Realm{{Realm: Realm, KDC: []string{fmt.Sprintf("127.0.0.1:%d", k.Port)}}}
	cl := client.NewWithPassword(user, Realm, password, c, client.DisablePAFXFAST(true))
	if err := cl.Login(); err != nil {
		return nil, fmt.Errorf("krbtest: login %s: %v", user, err)
	}
	return &Client{cl: cl}, nil
}

// APReqOptions shape an AP-REQ.
type APReqOptions struct {
	Mutual bool
	CBT    []byte // the authenticator checksum's Bnd (16 bytes), or zeros
}

// Ticket is a service ticket and its session key.
type Ticket struct {
	c   *Client
	tkt messages.Ticket
	key types.EncryptionKey
}

// Ticket gets a service ticket for spn.
func (c *Client) Ticket(spn string) (*Ticket, error) {
	tkt, key, err := c.cl.GetServiceTicket(spn)
	if err != nil {
		return nil, err
	}
	return &Ticket{c: c, tkt: tkt, key: key}, nil
}

// APReq returns a GSS-framed krb5 AP-REQ for spn (RFC 4121 4.1).
func (c *Client) APReq(spn string, o APReqOptions) ([]byte, error) {
	t, err := c.Ticket(spn)
	if err != nil {
		return nil, err
	}
	return t.APReq(o)
}

// APReq makes a fresh authenticator for the ticket, whatever its times.
func (t *Ticket) APReq(o APReqOptions) ([]byte, error) {
	tok, _, _, err := t.Initiate(o)
	return tok, err
}

// Initiate makes an AP-REQ and returns with it the session key and the
// authenticator's sequence number, which the initiator's side of the
// context needs (kerberos.FinishInitiator).
func (t *Ticket) Initiate(o APReqOptions) (token []byte, sessionKey types.EncryptionKey, seq uint64, err error) {
	tok, auth, err := t.apReq(o)
	if err != nil {
		return nil, types.EncryptionKey{}, 0, err
	}
	return tok, t.key, uint64(uint32(auth.SeqNumber)), nil
}

func (t *Ticket) apReq(o APReqOptions) ([]byte, types.Authenticator, error) {
	c, tkt, key := t.c, t.tkt, t.key
	auth, err := types.NewAuthenticator(c.cl.Credentials.Domain(), c.cl.Credentials.CName())
	if err != nil {
		return nil, auth, err
	}
	ck := make([]byte, 24)
	binary.LittleEndian.PutUint32(ck[0:4], 16)
	copy(ck[4:20], o.CBT)
	f := uint32(16 | 32) // CONF, INTEG
	if o.Mutual {
		f |= 2
	}
	binary.LittleEndian.PutUint32(ck[20:24], f)
	auth.Cksum = types.Checksum{CksumType: 0x8003, Checksum: ck}
	req, err := messages.NewAPReq(tkt, key, auth)
	if err != nil {
		return nil, auth, err
	}
	if o.Mutual {
		types.SetFlag(&req.APOptions, flags.APOptionMutualRequired)
	}
	b, err := req.Marshal()
	if err != nil {
		return nil, auth, err
	}
	oid := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x01, 0x00}
	inner := append(oid, b...)
	out := []byte{0x60}
	switch l := len(inner); {
	case l < 0x80:
		out = append(out, byte(l))
	case l < 0x100:
		out = append(out, 0x81, byte(l))
	default:
		out = append(out, 0x82, byte(l>>8), byte(l))
	}
	return append(out, inner...), auth, nil
}
