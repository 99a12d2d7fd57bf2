package credssp

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/winrmd/winrmd/authn"
)

// sealer is WinRM message encryption with the CredSSP TLS channel
// (MS-WSMV 2.2.9.1.3, PROTOCOL 6.4): a message is the TLS application-data
// record(s) of its plaintext; the first "trailer" bytes go in the
// signature slot. Clients concatenate signature and data before they
// decrypt, so the split only has to add up; it follows SChannel's stream
// sizes: 16 for AES-GCM under TLS 1.2, 17 under TLS 1.3.
type sealer struct{ a *Acceptor }

// maxRecordBody bounds one TLS record's body (RFC 8446 5.2: 2^14 + 256).
const maxRecordBody = 16384 + 256

func (s *sealer) Seal(plain []byte) ([]byte, []byte, error) {
	if _, err := s.a.tls.Write(plain); err != nil {
		return nil, nil, fmt.Errorf("credssp: seal: %w", err)
	}
	rec := s.a.conn.take()
	n := 16
	if s.a.tls.ConnectionState().Version == tls.VersionTLS13 {
		n = 17
	}
	if n > len(rec) {
		n = len(rec)
	}
	return rec[:n:n], rec[n:], nil
}

// Unseal accepts only whole TLS records (5-byte headers parsed here), so
// crypto/tls never holds half a record between messages.
func (s *sealer) Unseal(sig, data []byte) ([]byte, error) {
	in := append(append([]byte{}, sig...), data...)
	for rest := in; len(rest) > 0; {
		if len(rest) < 5 {
			return nil, fmt.Errorf("credssp: truncated TLS record header: %w", authn.ErrMalformed)
		}
		if rest[0] != 23 { // application_data
			return nil, fmt.Errorf("credssp: TLS record type %d in a message: %w", rest[0], authn.ErrMalformed)
		}
		l := int(rest[3])<<8 | int(rest[4])
		if l > maxRecordBody || 5+l > len(rest) {
			return nil, fmt.Errorf("credssp: TLS record of %d bytes: %w", l, authn.ErrMalformed)
		}
		rest = rest[5+l:]
	}
	c := s.a.conn
	c.mu.Lock()
	if len(c.in) != 0 {
		c.mu.Unlock()
		return nil, fmt.Errorf("credssp: unread TLS input: %w", authn.ErrMalformed)
	}
	c.in = in
	c.mu.Unlock()
	var out []byte
	buf := make([]byte, 16384+512)
	for {
		n, err := s.a.tls.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			if errors.Is(err, errWouldBlock) {
				break
			}
			clear(out)
			return nil, fmt.Errorf("credssp: unseal: %v: %w", err, authn.ErrBadCredentials)
		}
	}
	return out, nil
}
