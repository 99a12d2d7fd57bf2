// Package standin places the PowerShell stand-in, pwsh_standin.py beside
// this file (psrpcore's server classes and /bin/sh, used where no pwsh is
// installed: no package source these machines reach serves PowerShell),
// where the users it runs as can read it. The e2e tests and the bench run
// it as their own test users.
package standin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Script is the stand-in's path in a checkout.
const Script = "test/standin/pwsh_standin.py"

// Install copies the stand-in from the checkout at root, and the
// site-packages of python (where psrpcore and its dependencies are), into
// dir, readable by all, and returns the copies' paths: run the script
// with "--site" site. The users the stand-in runs as may not reach the
// checkout: a clone in root's home (/root is 0700 on Debian, as on a
// fresh machine, where the bench's PSRP rows failed with "Permission
// denied" before they used this). A dir that already holds both is used
// as it is.
func Install(root, python, dir string) (script, site string, err error) {
	script, site = filepath.Join(dir, "pwsh_standin.py"), filepath.Join(dir, "site-packages")
	if _, err := os.Stat(script); err == nil {
		if _, err := os.Stat(site); err == nil {
			return script, site, nil
		}
	}
	out, err := exec.Command(python, "-c", "import os, psrpcore; print(os.path.dirname(os.path.dirname(psrpcore.__file__)))").Output()
	if err != nil {
		return "", "", fmt.Errorf("the pwsh stand-in: %s cannot import psrpcore (%v): run `make venv`", python, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	for _, c := range [][2]string{{filepath.Join(root, Script), script}, {strings.TrimSpace(string(out)), site}} {
		if out, err := exec.Command("cp", "-a", c[0], c[1]).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("copying the pwsh stand-in: %v %s", err, out)
		}
	}
	if out, err := exec.Command("chmod", "-R", "a+rX", dir).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("making the pwsh stand-in readable: %v %s", err, out)
	}
	return script, site, nil
}
