package isolation

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Shell cgroups left by a daemon that died (kill -9, OOM, a crash) are
// killed and removed when a daemon starts (issue 14.3): a user can SIGSTOP
// its own worker so that the worker never acts on the parent-death signal,
// and its processes would otherwise outlive the daemon and its restarts.
// Several daemons may share the parent directory (one per listener set, test
// runs), so a group is only touched when no live daemon owns it:
//
//   - a group whose worker's parent is a live process running the same
//     binary as the worker (a daemon re-executing itself), or whose worker
//     runs the WorkerBinary installed beside the parent's executable,
//     belongs to that daemon and is left alone;
//   - an empty group is removed only when older than orphanMinAge, so a
//     group another daemon made a moment ago, before adding its worker, is
//     not taken from under it;
//   - any other group is an orphan: its processes are killed (the freezer,
//     or cgroup.kill on v2, so a stopped process goes too) and it is removed.
const orphanMinAge = time.Minute

// reapOrphans kills and removes orphaned shell groups; it returns the names
// it removed and the errors it met, for the start-up log.
func (s *cgroupSystem) reapOrphans() (reaped []string, errs []error) {
	if s == nil || s.mode == cgroupNone {
		return nil, nil
	}
	parents := s.parents()
	names := map[string]bool{}
	for _, p := range parents {
		ents, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() && e.Name() != "daemon" {
				names[e.Name()] = true
			}
		}
	}
	for name := range names {
		cg := &shellCgroup{sys: s, dirs: map[string]string{}}
		var newest time.Time
		for ctrl, p := range parents {
			d := filepath.Join(p, name)
			if fi, err := os.Stat(d); err == nil {
				cg.dirs[ctrl] = d
				newest = later(newest, fi.ModTime())
			}
		}
		pids, err := cg.pids()
		if err != nil {
			continue
		}
		if len(pids) == 0 {
			if time.Since(newest) < orphanMinAge {
				continue
			}
		} else if ownedByLiveDaemon(pids) {
			continue
		} else if err := cg.kill(10 * time.Second); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := cg.remove(); err != nil {
			errs = append(errs, err)
			continue
		}
		reaped = append(reaped, name)
	}
	return reaped, errs
}

// ownedByLiveDaemon reports whether a process of the group has a parent
// outside it that runs the same executable: a worker and its daemon.
func ownedByLiveDaemon(pids []int) bool {
	var buf []byte
	for _, p := range pids {
		pp := procPPid(p, &buf)
		if pp <= 1 || slices.Contains(pids, pp) {
			continue
		}
		// stat follows /proc's exe link to the file itself, whatever mount
		// namespace the worker joined (sidecar mode).
		exe, err1 := os.Stat("/proc/" + strconv.Itoa(p) + "/exe")
		pexe, err2 := os.Stat("/proc/" + strconv.Itoa(pp) + "/exe")
		if err1 == nil && err2 == nil && os.SameFile(exe, pexe) {
			return true
		}
		// Or the worker binary installed beside the parent's executable
		// (WorkerBinary, findWorkerBinary): that daemon's worker too.
		if err1 == nil {
			if pl, err := os.Readlink("/proc/" + strconv.Itoa(pp) + "/exe"); err == nil {
				sib := filepath.Join(filepath.Dir(strings.TrimSuffix(pl, " (deleted)")), WorkerBinary)
				if fi, err := os.Stat(sib); err == nil && os.SameFile(exe, fi) {
					return true
				}
			}
		}
	}
	return false
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
