package certauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"time"
)

// Issuing certificates for `winrmd cert ca|client|crl` and the tests: a lab
// CA, client certificates for users, and CRLs. ECDSA P-256 keys, SHA-256.

// NewKey makes a P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// IssueCA makes a self-signed CA certificate valid from notBefore to notAfter.
func IssueCA(name string, key crypto.Signer, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"winrmd"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// ClientOptions describe a client certificate.
type ClientOptions struct {
	UPN       string // the subjectAltName UPN ("" for none)
	Name      string // subject CN (default: the UPN)
	NotBefore time.Time
	NotAfter  time.Time
	// EKUs default to clientAuth; set NoEKU for a certificate without the
	// extension (a negative test: such a certificate must be refused).
	EKUs  []x509.ExtKeyUsage
	NoEKU bool
}

// IssueClient makes a client certificate for pub signed by ca/caKey.
func IssueClient(ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, o ClientOptions) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	name := o.Name
	if name == "" {
		name = o.UPN
	}
	if name == "" {
		return nil, errors.New("a client certificate needs a UPN or a name")
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  o.EKUs,
	}
	if len(tmpl.ExtKeyUsage) == 0 && !o.NoEKU {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if o.UPN != "" {
		san, err := MarshalUPNSAN(o.UPN)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkixExt(oidSAN, san))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func pkixExt(id asn1.ObjectIdentifier, v []byte) pkix.Extension {
	return pkix.Extension{Id: id, Value: v}
}

// IssueCRL makes a CRL signed by ca listing serials, valid until nextUpdate.
func IssueCRL(ca *x509.Certificate, caKey crypto.Signer, serials []*big.Int, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	entries := make([]x509.RevocationListEntry, 0, len(serials))
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: thisUpdate})
	}
	n, err := serial()
	if err != nil {
		return nil, err
	}
	return x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: n, ThisUpdate: thisUpdate, NextUpdate: nextUpdate, RevokedCertificateEntries: entries,
	}, ca, caKey)
}
