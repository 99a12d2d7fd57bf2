package wsman

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/beevik/etree"
)

// This file decodes the body of every WinRS request into a typed value
// (MS-WSMV 3.1.4.x, the rsp: schema). The session layer sees only these
// values. Decode checks the syntax of what is there (base64, durations,
// counts); what the values mean (is this a GUID, does this command exist,
// is this stream name served) is the session layer's business.
//
// A body whose element is not the one its Action calls for decodes to a nil
// Body: the operation that needs it answers with the schema fault it names,
// after its own earlier checks (resource URI, shell lookup), as before.

// Message is one decoded request: its headers and its typed body.
type Message struct {
	Header Header
	// Body is one of *Shell (Create), *CommandLine (Command), *Send,
	// *Receive, *Signal, *Enumerate, *Pull, *Release, *Disconnect,
	// *Connect (psrp.go), or nil (Get, Delete, Reconnect, an unknown
	// Action, or a body of the wrong element).
	Body any
}

// EnvVar is one rsp:Environment/rsp:Variable.
type EnvVar struct {
	Name, Value string // Value is the text as sent, untrimmed
}

// Shell is the body of a Create: rsp:Shell.
type Shell struct {
	ShellID string // the ShellId attribute as sent ("" when absent)
	// InputStreams and OutputStreams are the stream names, whitespace
	// collapsed to single spaces; "" when absent or empty.
	InputStreams, OutputStreams string
	// IdleTimeout is rsp:IdleTimeOut (xs:duration, or seconds as pywinrm
	// sends it); 0 when absent.
	IdleTimeout time.Duration
	// WorkingDirectory is rsp:WorkingDirectory, trimmed; "" when absent.
	WorkingDirectory string
	Environment      []EnvVar
	// CreationXML is the PowerShell shell's creationXml (MS-PSRP 3.1.4.1),
	// base64 text as sent, trimmed; "" for a cmd shell.
	CreationXML string
}

// CommandLine is the body of a Command: rsp:CommandLine.
type CommandLine struct {
	CommandID string   // the CommandId attribute as sent ("" when absent)
	Command   string   // rsp:Command, trimmed
	Arguments []string // each rsp:Arguments, as sent
}

// StreamData is one rsp:Stream of a Send.
type StreamData struct {
	Name, CommandID string // attributes as sent
	// Data is the decoded base64 text. After DecodeInPlace it may alias
	// the bytes given to Parse (see there).
	Data []byte
	End  bool // End="true" (any case)
}

// Send is the body of a Send: rsp:Send.
type Send struct {
	Streams []StreamData
}

// Receive is the body of a Receive: rsp:Receive/rsp:DesiredStream.
type Receive struct {
	CommandID string   // the DesiredStream's CommandId attribute ("" when absent)
	Streams   []string // the DesiredStream's stream names; empty means all
}

// Signal is the body of a Signal: rsp:Signal.
type Signal struct {
	CommandID string // the CommandId attribute as sent ("" when absent)
	Code      string // rsp:Code, trimmed
}

// Enumerate is the body of an Enumerate: n:Enumerate.
type Enumerate struct {
	Optimize bool // w:OptimizeEnumeration present
	// FilterShellID is the ShellId selector of a w:Filter (SelectorFilter
	// dialect), upper-cased and trimmed; "" when there is none.
	FilterShellID string
}

// Pull is the body of a Pull: n:Pull.
type Pull struct {
	Context     string // n:EnumerationContext, trimmed; "" when absent
	HasContext  bool   // n:EnumerationContext present
	MaxElements int    // n:MaxElements when a positive number, else 0
}

// Release is the body of a Release: n:Release.
type Release struct {
	Context    string // n:EnumerationContext, trimmed
	HasContext bool   // n:EnumerationContext present
}

// Decode limits: how much one WinRS body may list.
const (
	MaxSendStreams = 64   // rsp:Stream elements in one Send
	MaxEnvVars     = 1024 // rsp:Variable elements in one Create
)

