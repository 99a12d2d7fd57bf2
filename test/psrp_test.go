package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// PowerShell remoting end to end: the real pypsrp client (RunspacePool,
// PowerShell, Client.execute_ps) through the real daemon to the far end —
// real pwsh when on PATH, else the stand-in (psrp_farend_test.go); every
// test logs which ran.

type psSpec struct {
	Op       string   `json:"op"`
	Script   string   `json:"script,omitempty"`
	Scripts  []string `json:"scripts,omitempty"`
	After    string   `json:"after,omitempty"`
	Count    int      `json:"count,omitempty"`
	Endpoint string   `json:"endpoint,omitempty"`
	ShellID  string   `json:"shell_id,omitempty"`
	Sleep    float64  `json:"sleep,omitempty"`
	Digest   bool     `json:"digest,omitempty"`
	Marker   string   `json:"marker,omitempty"`
	Xpress   bool     `json:"xpress,omitempty"`
	Input    []string `json:"input,omitempty"`
	// XpressCorrupt: the xpress client's Sends carry invalid compressed data.
	XpressCorrupt bool `json:"xpress_corrupt,omitempty"`
}

type psResult struct {
	OK           bool            `json:"ok"`
	Output       []string        `json:"output"`
	OutputText   string          `json:"output_text"`
	OutputSHA256 string          `json:"output_sha256"`
	OutputLen    int             `json:"output_len"`
	Errors       []string        `json:"errors"`
	State        string          `json:"state"`
	HadErrors    bool            `json:"had_errors"`
	ShellID      string          `json:"shell_id"`
	Runs         []psResult      `json:"runs"`
	After        *psResult       `json:"after"`
	Listed       []string        `json:"listed"`
	Run          json.RawMessage `json:"run"`
	Close        json.RawMessage `json:"close"`
	Outcome      string          `json:"outcome"`
	ErrorType    string          `json:"error_type"`
	Error        string          `json:"error"`
	HTTPStatus   int             `json:"http_status"`
	WSManCode    int64           `json:"wsman_code"`
	Traceback    string          `json:"traceback"`
	Xpress       *xpressStats    `json:"xpress"`
}

// xpressStats is what the xpress-speaking client saw (psrp_client.py
// XpressWSMan).
type xpressStats struct {
	CompressionMode  string `json:"compression_mode"`
	SentStored       int    `json:"sent_stored"`
	RecvStored       int    `json:"recv_stored"`
	RecvHuffman      int    `json:"recv_huffman"`
	RecvHuffmanBytes int    `json:"recv_huffman_bytes"`
	RecvHuffmanWire  int    `json:"recv_huffman_wire"`
}

func (r psResult) String() string {
	if r.OK || r.State != "" {
		return fmt.Sprintf("ok state=%s output=%q errors=%q", r.State, r.Output, r.Errors)
	}
	return fmt.Sprintf("error %s (http %d, wsman %d): %s", r.ErrorType, r.HTTPStatus, r.WSManCode, clip([]byte(r.Error), 600))
}

func runPS(t testing.TB, c Conn, s psSpec) psResult {
	t.Helper()
	w := need(t)
	in, _ := json.Marshal(map[string]any{"conn": c, "spec": s})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.python, filepath.Join(w.root, "test", "clients", "psrp_client.py"))
	cmd.Stdin = bytes.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "NO_PROXY=*", "no_proxy=*")
	err := cmd.Run()
	var r psResult
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		t.Fatalf("psrp %s: no result (%v, %v)\nstdout: %s\nstderr: %s", s.Op, err, jerr, clip(out.Bytes(), 2000), clip(errb.Bytes(), 4000))
	}
	if !r.OK && r.Traceback != "" {
		t.Logf("psrp %s traceback:\n%s", s.Op, r.Traceback)
	}
	recordStat("client_runs", 1)
	return r
}

