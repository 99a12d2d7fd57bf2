package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	//lint:ignore SA1019 the NT hash is MD4 by definition (MS-NLMP 3.3.1); the test looks for it in the log.
	"golang.org/x/crypto/md4"

	"github.com/winrmd/winrmd/configs"
)

// TestWireTrace: with logging.trace_wire at debug, the daemon's log holds
// the SOAP each client sent and got (command lines, actions, selectors),
// and none of the secrets that crossed the wire: the password, its NT hash,
// the NTLM tokens, the Basic value, the stdin and the environment values.
func TestWireTrace(t *testing.T) {
	w := need(t)
	d := startDaemon(t, func(c *configs.Config) {
		c.Logging.TraceWire = true
		c.Logging.TraceWireMaxBytes = 4096
	})
	u := w.admin
	envSecret := "wrmd-env-secret-" + randHex(6)
	stdinSecret := "wrmd-stdin-secret-" + randHex(6)

	// NTLM, sealed on HTTP: the handshake's three tokens recorded.
	var toks [][]byte
	nc, r, err := dialNTLM(d.HTTP, false, u.Name, u.Password, ntlmOpts{record: &toks})
	if err != nil || r.Status != 200 {
		t.Fatalf("NTLM logon: %v %s", err, r)
	}
	defer nc.Close()
	create := env(actCreate, uriCmd, "", `<rsp:Shell><rsp:Environment><rsp:Variable Name="WRMD_TRACE">`+envSecret+
		`</rsp:Variable></rsp:Environment><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>`,
		"WINRS_NOPROFILE=FALSE")
	root, err := okBody(nc.Post(create))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	var sh *winrsShell
	for _, sel := range root.all("Selector") {
		if sel.Attr["Name"] == "ShellId" {
			sh = &winrsShell{c: nc, ID: strings.TrimSpace(sel.Text)}
		}
	}
	if sh == nil {
		t.Fatal("CreateResponse without ShellId")
	}
	cid, err := sh.command(`read line; test "$line" = "$STDIN_WANT" || true; echo "trace-ok $WRMD_TRACE $line"`)
	if err != nil {
		t.Fatalf("Command: %v", err)
	}
	if _, err := okBody(nc.Post(sendXML(sh.ID, cid, []byte(stdinSecret+"\n"), true))); err != nil {
		t.Fatalf("Send: %v", err)
	}
	res, err := sh.receiveAll(cid, 30*time.Second)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if want := "trace-ok " + envSecret + " " + stdinSecret + "\n"; string(res.Stdout) != want {
		t.Fatalf("stdout %q, want %q", res.Stdout, want)
	}
	if err := sh.delete(); err != nil {
		t.Errorf("Delete: %v", err)
	}

	// Basic on HTTPS.
	if err := func() error {
		bs, err := createShell(basicClient{addr: d.HTTPS, tls: true, user: u.Name, pass: u.Password})
		if err != nil {
			return err
		}
		return bs.delete()
	}(); err != nil {
		t.Fatalf("Basic shell: %v", err)
	}

	log, err := os.ReadFile(d.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	// The trace is there: the warning, request and response envelopes,
	// the command line, and the redaction marks where secrets were.
	for _, want := range []string{"WIRE TRACE ON", `"msg":"wire request"`, `"msg":"wire request body"`, `"msg":"wire response body"`,
		`"msg":"wire response"`, "trace-ok $WRMD_TRACE", "rsp:CommandLine", `Name=\"WRMD_TRACE\">[redacted `, "Negotiate [redacted ", "Basic [redacted "} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("daemon log lacks %q", want)
		}
	}
	// No secret.
	nt := md4.New()
	for _, r := range utf16.Encode([]rune(u.Password)) {
		nt.Write([]byte{byte(r), byte(r >> 8)})
	}
	hash := nt.Sum(nil)
	secrets := map[string]string{
		"password":             u.Password,
		"NT hash (hex)":        hex.EncodeToString(hash),
		"NT hash (HEX)":        strings.ToUpper(hex.EncodeToString(hash)),
		"NT hash (base64)":     base64.StdEncoding.EncodeToString(hash),
		"Basic value":          base64.StdEncoding.EncodeToString([]byte(u.Name + ":" + u.Password)),
		"environment value":    envSecret,
		"stdin":                stdinSecret,
		"stdin (base64)":       base64.StdEncoding.EncodeToString([]byte(stdinSecret + "\n")),
		"stdout (base64)":      base64.StdEncoding.EncodeToString([]byte("trace-ok " + envSecret)),
		"password (utf16 b64)": base64.StdEncoding.EncodeToString(utf16le(u.Password)),
		"password (utf16 hex)": hex.EncodeToString(utf16le(u.Password)),
		"password (utf16 HEX)": strings.ToUpper(hex.EncodeToString(utf16le(u.Password))),
		"password (base64)":    base64.StdEncoding.EncodeToString([]byte(u.Password)),
	}
	if len(toks) != 3 {
		t.Fatalf("recorded %d NTLM tokens, want 3", len(toks))
	}
	for i, tok := range toks {
		name := []string{"NTLM NEGOTIATE", "NTLM CHALLENGE", "NTLM AUTHENTICATE"}[i]
		secrets[name+" (base64)"] = base64.StdEncoding.EncodeToString(tok)
		secrets[name+" (hex)"] = hex.EncodeToString(tok)
		// Any 24-byte window of the token, in case a line cut it.
		if len(tok) > 40 {
			secrets[name+" (part)"] = base64.StdEncoding.EncodeToString(tok[12:36])
		}
	}
	for name, s := range secrets {
		if len(s) >= 6 && bytes.Contains(log, []byte(s)) {
			t.Errorf("daemon log holds the %s", name)
		}
	}
}

func utf16le(s string) []byte {
	var b []byte
	for _, r := range utf16.Encode([]rune(s)) {
		b = append(b, byte(r), byte(r>>8))
	}
	return b
}
