// Package certauth turns a TLS client certificate into a Principal, the
// way WinRM's winrm/config/service/certmapping does: a table of mappings,
// each naming the CA that must have issued the certificate, the UPN (or a
// pattern) the certificate must carry, and the local account it logs on as.
//
// A certificate maps only when all of these hold, checked in this order for
// each mapping (the first mapping that matches wins):
//
//  1. its chain verifies against the mapping's CA file alone: the system's
//     roots never count, and intermediates come from what the client sent;
//  2. it is within its validity period (and so is every chain certificate);
//  3. it carries the clientAuth extended key usage (1.3.6.1.5.5.7.3.2)
//     explicitly: Go's verifier would accept a certificate with no EKU
//     extension at all for any usage, Windows does not;
//  4. when the mapping names an issuer thumbprint, that CA is in the chain;
//  5. when the mapping names a CRL, the CRL is signed by the issuing CA, not
//     past its nextUpdate (a stale CRL refuses everything: fail closed) and
//     does not list the certificate's serial number;
//  6. one of its UPNs (subjectAltName otherName 1.3.6.1.4.1.311.20.2.3,
//     a UTF8String) matches the mapping's subject.
//
// The result is a Principal naming the mapping's local user; the authorizer
// then decides admission exactly as for a password logon. Possession of the
// private key is proved by the TLS handshake itself (CertificateVerify), so
// this package only ever sees certificates whose key the client holds.
package certauth

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/configs"
)

// Mechanism is the Principal.Mechanism (and the metrics label) of a
// certificate logon.
const Mechanism = "certificate"

// Limits on what a client may present and on the files read.
const (
	// MaxChain bounds the certificates a client may send (leaf plus
	// intermediates); real chains are 2-4 long.
	MaxChain = 8
	// MaxUPNs bounds the UPNs looked at in one certificate.
	MaxUPNs = 16
	// MaxFileBytes bounds a CA or CRL file.
	MaxFileBytes = 16 << 20
)

// Errors, wrapped with the reason; every one also wraps
// authn.ErrBadCredentials so the server treats it as a failed logon.
var (
	ErrNoCertificate = fmt.Errorf("%w: no client certificate", authn.ErrBadCredentials)
	ErrUntrusted     = fmt.Errorf("%w: client certificate not issued by a mapped CA", authn.ErrBadCredentials)
	ErrExpired       = fmt.Errorf("%w: client certificate expired or not yet valid", authn.ErrBadCredentials)
	ErrNoClientAuth  = fmt.Errorf("%w: client certificate lacks the clientAuth EKU", authn.ErrBadCredentials)
	ErrRevoked       = fmt.Errorf("%w: client certificate revoked", authn.ErrBadCredentials)
	ErrStaleCRL      = fmt.Errorf("%w: CRL past its nextUpdate", authn.ErrBadCredentials)
	ErrUnmapped      = fmt.Errorf("%w: no certificate mapping matches the subject", authn.ErrBadCredentials)
)

// oidUPN is Microsoft's UPN otherName; oidSAN the subjectAltName extension.
var (
	oidUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
	oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}
)

type mapping struct {
	index      int
	roots      *x509.CertPool
	cas        []*x509.Certificate
	thumbprint []byte // nil: any CA of the file
	subject    string // lower-cased
	user       string
	crl        *x509.RevocationList
	crlFile    string
}

// Mapper is a loaded mapping table. It is immutable and safe for concurrent
// use; a configuration reload builds a new one.
type Mapper struct {
	m   []mapping
	now func() time.Time
}

// New loads every mapping's CA and CRL files; an error names the mapping
// and the file.
func New(ms []configs.CertMapping) (*Mapper, error) {
	mp := &Mapper{now: time.Now}
	for i, c := range ms {
		key := fmt.Sprintf("certificate_mappings[%d]", i)
		cas, err := readCerts(c.Issuer)
		if err != nil {
			return nil, fmt.Errorf("%s.issuer: %w", key, err)
		}
		m := mapping{index: i, roots: x509.NewCertPool(), cas: cas, subject: strings.ToLower(c.Subject), user: c.User}
		for _, ca := range cas {
			if !ca.IsCA || !ca.BasicConstraintsValid {
				return nil, fmt.Errorf("%s.issuer: %s: %q is not a CA certificate (basicConstraints cA)", key, c.Issuer, ca.Subject.String())
			}
			m.roots.AddCert(ca)
		}
		if c.IssuerThumbprint != "" {
			m.thumbprint, err = hex.DecodeString(c.IssuerThumbprint)
			if err != nil || (len(m.thumbprint) != sha1.Size && len(m.thumbprint) != sha256.Size) {
				return nil, fmt.Errorf("%s.issuer_thumbprint: not a SHA-1 or SHA-256 hex digest", key)
			}
			if !slices.ContainsFunc(cas, func(ca *x509.Certificate) bool { return thumbMatch(ca, m.thumbprint) }) {
				return nil, fmt.Errorf("%s.issuer_thumbprint: no certificate in %s has thumbprint %s", key, c.Issuer, c.IssuerThumbprint)
			}
		}
		if c.CRLFile != "" {
			m.crl, err = readCRL(c.CRLFile)
			if err != nil {
				return nil, fmt.Errorf("%s.crl_file: %w", key, err)
			}
			if !slices.ContainsFunc(cas, func(ca *x509.Certificate) bool { return m.crl.CheckSignatureFrom(ca) == nil }) {
				return nil, fmt.Errorf("%s.crl_file: %s is not signed by a CA of %s", key, c.CRLFile, c.Issuer)
			}
			m.crlFile = c.CRLFile
		}
		mp.m = append(mp.m, m)
	}
	return mp, nil
}

