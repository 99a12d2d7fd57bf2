package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

const certUsage = `usage: winrmd cert generate --cert FILE --key FILE [--host NAME]... [--days N]
       winrmd cert ca --cert FILE --key FILE [--name NAME] [--days N]
       winrmd cert client --ca FILE --ca-key FILE --upn USER@DOMAIN --cert FILE --key FILE [--days N]
       winrmd cert crl --ca FILE --ca-key FILE --out FILE [--revoke CERT]... [--days N]`

func certCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, certUsage)
		return 2
	}
	switch args[0] {
	case "generate":
	case "ca", "client", "crl":
		return clientCertCmd(args, stdout, stderr)
	default:
		fmt.Fprintln(stderr, certUsage)
		return 2
	}
	fs := newFlagSet("cert generate", stderr)
	certF := fs.String("cert", "/etc/winrmd/cert.pem", "certificate output (PEM)")
	keyF := fs.String("key", "/etc/winrmd/key.pem", "private key output (PEM, 0600)")
	days := fs.Int("days", 825, "validity in days")
	var hosts multiFlag
	fs.Var(&hosts, "host", "DNS name or IP address (repeatable; default: this host, localhost, 127.0.0.1, ::1)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if len(hosts) == 0 {
		hosts = defaultCertHosts()
	}
	if err := generateCert(*certF, *keyF, hosts, *days); err != nil {
		fmt.Fprintf(stderr, "winrmd: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s and %s for %s\n", *certF, *keyF, strings.Join(hosts, ", "))
	return 0
}

func defaultCertHosts() []string {
	h := []string{"localhost", "127.0.0.1", "::1"}
	if name, err := os.Hostname(); err == nil && name != "" && name != "localhost" {
		h = append([]string{name}, h...)
	}
	return h
}

// generateCert writes a self-signed RSA-2048/SHA-256 server certificate.
// The channel binding (tls-server-end-point) of such a certificate is SHA-256.
func generateCert(certFile, keyFile string, hosts []string, days int) error {
	if days < 1 || days > 3650 {
		return fmt.Errorf("--days must be 1..3650")
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{"winrmd"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Duration(days) * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	for _, f := range []string{certFile, keyFile} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return err
		}
	}
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
