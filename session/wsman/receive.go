package wsman

import (
	"encoding/base64"
	"encoding/xml"
	"strconv"
	"strings"
	"sync"
)

// The ReceiveResponse is the hot path of every command's output: it is
// rendered straight into one exactly-sized buffer, with the payload
// base64-encoded in place, instead of through a DOM whose escaper would walk
// half a megabyte of base64 that never needs escaping. The shape is the
// same as NewResponse's (tested against it).

const receiveEnvelopeHead = `<s:Envelope xml:lang="en-US" xmlns:s="` + NsSoap +
	`" xmlns:a="` + NsAddressing + `" xmlns:x="` + NsTransfer +
	`" xmlns:w="` + NsWsman + `" xmlns:rsp="` + NsShell +
	`" xmlns:p="` + NsWsmanMS + `"><s:Header><a:Action>` + ActionReceive + `Response</a:Action><a:MessageID>`

// StreamChunk is one rsp:Stream element of a ReceiveResponse.
type StreamChunk struct {
	Name string
	Data []byte // encoded as base64; nil with End renders an empty End element
	End  bool
}

// ReceiveResponse is an rsp:ReceiveResponse: output chunks and the
// command's state.
type ReceiveResponse struct {
	CommandID string // a validated, upper-case GUID
	// Pool renders a PowerShell runspace pool's Receive: Streams without
	// CommandId and no CommandState (recorded Windows traffic).
	Pool     bool
	Streams  []StreamChunk
	Done     bool  // rsp:CommandState Done (with ExitCode), else Running
	ExitCode int32 // with Done
}

