package wsman

import (
	"bytes"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"

	"github.com/beevik/etree"
)

// checkLift reads data (already in UTF-8) with every base64 text node
// lifted and as it is, and fails unless both give the same fault or the
// same tree. The lifted read must be exact but for a fault met next to a
// placeholder (the tokenizer may have peeked at it). It returns the number
// of lifts.
func checkLift(t *testing.T, data []byte, lim Limits) int {
	t.Helper()
	lifts := findLifts(data, 1)
	if len(lifts) == 0 {
		return 0
	}
	prev := 0
	for _, l := range lifts {
		if l.start < prev || l.end <= l.start || !isBase64Run(data[l.start:l.end]) || l.end >= len(data) || data[l.end] != '<' {
			t.Fatalf("bad lift %+v in %q", l, data)
		}
		prev = l.end
	}
	docL, streams, fL, exact := read(withPlaceholders(data, lifts), lim, data, lifts)
	if !exact {
		if fL == nil {
			t.Fatalf("lifted read not exact for %q (lifts %+v)", data, lifts)
		}
		docL, streams, fL = readDocument(data, lim, 1)
	}
	restoreStreams(t, streams)
	docP, _, fP, _ := read(data, lim, nil, nil)
	switch {
	case (fL == nil) != (fP == nil):
		t.Fatalf("lifted fault %v, plain fault %v, for %q", fL, fP, data)
	case fL != nil:
		if fL.Subcode != fP.Subcode || fL.Code != fP.Code || fL.Reason != fP.Reason || fL.Detail != fP.Detail {
			t.Fatalf("faults differ:\nlifted %+v\nplain  %+v\nfor %q", fL, fP, data)
		}
	default:
		l, errL := docL.WriteToBytes()
		p, errP := docP.WriteToBytes()
		if errL != nil || errP != nil || !bytes.Equal(l, p) {
			t.Fatalf("trees differ:\nlifted %q\nplain  %q", l, p)
		}
		sameTree(t, docL.Root(), docP.Root())
	}
	return len(lifts)
}

// restoreStreams puts the text read left in the body back into the tree,
// which is then the one a plain read gives. Each element's only child must
// be the placeholder.
func restoreStreams(t *testing.T, streams []streamText) {
	t.Helper()
	for _, st := range streams {
		e := st.elem
		if !Is(e, NsShell, "Stream") || len(e.Child) != 1 || e.Child[0] != st.cd || st.cd.Data != placeholder || st.done {
			t.Fatalf("stream text of %s kept out of a tree it is not alone in", e.FullTag())
		}
		st.cd.SetData(string(st.text))
	}
}

// sameTree compares what serialisation does not show: whitespace flags and
// the attributes' ties to their elements.
func sameTree(t *testing.T, a, b *etree.Element) {
	t.Helper()
	if len(a.Child) != len(b.Child) || len(a.Attr) != len(b.Attr) {
		t.Fatalf("element %s differs", a.FullTag())
	}
	for i := range a.Attr {
		if a.Attr[i].Element() != a || b.Attr[i].Element() != b || a.Attr[i].NamespaceURI() != b.Attr[i].NamespaceURI() {
			t.Fatalf("attribute %s of %s not tied to its element", a.Attr[i].FullKey(), a.FullTag())
		}
	}
	for i, c := range a.Child {
		if c.Parent() != a || c.Index() != i {
			t.Fatalf("child %d of %s has parent/index wrong", i, a.FullTag())
		}
		switch c := c.(type) {
		case *etree.CharData:
			d, ok := b.Child[i].(*etree.CharData)
			if !ok || c.Data != d.Data || c.IsWhitespace() != d.IsWhitespace() || c.IsCData() != d.IsCData() {
				t.Fatalf("text %d of %s differs", i, a.FullTag())
			}
		case *etree.Element:
			sameTree(t, c, b.Child[i].(*etree.Element))
		}
	}
}

type liftCase struct {
	name  string
	body  string
	lifts int // with liftMin, when payload is at least liftMin long
}

