package isolation

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupMode says how shells are confined.
type cgroupMode int

const (
	cgroupNone cgroupMode = iota // no usable cgroup: process groups, the session and RLIMIT_NPROC
	cgroupV1                     // legacy hierarchies: memory, pids (and freezer for the kill loop)
	cgroupV2                     // unified hierarchy with a delegated subtree
)

func (m cgroupMode) String() string {
	switch m {
	case cgroupV1:
		return "v1"
	case cgroupV2:
		return "v2"
	default:
		return "none"
	}
}

// cgroupSystem is the result of detection: where per-shell groups go.
type cgroupSystem struct {
	mode cgroupMode
	// v2: the directory under which <shellid> groups are created.
	v2Parent string
	// v1: controller name -> directory under which <shellid> groups are created.
	v1Parents map[string]string
	memory    bool // a memory controller is available
	pids      bool // a pids controller is available
	// own: the parents are the "winrmd" directories detection made (or
	// another daemon of the same cgroup made), which the daemon removes
	// when empty at shutdown (removeParents); false for a configured root.
	own bool
	// watch, when set, hears of every shell group made and removed, to kill
	// them should the daemon die (watchdog.go).
	watch *watchdog
}

// shellCgroup is the set of directories of one shell's cgroup.
type shellCgroup struct {
	sys  *cgroupSystem
	dirs map[string]string // v1: controller -> dir; v2: "" -> dir
	name string            // the directory name in every hierarchy
}

// mountInfo is one cgroup line of /proc/self/mountinfo.
type mountInfo struct {
	root, point, fstype string
	opts                []string
}

