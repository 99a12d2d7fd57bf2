package isolation

// The daemon <-> worker protocol.
//
// One SOCK_STREAM socketpair per worker; the worker's end is its fd 3.
// Every message is one frame:
//
//	 0               4       5
//	+---------------+-------+------------------------------+
//	| length u32 BE | type  | payload (length-1 bytes)     |
//	+---------------+-------+------------------------------+
//	length counts the type byte and the payload: 1 <= length <= 1 + maxPayload
//
// Payload fields, in order, are fixed-width big-endian integers and
//
//	str / bytes:  | n u32 BE | n bytes |   with a per-field cap (and no NUL
//	                                       bytes where the field reaches a
//	                                       syscall: paths, argv, environment)
//
// A payload must be consumed exactly: trailing bytes are an error.
//
// Conversation (D = daemon, W = worker), with the phase each end enforces:
//
//	W->D Hello{version, pid}                      first frame, exactly once
//	D->W Setup{uid, gid, groups, user, home, ...} first frame, exactly once;
//	                                              sent after the daemon put
//	                                              the worker in its cgroup;
//	                                              within setupWait of Hello
//	                                              (a pooled worker waits)
//	W->D SetupOK | SetupErr{code, msg}            after the privilege drop
//	-- running --
//	D->W Start{cmd, line | argv, window}  W->D Started{cmd, pid} | StartErr{cmd, msg}
//	D->W Stdin{cmd, eof, data}        W->D StdinAck{cmd, dropped}  (one in flight per command)
//	D->W Signal{cmd, sig}
//	W->D Output{cmd, stream, data}    never more than the credit: Start's window
//	                                  plus every Credit, less what was sent; the
//	                                  total never exceeds OutputWindow
//	D->W Credit{cmd, n}               returns window, or grants more (OutputBudget)
//	W->D Exit{cmd, code}              after both pipes hit EOF and the process was reaped
//	D->W Release{cmd}                 W->D Released{cmd}  (nothing more about cmd after it)
//	W->D Fatal{msg}                   the worker gives up (then exits)
//
// The worker is user-owned and therefore hostile to the daemon: the daemon
// decodes strictly and treats any violation as an attack (kill the worker).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// setupWait is how long a worker waits for Setup after its Hello: a pooled
// worker (pool.go) waits for a shell up to half of it, then is retired; the
// bound holds if the daemon stops calling without dying (its death ends the
// worker by the parent-death signal).
const setupWait = 10 * time.Minute

// protoVersion is sent in Hello; the daemon refuses any other.
const protoVersion = 2 // 2: Start carries the command's initial output credit

// Frame types. Daemon -> worker are 0x01..; worker -> daemon are 0x81...
const (
	tSetup   byte = 0x01
	tStart   byte = 0x02
	tStdin   byte = 0x03
	tSignal  byte = 0x04
	tCredit  byte = 0x05
	tRelease byte = 0x06

	tHello    byte = 0x81
	tSetupOK  byte = 0x82
	tSetupErr byte = 0x83
	tStarted  byte = 0x84
	tStartErr byte = 0x85
	tStdinAck byte = 0x86
	tOutput   byte = 0x87
	tExit     byte = 0x88
	tReleased byte = 0x89
	tFatal    byte = 0x8f
)

// The buffers of a frame reader. The worker reads with frameReadLarge (a
// 1 MiB Stdin frame comes in a few reads; an idle worker never touches most
// of it). The daemon keeps a reader for every shell's whole life, so it
// starts with frameReadSmall and moves to frameReadLarge at the shell's
// first frame longer than that (its output streams): at 128 KiB from the
// start, with the 64 KiB payload buffer every shell's first frame made, 50
// idle shells held 9.6 MB of its heap.
const (
	frameReadSmall = 8 << 10
	frameReadLarge = 128 << 10
	// smallFrameCap is the payload buffer the daemon's reader starts with;
	// readFrame replaces it at the first longer frame with one that holds
	// a whole Output chunk, kept for the next.
	smallFrameCap = 4 << 10
)

