package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/accounts"
	"github.com/winrmd/winrmd/authn/basic"
	"github.com/winrmd/winrmd/authn/ntlm"
	"github.com/winrmd/winrmd/authn/spnego"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/session"
	"github.com/winrmd/winrmd/session/obs"
)

// The test binary doubles as the worker: shells run through the real
// re-exec path (lab mode: as the test's own user).
func TestMain(m *testing.M) {
	if isolation.IsWorker() {
		isolation.WorkerMain()
		return
	}
	os.Exit(m.Run())
}

// countingSpawner decorates the real spawner to count spawns, so a test can
// prove that a request never reached a shell.
type countingSpawner struct {
	isolation.Spawner
	n atomic.Int64
}

func (c *countingSpawner) Spawn(ctx context.Context, r isolation.SpawnRequest) (isolation.Worker, error) {
	c.n.Add(1)
	return c.Spawner.Spawn(ctx, r)
}

type testServer struct {
	srv      *Server
	sessions *session.Manager
	spawns   *countingSpawner
	metrics  *obs.Metrics
	http     string
	https    string
	audit    string
}

const testUser, testPass = "tester", "correct horse battery"

func startServer(t *testing.T, mut func(*configs.Config)) *testServer {
	t.Helper()
	return startServerAuthz(t, mut, nil)
}

// startServerAuthz is startServer with the authorizer wrapped by wrap
// (when not nil), for tests that make the account database misbehave.
func startServerAuthz(t *testing.T, mut func(*configs.Config), wrap func(*authn.Authorizer) Authorizer) *testServer {
	t.Helper()
	return startServerLog(t, mut, wrap, nil)
}

