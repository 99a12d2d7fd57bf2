package wsclient

import (
	"bytes"
	"encoding/xml"
	"errors"
	"strings"
	"testing"
)

// xorSealer is a reversible toy sealer: the framing, not the cipher, is
// under test here (the real sealers are exercised end to end in test/).
// grow bytes of 0xdd follow the ciphertext, as a TLS record's tail does.
type xorSealer struct{ sigLen, grow int }

func xor(p []byte) []byte {
	out := make([]byte, len(p))
	for i, c := range p {
		out[i] = c ^ 0x5a
	}
	return out
}

func (x xorSealer) Seal(p []byte) ([]byte, []byte, error) {
	return bytes.Repeat([]byte{0xee}, x.sigLen), append(xor(p), bytes.Repeat([]byte{0xdd}, x.grow)...), nil
}

func (x xorSealer) Unseal(sig, d []byte) ([]byte, error) {
	if len(sig) != x.sigLen || len(d) < x.grow || !bytes.Equal(d[len(d)-x.grow:], bytes.Repeat([]byte{0xdd}, x.grow)) {
		return nil, errors.New("signature or tail")
	}
	return xor(d[:len(d)-x.grow]), nil
}

// CredSSP: 16 KiB parts of x-multi-encrypted, ciphertext longer than
// Length.
func TestSealCredSSPChunks(t *testing.T) {
	s := xorSealer{16, 13}
	env := []byte(`<s:Envelope>` + strings.Repeat("y", 2*ChunkSize+100) + `</s:Envelope>`)
	body, err := AppendSealed(nil, s, ProtoCredSSP, env)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(body, []byte("Length=")); n != 3 {
		t.Fatalf("%d parts, want 3", n)
	}
	if !bytes.Contains(body, []byte("Length=16384\r\n")) || !bytes.HasSuffix(body, []byte("--Encrypted Boundary--\r\n")) {
		t.Fatalf("framing: %q", body[:200])
	}
	got, err := Unseal(s, body)
	if err != nil || !bytes.Equal(got, env) {
		t.Fatalf("unseal: %v", err)
	}
	if ct := SealedContentType(ProtoCredSSP, len(env)); !strings.HasPrefix(ct, "multipart/x-multi-encrypted;") {
		t.Errorf("content type %q", ct)
	}
	if ct := SealedContentType(ProtoCredSSP, ChunkSize); !strings.HasPrefix(ct, "multipart/encrypted;") {
		t.Errorf("content type of one chunk %q", ct)
	}
	for _, p := range []string{ProtoCredSSP, ProtoSPNEGO} {
		if b, err := AppendSealed(nil, s, p, nil); err != nil || bytes.Count(b, []byte("Length=0\r\n")) != 1 {
			t.Errorf("%s: empty body: %q %v", p, b, err)
		}
	}
	small, _ := AppendSealed(nil, s, ProtoCredSSP, []byte("<a/>"))
	if got, err := Unseal(s, small); err != nil || string(got) != "<a/>" {
		t.Errorf("one part: %q %v", got, err)
	}
}

