package psrp

// The out-of-process transport of PowerShell (`pwsh -s`, -ServerMode).
//
// Both directions carry one packet per '\n'-terminated UTF-8 line (a '\r'
// before the '\n' is tolerated: pwsh on Windows writes CRLF). The packets
// are tiny XML elements in exactly the shape pwsh's own
// OutOfProcessUtils writes them, single-quoted attributes in this order:
//
//	<Data Stream='Default' PSGuid='G'>BASE64</Data>
//	<Data Stream='PromptResponse' PSGuid='G'>BASE64</Data>
//	<DataAck PSGuid='G' />     <Command PSGuid='G' />   <CommandAck PSGuid='G' />
//	<Signal PSGuid='G' />      <SignalAck PSGuid='G' /> <Close PSGuid='G' />
//	<CloseAck PSGuid='G' />
//
//	G = 8-4-4-4-12 hex GUID (pwsh prints lower case; either case accepted);
//	    00000000-0000-0000-0000-000000000000 = the runspace pool, else a
//	    pipeline id.
//	BASE64 = standard alphabet, padded: whole PSRP fragments, never empty
//	    (pwsh's reader refuses an empty Data element).
//
// Conversation, with who may send what (C = the client side: winrmd's
// bridge or pypsrp; S = the server side: pwsh or the stand-in):
//
//	C->S Data(pool)                  S->C DataAck(pool)        (one in flight per GUID)
//	C->S Command(P)                  S->C CommandAck(P)        (before P's first Data)
//	C->S Data(P)                     S->C DataAck(P)
//	C->S Signal(P)                   S->C SignalAck(P)         (stop pipeline P)
//	C->S Close(P)                    S->C CloseAck(P)          (forget P)
//	C->S Close(pool)                 S->C CloseAck(pool)       (then S exits)
//	S->C Data(pool | P, Default)     output: no ack from C
//
// So a client never receives Command, Signal or Close and never receives
// PromptResponse data; a server never receives an ack. ParseClientPacket
// and ParseServerPacket enforce that, on top of the strict line grammar.
// The state that remains (which acks are awaited, which pipelines exist) is
// the bridge's; AckWaiter below holds the "one in flight per GUID" rule.
//
// Limits: a line is at most MaxLine bytes (Data payload MaxData decoded
// bytes); a longer line is a protocol error, not a reason to buffer more.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
)

// PacketKind is the element name of an out-of-process packet.
type PacketKind uint8

const (
	PacketData PacketKind = iota + 1
	PacketDataAck
	PacketCommand
	PacketCommandAck
	PacketSignal
	PacketSignalAck
	PacketClose
	PacketCloseAck
)

var kindNames = [...]string{
	PacketData:       "Data",
	PacketDataAck:    "DataAck",
	PacketCommand:    "Command",
	PacketCommandAck: "CommandAck",
	PacketSignal:     "Signal",
	PacketSignalAck:  "SignalAck",
	PacketClose:      "Close",
	PacketCloseAck:   "CloseAck",
}

func (k PacketKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("PacketKind(%d)", uint8(k))
}

// Ack is the acknowledgement a packet sent to the server waits for (0 for
// acks and for server output).
func (k PacketKind) Ack() PacketKind {
	switch k {
	case PacketData:
		return PacketDataAck
	case PacketCommand:
		return PacketCommandAck
	case PacketSignal:
		return PacketSignalAck
	case PacketClose:
		return PacketCloseAck
	}
	return 0
}

// StreamKind is the Stream attribute of a Data packet.
type StreamKind uint8

const (
	StreamDefault        StreamKind = 1
	StreamPromptResponse StreamKind = 2
)

func (s StreamKind) String() string {
	switch s {
	case StreamDefault:
		return "Default"
	case StreamPromptResponse:
		return "PromptResponse"
	}
	return fmt.Sprintf("StreamKind(%d)", uint8(s))
}

// Packet is one out-of-process packet. Stream and Data are set for Data
// packets only.
type Packet struct {
	Kind   PacketKind
	GUID   GUID
	Stream StreamKind
	Data   []byte
}

// Limits of the packet codec.
const (
	// DefaultMaxData bounds the decoded payload of one Data packet: pwsh
	// writes one fragment (at most 32 KiB of blob) per packet; a bridge
	// writes one Send payload, which the WinRS envelope (500 KiB) bounds.
	DefaultMaxData = 1 << 20
	// maxLineOverhead covers the markup around the base64 text.
	maxLineOverhead = 128
)

// MaxLineFor is the longest line a Data packet of maxData bytes can need.
func MaxLineFor(maxData int) int { return base64.StdEncoding.EncodedLen(maxData) + maxLineOverhead }

// Errors of the packet codec.
var (
	ErrPacket      = errors.New("psrp: malformed out-of-process packet")
	ErrPacketDir   = errors.New("psrp: out-of-process packet not allowed in this direction")
	ErrLineTooLong = errors.New("psrp: out-of-process line exceeds its cap")
	ErrEmptyData   = errors.New("psrp: empty Data packet")
)

