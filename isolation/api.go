// Package isolation decides which process runs a shell: it spawns one worker
// per shell (the winrmd binary re-executed as `winrmd worker`), drops it to
// the authenticated user's credentials, places it in a per-shell cgroup, and
// speaks a small framed protocol with it over a socketpair.
//
// It takes an Account of its own (the session layer converts the
// authenticated account into one) and knows nothing of how it was
// authenticated: it imports nothing of authn (TestNoAuthnImport holds it).
// A delegated Kerberos ticket comes as its own CredentialCache, which the
// session layer converts from authn's Secret; in sidecar mode the daemon
// resolves accounts in the target's files before it asks for a shell.
//
// The files split by the process that runs them.
//
// Both sides:
//   - api.go: this contract, what the session layer programs against.
//   - proto.go: the daemon <-> worker protocol: the frames, their strict
//     bounded decoders, the spec in its header.
//   - proctree.go: the process tree: the one reader of processes from
//     /proc, and the kill strategy per shell (cgroup, else the tree below
//     the worker), chosen once when the spawner starts; its header gives
//     the reasons and the numbers.
//
// The worker (the unprivileged child: `winrmd-worker worker` where that binary,
// cmd/winrmd-worker, is installed beside the daemon, else `winrmd worker`):
//   - worker_main.go: start-up: fd 3, the Hello/Setup handshake, the
//     privilege drop's caller, warm threads, the environment.
//   - drop.go: the privilege drop, small, ordered and verified (its check
//     of a /proc status file, checkStatus, is also the daemon's check of
//     the worker after Setup).
//   - worker_loop.go: the command loop after Setup: fork commands, move
//     their output under the credit window, feed stdin, reap, and kill the
//     whole shell when the daemon goes away.
//   - fds.go: close-on-exec for whatever a process inherited (the daemon
//     calls it too, at start).
//
// The daemon (root, or the lab user):
//   - spawner.go: Spawner: the worker's birth (spawn thread, socketpair,
//     cgroup), the handshake and the verification of its credentials.
//   - pool.go: workers started before a shell asks (as root, no account),
//     each handed to one shell's Setup and never reused.
//   - handle.go: Worker: the daemon's end of the protocol, every frame
//     checked against the command's state; Close.
//   - cgroup.go, orphans.go: per-shell cgroups (v2, else v1), and at start
//     the shell groups a dead daemon left.
//   - sidecar.go: workers born inside another container's namespaces.
//   - ccache.go: delegated Kerberos credentials for a shell.
//   - pwsh.go: a pwsh process inside a worker, for the PSRP bridge.
//
// The watchdog (root, one per daemon, `winrmd watchdog`):
//   - watchdog.go: both ends: the daemon's writer of its shell cgroups,
//     and the process that kills and removes them when the daemon dies.
//
// The worker's files use nothing declared in the daemon's, and the other
// way round (TestSplitByProcess holds it): they meet in the protocol and
// the shared files. The tests' doubles and accessors live in _test.go
// files (testhooks_test.go).
//
// This file is the contract the session layer programs against.
package isolation

import (
	"context"
	"errors"
	"fmt"
)

// Account is the Unix account a worker takes the credentials of: the
// account a shell runs as, from the account database. Field for field the
// shape of authn.Account, so the session layer converts one into the other.
type Account struct {
	Username string
	UID      uint32
	GID      uint32
	Groups   []uint32 // supplementary groups
	Home     string
	Shell    string
}

// CredentialCache is a credential cache in MIT's ccache format (a
// delegated Kerberos ticket). It prints, logs and encodes as "[redacted]"
// whatever the verb or encoder, so it never reaches a log by accident; the
// bytes go only to the shell's cache file (writeCCache).
type CredentialCache []byte

func (CredentialCache) String() string               { return "[redacted]" }
func (CredentialCache) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte("[redacted]")) }
func (CredentialCache) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// ErrRootRefused: a worker would run as uid 0 and AllowRoot is off.
var ErrRootRefused = errors.New("root is refused (authorization.allow_root is false)")

// Limits are per-shell resource limits (winrs.max_*_per_shell).
type Limits struct {
	MemoryMB     int // 0 or configs.Unlimited: none
	MaxProcesses int // 0 or configs.Unlimited: none
}

// SpawnRequest describes the worker of one shell.
type SpawnRequest struct {
	Account   Account           // whose credentials the worker takes
	ShellID   string            // for the cgroup name and logs
	Env       map[string]string // extra variables (rsp:Environment), added to the account's clean environment
	Dir       string            // working directory; "" = the account's home
	NoProfile bool              // WINRS_NOPROFILE (no effect on the environment today; recorded)
	// Credentials is a credential cache (a forwarded Kerberos TGT) the
	// shell gets as KRB5CCNAME, readable only by the account, destroyed
	// with the shell (ccache.go); empty for none.
	Credentials CredentialCache
	Limits      Limits
	// AllowNewPrivileges lets the shell's commands gain privileges by
	// executing setuid or file-capability programs (sudo). False, the zero
	// value: the worker carries no_new_privs from its first instruction and,
	// for a non-root account, an empty capability bounding set. Sidecar
	// workers always carry no_new_privs.
	AllowNewPrivileges bool
}