// Limits of the encoding.
const (
	frameHeader   = 5                      // length + type
	maxStdinChunk = 1 << 20                // data of one Stdin frame
	stdinSockBuf  = maxStdinChunk + 64<<10 // the daemon's send buffer (spawner.go)
	maxOutChunk   = 64 << 10               // data of one Output frame
	maxPayload    = 1<<20 + 64<<10         // 1 MiB of data plus room for the other fields
	maxIDLen      = 256                    // command ids
	maxNameLen    = 256                    // user names
	maxPathLen    = 4096                   // home, shell, working directory
	maxLineLen    = 1 << 20                // a command line (session allows 1 MiB)
	maxArgs       = 4096                   // argv entries
	maxArgLen     = 1 << 20                // one argv entry (the frame bounds the total)
	maxEnvVars    = 1024                   // environment entries
	maxEnvKeyLen  = 1024                   // environment name
	maxEnvValLen  = 128 << 10              // environment value
	maxGroups     = 65536                  // NGROUPS_MAX
	maxMsgLen     = 4096                   // error texts
	stdinQueueCap = 8 << 20                // per-command stdin bytes queued in the worker
	maxCreditUnit = OutputWindow           // one Credit never returns more than the window
	maxMemoryMB   = 1 << 40 / 1 << 20      // 1 TiB, sanity cap for Setup
)

// Setup flags.
const (
	setupLab        = 1 << 0 // do not change credentials, verify they already match
	setupAllowRoot  = 1 << 1 // uid 0 is acceptable
	setupNprocLimit = 1 << 2 // no pids cgroup: apply RLIMIT_NPROC as a last resort
	// setupNewPrivs: commands may gain privileges by exec (sudo). Without
	// it the worker sets no_new_privs and, dropping a non-root account,
	// empties its capability bounding set first.
	setupNewPrivs  = 1 << 3
	setupFlagsMask = setupLab | setupAllowRoot | setupNprocLimit | setupNewPrivs
)

// SetupErr codes.
const (
	setupErrOther  = 0
	setupErrDir    = 1 // the working directory could not be entered
	setupErrDenied = 2 // the worker refused the credentials
	setupErrMax    = 2
)

// Errors of the codec.
var (
	errFrameTooLarge = errors.New("frame too large")
	errFrameEmpty    = errors.New("empty frame")
	errShort         = errors.New("truncated payload")
	errTrailing      = errors.New("trailing bytes in payload")
	errUnknownType   = errors.New("unknown frame type")
	errFieldTooLong  = errors.New("field exceeds its cap")
	errNUL           = errors.New("NUL byte in a string field")
	errBadValue      = errors.New("field value out of range")
)

// msg is one decoded frame.
type msg interface {
	frameType() byte
	encode(e *encoder)
}

// --- daemon -> worker ---

type envVar struct{ Key, Value string }

type msgSetup struct {
	UID, GID   uint32
	Groups     []uint32
	User       string
	Home       string
	Shell      string
	Dir        string
	Env        []envVar // the complete environment of the worker and its commands
	MemoryMB   uint64   // informational (the cgroup carries it); 0 = none
	MaxProcs   uint32   // for the RLIMIT_NPROC fallback; 0 = none
	Flags      uint8
	ParentPid  uint32 // the daemon's pid: the worker exits if its parent changes
	ShellIDLog string // for the worker's own diagnostics
}

type msgStart struct {
	ID   string
	Line string
	Argv []string // non-empty: exec directly; empty: /bin/sh -c Line
	// Window is the output credit the command starts with (0..OutputWindow:
	// the daemon's OutputBudget decides); Credit adds to it.
	Window uint32
}

type msgStdin struct {
	ID   string
	EOF  bool
	Data []byte
}

type msgSignal struct {
	ID  string
	Sig Signal
}

type msgCredit struct {
	ID string
	N  uint32
}

type msgRelease struct{ ID string }

// --- worker -> daemon ---

type msgHello struct {
	Version uint16
	Pid     uint32
}

type msgSetupOK struct{}

type msgSetupErr struct {
	Code uint8
	Msg  string
}

type msgStarted struct {
	ID  string
	Pid uint32
}

type msgStartErr struct {
	ID  string
	Msg string
}

type msgStdinAck struct {
	ID      string
	Dropped bool // the command had exited or closed its stdin; data discarded
}

type msgOutput struct {
	ID     string
	Stream Stream
	Data   []byte
}

type msgExit struct {
	ID   string
	Code int32
}

