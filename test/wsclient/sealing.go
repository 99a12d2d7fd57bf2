package wsclient

// Message encryption on HTTP (MS-WSMV 2.2.9.1): after authentication each
// body is a MIME multipart of two parts, a header naming the protocol and
// the plaintext's type and length, then the signature's length (LE32), the
// signature and the ciphertext:
//
//	--Encrypted Boundary\r\n
//	\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n
//	\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=N\r\n
//	--Encrypted Boundary\r\n
//	\tContent-Type: application/octet-stream\r\n
//	LE32(len(sig)) sig ciphertext--Encrypted Boundary--\r\n
//
// CredSSP's multipart/x-multi-encrypted repeats the pair per 16 KiB chunk
// of plaintext, and its ciphertext (TLS records) is longer than the
// plaintext that Length gives; AppendSealed writes it, Unseal reads both.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/bodgit/ntlmssp"
)

// Encryption protocols and the framing's boundary.
const (
	ProtoSPNEGO   = "application/HTTP-SPNEGO-session-encrypted"
	ProtoKerberos = "application/HTTP-Kerberos-session-encrypted"
	ProtoCredSSP  = "application/HTTP-CredSSP-session-encrypted"
	Boundary      = "Encrypted Boundary"
	// ChunkSize is the plaintext of one CredSSP part (pywinrm's, Windows').
	ChunkSize = 16384
)

// EncryptedContentType is a sealed body's Content-Type for proto.
func EncryptedContentType(proto string) string {
	return `multipart/encrypted;protocol="` + proto + `";boundary="` + Boundary + `"`
}

// SealedContentType is the Content-Type of plainLen bytes sealed by
// AppendSealed: multipart/x-multi-encrypted for CredSSP over ChunkSize.
func SealedContentType(proto string, plainLen int) string {
	if proto == ProtoCredSSP && plainLen > ChunkSize {
		return `multipart/x-multi-encrypted;protocol="` + proto + `";boundary="` + Boundary + `"`
	}
	return EncryptedContentType(proto)
}

// A Sealer seals one message: the signature (the token header of a
// Kerberos wrap token) and the ciphertext that follows it. A Kerberos
// initiator's sealer (kerberos.FinishInitiator) is one as it is; an NTLM
// session is one through NTLM.
type Sealer interface {
	Seal(plain []byte) (sig, data []byte, err error)
	Unseal(sig, data []byte) ([]byte, error)
}

// NTLM adapts bodgit/ntlmssp's security session (the library pywinrm's Go
// twin, masterzen/winrm, uses) to Sealer.
func NTLM(s *ntlmssp.SecuritySession) Sealer { return ntlmSealer{s} }

type ntlmSealer struct{ s *ntlmssp.SecuritySession }

func (n ntlmSealer) Seal(plain []byte) ([]byte, []byte, error) {
	ct, sig, err := n.s.Wrap(plain)
	return sig, ct, err
}

func (n ntlmSealer) Unseal(sig, data []byte) ([]byte, error) { return n.s.Unwrap(data, sig) }

// inPlaceUnsealer is a Sealer that can decrypt where the ciphertext is:
// authn.InPlaceUnsealer's method, declared here so that this client
// imports nothing of the daemon's.
type inPlaceUnsealer interface {
	UnsealInPlace(sig, data []byte) ([]byte, error)
}

// AppendingSealer is a Sealer that can also seal straight into a buffer,
// its signature and then its ciphertext, as ntlm.Session.AppendSeal does:
// AppendSealed then writes each part without a copy of its ciphertext.
type AppendingSealer interface {
	Sealer
	AppendSeal(dst, plain []byte) ([]byte, error)
	SignatureSize() int
}

// AppendSealed appends env sealed by s in the multipart framing of proto;
// CredSSP bodies over ChunkSize are sealed and framed chunk by chunk.
func AppendSealed(b []byte, s Sealer, proto string, env []byte) ([]byte, error) {
	chunk := len(env)
	if proto == ProtoCredSSP {
		chunk = min(chunk, ChunkSize)
	}
	as, direct := s.(AppendingSealer)
	for i := 0; ; i += chunk {
		part := env[i:min(i+chunk, len(env))]
		if direct {
			var err error
			b = binary.LittleEndian.AppendUint32(appendPartHead(b, proto, len(part)), uint32(as.SignatureSize()))
			if b, err = as.AppendSeal(b, part); err != nil {
				return nil, err
			}
		} else {
			sig, ct, err := s.Seal(part)
			if err != nil {
				return nil, err
			}
			b = appendPart(b, proto, len(part), sig, ct)
		}
		if i+chunk >= len(env) {
			break
		}
	}
	return append(b, "--"+Boundary+"--\r\n"...), nil
}

