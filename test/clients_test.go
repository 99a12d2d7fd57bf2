package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"
)

// Conn says how a client reaches the daemon.
type Conn struct {
	Scheme           string `json:"scheme"` // http | https
	Host             string `json:"host"`
	Port             int    `json:"port"`
	Auth             string `json:"auth"`       // basic | ntlm | negotiate | certificate | credssp
	Encryption       string `json:"encryption"` // always | never | auto
	User             string `json:"user"`
	Password         string `json:"password"`
	OperationTimeout int    `json:"operation_timeout,omitempty"` // seconds
	ReadTimeout      int    `json:"read_timeout,omitempty"`
	CBT              bool   `json:"cbt"`
	// Kerberos: the directory of per-user credential caches (<user>.cc,
	// KRB5CCNAME for the client), the krb5.conf of the test realm, and
	// whether to forward the TGT.
	CCacheDir  string `json:"ccache_dir,omitempty"`
	KRB5Config string `json:"-"`
	KRB5Realm  string `json:"-"`
	Delegate   bool   `json:"delegate,omitempty"`
	// CertPEM and KeyPEM are the client certificate and key files (auth
	// "certificate").
	CertPEM string `json:"cert_pem,omitempty"`
	KeyPEM  string `json:"key_pem,omitempty"`
}

func (c Conn) String() string {
	return fmt.Sprintf("%s+%s(enc=%s) as %s", c.Scheme, c.Auth, c.Encryption, c.User)
}