type msgReleased struct{ ID string }

type msgFatal struct{ Msg string }

func (msgSetup) frameType() byte    { return tSetup }
func (msgStart) frameType() byte    { return tStart }
func (msgStdin) frameType() byte    { return tStdin }
func (msgSignal) frameType() byte   { return tSignal }
func (msgCredit) frameType() byte   { return tCredit }
func (msgRelease) frameType() byte  { return tRelease }
func (msgHello) frameType() byte    { return tHello }
func (msgSetupOK) frameType() byte  { return tSetupOK }
func (msgSetupErr) frameType() byte { return tSetupErr }
func (msgStarted) frameType() byte  { return tStarted }
func (msgStartErr) frameType() byte { return tStartErr }
func (msgStdinAck) frameType() byte { return tStdinAck }
func (msgOutput) frameType() byte   { return tOutput }
func (msgExit) frameType() byte     { return tExit }
func (msgReleased) frameType() byte { return tReleased }
func (msgFatal) frameType() byte    { return tFatal }

// --- encoding ---

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) str(s string) { e.u32(uint32(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(p []byte) {
	e.u32(uint32(len(p)))
	e.b = append(e.b, p...)
}
func (e *encoder) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

func (m msgSetup) encode(e *encoder) {
	e.u32(m.UID)
	e.u32(m.GID)
	e.u32(uint32(len(m.Groups)))
	for _, g := range m.Groups {
		e.u32(g)
	}
	e.str(m.User)
	e.str(m.Home)
	e.str(m.Shell)
	e.str(m.Dir)
	e.u32(uint32(len(m.Env)))
	for _, kv := range m.Env {
		e.str(kv.Key)
		e.str(kv.Value)
	}
	e.u64(m.MemoryMB)
	e.u32(m.MaxProcs)
	e.u8(m.Flags)
	e.u32(m.ParentPid)
	e.str(m.ShellIDLog)
}

func (m msgStart) encode(e *encoder) {
	e.str(m.ID)
	e.str(m.Line)
	e.u32(uint32(len(m.Argv)))
	for _, a := range m.Argv {
		e.str(a)
	}
	e.u32(m.Window)
}

func (m msgStdin) encode(e *encoder) {
	e.str(m.ID)
	e.bool(m.EOF)
	e.bytes(m.Data)
}

func (m msgSignal) encode(e *encoder)   { e.str(m.ID); e.u8(uint8(m.Sig)) }
func (m msgCredit) encode(e *encoder)   { e.str(m.ID); e.u32(m.N) }
func (m msgRelease) encode(e *encoder)  { e.str(m.ID) }
func (m msgHello) encode(e *encoder)    { e.u16(m.Version); e.u32(m.Pid) }
func (msgSetupOK) encode(*encoder)      {}
func (m msgSetupErr) encode(e *encoder) { e.u8(m.Code); e.str(m.Msg) }
func (m msgStarted) encode(e *encoder)  { e.str(m.ID); e.u32(m.Pid) }
func (m msgStartErr) encode(e *encoder) { e.str(m.ID); e.str(m.Msg) }
func (m msgStdinAck) encode(e *encoder) { e.str(m.ID); e.bool(m.Dropped) }
func (m msgOutput) encode(e *encoder) {
	e.str(m.ID)
	e.u8(uint8(m.Stream))
	e.bytes(m.Data)
}
func (m msgExit) encode(e *encoder)     { e.str(m.ID); e.u32(uint32(m.Code)) }
func (m msgReleased) encode(e *encoder) { e.str(m.ID) }
func (m msgFatal) encode(e *encoder)    { e.str(m.Msg) }

// appendFrame appends m as one frame to b. It refuses a message whose payload
// would exceed maxPayload, so a sender can never produce a frame the other
// end must reject.
func appendFrame(b []byte, m msg) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0, m.frameType())
	e := encoder{b: b}
	m.encode(&e)
	n := len(e.b) - start - 4
	if n-1 > maxPayload {
		return b[:start], errFrameTooLarge
	}
	binary.BigEndian.PutUint32(e.b[start:], uint32(n))
	return e.b, nil
}

// appendStdinHead appends the frame of msgStdin{ID: id, EOF: eof, Data: d}
// for an n-byte d, up to but without d: that frame is the head followed by
// d, written with writev (workerHandle.sendStdin). It refuses what
// appendFrame refuses.
func appendStdinHead(b []byte, id string, eof bool, n int) ([]byte, error) {
	start := len(b)
	e := encoder{b: append(b, 0, 0, 0, 0, tStdin)}
	e.str(id)
	e.bool(eof)
	e.u32(uint32(n))
	size := len(e.b) - start - 4 + n
	if n < 0 || size-1 > maxPayload {
		return b[:start], errFrameTooLarge
	}
	binary.BigEndian.PutUint32(e.b[start:], uint32(size))
	return e.b, nil
}

// readFrame reads one frame. buf is reused when it is large enough; the
// returned payload aliases it and is valid until the next call.
func readFrame(r io.Reader, buf []byte) (typ byte, payload []byte, nbuf []byte, err error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n == 0 {
		return 0, nil, buf, errFrameEmpty
	}
	if n-1 > maxPayload {
		return 0, nil, buf, fmt.Errorf("%w: %d bytes", errFrameTooLarge, n)
	}
	if cap(buf) < int(n-1) {
		buf = make([]byte, n-1, max(int(n-1), 64<<10+512))
	}
	payload = buf[:n-1]
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, buf, err
	}
	return hdr[4], payload, buf, nil
}

