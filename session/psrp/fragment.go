// Package psrp holds the pure codecs of PowerShell remoting (MS-PSRP) that
// winrmd needs to relay a runspace pool between a WinRS client and a
// PowerShell process: PSRP fragments and message headers (this file) and the
// out-of-process packets `pwsh -s` reads and writes (outofproc.go). Nothing
// here does I/O beyond reading lines from an io.Reader; every decoder is
// strict and bounded, because both ends are hostile: the WinRS client is on
// the network and pwsh runs as the user.
package psrp

// PSRP fragments (MS-PSRP 2.2.4) and messages (2.2.1).
//
// A PSRP message travels as one or more fragments; fragment fields are
// big-endian:
//
//	 0               8               16    17              21
//	+---------------+---------------+-----+---------------+-----------------+
//	| ObjectId u64  | FragmentId u64|Flags| BlobLength u32| Blob            |
//	+---------------+---------------+-----+---------------+-----------------+
//	Flags: 0x1 Start (first fragment of the object), 0x2 End (last); other
//	bits must be zero. FragmentId counts 0, 1, 2, ... within one object.
//
// The blobs of one object, in FragmentId order, are the message; its header
// is little-endian:
//
//	 0               4               8                24               40
//	+---------------+---------------+----------------+----------------+------+
//	| Destination   | MessageType   | RPID (GUID)    | PID (GUID)     | Data |
//	| u32 LE 1|2    | u32 LE        | .NET byte order| .NET byte order| XML  |
//	+---------------+---------------+----------------+----------------+------+
//	Destination 1 = client, 2 = server. PID is all zero for pool messages.
//	Data is UTF-8 CLIXML, optionally behind a BOM.
//
// Reassembly (Defragmenter) is a state machine per ObjectId:
//
//	idle --Start, FragmentId 0--> assembling(next=1) --FragmentId next--> ...
//	assembling --End--> idle (one message out)
//	Start|End on a single fragment: idle -> idle with one message.
//
// Anything else (a middle fragment for an idle object, a Start for an object
// already assembling, a FragmentId out of order, a Start with FragmentId != 0)
// is a protocol error: the sender broke PSRP and the stream is abandoned.
// Fragments of different objects may interleave (a client sends input and
// host responses independently), up to MaxPending objects at once.

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
)

// FragmentHeaderLen and MessageHeaderLen are the fixed header sizes.
const (
	FragmentHeaderLen = 21
	MessageHeaderLen  = 40
)

// Fragment flags.
const (
	FlagStart uint8 = 0x1
	FlagEnd   uint8 = 0x2
)

// Default limits. A fragment blob is bounded by the transport that carries
// it: WinRS clients fragment to fit MaxEnvelopeSize (500 KiB on Windows 10,
// so blobs are well under that) and pwsh writes at most 32 KiB per fragment.
// 1 MiB leaves room for both without letting a 4 GiB length allocate.
const (
	DefaultMaxBlob    = 1 << 20
	DefaultMaxMessage = 64 << 10 // what a bridge keeps of one message (headers, states)
	DefaultMaxPending = 16       // objects in reassembly at once
)

// Errors of the fragment and message codecs.
var (
	ErrShortFragment = errors.New("psrp: truncated fragment")
	ErrBlobTooLarge  = errors.New("psrp: fragment blob exceeds its cap")
	ErrBadFlags      = errors.New("psrp: fragment flags out of range")
	ErrFragmentOrder = errors.New("psrp: fragment out of order")
	ErrTooManyObject = errors.New("psrp: too many objects in reassembly")
	ErrMessageTooBig = errors.New("psrp: message exceeds its cap")
	ErrShortMessage  = errors.New("psrp: message shorter than its header")
	ErrDestination   = errors.New("psrp: message destination out of range")
	ErrNoState       = errors.New("psrp: no state in message")
)

// Fragment is one PSRP fragment. Blob aliases the buffer it was parsed from.
type Fragment struct {
	ObjectID   uint64
	FragmentID uint64
	Start, End bool
	Blob       []byte
}

