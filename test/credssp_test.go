package e2e

import (
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// CredSSP (issue 11): pywinrm transport='credssp' and pypsrp
// auth='credssp' (both through requests-credssp / pyspnego), over HTTP
// with CredSSP message encryption and over HTTPS.

func credsspConn(d *Daemon, scheme string, u *testUser) Conn {
	addr := d.HTTP
	if scheme == "https" {
		addr = d.HTTPS
	}
	host, port := splitAddr(addr)
	return Conn{Scheme: scheme, Host: host, Port: port, Auth: "credssp", Encryption: "auto", User: u.Name, Password: u.Password}
}

func startCredSSP(t *testing.T) *Daemon {
	return startDaemon(t, func(c *configs.Config) { c.Service.Auth.CredSSP = true })
}

func TestCredSSP(t *testing.T) {
	need(t)
	d := startCredSSP(t)
	for _, scheme := range []string{"http", "https"} {
		for _, client := range []string{"pywinrm", "pypsrp"} {
			drv := pyDriver{client}
			t.Run(scheme+"/"+client, func(t *testing.T) {
				x := &ictx{d: d, drv: drv, base: credsspConn(d, scheme, w.admin)}
				for _, sc := range certCore {
					sc := sc
					t.Run(sc.name, func(t *testing.T) {
						t.Cleanup(func() { checkNoLeftovers(t, "after "+sc.name, 5*time.Second) })
						sc.run(t, x)
					})
				}
			})
		}
	}
}