// Spawner starts workers. The privileged implementation runs as root and
// switches to the account; the lab implementation runs every worker as the
// daemon's own user.
type Spawner interface {
	Spawn(ctx context.Context, req SpawnRequest) (Worker, error)
	// Close releases what the spawner made for itself, once every worker
	// it spawned is closed: the parents of the shells' cgroups are removed
	// when empty (another daemon's live shells keep a shared one). Spawn
	// is not called after Close.
	Close() error
}

// CommandSpec is one command inside a shell.
type CommandSpec struct {
	ID string
	// Line is run through `/bin/sh -c Line` when Argv is empty.
	Line string
	// Argv is executed directly (WINRS_SKIP_CMD_SHELL); Argv[0] is looked up in PATH.
	Argv []string
}

// Stream numbers output streams.
type Stream uint8

const (
	Stdout Stream = 1
	Stderr Stream = 2
)

// Signal is what Signal delivers to a command.
type Signal uint8

const (
	SignalInterrupt Signal = 1 // ctrl_c → SIGINT to the command's process group
	SignalQuit      Signal = 2 // ctrl_break → SIGQUIT to the process group
	SignalTerminate Signal = 3 // terminate → SIGKILL to the process group
)

// EventKind tells what an Event carries.
type EventKind uint8

const (
	EventOutput EventKind = 1 // Data on Stream for CommandID
	EventExit   EventKind = 2 // the command ended with ExitCode; all its output came before
)

// Event is something a worker reports.
type Event struct {
	Kind      EventKind
	CommandID string
	Stream    Stream
	Data      []byte
	ExitCode  int32
}

// Worker is the daemon's handle on one worker process.
//
// Flow control: a worker sends at most a command's credit of output that the
// daemon has not yet reported with Consumed: up to OutputWindow, of which
// all but the first 64 KiB comes from the spawner's OutputBudget (daemon-wide
// and per account, budget.go); when the credit is used up the worker stops
// reading that command's pipes, so the command blocks. Memory per command,
// and in all, is therefore bounded on both sides.
type Worker interface {
	// Start starts a command and returns once the worker reports it started;
	// an error wrapping ErrStartFailed means the program could not be run,
	// and one that also wraps ErrTooManyProcs that the shell's kernel
	// process limit (Limits.MaxProcesses) refused the fork.
	Start(ctx context.Context, spec CommandSpec) error
	// Stdin queues data for the command's stdin; eof closes it after the data.
	// It returns once the data is written to the worker (the caller may reuse
	// it); the command's next Stdin first waits until the worker accepted the
	// last frame, so each command has at most one frame (1 MiB) in flight.
	Stdin(ctx context.Context, commandID string, data []byte, eof bool) error
	// Signal delivers a signal to the command's process group.
	Signal(commandID string, sig Signal) error
	// Consumed returns n bytes of output window for the command.
	Consumed(commandID string, n int) error
	// Release forgets a finished or terminated command (kills it if running).
	Release(commandID string) error
	// Events delivers output and exits in order per command; it is closed
	// when the worker is gone (Err then says why, nil after Close).
	Events() <-chan Event
	// SetEventSink, called before the first Start, makes every event
	// (output and exits) go to sink instead of Events, which then only
	// closes when the worker is gone.
	SetEventSink(sink EventSink)
	// Err reports why the worker ended, once Events is closed.
	Err() error
	// Close kills every process of the shell (the whole cgroup where there is
	// one), reaps the worker and frees its resources. Idempotent.
	Close() error
	// Pid of the worker process.
	Pid() int
}

// EventSink takes the worker's events (Worker.SetEventSink) on the goroutine
// that reads the worker's socket, once each frame has passed the protocol's
// checks, in the order the worker sent them: all of a command's output
// comes before its EventExit, and every event before Events closes. An
// Output's Data is lent for the call: it is the reader's frame buffer,
// which the next frame overwrites, so a sink that keeps the bytes copies
// them (one copy per chunk instead of two). The sink must not wait for the
// worker (its next frame is read only when the sink returns); it may call
// the Worker's other methods. It spares each output chunk and each exit
// two goroutine hand-offs (the event queue and the Events channel) on the
// paths that stream a command's output and report its end.
type EventSink func(ev Event)

// OutputWindow is the per-command unacknowledged output budget, in bytes.
const OutputWindow = 1 << 20

// Errors.
var (
	ErrStartFailed  = errors.New("command could not be started")
	ErrWorkerGone   = errors.New("worker process is gone")
	ErrUnknown      = errors.New("unknown command")
	ErrTooManyProcs = errors.New("the shell's process limit is reached")
	// ErrProtocol marks a worker that broke the protocol: it was treated as
	// hostile and killed (Err wraps it together with ErrWorkerGone).
	ErrProtocol = errors.New("worker protocol violation")
	// ErrWorkingDir: Spawn could not enter SpawnRequest.Dir as the user.
	ErrWorkingDir = errors.New("working directory not usable")
)