// AppendMultipart appends the framing around a signature and ciphertext
// made already (tests that tamper with one of them use it directly).
func AppendMultipart(b []byte, proto string, plainLen int, sig, ct []byte) []byte {
	return append(appendPart(b, proto, plainLen, sig, ct), "--"+Boundary+"--\r\n"...)
}

// appendPart appends one part: its header lines, the signature's length,
// the signature and the ciphertext.
func appendPart(b []byte, proto string, plainLen int, sig, ct []byte) []byte {
	b = binary.LittleEndian.AppendUint32(appendPartHead(b, proto, plainLen), uint32(len(sig)))
	b = append(b, sig...)
	return append(b, ct...)
}

// appendPartHead appends a part's header lines, up to the signature's
// length.
func appendPartHead(b []byte, proto string, plainLen int) []byte {
	b = append(b, "--"+Boundary+"\r\n\tContent-Type: "...)
	b = append(b, proto...)
	b = append(b, "\r\n\tOriginalContent: type="+SOAPContentType+";Length="...)
	b = strconv.AppendInt(b, int64(plainLen), 10)
	return append(b, "\r\n--"+Boundary+"\r\n\tContent-Type: application/octet-stream\r\n"...)
}

// maxSignature bounds a part's signature length (NTLM's is 16, a Kerberos
// wrap token header 16 plus its checksum or padding).
const maxSignature = 1024

var (
	octetLine = []byte("application/octet-stream")
	lengthKey = []byte("Length=")
	delimiter = []byte("--" + Boundary)
)

// Unseal decodes a multipart/encrypted or multipart/x-multi-encrypted
// body: every part's Length, signature and ciphertext, unsealed by s in
// order and concatenated. The ciphertext is Length bytes when a boundary
// follows them (NTLM, Kerberos), else it runs to the next boundary
// (CredSSP's TLS records). A sealer that can decrypt where the ciphertext
// lies (a Kerberos initiator's, as the daemon's sealing decoder uses it)
// does so: b then holds plaintext after the call.
func Unseal(s Sealer, b []byte) ([]byte, error) {
	var out []byte
	for {
		i := bytes.Index(b, lengthKey)
		if i < 0 {
			break
		}
		b = b[i+len(lengthKey):]
		j := 0
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		n, err := strconv.Atoi(string(b[:j]))
		if err != nil {
			return nil, fmt.Errorf("sealed body: Length: %w", err)
		}
		k := bytes.Index(b, octetLine)
		if k < 0 {
			return nil, errors.New("sealed body: no octet-stream part")
		}
		b = b[k+len(octetLine):]
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 || len(b) < nl+1+4 {
			return nil, errors.New("sealed body: truncated")
		}
		b = b[nl+1:]
		sl := int(binary.LittleEndian.Uint32(b))
		b = b[4:]
		if sl > maxSignature || len(b) < sl+n {
			return nil, fmt.Errorf("sealed body: signature length %d, %d bytes for %d", sl, len(b), n)
		}
		end := sl + n
		if rest := bytes.TrimPrefix(b[end:], []byte("\r\n")); !bytes.HasPrefix(rest, delimiter) {
			k := bytes.Index(b[end:], delimiter)
			if k < 0 {
				return nil, errors.New("sealed body: no boundary after the ciphertext")
			}
			end += k
		}
		var plain []byte
		if ip, ok := s.(inPlaceUnsealer); ok {
			plain, err = ip.UnsealInPlace(b[:sl], b[sl:end])
		} else {
			plain, err = s.Unseal(b[:sl], b[sl:end])
		}
		if err != nil {
			return nil, fmt.Errorf("unseal: %w", err)
		}
		if len(plain) != n {
			return nil, fmt.Errorf("sealed body: %d bytes unsealed, Length=%d", len(plain), n)
		}
		if out == nil {
			out = plain
		} else {
			out = append(out, plain...)
		}
		b = b[end:]
	}
	if out == nil {
		return nil, errors.New("sealed body: no parts")
	}
	return out, nil
}
