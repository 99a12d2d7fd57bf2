package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The worker links none of the daemon's network stack. zap (through package
// isolation's logging) once brought net/http, crypto/tls and x509 with it:
// a 5.9 MB binary instead of 3.8, their initialisers in every worker's
// start and about 100 KiB more private memory in every idle shell (BENCH.md,
// the idle row). Package isolation logs with log/slog for this reason.
func TestWorkerLinksNoNetworkStack(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go tool is not on PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || !slices.Contains(deps, "github.com/winrmd/winrmd/isolation") {
		t.Fatalf("go list -deps gave %d packages, without isolation: %q", len(deps), out)
	}
	for _, bad := range []string{"go.uber.org/zap", "net/http", "crypto/tls", "crypto/x509", "github.com/prometheus/client_golang/prometheus"} {
		if slices.Contains(deps, bad) {
			t.Errorf("the worker links %s", bad)
		}
	}
}