// startServerLog is startServerAuthz with the daemon's log (nil: none).
func startServerLog(t *testing.T, mut func(*configs.Config), wrap func(*authn.Authorizer) Authorizer, log *zap.Logger) *testServer {
	t.Helper()
	dir := t.TempDir()
	certF, keyF := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeTestCert(t, certF, keyF)
	store, err := accounts.Open(filepath.Join(dir, "accounts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Add(testUser, testPass); err != nil {
		t.Fatal(err)
	}
	cfg := configs.Default()
	cfg.Listeners = []configs.Listener{
		{Transport: "http", Address: "127.0.0.1", Port: 0},
		{Transport: "https", Address: "127.0.0.1", Port: 0, CertFile: certF, KeyFile: keyF},
	}
	cfg.Service.Auth.Basic = true
	cfg.Accounts.PAMService = ""
	cfg.Accounts.StoreFile = filepath.Join(dir, "accounts")
	cfg.Logging.AuditFile = filepath.Join(dir, "audit.log")
	if mut != nil {
		mut(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	audit, err := obs.NewAudit(cfg.Logging.AuditFile, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	sp, err := isolation.NewSpawner(isolation.SpawnerOptions{Lab: true, AllowRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() }) // after the sessions' Shutdown, registered later
	cs := &countingSpawner{Spawner: sp}
	metrics := obs.NewMetrics()
	sessions := session.NewManager(session.Config{Limits: session.LimitsFor(cfg), Winrs: cfg.Winrs, Spawner: cs, Audit: audit, Metrics: metrics})
	lab, err := authn.NewAuthorizer(authn.AuthorizerConfig{Lab: true, AllowRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	var az Authorizer = lab
	if wrap != nil {
		az = wrap(lab)
	}
	srv, err := New(Deps{
		Config: cfg, Audit: audit, Metrics: metrics, Sessions: sessions, Authorizer: az, Log: log,
		Basic: basic.New(basic.Config{Store: store}), Machine: "test",
		Contexts: func(sch authn.Scheme) authn.Context {
			mk := func() *ntlm.Acceptor {
				return ntlm.NewAcceptor(ntlm.Config{Verifier: ntlm.NewNTHashVerifier(store), NetBIOSComputer: "TEST", DNSComputer: "test", CBTLevel: "relaxed"})
			}
			if sch == authn.SchemeNegotiate {
				return spnego.NewAcceptor(spnego.Config{NTLM: mk})
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	bound, err := srv.Start()
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, sessions: sessions, spawns: cs, metrics: metrics, audit: cfg.Logging.AuditFile}
	for _, b := range bound {
		if b.Transport == "http" {
			ts.http = b.Address
		} else {
			ts.https = b.Address
		}
	}
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sessions.Shutdown(ctx)
		audit.Close()
	})
	return ts
}

func writeTestCert(t *testing.T, certF, keyF string) {
	t.Helper()
	// A real self-signed certificate made with the standard library.
	if err := genCert(certF, keyF); err != nil {
		t.Fatal(err)
	}
}

const createBody = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Create</a:Action><w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI><a:MessageID>uuid:6F0C2A9D-0000-4000-8000-000000000001</a:MessageID></s:Header><s:Body><rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell></s:Body></s:Envelope>`

const identifyBody = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsmid="http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"><s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>`

func tlsClient() *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 1,
	}}
}

func post(t *testing.T, c *http.Client, url, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestUnauthenticatedNeverReachesAShell(t *testing.T) {
	ts := startServer(t, nil)
	c := tlsClient()
	cases := []struct {
		name string
		hdr  map[string]string
	}{
		{"no header", nil},
		{"empty header", map[string]string{"Authorization": ""}},
		{"unknown scheme", map[string]string{"Authorization": "Digest abc"}},
		{"malformed basic", map[string]string{"Authorization": "Basic !!!"}},
		{"basic without colon", map[string]string{"Authorization": "Basic dGVzdGVy"}},
		{"wrong password", map[string]string{"Authorization": basicHeader(testUser, "wrong")}},
		{"unknown user", map[string]string{"Authorization": basicHeader("nobody", testPass)}},
		{"negotiate garbage", map[string]string{"Authorization": "Negotiate AAAA"}},
		{"oversized", map[string]string{"Authorization": "Negotiate " + strings.Repeat("A", 60000)}},
	}
	for _, tc := range cases {
		resp, _ := post(t, c, "https://"+ts.https+"/wsman", createBody, tc.hdr)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", tc.name, resp.StatusCode)
		}
	}
	if n := ts.spawns.n.Load(); n != 0 {
		t.Fatalf("%d workers spawned for unauthenticated requests", n)
	}
	if n := ts.sessions.ShellCount(); n != 0 {
		t.Fatalf("%d shells exist", n)
	}
	// And the daemon still serves a good request.
	resp, body := post(t, c, "https://"+ts.https+"/wsman", createBody, map[string]string{"Authorization": basicHeader(testUser, testPass)})
	if resp.StatusCode != 200 || !strings.Contains(body, "ShellId") {
		t.Fatalf("authenticated Create: %d %s", resp.StatusCode, body)
	}
	if resp.ProtoMajor != 1 {
		t.Fatalf("served over HTTP/%d; only HTTP/1.1 is allowed", resp.ProtoMajor)
	}
}

func basicHeader(u, p string) string {
	req, _ := http.NewRequest("GET", "http://x/", nil)
	req.SetBasicAuth(u, p)
	return req.Header.Get("Authorization")
}

func TestOfferedSchemes(t *testing.T) {
	ts := startServer(t, nil)
	resp, _ := post(t, tlsClient(), "https://"+ts.https+"/wsman", createBody, nil)
	got := resp.Header.Values("WWW-Authenticate")
	if len(got) != 2 || got[0] != "Negotiate" || !strings.HasPrefix(got[1], "Basic ") {
		t.Fatalf("HTTPS offers %q; want Negotiate and Basic on separate lines", got)
	}
	resp, _ = post(t, http.DefaultClient, "http://"+ts.http+"/wsman", createBody, nil)
	if got := resp.Header.Values("WWW-Authenticate"); len(got) != 1 || got[0] != "Negotiate" {
		t.Fatalf("HTTP offers %q; Basic must not be offered on HTTP by default", got)
	}
}

func TestBasicOverHTTPRefusedByDefault(t *testing.T) {
	ts := startServer(t, nil)
	resp, _ := post(t, http.DefaultClient, "http://"+ts.http+"/wsman", createBody, map[string]string{"Authorization": basicHeader(testUser, testPass)})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
	if ts.spawns.n.Load() != 0 {
		t.Fatal("a shell was spawned")
	}
	b, _ := os.ReadFile(ts.audit)
	if !strings.Contains(string(b), obs.EvUnencrypted) {
		t.Fatalf("no %s audit event:\n%s", obs.EvUnencrypted, b)
	}
	// With allow_unencrypted it works.
	ts2 := startServer(t, func(c *configs.Config) { c.Service.AllowUnencrypted = true })
	resp, body := post(t, http.DefaultClient, "http://"+ts2.http+"/wsman", createBody, map[string]string{"Authorization": basicHeader(testUser, testPass)})
	if resp.StatusCode != 200 || !strings.Contains(body, "ShellId") {
		t.Fatalf("allow_unencrypted: %d %s", resp.StatusCode, body)
	}
}

func TestPathsAndMethods(t *testing.T) {
	ts := startServer(t, nil)
	cases := []struct {
		method, path string
		want         int
	}{
		{"GET", "/wsman", 405},
		{"HEAD", "/wsman", 405},
		{"PUT", "/wsman", 405},
		{"POST", "/", 404},
		{"POST", "/wsman/", 404},
		{"POST", "/WSMAN", 404},
		{"POST", "/wsman/../wsman", 404},
		{"POST", "/%77sman", 404},
		{"POST", "/wsman%2f..", 404},
		{"GET", "/metrics", 404},
		{"GET", "/etc/passwd", 404},
	}
	for _, tc := range cases {
		status := rawStatus(t, ts.http, fmt.Sprintf("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", tc.method, tc.path))
		if status != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, status, tc.want)
		}
	}
}

// rawStatus sends bytes as they are (no client normalisation) and returns the status.
func rawStatus(t *testing.T, addr, req string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAnonymousIdentify(t *testing.T) {
	ts := startServer(t, nil)
	resp, body := post(t, http.DefaultClient, "http://"+ts.http+"/wsman", identifyBody, map[string]string{"WSMANIDENTIFY": "unauthenticated"})
	if resp.StatusCode != 200 || !strings.Contains(body, "IdentifyResponse") || !strings.Contains(body, "OS: 0.0.0 SP: 0.0 Stack: 3.0") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/soap+xml") {
		t.Fatalf("Content-Type %q", ct)
	}
	// Anything but Identify needs authentication, header or not.
	resp, _ = post(t, http.DefaultClient, "http://"+ts.http+"/wsman", createBody, map[string]string{"WSMANIDENTIFY": "unauthenticated"})
	if resp.StatusCode != 401 || ts.spawns.n.Load() != 0 {
		t.Fatalf("Create with WSMANIDENTIFY: %d, spawns %d", resp.StatusCode, ts.spawns.n.Load())
	}
}

func TestBasicVerifiedOncePerConnection(t *testing.T) {
	ts := startServer(t, nil)
	c := tlsClient()
	for i := 0; i < 4; i++ {
		resp, _ := post(t, c, "https://"+ts.https+"/wsman", identifyBody, map[string]string{"Authorization": basicHeader(testUser, testPass)})
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	mfs, _ := ts.metrics.Registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "winrmd_auth_attempts_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["scheme"] == "basic" && labels["result"] == "success" && m.GetCounter().GetValue() != 1 {
				t.Fatalf("Basic verified %v times on one connection, want 1", m.GetCounter().GetValue())
			}
		}
	}
}

