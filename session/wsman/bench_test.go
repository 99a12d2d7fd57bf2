package wsman

import (
	"encoding/base64"
	"strings"
	"testing"
)

func BenchmarkParseReceive(b *testing.B) {
	for _, name := range []string{"pywinrm_receive.xml", "pypsrp_receive_psrp.xml", "masterzen_receive.xml"} {
		data := readFixture(b, name)
		b.Run(strings.TrimSuffix(name, ".xml"), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(data, ctUTF8, DefaultLimits()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkResponse builds a ReceiveResponse carrying 48 KiB of output, the
// shape of a busy command's Receive.
func BenchmarkResponse(b *testing.B) {
	const cid = "CF84C20A-0A35-43FA-AF78-0B4711DA5F30"
	payload := base64.StdEncoding.EncodeToString(make([]byte, 48<<10))
	b.ReportAllocs()
	var n int
	for b.Loop() {
		r := NewResponse(ActionReceive+ResponseSuffix, "uuid:0b2d8f6a-1c3e-4a5b-9d7f-2e4c6a8b0d1f")
		rr := r.Body().CreateElement("rsp:ReceiveResponse")
		s := rr.CreateElement("rsp:Stream")
		s.CreateAttr("Name", "stdout")
		s.CreateAttr("CommandId", cid)
		s.SetText(payload)
		cs := rr.CreateElement("rsp:CommandState")
		cs.CreateAttr("CommandId", cid)
		cs.CreateAttr("State", StateRunning)
		n = len(r.Bytes())
	}
	b.SetBytes(int64(n))
}

// send500K is a pywinrm-shaped Send carrying one rsp:Stream of about 500 KB
// of base64, just under DefaultMaxBytes: the stdin rows of make bench.
func send500K(tb testing.TB) []byte {
	tb.Helper()
	tmpl := string(readFixture(tb, "pywinrm_send.xml"))
	const old = "ZWNobyBoZWxsbw0KZXhpdA0K"
	if !strings.Contains(tmpl, old) {
		tb.Fatal("pywinrm_send.xml has no stream payload")
	}
	raw := make([]byte, 375000)
	for i := range raw {
		raw[i] = byte(i*7 + i>>9)
	}
	return []byte(strings.Replace(tmpl, old, base64.StdEncoding.EncodeToString(raw), 1))
}

func BenchmarkParseSend500K(b *testing.B) {
	data := send500K(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		env, err := Parse(data, ctUTF8, DefaultLimits())
		if err != nil {
			b.Fatal(err)
		}
		if st := env.streamOf(Child(env.Body, NsShell, "Stream")); st == nil || len(st.text) != 500000 {
			b.Fatal("stream text lost")
		}
	}
}

// BenchmarkDecodeSend500K is a stdin Send from the body as read off the
// connection to the typed message: Parse and DecodeInPlace of send500K, as
// the server does (copy: Decode instead). The body is copied into a reused
// buffer first, as the server reads each request into a pooled buffer.
func BenchmarkDecodeSend500K(b *testing.B) {
	for _, v := range []struct {
		name   string
		decode func(*Envelope) (*Message, error)
	}{{"in-place", DecodeInPlace}, {"copy", Decode}} {
		b.Run(v.name, func(b *testing.B) {
			data := send500K(b)
			body := make([]byte, len(data))
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				copy(body, data)
				env, err := Parse(body, ctUTF8, DefaultLimits())
				if err != nil {
					b.Fatal(err)
				}
				m, err := v.decode(env)
				if err != nil {
					b.Fatal(err)
				}
				if s := m.Body.(*Send); len(s.Streams) != 1 || len(s.Streams[0].Data) != 375000 {
					b.Fatal("stream data lost")
				}
			}
		})
	}
}
