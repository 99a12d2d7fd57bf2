package session

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/winrmd/winrmd/session/wsman"
)

// TestSpeculativeReceiveInterleaved streams 4 MB through Receives whose
// envelope size and stream set change from one to the next, with Sends to
// and a Signal of a second command and a third command's whole run in
// between: the response prepared after each Receive is used only when it
// is the one that Receive would render, so every byte arrives once, in
// order (the command's own sha256 says so), and the other commands are
// untouched.
func TestSpeculativeReceiveInterleaved(t *testing.T) {
	h := newHarness(t, nil)
	sh := h.createShell(nil)
	big := h.run(sh, "head", "-c 4000000 /dev/urandom | tee /tmp/.winrmd-prep-test-$$ | cat; sha256sum /tmp/.winrmd-prep-test-$$ >&2; rm -f /tmp/.winrmd-prep-test-$$")
	echo := h.run(sh, "cat")
	var out, errOut, echoed []byte
	var sent strings.Builder
	receive := func(cmd, streams string, maxEnv int) (done bool) {
		t.Helper()
		doc, err := h.do(req{action: wsman.ActionReceive, shellID: sh, maxEnv: maxEnv, body: &wsman.Receive{CommandID: cmd, Streams: strings.Fields(streams)}})
		if err != nil {
			if f, ok := err.(*wsman.Fault); ok && f.Code == wsman.CodeTimedOut {
				return false
			}
			t.Fatalf("receive: %v", err)
		}
		raw, _ := doc.WriteToBytes()
		if len(raw) > maxEnv {
			t.Fatalf("response of %d bytes exceeds the client's MaxEnvelopeSize %d", len(raw), maxEnv)
		}
		if rel := doc.FindElement("//Header/RelatesTo"); rel == nil || !strings.HasPrefix(rel.Text(), "uuid:") {
			t.Fatal("response without the request's RelatesTo")
		}
		for _, s := range doc.FindElements("//ReceiveResponse/Stream") {
			data, err := base64.StdEncoding.DecodeString(s.Text())
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case s.SelectAttrValue("CommandId", "") == echo:
				echoed = append(echoed, data...)
			case s.SelectAttrValue("Name", "") == "stderr":
				errOut = append(errOut, data...)
			default:
				out = append(out, data...)
			}
		}
		st := doc.FindElement("//CommandState")
		return st != nil && strings.HasSuffix(st.SelectAttrValue("State", ""), "/Done")
	}
	sizes := []int{153600, 153600, 51200, 153600, 512000, 512000, 8192, 512000}
	for i := 0; ; i++ {
		if i > 20000 {
			t.Fatal("the command never finished")
		}
		streams := "stdout stderr"
		if i%5 == 3 {
			streams = "stdout"
		}
		if receive(big, streams, sizes[i%len(sizes)]) {
			break
		}
		switch i % 7 {
		case 2:
			line := fmt.Sprintf("line %d\n", i)
			sent.WriteString(line)
			h.must(req{action: wsman.ActionSend, shellID: sh, body: &wsman.Send{Streams: []wsman.StreamData{{Name: "stdin", CommandID: echo, Data: []byte(line)}}}})
		case 4:
			receive(echo, "stdout", 153600)
		case 6:
			if i < 30 {
				third := h.run(sh, "echo", "third")
				if r := h.collect(sh, third, 0); string(r.stdout) != "third\n" || r.code != "0" {
					t.Fatalf("third command: %q, exit %s", r.stdout, r.code)
				}
			}
			if i == 13 {
				sleeper := h.run(sh, "exec sleep 100")
				h.must(req{action: wsman.ActionSignal, shellID: sh, body: &wsman.Signal{CommandID: sleeper, Code: wsman.SignalCtrlC}})
				if r := h.collect(sh, sleeper, 0); r.code != "130" {
					t.Fatalf("ctrl_c: exit code %s, want 130", r.code)
				}
			}
		}
	}
	if len(out) != 4000000 {
		t.Fatalf("got %d bytes of 4000000", len(out))
	}
	if sum := fmt.Sprintf("%x", sha256.Sum256(out)); !strings.HasPrefix(string(errOut), sum) {
		t.Fatalf("sha256 mismatch: got %s, the command saw %s", sum, errOut)
	}
	h.must(req{action: wsman.ActionSend, shellID: sh, body: &wsman.Send{Streams: []wsman.StreamData{{Name: "stdin", CommandID: echo, End: true}}}})
	for i := 0; !receive(echo, "stdout stderr", 153600); i++ {
		if i > 1000 {
			t.Fatal("the second command never finished")
		}
	}
	if string(echoed) != sent.String() || sent.Len() == 0 {
		t.Fatalf("the second command's stdin came back as %q, sent %q", echoed, sent.String())
	}
}
