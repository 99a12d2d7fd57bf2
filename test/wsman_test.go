package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bodgit/ntlmssp"

	"github.com/winrmd/winrmd/test/wsclient"
)

// Raw WS-Management, written by hand so that the attack suite and the
// negative tests control every byte.

const (
	nsS       = wsclient.NsSOAP
	nsA       = wsclient.NsAddressing
	nsW       = wsclient.NsWSMan
	nsRSP     = wsclient.NsShell
	uriCmd    = wsclient.ResourceCmd
	uriShell  = wsclient.ResourceShell
	actCreate = wsclient.ActionCreate
	actDelete = wsclient.ActionDelete
	actGet    = wsclient.ActionGet
	actEnum   = wsclient.ActionEnumerate
	actCmd    = wsclient.ActionCommand
	actSend   = wsclient.ActionSend
	actRecv   = wsclient.ActionReceive
	actSignal = wsclient.ActionSignal
	sigTerm   = wsclient.SignalTerminate
	sigCtrlC  = wsclient.SignalCtrlC

	codeTimedOut         = 2150858793
	codeInvalidSelectors = 2150858843
	codeAccessDenied     = 5
)

const identifyXML = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsmid="http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"><s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>`

func newUUID() string { return wsclient.NewUUID() }

// env builds a request envelope (wsclient.AppendEnvelope). shellID ""
// omits the selector; options are name=value pairs for w:OptionSet.
func env(action, resourceURI, shellID, body string, options ...string) string {
	b := wsclient.AppendEnvelope(nil, wsclient.Header{To: "http://windows-host:5985/wsman", Action: action, ResourceURI: resourceURI,
		ShellID: shellID, MaxEnvelopeSize: 153600, OperationTimeout: "PT5S", Options: options})
	return string(append(append(b, body...), wsclient.EnvelopeEnd...))
}

func createXML() string { return createXMLWith(nil, "") }

// createXMLWith is a cmd shell Create with an optional Environment and
// WorkingDirectory (createXML has neither).
func createXMLWith(envVars map[string]string, dir string) string {
	return env(actCreate, uriCmd, "", string(wsclient.AppendCreateBody(nil, envVars, dir)), wsclient.CreateOptions...)
}

func commandXML(shellID, command string) string {
	return env(actCmd, uriCmd, shellID, string(wsclient.AppendCommandBody(nil, command)),
		"WINRS_CONSOLEMODE_STDIN=FALSE", "WINRS_SKIP_CMD_SHELL=FALSE")
}

func sendXML(shellID, commandID string, data []byte, end bool) string {
	return env(actSend, uriCmd, shellID, string(wsclient.AppendSendBody(nil, commandID, data, end, true)))
}

func receiveXML(shellID, commandID string) string {
	return env(actRecv, uriCmd, shellID, string(wsclient.AppendReceiveBody(nil, commandID)))
}

func signalXML(shellID, commandID, code string) string {
	return env(actSignal, uriCmd, shellID, string(wsclient.AppendSignalBody(nil, commandID, code)))
}

func deleteXML(shellID string) string { return env(actDelete, uriCmd, shellID, "") }

func getShellXML(shellID string) string { return env(actGet, uriShell, shellID, "") }

func enumerateXML() string {
	return env(actEnum, uriShell, "", `<n:Enumerate xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration"><w:OptimizeEnumeration/><w:MaxElements>32000</w:MaxElements></n:Enumerate>`)
}

func xmlEscape(s string) string { return string(wsclient.AppendEscaped(nil, s)) }

// node is a parsed XML element.
type node struct {
	Name     xml.Name
	Attr     map[string]string // by local name
	Text     string
	Children []*node
}

func parseXML(b []byte) (*node, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	var stack []*node
	var root *node
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			n := &node{Name: t.Name, Attr: map[string]string{}}
			for _, a := range t.Attr {
				n.Attr[a.Name.Local] = a.Value
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, n)
			} else {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].Text += string(t)
			}
		}
	}
	if root == nil {
		return nil, errors.New("no XML element")
	}
	return root, nil
}

// all returns every descendant (and n itself) with the local name.
func (n *node) all(local string) []*node {
	var out []*node
	var walk func(*node)
	walk = func(x *node) {
		if x.Name.Local == local {
			out = append(out, x)
		}
		for _, c := range x.Children {
			walk(c)
		}
	}
	walk(n)
	return out
}

