package main

import (
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/winrmd/winrmd/authn/certauth"
)

// clientCertCmd issues what client-certificate logons need (README,
// "Client certificates"): a CA to put in certificate_mappings[].issuer, a
// client certificate for a user's UPN, and a CRL revoking certificates.
func clientCertCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("cert "+args[0], stderr)
	certF := fs.String("cert", "", "certificate output (PEM)")
	keyF := fs.String("key", "", "private key output (PEM, 0600)")
	caF := fs.String("ca", "", "the CA certificate (PEM)")
	caKeyF := fs.String("ca-key", "", "the CA private key (PEM)")
	name := fs.String("name", "winrmd client CA", "CA common name")
	upn := fs.String("upn", "", "the user principal name put in the certificate's subjectAltName (user@domain)")
	out := fs.String("out", "", "CRL output (PEM)")
	var revoke multiFlag
	fs.Var(&revoke, "revoke", "a certificate (PEM) the CRL revokes (repeatable)")
	days := fs.Int("days", 0, "validity in days (CA 3650, client 365, CRL 30)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	err := func() error {
		now := time.Now()
		switch args[0] {
		case "ca":
			if *certF == "" || *keyF == "" {
				return errors.New("--cert and --key are required")
			}
			d, err := validDays(*days, 3650)
			if err != nil {
				return err
			}
			k, err := certauth.NewKey()
			if err != nil {
				return err
			}
			c, err := certauth.IssueCA(*name, k, now.Add(-time.Hour), now.AddDate(0, 0, d))
			if err != nil {
				return err
			}
			if err := writePair(*certF, *keyF, c, k); err != nil {
				return err
			}
			tp := sha1.Sum(c.Raw)
			fmt.Fprintf(stdout, "wrote CA %s and %s (thumbprint %s)\n", *certF, *keyF, hex.EncodeToString(tp[:]))
		case "client":
			if *certF == "" || *keyF == "" || *caF == "" || *caKeyF == "" || *upn == "" {
				return errors.New("--ca, --ca-key, --upn, --cert and --key are required")
			}
			d, err := validDays(*days, 365)
			if err != nil {
				return err
			}
			ca, caKey, err := loadCA(*caF, *caKeyF)
			if err != nil {
				return err
			}
			k, err := certauth.NewKey()
			if err != nil {
				return err
			}
			c, err := certauth.IssueClient(ca, caKey, k.Public(), certauth.ClientOptions{UPN: *upn, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(0, 0, d)})
			if err != nil {
				return err
			}
			if err := writePair(*certF, *keyF, c, k); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote client certificate %s and %s for %s (serial %s)\n", *certF, *keyF, *upn, c.SerialNumber.Text(16))
		case "crl":
			if *out == "" || *caF == "" || *caKeyF == "" {
				return errors.New("--ca, --ca-key and --out are required")
			}
			d, err := validDays(*days, 30)
			if err != nil {
				return err
			}
			ca, caKey, err := loadCA(*caF, *caKeyF)
			if err != nil {
				return err
			}
			var serials []*big.Int
			for _, f := range revoke {
				c, err := readCert(f)
				if err != nil {
					return err
				}
				serials = append(serials, c.SerialNumber)
			}
			der, err := certauth.IssueCRL(ca, caKey, serials, now.Add(-time.Minute), now.AddDate(0, 0, d))
			if err != nil {
				return err
			}
			if err := writeAtomic(*out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote CRL %s revoking %d certificate(s)\n", *out, len(serials))
		}
		return nil
	}()
	if err != nil {
		fmt.Fprintf(stderr, "winrmd cert %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func validDays(d, def int) (int, error) {
	if d == 0 {
		return def, nil
	}
	if d < 1 || d > 3650 {
		return 0, errors.New("--days must be 1..3650")
	}
	return d, nil
}

func writePair(certF, keyF string, c *x509.Certificate, k crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	for _, f := range []string{certF, keyF} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return err
		}
	}
	if err := writeAtomic(keyF, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certF, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644)
}

func readCert(f string) (*x509.Certificate, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE", f)
	}
	return x509.ParseCertificate(blk.Bytes)
}

func loadCA(certF, keyF string) (*x509.Certificate, crypto.Signer, error) {
	c, err := readCert(certF)
	if err != nil {
		return nil, nil, err
	}
	if !c.IsCA {
		return nil, nil, fmt.Errorf("%s: not a CA certificate", certF)
	}
	b, err := os.ReadFile(keyF)
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, nil, fmt.Errorf("%s: no PEM key", keyF)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyF, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not a signing key", keyF)
	}
	return c, s, nil
}
