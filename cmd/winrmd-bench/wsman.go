package main

// A lean WinRM client for the benchmark: one TCP (or TLS) connection per
// client, hand-written HTTP/1.1 framing, SOAP envelopes built from byte
// templates, NTLM (github.com/bodgit/ntlmssp, the library masterzen/winrm
// uses) with message encryption, or Basic over HTTPS. It exists because
// masterzen/winrm's encrypted transport re-runs the NTLM handshake for every
// message and parses each response into a DOM, so its own cost would
// dominate the rows measured here.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bodgit/ntlmssp"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/kerberos"
	"github.com/winrmd/winrmd/authn/kerberos/krbtest"
)

const (
	nsShell      = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
	resCmd       = nsShell + "/cmd"
	actCreate    = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
	actDelete    = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
	actCommand   = nsShell + "/Command"
	actReceive   = nsShell + "/Receive"
	actSend      = nsShell + "/Send"
	actSignal    = nsShell + "/Signal"
	soapCT       = "application/soap+xml;charset=UTF-8"
	spnegoProto  = "application/HTTP-SPNEGO-session-encrypted"
	encBoundary  = "Encrypted Boundary"
	encCT        = `multipart/encrypted;protocol="` + spnegoProto + `";boundary="` + encBoundary + `"`
	krbEncCT     = `multipart/encrypted;protocol="` + krbProto + `";boundary="` + encBoundary + `"`
	timedOutCode = "2150858793"
)

// authKind is how a wsClient logs on.
type authKind int

const (
	authNTLM     authKind = iota // Negotiate (raw NTLM) over HTTP, sealed bodies
	authBasic                    // Basic over HTTPS
	authKerberos                 // the Kerberos scheme over HTTP, AES wrap-sealed bodies
)

func (a authKind) String() string {
	switch a {
	case authBasic:
		return "basic-https"
	case authKerberos:
		return "krb5-http"
	}
	return "ntlm-http"
}

// krbProto is the encrypted-part protocol of the Kerberos scheme.
const krbProto = "application/HTTP-Kerberos-session-encrypted"

// wsTarget says where and as whom to connect.
type wsTarget struct {
	httpAddr, httpsAddr string
	user, password      string
	envelopeSize        int // the client's MaxEnvelopeSize (largest response it accepts)
	timeout             time.Duration
	// krb is a service ticket for HTTP/localhost from the bench's own MIT
	// KDC; every Kerberos handshake makes a fresh authenticator with it,
	// as a client with a ticket cache does (nil: no Kerberos rows).
	krb *krbtest.Ticket
}

type wsClient struct {
	t     *wsTarget
	kind  authKind
	conn  net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	url   string
	host  string
	basic string
	sess  *ntlmssp.SecuritySession
	krb   authn.Sealer

	req  []byte // request body scratch
	resp []byte // response body scratch
	hdr  []byte // header scratch
}

// dialWS opens a connection and authenticates it (NTLM: the two-leg
// handshake with empty POSTs, as pywinrm and masterzen do; Basic: nothing
// until the first request, which carries the header).
func dialWS(t *wsTarget, kind authKind) (*wsClient, error) {
	c := &wsClient{t: t, kind: kind}
	var err error
	addr := t.httpAddr
	scheme := "http"
	if kind == authBasic {
		addr, scheme = t.httpsAddr, "https"
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	c.conn, err = d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if kind == authBasic {
		tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}) // #nosec loopback, self-signed
		if err := tc.Handshake(); err != nil {
			c.conn.Close()
			return nil, fmt.Errorf("tls: %w", err)
		}
		c.conn = tc
		c.basic = "Basic " + base64.StdEncoding.EncodeToString([]byte(t.user+":"+t.password))
	}
	c.br = bufio.NewReaderSize(c.conn, 256<<10)
	c.bw = bufio.NewWriterSize(c.conn, 64<<10)
	c.host = addr
	c.url = scheme + "://" + addr + "/wsman"
	switch kind {
	case authNTLM:
		if err := c.ntlmHandshake(); err != nil {
			c.conn.Close()
			return nil, err
		}
	case authKerberos:
		if err := c.krbHandshake(); err != nil {
			c.conn.Close()
			return nil, err
		}
	}
	return c, nil
}