func (n *node) first(local string) *node {
	if a := n.all(local); len(a) > 0 {
		return a[0]
	}
	return nil
}

// Fault is a parsed SOAP fault.
type Fault struct {
	Code    string // s:Sender / s:Receiver
	Subcode string // e.g. w:AccessDenied
	WSMan   int64  // WSManFault/@Code
	Reason  string
	Raw     string
}

func (f *Fault) String() string {
	return fmt.Sprintf("fault %s/%s code %d: %s", f.Code, f.Subcode, f.WSMan, strings.TrimSpace(f.Reason))
}

func parseFault(body []byte) *Fault {
	root, err := parseXML(body)
	if err != nil {
		return nil
	}
	fn := root.first("Fault")
	if fn == nil {
		return nil
	}
	f := &Fault{Raw: string(body)}
	if c := fn.first("Code"); c != nil {
		if v := c.first("Value"); v != nil {
			f.Code = strings.TrimSpace(v.Text)
		}
		if sc := c.first("Subcode"); sc != nil {
			if v := sc.first("Value"); v != nil {
				f.Subcode = strings.TrimSpace(v.Text)
			}
		}
	}
	if r := fn.first("Reason"); r != nil {
		if tx := r.first("Text"); tx != nil {
			f.Reason = tx.Text
		}
	}
	if wf := fn.first("WSManFault"); wf != nil {
		f.WSMan, _ = strconv.ParseInt(wf.Attr["Code"], 10, 64)
		if m := wf.first("Message"); m != nil && f.Reason == "" {
			f.Reason = m.Text
		}
	}
	return f
}

// isAccessDenied accepts the forms the daemon may use for "not yours": the
// w:AccessDenied subcode or WSMan code 5.
func (f *Fault) isAccessDenied() bool {
	return f != nil && (strings.HasSuffix(f.Subcode, "AccessDenied") || f.WSMan == codeAccessDenied)
}

// reply is one HTTP answer.
type reply struct {
	Status int
	Header http.Header
	Body   []byte // decrypted when the request was sealed
	Closed bool   // the server closed the connection without an answer
	Hung   bool   // no answer and no close before the client gave up
}

func (r *reply) fault() *Fault { return parseFault(r.Body) }

func (r *reply) String() string {
	if r.Closed {
		return "connection closed"
	}
	if r.Hung {
		return "no answer (request held open)"
	}
	s := fmt.Sprintf("HTTP %d", r.Status)
	if f := r.fault(); f != nil {
		s += " " + f.String()
	} else if len(r.Body) > 0 {
		b := r.Body
		if len(b) > 300 {
			b = b[:300]
		}
		s += " " + strconv.Quote(string(b))
	}
	return s
}

// rawConn is one TCP (or TLS) connection with HTTP/1.1 written by hand.
type rawConn struct {
	addr string
	tls  bool
	c    net.Conn
	br   *bufio.Reader
	cert *x509.Certificate
}

func dialRaw(addr string, useTLS bool) (*rawConn, error) { return dialRawFrom("", addr, useTLS) }

// srcAddr hands out loopback source addresses (127.0.0.10-249): the daemon
// rate-limits failed logons per source address, so every hostile request that
// fails authentication comes from its own address and cannot lock the
// well-behaved requests of the same test out.
var (
	srcMu   sync.Mutex
	srcNext = 10
)

func srcAddr() string {
	srcMu.Lock()
	defer srcMu.Unlock()
	a := fmt.Sprintf("127.0.0.%d", srcNext)
	srcNext++
	if srcNext > 249 {
		srcNext = 10
	}
	return a
}

// dialRawFrom connects from the loopback address src ("" = the default).
func dialRawFrom(src, addr string, useTLS bool) (*rawConn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	var c net.Conn
	var err error
	rc := &rawConn{addr: addr, tls: useTLS}
	if useTLS {
		tc, terr := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if terr != nil {
			return nil, terr
		}
		st := tc.ConnectionState()
		if len(st.PeerCertificates) > 0 {
			rc.cert = st.PeerCertificates[0]
		}
		c = tc
	} else {
		c, err = d.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
	}
	rc.c = c
	rc.br = bufio.NewReader(c)
	return rc, nil
}

