package wsman

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRedactForTrace(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"send stream",
			`<s:Body><rsp:Send><rsp:Stream Name="stdin" CommandId="C">c2VjcmV0</rsp:Stream></rsp:Send></s:Body>`,
			`<s:Body><rsp:Send><rsp:Stream Name="stdin" CommandId="C">[redacted 8 bytes]</rsp:Stream></rsp:Send></s:Body>`},
		{"any prefix, both streams",
			`<x:Stream Name="stdout">AAAA</x:Stream><Stream Name="stderr">BB</Stream>`,
			`<x:Stream Name="stdout">[redacted 4 bytes]</x:Stream><Stream Name="stderr">[redacted 2 bytes]</Stream>`},
		{"environment values, names kept",
			`<rsp:Environment><rsp:Variable Name="TOKEN">hunter2</rsp:Variable><rsp:Variable Name="E"></rsp:Variable></rsp:Environment>`,
			`<rsp:Environment><rsp:Variable Name="TOKEN">[redacted 7 bytes]</rsp:Variable><rsp:Variable Name="E"></rsp:Variable></rsp:Environment>`},
		{"psrp creationXml",
			`<creationXml xmlns="http://schemas.microsoft.com/powershell">AAEC</creationXml>`,
			`<creationXml xmlns="http://schemas.microsoft.com/powershell">[redacted 4 bytes]</creationXml>`},
		{"command line stays",
			`<rsp:CommandLine><rsp:Command>"echo hi"</rsp:Command><rsp:Arguments>a</rsp:Arguments></rsp:CommandLine>`,
			`<rsp:CommandLine><rsp:Command>"echo hi"</rsp:Command><rsp:Arguments>a</rsp:Arguments></rsp:CommandLine>`},
		{"self-closing and end stream",
			`<rsp:Stream Name="stdin" End="true"/><rsp:Stream Name="stdout" End="true"></rsp:Stream>`,
			`<rsp:Stream Name="stdin" End="true"/><rsp:Stream Name="stdout" End="true"></rsp:Stream>`},
		{"unterminated secret element",
			`<rsp:Stream Name="stdin">c2VjcmV0`,
			`<rsp:Stream Name="stdin">[redacted 8 bytes]`},
		{"unterminated tag",
			`<a>x</a><rsp:Stream Name="stdin" c2VjcmV0`,
			`<a>x</a>[redacted 33 bytes]`},
		{"start tag hidden in an attribute",
			`<x a="<rsp:Stream>">c2VjcmV0</rsp:Stream>`,
			`[redacted 41 bytes]`},
		{"cdata with a redirection stays",
			`<rsp:Command><![CDATA[echo "a" > /tmp/x]]></rsp:Command>`,
			`<rsp:Command><![CDATA[echo "a" > /tmp/x]]></rsp:Command>`},
		{"cdata is text, even when it looks like markup",
			`<a><![CDATA[<rsp:Stream>x</rsp:Stream>]]></a>`,
			`<a><![CDATA[<rsp:Stream>x</rsp:Stream>]]></a>`},
		{"comment edge",
			`<!--><rsp:Stream>c2VjcmV0</rsp:Stream>`,
			`[redacted 38 bytes]`},
		{"comments go",
			`<a><!-- note --></a>`,
			`<a><!--[redacted 6 bytes]--></a>`},
		{"wrong end tag name does not close",
			`<rsp:Stream>c2Vj</Stream>cmV0`,
			`<rsp:Stream>[redacted 17 bytes]`},
	}
	for _, tc := range cases {
		got, cut := RedactForTrace([]byte(tc.in), 0)
		if got != tc.want || cut != 0 {
			t.Errorf("%s:\n got %q (cut %d)\nwant %q", tc.name, got, cut, tc.want)
		}
	}
}

func TestRedactForTraceCap(t *testing.T) {
	in := []byte(`<a>` + strings.Repeat("x", 1000) + `</a>`)
	got, cut := RedactForTrace(in, 100)
	if len(got) != 100 || cut != len(in)-100 {
		t.Errorf("cap 100: got %d bytes, cut %d; want 100 and %d", len(got), cut, len(in)-100)
	}
}

// Every request fixture keeps its shape: only secret texts change.
func TestRedactForTraceFixtures(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "requests"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		body := readFixture(t, e.Name())
		got, _ := RedactForTrace(body, 0)
		if bytes.Contains(body, []byte(":Stream")) && bytes.Contains(body, []byte("</rsp:Stream>")) && !strings.Contains(got, "[redacted ") {
			t.Errorf("%s: stream text not redacted:\n%s", e.Name(), got)
		}
		if !bytes.Contains(body, []byte("Stream")) && !bytes.Contains(body, []byte("Variable")) && !bytes.Contains(body, []byte("creationXml")) && got != string(body) {
			t.Errorf("%s: changed a body without secrets:\n%s", e.Name(), got)
		}
	}
}

// FuzzRedactForTrace: never panics, respects the cap, and a secret placed
// in a Stream or Variable never shows, whatever surrounds it (but a CDATA
// section, where it is text).
func FuzzRedactForTrace(f *testing.F) {
	f.Add([]byte(`<s:Body><rsp:Send>`), []byte(`</rsp:Send></s:Body>`), "c2VjcmV0", uint16(0))
	f.Add([]byte(`<x a="`), []byte(`">`), "hunter2", uint16(10))
	f.Add([]byte(`<!-- `), []byte(` -->`), "s3cr3tXY", uint16(0))
	f.Add([]byte(`<rsp:Variable>`), []byte(``), "pw0rdABC", uint16(64))
	f.Fuzz(func(t *testing.T, prefix, suffix []byte, secret string, max uint16) {
		if len(secret) < 4 || strings.Trim(secret, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
			return
		}
		if bytes.Contains(prefix, []byte(secret)) || bytes.Contains(suffix, []byte(secret)) {
			return
		}
		if bytes.Contains(prefix, []byte("<![CDATA[")) {
			return // inside a CDATA section the "element" is text, not a stream
		}
		for _, el := range []string{`rsp:Stream Name="stdin"`, `rsp:Variable Name="X"`} {
			name, _, _ := strings.Cut(el, " ")
			body := append(append(append([]byte{}, prefix...), "<"+el+">"+secret+"</"+name+">"...), suffix...)
			got, cut := RedactForTrace(body, int(max))
			if max > 0 && len(got) > int(max) {
				t.Fatalf("output %d bytes over cap %d", len(got), max)
			}
			if strings.Contains(got, secret) {
				t.Fatalf("secret %q shown (cut %d) in %q", secret, cut, got)
			}
		}
	})
}