// --- decoding ---

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.fail(errShort)
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *decoder) u16() uint16 {
	p := d.take(2)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (d *decoder) u32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (d *decoder) u64() uint64 {
	p := d.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (d *decoder) bool() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail(errBadValue)
		return false
	}
}

// count reads a u32 element count bounded by limit and by what is left (each
// element takes at least min bytes), so a hostile count cannot make us
// allocate.
func (d *decoder) count(limit, min int) int {
	n := d.u32()
	if d.err != nil {
		return 0
	}
	if uint64(n) > uint64(limit) {
		d.fail(errFieldTooLong)
		return 0
	}
	if uint64(n)*uint64(min) > uint64(len(d.b)) {
		d.fail(errShort)
		return 0
	}
	return int(n)
}

func (d *decoder) raw(limit int) []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(limit) {
		d.fail(errFieldTooLong)
		return nil
	}
	return d.take(int(n))
}

// str reads a string of at most limit bytes; cstr also refuses NUL bytes.
func (d *decoder) str(limit int) string { return string(d.raw(limit)) }

func (d *decoder) cstr(limit int) string {
	p := d.raw(limit)
	if bytes.IndexByte(p, 0) >= 0 {
		d.fail(errNUL)
		return ""
	}
	return string(p)
}

// id reads a command id: 1..maxIDLen bytes, no NUL.
func (d *decoder) id() string {
	s := d.cstr(maxIDLen)
	if d.err == nil && s == "" {
		d.fail(errBadValue)
	}
	return s
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errTrailing
	}
	return d.err
}

