package isolation

import (
	"os"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	var buf []byte
	b, err := readSmallFile("/proc/self/stat", &buf)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := parseStat(b)
	if !ok || st.PID != os.Getpid() || st.PPID != os.Getppid() || st.NumThreads < 1 {
		t.Fatalf("parseStat(/proc/self/stat) = %+v, %v; pid %d ppid %d", st, ok, os.Getpid(), os.Getppid())
	}
	// The session id is the kernel's, 0 when the session leader lives in an
	// ancestor pid namespace (CI's container): compare with getsid(2).
	if want, err := unix.Getsid(0); err != nil || st.Session != want {
		t.Errorf("session %d, getsid %d (%v)", st.Session, want, err)
	}
	// A comm its user chose: spaces and parentheses; the last ')' ends it.
	line := "4242 (a) 1 2 (x) S 77 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 100 1000 10 18446744073709551615\n"
	st, ok = parseStat([]byte(line))
	if !ok || st != (procStat{PID: 4242, PPID: 77, Session: 4242, NumThreads: 3}) {
		t.Errorf("hostile comm: %+v, %v", st, ok)
	}
	lb := []byte(line)
	if n := testing.AllocsPerRun(100, func() { parseStat(lb) }); n != 0 {
		t.Errorf("parseStat allocates %v times (it runs in every Close's walk)", n)
	}
	if pp := procPPid(os.Getpid(), &buf); pp != os.Getppid() {
		t.Errorf("procPPid = %d, want %d", pp, os.Getppid())
	}
	for _, bad := range []string{"", "()", "x (a) S 1 2 3", "1 (a) S 1 2 3 4", "1 (a) S -1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 3", "1 (a) S 1 2 99999999999 0 0 0 0 0 0 0 0 0 0 0 0 0 3"} {
		if st, ok := parseStat([]byte(bad)); ok {
			t.Errorf("parseStat(%q) = %+v, want refused", bad, st)
		}
	}
}

func TestStatusFields(t *testing.T) {
	var buf []byte
	b, err := readSmallFile("/proc/self/status", &buf)
	if err != nil {
		t.Fatal(err)
	}
	f := statusFields(b, "Uid:")
	if len(f) != 4 || string(f[0]) != strconv.Itoa(os.Getuid()) {
		t.Errorf("Uid fields %q, uid %d", f, os.Getuid())
	}
	if n, err := nsPid(os.Getpid()); err != nil || n <= 0 {
		t.Errorf("nsPid: %d, %v", n, err)
	}
	if statusFields([]byte("Name:\tx\nUid:\t1\t2"), "Gid:") != nil {
		t.Error("a missing key gave fields")
	}
}

func TestParseMountinfoAndCgroup(t *testing.T) {
	mi := "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n" +
		"40 30 0:35 / /sys/fs/cgroup/memory rw,nosuid shared:17 - cgroup cgroup rw,memory\n" +
		"41 30 0:36 /a\\040b /sys/fs/cgroup/x\\040y rw - cgroup2 cgroup2 rw,nsdelegate\n" +
		"garbage line\n42 30 0:1 / /p rw -\n"
	got := parseMountinfo([]byte(mi))
	want := []mountLine{
		{root: "/mnt1", point: "/mnt2", fstype: "ext3", superOpts: []string{"rw", "errors"}},
		{root: "/", point: "/sys/fs/cgroup/memory", fstype: "cgroup", superOpts: []string{"rw", "memory"}},
		{root: `/a\040b`, point: `/sys/fs/cgroup/x\040y`, fstype: "cgroup2", superOpts: []string{"rw", "nsdelegate"}},
	}
	if !slices.EqualFunc(got, want, func(a, b mountLine) bool {
		return a.root == b.root && a.point == b.point && a.fstype == b.fstype && slices.Equal(a.superOpts, b.superOpts)
	}) {
		t.Errorf("parseMountinfo:\n got %+v\nwant %+v", got, want)
	}
	cg := parseCgroupFile([]byte("12:memory:/a/b\n4:cpu,cpuacct:/\n1:name=systemd:/user.slice\n0::/x:y\nbad\n"))
	if len(cg) != 4 || cg[0].path != "/a/b" || !slices.Equal(cg[1].controllers, []string{"cpu", "cpuacct"}) ||
		cg[3].hierarchy != 0 || cg[3].controllers != nil || cg[3].path != "/x:y" {
		t.Errorf("parseCgroupFile: %+v", cg)
	}
	// And this process's own files.
	if ms, err := readCgroupMounts(); err != nil || len(ms) == 0 {
		t.Errorf("readCgroupMounts: %v, %v", ms, err)
	}
	if own, err := ownCgroups(); err != nil || len(own) == 0 {
		t.Errorf("ownCgroups: %v, %v", own, err)
	}
	var buf []byte
	if pids := allPids(&buf); !slices.Contains(pids, os.Getpid()) {
		t.Errorf("allPids lacks this process")
	}
}

// Every parser takes any bytes a process's user could put in its /proc
// files without a panic, and parseStat believes only what it checked.
func FuzzProcParsers(f *testing.F) {
	f.Add([]byte("4242 (a) 1 2 (x) S 77 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 100 1000 10 1\n"))
	f.Add([]byte("36 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root rw,errors=continue\n"))
	f.Add([]byte("0::/x\n12:memory:/a\nUid:\t0\t0\t0\t0\nNSpid:\t5\t1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if st, ok := parseStat(b); ok && (st.PID < 0 || st.PPID < 0 || st.Session < 0 || st.NumThreads < 0) {
			t.Fatalf("parseStat(%q) = %+v", b, st)
		}
		_ = statusFields(b, "Uid:")
		for _, m := range parseMountinfo(b) {
			if m.fstype == "" {
				t.Fatalf("mount without fstype from %q", b)
			}
		}
		for _, c := range parseCgroupFile(b) {
			if c.hierarchy < 0 {
				t.Fatalf("negative hierarchy from %q", b)
			}
		}
	})
}
