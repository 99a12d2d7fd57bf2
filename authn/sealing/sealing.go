// Package sealing is the MS-WSMV 2.2.9.1 multipart codec for encrypted
// WinRM bodies (PROTOCOL 6.1): multipart/encrypted and, for CredSSP bodies
// over 16 KiB, multipart/x-multi-encrypted.
//
// It parses leniently — OMI omits the TABs and appends a CRLF, Exchange
// puts a space after "--", header names and parameters are
// case-insensitive — and emits exactly what pywinrm and pypsrp expect:
// TAB-prefixed part headers and the literal trailer
// "--Encrypted Boundary--\r\n". It is a pure wire package: no I/O, no
// logging; the Sealer does the cryptography.
package sealing

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/winrmd/winrmd/authn"
)

// MIME protocols of encrypted parts.
const (
	ProtocolSPNEGO   = "application/HTTP-SPNEGO-session-encrypted"
	ProtocolKerberos = "application/HTTP-Kerberos-session-encrypted"
	ProtocolCredSSP  = "application/HTTP-CredSSP-session-encrypted"
)

const (
	// Boundary is the only boundary clients and Windows use; Encode emits it.
	Boundary = "Encrypted Boundary"
	// ChunkSize is the CredSSP plaintext chunk of x-multi-encrypted bodies.
	ChunkSize = 16384
	// MaxSignatureSize bounds sig_len (NTLM 16, Kerberos 60/76, TLS < 100).
	MaxSignatureSize = 1024
	// MaxParts bounds the parts of one body (a 500 KiB CredSSP body has 32).
	MaxParts = 1024
	// DefaultMaxPlain is used when Decode is given no limit: Windows'
	// MaxEnvelopeSizekb 500.
	DefaultMaxPlain = 500 * 1024

	typeEncrypted      = "multipart/encrypted"
	typeMultiEncrypted = "multipart/x-multi-encrypted"
	octetStream        = "application/octet-stream"
	soapType           = "application/soap+xml;charset=UTF-8"
)

// ErrTooLarge is returned when the decrypted body would exceed maxPlain.
var ErrTooLarge = errors.New("sealing: decrypted body exceeds the size limit")

func malformed(format string, args ...any) error {
	return fmt.Errorf("sealing: "+format+": %w", append(args, authn.ErrMalformed)...)
}

// mediaType splits a Content-Type into its lower-cased type and its
// parameters (lower-cased names, unquoted values). It is lenient: stray
// spaces, missing quotes, trailing semicolons.
func mediaType(ct string) (string, map[string]string) {
	parts := strings.Split(ct, ";")
	mt := strings.ToLower(strings.TrimSpace(parts[0]))
	params := make(map[string]string, len(parts)-1)
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		if _, dup := params[k]; !dup {
			params[k] = v
		}
	}
	return mt, params
}

// IsEncrypted reports whether a request Content-Type is an encrypted body.
func IsEncrypted(contentType string) bool {
	mt, _ := mediaType(contentType)
	return mt == typeEncrypted || mt == typeMultiEncrypted
}

// canonicalProtocol maps a protocol name, case-insensitively, to its
// constant.
func canonicalProtocol(p string) (string, bool) {
	for _, c := range []string{ProtocolSPNEGO, ProtocolKerberos, ProtocolCredSSP} {
		if strings.EqualFold(strings.TrimSpace(p), c) {
			return c, true
		}
	}
	return "", false
}