// liftCases are envelopes with payload, some base64, in places findLifts
// must and must not lift.
func liftCases(payload string) []liftCase {
	stream := `<rsp:Send><rsp:Stream Name="stdin" CommandId="C">` + payload + `</rsp:Stream></rsp:Send>`
	half := len(payload) / 2
	return []liftCase{
		{"stream", withStd("", stream), 1},
		{"two streams", withStd("", `<rsp:Send><rsp:Stream Name="stdin">`+payload+`</rsp:Stream><rsp:Stream Name="stdin" End="true">`+payload+`</rsp:Stream></rsp:Send>`), 2},
		{"quoted > before", withStd("", `<rsp:Send><rsp:Stream Name="a>b" x='">'>`+payload+`</rsp:Stream></rsp:Send>`), 1},
		{"after comment, PI-like and CDATA", withStd("<!-- <x> -->", `<![CDATA[<a>]]><rsp:Send><!--->--><rsp:Stream>`+payload+`</rsp:Stream></rsp:Send>`), 1},
		{"in comment", withStd("", `<!--<a>`+payload+`<b>-->`), 0},
		{"in CDATA", withStd("", `<rsp:X><![CDATA[<a>`+payload+`<b>]]></rsp:X>`), 0},
		{"in attribute", withStd("", `<rsp:X a="<a>`+payload+`<b>"/>`), 0},
		{"in attribute, single quotes", withStd("", `<rsp:X a='">`+payload+`<b>'/>`), 0},
		{"in processing instruction", withStd("", `<?x <a>`+payload+`<b>?>`), 0},
		{"with entity", withStd("", `<rsp:X>&amp;`+payload+`</rsp:X>`), 0},
		{"with newline", withStd("", `<rsp:X>`+payload[:half]+"\n"+payload[half:]+`</rsp:X>`), 0},
		{"with CR", withStd("", `<rsp:X>`+payload[:half]+"\r"+payload[half:]+`</rsp:X>`), 0},
		{"with ]]>", withStd("", `<rsp:X>`+payload[:half]+"]]>"+payload[half:]+`</rsp:X>`), 0},
		{"mixed content", withStd("", `<rsp:X>`+payload+`<rsp:Y/>`+payload+`</rsp:X>`), 2},
		{"text after root", withStd("", "") + payload + "<!---->", 1},
		{"text before root", payload + "<!---->" + withStd("", ""), 1},
		{"trailing text", withStd("", "") + payload, 0},
		{"doctype first", `<!DOCTYPE x>` + withStd("", stream), 0},
		{"doctype after", withStd("", stream) + `<!DOCTYPE x>`, 1},
		{"unclosed quote", withStd("", `<rsp:X a="b>`+payload+`</rsp:X>`), 0},
		{"undeclared prefix after", withStd("", stream+`<q:X/>`), 1},
		{"too deep after", withStd("", stream+nested(40)), 1},
		{"too deep at", withStd("", nested(30)+`<rsp:X>`+payload+`</rsp:X>`), 1},
		{"too many attributes at", withStd("", `<rsp:X`+attrs(65)+`>`+payload+`</rsp:X>`), 1},
		{"mismatched end", withStd("", `<rsp:X>`+payload+`</rsp:Y>`), 1},
		{"bad char after", withStd("", stream+"<rsp:X>\x01</rsp:X>"), 1},
		{"url-safe alphabet", withStd("", `<rsp:X>`+strings.Repeat("-_", len(payload)/2)+`</rsp:X>`), 0},
	}
}

func TestLift(t *testing.T) {
	payload := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("lift me "), 300))
	cases := append(liftCases(payload),
		liftCase{"short", withStd("", `<rsp:X>`+payload[:liftMin-1]+`</rsp:X>`), 0},
		liftCase{"at minimum", withStd("", `<rsp:X>`+payload[:liftMin]+`</rsp:X>`), 1},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.body)
			if n := len(findLifts(data, liftMin)); n != tc.lifts {
				t.Errorf("%d lifts, want %d", n, tc.lifts)
			}
			checkLift(t, data, DefaultLimits())
			checkLift(t, data, fuzzTightLimits())
			envL, fL := parseWith(data, ctUTF8, DefaultLimits(), liftMin)
			envP, fP := parseWith(data, ctUTF8, DefaultLimits(), 0)
			if !reflect.DeepEqual(fL, fP) {
				t.Fatalf("faults differ: %v / %v", fL, fP)
			}
			if envL != nil {
				restoreStreams(t, envL.streams)
			}
			if envL != nil && (!reflect.DeepEqual(envL.Header, envP.Header) || Text(envL.Body) != Text(envP.Body)) {
				t.Fatal("envelopes differ")
			}
		})
	}

	env, err := Parse([]byte(cases[0].body), ctUTF8, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if got := streamTextOf(env); got != payload {
		t.Fatalf("stream text not kept: %d bytes", len(got))
	}
}

