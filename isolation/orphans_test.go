package isolation

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// An empty group too young at start-up (a daemon restarted within a minute
// of its predecessor's death finds the dead one's pre-started worker groups
// so) is left by the first pass and removed by the second, once old enough;
// a second pass cancelled before its time touches nothing. On this
// machine's unified hierarchy, in a parent of the test's own, so no other
// daemon's groups are looked at.
func TestReapLaterRemovesAgedEmptyGroups(t *testing.T) {
	root := testV2Group(t)
	sys := &cgroupSystem{mode: cgroupV2, v2Parent: root}
	old := filepath.Join(root, "pool-left")
	if err := os.Mkdir(old, 0o755); err != nil {
		t.Fatal(err)
	}
	reaped, young, errs := sys.reapOrphans(time.Hour)
	if len(reaped) != 0 || young != 1 || len(errs) != 0 {
		t.Fatalf("first pass: reaped %v, young %d, errors %v; want none, 1, none", reaped, young, errs)
	}
	if _, err := os.Stat(old); err != nil {
		t.Fatalf("the first pass removed a young group: %v", err)
	}

	// Cancelled before its time: nothing happens, and stop returns at once.
	stop := sys.reapLater(time.Hour, 0, testLogger(t))
	t0 := time.Now()
	stop()
	stop() // twice is harmless
	if d := time.Since(t0); d > time.Second {
		t.Errorf("stop took %v", d)
	}
	if _, err := os.Stat(old); err != nil {
		t.Fatalf("a cancelled pass removed the group: %v", err)
	}

	stop = sys.reapLater(300*time.Millisecond, 200*time.Millisecond, testLogger(t))
	defer stop()
	if !eventually(5*time.Second, func() bool { _, err := os.Stat(old); return os.IsNotExist(err) }) {
		t.Fatal("the second pass left the aged empty group")
	}
}