// AppendFragment appends f in wire form to b.
func AppendFragment(b []byte, f Fragment) []byte {
	b = binary.BigEndian.AppendUint64(b, f.ObjectID)
	b = binary.BigEndian.AppendUint64(b, f.FragmentID)
	var flags uint8
	if f.Start {
		flags |= FlagStart
	}
	if f.End {
		flags |= FlagEnd
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(f.Blob)))
	return append(b, f.Blob...)
}

// ParseFragment decodes the fragment at the start of b and returns it with
// the number of bytes it took. maxBlob bounds BlobLength (0 = DefaultMaxBlob).
func ParseFragment(b []byte, maxBlob int) (Fragment, int, error) {
	if maxBlob <= 0 {
		maxBlob = DefaultMaxBlob
	}
	if len(b) < FragmentHeaderLen {
		return Fragment{}, 0, fmt.Errorf("%w: %d header bytes of %d", ErrShortFragment, len(b), FragmentHeaderLen)
	}
	f := Fragment{
		ObjectID:   binary.BigEndian.Uint64(b[0:8]),
		FragmentID: binary.BigEndian.Uint64(b[8:16]),
	}
	flags := b[16]
	if flags&^(FlagStart|FlagEnd) != 0 {
		return Fragment{}, 0, fmt.Errorf("%w: 0x%02x (object %d)", ErrBadFlags, flags, f.ObjectID)
	}
	f.Start, f.End = flags&FlagStart != 0, flags&FlagEnd != 0
	n := binary.BigEndian.Uint32(b[17:21])
	if uint64(n) > uint64(maxBlob) {
		return Fragment{}, 0, fmt.Errorf("%w: %d bytes (object %d, cap %d)", ErrBlobTooLarge, n, f.ObjectID, maxBlob)
	}
	end := FragmentHeaderLen + int(n)
	if len(b) < end {
		return Fragment{}, 0, fmt.Errorf("%w: blob of %d bytes, %d present (object %d)", ErrShortFragment, n, len(b)-FragmentHeaderLen, f.ObjectID)
	}
	f.Blob = b[FragmentHeaderLen:end:end]
	return f, end, nil
}

// SplitFragments decodes a buffer that must hold whole fragments only (one
// Send payload, one out-of-process Data packet). It returns them in order.
func SplitFragments(b []byte, maxBlob int) ([]Fragment, error) {
	var out []Fragment
	for len(b) > 0 {
		f, n, err := ParseFragment(b, maxBlob)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
		b = b[n:]
	}
	return out, nil
}

// Fragments cuts a message into fragments of at most maxBlob blob bytes,
// numbered from 0 under objectID, and appends them to b in wire form.
func Fragments(b []byte, objectID uint64, msg []byte, maxBlob int) []byte {
	if maxBlob <= 0 {
		maxBlob = DefaultMaxBlob
	}
	var id uint64
	for first := true; first || len(msg) > 0; first = false {
		n := min(len(msg), maxBlob)
		b = AppendFragment(b, Fragment{ObjectID: objectID, FragmentID: id, Start: first, End: n == len(msg), Blob: msg[:n]})
		msg = msg[n:]
		id++
	}
	return b
}

// --- reassembly ---

// Assembled is one message put back together from its fragments.
type Assembled struct {
	ObjectID uint64
	// Message holds the first MaxMessage bytes of the message (all of it when
	// Truncated is false).
	Message   []byte
	Size      int // the full size of the message
	Truncated bool
}

type partial struct {
	next uint64
	buf  []byte
	size int
}

// Defragmenter reassembles messages from fragments (the state machine in the
// file header). The zero value uses the default limits and refuses messages
// over MaxMessage; set Truncate to keep only the first MaxMessage bytes of
// longer ones instead (a bridge that reads headers and states only, while
// the bytes themselves pass through untouched).
type Defragmenter struct {
	MaxBlob    int
	MaxMessage int
	MaxPending int
	Truncate   bool

	pending map[uint64]*partial
}