// AppendPacket appends p as one line (with its '\n') in pwsh's own form.
// An empty Data packet is refused: pwsh cannot read one.
func AppendPacket(b []byte, p Packet) ([]byte, error) {
	name := p.Kind.String()
	switch p.Kind {
	case PacketData:
		if len(p.Data) == 0 {
			return b, ErrEmptyData
		}
		if p.Stream != StreamDefault && p.Stream != StreamPromptResponse {
			return b, fmt.Errorf("%w: stream %d", ErrPacket, p.Stream)
		}
		b = append(b, "<Data Stream='"...)
		b = append(b, p.Stream.String()...)
		b = append(b, "' PSGuid='"...)
		b = append(b, p.GUID.String()...)
		b = append(b, "'>"...)
		b = base64.StdEncoding.AppendEncode(b, p.Data)
		b = append(b, "</Data>\n"...)
		return b, nil
	case PacketDataAck, PacketCommand, PacketCommandAck, PacketSignal, PacketSignalAck, PacketClose, PacketCloseAck:
		b = append(b, '<')
		b = append(b, name...)
		b = append(b, " PSGuid='"...)
		b = append(b, p.GUID.String()...)
		b = append(b, "' />\n"...)
		return b, nil
	}
	return b, fmt.Errorf("%w: kind %d", ErrPacket, p.Kind)
}

// ParsePacket decodes one line (without its '\n'; a trailing '\r' is
// dropped) in either direction. maxData bounds the decoded Data payload
// (0 = DefaultMaxData). Data aliases nothing: it is freshly decoded.
func ParsePacket(line []byte, maxData int) (Packet, error) {
	if maxData <= 0 {
		maxData = DefaultMaxData
	}
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if len(line) > MaxLineFor(maxData) {
		return Packet{}, fmt.Errorf("%w: %d bytes", ErrLineTooLong, len(line))
	}
	bad := func(why string) (Packet, error) {
		return Packet{}, fmt.Errorf("%w: %s: %q", ErrPacket, why, clip(string(line)))
	}
	if len(line) < 2 || line[0] != '<' {
		return bad("not an element")
	}
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return bad("no attributes")
	}
	var kind PacketKind
	for k, n := range kindNames {
		if n != "" && string(line[1:sp]) == n {
			kind = PacketKind(k)
		}
	}
	if kind == 0 {
		return bad("unknown element")
	}
	rest := line[sp+1:]
	p := Packet{Kind: kind}
	if kind == PacketData {
		switch {
		case bytes.HasPrefix(rest, []byte("Stream='Default' ")):
			p.Stream, rest = StreamDefault, rest[len("Stream='Default' "):]
		case bytes.HasPrefix(rest, []byte("Stream='PromptResponse' ")):
			p.Stream, rest = StreamPromptResponse, rest[len("Stream='PromptResponse' "):]
		default:
			return bad("Stream attribute")
		}
	}
	g, rest, ok := cutGUIDAttr(rest)
	if !ok {
		return bad("PSGuid attribute")
	}
	p.GUID = g
	if kind != PacketData {
		if string(rest) != " />" {
			return bad("element end")
		}
		return p, nil
	}
	if !bytes.HasPrefix(rest, []byte{'>'}) || !bytes.HasSuffix(rest, []byte("</Data>")) || len(rest) < len("></Data>") {
		return bad("Data element form")
	}
	text := rest[1 : len(rest)-len("</Data>")]
	if len(text) == 0 {
		return Packet{}, fmt.Errorf("%w (PSGuid %s)", ErrEmptyData, g)
	}
	if base64.StdEncoding.DecodedLen(len(text)) > maxData+2 {
		return Packet{}, fmt.Errorf("%w: Data of %d base64 bytes", ErrLineTooLong, len(text))
	}
	data, err := base64.StdEncoding.Strict().AppendDecode(nil, text)
	if err != nil {
		return bad("base64: " + err.Error())
	}
	if len(data) == 0 {
		return Packet{}, fmt.Errorf("%w (PSGuid %s)", ErrEmptyData, g)
	}
	if len(data) > maxData {
		return Packet{}, fmt.Errorf("%w: Data of %d bytes", ErrLineTooLong, len(data))
	}
	p.Data = data
	return p, nil
}

// cutGUIDAttr reads `PSGuid='G'` at the start of b.
func cutGUIDAttr(b []byte) (GUID, []byte, bool) {
	const pre = "PSGuid='"
	if !bytes.HasPrefix(b, []byte(pre)) || len(b) < len(pre)+37 || b[len(pre)+36] != '\'' {
		return GUID{}, nil, false
	}
	g, err := ParseGUID(string(b[len(pre) : len(pre)+36]))
	if err != nil {
		return GUID{}, nil, false
	}
	return g, b[len(pre)+37:], true
}

