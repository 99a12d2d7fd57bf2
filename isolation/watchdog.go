package isolation

// The watchdog: the SIGKILL stage at daemon death (issue 14.3).
//
// A worker ends its shell when the daemon dies because its parent-death
// signal (SIGTERM) runs its shutdown. A user can SIGSTOP its own worker
// (same uid), and a stopped worker never acts on the pending SIGTERM, so
// after a kill -9, an OOM kill or a crash of the daemon the user's
// processes would live on until the next start-up reaps them (orphans.go).
// The watchdog closes that window with a cleanup the user cannot block: a
// small root process per daemon (the binary re-executed as
// `winrmd watchdog <cgroup parents>`), started with the spawner, holding
// the read end of a pipe whose only writer is the daemon.
//
// The daemon writes one line per shell cgroup it makes and removes:
//
//	+<name>\n    before any process enters the group
//	-<name>\n    once the group is gone
//
// (names as cgroupName makes them: at most 128 of [A-Za-z0-9._-]). At EOF,
// which the kernel delivers when the daemon's last descriptor closes, so at
// its death whatever the cause, the watchdog kills every process of every
// group still listed with SIGKILL (cgroup.kill, or the freezer loop: a
// stopped process dies too), removes the groups, and exits. It makes no
// guess about which groups are the dead daemon's: other daemons sharing the
// cgroup parent are never touched. The user cannot signal it (root), and it
// sets its own oom_score_adj to -1000 so the OOM killer that took the
// daemon leaves it. Should it still die, the daemon starts another and
// replays the live groups to it.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// watchdogFD is the watchdog's end of the pipe.
const watchdogFD = 3

// Limits of the watchdog's input.
const (
	maxWatchLine   = 1 + 128 // op + a cgroupName
	maxWatchGroups = 1 << 20 // far more shells than one daemon can hold
)

// watchdogArgs is what the watchdog is told in argv: where the groups are.
type watchdogArgs struct {
	Mode string            `json:"mode"` // "v1" | "v2"
	V2   string            `json:"v2,omitempty"`
	V1   map[string]string `json:"v1,omitempty"`
}

// IsWatchdog reports whether this process was started as the daemon's
// watchdog. main calls WatchdogMain when it is.
func IsWatchdog() bool { return len(os.Args) > 1 && os.Args[1] == "watchdog" }

// WatchdogMain is the watchdog process; it never returns.
func WatchdogMain() {
	os.Exit(watchdogMain())
}

func watchdogMain() int {
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "winrmd watchdog %d: %s\n", os.Getpid(), fmt.Sprintf(format, a...))
	}
	if len(os.Args) != 3 {
		logf("usage: winrmd watchdog <cgroup parents>")
		return 2
	}
	sys, err := parseWatchdogArgs(os.Args[2])
	if err != nil {
		logf("%v", err)
		return 2
	}
	// The OOM killer that took the daemon must not take its cleanup.
	if err := writeFile("/proc/self/oom_score_adj", "-1000"); err != nil {
		logf("oom_score_adj: %v", err)
	}
	f := os.NewFile(watchdogFD, "winrmd-watchdog-pipe")
	if f == nil {
		logf("no pipe on fd %d", watchdogFD)
		return 2
	}
	groups, err := readWatchList(f)
	if err != nil {
		// Keep the groups read so far: a daemon that wrote nonsense is
		// still gone, or going, when the pipe ends.
		logf("%v; cleaning up the groups named so far", err)
		_, _ = io.Copy(io.Discard, f)
	}
	// EOF: the daemon is gone.
	var killed []string
	for name := range groups {
		cg := sys.group(name)
		if len(cg.dirs) == 0 {
			// Gone already: another daemon's start-up reaped it.
			killed = append(killed, name)
			continue
		}
		if err := cg.kill(10 * time.Second); err != nil {
			logf("%v", err)
		}
		if err := cg.remove(); err != nil {
			logf("%v", err)
			continue
		}
		killed = append(killed, name)
	}
	if len(killed) > 0 {
		sort.Strings(killed)
		logf("the daemon is gone: killed and removed %d cgroup(s) of shells and pre-started workers: %v", len(killed), killed)
	}
	return 0
}

func parseWatchdogArgs(s string) (*cgroupSystem, error) {
	var a watchdogArgs
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return nil, fmt.Errorf("bad arguments: %w", err)
	}
	ok := func(p string) bool { return filepath.IsAbs(p) && filepath.Clean(p) == p }
	switch a.Mode {
	case "v2":
		if !ok(a.V2) {
			return nil, fmt.Errorf("bad v2 parent %q", a.V2)
		}
		return &cgroupSystem{mode: cgroupV2, v2Parent: a.V2}, nil
	case "v1":
		if len(a.V1) == 0 {
			return nil, errors.New("no v1 parents")
		}
		for c, p := range a.V1 {
			if !ok(p) {
				return nil, fmt.Errorf("bad v1 %s parent %q", c, p)
			}
		}
		return &cgroupSystem{mode: cgroupV1, v1Parents: a.V1}, nil
	}
	return nil, fmt.Errorf("bad mode %q", a.Mode)
}

