package authn

import (
	"crypto"
	"crypto/md5"
	"crypto/x509"
	"encoding/binary"
	"fmt"

	_ "crypto/sha256" // registers SHA-256 for crypto.Hash
	_ "crypto/sha512" // registers SHA-384 and SHA-512
)

// TLSServerEndPointCBT returns the channel-binding token a client computes
// for a TLS server certificate (PROTOCOL 5.8): the RFC 5929
// tls-server-end-point application data "tls-server-end-point:" || H(cert),
// placed in an RFC 2744 gss_channel_bindings structure with empty
// addresses, hashed with MD5. H is the certificate signature's hash, or
// SHA-256 when that is MD5, SHA-1 or none (Ed25519). NTLM compares the
// result with MsvAvChannelBindings, Kerberos with the authenticator's Bnd.
func TLSServerEndPointCBT(certDER []byte) ([]byte, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("authn: channel binding: %w", err)
	}
	h := endPointHash(cert.SignatureAlgorithm).New()
	h.Write(certDER)
	app := append([]byte("tls-server-end-point:"), h.Sum(nil)...)

	// initiator_addrtype, initiator_address length, acceptor_addrtype,
	// acceptor_address length (all zero), application_data length, data.
	cb := make([]byte, 20, 20+len(app))
	binary.LittleEndian.PutUint32(cb[16:], uint32(len(app)))
	cb = append(cb, app...)
	sum := md5.Sum(cb)
	return sum[:], nil
}

func endPointHash(alg x509.SignatureAlgorithm) crypto.Hash {
	switch alg {
	case x509.SHA384WithRSA, x509.ECDSAWithSHA384, x509.SHA384WithRSAPSS:
		return crypto.SHA384
	case x509.SHA512WithRSA, x509.ECDSAWithSHA512, x509.SHA512WithRSAPSS:
		return crypto.SHA512
	default: // SHA-256 algorithms, MD5, SHA-1, Ed25519, unknown
		return crypto.SHA256
	}
}
