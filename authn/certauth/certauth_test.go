package certauth

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/configs"
)

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newCA(t *testing.T, dir, name string) ca {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c, err := IssueCA(name, k, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name+".pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ca{c, k, f}
}

func (a ca) issue(t *testing.T, o ClientOptions) *x509.Certificate {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Minute)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(time.Hour)
	}
	c, err := IssueClient(a.cert, a.key, k.Public(), o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMappingTable(t *testing.T) {
	dir := t.TempDir()
	good, other := newCA(t, dir, "good"), newCA(t, dir, "other")
	revoked := good.issue(t, ClientOptions{UPN: "carol@example.test"})
	crl, err := IssueCRL(good.cert, good.key, []*big.Int{revoked.SerialNumber}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	crlFile := filepath.Join(dir, "crl.pem")
	os.WriteFile(crlFile, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl}), 0o644)
	thumb := sha1.Sum(good.cert.Raw)

	mp, err := New([]configs.CertMapping{
		{Issuer: good.file, Subject: "alice@example.test", User: "alice", CRLFile: crlFile},
		{Issuer: good.file, IssuerThumbprint: hex.EncodeToString(thumb[:]), Subject: "*@ops.example.test", User: "ops"},
		{Issuer: good.file, Subject: "carol@example.test", User: "carol", CRLFile: crlFile},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cert *x509.Certificate
		user string
		err  error
	}{
		{"exact UPN", good.issue(t, ClientOptions{UPN: "alice@example.test"}), "alice", nil},
		{"UPN case-insensitive", good.issue(t, ClientOptions{UPN: "Alice@Example.TEST"}), "alice", nil},
		{"pattern", good.issue(t, ClientOptions{UPN: "bob@ops.example.test"}), "ops", nil},
		{"unmapped subject", good.issue(t, ClientOptions{UPN: "mallory@example.test"}), "", ErrUnmapped},
		{"no UPN", good.issue(t, ClientOptions{Name: "alice@example.test"}), "", ErrUnmapped},
		{"other CA", other.issue(t, ClientOptions{UPN: "alice@example.test"}), "", ErrUntrusted},
		{"expired", good.issue(t, ClientOptions{UPN: "alice@example.test", NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}), "", ErrExpired},
		{"not yet valid", good.issue(t, ClientOptions{UPN: "alice@example.test", NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)}), "", ErrExpired},
		{"no EKU extension", good.issue(t, ClientOptions{UPN: "alice@example.test", NoEKU: true}), "", ErrNoClientAuth},
		{"serverAuth only", good.issue(t, ClientOptions{UPN: "alice@example.test", EKUs: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), "", ErrNoClientAuth},
		{"revoked", revoked, "", ErrRevoked},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := mp.Map([]*x509.Certificate{c.cert})
			if c.err != nil {
				if !errors.Is(err, c.err) || !errors.Is(err, authn.ErrBadCredentials) {
					t.Fatalf("got %v, %v; want %v", r.Principal, err, c.err)
				}
				return
			}
			if err != nil || r.Principal.Name != c.user || r.Principal.Mechanism != Mechanism {
				t.Fatalf("got %+v, %v; want %s", r, err, c.user)
			}
		})
	}
	if _, err := mp.Map(nil); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("no certificate: %v", err)
	}
	var empty *Mapper
	if _, err := empty.Map([]*x509.Certificate{cases[0].cert}); !errors.Is(err, ErrUnmapped) {
		t.Errorf("nil mapper: %v", err)
	}
}

func TestStaleCRLFailsClosed(t *testing.T) {
	dir := t.TempDir()
	good := newCA(t, dir, "good")
	crl, err := IssueCRL(good.cert, good.key, nil, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "crl.der")
	os.WriteFile(f, crl, 0o644)
	mp, err := New([]configs.CertMapping{{Issuer: good.file, Subject: "*", User: "alice", CRLFile: f}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mp.Map([]*x509.Certificate{good.issue(t, ClientOptions{UPN: "alice@example.test"})}); !errors.Is(err, ErrStaleCRL) {
		t.Fatalf("stale CRL: %v", err)
	}
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	good, other := newCA(t, dir, "good"), newCA(t, dir, "other")
	crl, _ := IssueCRL(other.cert, other.key, nil, time.Now(), time.Now().Add(time.Hour))
	crlFile := filepath.Join(dir, "other.crl")
	os.WriteFile(crlFile, crl, 0o644)
	leafFile := filepath.Join(dir, "leaf.pem")
	os.WriteFile(leafFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: good.issue(t, ClientOptions{UPN: "a@b"}).Raw}), 0o644)
	for _, c := range []struct {
		m    configs.CertMapping
		want string
	}{
		{configs.CertMapping{Issuer: filepath.Join(dir, "missing.pem"), Subject: "*", User: "a"}, "certificate_mappings[0].issuer"},
		{configs.CertMapping{Issuer: leafFile, Subject: "*", User: "a"}, "not a CA certificate"},
		{configs.CertMapping{Issuer: good.file, Subject: "*", User: "a", IssuerThumbprint: "00112233445566778899aabbccddeeff00112233"}, "issuer_thumbprint"},
		{configs.CertMapping{Issuer: good.file, Subject: "*", User: "a", CRLFile: crlFile}, "not signed by a CA"},
	} {
		_, err := New([]configs.CertMapping{c.m})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.m, err, c.want)
		}
	}
}

func TestIntermediateChain(t *testing.T) {
	dir := t.TempDir()
	root := newCA(t, dir, "root")
	ik, _ := NewKey()
	// An intermediate CA signed by root, sent by the client.
	itmpl, err := IssueCA("inter", ik, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	itmpl.Raw = nil
	der, err := x509.CreateCertificate(rand.Reader, itmpl, root.cert, ik.Public(), root.key)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(der)
	leaf := ca{cert: inter, key: ik}.issue(t, ClientOptions{UPN: "alice@example.test"})
	mp, err := New([]configs.CertMapping{{Issuer: root.file, Subject: "alice@example.test", User: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := mp.Map([]*x509.Certificate{leaf, inter}); err != nil || r.Principal.Name != "alice" {
		t.Fatalf("with intermediate: %+v %v", r, err)
	}
	if _, err := mp.Map([]*x509.Certificate{leaf}); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("without the intermediate: %v", err)
	}
}

func TestUPNRoundTripAndGlob(t *testing.T) {
	for _, c := range []struct {
		p, s string
		ok   bool
	}{
		{"*", "a@b", true}, {"*@b", "a@b", true}, {"*@b", "a@c", false}, {"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false}, {"", "", true}, {"**", "x", true}, {"a@b", "a@bb", false},
	} {
		if glob(c.p, c.s) != c.ok {
			t.Errorf("glob(%q, %q) != %v", c.p, c.s, c.ok)
		}
	}
	dir := t.TempDir()
	good := newCA(t, dir, "good")
	c := good.issue(t, ClientOptions{UPN: "ünïcode@example.test"})
	u, err := UPNs(c)
	if err != nil || len(u) != 1 || u[0] != "ünïcode@example.test" {
		t.Fatalf("UPNs: %q %v", u, err)
	}
}

func FuzzUPNs(f *testing.F) {
	san, _ := MarshalUPNSAN("alice@example.test")
	f.Add(san)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := &x509.Certificate{Extensions: []pkix.Extension{{Id: oidSAN, Value: b}}}
		u, err := UPNs(c)
		if err == nil && len(u) > MaxUPNs {
			t.Fatalf("%d UPNs", len(u))
		}
	})
}