// Pending reports how many objects are mid-reassembly.
func (d *Defragmenter) Pending() int { return len(d.pending) }

// Add takes one fragment; it returns the completed message when f was the
// last fragment of its object.
func (d *Defragmenter) Add(f Fragment) (Assembled, bool, error) {
	maxMsg := d.MaxMessage
	if maxMsg <= 0 {
		maxMsg = DefaultMaxMessage
	}
	maxPending := d.MaxPending
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	p := d.pending[f.ObjectID]
	switch {
	case f.Start && p != nil:
		return Assembled{}, false, fmt.Errorf("%w: object %d started twice", ErrFragmentOrder, f.ObjectID)
	case f.Start && f.FragmentID != 0:
		return Assembled{}, false, fmt.Errorf("%w: object %d starts at fragment %d", ErrFragmentOrder, f.ObjectID, f.FragmentID)
	case !f.Start && p == nil:
		return Assembled{}, false, fmt.Errorf("%w: object %d fragment %d without a start", ErrFragmentOrder, f.ObjectID, f.FragmentID)
	case !f.Start && f.FragmentID != p.next:
		return Assembled{}, false, fmt.Errorf("%w: object %d fragment %d, expected %d", ErrFragmentOrder, f.ObjectID, f.FragmentID, p.next)
	}
	if f.Start {
		if f.End {
			return d.finish(f.ObjectID, &partial{}, f.Blob, maxMsg)
		}
		if len(d.pending) >= maxPending {
			return Assembled{}, false, fmt.Errorf("%w: %d", ErrTooManyObject, len(d.pending))
		}
		p = &partial{}
		if d.pending == nil {
			d.pending = make(map[uint64]*partial)
		}
		d.pending[f.ObjectID] = p
	}
	if f.End {
		delete(d.pending, f.ObjectID)
		return d.finish(f.ObjectID, p, f.Blob, maxMsg)
	}
	if err := p.add(f.Blob, maxMsg, d.Truncate); err != nil {
		delete(d.pending, f.ObjectID)
		return Assembled{}, false, fmt.Errorf("object %d: %w", f.ObjectID, err)
	}
	p.next++
	return Assembled{}, false, nil
}

func (p *partial) add(blob []byte, maxMsg int, truncate bool) error {
	p.size += len(blob)
	if p.size > maxMsg && !truncate {
		return fmt.Errorf("%w: more than %d bytes", ErrMessageTooBig, maxMsg)
	}
	if room := maxMsg - len(p.buf); room > 0 {
		p.buf = append(p.buf, blob[:min(room, len(blob))]...)
	}
	return nil
}

func (d *Defragmenter) finish(id uint64, p *partial, blob []byte, maxMsg int) (Assembled, bool, error) {
	if err := p.add(blob, maxMsg, d.Truncate); err != nil {
		return Assembled{}, false, fmt.Errorf("object %d: %w", id, err)
	}
	return Assembled{ObjectID: id, Message: p.buf, Size: p.size, Truncated: p.size > len(p.buf)}, true, nil
}

