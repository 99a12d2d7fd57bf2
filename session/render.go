package session

import (
	"encoding/base64"
	"encoding/xml"
	"strconv"
	"strings"

	"github.com/winrmd/winrmd/server/wsman"
)

// The ReceiveResponse is the hot path of every command's output: it is
// rendered straight into one exactly-sized buffer, with the payload
// base64-encoded in place, instead of through a DOM whose escaper would walk
// half a megabyte of base64 that never needs escaping. The shape is the
// same as wsman.NewResponse's (tested against it).

const receiveEnvelopeHead = `<s:Envelope xml:lang="en-US" xmlns:s="` + wsman.NsSoap +
	`" xmlns:a="` + wsman.NsAddressing + `" xmlns:x="` + wsman.NsTransfer +
	`" xmlns:w="` + wsman.NsWsman + `" xmlns:rsp="` + wsman.NsShell +
	`" xmlns:p="` + wsman.NsWsmanMS + `"><s:Header><a:Action>` + wsman.ActionReceive + `Response</a:Action><a:MessageID>`

// streamChunk is one rsp:Stream element of a response.
type streamChunk struct {
	name string
	data []byte // encoded as base64; nil with end=true renders an empty End element
	end  bool
}

// receiveRender is what a ReceiveResponse carries besides its streams.
type receiveRender struct {
	relatesTo string
	commandID string // a validated, upper-case GUID
	streams   []streamChunk
	state     string // wsman.StateDone or StateRunning
	exitCode  int32  // with StateDone
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

func (r *receiveRender) bytes() []byte {
	rel := escapeXML(r.relatesTo)
	msgID := wsman.NewMessageID()
	const (
		toAndRel   = `</a:MessageID><a:To>` + wsman.AddressAnonymous + `</a:To><a:RelatesTo>`
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
	for _, s := range r.streams {
		n += len(streamOpen) + len(s.name) + len(cmdAttr) + len(r.commandID) + len(closeTag) + len(streamEnd) +
			base64.StdEncoding.EncodedLen(len(s.data))
		if s.end {
			n += len(endAttr)
		}
	}
	code := strconv.FormatInt(int64(r.exitCode), 10)
	n += len(stateOpen) + len(r.commandID) + len(stateAttr) + len(r.state) + len(closeTag) + len(stateClose)
	if r.state == wsman.StateDone {
		n += len(exitOpen) + len(code) + len(exitClose)
	}
	b := make([]byte, 0, n)
	b = append(b, receiveEnvelopeHead...)
	b = append(b, msgID...)
	b = append(b, toAndRel...)
	b = append(b, rel...)
	b = append(b, bodyOpen...)
	for _, s := range r.streams {
		b = append(b, streamOpen...)
		b = append(b, s.name...)
		b = append(b, cmdAttr...)
		b = append(b, r.commandID...)
		if s.end {
			b = append(b, endAttr...)
		}
		b = append(b, closeTag...)
		b = base64.StdEncoding.AppendEncode(b, s.data)
		b = append(b, streamEnd...)
	}
	b = append(b, stateOpen...)
	b = append(b, r.commandID...)
	b = append(b, stateAttr...)
	b = append(b, r.state...)
	b = append(b, closeTag...)
	if r.state == wsman.StateDone {
		b = append(b, exitOpen...)
		b = append(b, code...)
		b = append(b, exitClose...)
	}
	b = append(b, stateClose...)
	b = append(b, tail...)
	return b
}