// psDaemon starts a daemon whose PowerShell is the far end.
func psDaemon(t *testing.T, mutate func(*configs.Config)) (*Daemon, farEnd) {
	t.Helper()
	w := need(t)
	fe := theFarEnd(t, w)
	d := startDaemon(t, func(c *configs.Config) {
		c.Service.MaxTimeoutMS = 5000
		c.PowerShell.Path = fe.Path
		c.PowerShell.Args = fe.Args
		// Warm spares are idle processes that outlive a closed pool (by
		// design): off here, so the other tests' leftover checks stay
		// exact; TestPSRPWarmSpare turns them on.
		c.PowerShell.WarmSpares = 0
		if mutate != nil {
			mutate(c)
		}
	})
	return d, fe
}

func psConns(t *testing.T, d *Daemon, u *testUser) map[string]Conn {
	h, p := hostPort(t, d.HTTP)
	hs, ps := hostPort(t, d.HTTPS)
	return map[string]Conn{
		"http-ntlm-sealed": {Scheme: "http", Host: h, Port: p, Auth: "ntlm", Encryption: "always", User: u.Name, Password: u.Password, OperationTimeout: 5},
		"https-basic":      {Scheme: "https", Host: hs, Port: ps, Auth: "basic", Encryption: "auto", User: u.Name, Password: u.Password, OperationTimeout: 5},
	}
}

func okPS(t *testing.T, what string, r psResult) {
	t.Helper()
	if !r.OK {
		t.Fatalf("%s: %s", what, r)
	}
}

// TestPSRPLifecycle: pool open, output, errors and states, several
// pipelines in one pool, a failing pipeline, execute_ps — over HTTP with NTLM
// sealing and over HTTPS with Basic.
func TestPSRPLifecycle(t *testing.T) {
	w := need(t)
	d, fe := psDaemon(t, func(c *configs.Config) { c.Service.Auth.Basic = true })
	for name, c := range psConns(t, d, w.admin) {
		t.Run(name, func(t *testing.T) {
			r := runPS(t, c, psSpec{Op: "ps_run", Scripts: []string{fe.script(scriptOutErr), fe.script(scriptFail), fe.script(psScript{sh: "echo last", pwsh: "'last'"})}})
			okPS(t, "ps_run", r)
			if len(r.Runs) != 3 {
				t.Fatalf("runs: %+v", r.Runs)
			}
			first, fail, last := r.Runs[0], r.Runs[1], r.Runs[2]
			if strings.Join(first.Output, ",") != "one,three" || len(first.Errors) != 1 || first.State != "COMPLETED" {
				t.Errorf("output and errors: %s", first)
			}
			if strings.Join(fail.Output, ",") != "x" || fail.State != "FAILED" {
				t.Errorf("failing pipeline: %s", fail)
			}
			if strings.Join(last.Output, ",") != "last" || last.State != "COMPLETED" {
				t.Errorf("pipeline after a failure: %s", last)
			}
			// Client.execute_ps wraps the script in Invoke-Expression and
			// Out-String (the stand-in models both cmdlets).
			r = runPS(t, c, psSpec{Op: "execute_ps", Script: fe.script(psScript{sh: "echo hello; echo bad >&2", pwsh: "'hello'; Write-Error 'bad'"})})
			okPS(t, "execute_ps", r)
			// A non-terminating error is in the error stream; had_errors is
			// pypsrp's "the pipeline failed".
			if strings.TrimSpace(r.OutputText) != "hello" || r.HadErrors || len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "bad") {
				t.Errorf("execute_ps: output %q, errors %q, had_errors %v", r.OutputText, r.Errors, r.HadErrors)
			}
			r = runPS(t, c, psSpec{Op: "execute_ps", Script: fe.script(scriptFail)})
			okPS(t, "execute_ps failing", r)
			if strings.TrimSpace(r.OutputText) != "x" || !r.HadErrors {
				t.Errorf("execute_ps of a failing script: output %q, had_errors %v", r.OutputText, r.HadErrors)
			}
		})
	}
	checkPSGone(t, d)
}

