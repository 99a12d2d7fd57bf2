package isolation

import (
	"bytes"
	"strconv"
)

// The parsers of /proc files the spawner reads off the hot path: every
// process's stat (tree scans), status (a uid, NSpid), comm, and the
// daemon's own mountinfo and cgroup files at start-up. They were
// github.com/prometheus/procfs, whose package initialisers alone allocated
// 96 KB and took 0.26 ms in every worker (GODEBUG=inittrace=1), a worker
// that never calls it: the worker binary links this package whole. A
// process's /proc files are its user's to shape (comm is any 15 bytes,
// spaces and parentheses included), so each parser takes the file's bytes
// and bounds what it believes; FuzzProcParsers holds them to that.

// procStat is what the scans need of /proc/<pid>/stat.
type procStat struct {
	PID, PPID, Session, NumThreads int
}

// parseStat reads "pid (comm) state ppid pgrp session ... num_threads ...":
// comm may hold spaces and ')' (the last ')' ends it). It allocates
// nothing: procPPid calls it in every Close's process-tree walk.
func parseStat(b []byte) (procStat, bool) {
	var st procStat
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return st, false
	}
	pid, ok := decimal(bytes.TrimSpace(b[:open]))
	if !ok {
		return st, false
	}
	st.PID = pid
	// After ") ": state(0) ppid(1) pgrp(2) session(3) ... num_threads(17).
	rest, field := b[end+1:], 0
	for field <= 17 {
		rest = bytes.TrimLeft(rest, " ")
		if len(rest) == 0 {
			return procStat{}, false
		}
		f := rest
		if i := bytes.IndexByte(rest, ' '); i >= 0 {
			f, rest = rest[:i], rest[i:]
		} else {
			rest = nil
		}
		var dst *int
		switch field {
		case 1:
			dst = &st.PPID
		case 3:
			dst = &st.Session
		case 17:
			dst = &st.NumThreads
		}
		if dst != nil {
			if *dst, ok = decimal(bytes.TrimRight(f, "\n")); !ok {
				return procStat{}, false
			}
		}
		field++
	}
	return st, true
}

// decimal parses a non-negative decimal of at most 10 digits (pids, thread
// counts and uids all fit).
func decimal(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

// statusFields is the fields of the line of /proc/<pid>/status that starts
// with key (for example "Uid:"), nil when there is none.
func statusFields(b []byte, key string) [][]byte {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if rest, ok := bytes.CutPrefix(line, []byte(key)); ok {
			return bytes.Fields(rest)
		}
	}
	return nil
}

// mountLine is one line of a mountinfo file: "id parent major:minor root
// mountpoint options [optional fields...] - fstype source superoptions".
type mountLine struct {
	root, point, fstype string
	superOpts           []string // option names, values cut off
}

func parseMountinfo(b []byte) []mountLine {
	var out []mountLine
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		f := bytes.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if string(f[i]) == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(f) {
			continue
		}
		m := mountLine{root: string(f[3]), point: string(f[4]), fstype: string(f[sep+1])}
		if sep+3 < len(f) {
			for _, o := range bytes.Split(f[sep+3], []byte{','}) {
				name, _, _ := bytes.Cut(o, []byte{'='})
				m.superOpts = append(m.superOpts, string(name))
			}
		}
		out = append(out, m)
	}
	return out
}

// cgroupLine is one line of /proc/<pid>/cgroup: "hierarchy:controllers:path";
// cgroup v2's is "0::path".
type cgroupLine struct {
	hierarchy   int
	controllers []string
	path        string
}

func parseCgroupFile(b []byte) []cgroupLine {
	var out []cgroupLine
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		id, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		ctrls, path, ok := bytes.Cut(rest, []byte{':'})
		h, okID := decimal(id)
		if !ok || !okID {
			continue
		}
		cl := cgroupLine{hierarchy: h, path: string(path)}
		if len(ctrls) > 0 {
			for _, c := range bytes.Split(ctrls, []byte{','}) {
				cl.controllers = append(cl.controllers, string(c))
			}
		}
		out = append(out, cl)
	}
	return out
}

// allPids lists the numeric entries of /proc.
func allPids(buf *[]byte) []int {
	names, err := readDirNames("/proc", buf)
	if err != nil {
		return nil
	}
	out := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
			out = append(out, pid)
		}
	}
	return out
}