// decodeDaemonToWorker decodes a frame the worker received. A Stdin's Data
// is a slice of p, not a copy.
func decodeDaemonToWorker(typ byte, p []byte) (msg, error) {
	d := &decoder{b: p}
	var m msg
	switch typ {
	case tSetup:
		s := msgSetup{UID: d.u32(), GID: d.u32()}
		if n := d.count(maxGroups, 4); n > 0 {
			s.Groups = make([]uint32, n)
			for i := range s.Groups {
				s.Groups[i] = d.u32()
			}
		}
		s.User = d.cstr(maxNameLen)
		s.Home = d.cstr(maxPathLen)
		s.Shell = d.cstr(maxPathLen)
		s.Dir = d.cstr(maxPathLen)
		if n := d.count(maxEnvVars, 8); n > 0 {
			s.Env = make([]envVar, n)
			for i := range s.Env {
				s.Env[i].Key = d.cstr(maxEnvKeyLen)
				s.Env[i].Value = d.cstr(maxEnvValLen)
				if d.err == nil && !validEnvKey(s.Env[i].Key) {
					d.fail(errBadValue)
				}
			}
		}
		s.MemoryMB = d.u64()
		s.MaxProcs = d.u32()
		s.Flags = d.u8()
		s.ParentPid = d.u32()
		s.ShellIDLog = d.cstr(maxIDLen)
		if d.err == nil && (s.Flags&^setupFlagsMask != 0 || s.MemoryMB > maxMemoryMB) {
			d.fail(errBadValue)
		}
		m = s
	case tStart:
		s := msgStart{ID: d.id(), Line: d.cstr(maxLineLen)}
		if n := d.count(maxArgs, 4); n > 0 {
			s.Argv = make([]string, n)
			for i := range s.Argv {
				s.Argv[i] = d.cstr(maxArgLen)
			}
			if d.err == nil && s.Argv[0] == "" {
				d.fail(errBadValue)
			}
		}
		if s.Window = d.u32(); d.err == nil && s.Window > OutputWindow {
			d.fail(errBadValue)
		}
		m = s
	case tStdin:
		// Data is in p: the worker's serve loop gives the command the
		// frame's buffer with it (stdinChunk).
		s := msgStdin{ID: d.id(), EOF: d.bool()}
		if data := d.raw(maxStdinChunk); len(data) > 0 {
			s.Data = data
		}
		m = s
	case tSignal:
		s := msgSignal{ID: d.id(), Sig: Signal(d.u8())}
		if d.err == nil && (s.Sig < SignalInterrupt || s.Sig > SignalTerminate) {
			d.fail(errBadValue)
		}
		m = s
	case tCredit:
		s := msgCredit{ID: d.id(), N: d.u32()}
		if d.err == nil && (s.N == 0 || s.N > maxCreditUnit) {
			d.fail(errBadValue)
		}
		m = s
	case tRelease:
		m = msgRelease{ID: d.id()}
	default:
		return nil, fmt.Errorf("%w 0x%02x", errUnknownType, typ)
	}
	if err := d.done(); err != nil {
		return nil, fmt.Errorf("frame 0x%02x: %w", typ, err)
	}
	return m, nil
}

// decodeWorkerToDaemon decodes a frame the daemon received. Every field is
// bounded: the sender is a process the user owns.
func decodeWorkerToDaemon(typ byte, p []byte) (msg, error) {
	d := &decoder{b: p}
	var m msg
	switch typ {
	case tHello:
		m = msgHello{Version: d.u16(), Pid: d.u32()}
	case tSetupOK:
		m = msgSetupOK{}
	case tSetupErr:
		s := msgSetupErr{Code: d.u8(), Msg: d.str(maxMsgLen)}
		if d.err == nil && s.Code > setupErrMax {
			d.fail(errBadValue)
		}
		m = s
	case tStarted:
		s := msgStarted{ID: d.id(), Pid: d.u32()}
		if d.err == nil && (s.Pid <= 1 || s.Pid > 1<<22) {
			d.fail(errBadValue)
		}
		m = s
	case tStartErr:
		m = msgStartErr{ID: d.id(), Msg: d.str(maxMsgLen)}
	case tStdinAck:
		m = msgStdinAck{ID: d.id(), Dropped: d.bool()}
	case tOutput:
		s := msgOutput{ID: d.id(), Stream: Stream(d.u8())}
		data := d.raw(maxOutChunk)
		if d.err == nil && ((s.Stream != Stdout && s.Stream != Stderr) || len(data) == 0) {
			d.fail(errBadValue)
		}
		// Data aliases the frame buffer, which the reader reuses for its
		// next frame: whatever keeps it past the frame copies it (the
		// event queue does; a sink copies into the command's buffer).
		s.Data = data
		m = s
	case tExit:
		m = msgExit{ID: d.id(), Code: int32(d.u32())}
	case tReleased:
		m = msgReleased{ID: d.id()}
	case tFatal:
		m = msgFatal{Msg: d.str(maxMsgLen)}
	default:
		return nil, fmt.Errorf("%w 0x%02x", errUnknownType, typ)
	}
	if err := d.done(); err != nil {
		return nil, fmt.Errorf("frame 0x%02x: %w", typ, err)
	}
	return m, nil
}

// validEnvKey: non-empty, no '=' and no NUL (NUL is checked by cstr).
func validEnvKey(k string) bool {
	return k != "" && !bytes.ContainsRune([]byte(k), '=')
}

// truncate cuts s to n bytes: a text bounded to its field's limit before
// it is encoded (maxMsgLen, maxIDLen).
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