// TestPSRPXpress: a client that asks for xpress stream compression, as the
// Windows PowerShell client always does. The CreateResponse says
// XpressCompression; the client's Sends (the pool's SESSION_CAPABILITY and
// INIT_RUNSPACEPOOL, each pipeline's input) arrive compressed and the daemon
// decompresses them; every Receive payload leaves compressed and is read by
// an independent LZ77+Huffman decoder (dissect.util) — several MB of output
// byte-exact, and the result must really be Huffman-coded, not stored.
func TestPSRPXpress(t *testing.T) {
	w := need(t)
	d, fe := psDaemon(t, func(c *configs.Config) { c.Service.Auth.Basic = true })
	// 400 objects of 5000 characters: each output fragment is one stream
	// payload, compressed on its own (a payload of a few hundred bytes does
	// not pay for the 256-byte code table and is stored).
	const objs, width = 400, 5000
	sh := fmt.Sprintf(`awk 'BEGIN{for(i=0;i<%d;i++){s=sprintf("line %%d ",i); while(length(s)<%d) s=s sprintf("%%06d,",i); print s}}'`, objs, width)
	pw := fmt.Sprintf(`0..%d | ForEach-Object { $s = "line $_ "; while ($s.Length -lt %d) { $s += '{0:D6},' -f $_ }; $s }`, objs-1, width)
	var want bytes.Buffer
	for i := 0; i < objs; i++ {
		if i > 0 {
			want.WriteByte('\n')
		}
		line := fmt.Sprintf("line %d ", i)
		for len(line) < width {
			line += fmt.Sprintf("%06d,", i)
		}
		want.WriteString(line)
	}
	sum := sha256.Sum256(want.Bytes())
	for name, c := range psConns(t, d, w.admin) {
		t.Run(name, func(t *testing.T) {
			r := runPS(t, c, psSpec{Op: "ps_run", Xpress: true, Scripts: []string{fe.script(scriptOutErr), fe.script(scriptFail)}})
			okPS(t, "ps_run with xpress", r)
			if first := r.Runs[0]; strings.Join(first.Output, ",") != "one,three" || len(first.Errors) != 1 || first.State != "COMPLETED" {
				t.Errorf("output and errors: %s", first)
			}
			if r.Runs[1].State != "FAILED" {
				t.Errorf("failing pipeline: %s", r.Runs[1])
			}
			x := r.Xpress
			if x == nil || x.CompressionMode != "XpressCompression" || x.RecvStored+x.RecvHuffman == 0 {
				t.Fatalf("compression not in effect: %+v", x)
			}
			// Pipeline input travels in Sends, compressed.
			input := []string{"alpha", "beta", strings.Repeat("gamma", 3000)}
			r = runPS(t, c, psSpec{Op: "ps_run", Xpress: true, Input: input, Script: fe.script(psScript{sh: "cat", pwsh: "$input"})})
			okPS(t, "pipeline input with xpress", r)
			if strings.Join(r.Output, ",") != strings.Join(input, ",") || r.Xpress.SentStored == 0 {
				t.Errorf("pipeline input: %s, xpress %+v", r, r.Xpress)
			}
			// Invalid compressed input: a clear fault naming it, no crash.
			r = runPS(t, c, psSpec{Op: "ps_run", Xpress: true, XpressCorrupt: true, Input: input, Script: fe.script(psScript{sh: "cat", pwsh: "$input"})})
			if r.OK || !strings.Contains(r.Error, "xpress") {
				t.Errorf("corrupt xpress Send: %s", r)
			}
			r = runPS(t, c, psSpec{Op: "ps_run", Xpress: true, Digest: true, Script: fe.script(psScript{sh: sh, pwsh: pw})})
			okPS(t, "large output with xpress", r)
			if r.OutputSHA256 != hex.EncodeToString(sum[:]) || r.OutputLen != want.Len() {
				t.Errorf("large output: %d bytes sha %s, want %d bytes sha %x", r.OutputLen, r.OutputSHA256, want.Len(), sum)
			}
			if x = r.Xpress; x == nil || x.RecvHuffman == 0 || x.RecvHuffmanWire*2 > x.RecvHuffmanBytes {
				t.Errorf("output was not LZ77+Huffman-compressed (to under half): %+v", x)
			}
			t.Logf("far end %s; xpress: %+v", fe.Name, x)
			recordStat("bytes_verified", int64(want.Len()))
		})
	}
	checkPSGone(t, d)
}