func TestSealRoundTrip(t *testing.T) {
	s := xorSealer{sigLen: 16}
	env := []byte(`<s:Envelope>` + strings.Repeat("x", 70000) + `</s:Envelope>`)
	body, err := AppendSealed(nil, s, ProtoSPNEGO, env)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(body, []byte("--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=70025\r\n")) ||
		!bytes.HasSuffix(body, []byte("--Encrypted Boundary--\r\n")) {
		t.Fatalf("framing: %q ... %q", body[:120], body[len(body)-30:])
	}
	got, err := Unseal(s, body)
	if err != nil || !bytes.Equal(got, env) {
		t.Fatalf("unseal: %v", err)
	}
	// x-multi-encrypted: the parts concatenate.
	multi := AppendMultipart(AppendMultipart(nil, ProtoSPNEGO, 3, make([]byte, 16), []byte{'a' ^ 0x5a, 'b' ^ 0x5a, 'c' ^ 0x5a}), ProtoSPNEGO, 1, make([]byte, 16), []byte{'d' ^ 0x5a})
	if got, err := Unseal(s, multi); err != nil || string(got) != "abcd" {
		t.Errorf("multi-part: %q %v", got, err)
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"truncated":      body[:len(body)/2],
		"huge signature": AppendMultipart(nil, ProtoSPNEGO, 1, make([]byte, maxSignature+1), []byte{0}),
	} {
		if _, err := Unseal(s, b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestEnvelope(t *testing.T) {
	b := AppendEnvelope(nil, Header{To: "http://h:5985/wsman", Action: ActionCommand, ResourceURI: ResourceCmd, ShellID: "S1",
		MaxEnvelopeSize: 153600, OperationTimeout: "PT5S", Options: []string{"A=1", "B=x=y"}})
	b = AppendCommandBody(b, "echo '<a&b>'\r\n\"q\"")
	b = append(b, EnvelopeEnd...)
	var e struct {
		Header struct {
			To, Action, ResourceURI, OperationTimeout string
			MaxEnvelopeSize                           int
			Selector                                  string `xml:"SelectorSet>Selector"`
			Options                                   []struct {
				Name  string `xml:"Name,attr"`
				Value string `xml:",chardata"`
			} `xml:"OptionSet>Option"`
		}
		Command string `xml:"Body>CommandLine>Command"`
	}
	if err := xml.Unmarshal(b, &e); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	h := e.Header
	if h.To != "http://h:5985/wsman" || h.Action != ActionCommand || h.ResourceURI != ResourceCmd || h.Selector != "S1" ||
		h.MaxEnvelopeSize != 153600 || h.OperationTimeout != "PT5S" || len(h.Options) != 2 || h.Options[1].Name != "B" || h.Options[1].Value != "x=y" {
		t.Errorf("header %+v", h)
	}
	if e.Command != "echo '<a&b>'\r\n\"q\"" {
		t.Errorf("command %q: the escaping lost something", e.Command)
	}
	c := string(AppendCreateBody(nil, map[string]string{"B": "2", "A": "<1>"}, "/tmp/x"))
	if !strings.Contains(c, `<rsp:Variable Name="A">&lt;1&gt;</rsp:Variable><rsp:Variable Name="B">2</rsp:Variable>`) ||
		!strings.Contains(c, `<rsp:WorkingDirectory>/tmp/x</rsp:WorkingDirectory>`) {
		t.Errorf("create body %s", c)
	}
	if s := string(AppendSendBody(nil, "C", []byte("hi"), false, false)); s != `<rsp:Send><rsp:Stream Name="stdin" CommandId="C">aGk=</rsp:Stream></rsp:Send>` {
		t.Errorf("send body %s", s)
	}
	if s := string(AppendSendBody(nil, "C", nil, false, true)); !strings.Contains(s, `End="false"`) {
		t.Errorf("explicit End: %s", s)
	}
	if u := NewUUID(); len(u) != 36 || u[14] != '4' || u != strings.ToLower(u) {
		t.Errorf("uuid %q", u)
	}
}

func TestToken(t *testing.T) {
	vals := []string{"Basic realm=\"WSMAN\"", "negotiate !!notbase64", "Negotiate TlRMTVNTUAAC", "Kerberos YQ=="}
	if b, ok := Token(vals, "Negotiate", "NTLM"); !ok || string(b[:7]) != "NTLMSSP" {
		t.Errorf("Negotiate: %q %v", b, ok)
	}
	if b, ok := Token(vals, "kerberos"); !ok || string(b) != "a" {
		t.Errorf("Kerberos (scheme case-insensitive): %q %v", b, ok)
	}
	if _, ok := Token(vals, "CredSSP"); ok {
		t.Error("a scheme not offered was found")
	}
}

// appendingXOR is xorSealer that also seals straight into a buffer
// (AppendingSealer).
type appendingXOR struct{ xorSealer }

func (a appendingXOR) AppendSeal(dst, p []byte) ([]byte, error) {
	sig, ct, err := a.Seal(p)
	return append(append(dst, sig...), ct...), err
}

func (a appendingXOR) SignatureSize() int { return a.sigLen }

// TestAppendingSealerFramesAlike: a sealer that appends its signature and
// ciphertext itself gets the very body one that returns them does, in one
// part and in CredSSP's chunks, after bytes already in the buffer.
func TestAppendingSealerFramesAlike(t *testing.T) {
	env := []byte(`<s:Envelope>` + strings.Repeat("z", 2*ChunkSize+7) + `</s:Envelope>`)
	for _, proto := range []string{ProtoSPNEGO, ProtoCredSSP} {
		s := xorSealer{16, 0}
		want, err := AppendSealed([]byte("head"), s, proto, env)
		if err != nil {
			t.Fatal(err)
		}
		got, err := AppendSealed([]byte("head"), appendingXOR{s}, proto, env)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: the appending sealer framed %d bytes, the other %d, or other bytes", proto, len(got), len(want))
		}
		plain, err := Unseal(s, got[len("head"):])
		if err != nil || !bytes.Equal(plain, env) {
			t.Fatalf("%s: unsealing the appended body: %v", proto, err)
		}
	}
}
