package main

// Server CPU time. sshd's listener reaps its per-connection processes
// without their times reaching its cutime, so /proc alone undercounts it:
// each server goes into a CPU-accounting cgroup of its own (cgroup v1
// cpuacct, or cgroup v2 for sshd only, where moving winrmd could get in
// the way of the per-shell cgroups it makes), which counts exited tasks
// too. Without either, /proc (root + live descendants + reaped children)
// is the fallback and the JSON says so.

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type cpuMeter struct {
	method string
	file   string // cpuacct.usage (ns) or cpu.stat (usage_usec)
	root   int
}

func (m *cpuMeter) seconds() float64 {
	switch m.method {
	case "cgroup-v1-cpuacct":
		b, err := os.ReadFile(m.file)
		if err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			return float64(n) / 1e9
		}
	case "cgroup-v2":
		b, err := os.ReadFile(m.file)
		if err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					return float64(n) / 1e6
				}
			}
		}
	}
	return treeCPU(m.root)
}

// newCPUMeter makes the cgroup for name (before the server starts, so its
// removal is queued after the server's stop); attach moves the server in.
func newCPUMeter(name string, allowV2 bool, cl *cleanups) *cpuMeter {
	base := "winrmd-bench-" + strconv.Itoa(os.Getpid()) + "-" + name
	try := func(dir, method, file string) *cpuMeter {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil
		}
		cl.add(func() {
			for i := 0; i < 50; i++ {
				if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			warnf("could not remove cgroup %s", dir)
		})
		return &cpuMeter{method: method, file: filepath.Join(dir, file)}
	}
	if st, err := os.Stat("/sys/fs/cgroup/cpuacct/cpuacct.usage"); err == nil && st.Mode().IsRegular() {
		if m := try(filepath.Join("/sys/fs/cgroup/cpuacct", base), "cgroup-v1-cpuacct", "cpuacct.usage"); m != nil {
			return m
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil && allowV2 {
		if m := try(filepath.Join("/sys/fs/cgroup", base), "cgroup-v2", "cpu.stat"); m != nil {
			return m
		}
	}
	return &cpuMeter{method: "proc"}
}

// attach moves pid (and so everything it forks later) into the cgroup.
func (m *cpuMeter) attach(pid int) {
	m.root = pid
	if m.method == "proc" {
		return
	}
	procs := filepath.Join(filepath.Dir(m.file), "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		warnf("cpu accounting: %v; falling back to /proc", err)
		m.method = "proc"
	}
}