// streamTextOf is the text of env's first rsp:Send/rsp:Stream, which must
// have been left in the body.
func streamTextOf(env *Envelope) string {
	st := env.streamOf(Child(env.Body, NsShell, "Stream"))
	if st == nil {
		return "(in the tree: " + Text(Child(env.Body, NsShell, "Stream")) + ")"
	}
	return string(st.text)
}

// TestLiftUTF16 checks that lifting works on transcoded input.
func TestLiftUTF16(t *testing.T) {
	payload := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff, 0x00}, 400))
	body := utf16Bytes(withStd("", `<rsp:Send><rsp:Stream Name="stdin">`+payload+`</rsp:Stream></rsp:Send>`), false, true)
	env, err := Parse(body, "application/soap+xml;charset=UTF-16", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if got := streamTextOf(env); got != payload {
		t.Fatalf("stream text = %d bytes, want %d", len(got), len(payload))
	}
}

// TestLiftFallback feeds read a lift that is not a text node, as a wrong
// findLifts would, and checks that the lifted read says it is not exact
// and that readDocument's answer is then the plain one.
func TestLiftFallback(t *testing.T) {
	payload := strings.Repeat("QUFB", 200)
	data := []byte(withStd("", `<rsp:X a="`+payload+`">`+payload+`</rsp:X>`))
	start := bytes.Index(data, []byte(payload))
	lifts := []lift{{start: start, end: start + len(payload), at: start}}
	if _, _, _, exact := read(withPlaceholders(data, lifts), DefaultLimits(), data, lifts); exact {
		t.Fatal("a lift inside an attribute value was taken as exact")
	}
	// A lift inside a name would hide its length.
	long := []byte(withStd("", `<rsp:X `+payload+`="v"/>`))
	start = bytes.Index(long, []byte(payload))
	lifts = []lift{{start: start, end: start + len(payload), at: start}}
	if _, _, _, exact := read(withPlaceholders(long, lifts), DefaultLimits(), long, lifts); exact {
		t.Fatal("a lift inside a name was taken as exact")
	}
	if _, _, f := readDocument(long, DefaultLimits(), 1); f == nil || f.Code != CodeEncodingLimit {
		t.Fatalf("long name accepted: %v", f)
	}
}

// FuzzParseLift checks that lifting text nodes never changes Parse's
// answer, and that findLifts never picks anything but a text node, with the
// smallest lifts possible.
func FuzzParseLift(f *testing.F) {
	addParseSeeds(f)
	for _, tc := range liftCases("QUJD+/=") {
		f.Add([]byte(tc.body), ctUTF8)
	}
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		for _, lim := range []Limits{DefaultLimits(), fuzzTightLimits()} {
			lim = lim.normalized()
			if len(body) > lim.MaxBytes {
				continue
			}
			data, f := decodeCharset(body, ct, lim.MaxBytes)
			if f != nil {
				continue
			}
			checkLift(t, data, lim)
			envL, fL := parseWith(body, ct, lim, 1)
			envP, fP := parseWith(body, ct, lim, 0)
			if !reflect.DeepEqual(fL, fP) {
				t.Fatalf("faults differ: %v / %v", fL, fP)
			}
			if envL != nil {
				restoreStreams(t, envL.streams)
			}
			if envL != nil && (!reflect.DeepEqual(envL.Header, envP.Header) || envL.IsIdentify != envP.IsIdentify || Text(envL.Body) != Text(envP.Body)) {
				t.Fatal("envelopes differ")
			}
		}
	})
}