// Spec is one scenario for a client (see test/clients/common.py).
type Spec struct {
	Op        string            `json:"op"`
	Command   string            `json:"command,omitempty"`
	Args      []string          `json:"args,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Cwd       string            `json:"cwd,omitempty"`
	Stdin     []byte            `json:"stdin,omitempty"`
	StdinEnd  bool              `json:"stdin_end,omitempty"`
	Digest    bool              `json:"digest,omitempty"`
	Count     int               `json:"count,omitempty"`
	ShellID   string            `json:"shell_id,omitempty"`
	WaitFor   []byte            `json:"wait_for,omitempty"`
	Signal    string            `json:"signal,omitempty"`
	KeepShell bool              `json:"keep_shell,omitempty"`
}

// Result is what a client reports.
type Result struct {
	OK           bool     `json:"ok"`
	Stdout       []byte   `json:"stdout"`
	Stderr       []byte   `json:"stderr"`
	StdoutSHA256 string   `json:"stdout_sha256"`
	StdoutLen    int      `json:"stdout_len"`
	ExitCode     *int     `json:"exit_code"`
	ShellID      string   `json:"shell_id"`
	CommandID    string   `json:"command_id"`
	Timeouts     int      `json:"timeouts"`
	SignalToDone int      `json:"signal_to_done_ms"`
	Results      []Result `json:"results"`
	ErrorType    string   `json:"error_type"`
	Error        string   `json:"error"`
	HTTPStatus   int      `json:"http_status"`
	WSManCode    int64    `json:"wsman_code"`
	FaultSubcode string   `json:"fault_subcode"`
	Traceback    string   `json:"traceback"`
	ElapsedMS    int      `json:"elapsed_ms"`
}

func (r Result) String() string {
	if r.OK {
		ec := "nil"
		if r.ExitCode != nil {
			ec = strconv.Itoa(*r.ExitCode)
		}
		return fmt.Sprintf("ok exit=%s stdout=%q stderr=%q", ec, clip(r.Stdout, 200), clip(r.Stderr, 200))
	}
	return fmt.Sprintf("error %s (http %d, wsman %d %s): %s", r.ErrorType, r.HTTPStatus, r.WSManCode, r.FaultSubcode, clip([]byte(r.Error), 500))
}

func clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

func (r Result) exit() int {
	if r.ExitCode == nil {
		return -999
	}
	return *r.ExitCode
}

// refusedAuth: the client saw an authentication refusal (401).
func (r Result) refusedAuth() bool {
	return !r.OK && (r.HTTPStatus == 401 || r.ErrorType == "InvalidCredentialsError" || r.ErrorType == "AuthenticationError")
}

// accessDenied: the client saw Access Denied (a fault with w:AccessDenied /
// code 5) — or, for the daemon's choice on non-administrators, a 401.
func (r Result) accessDenied() bool {
	return !r.OK && (r.WSManCode == codeAccessDenied || strings.HasSuffix(r.FaultSubcode, "AccessDenied") ||
		strings.Contains(strings.ToLower(r.Error), "access is denied") || strings.Contains(strings.ToLower(r.Error), "access denied"))
}

// driver is one client implementation.
type driver interface {
	Name() string
	// Supports tells whether the client can express op (and auth) at all.
	Supports(op string, c Conn) bool
	Do(t testing.TB, c Conn, s Spec) Result
}

// ---------------------------------------------------------------- python

type pyDriver struct{ client string } // pywinrm | pypsrp | awinrm

func (p pyDriver) Name() string { return p.client }

func (p pyDriver) Supports(op string, c Conn) bool {
	switch {
	case p.client == "pywinrm" && c.Auth == "negotiate":
		return false // pywinrm's "ntlm" transport is its Negotiate; covered as ntlm
	case p.client == "awinrm":
		// awinrm speaks only Negotiate (NTLM inside SPNEGO, asyauth) and
		// seals every message, on HTTPS too; it has no Basic and no raw
		// NTLM, so it runs where the matrix asks for Negotiate. Its
		// Negotiate carries NTLM only (it needs the password): a
		// Kerberos-by-ticket run (a credential cache, no password) is
		// not something it can express, so it sits those out.
		return c.Auth == "negotiate" && c.CCacheDir == ""
	}
	return true
}

func (p pyDriver) Do(t testing.TB, c Conn, s Spec) Result {
	t.Helper()
	w := need(t)
	if _, err := os.Stat(w.python); err != nil {
		t.Fatalf("client virtualenv missing (%v): run `make venv`", err)
	}
	in, _ := json.Marshal(map[string]any{"conn": c, "spec": s})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.python, filepath.Join(w.root, "test", "clients", p.client+"_client.py"))
	cmd.Stdin = bytes.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "NO_PROXY=*", "no_proxy=*")
	if c.CCacheDir != "" {
		cmd.Env = append(cmd.Env, "KRB5CCNAME=FILE:"+filepath.Join(c.CCacheDir, c.User+".cc"), "KRB5_CONFIG="+c.KRB5Config)
	}
	err := cmd.Run()
	var r Result
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		t.Fatalf("%s %s: no result (%v, %v)\nstdout: %s\nstderr: %s", p.client, s.Op, err, jerr, clip(out.Bytes(), 2000), clip(errb.Bytes(), 4000))
	}
	if !r.OK && r.Traceback != "" {
		t.Logf("%s %s traceback:\n%s", p.client, s.Op, r.Traceback)
	}
	recordStat("client_runs", 1)
	return r
}

// ---------------------------------------------------------------- masterzen

// mzDriver runs scenarios with github.com/masterzen/winrm in-process.
type mzDriver struct{}

func (mzDriver) Name() string { return "masterzen" }

func (mzDriver) Supports(op string, c Conn) bool {
	switch op {
	case "env", "cwd", "ctrl_c":
		// The library has no API for a shell's Environment or
		// WorkingDirectory, and no ctrl_c signal (only terminate).
		return false
	case "overlap":
		// Requests in flight at once (20 shells, stdin sent while output
		// is fetched, a Signal while a Receive is pending). masterzen's NTLM encryption transport runs a new
		// handshake per message over &http.Client{}, i.e. Go's shared
		// DefaultTransport pool: overlapping requests split one handshake
		// across two connections (NEGOTIATE on one, AUTHENTICATE on the
		// other), which the daemon rightly refuses — the client-side bug
		// bodgit/ntlmssp#51. Sequential use works; overlap is covered by
		// pywinrm and pypsrp on NTLM and by masterzen on HTTPS Basic.
		return !(c.Auth == "ntlm" && (c.Scheme == "http" || c.Encryption == "always"))
	}
	// Kerberos: masterzen's ClientKerberos (gokrb5 SPNEGO) has no message
	// encryption, so HTTPS only.
	return c.Auth == "basic" || c.Auth == "ntlm" || c.Auth == "certificate" || (c.Auth == "kerberos" && c.Scheme == "https")
}

func (mzDriver) client(c Conn) (*winrm.Client, error) {
	opTimeout := c.OperationTimeout
	if opTimeout == 0 {
		opTimeout = 20
	}
	var cert, key []byte
	if c.Auth == "certificate" {
		var err error
		if cert, err = os.ReadFile(c.CertPEM); err != nil {
			return nil, err
		}
		if key, err = os.ReadFile(c.KeyPEM); err != nil {
			return nil, err
		}
	}
	ep := winrm.NewEndpoint(c.Host, c.Port, c.Scheme == "https", true, nil, cert, key, time.Duration(opTimeout+10)*time.Second)
	params := winrm.NewParameters(fmt.Sprintf("PT%dS", opTimeout), "en-US", 153600)
	var inner func() winrm.Transporter
	switch {
	case c.Auth == "ntlm" && (c.Scheme == "http" || c.Encryption == "always"):
		inner = func() winrm.Transporter {
			enc, err := winrm.NewEncryption("ntlm")
			if err != nil {
				panic(err)
			}
			return enc
		}
	case c.Auth == "ntlm":
		inner = func() winrm.Transporter { return &winrm.ClientNTLM{} }
	case c.Auth == "certificate":
		inner = func() winrm.Transporter { return &winrm.ClientAuthRequest{} }
	case c.Auth == "kerberos":
		// A fresh AP-REQ from the user's credential cache on every request.
		inner = func() winrm.Transporter {
			return winrm.NewClientKerberos(&winrm.Settings{
				WinRMUsername: c.User, WinRMHost: c.Host, WinRMPort: c.Port, WinRMProto: c.Scheme, WinRMInsecure: true,
				KrbRealm: c.KRB5Realm, KrbConfig: c.KRB5Config, KrbSpn: "HTTP/" + c.Host,
				KrbCCache: filepath.Join(c.CCacheDir, c.User+".cc"),
			})
		}
	default:
		inner = func() winrm.Transporter { return winrm.NewClientWithDial(nil) }
	}
	params.TransportDecorator = func() winrm.Transporter { return faultCatcher{inner()} }
	return winrm.NewClientWithParameters(ep, c.User, c.Password, params)
}

// faultCatcher wraps the library's transport: this version returns a
// fault's body as if it were a success (its Post drops the status in a
// deferred assignment to locals), so callers see "unsupported action" and
// Shell.Close reports success for a refused Delete. The wrapper turns a SOAP
// fault into an error carrying the fault, which the library then surfaces
// (its Receive loop still retries on the OperationTimeout text).
type faultCatcher struct{ inner winrm.Transporter }

func (f faultCatcher) Transport(ep *winrm.Endpoint) error { return f.inner.Transport(ep) }

func (f faultCatcher) Post(c *winrm.Client, m *soap.SoapMessage) (string, error) {
	body, err := f.inner.Post(c, m)
	if err == nil && strings.Contains(body, "Fault") {
		if flt := parseFault([]byte(body)); flt != nil {
			return "", fmt.Errorf("soap fault: %s", body)
		}
	}
	return body, err
}

func (m mzDriver) Do(t testing.TB, c Conn, s Spec) Result {
	t.Helper()
	recordStat("client_runs", 1)
	res, err := m.do(c, s)
	if err != nil {
		res = mzError(err)
	}
	return res
}

// mzError turns the library's errors into a Result. masterzen reports HTTP
// failures as text ("http error 401: ...") and faults as the raw body.
func mzError(err error) Result {
	r := Result{OK: false, ErrorType: "masterzen", Error: err.Error()}
	msg := err.Error()
	if i := strings.Index(msg, "http error "); i >= 0 {
		fmt.Sscanf(msg[i:], "http error %d", &r.HTTPStatus)
	}
	if i := strings.Index(msg, "http response error: "); i >= 0 {
		fmt.Sscanf(msg[i:], "http response error: %d", &r.HTTPStatus)
	}
	if strings.Contains(msg, "401") && r.HTTPStatus == 0 {
		r.HTTPStatus = 401
	}
	if j := strings.Index(msg, "<"); j >= 0 {
		if f := parseFault([]byte(msg[j:])); f != nil {
			r.WSManCode, r.FaultSubcode, r.ErrorType = f.WSMan, f.Subcode, "WSManFault"
			if r.HTTPStatus == 0 {
				r.HTTPStatus = 500
			}
		}
	}
	return r
}

func (m mzDriver) do(c Conn, s Spec) (Result, error) {
	switch s.Op {
	case "run":
		cl, err := m.client(c)
		if err != nil {
			return Result{}, err
		}
		return mzRun(cl, nil, s, s.Command)
	case "concurrent":
		n := s.Count
		results := make([]Result, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				cl, err := m.client(c)
				if err == nil {
					results[i], err = mzRun(cl, nil, s, strings.ReplaceAll(s.Command, "{i}", strconv.Itoa(i)))
				}
				if err != nil {
					results[i] = mzError(err)
				}
			}(i)
		}
		wg.Wait()
		return Result{OK: true, Results: results}, nil
	case "long":
		cl, err := m.client(c)
		if err != nil {
			return Result{}, err
		}
		return mzRun(cl, nil, s, s.Command)
	case "signal":
		if s.Signal != "terminate" {
			return Result{}, fmt.Errorf("masterzen has no %s", s.Signal)
		}
		cl, err := m.client(c)
		if err != nil {
			return Result{}, err
		}
		return mzTerminate(cl, s)
	case "open_shell":
		cl, err := m.client(c)
		if err != nil {
			return Result{}, err
		}
		sh, err := cl.CreateShell()
		if err != nil {
			return Result{}, err
		}
		return Result{OK: true, ShellID: shellID(sh)}, nil
	case "run_in_shell":
		cl, err := m.client(c)
		if err != nil {
			return Result{}, err
		}
		return mzRun(cl, cl.NewShell(s.ShellID), s, s.Command)
	case "delete_shell":
		cl, err := m.client(c)
		if err != nil {
			return Result{}, err
		}
		return Result{OK: true}, cl.NewShell(s.ShellID).Close()
	}
	return Result{}, fmt.Errorf("masterzen: unknown op %q", s.Op)
}

// shellID reads the library's unexported Shell.id.
func shellID(sh *winrm.Shell) string {
	return reflect.ValueOf(sh).Elem().FieldByName("id").String()
}

// hashWriter keeps the first bytes and a digest of everything.
type hashWriter struct {
	keep  int
	buf   bytes.Buffer
	h     hashState
	total int
}

type hashState interface {
	io.Writer
	Sum([]byte) []byte
}

func newHashWriter(keep int) *hashWriter { return &hashWriter{keep: keep, h: sha256.New()} }

func (hw *hashWriter) Write(p []byte) (int, error) {
	hw.h.Write(p)
	hw.total += len(p)
	if room := hw.keep - hw.buf.Len(); room > 0 {
		if room > len(p) {
			room = len(p)
		}
		hw.buf.Write(p[:room])
	}
	return len(p), nil
}

func mzRun(cl *winrm.Client, sh *winrm.Shell, s Spec, command string) (Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	own := sh == nil
	if own {
		var err error
		sh, err = cl.CreateShell()
		if err != nil {
			return Result{}, err
		}
		defer sh.Close()
	}
	cmd, err := sh.ExecuteWithContext(ctx, command, s.Args...)
	if err != nil {
		return Result{}, err
	}
	keep := 1 << 30
	if s.Digest {
		keep = 0
	}
	stdout, stderr := newHashWriter(keep), newHashWriter(1<<20)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(stdout, cmd.Stdout) }()
	go func() { defer wg.Done(); io.Copy(stderr, cmd.Stderr) }()
	if len(s.Stdin) > 0 || s.StdinEnd {
		// Write in chunks, then close (End=true).
		for off := 0; off < len(s.Stdin); off += 32768 {
			end := off + 32768
			if end > len(s.Stdin) {
				end = len(s.Stdin)
			}
			if _, err := cmd.Stdin.Write(s.Stdin[off:end]); err != nil {
				return Result{}, fmt.Errorf("stdin: %w", err)
			}
		}
		if err := cmd.Stdin.Close(); err != nil {
			return Result{}, fmt.Errorf("stdin close: %w", err)
		}
	}
	cmd.Wait()
	wg.Wait()
	ec := cmd.ExitCode()
	cerr := cmd.Close()
	if cmdErr := mzCommandErr(cmd); cmdErr != nil {
		return Result{}, cmdErr
	}
	_ = cerr
	r := Result{OK: true, ExitCode: &ec, ShellID: shellID(sh)}
	if s.Digest {
		r.StdoutSHA256 = hex.EncodeToString(stdout.h.Sum(nil))
		r.StdoutLen = stdout.total
	} else {
		r.Stdout = stdout.buf.Bytes()
	}
	r.Stderr = stderr.buf.Bytes()
	return r, nil
}

// mzCommandErr digs the command's error out (the library keeps it unexported
// and reports it only through a closed pipe); a read of the pipes after Wait
// surfaces it.
func mzCommandErr(cmd *winrm.Command) error {
	if _, err := cmd.Stdout.Read(make([]byte, 1)); err != nil && err != io.EOF {
		return err
	}
	return nil
}

func mzTerminate(cl *winrm.Client, s Spec) (Result, error) {
	sh, err := cl.CreateShell()
	if err != nil {
		return Result{}, err
	}
	if !s.KeepShell {
		defer sh.Close()
	}
	//lint:ignore SA1019 the pinned masterzen/winrm commit is what Packer and Terraform ship; its callers use Execute.
	cmd, err := sh.Execute(s.Command)
	if err != nil {
		return Result{}, err
	}
	// Wait for the marker on stdout, then terminate.
	buf := make([]byte, 4096)
	var got []byte
	deadline := time.Now().Add(60 * time.Second)
	for !bytes.Contains(got, s.WaitFor) {
		if time.Now().After(deadline) {
			return Result{}, fmt.Errorf("marker %q not seen", s.WaitFor)
		}
		n, err := cmd.Stdout.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return Result{}, fmt.Errorf("stdout ended before the marker: %v (%q)", err, got)
		}
	}
	t0 := time.Now()
	if err := cmd.Close(); err != nil {
		return Result{}, err
	}
	return Result{OK: true, ShellID: shellID(sh), Stdout: got, SignalToDone: int(time.Since(t0) / time.Millisecond)}, nil
}

// hostPort splits "127.0.0.1:1234".
func hostPort(t testing.TB, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("bad address %q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}
