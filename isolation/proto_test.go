package isolation

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// validDaemonFrames and validWorkerFrames are the round-trip table; they
// also seed the fuzz targets.
var validDaemonFrames = []msg{
	msgSetup{UID: 1000, GID: 1000, Groups: []uint32{1000, 27}, User: "alice", Home: "/home/alice", Shell: "/bin/bash",
		Dir: "/tmp", Env: []envVar{{"HOME", "/home/alice"}, {"LANG", "C.UTF-8"}}, MemoryMB: 512, MaxProcs: 100,
		Flags: setupNprocLimit, ParentPid: 4242, ShellIDLog: "A1B2-C3"},
	msgSetup{User: "root", Flags: setupLab | setupAllowRoot},
	msgStart{ID: "C1", Line: "echo hi"},
	msgStart{ID: "C2", Argv: []string{"ls", "-l", ""}},
	msgStdin{ID: "C1", Data: []byte("hello\n")},
	msgStdin{ID: "C1", EOF: true},
	msgStdin{ID: "C1", EOF: true, Data: bytes.Repeat([]byte{0}, 1000)},
	msgSignal{ID: "C1", Sig: SignalInterrupt},
	msgSignal{ID: "C1", Sig: SignalTerminate},
	msgCredit{ID: "C1", N: 1},
	msgCredit{ID: "C1", N: OutputWindow},
	msgRelease{ID: "C1"},
}

var validWorkerFrames = []msg{
	msgHello{Version: protoVersion, Pid: 1234},
	msgSetupOK{},
	msgSetupErr{Code: setupErrDir, Msg: "chdir /nope: no such file or directory"},
	msgStarted{ID: "C1", Pid: 5678},
	msgStartErr{ID: "C1", Msg: `exec: "nope": executable file not found in $PATH`},
	msgStdinAck{ID: "C1"},
	msgStdinAck{ID: "C1", Dropped: true},
	msgOutput{ID: "C1", Stream: Stdout, Data: []byte("out\n")},
	msgOutput{ID: "C1", Stream: Stderr, Data: bytes.Repeat([]byte{0xff}, maxOutChunk)},
	msgExit{ID: "C1", Code: 130},
	msgExit{ID: "C1", Code: -1},
	msgReleased{ID: "C1"},
	msgFatal{Msg: "boom"},
}