// ParseServerPacket decodes a line the server (pwsh) wrote: Data on the
// Default stream and the four acknowledgements, nothing else.
func ParseServerPacket(line []byte, maxData int) (Packet, error) {
	p, err := ParsePacket(line, maxData)
	if err != nil {
		return p, err
	}
	switch p.Kind {
	case PacketDataAck, PacketCommandAck, PacketSignalAck, PacketCloseAck:
		return p, nil
	case PacketData:
		if p.Stream == StreamDefault {
			return p, nil
		}
	}
	return Packet{}, fmt.Errorf("%w: server sent %s (stream %s)", ErrPacketDir, p.Kind, p.Stream)
}

// ParseClientPacket decodes a line a client wrote: Data, Command, Signal,
// Close. Signal on the pool is refused (pwsh answers it with an error).
func ParseClientPacket(line []byte, maxData int) (Packet, error) {
	p, err := ParsePacket(line, maxData)
	if err != nil {
		return p, err
	}
	switch p.Kind {
	case PacketData, PacketClose:
		return p, nil
	case PacketCommand, PacketSignal:
		if !p.GUID.IsNil() {
			return p, nil
		}
	}
	return Packet{}, fmt.Errorf("%w: client sent %s for %s", ErrPacketDir, p.Kind, p.GUID)
}

// LineReader reads '\n'-terminated lines of at most max bytes. A longer
// line is an error (ErrLineTooLong) and the reader is then unusable: the
// peer broke the protocol.
type LineReader struct {
	r   *bufio.Reader
	max int
	buf []byte
	err error
}

// NewLineReader reads lines of at most max bytes (without the '\n').
func NewLineReader(r io.Reader, max int) *LineReader {
	// A buffer no larger than a line needs, so an overlong line is refused
	// as soon as its bytes arrive, not when 64 KiB have.
	size := 64 << 10
	if max+2 < size {
		size = max + 2
	}
	return &LineReader{r: bufio.NewReaderSize(r, size), max: max}
}

// Line returns the next line without its '\n', valid until the next call.
// io.EOF after the last complete line; io.ErrUnexpectedEOF for a partial
// last line.
func (l *LineReader) Line() ([]byte, error) {
	if l.err != nil {
		return nil, l.err
	}
	l.buf = l.buf[:0]
	for {
		chunk, err := l.r.ReadSlice('\n')
		if len(l.buf)+len(chunk) > l.max+1 {
			l.err = fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, l.max)
			return nil, l.err
		}
		if err == nil {
			if len(l.buf) == 0 {
				return chunk[:len(chunk)-1], nil
			}
			l.buf = append(l.buf, chunk[:len(chunk)-1]...)
			return l.buf, nil
		}
		l.buf = append(l.buf, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(l.buf) > 0 {
			err = io.ErrUnexpectedEOF
		}
		l.err = err
		return nil, err
	}
}

// --- acknowledgement state ---

// ErrUnexpectedAck: the server acknowledged something nobody is waiting for.
var ErrUnexpectedAck = errors.New("psrp: unexpected acknowledgement")

// AckWaiter is the client side's record of packets sent and not yet
// acknowledged: at most one per (GUID, kind), which is the ordering rule of
// the transport (pwsh handles each line on a thread-pool thread, so a second
// packet for the same GUID before the ack could overtake the first). It is
// not safe for concurrent use; the bridge's writer owns it.
type AckWaiter struct {
	waiting map[ackKey]struct{}
}

type ackKey struct {
	g GUID
	k PacketKind // the ack kind awaited
}

// Sent records p as sent; it fails when an ack for the same GUID and kind is
// still outstanding (the caller should have waited).
func (a *AckWaiter) Sent(p Packet) error {
	ack := p.Kind.Ack()
	if ack == 0 {
		return fmt.Errorf("%w: %s needs no acknowledgement", ErrPacketDir, p.Kind)
	}
	k := ackKey{p.GUID, ack}
	if _, busy := a.waiting[k]; busy {
		return fmt.Errorf("%w: %s for %s already in flight", ErrPacketDir, p.Kind, p.GUID)
	}
	if a.waiting == nil {
		a.waiting = make(map[ackKey]struct{})
	}
	a.waiting[k] = struct{}{}
	return nil
}

// Acked matches an acknowledgement from the server against what was sent.
func (a *AckWaiter) Acked(p Packet) error {
	k := ackKey{p.GUID, p.Kind}
	if _, ok := a.waiting[k]; !ok {
		return fmt.Errorf("%w: %s for %s", ErrUnexpectedAck, p.Kind, p.GUID)
	}
	delete(a.waiting, k)
	return nil
}

// Outstanding reports how many acknowledgements are awaited.
func (a *AckWaiter) Outstanding() int { return len(a.waiting) }
