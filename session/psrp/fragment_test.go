package psrp

import (
	"bytes"
	"errors"
	"testing"
)

var (
	testRPID = mustGUID("C1D2E3F4-0102-0304-0506-0708090A0B0C")
	testPID  = mustGUID("00112233-4455-6677-8899-aabbccddeeff")
)

func mustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

func TestGUIDForms(t *testing.T) {
	g := mustGUID("00112233-4455-6677-8899-AABBCCDDEEFF")
	if g != testPID {
		t.Fatal("upper and lower case parse differently")
	}
	if got := g.String(); got != "00112233-4455-6677-8899-aabbccddeeff" {
		t.Errorf("String = %s", got)
	}
	if got := g.Upper(); got != "00112233-4455-6677-8899-AABBCCDDEEFF" {
		t.Errorf("Upper = %s", got)
	}
	for _, bad := range []string{"", "{00112233-4455-6677-8899-aabbccddeeff}", "00112233445566778899aabbccddeeff",
		"00112233-4455-6677-8899-aabbccddeefg", "00112233-4455-6677-8899+aabbccddeeff", "0011223-34455-6677-8899-aabbccddeeff",
		"00000000-0000-0000-0000-000000-00000"} {
		if _, err := ParseGUID(bad); !errors.Is(err, ErrBadGUID) {
			t.Errorf("ParseGUID(%q) = %v, want ErrBadGUID", bad, err)
		}
	}
}

// TestMessageWireBytes pins the byte layout against MS-PSRP 2.2.1: little-
// endian destination and type, GUIDs in .NET order.
func TestMessageWireBytes(t *testing.T) {
	b := AppendMessage(nil, Message{Destination: ToServer, Type: CreatePipeline, RPID: testRPID, PID: testPID, Data: []byte("<Obj/>")})
	want := []byte{
		2, 0, 0, 0, // destination server
		0x06, 0x10, 0x02, 0x00, // 0x00021006
		0xF4, 0xE3, 0xD2, 0xC1, 0x02, 0x01, 0x04, 0x03, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C,
		0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
	}
	want = append(want, "<Obj/>"...)
	if !bytes.Equal(b, want) {
		t.Fatalf("wire bytes\n got %x\nwant %x", b, want)
	}
	m, err := ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Destination != ToServer || m.Type != CreatePipeline || m.RPID != testRPID || m.PID != testPID || string(m.Data) != "<Obj/>" {
		t.Fatalf("round trip: %+v", m)
	}
}

func TestFragmentWireBytes(t *testing.T) {
	b := AppendFragment(nil, Fragment{ObjectID: 1, FragmentID: 2, End: true, Blob: []byte("xy")})
	want := []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0x2, 0, 0, 0, 2, 'x', 'y'}
	if !bytes.Equal(b, want) {
		t.Fatalf("got %x want %x", b, want)
	}
}

func TestMessageRefusals(t *testing.T) {
	if _, err := ParseMessage(make([]byte, 39)); !errors.Is(err, ErrShortMessage) {
		t.Errorf("short: %v", err)
	}
	b := AppendMessage(nil, Message{Destination: 3, Type: PipelineState})
	if _, err := ParseMessage(b); !errors.Is(err, ErrDestination) {
		t.Errorf("destination 3: %v", err)
	}
}