// Decode turns a parsed envelope into a Message. The error is always a
// *Fault (InvalidParameter or SchemaValidation) naming the element. The
// Message shares no memory with the bytes given to Parse.
func Decode(env *Envelope) (*Message, error) {
	m, f := decode(env, false)
	if f != nil {
		return nil, f
	}
	return m, nil
}

// DecodeInPlace is Decode for a caller that owns the bytes it gave Parse:
// the base64 of a Send's rsp:Stream that Parse left in those bytes (a
// lifted text, the whole content of the element; see streamText) is
// decoded over itself, and that StreamData.Data aliases them. The bytes
// are overwritten, so no one else may read them, and the Message's Data is
// valid only as long as the caller keeps the bytes unchanged (the server
// recycles a request's buffer once the session layer has answered it).
// Decoding the envelope again gives the same Data (DecodeInPlace) or a
// copy of it (Decode).
func DecodeInPlace(env *Envelope) (*Message, error) {
	m, f := decode(env, true)
	if f != nil {
		return nil, f
	}
	return m, nil
}

func decode(env *Envelope, inPlace bool) (*Message, *Fault) {
	m := &Message{Header: env.Header}
	b := env.Body
	var f *Fault
	switch env.Header.Action {
	case ActionCreate:
		if Is(b, NsShell, "Shell") {
			m.Body, f = decodeShell(b)
		}
	case ActionCommand:
		if Is(b, NsShell, "CommandLine") {
			m.Body = decodeCommandLine(b)
		}
	case ActionSend:
		if Is(b, NsShell, "Send") {
			m.Body, f = decodeSend(env, b, inPlace)
		}
	case ActionReceive:
		if Is(b, NsShell, "Receive") {
			m.Body, f = decodeReceive(b)
		}
	case ActionSignal:
		if Is(b, NsShell, "Signal") {
			m.Body = &Signal{CommandID: Attr(b, "CommandId"), Code: strings.TrimSpace(Text(Child(b, NsShell, "Code")))}
		}
	case ActionEnumerate:
		if Is(b, NsEnumeration, "Enumerate") {
			m.Body = decodeEnumerate(b)
		}
	case ActionPull:
		if Is(b, NsEnumeration, "Pull") {
			p := &Pull{}
			p.Context, p.HasContext = enumContext(b)
			if v, err := strconv.Atoi(strings.TrimSpace(Text(Child(b, NsEnumeration, "MaxElements")))); err == nil && v > 0 {
				p.MaxElements = v
			}
			m.Body = p
		}
	case ActionDisconnect:
		if Is(b, NsShell, "Disconnect") {
			m.Body, f = decodeDisconnect(b)
		}
	case ActionConnect:
		if Is(b, NsShell, "Connect") {
			m.Body = decodeConnect(b)
		}
	case ActionRelease:
		if Is(b, NsEnumeration, "Release") {
			r := &Release{}
			r.Context, r.HasContext = enumContext(b)
			m.Body = r
		}
	}
	if f != nil {
		f.RelatesTo = env.Header.MessageID
		return nil, f
	}
	return m, nil
}

func enumContext(b *etree.Element) (string, bool) {
	e := Child(b, NsEnumeration, "EnumerationContext")
	if e == nil {
		return "", false
	}
	return strings.TrimSpace(e.Text()), true
}

func streamList(e *etree.Element) string {
	if e == nil {
		return ""
	}
	return strings.Join(strings.Fields(e.Text()), " ")
}

