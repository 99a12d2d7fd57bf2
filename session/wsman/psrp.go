package wsman

import (
	"strings"
	"time"

	"github.com/beevik/etree"
)

// The PowerShell (PSRP) shell's own WinRS bodies (MS-WSMV 3.1.4.15-17,
// MS-PSRP 3.1.4.9-11): Disconnect, Reconnect, Connect, and the
// ConnectResponse. The PSRP payloads themselves (creationXml, connectXml,
// Arguments, Streams) stay base64 or bytes here: the session layer hands
// them to the psrp codec.

// Disconnect is the body of a Disconnect: rsp:Disconnect.
type Disconnect struct {
	// IdleTimeout is rsp:IdleTimeOut, how long the disconnected shell may
	// live; 0 when absent.
	IdleTimeout time.Duration
}

// Connect is the body of a Connect: rsp:Connect. With a CommandId it
// reconnects one pipeline; without, ConnectXML carries the new client's
// SESSION_CAPABILITY and CONNECT_RUNSPACEPOOL fragments (base64 as sent).
type Connect struct {
	CommandID  string
	ConnectXML string
}

func decodeDisconnect(b *etree.Element) (*Disconnect, *Fault) {
	d := &Disconnect{}
	if e := Child(b, NsShell, "IdleTimeOut"); e != nil {
		v, err := parseIdle(e.Text())
		if err != nil {
			return nil, InvalidParameter("IdleTimeOut: " + err.Error())
		}
		d.IdleTimeout = v
	}
	return d, nil
}

func decodeConnect(b *etree.Element) *Connect {
	return &Connect{
		CommandID:  Attr(b, "CommandId"),
		ConnectXML: strings.TrimSpace(Text(Child(b, NsPowerShell, "connectXml"))),
	}
}

// EncodeConnect renders a ConnectResponse for one pipeline (empty).
func EncodeConnect(relatesTo string) []byte {
	r := NewResponse(ActionConnect+ResponseSuffix, relatesTo)
	r.Body().CreateElement("rsp:ConnectResponse")
	return r.Bytes()
}