// krbHandshake: one empty POST with a mutual AP-REQ under the Kerberos
// scheme; the 200 carries the AP-REP with the acceptor subkey.
func (c *wsClient) krbHandshake() error {
	if c.t.krb == nil {
		return errors.New("kerberos: no ticket (the bench KDC did not start)")
	}
	tok, key, seq, err := c.t.krb.Initiate(krbtest.APReqOptions{Mutual: true})
	if err != nil {
		return err
	}
	st, h, _, err := c.roundTrip("Kerberos "+base64.StdEncoding.EncodeToString(tok), soapCT, nil)
	if err != nil {
		return err
	}
	if st != http.StatusOK {
		return fmt.Errorf("kerberos: AP-REQ answered %d", st)
	}
	for _, v := range h.Values("WWW-Authenticate") {
		if s, ok := strings.CutPrefix(v, "Kerberos "); ok {
			rep, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("kerberos: AP-REP: %w", err)
			}
			c.krb, err = kerberos.FinishInitiator(rep, key, seq)
			return err
		}
	}
	return errors.New("kerberos: no AP-REP on the 200")
}

func (c *wsClient) Close() error {
	if c == nil || c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

func (c *wsClient) ntlmHandshake() error {
	cl, err := ntlmssp.NewClient(ntlmssp.SetUserInfo(c.t.user, c.t.password), ntlmssp.SetDomain(""),
		ntlmssp.SetVersion(ntlmssp.DefaultVersion()))
	if err != nil {
		return err
	}
	neg, err := cl.Authenticate(nil, nil)
	if err != nil {
		return err
	}
	st, h, _, err := c.roundTrip("Negotiate "+base64.StdEncoding.EncodeToString(neg), soapCT, nil)
	if err != nil {
		return err
	}
	if st != http.StatusUnauthorized {
		return fmt.Errorf("ntlm: NEGOTIATE answered %d", st)
	}
	var chal []byte
	for _, v := range h.Values("WWW-Authenticate") {
		if s, ok := strings.CutPrefix(v, "Negotiate "); ok {
			chal, err = base64.StdEncoding.DecodeString(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("ntlm: challenge: %w", err)
			}
		}
	}
	if chal == nil {
		return errors.New("ntlm: no challenge in 401")
	}
	auth, err := cl.Authenticate(chal, nil)
	if err != nil {
		return err
	}
	st, _, _, err = c.roundTrip("Negotiate "+base64.StdEncoding.EncodeToString(auth), soapCT, nil)
	if err != nil {
		return err
	}
	if st != http.StatusOK {
		return fmt.Errorf("ntlm: AUTHENTICATE answered %d", st)
	}
	c.sess = cl.SecuritySession()
	if c.sess == nil {
		return errors.New("ntlm: no security session")
	}
	return nil
}

// roundTrip writes one POST and reads the response into c.resp.
func (c *wsClient) roundTrip(authz, ct string, body []byte) (int, http.Header, []byte, error) {
	h := c.hdr[:0]
	h = append(h, "POST /wsman HTTP/1.1\r\nHost: "...)
	h = append(h, c.host...)
	h = append(h, "\r\nUser-Agent: winrmd-bench\r\nAccept-Encoding: identity\r\nContent-Type: "...)
	h = append(h, ct...)
	h = append(h, "\r\nContent-Length: "...)
	h = strconv.AppendInt(h, int64(len(body)), 10)
	if authz != "" {
		h = append(h, "\r\nAuthorization: "...)
		h = append(h, authz...)
	}
	h = append(h, "\r\n\r\n"...)
	c.hdr = h
	dl := time.Now().Add(c.t.timeout)
	_ = c.conn.SetDeadline(dl)
	if _, err := c.bw.Write(h); err != nil {
		return 0, nil, nil, err
	}
	if _, err := c.bw.Write(body); err != nil {
		return 0, nil, nil, err
	}
	if err := c.bw.Flush(); err != nil {
		return 0, nil, nil, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	n := resp.ContentLength
	if n < 0 {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, nil, nil, err
		}
		c.resp = append(c.resp[:0], b...)
	} else {
		if int64(cap(c.resp)) < n {
			c.resp = make([]byte, n)
		}
		c.resp = c.resp[:n]
		if _, err := io.ReadFull(resp.Body, c.resp); err != nil {
			return 0, nil, nil, err
		}
		resp.Body.Close()
	}
	if resp.Close {
		// The server will close; later requests on c fail loudly.
		_ = resp.Close
	}
	return resp.StatusCode, resp.Header, c.resp, nil
}

// call sends one SOAP envelope (sealed on NTLM) and returns the status and
// the plaintext response envelope.
func (c *wsClient) call(env []byte) (int, []byte, error) {
	switch c.kind {
	case authBasic:
		st, _, b, err := c.roundTrip(c.basic, soapCT, env)
		return st, b, err
	default:
		sealed, err := c.seal(env)
		if err != nil {
			return 0, nil, err
		}
		ct := encCT
		if c.krb != nil {
			ct = krbEncCT
		}
		st, h, b, err := c.roundTrip("", ct, sealed)
		if err != nil {
			return 0, nil, err
		}
		rct := h.Get("Content-Type")
		if !strings.HasPrefix(strings.ToLower(rct), "multipart/") {
			return st, b, fmt.Errorf("unsealed response (%d, %q, %d bytes)", st, rct, len(b))
		}
		plain, err := c.unseal(b)
		return st, plain, err
	}
}

func (c *wsClient) seal(env []byte) ([]byte, error) {
	var ct, sig []byte
	var err error
	proto := spnegoProto
	if c.krb != nil {
		sig, ct, err = c.krb.Seal(env)
		proto = krbProto
	} else {
		ct, sig, err = c.sess.Wrap(env)
	}
	if err != nil {
		return nil, err
	}
	b := c.req[:0]
	b = append(b, "--"+encBoundary+"\r\n\tContent-Type: "+proto+"\r\n\tOriginalContent: type="+soapCT+";Length="...)
	b = strconv.AppendInt(b, int64(len(env)), 10)
	b = append(b, "\r\n--"+encBoundary+"\r\n\tContent-Type: application/octet-stream\r\n"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(sig)))
	b = append(b, sig...)
	b = append(b, ct...)
	b = append(b, "--"+encBoundary+"--\r\n"...)
	c.req = b
	return b, nil
}

