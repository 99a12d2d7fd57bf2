package psrp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// validPackets are the round-trip table and the fuzz seeds.
var validPackets = []Packet{
	{Kind: PacketData, Stream: StreamDefault, GUID: NilGUID, Data: []byte{0, 1, 2, 3}},
	{Kind: PacketData, Stream: StreamPromptResponse, GUID: testPID, Data: bytes.Repeat([]byte{0xff}, 1000)},
	{Kind: PacketDataAck, GUID: NilGUID},
	{Kind: PacketCommand, GUID: testPID},
	{Kind: PacketCommandAck, GUID: testPID},
	{Kind: PacketSignal, GUID: testPID},
	{Kind: PacketSignalAck, GUID: testPID},
	{Kind: PacketClose, GUID: NilGUID},
	{Kind: PacketCloseAck, GUID: testRPID},
}

func encodeP(t testing.TB, p Packet) []byte {
	t.Helper()
	b, err := AppendPacket(nil, p)
	if err != nil {
		t.Fatalf("encode %s: %v", p.Kind, err)
	}
	return b
}

// TestPacketExactForm pins the lines to what pwsh writes (and what pypsrp's
// out-of-process client writes): single quotes, lower-case GUID, " />".
func TestPacketExactForm(t *testing.T) {
	for _, tc := range []struct {
		p    Packet
		want string
	}{
		{Packet{Kind: PacketData, Stream: StreamDefault, GUID: NilGUID, Data: []byte("hi")},
			"<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>aGk=</Data>\n"},
		{Packet{Kind: PacketDataAck, GUID: testPID}, "<DataAck PSGuid='00112233-4455-6677-8899-aabbccddeeff' />\n"},
		{Packet{Kind: PacketCloseAck, GUID: NilGUID}, "<CloseAck PSGuid='00000000-0000-0000-0000-000000000000' />\n"},
	} {
		if got := string(encodeP(t, tc.p)); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func TestPacketRoundTrip(t *testing.T) {
	for _, p := range validPackets {
		line := encodeP(t, p)
		got, err := ParsePacket(line[:len(line)-1], 0)
		if err != nil {
			t.Fatalf("%s: %v", p.Kind, err)
		}
		if got.Kind != p.Kind || got.GUID != p.GUID || got.Stream != p.Stream || !bytes.Equal(got.Data, p.Data) {
			t.Fatalf("%s: round trip gave %+v", p.Kind, got)
		}
		// CRLF, as pwsh writes on Windows, and upper-case GUIDs are accepted.
		crlf := append(bytes.Clone(line[:len(line)-1]), '\r')
		if _, err := ParsePacket(crlf, 0); err != nil {
			t.Fatalf("%s with CR: %v", p.Kind, err)
		}
		up := strings.Replace(string(line[:len(line)-1]), p.GUID.String(), p.GUID.Upper(), 1)
		if g, err := ParsePacket([]byte(up), 0); err != nil || g.GUID != p.GUID {
			t.Fatalf("%s upper-case: %v", p.Kind, err)
		}
	}
}

func TestPacketDirections(t *testing.T) {
	for _, p := range validPackets {
		line := encodeP(t, p)
		line = line[:len(line)-1]
		_, cerr := ParseClientPacket(line, 0)
		_, serr := ParseServerPacket(line, 0)
		fromServer := p.Kind.Ack() == 0 || (p.Kind == PacketData && p.Stream == StreamDefault)
		fromClient := p.Kind.Ack() != 0 && !(p.GUID.IsNil() && (p.Kind == PacketSignal || p.Kind == PacketCommand))
		if (serr == nil) != fromServer {
			t.Errorf("server %s/%s: %v", p.Kind, p.Stream, serr)
		}
		if (cerr == nil) != fromClient {
			t.Errorf("client %s %s: %v", p.Kind, p.GUID, cerr)
		}
		if serr != nil && !errors.Is(serr, ErrPacketDir) || cerr != nil && !errors.Is(cerr, ErrPacketDir) {
			t.Errorf("%s: direction errors must wrap ErrPacketDir: %v / %v", p.Kind, serr, cerr)
		}
	}
	sigPool := encodeP(t, Packet{Kind: PacketSignal, GUID: NilGUID})
	if _, err := ParseClientPacket(sigPool[:len(sigPool)-1], 0); !errors.Is(err, ErrPacketDir) {
		t.Errorf("Signal on the pool: %v", err)
	}
}

func TestPacketRefusals(t *testing.T) {
	g := "00112233-4455-6677-8899-aabbccddeeff"
	for _, line := range []string{
		"",
		"garbage",
		"<Data>",
		"<Data Stream='Default' PSGuid='" + g + "'></Data>",            // empty data
		"<Data Stream='Default' PSGuid='" + g + "'>!!!!</Data>",        // bad base64
		"<Data Stream='Default' PSGuid='" + g + "'>aGk</Data>",         // unpadded
		"<Data Stream='Other' PSGuid='" + g + "'>aGk=</Data>",          // unknown stream
		"<Data PSGuid='" + g + "' Stream='Default'>aGk=</Data>",        // attribute order
		"<Data Stream=\"Default\" PSGuid=\"" + g + "\">aGk=</Data>",    // quotes
		"<Data Stream='Default' PSGuid='" + g + "'>aGk=</Data>trailer", // trailing bytes
		"<Data Stream='Default' PSGuid='" + g + "'>aGk=</Dat>",
		"<DataAck PSGuid='" + g + "'/>",
		"<DataAck PSGuid='" + g + "' /> ",
		"<DataAck PSGuid='{" + g + "}' />",
		"<DataAck PSGuid='" + g[:35] + "' />",
		"<DataAck  PSGuid='" + g + "' />",
		"<Unknown PSGuid='" + g + "' />",
		"<DataAck PSGuid='" + g + "' Extra='1' />",
		"<dataack PSGuid='" + g + "' />",
	} {
		if p, err := ParsePacket([]byte(line), 0); err == nil {
			t.Errorf("accepted %q as %+v", line, p)
		}
	}
	if _, err := AppendPacket(nil, Packet{Kind: PacketData, Stream: StreamDefault}); !errors.Is(err, ErrEmptyData) {
		t.Errorf("empty Data encoded: %v", err)
	}
	big := encodeP(t, Packet{Kind: PacketData, Stream: StreamDefault, Data: make([]byte, 2000)})
	if _, err := ParsePacket(big[:len(big)-1], 1000); !errors.Is(err, ErrLineTooLong) {
		t.Errorf("Data over its cap: %v", err)
	}
}

func TestLineReader(t *testing.T) {
	in := "one\ntwo\n" + strings.Repeat("x", 100) + "\nlast"
	r := NewLineReader(strings.NewReader(in), 100)
	for _, want := range []string{"one", "two", strings.Repeat("x", 100)} {
		l, err := r.Line()
		if err != nil || string(l) != want {
			t.Fatalf("got %q %v want %q", l, err, want)
		}
	}
	if _, err := r.Line(); err != io.ErrUnexpectedEOF {
		t.Fatalf("partial last line: %v", err)
	}
	r = NewLineReader(strings.NewReader("ok\n"+strings.Repeat("y", 101)+"\n"), 100)
	if l, err := r.Line(); err != nil || string(l) != "ok" {
		t.Fatal(l, err)
	}
	if _, err := r.Line(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("long line: %v", err)
	}
	if _, err := r.Line(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("reader usable after a protocol error: %v", err)
	}
	// A line longer than the bufio buffer is still read whole.
	long := strings.Repeat("z", 200<<10)
	r = NewLineReader(strings.NewReader(long+"\n"), 300<<10)
	if l, err := r.Line(); err != nil || string(l) != long {
		t.Fatalf("long line: %d %v", len(l), err)
	}
	if _, err := r.Line(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}

func TestAckWaiter(t *testing.T) {
	var a AckWaiter
	data := Packet{Kind: PacketData, GUID: testPID, Stream: StreamDefault, Data: []byte{1}}
	if err := a.Sent(data); err != nil {
		t.Fatal(err)
	}
	if err := a.Sent(data); err == nil {
		t.Fatal("second Data in flight for one GUID accepted")
	}
	if err := a.Sent(Packet{Kind: PacketData, GUID: NilGUID}); err != nil {
		t.Fatal("another GUID is independent:", err)
	}
	if err := a.Acked(Packet{Kind: PacketCommandAck, GUID: testPID}); !errors.Is(err, ErrUnexpectedAck) {
		t.Fatalf("unsolicited CommandAck: %v", err)
	}
	if err := a.Acked(Packet{Kind: PacketDataAck, GUID: testPID}); err != nil {
		t.Fatal(err)
	}
	if err := a.Acked(Packet{Kind: PacketDataAck, GUID: testPID}); !errors.Is(err, ErrUnexpectedAck) {
		t.Fatalf("double ack: %v", err)
	}
	if a.Outstanding() != 1 {
		t.Fatalf("outstanding %d", a.Outstanding())
	}
	if err := a.Sent(Packet{Kind: PacketDataAck}); err == nil {
		t.Fatal("an ack recorded as awaiting an ack")
	}
}

func seedPackets(f *testing.F) {
	var all []byte
	for _, p := range validPackets {
		b := encodeP(f, p)
		f.Add(b[:len(b)-1])
		all = append(all, b...)
	}
	f.Add(all)
}

// fuzzPacket checks a parser never accepts what it cannot re-encode to the
// same packet, and never returns more than its cap.
func fuzzPacket(t *testing.T, line []byte, parse func([]byte, int) (Packet, error)) {
	p, err := parse(line, 4096)
	if err != nil {
		return
	}
	if len(p.Data) > 4096 {
		t.Fatalf("Data of %d bytes over the cap", len(p.Data))
	}
	b, err := AppendPacket(nil, p)
	if err != nil {
		t.Fatalf("accepted packet does not encode: %v", err)
	}
	q, err := ParsePacket(b[:len(b)-1], 4096)
	if err != nil || q.Kind != p.Kind || q.GUID != p.GUID || q.Stream != p.Stream || !bytes.Equal(q.Data, p.Data) {
		t.Fatalf("re-encoded packet differs: %v", err)
	}
}

func FuzzParseServerPacket(f *testing.F) {
	seedPackets(f)
	f.Fuzz(func(t *testing.T, line []byte) { fuzzPacket(t, line, ParseServerPacket) })
}

func FuzzParseClientPacket(f *testing.F) {
	seedPackets(f)
	f.Fuzz(func(t *testing.T, line []byte) { fuzzPacket(t, line, ParseClientPacket) })
}

// FuzzOutOfProcStream reads a whole hostile pwsh stdout: lines, packets, the
// fragments inside Data, reassembly. Nothing may panic or exceed a cap.
func FuzzOutOfProcStream(f *testing.F) {
	var all []byte
	msg := AppendMessage(nil, Message{Destination: ToClient, Type: PipelineState, RPID: testRPID, PID: testPID,
		Data: []byte(`<Obj RefId="0"><MS><I32 N="PipelineState">4</I32></MS></Obj>`)})
	all = append(all, encodeP(f, Packet{Kind: PacketDataAck})...)
	all = append(all, encodeP(f, Packet{Kind: PacketData, Stream: StreamDefault, GUID: testPID, Data: Fragments(nil, 1, msg, 1<<16)})...)
	f.Add(all)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewLineReader(bytes.NewReader(b), MaxLineFor(4096))
		d := Defragmenter{MaxMessage: 1024, MaxPending: 4, Truncate: true}
		for {
			line, err := r.Line()
			if err != nil {
				return
			}
			p, err := ParseServerPacket(line, 4096)
			if err != nil || p.Kind != PacketData {
				continue
			}
			out, _ := d.Feed(p.Data)
			for _, a := range out {
				if len(a.Message) > 1024 {
					t.Fatal("kept more than MaxMessage")
				}
			}
		}
	})
}