func (rc *rawConn) Close() { rc.c.Close() }

// writeRaw sends bytes as they are.
func (rc *rawConn) writeRaw(b []byte) error {
	rc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := rc.c.Write(b)
	return err
}

// readReply reads one response; a closed connection is a reply too.
func (rc *rawConn) readReply(method string, timeout time.Duration) (*reply, error) {
	rc.c.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	// Skip interim answers (100 Continue): the final one is what counts.
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 {
		resp, err = http.ReadResponse(rc.br, &http.Request{Method: method})
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err) {
			return &reply{Closed: true}, nil
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil && !isConnReset(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return &reply{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

func isConnReset(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe") ||
		strings.Contains(s, "use of closed network connection")
}

// request writes a POST /wsman (or other method/path) and reads the answer.
func (rc *rawConn) request(method, path string, hdr map[string]string, body []byte, timeout time.Duration) (*reply, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, rc.addr)
	hasCT := false
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		if strings.EqualFold(k, "Content-Type") {
			hasCT = true
		}
	}
	if !hasCT && method == "POST" {
		b.WriteString("Content-Type: application/soap+xml;charset=UTF-8\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	if err := rc.writeRaw(b.Bytes()); err != nil {
		if isConnReset(err) {
			return &reply{Closed: true}, nil
		}
		return nil, err
	}
	return rc.readReply(method, timeout)
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// post sends one SOAP request with Basic credentials on a new connection.
func postBasic(addr string, useTLS bool, user, pass, soap string) (*reply, error) {
	return postBasicFrom("", addr, useTLS, user, pass, soap)
}

func postBasicFrom(src, addr string, useTLS bool, user, pass, soap string) (*reply, error) {
	rc, err := dialRawFrom(src, addr, useTLS)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return rc.request("POST", "/wsman", map[string]string{"Authorization": basicAuth(user, pass)}, []byte(soap), 30*time.Second)
}

// identify answers whether the daemon still serves: an anonymous Identify on
// a fresh connection gets a 200 IdentifyResponse.
func identify(addr string, useTLS bool) error {
	rc, err := dialRaw(addr, useTLS)
	if err != nil {
		return err
	}
	defer rc.Close()
	r, err := rc.request("POST", "/wsman", map[string]string{"WSMANIDENTIFY": "unauthenticated"}, []byte(identifyXML), 10*time.Second)
	if err != nil {
		return err
	}
	if r.Status != 200 || !bytes.Contains(r.Body, []byte("IdentifyResponse")) {
		return fmt.Errorf("Identify: %s", r)
	}
	return nil
}

// soapClient runs WinRS operations through some transport.
type soapClient interface {
	Post(soap string) (*reply, error)
}

// basicClient: Basic over a fresh connection per request.
type basicClient struct {
	addr       string
	tls        bool
	user, pass string
}

func (c basicClient) Post(soap string) (*reply, error) {
	return postBasic(c.addr, c.tls, c.user, c.pass, soap)
}

// winrsShell is a minimal WinRS driver over a soapClient.
type winrsShell struct {
	c  soapClient
	ID string
}

func okBody(r *reply, err error) (*node, error) {
	if err != nil {
		return nil, err
	}
	if r.Status != 200 {
		return nil, fmt.Errorf("%s", r)
	}
	return parseXML(r.Body)
}

func createShell(c soapClient) (*winrsShell, error) { return createShellFrom(c, createXML()) }

// createShellFrom posts a Create and returns the shell it made.
func createShellFrom(c soapClient, create string) (*winrsShell, error) {
	root, err := okBody(c.Post(create))
	if err != nil {
		return nil, err
	}
	for _, sel := range root.all("Selector") {
		if sel.Attr["Name"] == "ShellId" {
			return &winrsShell{c: c, ID: strings.TrimSpace(sel.Text)}, nil
		}
	}
	if n := root.first("ShellId"); n != nil {
		return &winrsShell{c: c, ID: strings.TrimSpace(n.Text)}, nil
	}
	return nil, errors.New("CreateResponse without ShellId")
}

func (s *winrsShell) command(cmd string) (string, error) {
	root, err := okBody(s.c.Post(commandXML(s.ID, cmd)))
	if err != nil {
		return "", err
	}
	n := root.first("CommandId")
	if n == nil {
		return "", errors.New("CommandResponse without CommandId")
	}
	return strings.TrimSpace(n.Text), nil
}

// result collects one command's output.
type result struct {
	Stdout, Stderr []byte
	ExitCode       int
	Done           bool
}

// receiveAll receives until the command is Done (bounded by timeout).
func (s *winrsShell) receiveAll(cmdID string, timeout time.Duration) (*result, error) {
	return s.receiveAllObserved(cmdID, timeout, nil)
}

// receiveAllObserved is receiveAll that reports every answered Receive's
// round trip to observe (when not nil).
func (s *winrsShell) receiveAllObserved(cmdID string, timeout time.Duration, observe func(time.Duration)) (*result, error) {
	res := &result{}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		t0 := time.Now()
		r, err := s.c.Post(receiveXML(s.ID, cmdID))
		if err != nil {
			return res, err
		}
		if r.Status != 200 {
			if f := r.fault(); f != nil && f.WSMan == codeTimedOut {
				continue
			}
			return res, fmt.Errorf("Receive: %s", r)
		}
		if observe != nil {
			observe(time.Since(t0))
		}
		root, err := parseXML(r.Body)
		if err != nil {
			return res, err
		}
		for _, st := range root.all("Stream") {
			data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(st.Text))
			if err != nil {
				return res, fmt.Errorf("stream base64: %v", err)
			}
			switch st.Attr["Name"] {
			case "stdout":
				res.Stdout = append(res.Stdout, data...)
			case "stderr":
				res.Stderr = append(res.Stderr, data...)
			}
		}
		if cs := root.first("CommandState"); cs != nil && strings.HasSuffix(cs.Attr["State"], "/Done") {
			res.Done = true
			if ec := cs.first("ExitCode"); ec != nil {
				res.ExitCode, _ = strconv.Atoi(strings.TrimSpace(ec.Text))
			}
			return res, nil
		}
	}
	return res, errors.New("command not done before the deadline")
}

func (s *winrsShell) run(cmd string) (*result, error) {
	id, err := s.command(cmd)
	if err != nil {
		return nil, err
	}
	res, err := s.receiveAll(id, 60*time.Second)
	s.c.Post(signalXML(s.ID, id, sigTerm))
	return res, err
}

func (s *winrsShell) delete() error {
	_, err := okBody(s.c.Post(deleteXML(s.ID)))
	return err
}

// ---------------------------------------------------------------- NTLM

// ntlmConn is one connection authenticated with raw NTLM under the Negotiate
// scheme (as masterzen, requests-ntlm and pyspnego without Kerberos send it),
// with message sealing (MS-WSMV's multipart/encrypted bodies, sealed as
// MS-NLMP's session security describes).
type ntlmConn struct {
	rc      *rawConn
	client  *ntlmssp.Client
	session *ntlmssp.SecuritySession
	// lastSealed is the last sealed request body, for the replay test.
	lastSealed []byte
}

type ntlmOpts struct {
	level    int    // LM compatibility level: 3 = NTLMv2 (default), 1 = NTLMv1
	bindings []byte // channel binding application data override (nil: computed on TLS)
	noCBT    bool
	src      string    // source address ("" = default)
	record   *[][]byte // when set, every token of the handshake, both ways
}

// dialNTLM connects and runs the NTLM handshake. The returned reply is the
// server's answer to the AUTHENTICATE leg (200 on success).
func dialNTLM(addr string, useTLS bool, user, pass string, o ntlmOpts) (*ntlmConn, *reply, error) {
	rc, err := dialRawFrom(o.src, addr, useTLS)
	if err != nil {
		return nil, nil, err
	}
	if o.level == 0 {
		o.level = 3
	}
	cl, err := ntlmssp.NewClient(ntlmssp.SetUserInfo(user, pass), ntlmssp.SetDomain(""),
		lmLevel(o.level), ntlmssp.SetVersion(ntlmssp.DefaultVersion()))
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	nc := &ntlmConn{rc: rc, client: cl}
	neg, err := cl.Authenticate(nil, nil)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	if o.record != nil {
		*o.record = append(*o.record, neg)
	}
	r, err := rc.request("POST", "/wsman", map[string]string{"Authorization": "Negotiate " + base64.StdEncoding.EncodeToString(neg)}, nil, 10*time.Second)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	chal, ok := negotiateToken(r)
	if r.Status != 401 || !ok {
		rc.Close()
		return nil, r, fmt.Errorf("NEGOTIATE leg: want 401 with a challenge, got %s", r)
	}
	var cb *ntlmssp.ChannelBindings
	switch {
	case o.bindings != nil:
		cb = &ntlmssp.ChannelBindings{ApplicationData: o.bindings}
	case useTLS && !o.noCBT && rc.cert != nil:
		cb = &ntlmssp.ChannelBindings{ApplicationData: tlsServerEndPoint(rc.cert)}
	}
	auth, err := cl.Authenticate(chal, cb)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	if o.record != nil {
		*o.record = append(*o.record, chal, auth)
	}
	r, err = rc.request("POST", "/wsman", map[string]string{"Authorization": "Negotiate " + base64.StdEncoding.EncodeToString(auth)}, nil, 10*time.Second)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	nc.session = cl.SecuritySession()
	return nc, r, nil
}

// lmLevel picks the client's LM compatibility level: 1 makes NTLMv1
// responses, 3 NTLMv2.
func lmLevel(n int) func(*ntlmssp.Client) error {
	switch n {
	case 0, 1:
		return ntlmssp.SetCompatibilityLevel(1)
	case 2:
		return ntlmssp.SetCompatibilityLevel(2)
	default:
		return ntlmssp.SetCompatibilityLevel(3)
	}
}

func negotiateToken(r *reply) ([]byte, bool) {
	if r == nil || r.Header == nil {
		return nil, false
	}
	return wsclient.Token(r.Header.Values("WWW-Authenticate"), "Negotiate", "NTLM")
}

// tlsServerEndPoint is RFC 5929's channel binding application data.
func tlsServerEndPoint(cert *x509.Certificate) []byte { return wsclient.TLSServerEndPoint(cert) }

const mpProtocol = wsclient.ProtoSPNEGO

var mpCT = wsclient.EncryptedContentType(mpProtocol)

// sealBody wraps plaintext SOAP in the multipart/encrypted body.
func (nc *ntlmConn) sealBody(plain []byte) ([]byte, error) {
	return wsclient.AppendSealed(nil, wsclient.NTLM(nc.session), mpProtocol, plain)
}

// unsealBody decodes a multipart/encrypted response.
func (nc *ntlmConn) unsealBody(body []byte) ([]byte, error) {
	return wsclient.Unseal(wsclient.NTLM(nc.session), body)
}

// postSealed sends an encrypted SOAP request on the authenticated connection.
func (nc *ntlmConn) postSealed(soap string) (*reply, error) {
	body, err := nc.sealBody([]byte(soap))
	if err != nil {
		return nil, err
	}
	nc.lastSealed = body
	return nc.postRawBody(body, mpCT)
}

// postRawBody posts body as it is; an encrypted answer is decrypted.
func (nc *ntlmConn) postRawBody(body []byte, contentType string) (*reply, error) {
	r, err := nc.rc.request("POST", "/wsman", map[string]string{"Content-Type": contentType}, body, 60*time.Second)
	if err != nil || r.Closed {
		return r, err
	}
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(strings.ToLower(ct), "multipart/encrypted") {
		plain, uerr := nc.unsealBody(r.Body)
		if uerr != nil {
			return r, fmt.Errorf("unseal response: %v", uerr)
		}
		r.Body = plain
	}
	return r, nil
}

func (nc *ntlmConn) Post(soap string) (*reply, error) { return nc.postSealed(soap) }

func (nc *ntlmConn) Close() { nc.rc.Close() }

// basicKeepAlive is HTTPS (or HTTP) Basic over one keep-alive connection, as real
// clients send it: the password is verified once per connection, not per
// request. A reply that closes the connection makes the next request dial a
// new one; a request is never retried.
type basicKeepAlive struct {
	addr       string
	tls        bool
	user, pass string
	src        string
	mu         sync.Mutex
	rc         *rawConn
}

// connAlive tells whether a kept-alive connection is still open: the server
// closes idle keep-alive connections (service.idle_connection_timeout_ms),
// and a client must then dial again rather than write into a closed one, as
// HTTP client libraries do. A peer that closed has sent its FIN: a read
// returns at once.
func connAlive(rc *rawConn) bool {
	rc.c.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := rc.br.Peek(1)
	rc.c.SetReadDeadline(time.Time{})
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}

func (b *basicKeepAlive) Post(soap string) (*reply, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rc != nil && !connAlive(b.rc) {
		b.rc.Close()
		b.rc = nil
	}
	if b.rc == nil {
		rc, err := dialRawFrom(b.src, b.addr, b.tls)
		if err != nil {
			return nil, err
		}
		b.rc = rc
	}
	r, err := b.rc.request("POST", "/wsman", map[string]string{"Authorization": basicAuth(b.user, b.pass)}, []byte(soap), 90*time.Second)
	if err != nil || r.Closed || strings.EqualFold(r.Header.Get("Connection"), "close") {
		b.rc.Close()
		b.rc = nil
	}
	if err == nil && r.Closed {
		return r, errors.New("connection closed without an answer")
	}
	return r, err
}

func (b *basicKeepAlive) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rc != nil {
		b.rc.Close()
		b.rc = nil
	}
}

// dialNTLMSealed dials an NTLM-authenticated, sealed HTTP connection.
func dialNTLMSealed(addr, user, pass string) (*ntlmConn, error) {
	nc, r, err := dialNTLM(addr, false, user, pass, ntlmOpts{})
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, err
	}
	if r.Status != 200 {
		nc.Close()
		return nil, fmt.Errorf("NTLM handshake: %s", r)
	}
	return nc, nil
}

