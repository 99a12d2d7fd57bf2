package configs

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestExampleIsDefault(t *testing.T) {
	c, err := Parse(Example())
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	d := Default()
	a, _ := Marshal(c)
	b, _ := Marshal(d)
	if string(a) != string(b) {
		t.Fatalf("example config differs from Default():\n%s\nvs\n%s", a, b)
	}
}

func TestLabTemplateParses(t *testing.T) {
	c, err := Parse([]byte(strings.ReplaceAll(string(Lab()), "{{DIR}}", "/tmp/lab")))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Service.Auth.Basic || c.Listeners[0].Address != "127.0.0.1" {
		t.Fatalf("unexpected lab config: %+v", c)
	}
}

func TestValidateNamesKey(t *testing.T) {
	cases := []struct{ yaml, key string }{
		{"listeners: []", "listeners"},
		{"listeners: [{transport: ftp, address: '*', port: 1}]", "listeners[0].transport"},
		{"listeners: [{transport: https, address: '*', port: 1}]", "listeners[0].cert_file"},
		{"listeners: [{transport: http, address: 'a b', port: 1}]", "listeners[0].address"},
		{"listeners: [{transport: http, address: '*', port: 70000}]", "listeners[0].port"},
		{"service: {max_envelope_size_kb: 1}", "service.max_envelope_size_kb"},
		{"service: {max_timeout_ms: 0}", "service.max_timeout_ms"},
		{"service: {max_connections: 0}", "service.max_connections"},
		{"service: {max_unauthenticated_connections_per_source: 0}", "service.max_unauthenticated_connections_per_source"},
		{"service: {ipv4_filter: 'nonsense'}", "service.ipv4_filter"},
		{"service: {ipv6_filter: '10.0.0.1'}", "service.ipv6_filter"},
		{"service: {auth: {cbt_hardening_level: maybe}}", "service.auth.cbt_hardening_level"},
		{"service: {auth: {basic: false, negotiate: false, kerberos: false}}", "service.auth"},
		{"winrs: {max_shells_per_user: 0}", "winrs.max_shells_per_user"},
		{"winrs: {idle_timeout_ms: 5}", "winrs.idle_timeout_ms"},
		{"logging: {level: loud}", "logging.level"},
		{"metrics: {address: nonsense}", "metrics.address"},
		{"authorization: {allowed_groups: ['']}", "authorization.allowed_groups[0]"},
		{"service: {auth: {certificate: true}}", "service.auth.certificate"},
		{"certificate_mappings: [{subject: '*', user: a}]", "certificate_mappings[0].issuer"},
		{"certificate_mappings: [{issuer: /x, user: a}]", "certificate_mappings[0].subject"},
		{"certificate_mappings: [{issuer: /x, subject: '*', user: 'a:b'}]", "certificate_mappings[0].user"},
		{"certificate_mappings: [{issuer: /x, subject: '*', user: a, issuer_thumbprint: xyz}]", "certificate_mappings[0].issuer_thumbprint"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.yaml))
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%s: want FieldError naming %s, got %v", tc.yaml, tc.key, err)
			continue
		}
		if fe.Key != tc.key {
			t.Errorf("%s: error names %q, want %q (%v)", tc.yaml, fe.Key, tc.key, err)
		}
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	_, err := Parse([]byte("service: {allow_unencryptd: true}"))
	if err == nil || !strings.Contains(err.Error(), "allow_unencryptd") {
		t.Fatalf("want error naming the unknown key, got %v", err)
	}
}

func TestFilter(t *testing.T) {
	cases := []struct {
		filter string
		v6     bool
		addr   string
		want   bool
	}{
		{"*", false, "10.1.2.3", true},
		{"", false, "127.0.0.1", false},
		{"127.0.0.1", false, "127.0.0.1", true},
		{"127.0.0.1", false, "127.0.0.2", false},
		{"10.0.0.1-10.0.0.9, 192.168.0.0/16", false, "10.0.0.5", true},
		{"10.0.0.1-10.0.0.9, 192.168.0.0/16", false, "192.168.200.1", true},
		{"10.0.0.1-10.0.0.9, 192.168.0.0/16", false, "10.0.0.10", false},
		{"::1", true, "::1", true},
		{"fd00::/8", true, "fd12::1", true},
		{"fd00::/8", true, "fe80::1", false},
	}
	for _, tc := range cases {
		f, err := ParseFilter(tc.filter, tc.v6)
		if err != nil {
			t.Fatalf("%q: %v", tc.filter, err)
		}
		if got := f.Allows(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("filter %q allows %s = %v, want %v", tc.filter, tc.addr, got, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Example())
	f.Add(Lab())
	f.Add([]byte("listeners: [{transport: http, address: '*', port: 1}]"))
	f.Add([]byte("service: {ipv4_filter: '1.2.3.4-1.2.3.9,10.0.0.0/8'}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil && c.Validate() != nil {
			t.Fatalf("Parse accepted a config Validate rejects")
		}
	})
}

func TestSidecarTarget(t *testing.T) {
	for _, ok := range []string{"", "1234", "nginx", "/kubepods/besteffort/pod1/abc"} {
		c := Default()
		c.Sidecar.Target = ok
		if err := c.Validate(); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{" 12", "a/b", "/x/../y", "x\ny", strings.Repeat("a", MaxSidecarTargetBytes+1)} {
		c := Default()
		c.Sidecar.Target = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "sidecar.target") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
