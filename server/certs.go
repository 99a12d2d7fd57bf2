package server

import (
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/winrmd/winrmd/authn"
)

// CertStore serves the HTTPS certificate and reloads it on demand (SIGHUP).
// Each listener's pair is loaded once; channel bindings are computed from
// the certificate actually served.
type CertStore struct {
	mu    sync.Mutex
	cert  atomic.Pointer[certEntry]
	certF string
	keyF  string
}

type certEntry struct {
	tls *tls.Certificate
	cbt []byte
}

// LoadCertStore loads a certificate and key (PEM).
func LoadCertStore(certFile, keyFile string) (*CertStore, error) {
	cs := &CertStore{certF: certFile, keyF: keyFile}
	if err := cs.Reload(); err != nil {
		return nil, err
	}
	return cs, nil
}

// Reload re-reads the files; on error the old certificate stays in use.
func (cs *CertStore) Reload() error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c, err := tls.LoadX509KeyPair(cs.certF, cs.keyF)
	if err != nil {
		return fmt.Errorf("certificate %s / %s: %w", cs.certF, cs.keyF, err)
	}
	cbt, err := authn.TLSServerEndPointCBT(c.Certificate[0])
	if err != nil {
		return fmt.Errorf("certificate %s: channel binding: %w", cs.certF, err)
	}
	cs.cert.Store(&certEntry{tls: &c, cbt: cbt})
	return nil
}

// GetCertificate is for tls.Config.
func (cs *CertStore) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return cs.cert.Load().tls, nil
}

// ChannelBinding is the expected tls-server-end-point CBT of the current certificate.
func (cs *CertStore) ChannelBinding() []byte { return cs.cert.Load().cbt }
