package isolation

import (
	"strings"
	"testing"
)

func TestReadWatchList(t *testing.T) {
	got, err := readWatchList(strings.NewReader("+a\n+b-1.x_Y\n-a\n-never-added\n+c\n"))
	if err != nil || len(got) != 2 || !got["b-1.x_Y"] || !got["c"] {
		t.Fatalf("got %v, %v; want b-1.x_Y and c", got, err)
	}
	for _, bad := range []string{"a\n", "+\n", "+../etc\n", "+a/b\n", "*a\n", "+" + strings.Repeat("x", 129) + "\n"} {
		got, err := readWatchList(strings.NewReader("+keep\n" + bad + "+after\n"))
		if err == nil || !got["keep"] || got["after"] {
			t.Errorf("%q: %v, %v; want an error keeping the groups named before it", bad, got, err)
		}
	}
}

func TestParseWatchdogArgs(t *testing.T) {
	for _, ok := range []string{`{"mode":"v2","v2":"/sys/fs/cgroup/x/winrmd"}`, `{"mode":"v1","v1":{"memory":"/sys/fs/cgroup/memory/winrmd"}}`} {
		if _, err := parseWatchdogArgs(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{``, `{"mode":"v2","v2":"rel"}`, `{"mode":"v2","v2":"/a/../b"}`, `{"mode":"v1"}`, `{"mode":"none"}`} {
		if _, err := parseWatchdogArgs(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
