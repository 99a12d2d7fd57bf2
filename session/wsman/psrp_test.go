package wsman

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/beevik/etree"
)

// TestReceivePoolForm: a runspace pool's ReceiveResponse has Streams
// without CommandId and no CommandState, one Stream per fragment.
func TestReceivePoolForm(t *testing.T) {
	r := ReceiveResponse{Pool: true, Streams: []StreamChunk{{Name: "stdout", Data: []byte("frag1")}, {Name: "stdout", Data: []byte("frag2")}}}
	raw := r.Encode("uuid:1")
	if len(raw) != cap(raw) {
		t.Fatalf("size computed %d, used %d", cap(raw), len(raw))
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		t.Fatal(err)
	}
	streams := doc.FindElements("//ReceiveResponse/Stream")
	if len(streams) != 2 {
		t.Fatalf("%d streams", len(streams))
	}
	for i, s := range streams {
		if s.SelectAttr("CommandId") != nil {
			t.Error("pool stream carries a CommandId")
		}
		if d, _ := base64.StdEncoding.DecodeString(s.Text()); !bytes.Equal(d, r.Streams[i].Data) {
			t.Errorf("stream %d payload", i)
		}
	}
	if doc.FindElement("//CommandState") != nil {
		t.Error("pool response carries a CommandState")
	}
}

func TestDecodePSRPBodies(t *testing.T) {
	for _, tc := range []struct {
		action, body string
		check        func(t *testing.T, b any)
	}{
		{ActionDisconnect, `<rsp:Disconnect xmlns:rsp="` + NsShell + `"><rsp:IdleTimeOut>PT60S</rsp:IdleTimeOut></rsp:Disconnect>`, func(t *testing.T, b any) {
			if d, ok := b.(*Disconnect); !ok || d.IdleTimeout.Seconds() != 60 {
				t.Errorf("%#v", b)
			}
		}},
		{ActionConnect, `<rsp:Connect xmlns:rsp="` + NsShell + `" CommandId="C"/>`, func(t *testing.T, b any) {
			if c, ok := b.(*Connect); !ok || c.CommandID != "C" || c.ConnectXML != "" {
				t.Errorf("%#v", b)
			}
		}},
		{ActionConnect, `<rsp:Connect xmlns:rsp="` + NsShell + `"><connectXml xmlns="` + NsPowerShell + `"> QUJD </connectXml></rsp:Connect>`, func(t *testing.T, b any) {
			if c, ok := b.(*Connect); !ok || c.ConnectXML != "QUJD" {
				t.Errorf("%#v", b)
			}
		}},
	} {
		env := `<s:Envelope xmlns:s="` + NsSoap + `" xmlns:a="` + NsAddressing + `" xmlns:w="` + NsWsman + `"><s:Header><a:Action>` + tc.action +
			`</a:Action><a:MessageID>uuid:1</a:MessageID><a:To>http://x/wsman</a:To><w:ResourceURI>` + PowerShellPrefix + `Microsoft.PowerShell</w:ResourceURI></s:Header><s:Body>` + tc.body + `</s:Body></s:Envelope>`
		e, err := Parse([]byte(env), "", DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		m, err := Decode(e)
		if err != nil {
			t.Fatal(err)
		}
		tc.check(t, m.Body)
	}
}