func decodeShell(b *etree.Element) (*Shell, *Fault) {
	s := &Shell{
		ShellID:       Attr(b, "ShellId"),
		InputStreams:  streamList(Child(b, NsShell, "InputStreams")),
		OutputStreams: streamList(Child(b, NsShell, "OutputStreams")),
		CreationXML:   strings.TrimSpace(Text(Child(b, NsPowerShell, "creationXml"))),
	}
	if e := Child(b, NsShell, "IdleTimeOut"); e != nil {
		d, err := parseIdle(e.Text())
		if err != nil {
			return nil, InvalidParameter("IdleTimeOut: " + err.Error())
		}
		s.IdleTimeout = d
	}
	if e := Child(b, NsShell, "WorkingDirectory"); e != nil {
		s.WorkingDirectory = strings.TrimSpace(e.Text())
	}
	if e := Child(b, NsShell, "Environment"); e != nil {
		vars := Children(e, NsShell, "Variable")
		if len(vars) > MaxEnvVars {
			return nil, InvalidParameter("Too many environment variables.")
		}
		s.Environment = make([]EnvVar, 0, len(vars))
		for _, v := range vars {
			s.Environment = append(s.Environment, EnvVar{Name: Attr(v, "Name"), Value: v.Text()})
		}
	}
	return s, nil
}

// parseIdle accepts an xs:duration or a bare number of seconds (pywinrm).
func parseIdle(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 || n > 1e9 {
			return 0, errOutOfRange
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, errNegative
	}
	return d, nil
}

type decodeError string

func (e decodeError) Error() string { return string(e) }

const (
	errOutOfRange decodeError = "out of range"
	errNegative   decodeError = "negative"
)

func decodeCommandLine(b *etree.Element) *CommandLine {
	c := &CommandLine{
		CommandID: Attr(b, "CommandId"),
		Command:   strings.TrimSpace(Text(Child(b, NsShell, "Command"))),
	}
	for _, a := range Children(b, NsShell, "Arguments") {
		c.Arguments = append(c.Arguments, a.Text())
	}
	return c
}

func decodeSend(env *Envelope, b *etree.Element, inPlace bool) (*Send, *Fault) {
	streams := Children(b, NsShell, "Stream")
	if len(streams) > MaxSendStreams {
		return nil, InvalidParameter("Too many streams in one Send.")
	}
	s := &Send{Streams: make([]StreamData, 0, len(streams))}
	for _, e := range streams {
		var data []byte
		var err error
		switch st := env.streamOf(e); {
		case st == nil:
			data, err = base64.StdEncoding.DecodeString(strings.TrimSpace(e.Text()))
		case st.done && inPlace:
			data = st.data
		case st.done:
			data = bytes.Clone(st.data)
		case inPlace:
			if data, err = DecodeBase64InPlace(st.text); err == nil {
				st.data, st.done = data, true
			}
		default:
			data = make([]byte, base64.StdEncoding.DecodedLen(len(st.text)))
			var n int
			n, err = base64.StdEncoding.Decode(data, st.text)
			data = data[:n]
		}
		if err != nil {
			return nil, InvalidParameter("The stream data is not valid base64.")
		}
		s.Streams = append(s.Streams, StreamData{
			Name:      Attr(e, "Name"),
			CommandID: Attr(e, "CommandId"),
			Data:      data,
			End:       strings.EqualFold(strings.TrimSpace(Attr(e, "End")), "true"),
		})
	}
	return s, nil
}

func decodeReceive(b *etree.Element) (*Receive, *Fault) {
	ds := Child(b, NsShell, "DesiredStream")
	if ds == nil {
		return nil, SchemaValidation("The Receive request must carry an rsp:DesiredStream element.")
	}
	return &Receive{CommandID: Attr(ds, "CommandId"), Streams: strings.Fields(ds.Text())}, nil
}

func decodeEnumerate(b *etree.Element) *Enumerate {
	e := &Enumerate{Optimize: Child(b, NsWsman, "OptimizeEnumeration") != nil}
	if ss := Child(Child(b, NsWsman, "Filter"), NsWsman, "SelectorSet"); ss != nil {
		for _, s := range Children(ss, NsWsman, "Selector") {
			if strings.EqualFold(Attr(s, "Name"), "ShellId") {
				e.FilterShellID = strings.ToUpper(strings.TrimSpace(s.Text()))
			}
		}
	}
	return e
}