// Decode verifies and decrypts an encrypted body. It returns the plaintext
// (the concatenation of all parts) and the protocol, which the response
// must use. maxPlain bounds the plaintext (DefaultMaxPlain when <= 0).
// body is overwritten when the Sealer decrypts in place.
func Decode(contentType string, body []byte, maxPlain int, s authn.Sealer) (plain []byte, protocol string, err error) {
	if s == nil {
		return nil, "", fmt.Errorf("sealing: encrypted body without a security context: %w", authn.ErrUnsupported)
	}
	if maxPlain <= 0 {
		maxPlain = DefaultMaxPlain
	}
	mt, params := mediaType(contentType)
	if mt != typeEncrypted && mt != typeMultiEncrypted {
		return nil, "", malformed("content type %q is not encrypted", mt)
	}
	if p, ok := params["protocol"]; ok {
		if protocol, ok = canonicalProtocol(p); !ok {
			return nil, "", fmt.Errorf("sealing: protocol %q: %w", p, authn.ErrUnsupported)
		}
	}
	boundary := params["boundary"]
	if boundary == "" {
		boundary = Boundary
	}
	d := decoder{body: body, boundary: []byte(boundary)}
	var parts [][]byte
	total := 0
	pos := skipSpace(body, 0)
	for {
		n, final, ok := d.delimiterAt(pos)
		if !ok {
			return nil, "", malformed("expected boundary %q at offset %d", boundary, pos)
		}
		pos += n
		if final {
			break
		}
		if len(parts) == MaxParts {
			return nil, "", malformed("more than %d parts", MaxParts)
		}
		p, next, err := d.part(pos)
		if err != nil {
			return nil, "", err
		}
		if protocol == "" {
			protocol = p.protocol
		} else if p.protocol != protocol {
			return nil, "", malformed("part protocol %q differs from %q", p.protocol, protocol)
		}
		if p.length > maxPlain-total {
			return nil, "", fmt.Errorf("%w (%d > %d)", ErrTooLarge, total+p.length, maxPlain)
		}
		var out []byte
		if ip, ok := s.(authn.InPlaceUnsealer); ok { // then nothing is allocated for a one-part body
			out, err = ip.UnsealInPlace(p.sig, p.data)
		} else {
			out, err = s.Unseal(p.sig, p.data)
		}
		if err != nil {
			return nil, "", fmt.Errorf("sealing: unseal part %d: %w", len(parts)+1, err)
		}
		if len(out) != p.length {
			return nil, "", malformed("decrypted %d bytes, OriginalContent Length=%d", len(out), p.length)
		}
		total += len(out)
		parts = append(parts, out)
		pos = next
	}
	if len(parts) == 0 {
		return nil, "", malformed("no encrypted part")
	}
	if rest := skipSpace(body, pos); rest != len(body) {
		return nil, "", malformed("%d bytes after the closing boundary", len(body)-rest)
	}
	if len(parts) == 1 {
		return parts[0], protocol, nil
	}
	plain = make([]byte, 0, total)
	for _, p := range parts {
		plain = append(plain, p...)
	}
	return plain, protocol, nil
}

type decoder struct {
	body     []byte
	boundary []byte
}

type part struct {
	protocol  string
	length    int
	sig, data []byte
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// delimiterAt matches a boundary line at i: "--" [spaces] boundary, then
// "--" (final) or optional blanks and a line end. It returns the bytes
// consumed (the line end included; after a final delimiter, its optional
// line end).
func (d *decoder) delimiterAt(i int) (n int, final, ok bool) {
	b := d.body
	j := i
	if len(b)-j < 2 || b[j] != '-' || b[j+1] != '-' {
		return 0, false, false
	}
	j += 2
	for j < len(b) && b[j] == ' ' {
		j++
	}
	if !bytes.HasPrefix(b[j:], d.boundary) {
		return 0, false, false
	}
	j += len(d.boundary)
	if len(b)-j >= 2 && b[j] == '-' && b[j+1] == '-' {
		return j + 2 - i, true, true
	}
	for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
		j++
	}
	switch {
	case len(b)-j >= 2 && b[j] == '\r' && b[j+1] == '\n':
		return j + 2 - i, false, true
	case j < len(b) && b[j] == '\n':
		return j + 1 - i, false, true
	}
	return 0, false, false
}

// line returns the header line at i (without its end, leading blanks
// trimmed) and the offset after it.
func (d *decoder) line(i int) (string, int, bool) {
	b := d.body
	e := bytes.IndexByte(b[i:], '\n')
	if e < 0 || e > 4096 {
		return "", 0, false
	}
	l := b[i : i+e]
	l = bytes.TrimSuffix(l, []byte{'\r'})
	return strings.TrimLeft(string(l), " \t"), i + e + 1, true
}

// header splits "Name: value".
func header(l string) (name, value string) {
	k, v, _ := strings.Cut(l, ":")
	return strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
}