// Feed splits a buffer of whole fragments and adds each; it returns the
// messages completed by this buffer.
func (d *Defragmenter) Feed(b []byte) ([]Assembled, error) {
	var out []Assembled
	for len(b) > 0 {
		f, n, err := ParseFragment(b, d.MaxBlob)
		if err != nil {
			return out, err
		}
		b = b[n:]
		a, ok, err := d.Add(f)
		if err != nil {
			return out, err
		}
		if ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// --- messages ---

// Destination of a message.
type Destination uint32

const (
	ToClient Destination = 1
	ToServer Destination = 2
)

// MessageType is the MS-PSRP 2.2.1 message type.
type MessageType uint32

// The message types a bridge looks at (the full list is MS-PSRP 2.2.1).
const (
	SessionCapability      MessageType = 0x00010002
	InitRunspacePool       MessageType = 0x00010004
	PublicKey              MessageType = 0x00010005
	EncryptedSessionKey    MessageType = 0x00010006
	PublicKeyRequest       MessageType = 0x00010007
	ConnectRunspacePool    MessageType = 0x00010008
	RunspacePoolInitData   MessageType = 0x0002100B
	ResetRunspaceState     MessageType = 0x0002100C
	SetMaxRunspaces        MessageType = 0x00021002
	SetMinRunspaces        MessageType = 0x00021003
	RunspaceAvailability   MessageType = 0x00021004
	RunspacePoolState      MessageType = 0x00021005
	CreatePipeline         MessageType = 0x00021006
	GetAvailableRunspaces  MessageType = 0x00021007
	UserEvent              MessageType = 0x00021008
	ApplicationPrivateData MessageType = 0x00021009
	GetCommandMetadata     MessageType = 0x0002100A
	RunspacePoolHostCall   MessageType = 0x00021100
	RunspacePoolHostResp   MessageType = 0x00021101
	PipelineInput          MessageType = 0x00041002
	EndOfPipelineInput     MessageType = 0x00041003
	PipelineOutput         MessageType = 0x00041004
	ErrorRecord            MessageType = 0x00041005
	PipelineState          MessageType = 0x00041006
	DebugRecord            MessageType = 0x00041007
	VerboseRecord          MessageType = 0x00041008
	WarningRecord          MessageType = 0x00041009
	ProgressRecord         MessageType = 0x00041010
	InformationRecord      MessageType = 0x00041011
	PipelineHostCall       MessageType = 0x00041100
	PipelineHostResponse   MessageType = 0x00041101
)

// GUID is a GUID in RFC 4122 (string) byte order; the wire carries .NET
// order (the first three groups little-endian), converted by the codec.
type GUID [16]byte

// NilGUID is Guid.Empty: the pool in out-of-process packets, "no pipeline"
// in message headers.
var NilGUID GUID

// IsNil reports Guid.Empty.
func (g GUID) IsNil() bool { return g == NilGUID }

// String is the lower-case form pwsh prints (.NET Guid.ToString()).
func (g GUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], g[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], g[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], g[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], g[8:10])
	b[23] = '-'
	hex.Encode(b[24:], g[10:])
	return string(b[:])
}

// Upper is the upper-case form WinRS uses for ShellId and CommandId.
func (g GUID) Upper() string {
	s := []byte(g.String())
	for i, c := range s {
		if c >= 'a' && c <= 'f' {
			s[i] = c - 'a' + 'A'
		}
	}
	return string(s)
}

// ErrBadGUID: not the 8-4-4-4-12 hex form.
var ErrBadGUID = errors.New("psrp: malformed GUID")

// ParseGUID reads the 36-character 8-4-4-4-12 form in either case (WinRS
// sends upper case, pwsh lower case). Braces and other forms are refused.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("%w: %q", ErrBadGUID, clip(s))
	}
	// Hex pairs start at these offsets; the hyphens sit between the groups.
	j := 0
	for _, i := range [16]int{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34} {
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return GUID{}, fmt.Errorf("%w: %q", ErrBadGUID, clip(s))
		}
		g[j] = hi<<4 | lo
		j++
	}
	return g, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// clip keeps error texts about hostile input short.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// dotnet converts between RFC and .NET byte order (the swap is its own
// inverse).
func dotnet(g GUID) [16]byte {
	var b [16]byte
	b[0], b[1], b[2], b[3] = g[3], g[2], g[1], g[0]
	b[4], b[5] = g[5], g[4]
	b[6], b[7] = g[7], g[6]
	copy(b[8:], g[8:])
	return b
}

// Message is one PSRP message. Data aliases the buffer it was parsed from.
type Message struct {
	Destination Destination
	Type        MessageType
	RPID, PID   GUID
	Data        []byte
}

// AppendMessage appends m in wire form to b.
func AppendMessage(b []byte, m Message) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(m.Destination))
	b = binary.LittleEndian.AppendUint32(b, uint32(m.Type))
	r, p := dotnet(m.RPID), dotnet(m.PID)
	b = append(b, r[:]...)
	b = append(b, p[:]...)
	return append(b, m.Data...)
}