func TestMaxConnectionsAndFilter(t *testing.T) {
	ts := startServer(t, func(c *configs.Config) { c.Service.MaxConnections = 2 })
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", ts.http)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)
	if st := rawStatus(t, ts.http, "POST /wsman HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"); st != -1 {
		t.Fatalf("third connection answered %d; want it closed", st)
	}
	for _, c := range held {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for rawStatus(t, ts.http, "POST /wsman HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n") != 401 {
		if time.Now().After(deadline) {
			t.Fatal("slots not released after connections closed")
		}
		time.Sleep(50 * time.Millisecond)
	}

	tf := startServer(t, func(c *configs.Config) { c.Service.IPv4Filter = "10.0.0.1" })
	if st := rawStatus(t, tf.http, "POST /wsman HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"); st != -1 {
		t.Fatalf("filtered address answered %d; want the connection closed", st)
	}
}

func TestOversizeBodyFaults(t *testing.T) {
	ts := startServer(t, func(c *configs.Config) { c.Service.MaxEnvelopeSizeKB = 32 })
	big := strings.Replace(createBody, "<rsp:InputStreams>", "<rsp:InputStreams>"+strings.Repeat("x", 80<<10), 1)
	resp, body := post(t, tlsClient(), "https://"+ts.https+"/wsman", big, map[string]string{"Authorization": basicHeader(testUser, testPass)})
	if resp.StatusCode != 500 || !strings.Contains(body, "EncodingLimit") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if ts.spawns.n.Load() != 0 {
		t.Fatal("oversize Create spawned a worker")
	}
}

// A request's log lines carry its context: the connection, the peer, the
// message, the action and the user (fields the handler adds lazily, so
// they must still be there when a line is written).
func TestRequestLogCarriesContext(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	ts := startServerLog(t, nil, nil, zap.New(core))
	const msgID = "uuid:6F0C2A9D-0000-4000-8000-0000000000AA"
	body := strings.Replace(createBody, "uuid:6F0C2A9D-0000-4000-8000-000000000001", msgID, 1)
	body = strings.Replace(body, "/transfer/Create", "/transfer/Delete", 1)
	body = strings.Replace(body, "<w:ResourceURI>", `<w:SelectorSet><w:Selector Name="ShellId">0D0D0D0D-0000-4000-8000-000000000000</w:Selector></w:SelectorSet><w:ResourceURI>`, 1)
	resp, out := post(t, tlsClient(), "https://"+ts.https+"/wsman", body, map[string]string{"Authorization": basicHeader(testUser, testPass)})
	if resp.StatusCode != http.StatusInternalServerError && resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("Delete of an unknown shell: %d %.300s", resp.StatusCode, out)
	}
	faults := logs.FilterMessage("fault").All()
	if len(faults) != 1 {
		t.Fatalf("%d fault lines logged, want 1: %+v", len(faults), logs.All())
	}
	ctx := faults[0].ContextMap()
	for k, want := range map[string]any{obs.FMessageID: msgID, obs.FAction: "Delete"} {
		if ctx[k] != want {
			t.Errorf("field %s = %v, want %v (all: %v)", k, ctx[k], want, ctx)
		}
	}
	// The user is the account the lab authorizer maps to.
	for _, k := range []string{obs.FConnID, obs.FRemoteAddr, obs.FUser} {
		if v, ok := ctx[k]; !ok || v == "" {
			t.Errorf("field %s missing (all: %v)", k, ctx)
		}
	}
}