// part parses one encrypted part starting after its first delimiter line
// and returns it with the offset of the next delimiter.
func (d *decoder) part(pos int) (part, int, error) {
	var p part
	p.length = -1
	// First header block, up to the second delimiter.
	for lines := 0; ; lines++ {
		if lines > 16 {
			return p, 0, malformed("too many part header lines")
		}
		if n, final, ok := d.delimiterAt(pos); ok {
			if final {
				return p, 0, malformed("closing boundary inside a part")
			}
			pos += n
			break
		}
		l, next, ok := d.line(pos)
		if !ok {
			return p, 0, malformed("part header truncated at offset %d", pos)
		}
		pos = next
		name, value := header(l)
		switch name {
		case "":
		case "content-type":
			proto, ok := canonicalProtocol(value)
			if !ok {
				return p, 0, fmt.Errorf("sealing: part protocol %q: %w", value, authn.ErrUnsupported)
			}
			p.protocol = proto
		case "originalcontent":
			_, params := mediaType(value)
			ls, ok := params["length"]
			if !ok {
				return p, 0, malformed("OriginalContent without Length")
			}
			n, err := parseLength(ls)
			if err != nil {
				return p, 0, err
			}
			p.length = n
		default:
			return p, 0, malformed("unexpected part header %q", name)
		}
	}
	if p.protocol == "" {
		return p, 0, malformed("part without Content-Type")
	}
	if p.length < 0 {
		return p, 0, malformed("part without OriginalContent Length")
	}
	// Second header block: exactly the octet-stream line, then binary.
	l, next, ok := d.line(pos)
	if !ok {
		return p, 0, malformed("octet-stream header truncated")
	}
	if name, value := header(l); name != "content-type" || !strings.EqualFold(value, octetStream) {
		return p, 0, malformed("expected Content-Type: %s, got %q", octetStream, l)
	}
	pos = next
	b := d.body
	if len(b)-pos < 4 {
		return p, 0, malformed("signature length truncated")
	}
	sl := binary.LittleEndian.Uint32(b[pos:])
	pos += 4
	if sl == 0 || sl > MaxSignatureSize || int(sl) > len(b)-pos {
		return p, 0, malformed("signature length %d", sl)
	}
	p.sig = b[pos : pos+int(sl) : pos+int(sl)]
	start := pos + int(sl)
	end := d.dataEnd(start, p.length)
	if end < 0 {
		return p, 0, malformed("no boundary after the encrypted data")
	}
	p.data = b[start:end:end]
	if _, _, ok := d.delimiterAt(end); !ok {
		end += 2 // the CRLF dataEnd allowed before the delimiter
	}
	return p, end, nil
}

// dataEnd finds where a part's data ends: preferably exactly Length bytes
// on (NTLM and Kerberos ciphertext is as long as the plaintext), where a
// delimiter, possibly after a CRLF, must follow; else at the first
// delimiter after that point; else the first after start.
func (d *decoder) dataEnd(start, length int) int {
	if length <= len(d.body)-start {
		at := start + length
		if _, _, ok := d.delimiterAt(at); ok {
			return at
		}
		if bytes.HasPrefix(d.body[at:], []byte("\r\n")) {
			if _, _, ok := d.delimiterAt(at + 2); ok {
				return at
			}
		}
		if e := d.findDelimiter(at); e >= 0 {
			return e
		}
	}
	return d.findDelimiter(start)
}

// findDelimiter returns the offset of the first delimiter at or after i.
func (d *decoder) findDelimiter(i int) int {
	b := d.body
	for i < len(b) {
		k := bytes.Index(b[i:], d.boundary)
		if k < 0 {
			return -1
		}
		at := i + k
		j := at
		for j > i && b[j-1] == ' ' {
			j--
		}
		if j-2 >= i && b[j-1] == '-' && b[j-2] == '-' {
			if _, _, ok := d.delimiterAt(j - 2); ok {
				return j - 2
			}
		}
		i = at + 1
	}
	return -1
}

