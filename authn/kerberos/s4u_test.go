package kerberos

import (
	"strings"
	"testing"

	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

func TestTicketFlags(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want uint32
	}{
		{nil, 0},
		{[]byte{0x40}, 0x40000000}, // forwardable
		{[]byte{0x40, 0x81, 0x00, 0x00}, 0x40810000}, // forwardable, renewable, pre-authent
		{[]byte{0x60, 0xa1, 0x00, 0x00, 0xff}, 0x60a10000},
	} {
		if got := ticketFlags(tc.in); got != tc.want {
			t.Errorf("ticketFlags(%x) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

// A ticket that is not forwardable is refused before any KDC is asked (the
// Keytab is nil: reaching the AS exchange would panic), and the reason is
// logged with the client's name.
func TestConstrainedNotForwardable(t *testing.T) {
	var logged string
	c := &ConstrainedDelegation{Account: "svc", Realm: "EX.TEST", Logf: func(f string, a ...any) { logged = f }}
	tk := &messages.Ticket{Realm: "EX.TEST", SName: types.NewPrincipalName(2, "HTTP/h.ex.test")}
	tk.DecryptedEncPart.CName = types.NewPrincipalName(1, "alice")
	tk.DecryptedEncPart.CRealm = "EX.TEST"
	tk.DecryptedEncPart.Flags = types.NewKrbFlags()
	types.SetFlag(&tk.DecryptedEncPart.Flags, flags.Renewable)
	if _, err := c.Cache(tk); err == nil || !strings.Contains(err.Error(), "not forwardable") {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(logged, "no S4U2Proxy cache") {
		t.Fatalf("log %q", logged)
	}
}
