package isolation

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// At a clean shutdown the daemon removes the parents of its shell groups
// when they are empty (removeParents), never while a group lives under them
// (another daemon's shells share a parent), and a daemon that finds its
// parent gone makes it again. The real kernel decides: the test works in a
// private subtree next to the detected parents, so other daemons on the
// host never see it.
func TestCgroupParentsRemoved(t *testing.T) {
	requireRoot(t)
	sys, _, err := detectCgroups("")
	if err != nil {
		t.Fatal(err)
	}
	if sys.mode == cgroupNone {
		t.Skip("no usable cgroup on this host: no shell groups, no parents")
	}
	// One private base per hierarchy, where the detected parents' own
	// parent is: <own>/wrmdtest-parents-<pid>/winrmd.
	priv := &cgroupSystem{mode: sys.mode, memory: sys.memory, pids: sys.pids, own: true, v1Parents: map[string]string{}}
	var bases []string
	for ctrl, p := range sys.parents() {
		base := filepath.Join(filepath.Dir(p), "wrmdtest-parents-"+strconv.Itoa(os.Getpid()))
		if err := os.Mkdir(base, 0o755); err != nil {
			t.Fatal(err)
		}
		bases = append(bases, base)
		if sys.mode == cgroupV2 {
			if err := enableV2Controllers(base, sys.memory, sys.pids); err != nil {
				t.Fatal(err)
			}
			priv.v2Parent = filepath.Join(base, "winrmd")
		} else {
			priv.v1Parents[ctrl] = filepath.Join(base, "winrmd")
		}
	}
	t.Cleanup(func() {
		for _, p := range priv.parents() {
			_ = os.Remove(filepath.Join(p, "wrmdtest-shell"))
			_ = os.Remove(p)
		}
		for _, b := range bases {
			if err := os.Remove(b); err != nil {
				t.Errorf("private base %s: %v", b, err)
			}
		}
	})
	exists := func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	}

	// No parent yet: create makes it, as after another daemon removed it.
	cg, err := priv.create("wrmdtest-shell", 0)
	if err != nil {
		t.Fatalf("create under a missing parent: %v", err)
	}
	// A shell group keeps its parent (the kernel refuses: EBUSY).
	if err := priv.removeParents(); err != nil {
		t.Fatalf("removeParents with a live group: %v", err)
	}
	for _, p := range priv.parents() {
		if !exists(filepath.Join(p, "wrmdtest-shell")) {
			t.Fatalf("removeParents took %s with a live group in it", p)
		}
	}
	// The shell is closed: its group goes.
	if err := cg.remove(); err != nil {
		t.Fatal(err)
	}
	// Empty: every parent goes.
	if err := priv.removeParents(); err != nil {
		t.Fatalf("removeParents: %v", err)
	}
	for _, p := range priv.parents() {
		if exists(p) {
			t.Errorf("empty parent %s left behind", p)
		}
	}
	// Twice is harmless.
	if err := priv.removeParents(); err != nil {
		t.Errorf("removeParents again: %v", err)
	}
	// A configured root is never the daemon's to remove.
	conf := &cgroupSystem{mode: cgroupV2, v2Parent: bases[0]}
	if err := conf.removeParents(); err != nil || !exists(bases[0]) {
		t.Errorf("a configured root was removed (%v)", err)
	}
}