func encodeT(t testing.TB, m msg) []byte {
	t.Helper()
	b, err := appendFrame(nil, m)
	if err != nil {
		t.Fatalf("encode %T: %v", m, err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	check := func(t *testing.T, m msg, decode func(byte, []byte) (msg, error)) {
		b := encodeT(t, m)
		typ, p, _, err := readFrame(bytes.NewReader(b), nil)
		if err != nil {
			t.Fatalf("readFrame %T: %v", m, err)
		}
		got, err := decode(typ, p)
		if err != nil {
			t.Fatalf("decode %T: %v", m, err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(m)) {
			t.Fatalf("round trip:\n got %#v\nwant %#v", got, m)
		}
	}
	for _, m := range validDaemonFrames {
		check(t, m, decodeDaemonToWorker)
		// A daemon frame must never be accepted as a worker frame, and back.
		b := encodeT(t, m)
		if _, err := decodeWorkerToDaemon(b[4], b[5:]); err == nil {
			t.Errorf("%T accepted in the wrong direction", m)
		}
	}
	for _, m := range validWorkerFrames {
		check(t, m, decodeWorkerToDaemon)
		b := encodeT(t, m)
		if _, err := decodeDaemonToWorker(b[4], b[5:]); err == nil {
			t.Errorf("%T accepted in the wrong direction", m)
		}
	}
}

// normalize maps nil and empty slices to one form for comparison.
func normalize(m msg) msg {
	switch v := m.(type) {
	case msgStdin:
		if len(v.Data) == 0 {
			v.Data = nil
		}
		return v
	case msgSetup:
		if len(v.Groups) == 0 {
			v.Groups = nil
		}
		if len(v.Env) == 0 {
			v.Env = nil
		}
		return v
	case msgStart:
		if len(v.Argv) == 0 {
			v.Argv = nil
		}
		return v
	}
	return m
}

func TestDecodeRejects(t *testing.T) {
	frame := func(m msg) (byte, []byte) {
		b := encodeT(t, m)
		return b[4], b[5:]
	}
	mutate := func(m msg, f func([]byte) []byte) (byte, []byte) {
		typ, p := frame(m)
		return typ, f(append([]byte(nil), p...))
	}
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	str := func(s string) []byte { return append(u32(uint32(len(s))), s...) }

	type tc struct {
		name string
		typ  byte
		p    []byte
		want error
	}
	worker := []tc{
		{"unknown type", 0x99, nil, errUnknownType},
		{"daemon type", tSetup, nil, errUnknownType},
		{"trailing byte", tSetupOK, []byte{0}, errTrailing},
		{"short hello", tHello, []byte{0, 1}, errShort},
		{"empty id", tExit, append(str(""), 0, 0, 0, 0), errBadValue},
		{"id with NUL", tExit, append(str("a\x00"), 0, 0, 0, 0), errNUL},
		{"id too long", tReleased, str(strings.Repeat("x", maxIDLen+1)), errFieldTooLong},
		{"bad stream", tOutput, append(append(str("C"), 3), str("x")...), errBadValue},
		{"empty output", tOutput, append(append(str("C"), 1), str("")...), errBadValue},
		{"output too big", tOutput, append(append(str("C"), 1), str(strings.Repeat("x", maxOutChunk+1))...), errFieldTooLong},
		{"length beyond payload", tFatal, u32(100), errShort},
		{"huge length", tFatal, u32(0xffffffff), errFieldTooLong},
		{"bad bool", tStdinAck, append(str("C"), 2), errBadValue},
		{"setup err code", tSetupErr, append([]byte{9}, str("x")...), errBadValue},
		{"started pid 1", tStarted, append(str("C"), u32(1)...), errBadValue},
	}
	daemon := []tc{
		{"worker type", tHello, nil, errUnknownType},
		{"signal 0", tSignal, append(str("C"), 0), errBadValue},
		{"signal 9", tSignal, append(str("C"), 9), errBadValue},
		{"credit 0", tCredit, append(str("C"), u32(0)...), errBadValue},
		{"credit beyond window", tCredit, append(str("C"), u32(OutputWindow+1)...), errBadValue},
		{"argv count beyond payload", tStart, append(append(str("C"), str("")...), u32(1000)...), errShort},
		{"empty argv0", tStart, append(append(append(str("C"), str("")...), u32(1)...), str("")...), errBadValue},
		{"line with NUL", tStart, append(append(str("C"), str("a\x00b")...), u32(0)...), errNUL},
		{"stdin too big", tStdin, append(append(str("C"), 0), u32(maxStdinChunk+1)...), errFieldTooLong},
	}
	typ, p := mutate(validDaemonFrames[0], func(p []byte) []byte { return p[:len(p)-1] })
	daemon = append(daemon, tc{"setup truncated", typ, p, errShort})
	typ, p = frame(msgSetup{Flags: 0x80})
	daemon = append(daemon, tc{"setup unknown flag", typ, p, errBadValue})
	typ, p = frame(msgSetup{Env: []envVar{{"A=B", "x"}}})
	daemon = append(daemon, tc{"env key with =", typ, p, errBadValue})
	typ, p = frame(msgSetup{Groups: make([]uint32, 3)})
	binary.BigEndian.PutUint32(p[8:], maxGroups+1)
	daemon = append(daemon, tc{"too many groups", typ, p, errFieldTooLong})

	for _, c := range worker {
		if _, err := decodeWorkerToDaemon(c.typ, c.p); !errors.Is(err, c.want) {
			t.Errorf("worker->daemon %s: err %v, want %v", c.name, err, c.want)
		}
	}
	for _, c := range daemon {
		if _, err := decodeDaemonToWorker(c.typ, c.p); !errors.Is(err, c.want) {
			t.Errorf("daemon->worker %s: err %v, want %v", c.name, err, c.want)
		}
	}
}

func TestFrameLimits(t *testing.T) {
	// Oversize on the wire: refused from the header alone.
	hdr := binary.BigEndian.AppendUint32(nil, maxPayload+2)
	hdr = append(hdr, tOutput)
	if _, _, _, err := readFrame(bytes.NewReader(hdr), nil); !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("oversize frame: %v", err)
	}
	// The largest legal frame passes.
	ok := binary.BigEndian.AppendUint32(nil, maxPayload+1)
	ok = append(ok, tFatal)
	ok = append(ok, make([]byte, maxPayload)...)
	if _, p, _, err := readFrame(bytes.NewReader(ok), nil); err != nil || len(p) != maxPayload {
		t.Fatalf("max frame: %v", err)
	}
	if _, _, _, err := readFrame(bytes.NewReader([]byte{0, 0, 0, 0, 1}), nil); !errors.Is(err, errFrameEmpty) {
		t.Fatalf("zero length: %v", err)
	}
	if _, _, _, err := readFrame(bytes.NewReader([]byte{0, 0, 0, 9, tExit, 1}), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
	// The encoder refuses what the decoder would refuse.
	if _, err := appendFrame(nil, msgStart{ID: "C", Line: strings.Repeat("x", maxPayload)}); !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("encoder accepted an oversize frame: %v", err)
	}
	if err := checkOutgoing(msgStart{ID: "C", Line: strings.Repeat("x", maxLineLen+1)}); err == nil {
		t.Fatal("checkOutgoing accepted an over-long line")
	}
	if err := checkOutgoing(msgStart{ID: "C", Line: strings.Repeat("x", 1<<20)}); err != nil {
		t.Fatalf("a 1 MiB command line must pass: %v", err)
	}
}

// TestStdinHead checks that the head sendStdin writes before the data
// makes, with the data, exactly the frame appendFrame encodes, which the
// worker decodes back; and that it refuses what appendFrame refuses.
func TestStdinHead(t *testing.T) {
	for _, tc := range []struct {
		id  string
		eof bool
		n   int
	}{{"C1", false, 0}, {"C1", true, 0}, {"CF84C20A-0A35-43FA-AF78-0B4711DA5F30", false, 375000}, {"x", true, maxStdinChunk}} {
		data := make([]byte, tc.n)
		for i := range data {
			data[i] = byte(i*7 + i>>9)
		}
		want, err := appendFrame(nil, msgStdin{ID: tc.id, EOF: tc.eof, Data: data})
		if err != nil {
			t.Fatal(err)
		}
		head, err := appendStdinHead([]byte("keep"), tc.id, tc.eof, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if string(head[:4]) != "keep" || !bytes.Equal(append(head[4:], data...), want) {
			t.Fatalf("%+v: head and data differ from appendFrame's frame", tc)
		}
		m, err := decodeDaemonToWorker(want[4], want[frameHeader:])
		if s, ok := m.(msgStdin); err != nil || !ok || s.ID != tc.id || s.EOF != tc.eof || !bytes.Equal(s.Data, data) {
			t.Fatalf("%+v: decoded %#v, %v", tc, m, err)
		}
	}
	if b, err := appendStdinHead([]byte("keep"), "C", false, maxPayload); !errors.Is(err, errFrameTooLarge) || string(b) != "keep" {
		t.Fatalf("oversize head: %q, %v", b, err)
	}
}

// fuzzDecode reads a stream of frames, decodes each, and checks that every
// accepted message re-encodes to the same bytes.
func fuzzDecode(t *testing.T, data []byte, decode func(byte, []byte) (msg, error)) {
	r := bytes.NewReader(data)
	var buf []byte
	for i := 0; i < 64; i++ {
		var typ byte
		var p []byte
		var err error
		typ, p, buf, err = readFrame(r, buf)
		if err != nil {
			return
		}
		m, err := decode(typ, p)
		if err != nil {
			continue
		}
		b, err := appendFrame(nil, m)
		if err != nil {
			t.Fatalf("accepted %T does not re-encode: %v", m, err)
		}
		if b[4] != typ || !bytes.Equal(b[5:], p) {
			t.Fatalf("%T: re-encoding differs\n in %x\nout %x", m, p, b[5:])
		}
	}
}

func seedFuzz(f *testing.F, frames []msg) {
	var all []byte
	for _, m := range frames {
		b := encodeT(f, m)
		f.Add(b)
		all = append(all, b...)
	}
	f.Add(all)
}

func FuzzDecodeDaemonToWorker(f *testing.F) {
	seedFuzz(f, validDaemonFrames)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, data, decodeDaemonToWorker) })
}

func FuzzDecodeWorkerToDaemon(f *testing.F) {
	seedFuzz(f, validWorkerFrames)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, data, decodeWorkerToDaemon) })
}
