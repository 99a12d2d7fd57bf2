package main

import (
	"fmt"
	"math"
	"sort"
)

// side is one server's measurements in a row.
type side struct {
	Samples []float64 `json:"samples"`
	Median  float64   `json:"median"`
	P10     float64   `json:"p10"`
	P90     float64   `json:"p90"`
	Errors  int       `json:"errors"`
	// ServerCPUms is the server's CPU time per sample (daemon + workers, or
	// the sshd listener + its per-connection processes and the user's
	// processes), from /proc utime+stime (+ reaped children), in ms.
	ServerCPUms float64           `json:"server_cpu_ms_per_op,omitempty"`
	Extra       map[string]any    `json:"extra,omitempty"`
	Label       string            `json:"label"`
	Attrs       map[string]string `json:"attrs,omitempty"`
}

func (s *side) finish() {
	if len(s.Samples) == 0 {
		s.Median, s.P10, s.P90 = math.NaN(), math.NaN(), math.NaN()
		return
	}
	v := append([]float64(nil), s.Samples...)
	sort.Float64s(v)
	s.Median = quantile(v, 0.5)
	s.P10 = quantile(v, 0.1)
	s.P90 = quantile(v, 0.9)
}

// quantile interpolates linearly between closest ranks of sorted v.
func quantile(v []float64, q float64) float64 {
	if len(v) == 1 {
		return v[0]
	}
	pos := q * float64(len(v)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	f := pos - float64(lo)
	return v[lo]*(1-f) + v[hi]*f
}

// goal is a bound on the ratio winrmd/ssh.
type goal struct {
	Op    string  `json:"op"` // "<=", ">=", "" (no goal: information)
	Value float64 `json:"value"`
}

func (g goal) String() string {
	if g.Op == "" {
		return "—"
	}
	op := "≤"
	if g.Op == ">=" {
		op = "≥"
	}
	return fmt.Sprintf("%s %.2g×", op, g.Value)
}

// result is one table row.
type result struct {
	Key     string    `json:"key"`
	Name    string    `json:"name"`
	Unit    string    `json:"unit"`
	WinRM   side      `json:"winrmd"`
	SSH     side      `json:"ssh"`
	Ratio   float64   `json:"ratio"` // winrmd median / ssh median
	Goal    goal      `json:"goal"`
	Verdict string    `json:"verdict"` // PASS, MISS, ERROR, info
	Notes   []string  `json:"notes,omitempty"`
	CPUPer  string    `json:"server_cpu_per,omitempty"` // what server_cpu_ms_per_op counts
	Load    [2]string `json:"loadavg_before_after"`     // other work on the machine
	Seconds float64   `json:"seconds"`
	// Procs is the daemon's GOMAXPROCS before and after the row and how
	// often it changed meanwhile (service.adaptive_procs), from its
	// metrics; empty when they could not be read.
	Procs string `json:"daemon_gomaxprocs,omitempty"`
}

func (r *result) finish() {
	r.WinRM.finish()
	r.SSH.finish()
	r.Ratio = r.WinRM.Median / r.SSH.Median
	if r.WinRM.Errors > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("winrmd errors: %d", r.WinRM.Errors))
	}
	if r.SSH.Errors > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("ssh errors: %d", r.SSH.Errors))
	}
	switch {
	case r.Goal.Op == "":
		r.Verdict = "info"
	case r.WinRM.Errors > 0 || r.SSH.Errors > 0 || math.IsNaN(r.Ratio) || math.IsInf(r.Ratio, 0):
		r.Verdict = "MISS"
	case r.Goal.Op == "<=":
		r.Verdict = verdict(r.Ratio <= r.Goal.Value)
	case r.Goal.Op == ">=":
		r.Verdict = verdict(r.Ratio >= r.Goal.Value)
	default:
		r.Verdict = "info"
	}
}

// jsonSafe replaces what encoding/json refuses (NaN, ±Inf) with 0; the
// sample lists and error counts say what happened.
func (r *result) jsonSafe() {
	for _, p := range []*float64{&r.Ratio, &r.WinRM.Median, &r.WinRM.P10, &r.WinRM.P90, &r.SSH.Median, &r.SSH.P10, &r.SSH.P90,
		&r.WinRM.ServerCPUms, &r.SSH.ServerCPUms} {
		if math.IsNaN(*p) || math.IsInf(*p, 0) {
			*p = 0
		}
	}
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func fmtVal(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtSide(s side, unit string) string {
	if len(s.Samples) == 0 {
		return "n/a"
	}
	if len(s.Samples) == 1 {
		return fmtVal(s.Median, unit) + " " + unit
	}
	return fmt.Sprintf("%s %s [%s–%s]", fmtVal(s.Median, unit), unit, fmtVal(s.P10, unit), fmtVal(s.P90, unit))
}