func TestFragmentRefusals(t *testing.T) {
	good := AppendFragment(nil, Fragment{ObjectID: 7, Start: true, End: true, Blob: []byte("abc")})
	for name, tc := range map[string]struct {
		b    []byte
		max  int
		want error
	}{
		"short header": {good[:20], 0, ErrShortFragment},
		"short blob":   {good[:len(good)-1], 0, ErrShortFragment},
		"bad flags":    {func() []byte { b := bytes.Clone(good); b[16] = 0x4; return b }(), 0, ErrBadFlags},
		"blob cap":     {good, 2, ErrBlobTooLarge},
		"huge length":  {func() []byte { b := bytes.Clone(good); b[17] = 0xff; return b }(), 0, ErrBlobTooLarge},
	} {
		if _, _, err := ParseFragment(tc.b, tc.max); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	f, n, err := ParseFragment(append(bytes.Clone(good), 0xEE), 0)
	if err != nil || n != len(good) || string(f.Blob) != "abc" || !f.Start || !f.End || f.ObjectID != 7 {
		t.Fatalf("parse good: %+v %d %v", f, n, err)
	}
}

// TestDefragmentAcrossSends: one message cut into fragments that arrive in
// three separate buffers (three WinRS Sends), with a second object's
// single-fragment message interleaved.
func TestDefragmentAcrossSends(t *testing.T) {
	msg := AppendMessage(nil, Message{Destination: ToServer, Type: PipelineInput, RPID: testRPID, PID: testPID, Data: bytes.Repeat([]byte("z"), 1000)})
	wire := Fragments(nil, 5, msg, 300)
	frags, err := SplitFragments(wire, 0)
	if err != nil || len(frags) != 4 {
		t.Fatalf("split: %d %v", len(frags), err)
	}
	other := Fragments(nil, 6, []byte("single"), 300)
	var d Defragmenter
	var got []Assembled
	for _, buf := range [][]byte{
		AppendFragment(nil, frags[0]),
		append(AppendFragment(nil, frags[1]), other...),
		append(AppendFragment(nil, frags[2]), AppendFragment(nil, frags[3])...),
	} {
		out, err := d.Feed(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, out...)
	}
	if len(got) != 2 || got[0].ObjectID != 6 || string(got[0].Message) != "single" || got[1].ObjectID != 5 {
		t.Fatalf("assembled %+v", got)
	}
	if !bytes.Equal(got[1].Message, msg) || got[1].Truncated || got[1].Size != len(msg) {
		t.Fatal("reassembled message differs")
	}
	if d.Pending() != 0 {
		t.Fatalf("pending %d", d.Pending())
	}
}

func TestDefragmentStates(t *testing.T) {
	start := Fragment{ObjectID: 1, FragmentID: 0, Start: true, Blob: []byte("a")}
	mid := Fragment{ObjectID: 1, FragmentID: 1, Blob: []byte("b")}
	end := Fragment{ObjectID: 1, FragmentID: 2, End: true, Blob: []byte("c")}
	for name, seq := range map[string][]Fragment{
		"middle without start":   {mid},
		"end without start":      {end},
		"start twice":            {start, start},
		"skipped fragment":       {start, end},
		"start not at zero":      {{ObjectID: 1, FragmentID: 3, Start: true, End: true}},
		"repeated fragment":      {start, mid, mid},
		"single-fragment misnum": {{ObjectID: 2, FragmentID: 1, Start: true}},
	} {
		var d Defragmenter
		var err error
		for _, f := range seq {
			if _, _, err = d.Add(f); err != nil {
				break
			}
		}
		if !errors.Is(err, ErrFragmentOrder) {
			t.Errorf("%s: %v, want ErrFragmentOrder", name, err)
		}
	}
	var d Defragmenter
	for _, f := range []Fragment{start, mid, end} {
		a, ok, err := d.Add(f)
		if err != nil {
			t.Fatal(err)
		}
		if ok != f.End || (ok && string(a.Message) != "abc") {
			t.Fatalf("%+v %v", a, ok)
		}
	}
}

func TestDefragmentLimits(t *testing.T) {
	d := Defragmenter{MaxPending: 2}
	for i := uint64(0); i < 2; i++ {
		if _, _, err := d.Add(Fragment{ObjectID: i, Start: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := d.Add(Fragment{ObjectID: 9, Start: true}); !errors.Is(err, ErrTooManyObject) {
		t.Fatalf("third pending object: %v", err)
	}
	// A single-fragment message needs no slot.
	if _, ok, err := d.Add(Fragment{ObjectID: 10, Start: true, End: true, Blob: []byte("x")}); err != nil || !ok {
		t.Fatalf("single fragment with full table: %v", err)
	}

	strict := Defragmenter{MaxMessage: 10}
	if _, _, err := strict.Add(Fragment{ObjectID: 1, Start: true, Blob: make([]byte, 6)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := strict.Add(Fragment{ObjectID: 1, FragmentID: 1, End: true, Blob: make([]byte, 6)}); !errors.Is(err, ErrMessageTooBig) {
		t.Fatalf("over MaxMessage: %v", err)
	}

	trunc := Defragmenter{MaxMessage: 10, Truncate: true}
	body := []byte("0123456789abcdef")
	out, err := trunc.Feed(Fragments(nil, 3, body, 5))
	if err != nil || len(out) != 1 {
		t.Fatal(out, err)
	}
	if string(out[0].Message) != "0123456789" || !out[0].Truncated || out[0].Size != len(body) {
		t.Fatalf("truncated: %+v", out[0])
	}
}

func TestFirstMessageHeader(t *testing.T) {
	msg := AppendMessage(nil, Message{Destination: ToServer, Type: CreatePipeline, RPID: testRPID, PID: testPID, Data: bytes.Repeat([]byte("q"), 200)})
	wire := Fragments(nil, 1, msg, 64)
	m, err := FirstMessageHeader(wire, 0)
	if err != nil || m.PID != testPID || m.Type != CreatePipeline {
		t.Fatalf("%+v %v", m, err)
	}
	if _, err := FirstMessageHeader(wire[FragmentHeaderLen+64:], 0); !errors.Is(err, ErrFragmentOrder) {
		t.Fatalf("second fragment first: %v", err)
	}
}

func TestStateOf(t *testing.T) {
	body := `<Obj RefId="0"><MS><I32 N="PipelineState">4</I32></MS></Obj>`
	if v, err := StateOf([]byte(body), "PipelineState"); err != nil || InvocationState(v) != Completed {
		t.Fatalf("%d %v", v, err)
	}
	failed := `<Obj RefId="0"><MS><I32 N="PipelineState">5</I32><Obj N="ExceptionAsErrorRecord" RefId="1"><S>&lt;I32 N="PipelineState"&gt;4</S></Obj></MS></Obj>`
	if v, _ := StateOf([]byte(failed), "PipelineState"); InvocationState(v) != Failed || !InvocationState(v).Terminal() {
		t.Fatalf("failed state read as %d", v)
	}
	for _, bad := range []string{"", `<I32 N="PipelineState"></I32>`, `<I32 N="PipelineState">-1</I32>`,
		`<I32 N="PipelineState">99999999999</I32>`, `<I32 N="PipelineState">4`, `<I32 N="RunspaceState">2</I32>`} {
		if _, err := StateOf([]byte(bad), "PipelineState"); !errors.Is(err, ErrNoState) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func FuzzDefragment(f *testing.F) {
	msg := AppendMessage(nil, Message{Destination: ToClient, Type: PipelineState, RPID: testRPID, PID: testPID,
		Data: []byte(`<Obj RefId="0"><MS><I32 N="PipelineState">4</I32></MS></Obj>`)})
	f.Add(Fragments(nil, 1, msg, 16))
	f.Add(Fragments(nil, 2, msg, 1<<20))
	f.Add(append(Fragments(nil, 3, []byte("abc"), 1), Fragments(nil, 4, msg, 7)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := Defragmenter{MaxMessage: 4096, MaxPending: 4, MaxBlob: 1 << 16}
		out, err := d.Feed(b)
		for _, a := range out {
			if len(a.Message) > 4096 || a.Size < len(a.Message) {
				t.Fatalf("assembled beyond its cap: %d/%d", len(a.Message), a.Size)
			}
			if m, err := ParseMessage(a.Message); err == nil {
				if !bytes.Equal(AppendMessage(nil, m), a.Message) {
					t.Fatal("message does not round-trip")
				}
				_, _ = StateOf(m.Data, "PipelineState")
			}
		}
		if d.Pending() > 4 {
			t.Fatalf("pending %d over cap", d.Pending())
		}
		if err == nil {
			// Whole fragments only: re-encoding what was parsed gives the input.
			frags, err := SplitFragments(b, 1<<16)
			if err != nil {
				t.Fatalf("Feed accepted what SplitFragments refuses: %v", err)
			}
			var re []byte
			for _, fr := range frags {
				re = AppendFragment(re, fr)
			}
			if !bytes.Equal(re, b) {
				t.Fatal("fragments do not round-trip")
			}
		}
	})
}
