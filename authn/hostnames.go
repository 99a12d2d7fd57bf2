package authn

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// HostNames are the names this host answers to. Two rules use them, for
// every mechanism:
//
//   - Service binding (IsServiceName): a client that did not bind its
//     credentials to the TLS channel must have named this host as the
//     service it meant to reach (NTLM's MsvAvTargetName, later the
//     Kerberos ticket's server name), so credentials meant for another
//     server cannot be relayed here (HTTP.sys extended protection does the
//     same).
//   - Local qualifiers (IsLocal): `.\user`, `HOST\user` and `user@host` name
//     the local account "user" whatever verified the password.
//
// The names are the NetBIOS name, the short and the full DNS name, the
// NetBIOS domain when it differs (a standalone host's workgroup), "localhost"
// and any names the configuration adds (host.names: DNS aliases, a load
// balancer's name), compared without regard to case; and, for service
// binding, IP literals of this host (any loopback address, or an address of
// one of its interfaces).
type HostNames struct {
	names []string // lower case
	// addrs returns the host's interface addresses (tests replace it).
	addrs func() []netip.Addr
}

// NewHostNames returns the names from the configured ones plus the host's
// own (os.Hostname). Empty entries are ignored.
func NewHostNames(names ...string) *HostNames {
	h := &HostNames{addrs: interfaceAddrs}
	host, _ := os.Hostname()
	short, _, _ := strings.Cut(host, ".")
	for _, n := range append([]string{host, short, "localhost"}, names...) {
		n = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(n), "."))
		if n != "" && !slices.Contains(h.names, n) {
			h.names = append(h.names, n)
		}
	}
	return h
}

// Names returns the names in lower case (for logs and config check).
func (h *HostNames) Names() []string { return slices.Clone(h.names) }

// IsLocal reports whether q, a qualifier a client put before or after a
// user name, means this host: "", ".", or one of the names.
func (h *HostNames) IsLocal(q string) bool {
	if q == "" || q == "." {
		return true
	}
	if h == nil {
		return false
	}
	return slices.Contains(h.names, strings.ToLower(strings.TrimSuffix(q, ".")))
}

// serviceClasses a WinRM client may name in its target SPN: HTTP (pyspnego,
// Windows' WinRM client), WSMAN (Windows with Kerberos), HOST (the
// machine account's catch-all).
var serviceClasses = []string{"http", "wsman", "host"}

// IsServiceName reports whether spn ("HTTP/host", "HTTP/host:5986",
// "WSMAN/host.example@REALM") names a WinRM service on this host.
func (h *HostNames) IsServiceName(spn string) bool {
	if h == nil || len(spn) > MaxNameBytes {
		return false
	}
	class, host, ok := strings.Cut(spn, "/")
	if !ok || !slices.Contains(serviceClasses, strings.ToLower(class)) {
		return false
	}
	if i := strings.LastIndexByte(host, '@'); i >= 0 {
		host = host[:i] // a Kerberos realm
	}
	if hp, err := netip.ParseAddrPort(host); err == nil {
		return h.isOwnAddr(hp.Addr())
	}
	if strings.HasPrefix(host, "[") {
		if h2, _, err := net.SplitHostPort(host); err == nil {
			host = h2
		} else {
			host = strings.Trim(host, "[]")
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.Count(host, ":") == 1 {
		host = host[:i] // a port
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return h.isOwnAddr(a)
	}
	return host != "" && slices.Contains(h.names, strings.ToLower(strings.TrimSuffix(host, ".")))
}

func (h *HostNames) isOwnAddr(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if a.IsLoopback() {
		return true
	}
	if a.IsUnspecified() || !a.IsValid() {
		return false
	}
	return slices.Contains(h.addrs(), a)
}

func interfaceAddrs() []netip.Addr {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap().WithZone(""))
		}
	}
	return out
}