// readWatchList reads +name / -name lines until EOF and returns the names
// added and not removed.
func readWatchList(r io.Reader) (map[string]bool, error) {
	groups := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxWatchLine+1)
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 2 || (line[0] != '+' && line[0] != '-') || cgroupName(line[1:]) != line[1:] {
			return groups, fmt.Errorf("bad line %q", truncate(line, 64))
		}
		name := line[1:]
		if line[0] == '-' {
			delete(groups, name)
			continue
		}
		if len(groups) >= maxWatchGroups {
			return groups, fmt.Errorf("more than %d groups", maxWatchGroups)
		}
		groups[name] = true
	}
	return groups, sc.Err()
}

// group is the shell cgroup name, in every hierarchy where it exists.
func (s *cgroupSystem) group(name string) *shellCgroup {
	cg := &shellCgroup{sys: s, dirs: map[string]string{}, name: name}
	for ctrl, p := range s.parents() {
		d := filepath.Join(p, name)
		if _, err := os.Stat(d); err == nil {
			cg.dirs[ctrl] = d
		}
	}
	return cg
}

// parents maps controller ("" on v2) to the directory of shell groups.
func (s *cgroupSystem) parents() map[string]string {
	if s.mode == cgroupV2 {
		return map[string]string{"": s.v2Parent}
	}
	return s.v1Parents
}

// watchdog is the daemon's side: the pipe's write end and the live groups.
type watchdog struct {
	exe string
	arg string
	log *slog.Logger

	mu   sync.Mutex
	w    *os.File
	live map[string]bool
}

// startWatchdog starts the watchdog of s's shell cgroups.
func startWatchdog(s *cgroupSystem, exe string, log *slog.Logger) (*watchdog, error) {
	a := watchdogArgs{Mode: s.mode.String()}
	if s.mode == cgroupV2 {
		a.V2 = s.v2Parent
	} else {
		a.V1 = s.v1Parents
	}
	b, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	wd := &watchdog{exe: exe, arg: string(b), log: log, live: map[string]bool{}}
	if err := wd.start(); err != nil {
		return nil, err
	}
	return wd, nil
}

// start starts a watchdog process, tells it the live groups, and restarts
// it should it ever end while the daemon runs.
func (wd *watchdog) start() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("isolation: watchdog pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        wd.exe,
		Args:        []string{"winrmd", "watchdog", wd.arg},
		Env:         []string{"GOMAXPROCS=1", "GODEBUG=memprofilerate=0"},
		Dir:         "/",
		ExtraFiles:  []*os.File{r}, // fd 3
		Stderr:      os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return fmt.Errorf("isolation: starting the watchdog: %w", err)
	}
	wd.mu.Lock()
	wd.w = w
	for name := range wd.live {
		wd.writeLocked('+', name)
	}
	wd.mu.Unlock()
	wd.log.Info("watchdog started: it kills this daemon's shell cgroups should the daemon die", slog.Int("watchdog_pid", cmd.Process.Pid))
	go func() {
		err := cmd.Wait()
		wd.log.Error("the watchdog ended while the daemon runs; starting another", slog.Any("error", err))
		wd.mu.Lock()
		w.Close()
		wd.w = nil
		wd.mu.Unlock()
		for {
			time.Sleep(time.Second)
			err := wd.start()
			if err == nil {
				return
			}
			wd.log.Error("watchdog restart failed", slog.Any("error", err))
		}
	}()
	return nil
}

// note tells the watchdog a group was made (+) or removed (-).
func (wd *watchdog) note(op byte, name string) {
	if wd == nil || name == "" {
		return
	}
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if op == '+' {
		wd.live[name] = true
	} else {
		delete(wd.live, name)
	}
	wd.writeLocked(op, name)
}

func (wd *watchdog) writeLocked(op byte, name string) {
	if wd.w == nil {
		return // restarting: the new one gets the live set
	}
	// The pipe is non-blocking under Go's poller; a watchdog that stopped
	// reading must not hold up shell creation.
	_ = wd.w.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := wd.w.Write([]byte(string(op) + name + "\n")); err != nil {
		wd.log.Warn("telling the watchdog about a shell cgroup", slog.String("cgroup", name), slog.Any("error", err))
	}
}
