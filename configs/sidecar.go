package configs

import (
	"strings"
	"unicode"
)

// Sidecar is container sidecar mode: winrmd runs in its own container and
// every shell runs inside the target container, in its mount, pid, uts, ipc
// and network namespaces, as an account of the target's /etc/passwd and
// /etc/group. Empty Target: off (shells run where the daemon runs).
type Sidecar struct {
	// Target names the container: a pid ("1234", as the daemon sees it), a
	// cgroup path (its first process; under /sys/fs/cgroup, so on cgroup v2
	// "/kubepods.slice/.../<id>", on v1 with a controller's directory first:
	// "/pids/kubepods/.../<id>"), or a process name (the comm of its init: the
	// lowest-numbered process of that name). It is resolved again for
	// every new shell, so a restarted container is found again.
	Target string `yaml:"target"`
}

// MaxSidecarTargetBytes bounds sidecar.target.
const MaxSidecarTargetBytes = 4096

func (s Sidecar) validate() error {
	t := s.Target
	if t == "" {
		return nil
	}
	if len(t) > MaxSidecarTargetBytes {
		return bad("sidecar.target", "longer than %d bytes", MaxSidecarTargetBytes)
	}
	if strings.TrimSpace(t) != t {
		return bad("sidecar.target", "leading or trailing space in %q", t)
	}
	for _, r := range t {
		if unicode.IsControl(r) {
			return bad("sidecar.target", "control character in %q", t)
		}
	}
	if strings.HasPrefix(t, "/") {
		for _, part := range strings.Split(t[1:], "/") {
			if part == ".." {
				return bad("sidecar.target", "cgroup path %q contains ..", t)
			}
		}
	} else if strings.Contains(t, "/") {
		return bad("sidecar.target", "%q is neither a pid, an absolute cgroup path nor a process name", t)
	}
	return nil
}