var (
	octetLine = []byte("application/octet-stream")
	lengthKey = []byte("Length=")
)

// unseal decodes multipart/encrypted and multipart/x-multi-encrypted bodies.
func (c *wsClient) unseal(b []byte) ([]byte, error) {
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
		if (c.krb == nil && sl != 16) || sl > 1024 || len(b) < sl+n {
			return nil, fmt.Errorf("sealed body: signature length %d, %d bytes for %d", sl, len(b), n)
		}
		var plain []byte
		if c.krb != nil {
			plain, err = c.krb.Unseal(b[:sl], b[sl:sl+n])
		} else {
			plain, err = c.sess.Unwrap(b[sl:sl+n], b[:sl])
		}
		if err != nil {
			return nil, fmt.Errorf("unseal: %w", err)
		}
		if out == nil {
			out = plain
		} else {
			out = append(out, plain...)
		}
		b = b[sl+n:]
	}
	if out == nil {
		return nil, errors.New("sealed body: no parts")
	}
	return out, nil
}

func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// header builds the envelope up to and including <env:Body>.
func (c *wsClient) header(b []byte, action, shellID, options string) []byte {
	b = append(b, `<?xml version="1.0" encoding="UTF-8"?>`+
		`<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd">`+
		`<env:Header><a:To>`...)
	b = append(b, c.url...)
	b = append(b, `</a:To><a:ReplyTo><a:Address mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo><w:MaxEnvelopeSize mustUnderstand="true">`...)
	b = strconv.AppendInt(b, int64(c.t.envelopeSize), 10)
	b = append(b, `</w:MaxEnvelopeSize><w:OperationTimeout>PT60S</w:OperationTimeout><a:MessageID>uuid:`...)
	b = append(b, newUUID()...)
	b = append(b, `</a:MessageID><w:Locale mustUnderstand="false" xml:lang="en-US"/><p:DataLocale mustUnderstand="false" xml:lang="en-US"/><a:Action mustUnderstand="true">`...)
	b = append(b, action...)
	b = append(b, `</a:Action>`...)
	if shellID != "" {
		b = append(b, `<w:SelectorSet><w:Selector Name="ShellId">`...)
		b = append(b, shellID...)
		b = append(b, `</w:Selector></w:SelectorSet>`...)
	}
	b = append(b, `<w:ResourceURI mustUnderstand="true">`+resCmd+`</w:ResourceURI>`...)
	b = append(b, options...)
	b = append(b, `</env:Header><env:Body>`...)
	return b
}

