package main

// PowerShell remoting rows (issue 10): runspace pool open and one pipeline's
// round trip, through winrmd to the PSRP far end, with PowerShell's start
// on the client's clock (cold: warm_spares 0) and off it (warm: the pool
// takes the user's warm spare). The far end is the repository's pwsh
// STAND-IN (test/standin/pwsh_standin.py, psrpcore + /bin/sh) unless pwsh
// is on PATH: the rows say which. Informational (no ssh counterpart); the
// client is pypsrp from the test venv (`make venv`).

import (
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/winrmd/winrmd/test/standin"
)

//go:embed psrp_bench.py
var psrpBenchPy []byte

var (
	psrpPython = flag.String("python", ".venv/bin/python", "interpreter with pypsrp and psrpcore for the psrp rows (`make venv`)")
	psrpN      = flag.Int("psrp-n", 12, "samples per psrp row (pools opened, each running one pipeline)")

	// The samples of each mode (cold, warm), measured once for both rows.
	psrpCache   = map[bool]*psrpSamples{}
	psrpErr     = map[bool]error{}
	psrpFarName string
)

// psrpSamples is one far-end configuration's measurements.
type psrpSamples struct {
	OpenMS   []float64 `json:"open_ms"`
	RTTMS    []float64 `json:"rtt_ms"`
	WarmUsed []bool    `json:"warm_used"`
}

// psrpFarEnd is pwsh when installed, else the stand-in under the system
// python3 (it runs as the bench user) importing psrpcore from the venv,
// installed into dir where that user can read it (standin.Install).
func psrpFarEnd(python, dir string) (name, path string, args []string, err error) {
	if p, err := exec.LookPath("pwsh"); err == nil {
		return "pwsh " + p, p, []string{"-NoLogo", "-NoProfile", "-s"}, nil
	}
	if _, err := os.Stat(standin.Script); err != nil {
		return "", "", nil, fmt.Errorf("the pwsh stand-in: %w (run from the repository root)", err)
	}
	script, site, err := standin.Install(".", python, filepath.Join(dir, "standin"))
	if err != nil {
		return "", "", nil, err
	}
	return "pwsh STAND-IN (psrpcore + /bin/sh)", "/usr/bin/python3", []string{script, "--site", site, "-NoLogo", "-NoProfile", "-s"}, nil
}

// psrpMeasure starts a daemon of its own with the given warm_spares and
// takes n samples through it; memoized per mode (open and round trip come
// from the same samples).
func (b *bench) psrpMeasure(warm bool) (*psrpSamples, string, error) {
	if s, ok := psrpCache[warm]; ok {
		return s, psrpFarName, nil
	}
	if err, ok := psrpErr[warm]; ok {
		return nil, "", err
	}
	s, name, err := b.psrpMeasureOnce(warm)
	if err != nil {
		psrpErr[warm] = err
		return nil, "", err
	}
	psrpCache[warm], psrpFarName = s, name
	return s, name, nil
}

func (b *bench) psrpMeasureOnce(warm bool) (*psrpSamples, string, error) {
	name, path, args, err := psrpFarEnd(*psrpPython, b.dir)
	if err != nil {
		return nil, "", err
	}
	spares := 0
	if warm {
		spares = 4
	}
	dir := filepath.Join(b.dir, fmt.Sprintf("psrp-%t", warm))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = strconv.Quote(a)
	}
	yaml := fmt.Sprintf("powershell:\n  path: %q\n  args: [%s]\n  warm_spares: %d\n  warm_spare_lifetime_s: 600\n", path, strings.Join(quoted, ", "), spares)
	cl := &cleanups{}
	defer cl.run() // this daemon stops when its rows are measured
	d, err := startDaemon(b.cfg.bin, dir, b.t.password, "", false, cl, yaml)
	if err != nil {
		return nil, "", err
	}
	host, port, err := net.SplitHostPort(d.http)
	if err != nil {
		return nil, "", err
	}
	script := filepath.Join(dir, "psrp_bench.py")
	if err := os.WriteFile(script, psrpBenchPy, 0o644); err != nil {
		return nil, "", err
	}
	p, _ := strconv.Atoi(port)
	in, _ := json.Marshal(map[string]any{"host": host, "port": p, "user": benchUser, "password": b.t.password,
		"n": *psrpN, "warm": warm, "metrics": d.metrics})
	cmd := exec.Command(*psrpPython, script)
	cmd.Stdin = strings.NewReader(string(in))
	cmd.Env = append(os.Environ(), "NO_PROXY=*", "no_proxy=*")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t := time.AfterFunc(10*time.Minute, func() { _ = cmd.Process.Kill() })
	out, err := cmd.Output()
	t.Stop()
	if err != nil {
		return nil, "", fmt.Errorf("psrp client: %v: %s; winrmd log:\n%s", err, stderr.String(), tail(d.logFile, 20))
	}
	var s psrpSamples
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, "", fmt.Errorf("psrp client output %q: %v", out, err)
	}
	return &s, name, nil
}

// psrpRow is one of the four rows: pool open or pipeline round trip, cold
// or warm.
func (b *bench) psrpRow(warm, open bool) (*result, error) {
	s, far, err := b.psrpMeasure(warm)
	if err != nil {
		return nil, err
	}
	mode, what := "cold", "pipeline round trip (`echo x`)"
	if warm {
		mode = "warm spare"
	}
	key := "psrp_rtt_"
	samples := s.RTTMS
	if open {
		what, key, samples = "runspace pool open", "psrp_open_", s.OpenMS
	}
	key += strings.Fields(mode)[0]
	r := &result{Key: key, Name: fmt.Sprintf("PSRP %s, %s (%s, NTLM)", what, mode, far), Unit: "ms"}
	r.WinRM.Label = "pypsrp → winrmd → " + far
	r.SSH.Label = "no ssh counterpart (informational)"
	r.WinRM.Samples = samples
	used := 0
	for _, u := range s.WarmUsed {
		if u {
			used++
		}
	}
	r.Notes = append(r.Notes, fmt.Sprintf("%d of %d pools took a warm spare; far end: %s", used, len(s.WarmUsed), far))
	if warm && used != len(s.WarmUsed) {
		return nil, fmt.Errorf("only %d of %d warm samples took a spare", used, len(s.WarmUsed))
	}
	return r, nil
}
