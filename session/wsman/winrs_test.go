package wsman

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

func decodeFixture(t testing.TB, name string) *Message {
	t.Helper()
	env, err := Parse(readFixture(t, name), ctUTF8, DefaultLimits())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	m, err := Decode(env)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

// TestDecodeFixtures decodes the clients' own requests into typed bodies.
func TestDecodeFixtures(t *testing.T) {
	const cid = "A81C2D3E-64F0-4B9A-8E7D-1F2A3B4C5D6E"
	cases := []struct {
		fixture string
		want    any
	}{
		{"pywinrm_create.xml", &Shell{InputStreams: "stdin", OutputStreams: "stdout stderr",
			WorkingDirectory: `C:\Users\tester`, IdleTimeout: 600 * time.Second,
			Environment: []EnvVar{{"PATH", "/usr/local/bin:/usr/bin"}, {"GREETING", "fish & chips <3"}}}},
		{"masterzen_create.xml", &Shell{InputStreams: "stdin", OutputStreams: "stdout stderr"}},
		{"pypsrp_create_psrp.xml", &Shell{ShellID: "9C3E5A71-2B8D-4F60-A1E2-7D4C6B8F0A13", InputStreams: "stdin pr", OutputStreams: "stdout",
			CreationXML: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAd2lucm1kIHRlc3QgZml4dHVyZTogbm90IGEgcmVhbCBQU1JQIGZyYWdtZW50"}},
		{"pywinrm_command.xml", &CommandLine{Command: "ipconfig", Arguments: []string{"/all /v"}}},
		{"pywinrm_send.xml", &Send{Streams: []StreamData{{Name: "stdin", CommandID: cid, Data: []byte("echo hello\r\nexit\r\n"), End: true}}}},
		{"pywinrm_receive.xml", &Receive{CommandID: cid, Streams: []string{"stdout", "stderr"}}},
		{"pywinrm_signal.xml", &Signal{CommandID: cid, Code: SignalTerminate}},
		{"pypsrp_enumerate_shells.xml", &Enumerate{Optimize: true}},
		{"pypsrp_enumerate_commands.xml", &Enumerate{Optimize: true, FilterShellID: "9C3E5A71-2B8D-4F60-A1E2-7D4C6B8F0A13"}},
		{"pypsrp_pull.xml", &Pull{Context: "uuid:5A6B7C8D-9E0F-4A1B-8C2D-3E4F5A6B7C8D", HasContext: true, MaxElements: 20}},
		{"pywinrm_delete.xml", nil},
		{"pypsrp_get_config.xml", nil},
	}
	for _, tc := range cases {
		m := decodeFixture(t, tc.fixture)
		if tc.want == nil {
			if m.Body != nil {
				t.Errorf("%s: body %#v, want none", tc.fixture, m.Body)
			}
			continue
		}
		if !reflect.DeepEqual(m.Body, tc.want) {
			t.Errorf("%s:\n got %#v\nwant %#v", tc.fixture, m.Body, tc.want)
		}
		if m.Header.MessageID == "" || m.Header.Action == "" {
			t.Errorf("%s: header not carried: %+v", tc.fixture, m.Header)
		}
		// And back: the typed value encodes to a request that decodes to it.
		if b := roundTrip(t, m); !reflect.DeepEqual(b.Body, m.Body) {
			t.Errorf("%s: round trip\n got %#v\nwant %#v", tc.fixture, b.Body, m.Body)
		}
	}
}

// TestDecodeWrongElement: a body of the wrong element decodes to no body;
// the operation then names what it needed.
func TestDecodeWrongElement(t *testing.T) {
	for _, a := range []string{ActionCreate, ActionCommand, ActionSend, ActionReceive, ActionSignal, ActionEnumerate, ActionPull, ActionRelease} {
		m := &Message{Header: Header{Action: a, To: "http://h/wsman", MessageID: "uuid:X", ResourceURI: ResourceCmdShell}}
		env, err := Parse(EncodeRequest(m), ctUTF8, DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		env.Body = nil
		got, err := Decode(env)
		if err != nil || got.Body != nil {
			t.Errorf("%s: body %#v, err %v; want no body, no error", a, got, err)
		}
	}
}

func TestDecodeFaults(t *testing.T) {
	const shellHead = `<s:Envelope xmlns:s="` + NsSoap + `" xmlns:a="` + NsAddressing + `" xmlns:rsp="` + NsShell +
		`"><s:Header><a:Action>%s</a:Action><a:MessageID>uuid:1</a:MessageID></s:Header><s:Body>`
	cases := []struct{ action, body, want string }{
		{ActionSend, `<rsp:Send><rsp:Stream Name="stdin" CommandId="X">!!notbase64</rsp:Stream></rsp:Send>`, "not valid base64"},
		{ActionSend, `<rsp:Send>` + strings.Repeat(`<rsp:Stream Name="stdin" CommandId="X"/>`, MaxSendStreams+1) + `</rsp:Send>`, "Too many streams"},
		{ActionCreate, `<rsp:Shell><rsp:IdleTimeOut>PTxS</rsp:IdleTimeOut></rsp:Shell>`, "IdleTimeOut"},
		{ActionCreate, `<rsp:Shell><rsp:IdleTimeOut>-5</rsp:IdleTimeOut></rsp:Shell>`, "IdleTimeOut: out of range"},
		{ActionCreate, `<rsp:Shell><rsp:Environment>` + strings.Repeat(`<rsp:Variable Name="A">b</rsp:Variable>`, MaxEnvVars+1) + `</rsp:Environment></rsp:Shell>`, "Too many environment"},
		{ActionReceive, `<rsp:Receive/>`, "DesiredStream"},
	}
	for _, tc := range cases {
		raw := strings.Replace(shellHead, "%s", tc.action, 1) + tc.body + `</s:Body></s:Envelope>`
		env, err := Parse([]byte(raw), ctUTF8, DefaultLimits())
		if err != nil {
			t.Fatalf("%s: %v", tc.want, err)
		}
		_, err = Decode(env)
		f, ok := err.(*Fault)
		if !ok || !strings.Contains(f.Reason, tc.want) || f.RelatesTo != "uuid:1" {
			t.Errorf("%q: got %v", tc.want, err)
			continue
		}
		wellFormed(t, FaultEnvelope(f, "", "machine"))
	}
}

// roundTrip encodes m as a request and decodes it again.
func roundTrip(t testing.TB, m *Message) *Message {
	t.Helper()
	raw := EncodeRequest(m)
	env, err := Parse(raw, ctUTF8, DefaultLimits())
	if err != nil {
		t.Fatalf("encoded request does not parse: %v\n%s", err, raw)
	}
	back, err := Decode(env)
	if err != nil {
		t.Fatalf("encoded request does not decode: %v\n%s", err, raw)
	}
	return back
}

// FuzzDecode: every input either fails with a fault that renders, or
// decodes to a Message that encodes to a request decoding to the same
// Message (decode(encode(x)) == x).
func FuzzDecode(f *testing.F) {
	addParseSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, ct string) {
		orig := bytes.Clone(data)
		env, err := Parse(data, ct, DefaultLimits())
		if err != nil || env.IsIdentify {
			return // FuzzParse covers these
		}
		m, err := Decode(env)
		if !bytes.Equal(data, orig) {
			t.Fatal("Parse or Decode changed the request bytes")
		}
		if err != nil {
			fl, ok := err.(*Fault)
			if !ok || fl.Code == 0 || fl.Reason == "" {
				t.Fatalf("decode error %T %v is not a complete *Fault", err, err)
			}
			wellFormed(t, FaultEnvelope(fl, "", "machine"))
			return
		}
		// Decoded in place, from a copy of the bytes: the same Message.
		env2, err := Parse(bytes.Clone(data), ct, DefaultLimits())
		if err != nil {
			t.Fatalf("second Parse: %v", err)
		}
		m2, err := DecodeInPlace(env2)
		if err != nil || !reflect.DeepEqual(m2.Body, m.Body) {
			t.Fatalf("DecodeInPlace differs from Decode: %v\n got %#v\nwant %#v", err, m2, m.Body)
		}
		back := roundTrip(t, m)
		if !reflect.DeepEqual(back.Body, m.Body) {
			t.Fatalf("body round trip:\n got %#v\nwant %#v", back.Body, m.Body)
		}
		h, b := m.Header, back.Header
		if h.Action != b.Action || h.MessageID != b.MessageID || h.ResourceURI != b.ResourceURI ||
			h.OperationTimeout != b.OperationTimeout || h.MaxEnvelopeSize != b.MaxEnvelopeSize ||
			!reflect.DeepEqual(h.Selectors, b.Selectors) || !reflect.DeepEqual(h.Options, b.Options) {
			t.Fatalf("header round trip:\n got %+v\nwant %+v", b, h)
		}
	})
}
