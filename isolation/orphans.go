package isolation

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
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
//     binary as the worker (a daemon re-executing itself), or holding the
//     worker's executable open (a daemon that runs WorkerBinary keeps it
//     open for as long as it runs: procSpawner.exeHeld), belongs to that
//     daemon and is left alone. Both compare files through /proc's magic
//     links, never paths: a daemon in a chroot or its own mount namespace
//     (the package test's `chroot root winrmd serve`) cannot resolve the
//     other daemon's paths, and a path check there took the host daemon's
//     live shells for orphans and killed them;
//   - an empty group is removed only when older than orphanMinAge, so a
//     group another daemon made a moment ago, before adding its worker, is
//     not taken from under it. A daemon that starts within that minute of
//     its predecessor's death (a restart by systemd or the watchdog) finds
//     the dead daemon's empty pre-started worker groups young, so it makes
//     one more pass once they are old enough (reapLater);
//   - any other group is an orphan: its processes are killed (the freezer,
//     or cgroup.kill on v2, so a stopped process goes too) and it is removed.
const orphanMinAge = time.Minute

// reapOrphans kills and removes orphaned shell groups; it returns the names
// it removed, how many empty groups it left for being younger than minAge,
// and the errors it met, for the log.
func (s *cgroupSystem) reapOrphans(minAge time.Duration) (reaped []string, young int, errs []error) {
	if s == nil || s.mode == cgroupNone {
		return nil, 0, nil
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
			if time.Since(newest) < minAge {
				young++
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
	return reaped, young, errs
}

// reapLater makes one more pass of reapOrphans after the delay, with the
// same rules, and logs what it did. stop cancels it, and waits for a pass
// under way, so that none runs after the daemon's shutdown.
func (s *cgroupSystem) reapLater(delay, minAge time.Duration, log *slog.Logger) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-quit:
			return
		case <-t.C:
		}
		reaped, young, errs := s.reapOrphans(minAge)
		if len(reaped) > 0 || len(errs) > 0 {
			log.Warn("shell cgroups left by a daemon that died, found after start-up: removed",
				slog.Any("cgroups", reaped), slog.Any("errors", errs), slog.Int("young_empty_left", young))
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

// ownedByLiveDaemon reports whether a process of the group has a parent
// outside it that runs the same executable or holds it open: a worker and
// its daemon.
func ownedByLiveDaemon(pids []int) bool {
	var buf []byte
	for _, p := range pids {
		pp := procPPid(p, &buf)
		if pp <= 1 || slices.Contains(pids, pp) {
			continue
		}
		// stat follows /proc's links to the files themselves, whatever
		// root or mount namespace the worker, its parent or this daemon
		// has (sidecar mode, a daemon in a chroot).
		exe, err := os.Stat("/proc/" + strconv.Itoa(p) + "/exe")
		if err != nil {
			continue
		}
		if pexe, err := os.Stat("/proc/" + strconv.Itoa(pp) + "/exe"); err == nil && os.SameFile(exe, pexe) {
			return true
		}
		if holdsOpen(pp, exe, &buf) {
			return true
		}
	}
	return false
}

// holdsOpen reports whether process pid has a descriptor on the file fi.
func holdsOpen(pid int, fi os.FileInfo, buf *[]byte) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, err := readDirNames(dir, buf)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if f, err := os.Stat(dir + "/" + fd); err == nil && os.SameFile(fi, f) {
			return true
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