// ntlmKeepAlive is an NTLM-sealed HTTP client that authenticates a new
// connection when the server has closed the idle one (shells belong to the
// identity, not the connection).
type ntlmKeepAlive struct {
	addr, user, pass string
	mu               sync.Mutex
	nc               *ntlmConn
}

func (k *ntlmKeepAlive) Post(soap string) (*reply, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.nc != nil && !connAlive(k.nc.rc) {
		k.nc.Close()
		k.nc = nil
	}
	if k.nc == nil {
		nc, err := dialNTLMSealed(k.addr, k.user, k.pass)
		if err != nil {
			return nil, err
		}
		k.nc = nc
	}
	r, err := k.nc.Post(soap)
	if err != nil || r.Closed {
		k.nc.Close()
		k.nc = nil
		if err == nil {
			err = errors.New("connection closed without an answer")
		}
	}
	return r, err
}

func (k *ntlmKeepAlive) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.nc != nil {
		k.nc.Close()
		k.nc = nil
	}
}

// latencies collects Receive round-trip times.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// take returns and resets the samples.
func (l *latencies) take() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.d
	l.d = nil
	return d
}

func percentilesOf(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	p := func(q float64) time.Duration { return s[int(q*float64(len(s)-1))] }
	r := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s", len(s), r(p(0.5)), r(p(0.9)), r(p(0.99)), r(s[len(s)-1]))
}

