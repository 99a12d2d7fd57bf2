package isolation

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeRangeCloexec is CLOSE_RANGE_CLOEXEC (linux/close_range.h): mark the
// range close-on-exec instead of closing it.
const closeRangeCloexec = 1 << 2

// MarkInheritedCloseOnExec marks every descriptor from `from` up
// close-on-exec, first thing in the daemon (from 3) and in a worker (above
// its socket): a descriptor the process inherited (a wrapper's
// `exec 9<key.pem`) must never reach a program it starts, so every user
// command gets exactly 0, 1 and 2. Marking rather than closing leaves the
// Go runtime's own descriptors (all close-on-exec already) alone.
//
// close_range(2) does it in one call (Linux 5.11); older kernels walk
// /proc/self/fd.
func MarkInheritedCloseOnExec(from int) error {
	if err := unix.CloseRange(uint(from), ^uint(0)>>1, closeRangeCloexec); err == nil {
		return nil
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	var first error
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n < from {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(n), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF && first == nil {
			first = err // EBADF: the ReadDir's own descriptor, closed since
		}
	}
	return first
}