// checkPSGone: every pool the clients closed is gone, with its processes.
func checkPSGone(t *testing.T, d *Daemon) {
	t.Helper()
	checkNoLeftovers(t, "after the PowerShell clients closed their pools", 15*time.Second)
}

// TestPSRPMany: many pipelines at once in one pool, two pools at once, a
// pipeline outliving several OperationTimeouts, several MB byte-exact.
func TestPSRPMany(t *testing.T) {
	w := need(t)
	d, fe := psDaemon(t, nil)
	c := psConns(t, d, w.admin)["http-ntlm-sealed"]

	r := runPS(t, c, psSpec{Op: "ps_concurrent", Count: 6, Script: fe.script(psScript{sh: "echo p{i}", pwsh: "'p{i}'"})})
	okPS(t, "ps_concurrent", r)
	for i, run := range r.Runs {
		if want := fmt.Sprintf("p%d", i); strings.Join(run.Output, ",") != want || run.State != "COMPLETED" {
			t.Errorf("pipeline %d: %s", i, run)
		}
	}

	r = runPS(t, c, psSpec{Op: "ps_two_pools", Script: fe.script(psScript{sh: "sleep 2; echo pool{i}", pwsh: "Start-Sleep 2; 'pool{i}'"})})
	okPS(t, "ps_two_pools", r)
	if len(r.Runs) != 2 || strings.Join(r.Runs[0].Output, "") != "pool0" || strings.Join(r.Runs[1].Output, "") != "pool1" || r.Runs[0].ShellID == r.Runs[1].ShellID {
		t.Errorf("two pools: %+v", r.Runs)
	}

	// OperationTimeout is 5 s (clamped by max_timeout_ms): 12 s of silence
	// spans several Receive timeouts.
	r = runPS(t, c, psSpec{Op: "ps_run", Script: fe.script(psScript{sh: "sleep 12; echo woke", pwsh: "Start-Sleep 12; 'woke'"})})
	okPS(t, "long pipeline", r)
	if strings.Join(r.Output, "") != "woke" || r.State != "COMPLETED" {
		t.Errorf("long pipeline: %s", r)
	}

	// Several MB of output, byte-exact (digest of the joined lines).
	const lines = 60000
	sh := fmt.Sprintf("i=0; while [ $i -lt %d ]; do echo \"line $i $(printf '%%050d' $i)\"; i=$((i+1)); done", lines)
	if !fe.Real {
		sh = fmt.Sprintf("seq 0 %d | awk '{printf \"line %%d %%050d\\n\", $1, $1}'", lines-1)
	}
	var want bytes.Buffer
	for i := 0; i < lines; i++ {
		if i > 0 {
			want.WriteByte('\n')
		}
		fmt.Fprintf(&want, "line %d %050d", i, i)
	}
	sum := sha256.Sum256(want.Bytes())
	r = runPS(t, c, psSpec{Op: "ps_run", Digest: true, Script: fe.script(psScript{sh: sh, pwsh: fmt.Sprintf("0..%d | ForEach-Object { 'line {0} {0:D50}' -f $_ }", lines-1)})})
	okPS(t, "large output", r)
	if r.OutputSHA256 != hex.EncodeToString(sum[:]) || r.OutputLen != want.Len() {
		t.Errorf("large output: %d bytes sha %s, want %d bytes sha %x", r.OutputLen, r.OutputSHA256, want.Len(), sum)
	}
	recordStat("bytes_verified", int64(want.Len()))
	checkPSGone(t, d)
}

