package spnego_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"github.com/winrmd/winrmd/authn"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn/sealing"
	"github.com/winrmd/winrmd/authn/spnego"
)

// python returns an interpreter that can import pyspnego and pypsrp:
// $WINRMD_PYTHON, the repository's .venv, or python3.
func python(t *testing.T) string {
	t.Helper()
	var cands []string
	if p := os.Getenv("WINRMD_PYTHON"); p != "" {
		cands = append(cands, p)
	}
	if dir, err := os.Getwd(); err == nil {
		for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				cands = append(cands, filepath.Join(d, ".venv", "bin", "python"))
				break
			}
		}
	}
	cands = append(cands, "python3")
	for _, p := range cands {
		if exec.Command(p, "-c", "import spnego, pypsrp.encryption").Run() == nil {
			return p
		}
	}
	t.Skip("no python with pyspnego and pypsrp (python3 -c 'import spnego' fails); set WINRMD_PYTHON or create .venv")
	return ""
}

// TestPySPNEGO runs pyspnego as the client (raw NTLM and SPNEGO) and
// pypsrp's WinRMEncryption for the multipart framing, in both directions.
func TestPySPNEGO(t *testing.T) {
	py := python(t)
	for _, proto := range []string{"negotiate", "ntlm"} {
		t.Run(proto, func(t *testing.T) {
			cmd := exec.Command(py, "testdata/pyspnego_client.py", proto, "alice", "Secr3t!pass", "0", "18", "4096", "70000")
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				stdin.Close()
				cmd.Wait()
				if t.Failed() {
					t.Logf("python stderr:\n%s", stderr.String())
				}
			}()
			timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
			defer timer.Stop()
			r := bufio.NewReaderSize(stdout, 1<<20)
			recv := func() []string {
				l, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("reading from python: %v", err)
				}
				return strings.Fields(l)
			}
			send := func(words ...string) { io.WriteString(stdin, strings.Join(words, " ")+"\n") }
			dec := func(s string) []byte {
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}

			a := spnego.NewAcceptor(spnego.Config{NTLM: ntlmFactory})
			for legs := 0; ; legs++ {
				w := recv()
				if w[0] != "TOKEN" || legs > 4 {
					t.Fatalf("python: %v", w)
				}
				in := dec(w[1])
				out, done, err := a.Step(context.Background(), authn.ConnInfo{}, in)
				if err != nil {
					t.Fatalf("leg %d: %v", legs, err)
				}
				enc := "-"
				if out != nil {
					enc = base64.StdEncoding.EncodeToString(out)
				}
				if done {
					send("FINAL", enc)
					break
				}
				send("TOKEN", enc)
			}
			if got, want := a.(*spnego.Acceptor).SPNEGO(), proto == "negotiate"; got != want {
				t.Fatalf("SPNEGO framing detected = %v", got)
			}
			if p := a.Principal(); p.Name != "alice" {
				t.Fatalf("principal %+v", p)
			}
			for {
				w := recv()
				switch w[0] {
				case "DONE":
					return
				case "SEALED":
				default:
					t.Fatalf("python: %v", w)
				}
				plain, protocol, err := sealing.Decode(string(dec(w[1])), dec(w[2]), 1<<20, a.Sealer())
				if err != nil {
					t.Fatalf("decode pypsrp body: %v", err)
				}
				if protocol != sealing.ProtocolSPNEGO || !strings.HasPrefix("<s:Envelope>", string(plain[:min(len(plain), 12)])) {
					t.Fatalf("plain %q protocol %q", plain[:min(len(plain), 40)], protocol)
				}
				body, ct, err := sealing.Encode(protocol, append([]byte("reply:"), plain...), a.Sealer())
				if err != nil {
					t.Fatal(err)
				}
				send("REPLY", base64.StdEncoding.EncodeToString([]byte(ct)), base64.StdEncoding.EncodeToString(body))
			}
		})
	}
}
