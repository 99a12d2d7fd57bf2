package authn

import (
	"errors"
	"strings"
	"testing"
)

func TestMapName(t *testing.T) {
	long := strings.Repeat("a", MaxNameBytes)
	tests := []struct {
		name, domain, want string
	}{
		{"alice", "", "alice"},
		{"Alice", "", "Alice"},
		{"CORP\\alice", "", "alice"},
		{".\\alice", "", "alice"},
		{"HOST\\Alice", "", "Alice"},
		{"alice@CORP.EXAMPLE", "", "alice"},
		{"alice@corp", "", "alice"},
		{"alice", "CORP", "alice"},
		{"CORP\\alice", "OTHER", "alice"},
		{"first.last", "", "first.last"},
		{"svc_backup-1", "", "svc_backup-1"},
		{"josé", "", "josé"},
		{"user name", "", "user name"},
		{long, "", long},
		{long + "a", "", ""},
		{"", "", ""},
		{"\\alice", "", ""},
		{"CORP\\", "", ""},
		{"alice@", "", ""},
		{"@CORP", "", ""},
		{"a\\b\\c", "", ""},
		{"CORP\\alice@CORP", "", ""},
		{"alice@b@c", "", ""},
		{"HTTP/host@REALM", "", ""},
		{"alice/admin@REALM", "", ""},
		{"host/x", "", ""},
		{"al:ice", "", ""},
		{"-alice", "", ""},
		{"CORP\\-alice", "", ""},
		{".", "", ""},
		{"..", "", ""},
		{"CORP\\..", "", ""},
		{"al\x00ice", "", ""},
		{"al\nice", "", ""},
		{"al\x7fice", "", ""},
		{"al\u0085ice", "", ""},      // C1 control (NEL)
		{"al\u200bice", "", ""},      // zero-width space (Cf)
		{"al\u202eice", "", ""},      // right-to-left override (Cf)
		{"al\u2028ice", "", ""},      // line separator
		{"al\ue000ice", "", ""},      // private use
		{"al\ufffdice", "", ""},      // replacement character
		{"al\xffice", "", ""},        // invalid UTF-8
		{" alice", "", ""},           // surrounding space
		{"alice ", "", ""},           //
		{"alice\u00a0", "", ""},      // surrounding no-break space
		{"CORP\\ alice", "", ""},     //
		{"root", "", "root"},         // mapping is not authorization
		{"CORP\\root", "", "root"},   //
		{"root@REALM", "", "root"},   //
		{"ALICE@REALM", "", "ALICE"}, //
	}
	for _, tt := range tests {
		if got := MapName(tt.name, tt.domain); got != tt.want {
			t.Errorf("MapName(%q, %q) = %q, want %q", tt.name, tt.domain, got, tt.want)
		}
	}
}

func FuzzMapName(f *testing.F) {
	for _, s := range []string{"alice", "CORP\\alice", "alice@R", "a\\b\\c", "HTTP/h@R", "-x", "\u200b"} {
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, name, domain string) {
		got := MapName(name, domain)
		if got == "" {
			return
		}
		if MapName(got, "") != got {
			t.Fatalf("MapName(%q) = %q is not a fixed point", name, got)
		}
		if strings.ContainsAny(got, "\\@/:\x00") || got[0] == '-' {
			t.Fatalf("MapName(%q) = %q", name, got)
		}
	})
}

// One rule for every mechanism (issues 14.2, 15.4).
func TestMapPrincipal(t *testing.T) {
	host := NewHostNames("srv.example.com", "SRV")
	for _, tt := range []struct {
		p    Principal
		want string // first name looked up, or "" for a refusal
	}{
		{Principal{Name: "alice"}, "alice"},
		{Principal{Name: `.\alice`}, "alice"},
		{Principal{Name: `SRV\alice`}, "alice"},
		{Principal{Name: "alice@srv.example.com"}, "alice"},
		{Principal{Name: "alice@localhost"}, "alice"},
		{Principal{Name: "alice", Domain: "srv"}, "alice"},
		{Principal{Name: `CORP\alice`}, ""},
		{Principal{Name: "alice@CORP.EXAMPLE"}, ""},
		{Principal{Name: "alice", Domain: "CORP"}, ""},
		{Principal{Name: `CORP\alice`, Domain: "CORP", Verifier: VerifiedDomain}, `CORP\alice`},
		{Principal{Name: "alice@corp.example", Verifier: VerifiedDomain}, `corp.example\alice`},
		{Principal{Name: `SRV\alice`, Domain: "SRV", Verifier: VerifiedDomain}, "alice"},
		{Principal{Name: "HTTP/h@R", Verifier: VerifiedDomain}, ""},
	} {
		names, err := MapPrincipal(tt.p, host)
		got := ""
		if err == nil {
			got = names[0]
		}
		if got != tt.want {
			t.Errorf("MapPrincipal(%+v) = %v, %v; want first %q", tt.p, names, err, tt.want)
		}
		if tt.p.Verifier != VerifiedDomain && err == nil {
			for _, n := range names {
				if strings.ContainsAny(n, `\@`) {
					t.Errorf("locally verified %+v looks up qualified %q", tt.p, n)
				}
			}
		}
	}
}

// FuzzMapPrincipal: whatever the name, a locally verified principal maps
// only to bare local names, and every name handed to NSS passes the
// qualified-name check.
func FuzzMapPrincipal(f *testing.F) {
	for _, s := range []string{"alice", `.\alice`, `SRV\alice`, "alice@srv.example.com", `CORP\alice`, "a@b@c", `\x`, "HTTP/h@R", "-x", "é@ü"} {
		f.Add(s, "", false)
		f.Add(s, "CORP", true)
	}
	host := NewHostNames("srv.example.com", "SRV")
	f.Fuzz(func(t *testing.T, name, domain string, byDomain bool) {
		p := Principal{Name: name, Domain: domain}
		if byDomain {
			p.Verifier = VerifiedDomain
		}
		names, err := MapPrincipal(p, host)
		if err != nil {
			if !errors.Is(err, ErrUnknownAccount) {
				t.Fatalf("%+v: error %v does not wrap ErrUnknownAccount", p, err)
			}
			return
		}
		if len(names) == 0 {
			t.Fatalf("%+v: no names and no error", p)
		}
		for _, n := range names {
			if !validQualifiedName(n) {
				t.Fatalf("%+v: %q is not a valid NSS name", p, n)
			}
			if !byDomain && strings.ContainsAny(n, `\@`) {
				t.Fatalf("locally verified %+v maps to qualified %q", p, n)
			}
		}
	})
}
