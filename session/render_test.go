package session

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/beevik/etree"

	"github.com/winrmd/winrmd/server/wsman"
)

func TestReceiveRenderMatchesDOMShape(t *testing.T) {
	payload := bytes.Repeat([]byte{0, 1, 2, '<', '&', 0xff}, 1000)
	cases := []receiveRender{
		{relatesTo: "uuid:ABC", commandID: "11111111-2222-4333-8444-555555555555", state: wsman.StateRunning,
			streams: []streamChunk{{name: "stdout", data: payload}}},
		{relatesTo: `uuid:<&"odd'>` + "\t", commandID: "11111111-2222-4333-8444-555555555555", state: wsman.StateDone, exitCode: -2,
			streams: []streamChunk{{name: "stdout", data: []byte("x")}, {name: "stderr", data: []byte("e")}, {name: "stdout", end: true}, {name: "stderr", end: true}}},
	}
	for _, r := range cases {
		raw := r.bytes()
		doc := etree.NewDocument()
		if err := doc.ReadFromBytes(raw); err != nil {
			t.Fatalf("not XML: %v\n%s", err, raw)
		}
		// It must parse as a request envelope would, namespaces by URI.
		if _, err := wsman.Parse(bytes.Replace(raw, []byte("ReceiveResponse</a:Action>"), []byte("Receive</a:Action>"), 1), "", wsman.DefaultLimits()); err != nil {
			t.Fatalf("rendered envelope does not pass the wsman parser: %v", err)
		}
		if got := doc.FindElement("//Header/RelatesTo").Text(); got != r.relatesTo {
			t.Fatalf("RelatesTo %q, want %q", got, r.relatesTo)
		}
		if doc.FindElement("//Header/Action").Text() != wsman.ActionReceive+"Response" {
			t.Fatal("wrong Action")
		}
		if doc.FindElement("//Header/Action").Space != "a" || doc.Root().SelectAttrValue("xmlns:a", "") != wsman.NsAddressing {
			t.Fatal("prefixes differ from wsman.NewResponse's")
		}
		streams := doc.FindElements("//ReceiveResponse/Stream")
		if len(streams) != len(r.streams) {
			t.Fatalf("%d streams, want %d", len(streams), len(r.streams))
		}
		for i, s := range streams {
			data, err := base64.StdEncoding.DecodeString(s.Text())
			if err != nil || !bytes.Equal(data, r.streams[i].data) {
				t.Fatalf("stream %d payload differs", i)
			}
			if (s.SelectAttrValue("End", "") == "true") != r.streams[i].end || s.SelectAttrValue("CommandId", "") != r.commandID {
				t.Fatalf("stream %d attributes wrong", i)
			}
		}
		st := doc.FindElement("//CommandState")
		if st.SelectAttrValue("State", "") != r.state {
			t.Fatal("state")
		}
		ec := st.FindElement("ExitCode")
		if (r.state == wsman.StateDone) != (ec != nil) {
			t.Fatal("ExitCode must appear exactly with Done")
		}
		if ec != nil && ec.Text() != "-2" {
			t.Fatalf("ExitCode %q", ec.Text())
		}
		if len(raw) != cap(raw) {
			t.Fatalf("size computed %d, used %d", cap(raw), len(raw))
		}
	}
}

func BenchmarkReceiveRender(b *testing.B) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 382080/16)
	r := receiveRender{relatesTo: "uuid:6F0C2A9D-0000-4000-8000-000000000001", commandID: "11111111-2222-4333-8444-555555555555",
		state: wsman.StateRunning, streams: []streamChunk{{name: "stdout", data: payload}}}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = r.bytes()
	}
}
