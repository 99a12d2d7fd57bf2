package session

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/session/psrp"
	"github.com/winrmd/winrmd/session/wsman"
)

// psCreate is a PSRP Create with the given ShellId and creationXml bytes.
func psCreate(uri, shellID string, creation []byte) req {
	return req{action: wsman.ActionCreate, resource: uri, body: &wsman.Shell{ShellID: shellID, InputStreams: "stdin pr", OutputStreams: "stdout",
		CreationXML: base64.StdEncoding.EncodeToString(creation)}}
}

// TestPSRPCreateRefusals: everything that must be refused is refused before
// a worker or a PowerShell is started (the far end itself is exercised end
// to end in test/).
func TestPSRPCreateRefusals(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.PowerShell = configs.PowerShell{Path: "/nonexistent/pwsh",
			Endpoints: []configs.Endpoint{{Name: "Locked", AllowedGroups: []string{"wrmd-no-such-group-" + strings.Repeat("x", 8)}}}}
	})
	good := psrp.Fragments(nil, 1, psrp.AppendMessage(nil, psrp.Message{Destination: psrp.ToServer, Type: psrp.SessionCapability, Data: []byte("<Obj/>")}), 1000)
	const id = "5B6C7D8E-0000-4000-8000-00000000ABCD"
	for name, tc := range map[string]struct {
		req  req
		code uint32
	}{
		"unknown endpoint":       {psCreate(wsman.PowerShellPrefix+"NoSuch", id, good), wsman.CodeInvalidResourceURI},
		"endpoint's groups":      {psCreate(wsman.PowerShellPrefix+"locked", id, good), wsman.CodeAccessDenied},
		"no runspace pool id":    {psCreate(wsman.PowerShellPrefix+"Microsoft.PowerShell", "", good), wsman.CodeInvalidParameter},
		"creationXml not PSRP":   {psCreate(wsman.PowerShellPrefix+"Microsoft.PowerShell", id, []byte("hello")), wsman.CodeInvalidParameter},
		"creationXml empty":      {psCreate(wsman.PowerShellPrefix+"Microsoft.PowerShell", id, nil), wsman.CodeInvalidParameter},
		"pwsh cannot be started": {psCreate(wsman.PowerShellPrefix+"Microsoft.PowerShell", id, good), 2147942402},
	} {
		_, err := h.do(tc.req)
		f, ok := err.(*wsman.Fault)
		if !ok || f.Code != tc.code {
			t.Errorf("%s: got %v, want code %d", name, err, tc.code)
		}
		if h.m.ShellCount() != 0 {
			t.Fatalf("%s: a shell is left", name)
		}
	}
}
