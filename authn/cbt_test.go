package authn_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	bodgit "github.com/bodgit/ntlmssp"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
)

func selfSigned(t *testing.T, key crypto.Signer, alg x509.SignatureAlgorithm) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(1),
		Subject:            pkix.Name{CommonName: "winrmd.test"},
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		SignatureAlgorithm: alg,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Skipf("cannot create a %v certificate here: %v", alg, err)
	}
	return der
}

type oneUser struct{}

func (oneUser) NTHash(u string) ([]byte, error) {
	if u == "alice" {
		return ntlm.NTHash("pw"), nil
	}
	return nil, authn.ErrUnknownAccount
}

// TestTLSServerEndPointCBT: for each signature hash, a real client library
// (bodgit/ntlmssp, as used by masterzen/winrm) computes its channel
// bindings from the RFC 5929 application data; the acceptor, configured
// with our CBT at the strict level, must accept it, and refuse the CBT of
// a different certificate.
func TestTLSServerEndPointCBT(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		alg  x509.SignatureAlgorithm
		hash crypto.Hash
	}{
		{"ECDSA-SHA256", p256, x509.ECDSAWithSHA256, crypto.SHA256},
		{"ECDSA-SHA384", p384, x509.ECDSAWithSHA384, crypto.SHA384},
		{"ECDSA-SHA512", p521, x509.ECDSAWithSHA512, crypto.SHA512},
		{"RSA-SHA256", rsaKey, x509.SHA256WithRSA, crypto.SHA256},
		{"RSA-PSS-SHA384", rsaKey, x509.SHA384WithRSAPSS, crypto.SHA384},
		{"RSA-SHA1 uses SHA-256", rsaKey, x509.SHA1WithRSA, crypto.SHA256},
		{"Ed25519 uses SHA-256", edKey, x509.PureEd25519, crypto.SHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der := selfSigned(t, tc.key, tc.alg)
			cbt, err := authn.TLSServerEndPointCBT(der)
			if err != nil || len(cbt) != 16 {
				t.Fatalf("%x %v", cbt, err)
			}
			h := tc.hash.New()
			h.Write(der)
			appData := append([]byte("tls-server-end-point:"), h.Sum(nil)...)
			if err := bodgitLogon(t, cbt, appData); err != nil {
				t.Fatalf("matching channel: %v", err)
			}
			other := selfSigned(t, p256, x509.ECDSAWithSHA256)
			h = crypto.SHA256.New()
			h.Write(other)
			if err := bodgitLogon(t, cbt, append([]byte("tls-server-end-point:"), h.Sum(nil)...)); !errors.Is(err, authn.ErrChannelBinding) {
				t.Fatalf("other certificate: %v", err)
			}
		})
	}
	if _, err := authn.TLSServerEndPointCBT([]byte("not a certificate")); err == nil {
		t.Fatal("garbage accepted")
	}
}

func bodgitLogon(t *testing.T, cbt, appData []byte) error {
	t.Helper()
	cl, _ := bodgit.NewClient(bodgit.SetUserInfo("alice", "pw"), bodgit.SetVersion(bodgit.DefaultVersion()))
	a := ntlm.NewAcceptor(ntlm.Config{Verifier: ntlm.NewNTHashVerifier(oneUser{}), ChannelBinding: cbt, CBTLevel: ntlm.CBTStrict})
	neg, _ := cl.Authenticate(nil, nil)
	ch, _, err := a.Step(context.Background(), authn.ConnInfo{}, neg)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := cl.Authenticate(ch, &bodgit.ChannelBindings{ApplicationData: appData})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = a.Step(context.Background(), authn.ConnInfo{}, auth)
	return err
}
