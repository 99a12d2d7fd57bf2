package wsman

import (
	"strings"
	"testing"
)

// adversarialInputs are envelopes near DefaultMaxBytes built to find
// super-linear paths (a quadratic duplicate-selector check once took over a
// second on "selectors"). Each must parse in tens of milliseconds.
func adversarialInputs() map[string]string {
	fill := func(unit string) string {
		skel := withStd("", "")
		return withStd("", strings.Repeat(unit, (DefaultMaxBytes-len(skel))/len(unit)))
	}
	get := `<a:Action>` + ActionGet + `</a:Action>`
	return map[string]string{
		"attrs64":    fill("<rsp:X" + attrs(64) + "/>"),
		"nsdecls":    fill(`<q:X xmlns:q="u" xmlns:r="u" xmlns:t="u" r:a="1" t:b="2"/>`),
		"elements":   withStd("", strings.Repeat("<rsp:E/>", 9990)),
		"text":       fill("abcdefgh"),
		"entities":   fill("&amp;"),
		"charrefs":   fill("&#x1F600;"),
		"cdata":      fill("<![CDATA[x]]>"),
		"comments":   fill("<!--x-->"),
		"deepwide":   withStd("", strings.Repeat(nested(30), 300)),
		"longattr":   withStd("", `<rsp:X a="`+strings.Repeat("v", DefaultMaxBytes-2000)+`"/>`),
		"selectors":  soapEnv(get+`<w:SelectorSet>`+selectors(9000)+`</w:SelectorSet>`, ""),
		"options":    soapEnv(get+`<w:OptionSet>`+options(9000)+`</w:OptionSet>`, ""),
		"dupoptions": soapEnv(get+`<w:OptionSet>`+strings.Repeat(`<w:Option Name="A">1</w:Option>`, 9000)+`</w:OptionSet>`, ""),
		"headers":    soapEnv(get+strings.Repeat(`<z:H xmlns:z="urn:z" s:mustUnderstand="false"/>`, 9000), ""),
	}
}

func BenchmarkParseAdversarial(b *testing.B) {
	for name, body := range adversarialInputs() {
		data := []byte(body)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Parse(data, ctUTF8, DefaultLimits()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestManySelectors(t *testing.T) {
	env, err := Parse([]byte(adversarialInputs()["selectors"]), ctUTF8, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if len(env.Header.Selectors) != 9000 {
		t.Fatalf("%d selectors", len(env.Header.Selectors))
	}
	if v, ok := env.Header.Selector("SAAA"); !ok || v != "1" {
		t.Errorf("case-insensitive lookup failed: %q %v", v, ok)
	}
	h := Header{Selectors: map[string]string{"ShellId": "X"}} // built by hand: no index
	if v, ok := h.Selector("SHELLID"); !ok || v != "X" {
		t.Errorf("lookup without index failed")
	}
}

func selectors(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(`<w:Selector Name="s`)
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString(string(rune('a' + i/26%26)))
		b.WriteString(string(rune('a' + i/676%26)))
		b.WriteString(`">1</w:Selector>`)
	}
	return b.String()
}

func options(n int) string {
	return strings.ReplaceAll(strings.ReplaceAll(selectors(n), "w:Selector", "w:Option"), "s", "o")
}