// ParseMessage decodes a reassembled message (or the first fragment's blob
// of one: the header is all in the first 40 bytes).
func ParseMessage(b []byte) (Message, error) {
	if len(b) < MessageHeaderLen {
		return Message{}, fmt.Errorf("%w: %d bytes", ErrShortMessage, len(b))
	}
	m := Message{
		Destination: Destination(binary.LittleEndian.Uint32(b[0:4])),
		Type:        MessageType(binary.LittleEndian.Uint32(b[4:8])),
		RPID:        dotnet(GUID(b[8:24])),
		PID:         dotnet(GUID(b[24:40])),
		Data:        b[MessageHeaderLen:],
	}
	if m.Destination != ToClient && m.Destination != ToServer {
		return Message{}, fmt.Errorf("%w: %d (type 0x%08x)", ErrDestination, m.Destination, uint32(m.Type))
	}
	return m, nil
}

// FirstMessageHeader reads the message header out of the first fragment of
// a buffer of fragments: what a bridge needs from a WinRS Command whose
// CommandId is missing (the pipeline id is the PID of CREATE_PIPELINE).
func FirstMessageHeader(b []byte, maxBlob int) (Message, error) {
	f, _, err := ParseFragment(b, maxBlob)
	if err != nil {
		return Message{}, err
	}
	if !f.Start {
		return Message{}, fmt.Errorf("%w: object %d fragment %d is not a start", ErrFragmentOrder, f.ObjectID, f.FragmentID)
	}
	m, err := ParseMessage(f.Blob)
	if err != nil {
		return Message{}, err
	}
	m.Data = nil
	return m, nil
}

// InvocationState is PSInvocationState (MS-PSRP 2.2.3.4).
type InvocationState int32

const (
	NotStarted   InvocationState = 0
	Running      InvocationState = 1
	Stopping     InvocationState = 2
	Stopped      InvocationState = 3
	Completed    InvocationState = 4
	Failed       InvocationState = 5
	Disconnected InvocationState = 6
)

// Terminal reports a state after which a pipeline produces nothing more.
func (s InvocationState) Terminal() bool { return s == Stopped || s == Completed || s == Failed }

// RunspacePoolStates of interest (MS-PSRP 2.2.3.4 RunspacePoolState).
const (
	PoolOpened = 2
	PoolClosed = 3
	PoolBroken = 5
)

// StateOf reads the state number of a PIPELINE_STATE (`PipelineState`) or
// RUNSPACEPOOL_STATE (`RunspaceState`) message body: the first
// `<I32 N="name">digits</I32>` element. In CLIXML text '<' is always
// escaped, so that byte sequence is markup, not a string's content; the state
// property comes before the optional error record, so a truncated body still
// carries it.
func StateOf(data []byte, name string) (int32, error) {
	key := []byte(`<I32 N="` + name + `">`)
	i := bytes.Index(data, key)
	if i < 0 {
		return 0, fmt.Errorf("%w: %s", ErrNoState, name)
	}
	rest := data[i+len(key):]
	var v int32
	n := 0
	for n < len(rest) && n < 10 && rest[n] >= '0' && rest[n] <= '9' {
		v = v*10 + int32(rest[n]-'0')
		n++
	}
	if n == 0 || n > 9 || !bytes.HasPrefix(rest[n:], []byte("</I32>")) {
		return 0, fmt.Errorf("%w: %s not a small number", ErrNoState, name)
	}
	return v, nil
}

func (s InvocationState) String() string {
	switch s {
	case NotStarted:
		return "NotStarted"
	case Running:
		return "Running"
	case Stopping:
		return "Stopping"
	case Stopped:
		return "Stopped"
	case Completed:
		return "Completed"
	case Failed:
		return "Failed"
	case Disconnected:
		return "Disconnected"
	}
	return "InvocationState(" + strconv.Itoa(int(s)) + ")"
}
