package kerberos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/credentials"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/kerberos/krbtest"
	"github.com/winrmd/winrmd/authn/spnego"
)

// python returns an interpreter with pyspnego and the gssapi bindings:
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
		if exec.Command(p, "-c", "import spnego, gssapi").Run() == nil {
			return p
		}
	}
	t.Skip("no python with pyspnego[kerberos] (import spnego, gssapi fails); set WINRMD_PYTHON or run `make venv`")
	return ""
}

// realm: the package KDC plus a forwardable TGT for alice in a ccache.
type realm struct {
	kdc    *krbtest.KDC
	keytab string
	ccache string
}

var (
	ccOnce sync.Once
	ccErr  error
)

func needRealm(t *testing.T) *realm {
	t.Helper()
	e := needKDC(t)
	r := &realm{kdc: e.kdc, keytab: e.keytab, ccache: filepath.Join(e.kdc.Dir, "alice.cc")}
	ccOnce.Do(func() { ccErr = e.kdc.Kinit("alice", alicePW, r.ccache, "-f") })
	if ccErr != nil {
		t.Fatal(ccErr)
	}
	return r
}

// TestPySPNEGOKerberos: pyspnego (MIT GSSAPI underneath) as the initiator,
// raw krb5 and SPNEGO, with delegation: our AP-REP completes its context,
// its wrap_winrm tokens unseal here and ours unwrap there, and the
// forwarded TGT becomes a ccache that klist reads.
func TestPySPNEGOKerberos(t *testing.T) {
	py := python(t)
	r := needRealm(t)
	kt, err := OpenKeytab(r.keytab)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Keytab: kt, Replay: NewReplayCache(0)}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ proto, service, delegate string }{
		{"kerberos", "HTTP", "0"}, {"negotiate", "WSMAN", "1"}, {"kerberos", "HTTP", "1"},
	} {
		t.Run(tc.proto+"-"+tc.service+"-deleg"+tc.delegate, func(t *testing.T) {
			cmd := exec.Command(py, "testdata/pyspnego_krb_client.py", tc.proto, tc.service, tc.delegate, "0", "1", "15", "16", "17", "4096", "70000")
			cmd.Env = append(r.kdc.Env(), "KRB5CCNAME=FILE:"+r.ccache)
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
			rd := bufio.NewReaderSize(stdout, 1<<20)
			recv := func() []string {
				l, err := rd.ReadString('\n')
				if err != nil {
					t.Fatalf("reading from python: %v", err)
				}
				return strings.Fields(l)
			}
			send := func(words ...string) { io.WriteString(stdin, strings.Join(words, " ")+"\n") }
			dec := func(s string) []byte {
				if s == "-" {
					return nil
				}
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			var a authn.Context = spnego.NewAcceptor(spnego.Config{Kerberos: func() authn.Context { return NewAcceptor(cfg) }})
			for legs := 0; ; legs++ {
				w := recv()
				if w[0] != "TOKEN" || legs > 3 {
					t.Fatalf("python: %v", w)
				}
				out, done, err := a.Step(context.Background(), authn.ConnInfo{}, dec(w[1]))
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
			p := a.Principal()
			if p.Name != "alice" || p.Client != "alice@"+krbtest.Realm || p.Mechanism != "kerberos" {
				t.Fatalf("principal %+v", p)
			}
			if tc.delegate == "1" {
				checkDelegated(t, r, p.Delegated)
			} else if p.Delegated != nil {
				t.Fatal("a ccache without delegation")
			}
			for n := 0; ; n++ {
				w := recv()
				if w[0] == "DONE" {
					if n != 7 {
						t.Fatalf("%d messages exchanged, want 7", n)
					}
					return
				}
				if w[0] != "SEALED" {
					t.Fatalf("python: %v", w)
				}
				plain, err := a.Sealer().Unseal(dec(w[1]), dec(w[2]))
				if err != nil {
					t.Fatalf("message %d: unseal pyspnego's wrap: %v", n, err)
				}
				sig, data, err := a.Sealer().Seal(append([]byte("reply:"), plain...))
				if err != nil {
					t.Fatal(err)
				}
				send("REPLY", base64.StdEncoding.EncodeToString(sig), base64.StdEncoding.EncodeToString(data))
			}
		})
	}
}

// checkDelegated: the ccache parses with gokrb5, and MIT's klist lists the
// forwarded TGT in it; kvno gets a ticket for another service with it.
func checkDelegated(t *testing.T, r *realm, ccp *authn.Secret) {
	t.Helper()
	if ccp == nil || len(*ccp) == 0 {
		t.Fatal("delegation requested but no ccache")
	}
	cc := *ccp
	if s := strings.Join([]string{cc.String(), string(must(cc.MarshalJSON()))}, " "); strings.Contains(s, "alice") || !strings.Contains(s, "redacted") {
		t.Fatalf("Secret prints %q", s)
	}
	path := filepath.Join(t.TempDir(), "deleg.cc")
	if err := os.WriteFile(path, cc, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := credentials.LoadCCache(path)
	if err != nil {
		t.Fatalf("gokrb5 cannot read the ccache: %v", err)
	}
	if got := c.DefaultPrincipal.PrincipalName.PrincipalNameString(); got != "alice" {
		t.Fatalf("ccache default principal %q", got)
	}
	out, err := run(r, path, "klist", "-f")
	if err != nil || !bytes.Contains(out, []byte("krbtgt/"+krbtest.Realm+"@"+krbtest.Realm)) {
		t.Fatalf("klist: %v\n%s", err, out)
	}
	if out, err := run(r, path, "kvno", "HOST/other"); err != nil {
		t.Fatalf("kvno with the delegated TGT: %v\n%s", err, out)
	}
}

func run(r *realm, ccache, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(r.kdc.Env(), "KRB5CCNAME=FILE:"+ccache)
	return cmd.CombinedOutput()
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
