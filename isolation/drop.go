package isolation

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// dropPrivileges switches the whole worker process, every thread of it, from
// root to uid/gid/groups. It is deliberately small and loud: any surprise
// ends the process through fatal (which does not return).
//
// Order matters: supplementary groups and the gid can only be changed while
// still root, so setgroups, then setgid, then setuid. The syscall package's
// Setgroups/Setgid/Setuid apply to all threads (AllThreadsSyscall, or libc's
// setxid broadcast under cgo); golang.org/x/sys/unix's setgroups would change
// only the calling thread, which is why it is not used here.
//
// The caller has locked the OS thread: prctl settings made afterwards are
// per-thread, and every command is forked from this thread.
//
// emptyBounding first empties the capability bounding set of this thread,
// the one every command is forked from (it takes CAP_SETPCAP, so only
// while root): nothing the commands exec can then carry a capability,
// whatever setuid bit or file capability it has.
func dropPrivileges(uid, gid uint32, groups []uint32, emptyBounding bool, fatal func(string)) {
	if emptyBounding {
		if err := dropBoundingSet(); err != nil {
			fatal(err.Error())
		}
	}
	gs := make([]int, len(groups))
	for i, g := range groups {
		gs[i] = int(g)
	}
	if err := syscall.Setgroups(gs); err != nil {
		fatal("setgroups: " + err.Error())
	}
	if err := syscall.Setgid(int(gid)); err != nil {
		fatal("setgid: " + err.Error())
	}
	if err := syscall.Setuid(int(uid)); err != nil {
		fatal("setuid: " + err.Error())
	}
	// A worker that empties its bounding set was forked with no_new_privs
	// (the daemon's confined spawn thread), and dropBoundingSet relies on
	// every thread carrying it.
	if msg := checkCredentials(uid, gid, groups, emptyBounding); msg != "" {
		fatal("credentials after the drop: " + msg)
	}
	if uid != 0 {
		// The point of no return: root must be out of reach. The attempts
		// are raw syscalls on this thread: syscall.Setuid would make glibc
		// signal every thread to repeat each one. checkCredentials has
		// shown that every thread holds the same ids and no capability,
		// which is what the kernel decides these by.
		if _, _, e := unix.RawSyscall(unix.SYS_SETUID, 0, 0, 0); e == 0 {
			fatal("setuid(0) succeeded after the drop")
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETREUID, ^uintptr(0), 0, 0); e == 0 {
			fatal("seteuid(0) succeeded after the drop")
		}
		if gid != 0 {
			if _, _, e := unix.RawSyscall(unix.SYS_SETGID, 0, 0, 0); e == 0 {
				fatal("setgid(0) succeeded after the drop")
			}
		}
		if err := unix.Setgroups([]int{0}); err == nil { // this thread only, too
			fatal("setgroups succeeded after the drop")
		}
	}
}

// checkCredentials verifies, for the calling thread and for every thread in
// /proc/self/task, that real, effective, saved and filesystem ids are uid and
// gid, that the supplementary groups are exactly groups, that a non-root
// uid holds no capabilities, and with nnp that no_new_privs is set. It
// returns "" when all is as expected.
func checkCredentials(uid, gid uint32, groups []uint32, nnp bool) string {
	r, e, s := unix.Getresuid()
	if uint32(r) != uid || uint32(e) != uid || uint32(s) != uid {
		return fmt.Sprintf("resuid %d/%d/%d, want %d", r, e, s, uid)
	}
	r, e, s = unix.Getresgid()
	if uint32(r) != gid || uint32(e) != gid || uint32(s) != gid {
		return fmt.Sprintf("resgid %d/%d/%d, want %d", r, e, s, gid)
	}
	got, err := unix.Getgroups()
	if err != nil {
		return "getgroups: " + err.Error()
	}
	if !sameGroups(got, groups) {
		return fmt.Sprintf("groups %v, want %v", got, groups)
	}
	var buf []byte
	tasks, err := readDirNames("/proc/self/task", &buf)
	if err != nil {
		return "reading /proc/self/task: " + err.Error()
	}
	for _, t := range tasks {
		st, err := readSmallFile(threadFile(t, "status"), &buf)
		if err != nil {
			continue // the thread may be gone
		}
		if msg := checkStatus(string(st), uid, gid, nnp); msg != "" {
			return "thread " + t + ": " + msg
		}
	}
	return ""
}