// TestPSRPStopAndDisconnect: stop a running pipeline (the pool keeps
// working); disconnect while a pipeline produces, reconnect and receive all
// of it.
func TestPSRPStopAndDisconnect(t *testing.T) {
	w := need(t)
	d, fe := psDaemon(t, nil)
	c := psConns(t, d, w.admin)["http-ntlm-sealed"]
	r := runPS(t, c, psSpec{Op: "ps_stop", Script: fe.script(scriptLong), After: fe.script(psScript{sh: "echo after", pwsh: "'after'"})})
	okPS(t, "ps_stop", r)
	if r.State != "STOPPED" || r.After == nil || strings.Join(r.After.Output, "") != "after" {
		t.Errorf("stop: %s after=%v", r, r.After)
	}

	r = runPS(t, c, psSpec{Op: "ps_disconnect", Sleep: 4, Script: fe.script(psScript{
		sh:   "for i in 1 2 3 4 5 6; do echo tick$i; sleep 1; done",
		pwsh: "1..6 | ForEach-Object { \"tick$_\"; Start-Sleep 1 }",
	})})
	okPS(t, "ps_disconnect", r)
	if strings.Join(r.Output, ",") != "tick1,tick2,tick3,tick4,tick5,tick6" || r.State != "COMPLETED" {
		t.Errorf("disconnect/reconnect: %s", r)
	}
	checkPSGone(t, d)
}

