package wsman

import (
	"bytes"
	"encoding/base64"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/beevik/etree"
)

func TestReceiveRenderMatchesDOMShape(t *testing.T) {
	payload := bytes.Repeat([]byte{0, 1, 2, '<', '&', 0xff}, 1000)
	const cid = "11111111-2222-4333-8444-555555555555"
	cases := []struct {
		rel string
		r   ReceiveResponse
	}{
		{"uuid:ABC", ReceiveResponse{CommandID: cid, Streams: []StreamChunk{{Name: "stdout", Data: payload}}}},
		{`uuid:<&"odd'>` + "\t", ReceiveResponse{CommandID: cid, Done: true, ExitCode: -2,
			Streams: []StreamChunk{{Name: "stdout", Data: []byte("x")}, {Name: "stderr", Data: []byte("e")}, {Name: "stdout", End: true}, {Name: "stderr", End: true}}}},
	}
	for _, c := range cases {
		r := c.r
		raw := r.Encode(c.rel)
		doc := etree.NewDocument()
		if err := doc.ReadFromBytes(raw); err != nil {
			t.Fatalf("not XML: %v\n%s", err, raw)
		}
		// It must parse as a request envelope would, namespaces by URI.
		if _, err := Parse(bytes.Replace(raw, []byte("ReceiveResponse</a:Action>"), []byte("Receive</a:Action>"), 1), "", DefaultLimits()); err != nil {
			t.Fatalf("rendered envelope does not pass the wsman parser: %v", err)
		}
		if got := doc.FindElement("//Header/RelatesTo").Text(); got != c.rel {
			t.Fatalf("RelatesTo %q, want %q", got, c.rel)
		}
		if doc.FindElement("//Header/Action").Text() != ActionReceive+"Response" {
			t.Fatal("wrong Action")
		}
		if doc.FindElement("//Header/Action").Space != "a" || doc.Root().SelectAttrValue("xmlns:a", "") != NsAddressing {
			t.Fatal("prefixes differ from NewResponse's")
		}
		streams := doc.FindElements("//ReceiveResponse/Stream")
		if len(streams) != len(r.Streams) {
			t.Fatalf("%d streams, want %d", len(streams), len(r.Streams))
		}
		for i, s := range streams {
			data, err := base64.StdEncoding.DecodeString(s.Text())
			if err != nil || !bytes.Equal(data, r.Streams[i].Data) {
				t.Fatalf("stream %d payload differs", i)
			}
			if (s.SelectAttrValue("End", "") == "true") != r.Streams[i].End || s.SelectAttrValue("CommandId", "") != r.CommandID {
				t.Fatalf("stream %d attributes wrong", i)
			}
		}
		st := doc.FindElement("//CommandState")
		want := StateRunning
		if r.Done {
			want = StateDone
		}
		if st.SelectAttrValue("State", "") != want {
			t.Fatal("state")
		}
		ec := st.FindElement("ExitCode")
		if r.Done != (ec != nil) {
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
	r := ReceiveResponse{CommandID: "11111111-2222-4333-8444-555555555555",
		Streams: []StreamChunk{{Name: "stdout", Data: payload}}}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = r.Encode("uuid:6F0C2A9D-0000-4000-8000-000000000001")
	}
}

// TestPreparedReceiveFinish: a response prepared before its request arrived
// (the speculative Receive) is, once finished, byte for byte what Encode
// renders but for the new MessageID, whether the RelatesTo fits the room
// kept in front (written in place) or not (copied).
func TestPreparedReceiveFinish(t *testing.T) {
	r := ReceiveResponse{CommandID: "11111111-2222-4333-8444-555555555555",
		Streams: []StreamChunk{{Name: "stdout", Data: bytes.Repeat([]byte{7, '<', 0xfe}, 333)}}}
	msgID := regexp.MustCompile(`<a:MessageID>uuid:[0-9A-F-]{36}</a:MessageID>`)
	for _, rel := range []string{"uuid:6F0C2A9D-0000-4000-8000-000000000001", "uuid:" + strings.Repeat("&x", 200)} {
		want := msgID.ReplaceAll(r.Encode(rel), nil)
		p := r.Prepare(ReceiveHeadRoom)
		got := p.Finish(rel)
		if !bytes.Equal(msgID.ReplaceAll(got, nil), want) {
			t.Fatalf("RelatesTo %.20q: prepared response differs from Encode's:\n%s\n%s", rel, got, want)
		}
		if !msgID.Match(got) {
			t.Fatal("prepared response without a MessageID")
		}
	}
}

// TestPreparedReceiveReuse: responses rendered into reused buffers (a
// written response's, given back by Release) are byte for byte what a new
// buffer gives, whichever sizes and RelatesTo came before; and a response
// released twice goes back once, so two responses held at once never share
// a buffer.
func TestPreparedReceiveReuse(t *testing.T) {
	msgID := regexp.MustCompile(`<a:MessageID>uuid:[0-9A-F-]{36}</a:MessageID>`)
	const cid = "11111111-2222-4333-8444-555555555555"
	for i, size := range []int{382077, 70000, 382077, 100, 200000, 382077} {
		payload := bytes.Repeat([]byte{byte(i), '<', 0xfe}, size/3+1)[:size]
		r := ReceiveResponse{CommandID: cid, Streams: []StreamChunk{{Name: "stdout", Data: payload}}}
		rel := "uuid:6F0C2A9D-0000-4000-8000-00000000000" + strings.Repeat("1", i)
		want := msgID.ReplaceAll(r.Encode(rel), nil)
		p := r.Prepare(ReceiveHeadRoom)
		if got := msgID.ReplaceAll(p.Finish(rel), nil); !bytes.Equal(got, want) {
			t.Fatalf("response %d (%d bytes) in a reused buffer differs from a new one's", i, size)
		}
		p.Release()
		p.Release() // a second Release must not put it back again
	}
	big := ReceiveResponse{CommandID: cid, Streams: []StreamChunk{{Name: "stdout", Data: make([]byte, 300000)}}}
	p1 := big.Prepare(ReceiveHeadRoom)
	p1.Release()
	p1.Release()
	a, b := big.Prepare(ReceiveHeadRoom), big.Prepare(ReceiveHeadRoom)
	if a.pool == nil || b.pool == nil || a.pool == b.pool || &a.buf[:1][0] == &b.buf[:1][0] {
		t.Fatal("two responses held at once share a buffer")
	}
	// Encode's callers cannot give a buffer back, so it takes none from
	// the pool (which it would drain): its envelope is exactly sized even
	// with a larger written response's buffer waiting there.
	a.Release()
	small := ReceiveResponse{CommandID: cid, Streams: []StreamChunk{{Name: "stdout", Data: make([]byte, 100000)}}}
	if env := small.Encode("uuid:6F0C2A9D-0000-4000-8000-000000000001"); len(env) != cap(env) {
		t.Fatalf("Encode's envelope is %d bytes in a buffer of %d: it took a pooled one", len(env), cap(env))
	}
}

// TestPreparedReceiveAllocatesNoBody: a response prepared into a pooled
// buffer allocates no buffer of its own. Until the fix, prepare made an
// exactly-sized buffer and then took the pooled one in its place: every
// prepared response of a stream allocated and cleared half a megabyte for
// nothing (the daemon's allocations in 256 MiB of NTLM stdout: 1024 MB,
// 89% of it that buffer; 173 collections, 17 after).
func TestPreparedReceiveAllocatesNoBody(t *testing.T) {
	r := ReceiveResponse{CommandID: "11111111-2222-4333-8444-555555555555",
		Streams: []StreamChunk{{Name: "stdout", Data: make([]byte, 382077)}}}
	p := r.Prepare(ReceiveHeadRoom)
	bufSize := uint64(cap(p.buf))
	p.Release() // a buffer in the pool
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const rounds = 100
	for range rounds {
		r.Prepare(ReceiveHeadRoom).Release()
	}
	runtime.ReadMemStats(&after)
	// A pool may drop what it holds: at a collection, and under the race
	// detector a quarter of all Puts at random (sync.Pool's own test of
	// its callers). Each drop costs one new buffer; the fault cost one per
	// response on top. Three in five: far from both.
	if got := (after.TotalAlloc - before.TotalAlloc) / bufSize; got > rounds*3/5 {
		t.Fatalf("%d prepared responses allocated %d buffers' worth; their buffer is the pooled one", rounds, got)
	}
}

// EncodeCommand writes what NewResponse's tree gives: byte for byte for the
// identifiers clients send, and the same text, read back, for odd ones.
func TestEncodeCommandMatchesTree(t *testing.T) {
	tree := func(rel, id string) []byte {
		r := NewResponse(ActionCommand+ResponseSuffix, rel)
		addText(r.Body().CreateElement("rsp:CommandResponse"), "rsp:CommandId", id)
		return r.Bytes()
	}
	msgID := regexp.MustCompile(`<a:MessageID>[^<]*</a:MessageID>`)
	norm := func(b []byte) []byte { return msgID.ReplaceAll(b, []byte("<a:MessageID/>")) }
	for _, c := range []struct{ rel, id string }{
		{"uuid:6F0C2A9D-0000-4000-8000-000000000001", "11111111-2222-4333-8444-555555555555"},
		{"uuid:abc", "1F2E3D4C-0000-0000-0000-000000000000"},
		{"", "X"},
	} {
		if got, want := norm(EncodeCommand(c.rel, c.id)), norm(tree(c.rel, c.id)); !bytes.Equal(got, want) {
			t.Fatalf("EncodeCommand(%q, %q):\n%s\nthe tree:\n%s", c.rel, c.id, got, want)
		}
	}
	for _, rel := range []string{`uuid:<&"odd'>` + "\t", "uuid:é\u4e2d", "a]]>b"} {
		got := etree.NewDocument()
		if err := got.ReadFromBytes(EncodeCommand(rel, "C-1")); err != nil {
			t.Fatalf("%q: not XML: %v", rel, err)
		}
		if r := got.FindElement("//Header/RelatesTo").Text(); r != rel {
			t.Fatalf("RelatesTo %q, want %q", r, rel)
		}
		if id := got.FindElement("//CommandResponse/CommandId").Text(); id != "C-1" {
			t.Fatalf("CommandId %q", id)
		}
		if a := got.FindElement("//Header/Action").Text(); a != ActionCommand+ResponseSuffix {
			t.Fatalf("Action %q", a)
		}
	}
}