const envEnd = `</env:Body></env:Envelope>`

// soapError is a non-200 SOAP answer.
type soapError struct {
	status int
	body   string
}

func (e *soapError) Error() string {
	b := e.body
	if i := strings.Index(b, "<s:Reason>"); i >= 0 {
		b = b[i:]
	}
	if len(b) > 400 {
		b = b[:400]
	}
	return fmt.Sprintf("HTTP %d: %s", e.status, b)
}

func (c *wsClient) soap(env []byte) ([]byte, error) {
	st, b, err := c.call(env)
	if err != nil {
		return nil, err
	}
	if st != http.StatusOK {
		return b, &soapError{status: st, body: string(b)}
	}
	return b, nil
}

// between returns the text between the first open and the following close.
func between(b []byte, open, close string) string {
	i := bytes.Index(b, []byte(open))
	if i < 0 {
		return ""
	}
	b = b[i+len(open):]
	j := bytes.Index(b, []byte(close))
	if j < 0 {
		return ""
	}
	return string(b[:j])
}

// CreateShell opens a cmd shell and returns its id.
func (c *wsClient) CreateShell() (string, error) {
	b := c.header(make([]byte, 0, 2048), actCreate, "",
		`<w:OptionSet><w:Option Name="WINRS_NOPROFILE">FALSE</w:Option><w:Option Name="WINRS_CODEPAGE">65001</w:Option></w:OptionSet>`)
	b = append(b, `<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>`+envEnd...)
	r, err := c.soap(b)
	if err != nil {
		return "", fmt.Errorf("create: %w", err)
	}
	id := between(r, `Name="ShellId">`, "<")
	if id == "" {
		id = between(r, "ShellId>", "<")
	}
	if id == "" {
		return "", fmt.Errorf("create: no ShellId in %.300s", r)
	}
	return id, nil
}

func (c *wsClient) DeleteShell(shell string) error {
	b := c.header(make([]byte, 0, 2048), actDelete, shell, "")
	b = append(b, envEnd...)
	if _, err := c.soap(b); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	return nil
}

