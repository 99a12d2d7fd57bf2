package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/winrmd/winrmd/session/psrp"
	"github.com/winrmd/winrmd/test/standin"
)

// The far end of the PSRP bridge: real PowerShell when `pwsh` is on PATH,
// else the stand-in (test/standin/pwsh_standin.py: psrpcore's server classes
// behind pwsh's out-of-process transport, scripts run by /bin/sh). Every
// test that uses it logs which one ran.

type farEnd struct {
	Name string
	Path string
	Args []string
	Real bool // real PowerShell: scripts are PowerShell, not sh
}

func theFarEnd(t testing.TB, w *world) farEnd {
	t.Helper()
	if p, err := exec.LookPath("pwsh"); err == nil {
		fe := farEnd{Name: "real PowerShell (" + p + ")", Path: p, Args: []string{"-NoLogo", "-NoProfile", "-s"}, Real: true}
		t.Logf("PSRP far end: %s", fe.Name)
		return fe
	}
	// The stand-in runs as the test users: under the system python3 (the
	// venv's interpreter may sit under root's pyenv), importing psrpcore
	// from the venv's site-packages.
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		py = w.python
	}
	script, site := standinCopy(t, w)
	fe := farEnd{
		Name: "pwsh STAND-IN (psrpcore + /bin/sh; pwsh not on PATH)",
		Path: py,
		Args: []string{script, "--site", site, "-NoLogo", "-NoProfile", "-s"},
	}
	t.Logf("PSRP far end: %s", fe.Name)
	return fe
}

var (
	standinOnce   sync.Once
	standinScript string
	standinSite   string
	standinErr    error
)

// standinCopy installs the stand-in once per test binary in the world's
// base directory (standin.Install: the test users may not read the
// checkout).
func standinCopy(t testing.TB, w *world) (script, site string) {
	standinOnce.Do(func() {
		standinScript, standinSite, standinErr = standin.Install(w.root, w.python, filepath.Join(w.work, "standin"))
	})
	if standinErr != nil {
		t.Fatalf("%v", standinErr)
	}
	return standinScript, standinSite
}

// psScript is one script in both far ends' languages.
type psScript struct{ sh, pwsh string }

func (fe farEnd) script(s psScript) string {
	if fe.Real {
		return s.pwsh
	}
	return s.sh
}

var (
	scriptOutErr = psScript{sh: "echo one; echo two >&2; echo three", pwsh: "'one'; Write-Error 'two'; 'three'"}
	scriptFail   = psScript{sh: "echo x; exit 3", pwsh: "'x'; throw 'boom'"}
	scriptLong   = psScript{sh: "echo x; sleep 60; echo y", pwsh: "'x'; Start-Sleep 60; 'y'"}
)

type oopResult struct {
	Output  []string `json:"output"`
	Errors  []string `json:"errors"`
	State   string   `json:"state"`
	FarExit int      `json:"far_end_exit"`
}

// runOOP drives the far end directly with the psrpcore out-of-process client
// (test/standin/oop_client.py), recording both directions' lines in dir.
func runOOP(t *testing.T, w *world, fe farEnd, script, dir string, flags ...string) oopResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{filepath.Join(w.root, "test", "standin", "oop_client.py"), script, "--record", dir}, flags...)
	args = append(append(args, "--", fe.Path), fe.Args...)
	cmd := exec.CommandContext(ctx, w.python, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if err := cmd.Run(); err != nil {
		t.Fatalf("oop_client: %v\nstdout: %s\nstderr: %s", err, out.Bytes(), errb.Bytes())
	}
	var r oopResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("oop_client output %q: %v", out.Bytes(), err)
	}
	return r
}