func escapeXML(s string) string {
	if !strings.ContainsAny(s, `<>&"'`+"\r\n\t") && isPlainASCII(s) {
		return s
	}
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func isPlainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// Encode renders the response into one exactly-sized new buffer, for a
// caller that cannot give it back (Release): it takes none from the pool,
// which it would only drain.
func (r *ReceiveResponse) Encode(relatesTo string) []byte {
	return r.prepare(EscapedLen(relatesTo), false).Finish(relatesTo)
}

// EscapedLen is the length of s escaped as Finish writes it: the room a
// Prepare for that RelatesTo needs.
func EscapedLen(s string) int { return len(escapeXML(s)) }

// PreparedReceive is a ReceiveResponse rendered but for its header: the
// MessageID and RelatesTo are only known when the request it answers
// arrives. Its buffer keeps room in front of the rendered body, so Finish
// writes the header in place and copies nothing when the room suffices.
type PreparedReceive struct {
	buf   []byte // buf[start:] is the rendered rest of the envelope
	start int
	pool  *[]byte // buf's pooled backing (receiveBufs), for Release
}

// receiveBufs keeps the buffers of ReceiveResponses that were written
// (Release) for the next ones. A stream's responses all have about the
// client's MaxEnvelopeSize (512000 bytes for pywinrm, pypsrp and
// masterzen), and a new buffer for each cost the zeroing of half a
// megabyte and most of the daemon's garbage: at 230 MB/s of output, a
// collection every few responses (perf of the HTTPS stdout row: memclr
// and the collector together 7% of the daemon). A reused buffer's old
// bytes are never sent: Prepare writes every byte it returns, and the room
// in front of the body that Finish does not fill is not part of the
// envelope.
var receiveBufs sync.Pool // of *[]byte

const (
	receiveBufMin = 64 << 10 // smaller responses are cheap to allocate
	receiveBufMax = 4 << 20  // a larger one is not kept
)

// receiveBuf returns a buffer of at least n bytes' capacity, pooled (with
// its pointer for Release) when n is in the pooled range.
func receiveBuf(n int) ([]byte, *[]byte) {
	if n < receiveBufMin || n > receiveBufMax {
		return make([]byte, 0, n), nil
	}
	if bp, _ := receiveBufs.Get().(*[]byte); bp != nil && cap(*bp) >= n {
		return (*bp)[:0], bp
	}
	// None, or one too small (a client with a smaller MaxEnvelopeSize
	// had it), which goes to the collector.
	b := make([]byte, 0, n)
	return b, &b
}

// Release gives the prepared response's buffer back for the next
// response. Call it once the envelope Finish returned has been written, or
// when the response is dropped unused; neither may be used after.
func (p *PreparedReceive) Release() {
	if p.pool != nil {
		receiveBufs.Put(p.pool)
		p.pool, p.buf = nil, nil
	}
}

// ReceiveHeadRoom is room for a RelatesTo to keep when it is not known yet:
// clients send "uuid:" and a GUID (41 bytes); a longer one costs Finish
// one copy.
const ReceiveHeadRoom = 128

const receiveToAndRel = `</a:MessageID><a:To>` + AddressAnonymous + `</a:To><a:RelatesTo>`

// Prepare renders everything after the RelatesTo value, leaving room in
// front for the header with a RelatesTo of up to relRoom bytes (escaped).
//
// The buffer comes from the pool of written responses; Release gives it
// back.
func (r *ReceiveResponse) Prepare(relRoom int) *PreparedReceive {
	return r.prepare(relRoom, true)
}

func (r *ReceiveResponse) prepare(relRoom int, pooled bool) *PreparedReceive {
	state := StateRunning
	if r.Done {
		state = StateDone
	}
	const (
		bodyOpen   = `</a:RelatesTo></s:Header><s:Body><rsp:ReceiveResponse>`
		streamOpen = `<rsp:Stream Name="`
		cmdAttr    = `" CommandId="`
		endAttr    = `" End="true`
		closeTag   = `">`
		streamEnd  = `</rsp:Stream>`
		stateOpen  = `<rsp:CommandState CommandId="`
		stateAttr  = `" State="`
		exitOpen   = `<rsp:ExitCode>`
		exitClose  = `</rsp:ExitCode>`
		stateClose = `</rsp:CommandState>`
		tail       = `</rsp:ReceiveResponse></s:Body></s:Envelope>`
	)
	// The header: envelope head, a MessageID ("uuid:" and a GUID), To,
	// then RelatesTo.
	head := len(receiveEnvelopeHead) + len("uuid:") + 36 + len(receiveToAndRel) + relRoom
	n := head + len(bodyOpen) + len(tail)
	cmdID := cmdAttr + r.CommandID
	if r.Pool {
		cmdID = ""
	}
	for _, s := range r.Streams {
		n += len(streamOpen) + len(s.Name) + len(cmdID) + len(closeTag) + len(streamEnd) +
			base64.StdEncoding.EncodedLen(len(s.Data))
		if s.End {
			n += len(endAttr)
		}
	}
	code := strconv.FormatInt(int64(r.ExitCode), 10)
	if !r.Pool {
		n += len(stateOpen) + len(r.CommandID) + len(stateAttr) + len(state) + len(closeTag) + len(stateClose)
		if r.Done {
			n += len(exitOpen) + len(code) + len(exitClose)
		}
	}
	var b []byte
	var pool *[]byte
	if pooled {
		b, pool = receiveBuf(n)
	} else {
		b = make([]byte, 0, n)
	}
	b = b[:head] // the header's room: Finish fills what it returns of it
	b = append(b, bodyOpen...)
	for _, s := range r.Streams {
		b = append(b, streamOpen...)
		b = append(b, s.Name...)
		b = append(b, cmdID...)
		if s.End {
			b = append(b, endAttr...)
		}
		b = append(b, closeTag...)
		b = appendBase64(b, s.Data)
		b = append(b, streamEnd...)
	}
	if !r.Pool {
		b = append(b, stateOpen...)
		b = append(b, r.CommandID...)
		b = append(b, stateAttr...)
		b = append(b, state...)
		b = append(b, closeTag...)
		if r.Done {
			b = append(b, exitOpen...)
			b = append(b, code...)
			b = append(b, exitClose...)
		}
		b = append(b, stateClose...)
	}
	b = append(b, tail...)
	return &PreparedReceive{buf: b, start: head, pool: pool}
}

// Finish writes the header answering relatesTo (and a new MessageID) in
// front of the prepared body and returns the whole envelope. It writes in
// place when the room suffices, else into a new buffer. Call it once.
func (p *PreparedReceive) Finish(relatesTo string) []byte {
	rel := escapeXML(relatesTo)
	msgID := NewMessageID()
	hl := len(receiveEnvelopeHead) + len(msgID) + len(receiveToAndRel) + len(rel)
	var b []byte
	if hl <= p.start {
		b = p.buf[p.start-hl:]
	} else {
		b = make([]byte, hl+len(p.buf)-p.start)
		copy(b[hl:], p.buf[p.start:])
	}
	h := b[:0]
	h = append(h, receiveEnvelopeHead...)
	h = append(h, msgID...)
	h = append(h, receiveToAndRel...)
	_ = append(h, rel...)
	return b
}