func xmlEscape(s string) string {
	var sb strings.Builder
	for _, r := range s {
		switch r {
		case '<':
			sb.WriteString("&lt;")
		case '>':
			sb.WriteString("&gt;")
		case '&':
			sb.WriteString("&amp;")
		default:
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// Command starts a command line in the shell and returns its id.
func (c *wsClient) Command(shell, cmdline string) (string, error) {
	b := c.header(make([]byte, 0, 2048), actCommand, shell,
		`<w:OptionSet><w:Option Name="WINRS_CONSOLEMODE_STDIN">TRUE</w:Option><w:Option Name="WINRS_SKIP_CMD_SHELL">FALSE</w:Option></w:OptionSet>`)
	b = append(b, `<rsp:CommandLine><rsp:Command>`...)
	b = append(b, xmlEscape(cmdline)...)
	b = append(b, `</rsp:Command></rsp:CommandLine>`+envEnd...)
	r, err := c.soap(b)
	if err != nil {
		return "", fmt.Errorf("command: %w", err)
	}
	id := between(r, "CommandId>", "<")
	if id == "" {
		return "", fmt.Errorf("command: no CommandId in %.300s", r)
	}
	return id, nil
}

// Send writes data to the command's stdin; end closes it.
func (c *wsClient) Send(shell, cmd string, data []byte, end bool) error {
	need := 2048 + base64.StdEncoding.EncodedLen(len(data))
	b := c.header(make([]byte, 0, need), actSend, shell, "")
	b = append(b, `<rsp:Send><rsp:Stream Name="stdin" CommandId="`...)
	b = append(b, cmd...)
	b = append(b, '"')
	if end {
		b = append(b, ` End="true"`...)
	}
	b = append(b, '>')
	b = base64.StdEncoding.AppendEncode(b, data)
	b = append(b, `</rsp:Stream></rsp:Send>`+envEnd...)
	if _, err := c.soap(b); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// receiveResult is what Receive-until-Done collected.
type receiveResult struct {
	stdout, stderr int64
	exitCode       int
	receives       int
	firstByte      time.Duration
}

var (
	streamOpen = []byte("<rsp:Stream ")
	streamEnd  = []byte("</rsp:Stream>")
	doneState  = []byte("CommandState/Done")
)

// ReceiveAll issues Receives until the command is Done, counting (and
// decoding) stdout and stderr; keep, if non-nil, gets stdout's bytes.
func (c *wsClient) ReceiveAll(shell, cmd string, keep *bytes.Buffer) (receiveResult, error) {
	var res receiveResult
	start := time.Now()
	var dec []byte
	req := c.header(make([]byte, 0, 2048), actReceive, shell,
		`<w:OptionSet><w:Option Name="WSMAN_CMDSHELL_OPTION_KEEPALIVE">TRUE</w:Option></w:OptionSet>`)
	req = append(req, `<rsp:Receive><rsp:DesiredStream CommandId="`...)
	req = append(req, cmd...)
	req = append(req, `">stdout stderr</rsp:DesiredStream></rsp:Receive>`+envEnd...)
	for {
		res.receives++
		st, r, err := c.call(req)
		if err != nil {
			return res, fmt.Errorf("receive: %w", err)
		}
		if st != http.StatusOK {
			if bytes.Contains(r, []byte(timedOutCode)) || bytes.Contains(r, []byte("w:TimedOut")) {
				continue
			}
			return res, fmt.Errorf("receive: %w", &soapError{status: st, body: string(r)})
		}
		// Streams.
		p := r
		for {
			i := bytes.Index(p, streamOpen)
			if i < 0 {
				break
			}
			p = p[i+len(streamOpen):]
			gt := bytes.IndexByte(p, '>')
			if gt < 0 {
				return res, errors.New("receive: bad Stream element")
			}
			attrs := p[:gt]
			p = p[gt+1:]
			if len(attrs) > 0 && attrs[len(attrs)-1] == '/' {
				continue // empty, self-closing
			}
			e := bytes.Index(p, streamEnd)
			if e < 0 {
				return res, errors.New("receive: unterminated Stream")
			}
			text := p[:e]
			p = p[e+len(streamEnd):]
			if len(text) == 0 {
				continue
			}
			n := base64.StdEncoding.DecodedLen(len(text))
			if cap(dec) < n {
				dec = make([]byte, n)
			}
			m, err := base64.StdEncoding.Decode(dec[:n], text)
			if err != nil {
				return res, fmt.Errorf("receive: base64: %w", err)
			}
			if res.firstByte == 0 && m > 0 {
				res.firstByte = time.Since(start)
			}
			if bytes.Contains(attrs, []byte(`Name="stderr"`)) {
				res.stderr += int64(m)
			} else {
				res.stdout += int64(m)
				if keep != nil {
					keep.Write(dec[:m])
				}
			}
		}
		if bytes.Contains(r, doneState) {
			ec := between(r, "ExitCode>", "<")
			res.exitCode, _ = strconv.Atoi(ec)
			return res, nil
		}
	}
}

// Run starts cmdline in shell and receives until Done.
func (c *wsClient) Run(shell, cmdline string) (receiveResult, error) {
	id, err := c.Command(shell, cmdline)
	if err != nil {
		return receiveResult{}, err
	}
	return c.ReceiveAll(shell, id, nil)
}
