package wsman

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// scanSeeds are inputs at the edges of the scanner's subset: each is either
// read by it exactly as encoding/xml reads it, or left to encoding/xml.
var scanSeeds = []string{
	`<a/>`,
	`<a b="1"c='2'/>`,
	`<a  b = "1"	c=
'x&lt;&gt;&amp;&apos;&quot;y' >t&lt;u</a >`,
	`<?xml version="1.0" encoding="utf-8"?><a/>`,
	`<?xml version="1.0" encoding="UTF-8"?>` + "\n<a/>\n",
	`<?xml version="1.0"?><a/>`,
	`<?xml version="1.0" ?><a/>`,
	`<?xml version="1.1"?><a/>`,
	`<?xml version="1.0" encoding="latin1"?><a/>`,
	` <?xml version="1.0"?><a/>`,
	`<a/><?xml version="1.0"?>`,
	`<?xmlx version="1.0"?><a/>`,
	`<?pi x?><a/>`,
	`<a>]]></a>`, `<a>]]&gt;</a>`, `<a b="]]>"/>`, `<a>]</a>`, `<a>]]</a>`,
	"<a>x\ry</a>", "<a b=\"x\r\ny\"/>", "<a\r\nb='1'/>",
	"<a>\x01</a>", "<a b='\x00'/>", "<a>\t\n</a>",
	"<a>\u00e9\u4e2d\U0001F600</a>", "<a>\uFFFE</a>", "<a>\xff</a>", "<a b='\xc3'/>",
	"<\u00e9/>", "<a\u00e9/>", `<a b\u00e9="1"/>`,
	`<a>&#65;</a>`, `<a>&#x41;</a>`, `<a>&lt</a>`, `<a>&foo;</a>`, `<a b="&amp"/>`,
	`<a:b:c/>`, `<a:/>`, `<:a/>`, `<1a/>`, `<-a/>`, `<a.b-c_1:d.e/>`, `<_a/>`,
	`<a b="1" b="2"/>`, `<a b/>`, `<a b=1/>`, `<a b="1`, `<a b="<"/>`, `<a`, `<`, `</a`, `</a b>`,
	`<a></b>`, `<a>`, `</a>`, `text`, `<a/>text`, `<a/><b/>`,
	`<!-- c --><a/>`, `<!DOCTYPE a><a/>`, `<![CDATA[x]]><a/>`,
	`<a><![CDATA[x]]></a>`, `<a><![CDATA[]]></a>`, `<a><![CDATA[x&amp;<y>]]]]></a>`, "<a><![CDATA[x\ry]]></a>",
	"<a><![CDATA[\x02]]></a>", `<a><![CDATA[x`, `<a><![CDAT[x]]></a>`, `<a>x<![CDATA[y]]>z</a>`,
	`<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>`,
}

// FuzzScanMatchesEncodingXML holds the scanner to its contract: every token
// it returns is the token encoding/xml's strict RawToken returns for the
// same bytes, ending at the same offset, and it reaches EOF only where
// encoding/xml does; anywhere else it may only give up (errUnsure). And a
// document the scanner reads in full gives the tree encoding/xml's reading
// gives.
func FuzzScanMatchesEncodingXML(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	entries, err := os.ReadDir(filepath.Join("testdata", "requests"))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		f.Add(readFixture(f, e.Name()))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkScanTokens(t, data)
		checkScanTree(t, data, DefaultLimits())
		checkScanTree(t, data, fuzzTightLimits())
	})
}

func TestScanSeeds(t *testing.T) {
	for _, s := range scanSeeds {
		checkScanTokens(t, []byte(s))
		checkScanTree(t, []byte(s), DefaultLimits())
	}
}

// checkScanTokens runs the scanner and encoding/xml side by side over data.
// It returns whether the scanner read all of it.
func checkScanTokens(t *testing.T, data []byte) bool {
	t.Helper()
	sc, xs := newScanner(data), newXMLSource(data)
	for n := 0; ; n++ {
		var a, b token
		errA := sc.next(&a)
		if errors.Is(errA, errUnsure) {
			return false
		}
		errB := xs.next(&b)
		switch {
		case errA == io.EOF:
			if errB != io.EOF {
				t.Fatalf("token %d: scanner at EOF, encoding/xml gives %+v, %v, for %q", n, b, errB, data)
			}
			return true
		case errA != nil:
			t.Fatalf("token %d: scanner error %v, want only io.EOF or errUnsure", n, errA)
		case errB != nil:
			t.Fatalf("token %d: scanner gives %+v, encoding/xml fails: %v, for %q", n, a, errB, data)
		}
		if a.kind != b.kind || a.name != b.name || !bytes.Equal(a.data, b.data) || len(a.attr) != len(b.attr) {
			t.Fatalf("token %d differs:\nscanner      %+v\nencoding/xml %+v\nfor %q", n, a, b, data)
		}
		for i := range a.attr {
			if a.attr[i] != b.attr[i] {
				t.Fatalf("token %d attribute %d differs: %+v against %+v, for %q", n, i, a.attr[i], b.attr[i], data)
			}
		}
		if sc.offset() != xs.offset() {
			t.Fatalf("token %d ends at %d, encoding/xml's at %d, for %q", n, sc.offset(), xs.offset(), data)
		}
	}
}

// checkScanTree checks that when readDocument keeps the scanner's tree, it
// is the tree (and the streams) encoding/xml's reading gives, and that any
// fault is encoding/xml's.
func checkScanTree(t *testing.T, data []byte, lim Limits) {
	t.Helper()
	lim = lim.normalized()
	docS, streamsS, fS, exactS := readTokens(newScanner(data), lim, nil, nil)
	docX, _, fX, _ := read(data, lim, nil, nil)
	if exactS && fS == nil {
		if fX != nil {
			t.Fatalf("the scanner read %q, encoding/xml faults: %v", data, fX)
		}
		if len(streamsS) != 0 {
			t.Fatalf("streams without lifts for %q", data)
		}
		s, errS := docS.WriteToBytes()
		x, errX := docX.WriteToBytes()
		if errS != nil || errX != nil || !bytes.Equal(s, x) {
			t.Fatalf("trees differ:\nscanner      %q\nencoding/xml %q", s, x)
		}
		sameTree(t, docS.Root(), docX.Root())
	}
	// What Parse uses: the scanner first, encoding/xml for the rest.
	docR, _, fR := readDocument(data, lim, 0)
	switch {
	case (fR == nil) != (fX == nil):
		t.Fatalf("readDocument fault %v, encoding/xml's %v, for %q", fR, fX, data)
	case fR != nil:
		if *fR != *fX {
			t.Fatalf("faults differ:\nreadDocument %+v\nencoding/xml %+v\nfor %q", fR, fX, data)
		}
	default:
		r, _ := docR.WriteToBytes()
		x, _ := docX.WriteToBytes()
		if !bytes.Equal(r, x) {
			t.Fatalf("trees differ:\nreadDocument %q\nencoding/xml %q", r, x)
		}
	}
}

// TestScanReadsClientRequests: every request recorded from a real client
// is read by the scanner alone, so the fast path is the one clients take.
func TestScanReadsClientRequests(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "requests"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data := readFixture(t, e.Name())
		if !checkScanTokens(t, data) {
			t.Errorf("%s: the scanner gave up on a client's request", e.Name())
		}
		if _, _, f, exact := readTokens(newScanner(data), DefaultLimits().normalized(), nil, nil); f != nil || !exact {
			t.Errorf("%s: scanner read exact %v, fault %v", e.Name(), exact, f)
		}
	}
}
