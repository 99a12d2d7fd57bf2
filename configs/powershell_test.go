package configs

import (
	"errors"
	"slices"
	"testing"
)

func TestPowerShellConfig(t *testing.T) {
	c, err := Parse([]byte(`
powershell:
  path: /opt/microsoft/powershell/7/pwsh
  endpoints:
    - {name: Maint, allowed_groups: [ops], configuration_file: /etc/winrmd/m.pssc}
    - {name: Svc, run_as_user: winrmd-svc, startup_script: /etc/winrmd/start.ps1}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.PowerShell.Argv(nil); !slices.Equal(got, []string{"/opt/microsoft/powershell/7/pwsh", "-NoLogo", "-NoProfile", "-s"}) {
		t.Errorf("default argv %q", got)
	}
	ep, ok := c.PowerShell.Endpoint("maint")
	if !ok || ep.ConfigurationFile != "/etc/winrmd/m.pssc" {
		t.Fatalf("endpoint lookup: %+v %v", ep, ok)
	}
	if got := c.PowerShell.Argv(ep); !slices.Equal(got[len(got)-2:], []string{"-ConfigurationFile", "/etc/winrmd/m.pssc"}) {
		t.Errorf("endpoint argv %q", got)
	}
	svc, _ := c.PowerShell.Endpoint("svc")
	if got := c.PowerShell.Argv(svc); svc == nil || svc.RunAsUser != "winrmd-svc" || !slices.Equal(got[len(got)-2:], []string{"-Command", ". '/etc/winrmd/start.ps1'"}) {
		t.Errorf("run_as_user / startup_script endpoint: %+v, argv %q", svc, got)
	}
	if _, ok := c.PowerShell.Endpoint("Other"); ok {
		t.Error("unknown endpoint found")
	}
	for yaml, key := range map[string]string{
		"powershell: {path: ''}":                                             "powershell.path",
		"powershell: {path: 'bin/pwsh'}":                                     "powershell.path",
		"powershell: {endpoints: [{name: 'a b'}]}":                           "powershell.endpoints[0].name",
		"powershell: {endpoints: [{name: Microsoft.PowerShell}]}":            "powershell.endpoints[0].name",
		"powershell: {endpoints: [{name: A}, {name: a}]}":                    "powershell.endpoints[1].name",
		"powershell: {endpoints: [{name: A, configuration_file: x.pssc}]}":   "powershell.endpoints[0].configuration_file",
		"powershell: {endpoints: [{name: A, allowed_groups: ['']}]}":         "powershell.endpoints[0].allowed_groups[0]",
		"powershell: {endpoints: [{name: A, run_as_user: 'svc user'}]}":      "powershell.endpoints[0].run_as_user",
		"powershell: {endpoints: [{name: A, run_as_user: '-svc'}]}":          "powershell.endpoints[0].run_as_user",
		"powershell: {warm_spares: -1}":                                      "powershell.warm_spares",
		"powershell: {warm_spare_lifetime_s: 0}":                             "powershell.warm_spare_lifetime_s",
		"powershell: {endpoints: [{name: A, startup_script: s.ps1}]}":        "powershell.endpoints[0].startup_script",
		"powershell: {endpoints: [{name: A, startup_script: \"/x'y.ps1\"}]}": "powershell.endpoints[0].startup_script",
		"powershell: {endpoints: [{name: A, startup_script: '/x$y.ps1'}]}":   "powershell.endpoints[0].startup_script",
	} {
		_, err := Parse([]byte(yaml))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != key {
			t.Errorf("%s: got %v, want an error naming %s", yaml, err, key)
		}
	}
}

func TestEndpointNewPrivileges(t *testing.T) {
	c, err := Parse([]byte("winrs: {allow_new_privileges: true}\npowershell:\n  endpoints:\n    - {name: Locked, allow_new_privileges: false}\n    - {name: Plain}\n"))
	if err != nil {
		t.Fatal(err)
	}
	locked, _ := c.PowerShell.Endpoint("locked")
	plain, _ := c.PowerShell.Endpoint("Plain")
	g := c.Winrs.AllowNewPrivileges
	if c.PowerShell.NewPrivileges(locked, g) || !c.PowerShell.NewPrivileges(plain, g) || !c.PowerShell.NewPrivileges(nil, g) {
		t.Errorf("endpoint override: locked %v, plain %v, Microsoft.PowerShell %v; want false, true, true",
			c.PowerShell.NewPrivileges(locked, g), c.PowerShell.NewPrivileges(plain, g), c.PowerShell.NewPrivileges(nil, g))
	}
	if !Default().Winrs.AllowNewPrivileges {
		t.Error("winrs.allow_new_privileges defaults to false; an administrator expects sudo to work")
	}
}
