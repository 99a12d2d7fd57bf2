package session

import (
	"context"
	"strings"
	"testing"

	"github.com/winrmd/winrmd/session/wsman"
)

// The shell's transition function accepts exactly the package doc's arrows.
func TestShellTransitions(t *testing.T) {
	allowed := map[[2]shellState]bool{
		{shellSpawning, shellOpen}: true, {shellSpawning, shellClosed}: true,
		{shellOpen, shellBroken}: true, {shellOpen, shellClosed}: true,
		{shellBroken, shellClosed}: true,
	}
	for from := shellSpawning; from <= shellClosed; from++ {
		for to := shellSpawning; to <= shellClosed; to++ {
			sh := &Shell{state: from}
			ok := sh.to(to)
			if ok != allowed[[2]shellState{from, to}] {
				t.Errorf("%s -> %s: accepted %v", from, to, ok)
			}
			if want := map[bool]shellState{true: to, false: from}[ok]; sh.state != want {
				t.Errorf("%s -> %s: state %s after, want %s", from, to, sh.state, want)
			}
		}
	}
}

// The command's transition function accepts exactly the package doc's
// arrows (finished -> finished: a repeated Receive delivers Done again).
func TestCommandTransitions(t *testing.T) {
	allowed := map[[2]cmdState]bool{
		{cmdRunning, cmdExited}: true, {cmdRunning, cmdFailed}: true, {cmdRunning, cmdTerminated}: true,
		{cmdExited, cmdFinished}: true, {cmdFailed, cmdFinished}: true, {cmdFinished, cmdFinished}: true,
	}
	for from := cmdRunning; from <= cmdTerminated; from++ {
		for to := cmdRunning; to <= cmdTerminated; to++ {
			c := &Command{state: from}
			ok := c.to(to)
			if ok != allowed[[2]cmdState{from, to}] {
				t.Errorf("%s -> %s: accepted %v", from, to, ok)
			}
			if want := map[bool]cmdState{true: to, false: from}[ok]; c.state != want {
				t.Errorf("%s -> %s: state %s after, want %s", from, to, c.state, want)
			}
		}
	}
}

// A command that exits stays exited when the worker then goes; a
// terminated one ignores a late exit.
func TestCommandEvents(t *testing.T) {
	c := newCommand("C", nil, "x")
	c.exit(3)
	c.fail(context.Canceled)
	if c.state != cmdExited || c.exitCode != 3 || c.err != nil {
		t.Fatalf("exit then worker gone: state %s code %d err %v", c.state, c.exitCode, c.err)
	}
	c = newCommand("C", nil, "x")
	c.mu.Lock()
	c.to(cmdTerminated)
	c.mu.Unlock()
	c.exit(0)
	if c.state != cmdTerminated {
		t.Fatalf("a late exit moved a terminated command to %s", c.state)
	}
}

// The session layer is driven with typed messages, no XML: an operation
// whose body is missing names the element it needed.
func TestTypedMessageWithoutBody(t *testing.T) {
	h := newHarness(t, nil)
	for _, a := range []string{wsman.ActionCommand, wsman.ActionSend, wsman.ActionReceive, wsman.ActionSignal} {
		msg := &wsman.Message{Header: wsman.Header{Action: a, MessageID: "uuid:1", ResourceURI: wsman.ResourceCmdShell}}
		_, err := h.m.Handle(context.Background(), &Request{Msg: msg, Identity: h.id, RemoteAddr: "127.0.0.1"})
		f, ok := err.(*wsman.Fault)
		if !ok || f.Code != wsman.CodeInvalidSelectors {
			t.Errorf("%s without a ShellId: %v, want InvalidSelectors", a, err)
		}
	}
	msg := &wsman.Message{Header: wsman.Header{Action: wsman.ActionCreate, MessageID: "uuid:2", ResourceURI: wsman.ResourceCmdShell}}
	_, err := h.m.Handle(context.Background(), &Request{Msg: msg, Identity: h.id, RemoteAddr: "127.0.0.1"})
	if f, ok := err.(*wsman.Fault); !ok || !strings.Contains(f.Reason+f.Message, "rsp:Shell") {
		t.Errorf("Create without a body: %v, want a schema fault naming rsp:Shell", err)
	}
}