// TestPSRPIsolation: another user can neither list, use nor close a pool;
// an endpoint restricted to a group refuses a user outside it before any
// process starts; an unknown endpoint gets Windows' fault.
func TestPSRPIsolation(t *testing.T) {
	w := need(t)
	grp := "wrmde2eps" + randHex(2)
	if out, err := exec.Command("groupadd", grp).CombinedOutput(); err != nil {
		t.Fatalf("groupadd: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("groupdel", grp).Run() })
	d, fe := psDaemon(t, func(c *configs.Config) {
		c.PowerShell.Endpoints = []configs.Endpoint{{Name: "Restricted", AllowedGroups: []string{grp}}}
	})
	conns := psConns(t, d, w.admin)
	c := conns["http-ntlm-sealed"]
	open := runPS(t, c, psSpec{Op: "ps_open"})
	okPS(t, "ps_open", open)
	if m, err := d.MetricsSnapshot(); err != nil {
		t.Error(err)
	} else if v, _ := Metric(m, "winrmd_psrp_pools"); v != 1 {
		t.Errorf("winrmd_psrp_pools = %v with one pool open", v)
	}

	other := psConns(t, d, w.admin2)["http-ntlm-sealed"]
	a := runPS(t, other, psSpec{Op: "ps_attack", ShellID: open.ShellID, Script: fe.script(psScript{sh: "echo owned", pwsh: "'owned'"})})
	okPS(t, "ps_attack", a)
	for _, id := range a.Listed {
		if strings.EqualFold(id, open.ShellID) {
			t.Errorf("another user lists the pool %s", id)
		}
	}
	if string(a.Run) == `"succeeded"` || string(a.Close) == `"succeeded"` || !strings.Contains(string(a.Run)+string(a.Close), "ccess") {
		t.Errorf("another user's attempts: run=%s close=%s", a.Run, a.Close)
	}

	before := d.AuditCount("shell_create", "")
	r := runPS(t, c, psSpec{Op: "ps_run", Endpoint: "Restricted", Script: "echo hi"})
	if r.OK || !(r.WSManCode == codeAccessDenied || strings.Contains(strings.ToLower(r.Error), "access")) {
		t.Errorf("restricted endpoint for a non-member: %s", r)
	}
	if d.AuditCount("shell_create", "") != before {
		t.Error("a refused endpoint created a shell")
	}
	r = runPS(t, c, psSpec{Op: "ps_run", Endpoint: "NoSuchEndpoint", Script: "echo hi"})
	if r.OK || r.WSManCode != 2150858811 {
		t.Errorf("unknown endpoint: %s (want the invalid resource URI fault 2150858811)", r)
	}

	r = runPS(t, c, psSpec{Op: "ps_close", ShellID: open.ShellID})
	okPS(t, "ps_close", r)
	checkPSGone(t, d)
	if m, err := d.MetricsSnapshot(); err != nil {
		t.Error(err)
	} else if v, _ := Metric(m, "winrmd_psrp_pools"); v != 0 {
		t.Errorf("winrmd_psrp_pools = %v after the pool was closed", v)
	}
	if d.AuditCount("shell_delete", w.admin.Name) == 0 {
		t.Error("no shell_delete audit record for the closed pool")
	}
}

// TestPSRPFarEndKilled: the far end dies mid-pipeline; the client gets an
// error promptly instead of waiting forever, and nothing is left behind.
func TestPSRPFarEndKilled(t *testing.T) {
	w := need(t)
	d, fe := psDaemon(t, nil)
	c := psConns(t, d, w.admin)["http-ntlm-sealed"]
	marker := filepath.Join(t.TempDir(), "marker")
	os.Chmod(filepath.Dir(marker), 0o777)
	// What identifies the far end's process in ps output.
	needle := filepath.Base(fe.Path)
	if !fe.Real {
		needle = filepath.Base(fe.Args[0])
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(marker); err == nil {
				for _, p := range ourProcs() {
					if strings.Contains(strings.Join(p.Args, " "), needle) && p.UID == w.admin.UID {
						syscall.Kill(p.PID, syscall.SIGKILL)
					}
				}
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	r := runPS(t, c, psSpec{Op: "ps_kill_far_end", Marker: marker, Script: fe.script(scriptLong)})
	wg.Wait()
	okPS(t, "ps_kill_far_end", r)
	if r.Outcome != "error" {
		t.Errorf("the client saw no error after the far end died: %+v", r)
	}
	checkPSGone(t, d)
}

// TestPowershellInCmdShell: `powershell -EncodedCommand …` in a cmd shell
// (pywinrm's run_ps, Ansible) runs PowerShell when it is installed; when it
// is not, stderr says so and the exit code is 127 — not a shell's riddle.
func TestPowershellInCmdShell(t *testing.T) {
	w := need(t)
	d := startDaemon(t, func(c *configs.Config) { c.PowerShell.Path = "pwsh" })
	h, p := hostPort(t, d.HTTP)
	c := Conn{Scheme: "http", Host: h, Port: p, Auth: "ntlm", Encryption: "always", User: w.admin.Name, Password: w.admin.Password}
	// "Write-Output 'hi'" as UTF-16LE, base64 (what run_ps sends).
	script := "Write-Output 'hi'"
	u16 := make([]byte, 0, 2*len(script))
	for _, r := range script {
		u16 = append(u16, byte(r), 0)
	}
	enc := base64.StdEncoding.EncodeToString(u16)
	for _, line := range []string{"powershell -encodedcommand " + enc, "PowerShell.exe -NoProfile -NonInteractive -EncodedCommand " + enc} {
		r := pyDriver{"pywinrm"}.Do(t, c, Spec{Op: "run", Command: line})
		if !r.OK {
			t.Fatalf("%s: %s", line, r)
		}
		if _, err := exec.LookPath("pwsh"); err == nil {
			t.Logf("pwsh is installed: the real PowerShell ran")
			if r.exit() != 0 || strings.TrimSpace(string(r.Stdout)) != "hi" {
				t.Errorf("%s: %s", line, r)
			}
			continue
		}
		t.Logf("pwsh is not installed: the daemon must say so")
		if r.exit() != 127 || !strings.Contains(string(r.Stderr), "PowerShell is not installed") {
			t.Errorf("%s: exit %d stderr %q", line, r.exit(), r.Stderr)
		}
	}
	checkNoLeftovers(t, "after the powershell commands", 10*time.Second)
}

// TestPSRPRunAsEndpoint: a JEA-like endpoint that runs as a fixed service
// account and admits only a group, with a startup script. The caller (a
// member) is authorized and owns the pool; the pool's processes run as the
// service account; the startup script ran in the pool before the first
// pipeline and what it defined stays for every pipeline; the audit names the
// caller as user and the service account as run_as. An administrator who is
// not in the group is refused before any process starts.
func TestPSRPRunAsEndpoint(t *testing.T) {
	w := need(t)
	dir := testDir(t)
	grp := makeGroup(t, fmt.Sprintf("%sra%s", userPrefix, randHex(2)))
	caller := makeUsers(t, "rac", 1, true, grp)[0]
	svc := makeUsers(t, "ras", 1, false)[0] // no WinRM rights of its own
	store := writeStore(t, dir, []*testUser{caller, w.admin})
	startup := filepath.Join(dir, "startup.ps1")
	badStartup := filepath.Join(dir, "bad-startup.ps1")
	d, fe := psDaemon(t, func(c *configs.Config) {
		c.Accounts.StoreFile = store
		c.PowerShell.Endpoints = []configs.Endpoint{{Name: "Svc", RunAsUser: svc.Name, AllowedGroups: []string{grp}, StartupScript: startup},
			{Name: "BadStart", StartupScript: badStartup}}
	})
	body := fe.script(psScript{
		sh:   `export WINRMD_STARTUP="ran as $(id -un)"`,
		pwsh: `$env:WINRMD_STARTUP = "ran as $([Environment]::UserName)"`,
	})
	if err := os.WriteFile(startup, []byte(body+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := fe.script(psScript{sh: "echo startup failed >&2; exit 3", pwsh: "throw 'startup failed'"})
	if err := os.WriteFile(badStartup, []byte(bad+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	who := fe.script(psScript{sh: `id -un; echo "$WINRMD_STARTUP"`, pwsh: `[Environment]::UserName; $env:WINRMD_STARTUP`})
	c := psConns(t, d, caller)["http-ntlm-sealed"]
	r := runPS(t, c, psSpec{Op: "ps_run", Endpoint: "Svc", Scripts: []string{who, who}})
	okPS(t, "ps_run on the run_as endpoint", r)
	want := svc.Name + ",ran as " + svc.Name
	for i, run := range r.Runs {
		if got := strings.Join(run.Output, ","); got != want || run.State != "COMPLETED" {
			t.Errorf("pipeline %d: %s, want output %q", i, run, want)
		}
	}
	var created map[string]any
	for _, e := range d.AuditEvents() {
		if e.Event == "shell_create" && strings.EqualFold(e.ShellID, r.ShellID) {
			_ = json.Unmarshal([]byte(e.Raw), &created)
		}
	}
	if created == nil || !auditUserIs(fmt.Sprint(created["user"]), caller.Name) || created["run_as"] != svc.Name || created["endpoint"] != "Svc" {
		t.Errorf("shell_create audit record: %v (want user %s, run_as %s)", created, caller.Name, svc.Name)
	}
	starts := 0
	for _, e := range d.AuditEvents() {
		if e.Event == "command_start" && strings.EqualFold(e.ShellID, r.ShellID) && strings.Contains(e.Raw, `"run_as":"`+svc.Name+`"`) && auditUserIs(e.User, caller.Name) {
			starts++
		}
	}
	if starts != 2 {
		t.Errorf("%d command_start records name the caller and run_as, want 2", starts)
	}

	// An administrator outside the group: refused before anything starts.
	before := d.AuditCount("shell_create", "")
	r = runPS(t, psConns(t, d, w.admin)["http-ntlm-sealed"], psSpec{Op: "ps_run", Endpoint: "Svc", Script: "id -un"})
	if r.OK || !(r.WSManCode == codeAccessDenied || strings.Contains(strings.ToLower(r.Error), "access")) {
		t.Errorf("run_as endpoint for a non-member: %s", r)
	}
	if d.AuditCount("shell_create", "") != before {
		t.Error("a refused caller started the service account's pool")
	}

	// A startup script that fails breaks the pool: the client gets an
	// error, no pipeline runs, nothing is left.
	r = runPS(t, c, psSpec{Op: "ps_run", Endpoint: "BadStart", Script: fe.script(psScript{sh: "echo ran", pwsh: "'ran'"})})
	if r.OK || strings.Contains(strings.Join(r.Output, ","), "ran") {
		t.Errorf("pool with a failing startup script: %s", r)
	}
	checkPSGone(t, d)
}

// shellCreated returns the shell_create audit record of a pool.
func shellCreated(d *Daemon, shellID string) map[string]any {
	for _, e := range d.AuditEvents() {
		if e.Event == "shell_create" && strings.EqualFold(e.ShellID, shellID) {
			var m map[string]any
			if json.Unmarshal([]byte(e.Raw), &m) == nil {
				return m
			}
		}
	}
	return nil
}

// waitMetric polls a daemon metric until it has the value (the deadline only
// bounds a broken run; nothing is asserted about time).
func waitMetric(t *testing.T, d *Daemon, name string, want float64) {
	t.Helper()
	var v float64
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		m, err := d.MetricsSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		if v, _ = Metric(m, name); v == want {
			return
		}
	}
	t.Fatalf("%s = %v, want %v", name, v, want)
}

// TestPSRPWarmSpare: after a user's first pool a warm pwsh waits for that
// user; their second pool takes it (the audit says warm_spare, the metric
// counts it, and the pool runs as that user); another user's pool never
// does. Spares end at their lifetime and at shutdown, leaving no process.
func TestPSRPWarmSpare(t *testing.T) {
	w := need(t)
	who := psScript{sh: "id -un", pwsh: "[Environment]::UserName"}
	d, fe := psDaemon(t, func(c *configs.Config) {
		c.PowerShell.WarmSpares = 4
		c.PowerShell.WarmSpareLifetimeS = 600
	})
	a := psConns(t, d, w.admin)["http-ntlm-sealed"]
	b := psConns(t, d, w.admin2)["https-basic"]
	run := func(c Conn, u *testUser) (warm bool) {
		t.Helper()
		r := runPS(t, c, psSpec{Op: "ps_run", Script: fe.script(who)})
		okPS(t, "ps_run", r)
		if got := strings.Join(r.Output, ""); got != u.Name {
			t.Errorf("pool of %s ran as %q", u.Name, got)
		}
		rec := shellCreated(d, r.ShellID)
		if rec == nil {
			t.Fatalf("no shell_create record for %s", r.ShellID)
		}
		return rec["warm_spare"] == true
	}
	if run(a, w.admin) {
		t.Error("the first pool of a user took a warm spare")
	}
	waitMetric(t, d, "winrmd_psrp_warm_spares", 1)
	if run(b, w.admin2) {
		t.Errorf("%s's pool took a warm spare (only %s had one)", w.admin2.Name, w.admin.Name)
	}
	waitMetric(t, d, "winrmd_psrp_warm_spares", 2)
	if !run(a, w.admin) {
		t.Errorf("%s's second pool did not take the warm spare", w.admin.Name)
	}
	waitMetric(t, d, "winrmd_psrp_warm_spares_used_total", 1)
	waitMetric(t, d, "winrmd_psrp_warm_spares", 2) // taken, and replaced
	if !run(b, w.admin2) {
		t.Errorf("%s's second pool did not take its own warm spare", w.admin2.Name)
	}
	waitMetric(t, d, "winrmd_psrp_warm_spares_used_total", 2)
	waitMetric(t, d, "winrmd_psrp_warm_spares", 2)

	// Shutdown ends the idle spares: nothing is left after a clean stop.
	d.stop()
	if d.waitErr != nil {
		t.Errorf("daemon exited badly with warm spares: %v", d.waitErr)
	}
	checkNoLeftovers(t, "after a stop with warm spares", 5*time.Second)

	// A spare nobody takes ends at its lifetime.
	d2, fe2 := psDaemon(t, func(c *configs.Config) {
		c.PowerShell.WarmSpares = 4
		c.PowerShell.WarmSpareLifetimeS = 2
	})
	r := runPS(t, psConns(t, d2, w.admin)["http-ntlm-sealed"], psSpec{Op: "ps_run", Script: fe2.script(who)})
	okPS(t, "ps_run", r)
	expired := false
	for deadline := time.Now().Add(60 * time.Second); !expired && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		expired = strings.Contains(tail(d2.Stderr, 200), "warm spare expired")
	}
	if !expired {
		t.Fatal("no spare expired in the daemon log")
	}
	waitMetric(t, d2, "winrmd_psrp_warm_spares", 0)
	waitMetric(t, d2, "winrmd_psrp_warm_spares_used_total", 0)
	checkNoLeftovers(t, "after the warm spare's lifetime", 10*time.Second)
}