func readCgroupMounts() ([]mountInfo, error) {
	var buf []byte
	b, err := readSmallFile("/proc/self/mountinfo", &buf)
	if err != nil {
		return nil, err
	}
	var out []mountInfo
	for _, m := range parseMountinfo(b) {
		if m.fstype != "cgroup" && m.fstype != "cgroup2" {
			continue
		}
		out = append(out, mountInfo{root: unescapeMount(m.root), point: unescapeMount(m.point), fstype: m.fstype, opts: m.superOpts})
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ownCgroups is the daemon's own cgroups: controller (or "" for v2) -> path.
func ownCgroups() (map[string]string, error) {
	var buf []byte
	b, err := readSmallFile("/proc/self/cgroup", &buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, cg := range parseCgroupFile(b) {
		if cg.hierarchy == 0 && len(cg.controllers) == 0 {
			out[""] = cg.path
			continue
		}
		for _, c := range cg.controllers {
			out[c] = cg.path
		}
	}
	return out, nil
}

// hostDir maps a cgroup path as /proc/self/cgroup shows it to a directory
// under a mount of that hierarchy.
func hostDir(m mountInfo, cgPath string) (string, bool) {
	rel := cgPath
	if m.root != "/" {
		if cgPath != m.root && !strings.HasPrefix(cgPath, m.root+"/") {
			return "", false
		}
		rel = strings.TrimPrefix(cgPath, m.root)
	}
	return filepath.Join(m.point, rel), true
}

// detectCgroups decides how to confine shells. root is SpawnerOptions.CgroupRoot:
// "" autodetects, "off" disables, anything else is a cgroup v2 directory
// delegated to the daemon under which per-shell groups are made.
func detectCgroups(root string) (*cgroupSystem, []string, error) {
	var notes []string
	switch root {
	case "off", "none":
		return &cgroupSystem{mode: cgroupNone}, []string{"cgroups disabled by configuration"}, nil
	case "":
	default:
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			return nil, nil, fmt.Errorf("isolation: cgroup root %s is not a cgroup v2 directory: %w", root, err)
		}
		sys := &cgroupSystem{mode: cgroupV2, v2Parent: root}
		sys.memory, sys.pids = v2Controllers(root)
		if err := enableV2Controllers(root, sys.memory, sys.pids); err != nil {
			return nil, nil, err
		}
		return sys, nil, nil
	}

	mounts, err := readCgroupMounts()
	if err != nil {
		return &cgroupSystem{mode: cgroupNone}, []string{"cannot read mountinfo: " + err.Error()}, nil
	}
	own, err := ownCgroups()
	if err != nil {
		return &cgroupSystem{mode: cgroupNone}, []string{"cannot read /proc/self/cgroup: " + err.Error()}, nil
	}

	// cgroup v2, but only when it carries the controllers we need.
	if p, ok := own[""]; ok {
		for _, m := range mounts {
			if m.fstype != "cgroup2" {
				continue
			}
			dir, ok := hostDir(m, p)
			if !ok {
				continue
			}
			isRoot := p == m.root
			if filepath.Base(dir) == "daemon" {
				// Restarted inside the leaf an earlier start made.
				dir, isRoot = filepath.Dir(dir), filepath.Dir(p) == m.root
			}
			mem, pids := v2Controllers(dir)
			if !mem && !pids {
				notes = append(notes, "cgroup v2 at "+m.point+" has no memory or pids controller")
				continue
			}
			parent, err := prepareV2(dir, isRoot, mem, pids)
			if err != nil {
				notes = append(notes, "cgroup v2 not usable: "+err.Error())
				continue
			}
			return &cgroupSystem{mode: cgroupV2, v2Parent: parent, memory: mem, pids: pids, own: true}, notes, nil
		}
	}

	// cgroup v1: memory and pids, plus freezer for a race-free kill.
	sys := &cgroupSystem{mode: cgroupV1, v1Parents: map[string]string{}, own: true}
	for _, ctrl := range []string{"memory", "pids", "freezer"} {
		p, ok := own[ctrl]
		if !ok {
			continue
		}
		for _, m := range mounts {
			if m.fstype != "cgroup" || !contains(m.opts, ctrl) {
				continue
			}
			dir, ok := hostDir(m, p)
			if !ok {
				continue
			}
			parent := filepath.Join(dir, "winrmd")
			if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				notes = append(notes, fmt.Sprintf("cgroup v1 %s not usable: %v", ctrl, err))
				break
			}
			if err := unix.Access(parent, unix.W_OK|unix.X_OK); err != nil {
				notes = append(notes, fmt.Sprintf("cgroup v1 %s not usable: %s: %v", ctrl, parent, err))
				break
			}
			sys.v1Parents[ctrl] = parent
			break
		}
	}
	sys.memory = sys.v1Parents["memory"] != ""
	sys.pids = sys.v1Parents["pids"] != ""
	if !sys.memory && !sys.pids {
		return &cgroupSystem{mode: cgroupNone}, append(notes, "no usable memory or pids cgroup controller"), nil
	}
	return sys, notes, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// v2Controllers reports which of memory and pids dir may hand to children.
func v2Controllers(dir string) (mem, pids bool) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return false, false
	}
	f := strings.Fields(string(data))
	return contains(f, "memory"), contains(f, "pids")
}

// prepareV2 turns the daemon's own cgroup into an inner node: cgroup v2 forbids
// processes in a group that distributes controllers, so every process of the
// daemon's group moves into a leaf "<own>/daemon", then memory and pids are
// enabled for children and "<own>/winrmd" becomes the parent of shell groups.
func prepareV2(own string, isRoot, mem, pids bool) (string, error) {
	if !isRoot {
		procs, err := readPids(own)
		if err != nil {
			return "", err
		}
		if len(procs) > 0 {
			leaf := filepath.Join(own, "daemon")
			if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return "", err
			}
			for _, p := range procs {
				// A process may exit meanwhile; ESRCH is fine.
				if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(p)); err != nil && !errors.Is(err, unix.ESRCH) {
					return "", fmt.Errorf("moving pid %d into %s: %w", p, leaf, err)
				}
			}
		}
	}
	if err := enableV2Controllers(own, mem, pids); err != nil {
		return "", err
	}
	parent := filepath.Join(own, "winrmd")
	if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	if err := enableV2Controllers(parent, mem, pids); err != nil {
		return "", err
	}
	return parent, nil
}

