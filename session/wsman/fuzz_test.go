package wsman

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/beevik/etree"
)

// fuzzTightLimits are small enough for the fuzzer to hit every limit.
func fuzzTightLimits() Limits {
	return Limits{MaxBytes: 4096, MaxDepth: 6, MaxElements: 64, MaxAttrs: 12, MaxNameLen: 24}
}

func addParseSeeds(f *testing.F) {
	entries, err := os.ReadDir(filepath.Join("testdata", "requests"))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		f.Add(readFixture(f, e.Name()), ctUTF8)
	}
	for _, tc := range parseCases() {
		if len(tc.body) <= 4<<10 { // large seeds make the fuzzer crawl
			f.Add(tc.body, tc.ct)
		}
	}
}

// FuzzParse checks that Parse never panics, only returns *Fault errors whose
// envelopes are well-formed, never accepts a tree over its limits, and that
// every accepted envelope re-serialises to one that parses to the same
// header, and can be answered (RelatesTo byte for byte).
func FuzzParse(f *testing.F) {
	addParseSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, ct string) {
		checkParse(t, data, ct, DefaultLimits())
		checkParse(t, data, ct, fuzzTightLimits())
	})
}

func checkParse(t *testing.T, data []byte, ct string, lim Limits) {
	env, err := Parse(data, ct, lim)
	if err != nil {
		f, ok := err.(*Fault)
		if !ok {
			t.Fatalf("error %T is not a *Fault: %v", err, err)
		}
		if f.Subcode == "" || f.Code == 0 || f.Reason == "" {
			t.Fatalf("incomplete fault %+v", f)
		}
		wellFormed(t, FaultEnvelope(f, "", "machine"))
		return
	}
	lim = lim.normalized()
	if len(data) > lim.MaxBytes {
		t.Fatalf("accepted %d bytes over MaxBytes %d", len(data), lim.MaxBytes)
	}
	elements := 0
	checkTreeLimits(t, env.doc.Root(), 1, &elements, lim)

	h := env.Header
	if h.OperationTimeout < 0 {
		t.Fatalf("negative OperationTimeout accepted: %v", h.OperationTimeout)
	}
	if h.MaxEnvelopeSize != 0 && h.MaxEnvelopeSize < MinMaxEnvelopeSize {
		t.Fatalf("MaxEnvelopeSize %d accepted", h.MaxEnvelopeSize)
	}
	if (h.Action == "") != env.IsIdentify {
		t.Fatalf("Action %q with IsIdentify %v", h.Action, env.IsIdentify)
	}

	// Re-serialise the accepted tree and parse it again. Escaping may grow
	// the text (at most 6x: '"' -> "&quot;"), nothing else may change.
	out, err := env.doc.WriteToBytes()
	if err != nil {
		t.Fatalf("re-serialise: %v", err)
	}
	relaxed := lim
	relaxed.MaxBytes = lim.MaxBytes*6 + 64
	env2, err := Parse(out, "", relaxed)
	if err != nil {
		t.Fatalf("re-serialised envelope rejected: %v\nin:  %q\nout: %q", err, data, out)
	}
	if !reflect.DeepEqual(env.Header, env2.Header) || env.IsIdentify != env2.IsIdentify {
		t.Fatalf("header changed by re-serialisation:\n%+v\n%+v", env.Header, env2.Header)
	}
	if (env.Body == nil) != (env2.Body == nil) || (env.Body != nil && (env.Body.Tag != env2.Body.Tag || elemNS(env.Body) != elemNS(env2.Body) || Text(env.Body) != Text(env2.Body))) {
		t.Fatalf("body changed by re-serialisation\nin:  %q\nout: %q", data, out)
	}

	// Answer it, echoing request text into the response.
	r := NewResponse(h.Action+ResponseSuffix, h.MessageID)
	var echo *etree.Element
	if env.Body != nil {
		echo = r.Body().CreateElement("rsp:Echo")
		echo.SetText(Text(env.Body))
		for _, a := range env.Body.Attr {
			if a.Space == "" && a.Key != "xmlns" {
				echo.CreateAttr(a.Key, a.Value)
			}
		}
	}
	rb := r.Bytes()
	wellFormed(t, rb)
	env3, err := Parse(rb, "", Limits{MaxBytes: len(rb)})
	if err != nil {
		t.Fatalf("response rejected: %v\n%s", err, rb)
	}
	if env3.Header.Action != strings.Trim(h.Action+ResponseSuffix, " \t\r\n") {
		t.Fatalf("response Action %q", env3.Header.Action)
	}
	rel := Child(env3.HeaderElement, NsAddressing, "RelatesTo")
	if h.MessageID == "" {
		if rel != nil {
			t.Fatal("RelatesTo present for an empty MessageID")
		}
	} else if Text(rel) != h.MessageID {
		t.Fatalf("RelatesTo %q, want %q", Text(rel), h.MessageID)
	}
	if echo != nil {
		got := Child(env3.Body.Parent(), NsShell, "Echo")
		if Text(got) != Text(env.Body) {
			t.Fatalf("echoed text %q, want %q", Text(got), Text(env.Body))
		}
		for _, a := range env.Body.Attr {
			if a.Space == "" && a.Key != "xmlns" && Attr(got, a.Key) != a.Value {
				t.Fatalf("echoed attribute %s=%q, want %q", a.Key, Attr(got, a.Key), a.Value)
			}
		}
	}
	wellFormed(t, FaultEnvelope(InvalidParameter(Text(env.Body)), h.MessageID, h.To))
}

func checkTreeLimits(t *testing.T, e *etree.Element, depth int, elements *int, lim Limits) {
	*elements++
	if depth > lim.MaxDepth || *elements > lim.MaxElements || len(e.Attr) > lim.MaxAttrs {
		t.Fatalf("tree over limits: depth %d, elements %d, attrs %d (%+v)", depth, *elements, len(e.Attr), lim)
	}
	if n := len(e.FullTag()); n > lim.MaxNameLen {
		t.Fatalf("element name of %d bytes accepted", n)
	}
	for _, a := range e.Attr {
		if n := len(a.FullKey()); n > lim.MaxNameLen {
			t.Fatalf("attribute name of %d bytes accepted", n)
		}
	}
	for _, c := range e.ChildElements() {
		checkTreeLimits(t, c, depth+1, elements, lim)
	}
}

// FuzzParseDuration checks that ParseDuration never panics, that errors are
// *DurationError, and that accepted values survive both formatters.
func FuzzParseDuration(f *testing.F) {
	for _, tc := range durationCases() {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			de, ok := err.(*DurationError)
			if !ok || de.Error() == "" || len(de.Input) > 67 {
				t.Fatalf("bad error %T %v", err, err)
			}
			return
		}
		if strings.HasPrefix(strings.Trim(s, " \t\r\n"), "-") && d > 0 {
			t.Fatalf("%q parsed as positive %v", s, d)
		}
		checkDurationRoundTrip(t, d)
	})
}