// createShellWith is createShell with an Environment and a
// WorkingDirectory (createXMLWith).
func createShellWith(c soapClient, envVars map[string]string, dir string) (*winrsShell, error) {
	return createShellFrom(c, createXMLWith(envVars, dir))
}

// sendStdin sends stdin in chunks (default 32 KiB), the last with End=true.
func (s *winrsShell) sendStdin(cmdID string, data []byte, chunk int) error {
	if chunk <= 0 {
		chunk = 32 << 10
	}
	for off := 0; ; off += chunk {
		end := min(off+chunk, len(data))
		last := end == len(data)
		if _, err := okBody(s.c.Post(sendXML(s.ID, cmdID, data[off:end], last))); err != nil {
			return fmt.Errorf("Send: %w", err)
		}
		if last {
			return nil
		}
	}
}

// runWith runs one command with optional stdin and returns its output,
// timing every Receive into lat (when not nil).
func (s *winrsShell) runWith(cmd string, stdin []byte, lat *latencies) (*result, error) {
	id, err := s.command(cmd)
	if err != nil {
		return nil, fmt.Errorf("Command: %w", err)
	}
	if stdin != nil {
		if err := s.sendStdin(id, stdin, 0); err != nil {
			return nil, err
		}
	}
	return s.receiveAllObserved(id, 3*time.Minute, lat.add)
}
