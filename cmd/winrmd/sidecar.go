package main

import (
	"fmt"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation"
)

// sidecarAccounts is the account database of sidecar mode: the target
// container's /etc/passwd and /etc/group, found again at every lookup (nil:
// NSS, as without sidecar mode).
func sidecarAccounts(cfg *configs.Config) authn.AccountDB {
	spec := cfg.Sidecar.Target
	if spec == "" {
		return nil
	}
	return authn.FilesDB{Root: func() (string, error) {
		pid, err := isolation.ResolveSidecarTarget(spec)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("/proc/%d/root", pid), nil
	}}
}
