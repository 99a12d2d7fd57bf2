package wsman

import (
	"encoding/base64"
	"encoding/xml"
	"strconv"
	"strings"
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

// Encode renders the response into one exactly-sized buffer.
func (r *ReceiveResponse) Encode(relatesTo string) []byte {
	rel := escapeXML(relatesTo)
	state := StateRunning
	if r.Done {
		state = StateDone
	}
	msgID := NewMessageID()
	const (
		toAndRel   = `</a:MessageID><a:To>` + AddressAnonymous + `</a:To><a:RelatesTo>`
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
	n := len(receiveEnvelopeHead) + len(msgID) + len(toAndRel) + len(rel) + len(bodyOpen) + len(tail)
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
	b := make([]byte, 0, n)
	b = append(b, receiveEnvelopeHead...)
	b = append(b, msgID...)
	b = append(b, toAndRel...)
	b = append(b, rel...)
	b = append(b, bodyOpen...)
	for _, s := range r.Streams {
		b = append(b, streamOpen...)
		b = append(b, s.Name...)
		b = append(b, cmdID...)
		if s.End {
			b = append(b, endAttr...)
		}
		b = append(b, closeTag...)
		b = base64.StdEncoding.AppendEncode(b, s.Data)
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
	return b
}