// parseLength parses a decimal Length strictly.
func parseLength(s string) (int, error) {
	if s == "" || len(s) > 10 {
		return 0, malformed("OriginalContent Length %q", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, malformed("OriginalContent Length %q", s)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > 1<<31-1 {
		return 0, malformed("OriginalContent Length %q", s)
	}
	return n, nil
}

// Encode seals plain and frames it. CredSSP bodies over ChunkSize become
// multipart/x-multi-encrypted, one part per chunk; everything else is a
// single multipart/encrypted part.
func Encode(protocol string, plain []byte, s authn.Sealer) (body []byte, contentType string, err error) {
	return AppendEncode(nil, protocol, plain, s)
}

// AppendEncode is Encode appending the body to dst, so that a caller can
// reuse one buffer from body to body (the server's sealed streams).
func AppendEncode(dst []byte, protocol string, plain []byte, s authn.Sealer) (body []byte, contentType string, err error) {
	proto, ok := canonicalProtocol(protocol)
	if !ok || proto != protocol {
		return nil, "", fmt.Errorf("sealing: protocol %q: %w", protocol, authn.ErrUnsupported)
	}
	if s == nil {
		return nil, "", fmt.Errorf("sealing: no security context: %w", authn.ErrUnsupported)
	}
	mt := typeEncrypted
	chunks := [][]byte{plain}
	if protocol == ProtocolCredSSP && len(plain) > ChunkSize {
		mt = typeMultiEncrypted
		chunks = chunks[:0]
		for i := 0; i < len(plain); i += ChunkSize {
			chunks = append(chunks, plain[i:min(i+ChunkSize, len(plain))])
		}
	}
	if as, ok := s.(appendSealer); ok {
		return encodeAppend(dst, mt, protocol, chunks, as)
	}
	type sealed struct{ sig, data []byte }
	out := make([]sealed, len(chunks))
	size := len("--" + Boundary + "--\r\n")
	for i, c := range chunks {
		sig, data, err := s.Seal(c)
		if err != nil {
			return nil, "", fmt.Errorf("sealing: seal: %w", err)
		}
		out[i] = sealed{sig, data}
		size += partHeaderLen(protocol, len(c)) + 4 + len(sig) + len(data)
	}
	body = grow(dst, size)
	for i, c := range chunks {
		body = appendPartHeader(body, protocol, len(c))
		body = binary.LittleEndian.AppendUint32(body, uint32(len(out[i].sig)))
		body = append(body, out[i].sig...)
		body = append(body, out[i].data...)
	}
	body = append(body, "--"+Boundary+"--\r\n"...)
	return body, mimeType(mt, protocol), nil
}

// appendSealer is a Sealer that can seal into the caller's buffer (NTLM's
// Session): Encode then allocates the body once and copies nothing.
type appendSealer interface {
	SignatureSize() int
	AppendSeal(dst, plain []byte) ([]byte, error)
}

// grow returns dst with room for n more bytes: dst itself when it has it,
// else a copy with exactly that capacity (a body is allocated once, to
// its size).
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst
	}
	b := make([]byte, len(dst), len(dst)+n)
	copy(b, dst)
	return b
}

func mimeType(mt, protocol string) string {
	return mt + `;protocol="` + protocol + `";boundary="` + Boundary + `"`
}

func encodeAppend(dst []byte, mt, protocol string, chunks [][]byte, s appendSealer) ([]byte, string, error) {
	size := len("--" + Boundary + "--\r\n")
	for _, c := range chunks {
		size += partHeaderLen(protocol, len(c)) + 4 + s.SignatureSize() + len(c)
	}
	body := grow(dst, size)
	for _, c := range chunks {
		body = appendPartHeader(body, protocol, len(c))
		body = binary.LittleEndian.AppendUint32(body, uint32(s.SignatureSize()))
		var err error
		if body, err = s.AppendSeal(body, c); err != nil {
			return nil, "", fmt.Errorf("sealing: seal: %w", err)
		}
	}
	body = append(body, "--"+Boundary+"--\r\n"...)
	return body, mimeType(mt, protocol), nil
}

func appendPartHeader(b []byte, protocol string, n int) []byte {
	b = append(b, "--"+Boundary+"\r\n\tContent-Type: "...)
	b = append(b, protocol...)
	b = append(b, "\r\n\tOriginalContent: type="+soapType+";Length="...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, "\r\n--"+Boundary+"\r\n\tContent-Type: "+octetStream+"\r\n"...)
}

func partHeaderLen(protocol string, n int) int {
	const fixed = len("--"+Boundary+"\r\n\tContent-Type: ") +
		len("\r\n\tOriginalContent: type="+soapType+";Length=") +
		len("\r\n--"+Boundary+"\r\n\tContent-Type: "+octetStream+"\r\n")
	return fixed + len(protocol) + len(strconv.Itoa(n))
}
