package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bodgit/ntlmssp"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation/isolationtest"
)

// The attack suite of issue 4 §1: table-driven, against the real daemon over
// raw TCP/TLS. Every row states its expected outcome; after every row the
// suite checks that nothing ran (no shell_create or command_start in the
// audit log, no new `winrmd worker` process) and that the daemon still serves
// (an Identify answers on both listeners).

type outcome string

const (
	o400    outcome = "400"
	o401    outcome = "401"
	o404    outcome = "404"
	o405    outcome = "405"
	o408    outcome = "408"
	o411    outcome = "411"
	o413    outcome = "413"
	o415    outcome = "415"
	o417    outcome = "417"
	o431    outcome = "431"
	o501    outcome = "501"
	o505    outcome = "505"
	oFault  outcome = "fault"         // HTTP 500 with a SOAP fault
	oDenied outcome = "access-denied" // fault w:AccessDenied / code 5
	oQuota  outcome = "quota"         // fault w:QuotaLimit / 215085917x
	oClosed outcome = "closed"        // connection closed without an answer
	oHung   outcome = "no-answer"     // neither an answer nor a close within 15 s
)

func classify(r *reply) outcome {
	switch {
	case r != nil && r.Hung:
		return oHung
	case r == nil || r.Closed:
		return oClosed
	case r.Status == 500:
		f := r.fault()
		switch {
		case f == nil:
			return "500-no-fault"
		case f.isAccessDenied():
			return oDenied
		case strings.HasSuffix(f.Subcode, "QuotaLimit") || (f.WSMan >= 2150859173 && f.WSMan <= 2150859179) || f.WSMan == 2150858815:
			return oQuota
		}
		return oFault
	}
	return outcome(fmt.Sprint(r.Status))
}

// attackCtx is what rows act on.
type attackCtx struct {
	t *testing.T
	d *Daemon
	// victim: an administrator's shell with a long-running command, for the
	// cross-user rows.
	victimShell, victimCmd string
	// src is the row's own loopback source address (see srcAddr).
	src string
}

type attackRow struct {
	name   string
	tls    bool
	expect []outcome
	run    func(a *attackCtx) (*reply, error)
	// check runs after the expectation; for extra conditions (no leaked
	// file contents, timing, ...).
	check func(a *attackCtx, r *reply, elapsed time.Duration) error
}

// raw sends bytes as they are on a fresh connection and reads one answer.
func raw(tlsOn bool, b []byte) func(a *attackCtx) (*reply, error) {
	return func(a *attackCtx) (*reply, error) {
		addr := a.d.HTTP
		if tlsOn {
			addr = a.d.HTTPS
		}
		rc, err := dialRawFrom(a.src, addr, tlsOn)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		if err := rc.writeRaw(b); err != nil {
			if isConnReset(err) {
				return &reply{Closed: true}, nil
			}
			return nil, err
		}
		method := "POST"
		if i := bytes.IndexByte(b, ' '); i > 0 {
			method = string(b[:i])
		}
		return hungIsOutcome(rc.readReply(method, 15*time.Second))
	}
}

// hungIsOutcome turns a read timeout into the "no-answer" outcome, so that a
// daemon that holds an unauthenticated request open shows up as a row result.
func hungIsOutcome(r *reply, err error) (*reply, error) {
	if err != nil && strings.Contains(err.Error(), "timeout") {
		return &reply{Hung: true}, nil
	}
	return r, err
}

// slowBody sends headers at once and then the declared body one byte every
// 500 ms, unauthenticated: the daemon can refuse from the headers alone and
// must not wait for the body.
func slowBody(tlsOn bool) func(a *attackCtx) (*reply, error) {
	return func(a *attackCtx) (*reply, error) {
		addr := a.d.HTTP
		if tlsOn {
			addr = a.d.HTTPS
		}
		rc, err := dialRawFrom(a.src, addr, tlsOn)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		if err := rc.writeRaw(req("POST", "/wsman", []string{soapCT, "Content-Length: 40"}, nil)); err != nil {
			return &reply{Closed: true}, nil
		}
		got := make(chan struct{})
		go func() {
			for i := 0; i < 40; i++ {
				select {
				case <-got:
					return
				case <-time.After(500 * time.Millisecond):
				}
				if rc.writeRaw([]byte("x")) != nil {
					return
				}
			}
		}()
		r, err := hungIsOutcome(rc.readReply("POST", 25*time.Second))
		close(got)
		return r, err
	}
}

