package isolation

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/winrmd/winrmd/session/obs"
)

// isolation knows nothing of how a caller was authenticated: it imports no
// package of authn, directly or through another package (README, layout).
func TestNoAuthnImport(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is not on PATH: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || !strings.Contains(string(out), "github.com/winrmd/winrmd/isolation") {
		t.Fatalf("go list -deps printed %d packages, not isolation's dependencies: %q", len(deps), out)
	}
	for _, d := range deps {
		if d == "github.com/winrmd/winrmd/authn" || strings.HasPrefix(d, "github.com/winrmd/winrmd/authn/") {
			t.Errorf("isolation depends on %s", d)
		}
	}
	t.Logf("%d packages in isolation's dependencies, none of authn", len(deps))
}

// A CredentialCache never shows its bytes: not through fmt, zap, slog or JSON.
func TestCredentialCacheRedacted(t *testing.T) {
	const ticket = "TGT-SECRET-BYTES"
	cc := CredentialCache(ticket)
	req := SpawnRequest{ShellID: "S1", Credentials: cc}
	var shown []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		shown = append(shown, fmt.Sprintf(verb, cc), fmt.Sprintf(verb, req))
	}
	shown = append(shown, cc.String())
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	shown = append(shown, string(b))
	core, logs := observer.New(zap.DebugLevel)
	zap.New(core).Info("spawn", zap.Any("req", req), zap.Any("cc", cc), zap.Stringer("s", cc))
	// This package logs through slog: the daemon's bridge to zap, and
	// slog's own handlers for a caller that passes one.
	obs.Slog(zap.New(core)).Info("spawn", slog.Any("req", req), slog.Any("cc", cc))
	var sb bytes.Buffer
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("spawn", slog.Any("req", req), slog.Any("cc", cc))
	slog.New(slog.NewTextHandler(&sb, nil)).Info("spawn", slog.Any("req", req), slog.Any("cc", cc))
	shown = append(shown, sb.String())
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			shown = append(shown, k+"="+fmt.Sprint(v))
		}
	}
	hexTicket := fmt.Sprintf("%x", []byte(ticket))
	for _, s := range shown {
		if strings.Contains(s, ticket) || strings.Contains(strings.ToLower(s), hexTicket) || strings.Contains(s, "84 71 84") {
			t.Errorf("the credential cache shows: %s", s)
		}
	}
	if !strings.Contains(string(b), "[redacted]") {
		t.Errorf("JSON %s does not say it redacted the cache", b)
	}
}