func enableV2Controllers(dir string, mem, pids bool) error {
	var want []string
	if mem {
		want = append(want, "+memory")
	}
	if pids {
		want = append(want, "+pids")
	}
	if len(want) == 0 {
		return nil
	}
	if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), strings.Join(want, " ")); err != nil {
		return fmt.Errorf("enabling %v in %s: %w", want, dir, err)
	}
	return nil
}

// cgroupName turns a shell id into a safe directory name.
func cgroupName(shellID string) string {
	ok := shellID != "" && shellID != "." && shellID != ".." && len(shellID) <= 128
	for _, r := range shellID {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			ok = false
			break
		}
	}
	if ok {
		return shellID
	}
	return "shell-" + randomHex(8)
}

// create makes the shell's groups and writes the limits. The memory limit
// covers the worker too; the pids limit is set later by setPidsMax, once the
// worker's own threads are known.
func (s *cgroupSystem) create(shellID string, memoryMB int) (*shellCgroup, error) {
	if s.mode == cgroupNone {
		return nil, nil
	}
	name := cgroupName(shellID)
	cg := &shellCgroup{sys: s, dirs: map[string]string{}, name: name}
	// Before the group exists: the watchdog must know of it before any
	// process can be in it.
	s.watch.note('+', name)
	for ctrl, parent := range s.parents() {
		dir := filepath.Join(parent, name)
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, os.ErrNotExist) && s.own {
			// Another daemon sharing the parent removed it, empty, at its
			// shutdown (removeParents): make it again.
			if err = s.makeParent(parent); err == nil {
				err = os.Mkdir(dir, 0o755)
			}
		}
		if err != nil {
			if !errors.Is(err, os.ErrExist) {
				cg.remove()
				return nil, fmt.Errorf("isolation: creating cgroup %s: %w", dir, err)
			}
			// A leftover of a crashed daemon is reused only when empty.
			if pids, _ := readPids(dir); len(pids) > 0 {
				cg.remove()
				return nil, fmt.Errorf("isolation: cgroup %s exists and is in use", dir)
			}
		}
		cg.dirs[ctrl] = dir
	}
	if err := cg.setMemory(memoryMB); err != nil {
		cg.remove()
		return nil, err
	}
	return cg, nil
}

// discard kills whatever is left in a group that will serve no shell (a
// failed start, a pooled worker dropped) and removes it; nil: nothing.
func (cg *shellCgroup) discard() {
	if cg == nil {
		return
	}
	_ = cg.kill(5 * time.Second)
	_ = cg.remove()
}