// req builds one HTTP/1.1 request with exact headers (Content-Length added
// unless a header sets it or Transfer-Encoding).
func req(method, path string, headers []string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, path)
	framed := false
	for _, h := range headers {
		b.WriteString(h + "\r\n")
		l := strings.ToLower(h)
		if strings.HasPrefix(l, "content-length:") || strings.HasPrefix(l, "transfer-encoding:") {
			framed = true
		}
	}
	if !framed {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

const soapCT = "Content-Type: application/soap+xml;charset=UTF-8"

func adminAuth() string { return "Authorization: " + basicAuth(w.admin.Name, w.admin.Password) }

func b64s(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// ntlmExchange runs a handshake whose AUTHENTICATE token is produced by
// mutate(real token); the reply to that leg is returned (a 200 is followed by
// a sealed Create, whose reply is returned instead).
func ntlmExchange(user, pass string, level int, mutate func([]byte) []byte) func(a *attackCtx) (*reply, error) {
	return func(a *attackCtx) (*reply, error) {
		rc, err := dialRawFrom(a.src, a.d.HTTP, false)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		cl, _ := ntlmssp.NewClient(ntlmssp.SetUserInfo(user, pass), lmLevel(level), ntlmssp.SetVersion(ntlmssp.DefaultVersion()))
		neg, _ := cl.Authenticate(nil, nil)
		r, err := rc.request("POST", "/wsman", map[string]string{"Authorization": "Negotiate " + base64.StdEncoding.EncodeToString(neg)}, nil, 10*time.Second)
		if err != nil || r.Closed {
			return r, err
		}
		chal, ok := negotiateToken(r)
		if !ok {
			return r, nil
		}
		auth, err := cl.Authenticate(chal, nil)
		if err != nil {
			return nil, err
		}
		if mutate != nil {
			auth = mutate(auth)
		}
		r, err = rc.request("POST", "/wsman", map[string]string{"Authorization": "Negotiate " + base64.StdEncoding.EncodeToString(auth)}, nil, 10*time.Second)
		if err != nil || r.Closed || r.Status != 200 {
			return r, err
		}
		nc := &ntlmConn{rc: rc, client: cl, session: cl.SecuritySession()}
		if nc.session == nil {
			return rc.request("POST", "/wsman", nil, []byte(createXML()), 10*time.Second)
		}
		return nc.postSealed(createXML())
	}
}

// asUser posts soap with Basic credentials over HTTPS.
func asUser(u **testUser, soap func(a *attackCtx) string) func(a *attackCtx) (*reply, error) {
	return func(a *attackCtx) (*reply, error) {
		return postBasicFrom(a.src, a.d.HTTPS, true, (*u).Name, (*u).Password, soap(a))
	}
}

func noLeak(a *attackCtx, r *reply, _ time.Duration) error {
	if r != nil && (bytes.Contains(r.Body, []byte("root:x:0")) || bytes.Contains(r.Body, []byte("root:*:")) || bytes.Contains(r.Body, []byte("root:$"))) {
		return fmt.Errorf("response leaks /etc/passwd or /etc/shadow")
	}
	return nil
}

func fast(limit time.Duration) func(a *attackCtx, r *reply, el time.Duration) error {
	return func(a *attackCtx, r *reply, el time.Duration) error {
		if el > limit {
			return fmt.Errorf("took %v (limit %v)", el, limit)
		}
		return noLeak(a, r, el)
	}
}

// victimAlive: the victim's command still runs (a refused Signal or Delete
// did not touch it).
func victimAlive(a *attackCtx, r *reply, _ time.Duration) error {
	if commandRuns(w.admin.UID, "sleep 3000") {
		return nil
	}
	return fmt.Errorf("the victim's command is gone")
}

func attackRows() []attackRow {
	create := []byte(createXML())
	var rows []attackRow
	add := func(r attackRow) { rows = append(rows, r) }
	any4 := []outcome{o400, o401, o431, oClosed}

	// ---- Authorization headers (unauthenticated: nothing may be parsed)
	for _, tl := range []bool{false, true} {
		sfx := map[bool]string{false: "/http", true: "/https"}[tl]
		add(attackRow{name: "auth_missing" + sfx, tls: tl, expect: []outcome{o401}, run: raw(tl, req("POST", "/wsman", []string{soapCT}, create))})
		add(attackRow{name: "auth_empty" + sfx, tls: tl, expect: []outcome{o401, o400}, run: raw(tl, req("POST", "/wsman", []string{soapCT, "Authorization:"}, create))})
	}
	add(attackRow{name: "auth_unknown_scheme_digest", tls: true, expect: []outcome{o401, o400}, run: raw(true, req("POST", "/wsman", []string{soapCT, `Authorization: Digest username="root", realm="WSMAN", nonce="0", uri="/wsman", response="00"`}, create))})
	add(attackRow{name: "auth_unknown_scheme_bearer", tls: true, expect: []outcome{o401, o400}, run: raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Bearer eyJhbGciOiJub25lIn0.e30."}, create))})
	add(attackRow{name: "auth_scheme_only_basic", tls: true, expect: []outcome{o401, o400}, run: raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Basic"}, create))})
	add(attackRow{name: "auth_malformed_base64", tls: true, expect: []outcome{o401, o400}, run: raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Basic !!!not*base64==="}, create))})
	add(attackRow{name: "auth_oversized_64KiB", tls: true, expect: any4, run: raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Basic " + strings.Repeat("QUFB", 16<<10)}, create))})
	add(attackRow{name: "auth_basic_no_colon", tls: true, expect: []outcome{o401, o400}, run: func(a *attackCtx) (*reply, error) {
		return raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Basic " + b64s(w.guess.Name+w.guess.Password)}, create))(a)
	}})
	add(attackRow{name: "auth_basic_empty_user", tls: true, expect: []outcome{o401, o400}, run: func(a *attackCtx) (*reply, error) {
		return raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Basic " + b64s(":"+w.guess.Password)}, create))(a)
	}})
	add(attackRow{name: "auth_basic_empty_password", tls: true, expect: []outcome{o401, o400}, run: func(a *attackCtx) (*reply, error) {
		return raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Basic " + b64s(w.guess.Name+":")}, create))(a)
	}})
	add(attackRow{name: "auth_basic_root_empty", tls: true, expect: []outcome{o401, o400}, run: raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Basic " + b64s("root:")}, create))})
	add(attackRow{name: "auth_basic_nul_in_user", tls: true, expect: []outcome{o401, o400}, run: func(a *attackCtx) (*reply, error) {
		return raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Basic " + b64s(w.guess.Name+"\x00x:"+w.guess.Password)}, create))(a)
	}})
	add(attackRow{name: "auth_basic_password_prefix", tls: true, expect: []outcome{o401, o400}, run: func(a *attackCtx) (*reply, error) {
		return raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Basic " + b64s(w.guess.Name+":"+w.guess.Password[:len(w.guess.Password)-1])}, create))(a)
	}})
	add(attackRow{name: "auth_two_authorization_headers", tls: true, expect: []outcome{o401, o400}, run: func(a *attackCtx) (*reply, error) {
		return raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Basic " + b64s("nobody:x"), adminAuth()}, create))(a)
	}})
	add(attackRow{name: "auth_negotiate_empty_token", tls: false, expect: []outcome{o401, o400}, run: raw(false, req("POST", "/wsman", []string{soapCT, "Authorization: Negotiate "}, create))})
	add(attackRow{name: "auth_negotiate_garbage", tls: false, expect: []outcome{o401, o400}, run: raw(false, req("POST", "/wsman", []string{soapCT, "Authorization: Negotiate " + b64s("\x60\x82\xff\xffgarbage")}, create))})
	add(attackRow{name: "auth_ntlm_truncated_negotiate", tls: false, expect: []outcome{o401, o400}, run: raw(false, req("POST", "/wsman", []string{soapCT, "Authorization: Negotiate " + b64s("NTLMSSP\x00\x01\x00")}, create))})
	add(attackRow{name: "auth_ntlm_authenticate_without_challenge", tls: false, expect: []outcome{o401, o400}, run: raw(false, req("POST", "/wsman", []string{soapCT, "Authorization: Negotiate " + b64s("NTLMSSP\x00\x03\x00\x00\x00"+strings.Repeat("\x00", 80))}, create))})
	add(attackRow{name: "auth_ntlm_scheme_token_huge_fields", tls: false, expect: []outcome{o401, o400}, run: raw(false, req("POST", "/wsman", []string{soapCT, "Authorization: NTLM " + b64s("NTLMSSP\x00\x03\x00\x00\x00"+strings.Repeat("\xff", 80))}, create))})
	add(attackRow{name: "auth_ntlm_anonymous", tls: false, expect: []outcome{o401, o400, oClosed}, run: ntlmExchange("", "", 3, nil)})
	add(attackRow{name: "auth_ntlm_v1", tls: false, expect: []outcome{o401, o400, oClosed}, run: func(a *attackCtx) (*reply, error) {
		return ntlmExchange(w.guess.Name, w.guess.Password, 1, nil)(a)
	}})
	add(attackRow{name: "auth_ntlm_truncated_authenticate", tls: false, expect: []outcome{o401, o400, oClosed}, run: func(a *attackCtx) (*reply, error) {
		return ntlmExchange(w.guess.Name, w.guess.Password, 3, func(b []byte) []byte { return b[:40] })(a)
	}})
	add(attackRow{name: "auth_ntlm_empty_ntproof", tls: false, expect: []outcome{o401, o400, oClosed}, run: func(a *attackCtx) (*reply, error) {
		// NtChallengeResponse length set to 0: an "empty proof".
		return ntlmExchange(w.guess.Name, w.guess.Password, 3, func(b []byte) []byte {
			b[20], b[21], b[22], b[23] = 0, 0, 0, 0
			return b
		})(a)
	}})
	add(attackRow{name: "auth_ntlm_zeroed_proof", tls: false, expect: []outcome{o401, o400, oClosed}, run: func(a *attackCtx) (*reply, error) {
		return ntlmExchange(w.guess.Name, w.guess.Password, 3, func(b []byte) []byte {
			off := int(b[24]) | int(b[25])<<8 | int(b[26])<<16 | int(b[27])<<24
			for i := off; i < off+16 && i < len(b); i++ {
				b[i] = 0
			}
			return b
		})(a)
	}})
	add(attackRow{name: "auth_ntlm_field_offset_out_of_range", tls: false, expect: []outcome{o401, o400, oClosed}, run: func(a *attackCtx) (*reply, error) {
		return ntlmExchange(w.guess.Name, w.guess.Password, 3, func(b []byte) []byte {
			b[24], b[25], b[26], b[27] = 0xf0, 0xff, 0xff, 0x7f
			return b
		})(a)
	}})
	add(attackRow{name: "auth_kerberos_disabled_garbage", tls: true, expect: []outcome{o401, o400}, run: raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: Kerberos " + b64s("\x60\x10garbage-ticket")}, create))})
	add(attackRow{name: "auth_certificate_profile_no_cert", tls: true, expect: []outcome{o401, o400}, run: raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"}, create))})
	add(attackRow{name: "auth_credssp_disabled", tls: true, expect: []outcome{o401, o400}, run: raw(true, req("POST", "/wsman", []string{soapCT, "Authorization: CredSSP " + b64s("\x16\x03\x01\x00\x05hello")}, create))})
	add(attackRow{name: "auth_wsmanidentify_header_on_create", tls: true, expect: []outcome{o401, o400, oFault}, run: raw(true, req("POST", "/wsman", []string{soapCT, "WSMANIDENTIFY: unauthenticated"}, create))})

	// ---- paths and methods
	for _, p := range []string{"/", "/wsman/../x", "/wsman/..%2fx", "/%2e%2e/wsman", "/%2e%2e/%2e%2e/etc/passwd", "/wsman%00", "/wsman-anon/identify", "/wsman/subscriptions", "//wsman", "/x/../wsman/../etc/shadow"} {
		add(attackRow{name: "path_" + p, tls: true, expect: []outcome{o404, o400, o401}, run: raw(true, req("POST", p, []string{soapCT, adminAuth()}, create)), check: noLeak})
	}
	add(attackRow{name: "path_/WSMAN", tls: true, expect: []outcome{o404, o401, o400}, run: raw(true, req("POST", "/WSMAN", []string{soapCT}, create))})
	add(attackRow{name: "path_/wsman/", tls: true, expect: []outcome{o404, o401, o400}, run: raw(true, req("POST", "/wsman/", []string{soapCT}, create))})
	add(attackRow{name: "path_absolute_uri_other_host", tls: true, expect: []outcome{o404, o401, o400}, run: raw(true, req("POST", "http://169.254.169.254/latest/meta-data", []string{soapCT}, create))})
	for _, m := range []string{"GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"} {
		add(attackRow{name: "method_" + m, tls: true, expect: []outcome{o405, o404, o400, o501}, run: raw(true, req(m, "/wsman", []string{soapCT, adminAuth()}, nil)), check: noLeak})
	}
	add(attackRow{name: "method_GET_/etc/passwd", tls: true, expect: []outcome{o404, o405, o400}, run: raw(true, req("GET", "/etc/passwd", nil, nil)), check: noLeak})
	add(attackRow{name: "method_GET_traversal", tls: true, expect: []outcome{o404, o405, o400}, run: raw(true, []byte("GET /../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")), check: noLeak})
	add(attackRow{name: "method_CONNECT", tls: false, expect: []outcome{o405, o404, o400, o501, oClosed}, run: raw(false, []byte("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n"))})

	// ---- HTTP framing
	add(attackRow{name: "http_bad_content_length", tls: false, expect: []outcome{o400, oClosed}, run: raw(false, req("POST", "/wsman", []string{soapCT, "Content-Length: abc"}, create))})
	add(attackRow{name: "http_negative_content_length", tls: false, expect: []outcome{o400, oClosed}, run: raw(false, req("POST", "/wsman", []string{soapCT, "Content-Length: -1"}, create))})
	add(attackRow{name: "http_conflicting_content_lengths", tls: false, expect: []outcome{o400, oClosed}, run: raw(false, req("POST", "/wsman", []string{soapCT, fmt.Sprintf("Content-Length: %d", len(create)), "Content-Length: 5"}, create))})
	add(attackRow{name: "http_content_length_overflow", tls: false, expect: []outcome{o400, o413, o401, oClosed}, run: raw(false, req("POST", "/wsman", []string{soapCT, "Content-Length: 99999999999999999999"}, create))})
	add(attackRow{name: "http_content_length_short_body", tls: true, expect: []outcome{o400, o401, oClosed, o408}, run: func(a *attackCtx) (*reply, error) {
		rc, err := dialRawFrom(a.src, a.d.HTTPS, true)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		// Declared length within the envelope limit, body cut short.
		rc.writeRaw(req("POST", "/wsman", []string{soapCT, adminAuth(), fmt.Sprintf("Content-Length: %d", len(create)+500)}, create[:100]))
		rc.c.(interface{ CloseWrite() error }).CloseWrite()
		return rc.readReply("POST", 15*time.Second)
	}})
	smuggled := "0\r\n\r\n" + string(req("POST", "/wsman", []string{soapCT}, create))
	add(attackRow{name: "http_content_length_and_transfer_encoding", tls: false, expect: []outcome{o400, o401, oClosed}, run: raw(false, req("POST", "/wsman", []string{soapCT, fmt.Sprintf("Content-Length: %d", len(smuggled)), "Transfer-Encoding: chunked"}, []byte(smuggled)))})
	add(attackRow{name: "http_transfer_encoding_identity_chunked", tls: false, expect: []outcome{o400, o401, o501, oClosed}, run: raw(false, req("POST", "/wsman", []string{soapCT, "Transfer-Encoding: identity, chunked"}, []byte(fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(create), create))))})
	add(attackRow{name: "http_chunk_trailer_with_credentials", tls: true, expect: []outcome{o401, o400}, run: func(a *attackCtx) (*reply, error) {
		body := fmt.Sprintf("%x\r\n%s\r\n0\r\n%s\r\n\r\n", len(create), create, adminAuth())
		return raw(true, req("POST", "/wsman", []string{soapCT, "Transfer-Encoding: chunked", "Trailer: Authorization"}, []byte(body)))(a)
	}})
	add(attackRow{name: "http_bad_chunk_size", tls: false, expect: []outcome{o400, o401, oClosed}, run: raw(false, req("POST", "/wsman", []string{soapCT, "Transfer-Encoding: chunked"}, []byte("fffffffffffffffff\r\nx\r\n0\r\n\r\n")))})
	add(attackRow{name: "http_range_header", tls: true, expect: []outcome{o401}, run: raw(true, req("POST", "/wsman", []string{soapCT, "Range: bytes=0-10,20-30"}, create))})
	add(attackRow{name: "http_header_flood_10k", tls: true, expect: any4, run: func(a *attackCtx) (*reply, error) {
		h := []string{soapCT}
		for i := 0; i < 10000; i++ {
			h = append(h, fmt.Sprintf("X-Flood-%d: v", i))
		}
		return raw(true, req("POST", "/wsman", h, create))(a)
	}})
	add(attackRow{name: "http_header_line_1MiB", tls: true, expect: []outcome{o431, o400, oClosed}, run: raw(true, req("POST", "/wsman", []string{soapCT, "X-Big: " + strings.Repeat("a", 1<<20)}, create))})
	add(attackRow{name: "http_garbage_request_line", tls: false, expect: []outcome{o400, o505, oClosed}, run: raw(false, []byte("\x16\x03\x01\x02\x00GARBAGE\r\n\r\n"))})
	add(attackRow{name: "http2_preface_cleartext", tls: false, expect: []outcome{o400, o404, o505, oClosed}, run: raw(false, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))})
	add(attackRow{name: "http_expect_100_continue_unauthenticated", tls: true, expect: []outcome{o401, o417}, run: raw(true, req("POST", "/wsman", []string{soapCT, "Expect: 100-continue", "Content-Length: 10000000"}, nil))})
	add(attackRow{name: "http_slow_body_unauthenticated", tls: false, expect: []outcome{o401, oClosed, o408}, run: slowBody(false), check: fast(5 * time.Second)})
	add(attackRow{name: "http_slowloris", tls: false, expect: []outcome{oClosed, o408, o400}, run: slowloris, check: fast(8 * time.Second)})

	// ---- envelopes (authenticated administrator; limit 32 KiB)
	authed := func(body []byte, extra ...string) func(a *attackCtx) (*reply, error) {
		return raw(true, req("POST", "/wsman", append([]string{soapCT, adminAuth()}, extra...), body))
	}
	env4 := []outcome{oFault, o400, o413, oClosed}
	over := strings.Replace(createXML(), "<s:Body>", "<s:Body><!--"+strings.Repeat("x", 48<<10)+"-->", 1)
	add(attackRow{name: "xml_envelope_over_limit", tls: true, expect: env4, run: authed([]byte(over))})
	add(attackRow{name: "xml_envelope_over_limit_unauthenticated", tls: true, expect: []outcome{o401, o413, oClosed}, run: raw(true, req("POST", "/wsman", []string{soapCT}, []byte(strings.Repeat(over, 40))))})
	add(attackRow{name: "xml_nesting_1000_deep", tls: true, expect: env4, run: authed([]byte(strings.Replace(createXML(), "<s:Body>", "<s:Body>"+strings.Repeat("<a>", 1000)+strings.Repeat("</a>", 1000), 1)))})
	add(attackRow{name: "xml_nesting_1000_deep_in_shell", tls: true, expect: env4, run: authed([]byte(strings.Replace(createXML(), "<rsp:InputStreams>", strings.Repeat("<rsp:x>", 1000)+strings.Repeat("</rsp:x>", 1000)+"<rsp:InputStreams>", 1)))})
	add(attackRow{name: "xml_attribute_flood", tls: true, expect: env4, run: func(a *attackCtx) (*reply, error) {
		var b strings.Builder
		for i := 0; i < 3000; i++ {
			fmt.Fprintf(&b, ` a%d="1"`, i)
		}
		return authed([]byte(strings.Replace(receiveXML(strings.ToUpper(newUUID()), strings.ToUpper(newUUID())), "<rsp:Receive>", "<rsp:Receive"+b.String()+">", 1)))(a)
	}})
	add(attackRow{name: "xml_duplicate_attribute", tls: true, expect: env4, run: authed([]byte(strings.Replace(createXML(), "<rsp:Shell>", `<rsp:Shell ShellId="A" ShellId="B">`, 1)))})
	add(attackRow{name: "xml_element_flood", tls: true, expect: env4, run: authed([]byte(strings.Replace(receiveXML(strings.ToUpper(newUUID()), "X"), "<s:Body>", "<s:Body>"+strings.Repeat("<e/>", 7000), 1)))})
	add(attackRow{name: "xml_doctype_internal_entity", tls: true, expect: env4, run: authed([]byte(`<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY e "echo pwned">]>` + strings.Replace(createXML(), "<rsp:InputStreams>", "<rsp:Name>&e;</rsp:Name><rsp:InputStreams>", 1)))})
	laughs := `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">` +
		`<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">`
	for i := 2; i <= 9; i++ {
		laughs += fmt.Sprintf(`<!ENTITY lol%d "%s">`, i, strings.Repeat(fmt.Sprintf("&lol%d;", i-1), 10))
	}
	laughs += `]>` + strings.Replace(createXML(), "<rsp:InputStreams>", "<rsp:Name>&lol9;</rsp:Name><rsp:InputStreams>", 1)
	add(attackRow{name: "xml_billion_laughs", tls: true, expect: env4, run: authed([]byte(laughs)), check: fast(5 * time.Second)})
	add(attackRow{name: "xml_external_entity_passwd", tls: true, expect: env4, run: authed([]byte(`<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>` + strings.Replace(createXML(), "<rsp:InputStreams>", "<rsp:Name>&xxe;</rsp:Name><rsp:InputStreams>", 1))), check: noLeak})
	add(attackRow{name: "xml_parameter_entity", tls: true, expect: env4, run: authed([]byte(`<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY % p SYSTEM "file:///etc/shadow"> %p;]>` + createXML())), check: noLeak})
	add(attackRow{name: "xml_invalid_utf8", tls: true, expect: env4, run: authed([]byte(strings.Replace(createXML(), "<rsp:InputStreams>", "<rsp:Name>\xff\xfe\xc3\x28</rsp:Name><rsp:InputStreams>", 1)))})
	add(attackRow{name: "xml_overlong_utf8_slash", tls: true, expect: env4, run: authed([]byte(strings.Replace(createXML(), "<rsp:InputStreams>", "<rsp:WorkingDirectory>\xc0\xaf\xc0\xafetc</rsp:WorkingDirectory><rsp:InputStreams>", 1)))})
	add(attackRow{name: "xml_utf16_junk", tls: true, expect: env4, run: authed(append([]byte("\xff\xfe"), []byte("<\x00s\x00:\x00E\x00\x00\xd8\x00\xdc\xff\xff\x00\x00junk")...), "Content-Type: application/soap+xml;charset=UTF-16")})
	add(attackRow{name: "xml_nul_bytes", tls: true, expect: env4, run: authed([]byte(strings.Replace(createXML(), "<rsp:InputStreams>", "<rsp:Name>a\x00b</rsp:Name><rsp:InputStreams>", 1)))})
	add(attackRow{name: "xml_charset_latin1", tls: true, expect: env4, run: raw(true, req("POST", "/wsman", []string{"Content-Type: application/soap+xml;charset=ISO-8859-1", adminAuth()}, []byte(receiveXML(strings.ToUpper(newUUID()), "X"))))})
	add(attackRow{name: "xml_wrong_content_type", tls: true, expect: []outcome{o400, o415, oFault}, run: raw(true, req("POST", "/wsman", []string{"Content-Type: text/plain", adminAuth()}, []byte(receiveXML(strings.ToUpper(newUUID()), "X"))))})
	add(attackRow{name: "xml_two_roots", tls: true, expect: env4, run: authed([]byte(createXML() + createXML()))})
	add(attackRow{name: "xml_negative_operation_timeout", tls: true, expect: env4, run: authed([]byte(strings.Replace(receiveXML(strings.ToUpper(newUUID()), "X"), "PT5S", "PT-1S", 1)))})
	add(attackRow{name: "xml_huge_operation_timeout", tls: true, expect: env4, run: authed([]byte(strings.Replace(receiveXML(strings.ToUpper(newUUID()), "X"), "PT5S", "PT99999999999999999999S", 1))), check: fast(10 * time.Second)})
	add(attackRow{name: "xml_tiny_max_envelope_size", tls: true, expect: env4, run: authed([]byte(strings.Replace(createXML(), ">153600<", ">1<", 1)))})
	add(attackRow{name: "xml_selector_injection", tls: true, expect: env4, run: authed([]byte(commandXML(`../../etc/passwd"/><w:Selector Name="ShellId">x`, "id"))), check: noLeak})

	// ---- another administrator's shell and command (victim: w.admin)
	admin2 := &w.admin2
	sid := func(a *attackCtx) string { return a.victimShell }
	cid := func(a *attackCtx) string { return a.victimCmd }
	deny := []outcome{oDenied}
	add(attackRow{name: "xuser_command", tls: true, expect: deny, run: asUser(admin2, func(a *attackCtx) string { return commandXML(sid(a), "id") })})
	add(attackRow{name: "xuser_send", tls: true, expect: deny, run: asUser(admin2, func(a *attackCtx) string { return sendXML(sid(a), cid(a), []byte("kill -9 -1\n"), true) })})
	add(attackRow{name: "xuser_receive", tls: true, expect: deny, run: asUser(admin2, func(a *attackCtx) string { return receiveXML(sid(a), cid(a)) })})
	add(attackRow{name: "xuser_signal_terminate", tls: true, expect: deny, run: asUser(admin2, func(a *attackCtx) string { return signalXML(sid(a), cid(a), sigTerm) }), check: victimAlive})
	add(attackRow{name: "xuser_signal_ctrl_c", tls: true, expect: deny, run: asUser(admin2, func(a *attackCtx) string { return signalXML(sid(a), cid(a), sigCtrlC) }), check: victimAlive})
	add(attackRow{name: "xuser_delete", tls: true, expect: deny, run: asUser(admin2, func(a *attackCtx) string { return deleteXML(sid(a)) }), check: victimAlive})
	add(attackRow{name: "xuser_get", tls: true, expect: deny, run: asUser(admin2, func(a *attackCtx) string { return getShellXML(sid(a)) })})
	add(attackRow{name: "xuser_lowercase_shell_id", tls: true, expect: deny, run: asUser(admin2, func(a *attackCtx) string { return commandXML(strings.ToLower(sid(a)), "id") })})
	add(attackRow{name: "xuser_ntlm_sealed_command", tls: false, expect: deny, run: func(a *attackCtx) (*reply, error) {
		nc, r, err := dialNTLM(a.d.HTTP, false, w.admin2.Name, w.admin2.Password, ntlmOpts{src: a.src})
		if err != nil || r.Status != 200 {
			return r, fmt.Errorf("handshake: %v %v", err, r)
		}
		defer nc.Close()
		return nc.postSealed(commandXML(sid(a), "id"))
	}})
	add(attackRow{name: "xuser_enumerate_hides_others", tls: true, expect: []outcome{"200"}, run: asUser(admin2, func(a *attackCtx) string { return enumerateXML() }),
		check: func(a *attackCtx, r *reply, _ time.Duration) error {
			if bytes.Contains(bytes.ToUpper(r.Body), []byte(strings.ToUpper(a.victimShell))) {
				return fmt.Errorf("Enumerate by %s lists %s's shell", w.admin2.Name, w.admin.Name)
			}
			return nil
		}})
	add(attackRow{name: "nonadmin_command_in_admin_shell", tls: true, expect: []outcome{o401, oDenied}, run: asUser(&w.plain, func(a *attackCtx) string { return commandXML(sid(a), "id") })})
	add(attackRow{name: "nonadmin_create", tls: true, expect: []outcome{o401, oDenied}, run: asUser(&w.plain, func(a *attackCtx) string { return createXML() })})
	return rows
}

// slowloris trickles a request's headers past read_header_timeout_ms (1 s
// here): the daemon must close the connection.
func slowloris(a *attackCtx) (*reply, error) {
	rc, err := dialRawFrom(a.src, a.d.HTTP, false)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	head := "POST /wsman HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
	if err := rc.writeRaw([]byte(head)); err != nil {
		return &reply{Closed: true}, nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		if err := rc.writeRaw([]byte("a")); err != nil {
			return &reply{Closed: true}, nil
		}
		rc.c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := rc.br.Peek(1); err == nil {
			return rc.readReply("POST", 5*time.Second)
		} else if !strings.Contains(err.Error(), "timeout") {
			return &reply{Closed: true}, nil
		}
		rc.br.Reset(rc.c)
	}
	return &reply{Status: 0}, fmt.Errorf("connection still open after 10 s of trickled headers")
}

func TestAttackSuite(t *testing.T) {
	need(t)
	d := startDaemon(t, func(c *configs.Config) {
		c.Service.MaxEnvelopeSizeKB = 32
		c.Service.ReadHeaderTimeoutMS = 1000
	})
	a := &attackCtx{t: t, d: d}

	// The victim: an administrator's shell running a long command.
	victim := basicClient{d.HTTPS, true, w.admin.Name, w.admin.Password}
	vs, err := createShell(victim)
	if err != nil {
		t.Fatalf("victim shell: %v", err)
	}
	a.victimShell = vs.ID
	a.victimCmd, err = vs.command("echo victim; sleep 3000")
	if err != nil {
		t.Fatalf("victim command: %v", err)
	}
	defer func() {
		victim.Post(signalXML(vs.ID, a.victimCmd, sigTerm))
		if err := vs.delete(); err != nil {
			t.Errorf("victim delete: %v", err)
		}
	}()
	waitFor(t, 5*time.Second, "victim command running", func() bool { return victimAlive(a, nil, 0) == nil })

	rows := attackRows()
	refusedN, executedN := 0, 0
	for _, row := range rows {
		row := row
		ok := t.Run(row.name, func(t *testing.T) {
			before := d.executions()
			a.src = srcAddr()
			start := time.Now()
			r, err := row.run(a)
			el := time.Since(start)
			if err != nil {
				t.Fatalf("%v", err)
			}
			got := classify(r)
			matched := false
			for _, e := range row.expect {
				if got == e {
					matched = true
				}
			}
			if !matched {
				t.Errorf("outcome %s (%s), want one of %v", got, r, row.expect)
			}
			if row.check != nil {
				if err := row.check(a, r, el); err != nil {
					t.Error(err)
				}
			}
			time.Sleep(50 * time.Millisecond)
			after := d.executions()
			if after.shellCreates > before.shellCreates || after.commandStarts > before.commandStarts || after.workers > before.workers {
				executedN++
				t.Errorf("EXECUTED: shell_create %d→%d, command_start %d→%d, workers %d→%d",
					before.shellCreates, after.shellCreates, before.commandStarts, after.commandStarts, before.workers, after.workers)
			}
			if err := identify(d.HTTP, false); err != nil {
				t.Fatalf("daemon no longer serves on http: %v", err)
			}
			if err := identify(d.HTTPS, true); err != nil {
				t.Fatalf("daemon no longer serves on https: %v", err)
			}
		})
		if ok {
			refusedN++
		}
		if !d.Alive() {
			t.Fatalf("daemon died during %s", row.name)
		}
	}
	summary := fmt.Sprintf("attack: %d rows, %d refused, %d executed", len(rows), refusedN, executedN)
	fmt.Println(summary)
	t.Log(summary)
	recordStat("attack_rows", int64(len(rows)))
	recordStat("attack_refused", int64(refusedN))
	recordStat("attack_executed", int64(executedN))
	if n := d.AuditCount("command_start", w.admin2.Name) + d.AuditCount("shell_create", w.admin2.Name) + d.AuditCount("shell_create", w.plain.Name); n != 0 {
		t.Errorf("audit: %d shell/command events by the attacking accounts", n)
	}
}

// Quota exhaustion: shells per user and concurrent users give the quota
// fault; nothing extra runs; the daemon keeps serving.
func TestAttackQuotas(t *testing.T) {
	need(t)
	d := startDaemon(t, func(c *configs.Config) {
		c.Winrs.MaxShellsPerUser = 2
		c.Winrs.MaxConcurrentUsers = 1
	})
	admin := basicClient{d.HTTPS, true, w.admin.Name, w.admin.Password}
	var shells []*winrsShell
	defer func() {
		for _, s := range shells {
			s.delete()
		}
	}()
	for i := 0; i < 2; i++ {
		s, err := createShell(admin)
		if err != nil {
			t.Fatalf("shell %d within quota: %v", i, err)
		}
		shells = append(shells, s)
	}
	rows, refusedN, executedN := 0, 0, 0
	try := func(name string, c soapClient) {
		rows++
		t.Run(name, func(t *testing.T) {
			before := d.executions()
			r, err := c.Post(createXML())
			if err != nil {
				t.Fatal(err)
			}
			if got := classify(r); got != oQuota {
				t.Errorf("outcome %s (%s), want the quota fault", got, r)
			} else {
				refusedN++
			}
			after := d.executions()
			if after.shellCreates != before.shellCreates || after.workers > before.workers {
				executedN++
				t.Errorf("EXECUTED: a shell was created beyond the quota")
			}
			if err := identify(d.HTTPS, true); err != nil {
				t.Fatal(err)
			}
		})
	}
	try("max_shells_per_user", admin)
	try("max_shells_per_user_again", admin)
	try("max_concurrent_users", basicClient{d.HTTPS, true, w.admin2.Name, w.admin2.Password})
	// Freeing a shell frees the quota.
	if err := shells[1].delete(); err != nil {
		t.Fatal(err)
	}
	shells = shells[:1]
	s, err := createShell(admin)
	if err != nil {
		t.Errorf("after freeing a shell: %v", err)
	} else {
		shells = append(shells, s)
	}
	recordStat("attack_rows", int64(rows))
	recordStat("attack_refused", int64(refusedN))
	recordStat("attack_executed", int64(executedN))
	fmt.Printf("attack: %d rows, %d refused, %d executed (quotas)\n", rows, refusedN, executedN)
}

// A command whose children fill winrs.max_processes_per_shell: the
// kernel's limit holds the shell's processes, children included, and a
// Command the daemon's count of running commands would allow gets the
// quota fault from the kernel's refusal, not a missing-program one;
// nothing more starts, and the shell serves again once the filler is
// terminated.
func TestAttackProcessQuota(t *testing.T) {
	need(t)
	v2, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if _, v1 := os.Stat("/sys/fs/cgroup/pids/cgroup.procs"); !strings.Contains(string(v2), "pids") && v1 != nil {
		t.Skip("no pids cgroup controller (v2 or v1) on this machine")
	}
	const budget = 4
	d := startDaemon(t, func(c *configs.Config) { c.Winrs.MaxProcessesPerShell = budget })
	admin := basicClient{d.HTTPS, true, w.admin.Name, w.admin.Password}
	s, err := createShell(admin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.delete()
	// The filler takes every slot the limit leaves and retakes any it
	// gains (a refused fork is tried again every 5 ms): the worker's
	// threads are recounted before each Start, and the worker may have
	// made one since.
	filler, err := s.command(isolationtest.ProcessFiller)
	if err != nil {
		t.Fatal(err)
	}
	// Each probe either meets the full limit or found a slot not yet
	// retaken; then it ends and the next one tries. A fault must be the
	// quota fault; nothing may run past it.
	var r *reply
	var before executions
	for i := 0; i < 50; i++ {
		time.Sleep(100 * time.Millisecond)
		before = d.executions()
		if r, err = admin.Post(commandXML(s.ID, "true")); err != nil {
			t.Fatal(err)
		}
		if r.Status != 200 {
			break
		}
		if root, err := parseXML(r.Body); err == nil {
			if n := root.first("CommandId"); n != nil {
				s.receiveAll(strings.TrimSpace(n.Text), 10*time.Second)
			}
		}
	}
	refused := 0
	if got := classify(r); got != oQuota {
		t.Errorf("a command past the kernel's process limit: outcome %s (%s), want the quota fault", got, r)
	} else {
		refused = 1
	}
	executed := 0
	if after := d.executions(); after.commandStarts != before.commandStarts {
		executed = 1
		t.Errorf("EXECUTED: a command started past the process limit")
	}
	if !d.waitAudit("quota_exceeded", w.admin.Name, 1, 5*time.Second) {
		t.Error("no quota_exceeded audit event")
	}
	// Terminating the filler, its children with it, frees the slots.
	if _, err := okBody(s.c.Post(signalXML(s.ID, filler, sigTerm))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a command after the filler's end", func() bool {
		res, err := s.run("echo ok")
		return err == nil && string(res.Stdout) == "ok\n"
	})
	recordStat("attack_rows", 1)
	recordStat("attack_refused", int64(refused))
	recordStat("attack_executed", int64(executed))
	fmt.Printf("attack: 1 rows, %d refused, %d executed (process quota)\n", refused, executed)
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