// readLines parses a recorded direction with winrmd's codec and returns the
// terminal PIPELINE_STATE seen per pipeline (server side) or the packets
// (client side).
func decodeRecorded(t *testing.T, path string, parse func([]byte, int) (psrp.Packet, error)) ([]psrp.Packet, map[psrp.GUID]psrp.InvocationState) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := psrp.NewLineReader(f, psrp.MaxLineFor(psrp.DefaultMaxData))
	var pkts []psrp.Packet
	states := map[psrp.GUID]psrp.InvocationState{}
	d := psrp.Defragmenter{Truncate: true}
	for {
		line, err := r.Line()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		p, err := parse(line, 0)
		if err != nil {
			t.Fatalf("%s: winrmd's codec refuses a line the far end accepted or wrote: %v", path, err)
		}
		pkts = append(pkts, p)
		if p.Kind != psrp.PacketData {
			continue
		}
		msgs, err := d.Feed(p.Data)
		if err != nil {
			t.Fatalf("%s: fragments: %v", path, err)
		}
		for _, a := range msgs {
			m, err := psrp.ParseMessage(a.Message)
			if err != nil {
				t.Fatalf("%s: message: %v", path, err)
			}
			if m.Type != psrp.PipelineState {
				continue
			}
			if m.PID != p.GUID {
				t.Errorf("%s: PIPELINE_STATE for %s carried in a packet for %s", path, m.PID, p.GUID)
			}
			v, err := psrp.StateOf(m.Data, "PipelineState")
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if s := psrp.InvocationState(v); s.Terminal() {
				states[m.PID] = s
			}
		}
	}
	return pkts, states
}

// TestPSRPFarEndOutOfProc proves the far end speaks pwsh's out-of-process
// transport to an independent client (psrpcore's), and that winrmd's codec
// reads both directions of that conversation: every line, every fragment,
// and pipeline completion from PIPELINE_STATE alone.
func TestPSRPFarEndOutOfProc(t *testing.T) {
	w := need(t)
	fe := theFarEnd(t, w)
	for _, tc := range []struct {
		name   string
		script psScript
		flags  []string
		check  func(t *testing.T, r oopResult)
		state  psrp.InvocationState
	}{
		{"output and errors", scriptOutErr, nil, func(t *testing.T, r oopResult) {
			if len(r.Output) != 2 || r.Output[0] != "one" || r.Output[1] != "three" || len(r.Errors) != 1 || r.State != "Completed" {
				t.Errorf("got %+v", r)
			}
			if !fe.Real && r.Errors[0] != "two" {
				t.Errorf("error text %q", r.Errors[0])
			}
		}, psrp.Completed},
		{"failure", scriptFail, nil, func(t *testing.T, r oopResult) {
			if len(r.Output) != 1 || r.Output[0] != "x" || r.State != "Failed" {
				t.Errorf("got %+v", r)
			}
		}, psrp.Failed},
		{"stop", scriptLong, []string{"--stop-after-first"}, func(t *testing.T, r oopResult) {
			if len(r.Output) != 1 || r.State != "Stopped" {
				t.Errorf("got %+v", r)
			}
		}, psrp.Stopped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := runOOP(t, w, fe, fe.script(tc.script), dir, tc.flags...)
			tc.check(t, r)
			if r.FarExit != 0 {
				t.Errorf("far end exited %d after Close", r.FarExit)
			}
			cpk, _ := decodeRecorded(t, filepath.Join(dir, "client.lines"), psrp.ParseClientPacket)
			spk, states := decodeRecorded(t, filepath.Join(dir, "server.lines"), psrp.ParseServerPacket)
			var pid psrp.GUID
			for _, p := range cpk {
				if p.Kind == psrp.PacketCommand {
					pid = p.GUID
				}
			}
			if pid.IsNil() {
				t.Fatal("no Command packet recorded")
			}
			if got := states[pid]; got != tc.state {
				t.Errorf("codec read terminal state %d for %s, want %d", got, pid, tc.state)
			}
			// Every client packet was acknowledged, in kind and GUID.
			var acks psrp.AckWaiter
			for _, p := range cpk {
				if err := acks.Sent(p); err != nil {
					t.Fatal(err)
				}
				for _, q := range spk {
					if q.Kind == p.Kind.Ack() && q.GUID == p.GUID {
						if err := acks.Acked(q); err != nil {
							t.Fatal(err)
						}
						break
					}
				}
			}
			if acks.Outstanding() != 0 {
				t.Errorf("%d client packets never acknowledged", acks.Outstanding())
			}
		})
	}
}