// setMemory writes the shell's memory limit (none for 0), which covers the
// worker too: at create, or when a pooled worker's group becomes a shell's.
func (cg *shellCgroup) setMemory(memoryMB int) error {
	if cg == nil || memoryMB <= 0 {
		return nil
	}
	s := cg.sys
	bytes := strconv.FormatInt(int64(memoryMB)<<20, 10)
	var err error
	switch s.mode {
	case cgroupV2:
		if s.memory {
			err = writeFile(filepath.Join(cg.dirs[""], "memory.max"), bytes)
			if err == nil {
				// No swap beyond the limit; the file is absent without swap accounting.
				_ = writeFile(filepath.Join(cg.dirs[""], "memory.swap.max"), "0")
			}
		}
	case cgroupV1:
		if d := cg.dirs["memory"]; d != "" {
			err = writeFile(filepath.Join(d, "memory.limit_in_bytes"), bytes)
			if err == nil {
				// memsw must be >= limit; absent without swap accounting.
				_ = writeFile(filepath.Join(d, "memory.memsw.limit_in_bytes"), bytes)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("isolation: setting the memory limit: %w", err)
	}
	return nil
}

// makeParent makes a parent of shell groups again, as detection did.
func (s *cgroupSystem) makeParent(parent string) error {
	if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if s.mode == cgroupV2 {
		return enableV2Controllers(parent, s.memory, s.pids)
	}
	return nil
}

// removeParents removes the parents of the shell groups when they are
// empty, at the daemon's clean shutdown, so that nothing of the daemon
// stays under /sys/fs/cgroup. Several daemons may share a parent (one per
// listener set, test runs): the kernel refuses to remove a group that
// still has child groups or processes (EBUSY), so another daemon's live
// shells keep it, and a daemon that finds it gone makes it again (create).
// A configured root (SpawnerOptions.CgroupRoot) is not the daemon's and
// stays, as does the v2 leaf "daemon" the daemon itself still runs in.
func (s *cgroupSystem) removeParents() error {
	if s == nil || !s.own {
		return nil
	}
	var errs []error
	for _, p := range s.parents() {
		if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("isolation: removing cgroup %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// setPidsMax writes pids.max (no-op without a pids controller).
func (cg *shellCgroup) setPidsMax(n int) error {
	if cg == nil || !cg.sys.pids {
		return nil
	}
	d := cg.dirs["pids"]
	if cg.sys.mode == cgroupV2 {
		d = cg.dirs[""]
	}
	return writeFile(filepath.Join(d, "pids.max"), strconv.Itoa(n))
}

// pidsLimit is a shell's kernel process limit. The worker lives in the
// shell's group, so its own threads count against pids.max as much as the
// commands' processes do; the limit is the shell's budget (Limits.
// MaxProcesses) plus the threads the worker has. It is set once the worker
// has answered SetupOK (its spare threads made), and again before each
// Start: a thread the Go runtime made since (a P handed over while the
// locked thread forks) would otherwise take a slot of the budget, and the
// last command the session's count allows would fail to fork.
type pidsLimit struct {
	cg     *shellCgroup
	budget int
}

// newPidsLimit is the limit for a shell with budget processes, or nil when
// there is none to keep (no budget, or no pids controller).
func newPidsLimit(cg *shellCgroup, budget int) *pidsLimit {
	if budget <= 0 || cg == nil || !cg.sys.pids {
		return nil
	}
	return &pidsLimit{cg: cg, budget: budget}
}

// set writes pids.max for the worker pid's threads now.
func (p *pidsLimit) set(pid int) error {
	return p.cg.setPidsMax(p.budget + countTasks(pid))
}

// add puts pid into every group of the shell.
func (cg *shellCgroup) add(pid int) error {
	if cg == nil {
		return nil
	}
	for _, d := range cg.dirs {
		if err := writeFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("isolation: adding pid %d to %s: %w", pid, d, err)
		}
	}
	return nil
}

// pids lists the processes in the shell's cgroup.
func (cg *shellCgroup) pids() ([]int, error) {
	if cg == nil {
		return nil, nil
	}
	return readPids(cg.procsDir())
}

// procsDir is the group whose cgroup.procs lists every process of the shell.
func (cg *shellCgroup) procsDir() string {
	if cg.sys.mode == cgroupV2 {
		return cg.dirs[""]
	}
	for _, c := range []string{"freezer", "pids", "memory"} {
		if d := cg.dirs[c]; d != "" {
			return d
		}
	}
	return ""
}

// kill kills every process in the shell's cgroup and waits until it is
// empty: cgroup.kill on v2 when the kernel has it; otherwise a
// freeze / kill / thaw loop (freezer where there is one), signalling each
// member through a pidfd after checking it is still a member, so a recycled
// pid is never hit.
func (cg *shellCgroup) kill(timeout time.Duration) error {
	return cg.killExcept(timeout, 0)
}

// killExcept kills every process of the group but skip (0: none).
func (cg *shellCgroup) killExcept(timeout time.Duration, skip int) error {
	if cg == nil {
		return nil
	}
	deadline := time.Now().Add(timeout)
	dir := cg.procsDir()
	if cg.sys.mode == cgroupV2 && skip == 0 {
		if err := writeFile(filepath.Join(dir, "cgroup.kill"), "1"); err == nil {
			return waitEmpty(dir, deadline)
		}
	}
	freeze, thaw := cg.freezer()
	for {
		pids, err := readPids(dir)
		if err != nil {
			return err
		}
		pids = slices.DeleteFunc(pids, func(p int) bool { return p == skip })
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			thaw()
			return fmt.Errorf("isolation: cgroup %s still has %d processes", dir, len(pids))
		}
		frozen := freeze()
		if frozen {
			// Re-read: nothing can fork while frozen.
			pids, _ = readPids(dir)
			pids = slices.DeleteFunc(pids, func(p int) bool { return p == skip })
		}
		for _, p := range pids {
			killIfMember(p, dir)
		}
		thaw()
		time.Sleep(5 * time.Millisecond)
	}
}

// freezer returns freeze and thaw functions for the shell's group (no-ops
// without a freezer). freeze reports whether the group reached frozen.
func (cg *shellCgroup) freezer() (func() bool, func()) {
	noop := func() bool { return false }
	switch cg.sys.mode {
	case cgroupV2:
		f := filepath.Join(cg.dirs[""], "cgroup.freeze")
		if _, err := os.Stat(f); err != nil {
			return noop, func() {}
		}
		return func() bool {
				if writeFile(f, "1") != nil {
					return false
				}
				return pollFile(filepath.Join(cg.dirs[""], "cgroup.events"), "frozen 1", 200*time.Millisecond)
			}, func() {
				_ = writeFile(f, "0")
			}
	case cgroupV1:
		d := cg.dirs["freezer"]
		if d == "" {
			return noop, func() {}
		}
		f := filepath.Join(d, "freezer.state")
		return func() bool {
				if writeFile(f, "FROZEN") != nil {
					return false
				}
				return pollFile(f, "FROZEN", 200*time.Millisecond)
			}, func() {
				_ = writeFile(f, "THAWED")
			}
	}
	return noop, func() {}
}

// pollFile waits until file contains want (a line or the whole content).
func pollFile(file, want string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		data, err := os.ReadFile(file)
		if err != nil {
			return false
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if strings.TrimSpace(line) == want {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

func waitEmpty(dir string, deadline time.Time) error {
	for {
		pids, err := readPids(dir)
		if err != nil || len(pids) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("isolation: cgroup %s still has %d processes", dir, len(pids))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// killIfMember sends SIGKILL to pid if it is still in the cgroup dir.
func killIfMember(pid int, dir string) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			_ = unix.Kill(pid, unix.SIGKILL) // old kernel: the freezer makes this safe enough
		}
		return
	}
	defer unix.Close(fd)
	if !inCgroupDir(pid, dir) {
		return
	}
	_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
}

// inCgroupDir reports whether pid's cgroup.procs membership includes dir.
func inCgroupDir(pid int, dir string) bool {
	pids, err := readPids(dir)
	if err != nil {
		return false
	}
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

// remove deletes the shell's groups (they must be empty).
func (cg *shellCgroup) remove() error {
	if cg == nil {
		return nil
	}
	var errs []error
	for _, d := range cg.dirs {
		var err error
		for i := 0; i < 50; i++ {
			err = unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				err = nil
				break
			}
			if !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", d, err))
		}
	}
	if len(errs) == 0 {
		cg.sys.watch.note('-', cg.name)
	}
	return errors.Join(errs...)
}

func readPids(dir string) ([]int, error) {
	var buf []byte
	data, err := readSmallFile(filepath.Join(dir, "cgroup.procs"), &buf)
	if err != nil {
		return nil, err
	}
	return appendInts(nil, data), nil
}

func writeFile(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