// Len is the number of mappings.
func (mp *Mapper) Len() int {
	if mp == nil {
		return 0
	}
	return len(mp.m)
}

// Result is a successful mapping: the Principal for the authorizer, plus
// what the audit line shows of the certificate.
type Result struct {
	Principal authn.Principal
	UPN       string // the UPN that matched
	Subject   string // the certificate's subject DN
	Serial    string // hex
	Mapping   int    // index in certificate_mappings
}

// Map checks chain (the leaf first, as crypto/tls delivers it) against the
// table. The error wraps one of the Err* values above; when several
// mappings refuse for different reasons, the one from the mapping that got
// furthest is reported.
func (mp *Mapper) Map(chain []*x509.Certificate) (Result, error) {
	if len(chain) == 0 {
		return Result{}, ErrNoCertificate
	}
	if mp == nil || len(mp.m) == 0 {
		return Result{}, ErrUnmapped
	}
	if len(chain) > MaxChain {
		return Result{}, fmt.Errorf("%w: %d certificates sent (limit %d)", authn.ErrMalformed, len(chain), MaxChain)
	}
	leaf := chain[0]
	upns, err := UPNs(leaf)
	if err != nil {
		return Result{}, err
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	now := mp.now()
	best, bestRank := ErrUntrusted, 0
	refuse := func(rank int, err error) {
		if rank > bestRank {
			best, bestRank = err, rank
		}
	}
	{
		for _, m := range mp.m {
			chains, err := leaf.Verify(x509.VerifyOptions{
				Roots: m.roots, Intermediates: inter, CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			if err != nil {
				var inv x509.CertificateInvalidError
				switch {
				case errors.As(err, &inv) && inv.Reason == x509.Expired:
					refuse(2, fmt.Errorf("%w (%s, valid %s to %s)", ErrExpired, leaf.Subject, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339)))
				case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
					refuse(2, fmt.Errorf("%w (%s)", ErrNoClientAuth, leaf.Subject))
				default:
					refuse(1, fmt.Errorf("%w (%s, issuer %s): %v", ErrUntrusted, leaf.Subject, leaf.Issuer, err))
				}
				continue
			}
			if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
				refuse(2, fmt.Errorf("%w (%s)", ErrNoClientAuth, leaf.Subject))
				continue
			}
			if m.thumbprint != nil && !anyChain(chains, func(c *x509.Certificate) bool { return thumbMatch(c, m.thumbprint) }) {
				refuse(1, fmt.Errorf("%w (%s): chain lacks the CA with the mapping's thumbprint", ErrUntrusted, leaf.Subject))
				continue
			}
			if m.crl != nil {
				if err := m.checkCRL(leaf, now); err != nil {
					refuse(4, err)
					continue
				}
			}
			upn, ok := matchSubject(m.subject, upns)
			if !ok {
				refuse(3, fmt.Errorf("%w (%s, UPNs %q)", ErrUnmapped, leaf.Subject, upns))
				continue
			}
			return Result{
				Principal: authn.Principal{Name: m.user, Mechanism: Mechanism, Client: upn},
				UPN:       upn,
				Subject:   leaf.Subject.String(),
				Serial:    leaf.SerialNumber.Text(16),
				Mapping:   m.index,
			}, nil
		}
	}
	return Result{}, best
}

func (m *mapping) checkCRL(leaf *x509.Certificate, now time.Time) error {
	if !m.crl.NextUpdate.IsZero() && now.After(m.crl.NextUpdate) {
		return fmt.Errorf("%w (%s, nextUpdate %s)", ErrStaleCRL, m.crlFile, m.crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	if !bytes.Equal(m.crl.RawIssuer, leaf.RawIssuer) {
		// A CRL covers only its issuer's certificates: one issued by an
		// intermediate is not covered by the root's CRL. Refuse rather than
		// pass a certificate whose revocation cannot be checked.
		return fmt.Errorf("%w (%s): %s does not cover certificates issued by %s", ErrRevoked, leaf.Subject, m.crlFile, leaf.Issuer)
	}
	for _, e := range m.crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
			return fmt.Errorf("%w (%s, serial %s, by %s)", ErrRevoked, leaf.Subject, serialHex(leaf.SerialNumber), m.crlFile)
		}
	}
	return nil
}

func serialHex(n *big.Int) string { return n.Text(16) }

func anyChain(chains [][]*x509.Certificate, f func(*x509.Certificate) bool) bool {
	for _, ch := range chains {
		if slices.ContainsFunc(ch[1:], f) {
			return true
		}
	}
	return false
}

func thumbMatch(c *x509.Certificate, t []byte) bool {
	if len(t) == sha1.Size {
		h := sha1.Sum(c.Raw)
		return bytes.Equal(h[:], t)
	}
	h := sha256.Sum256(c.Raw)
	return bytes.Equal(h[:], t)
}

// matchSubject matches a lower-cased pattern against the UPNs; "*" in the
// pattern matches any run of characters.
func matchSubject(pattern string, upns []string) (string, bool) {
	for _, u := range upns {
		if glob(pattern, strings.ToLower(u)) {
			return u, true
		}
	}
	return "", false
}

// glob matches s against p where '*' is any run (no other metacharacter).
// Iterative with one back-track point: linear in practice, never exponential.
func glob(p, s string) bool {
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// UPNs returns the certificate's UPNs (subjectAltName otherName
// 1.3.6.1.4.1.311.20.2.3). A malformed subjectAltName is an error wrapping
// authn.ErrMalformed.
func UPNs(c *x509.Certificate) ([]string, error) {
	var out []string
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidSAN) {
			continue
		}
		var names []asn1.RawValue
		if rest, err := asn1.Unmarshal(ext.Value, &names); err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("%w: subjectAltName: not a SEQUENCE of GeneralName", authn.ErrMalformed)
		}
		for _, n := range names {
			// otherName [0] IMPLICIT SEQUENCE { type-id OID, value [0] EXPLICIT ANY }
			if n.Class != asn1.ClassContextSpecific || n.Tag != 0 || !n.IsCompound {
				continue
			}
			var oid asn1.ObjectIdentifier
			rest, err := asn1.Unmarshal(n.Bytes, &oid)
			if err != nil {
				return nil, fmt.Errorf("%w: subjectAltName otherName: type-id", authn.ErrMalformed)
			}
			if !oid.Equal(oidUPN) {
				continue
			}
			var wrapped asn1.RawValue
			if r2, err := asn1.Unmarshal(rest, &wrapped); err != nil || len(r2) != 0 || wrapped.Class != asn1.ClassContextSpecific || wrapped.Tag != 0 {
				return nil, fmt.Errorf("%w: subjectAltName UPN: value is not [0] EXPLICIT", authn.ErrMalformed)
			}
			var upn string
			if r3, err := asn1.UnmarshalWithParams(wrapped.Bytes, &upn, "utf8"); err != nil || len(r3) != 0 {
				return nil, fmt.Errorf("%w: subjectAltName UPN: not a UTF8String", authn.ErrMalformed)
			}
			if upn == "" || len(upn) > 1024 || strings.ContainsFunc(upn, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return nil, fmt.Errorf("%w: subjectAltName UPN: empty, too long or with control characters", authn.ErrMalformed)
			}
			if len(out) == MaxUPNs {
				return nil, fmt.Errorf("%w: more than %d UPNs", authn.ErrMalformed, MaxUPNs)
			}
			out = append(out, upn)
		}
	}
	return out, nil
}

// MarshalUPNSAN builds a subjectAltName extension value carrying upn as an
// otherName (for `winrmd cert client` and tests).
func MarshalUPNSAN(upn string) ([]byte, error) {
	utf, err := asn1.MarshalWithParams(upn, "utf8")
	if err != nil {
		return nil, err
	}
	oid, err := asn1.Marshal(oidUPN)
	if err != nil {
		return nil, err
	}
	val, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: utf})
	if err != nil {
		return nil, err
	}
	other, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(oid, val...)})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: other})
}

func readFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileBytes)
	}
	return os.ReadFile(path)
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE", path)
	}
	return out, nil
}

func readCRL(path string) (*x509.RevocationList, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "X509 CRL" {
			return nil, fmt.Errorf("%s: PEM block %q, want X509 CRL", path, blk.Type)
		}
		b = blk.Bytes
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return crl, nil
}
