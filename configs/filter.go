package configs

import (
	"fmt"
	"net/netip"
	"strings"
)

// Filter is a parsed ipv4_filter / ipv6_filter: "*" (any), an empty string
// (none), or a comma-separated list of addresses, ranges "A-B" and CIDR
// prefixes — WinRM's syntax plus CIDR.
type Filter struct {
	any    bool
	ranges []addrRange
}

type addrRange struct{ lo, hi netip.Addr }

// ParseFilter parses a filter; v6 says which address family it holds.
func ParseFilter(s string, v6 bool) (*Filter, error) {
	s = strings.TrimSpace(s)
	f := &Filter{}
	if s == "*" {
		f.any = true
		return f, nil
	}
	if s == "" {
		return f, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		var r addrRange
		switch {
		case strings.Contains(part, "/"):
			p, err := netip.ParsePrefix(part)
			if err != nil {
				return nil, fmt.Errorf("bad prefix %q", part)
			}
			p = p.Masked()
			r.lo = p.Addr()
			r.hi = lastAddr(p)
		case strings.Contains(part, "-"):
			a, b, _ := strings.Cut(part, "-")
			lo, err1 := netip.ParseAddr(strings.TrimSpace(a))
			hi, err2 := netip.ParseAddr(strings.TrimSpace(b))
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad range %q", part)
			}
			if hi.Less(lo) {
				return nil, fmt.Errorf("range %q runs backwards", part)
			}
			r.lo, r.hi = lo, hi
		default:
			a, err := netip.ParseAddr(part)
			if err != nil {
				return nil, fmt.Errorf("bad address %q", part)
			}
			r.lo, r.hi = a, a
		}
		if r.lo.Is6() != v6 || r.hi.Is6() != v6 {
			fam := "IPv4"
			if v6 {
				fam = "IPv6"
			}
			return nil, fmt.Errorf("%q is not an %s address", part, fam)
		}
		f.ranges = append(f.ranges, r)
	}
	return f, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Allows reports whether addr passes the filter.
func (f *Filter) Allows(addr netip.Addr) bool {
	if f == nil {
		return false
	}
	if f.any {
		return true
	}
	addr = addr.Unmap()
	for _, r := range f.ranges {
		if addr.Is6() != r.lo.Is6() {
			continue
		}
		if !addr.Less(r.lo) && !r.hi.Less(addr) {
			return true
		}
	}
	return false
}