// checkStatus checks the Uid, Gid and capability lines of a /proc status
// file, and with nnp its NoNewPrivs line.
func checkStatus(status string, uid, gid uint32, nnp bool) string {
	want := map[string]string{
		"Uid": strings.Repeat(strconv.FormatUint(uint64(uid), 10)+"\t", 4),
		"Gid": strings.Repeat(strconv.FormatUint(uint64(gid), 10)+"\t", 4),
	}
	if uid != 0 {
		want["CapPrm"] = "0000000000000000"
		want["CapEff"] = "0000000000000000"
	}
	if nnp {
		want["NoNewPrivs"] = "1"
	}
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if w, ok := want[k]; ok {
			if strings.TrimSpace(v) != strings.TrimSpace(w) {
				return fmt.Sprintf("%s is %q", k, strings.TrimSpace(v))
			}
			delete(want, k)
		}
	}
	if len(want) > 0 {
		return "status lacks lines"
	}
	return ""
}

func sameGroups(got []int, want []uint32) bool {
	a := make([]uint32, len(got))
	for i, g := range got {
		a[i] = uint32(g)
	}
	b := slices.Clone(want)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// setNoNewPrivs sets PR_SET_NO_NEW_PRIVS on every thread when the runtime can
// (no cgo), else on the calling (locked) thread, from which every command is
// forked: children inherit it from the forking thread. It then checks the
// calling thread.
func setNoNewPrivs() error {
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0)
	if errno != 0 {
		if errno != syscall.ENOTSUP {
			return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS) on all threads: %w", errno)
		}
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
		}
	}
	v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil || v != 1 {
		return fmt.Errorf("no_new_privs not set (%d, %v)", v, err)
	}
	return nil
}

// dropBoundingSet empties the capability bounding set of the calling
// (locked) thread, then checks it. Every command is forked from this thread,
// and a command's exec computes its capabilities from the bounding set of
// the thread that forked it; no other thread of the worker forks. The other
// threads keep root's set, which gives them nothing: after the drop they
// hold no capability and they carry no_new_privs (both checked on every
// thread), and under no_new_privs an exec cannot raise the permitted set
// at all. (Done on every thread, with AllThreadsSyscall, each of the 41
// drops stopped the world and signalled every thread: 4 ms of CPU, nearly
// half of a hardened shell's worker start; BENCH.md.) The kernel's last
// capability is found by asking: PR_CAPBSET_READ fails with EINVAL past it.
func dropBoundingSet() error {
	for c := uintptr(0); ; c++ {
		if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, c, 0, 0, 0); err == unix.EINVAL {
			break
		} else if c > 255 {
			return errors.New("PR_CAPBSET_READ never ends")
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			return fmt.Errorf("prctl(PR_CAPBSET_DROP, %d): %w", c, err)
		}
		if v, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, c, 0, 0, 0); err != nil || v != 0 {
			return fmt.Errorf("capability %d still in the bounding set (%d, %v)", c, v, err)
		}
	}
	return nil
}

// armParentDeath sets the parent-death signal of the calling thread (the
// kernel clears it on every credential change) and checks that the parent
// is still parentPid, closing the race where it died before the prctl.
//
// The signal is SIGTERM, not SIGKILL: a worker killed outright would leave
// its commands' background children to init, while SIGTERM runs the
// worker's shutdown, which kills every process of the shell first.
func armParentDeath(parentPid int) error {
	runtime.LockOSThread() // normally already locked by the caller; idempotent count
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", err)
	}
	if parentPid > 0 && os.Getppid() != parentPid {
		return fmt.Errorf("parent %d is gone (parent is now %d)", parentPid, os.Getppid())
	}
	return nil
}
