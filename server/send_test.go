package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beevik/etree"

	"github.com/winrmd/winrmd/session/wsman"
)

// stdinClient drives one cmd shell over one HTTPS connection with Basic.
type stdinClient struct {
	t       *testing.T
	c       *http.Client
	url     string
	shellID string
}

func (sc *stdinClient) post(body []byte) *etree.Document {
	sc.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, sc.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	req.Header.Set("Authorization", basicHeader(testUser, testPass))
	resp, err := sc.c.Do(req)
	if err != nil {
		sc.t.Error(err)
		return nil
	}
	defer resp.Body.Close()
	doc := etree.NewDocument()
	if _, err := doc.ReadFrom(resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		out, _ := doc.WriteToString()
		sc.t.Errorf("status %d, %v: %s", resp.StatusCode, err, out)
		return nil
	}
	return doc
}

func (sc *stdinClient) request(action string, body any) []byte {
	h := wsman.Header{Action: action, ResourceURI: wsman.ResourceCmdShell, MessageID: "uuid:" + wsman.NewGUID(),
		To: sc.url, MaxEnvelopeSize: 512000, OperationTimeout: 20 * time.Second}
	if sc.shellID != "" {
		h.Selectors = map[string]string{"ShellId": sc.shellID}
	}
	return wsman.EncodeRequest(&wsman.Message{Header: h, Body: body})
}

// send sends data to command id in one Send; reshape, when not nil,
// rewrites the base64 text as a client might lay it out.
func (sc *stdinClient) send(id string, data []byte, end bool, reshape func(string) string) bool {
	body := sc.request(wsman.ActionSend, &wsman.Send{Streams: []wsman.StreamData{{Name: "stdin", CommandID: id, Data: data, End: end}}})
	if reshape != nil && len(data) > 0 {
		text := base64.StdEncoding.EncodeToString(data)
		if bytes.Count(body, []byte(text)) != 1 {
			sc.t.Error("base64 text not found once in the Send")
			return false
		}
		body = bytes.Replace(body, []byte(text), []byte(reshape(text)), 1)
	}
	return sc.post(body) != nil
}

// run runs line with the Sends of stdin and returns its stdout.
func (sc *stdinClient) run(line string, stdin [][]byte, reshape []func(string) string) string {
	doc := sc.post(sc.request(wsman.ActionCreate, &wsman.Shell{InputStreams: "stdin", OutputStreams: "stdout stderr"}))
	if doc == nil {
		return ""
	}
	for _, s := range doc.FindElements("//Selector") {
		if s.SelectAttrValue("Name", "") == "ShellId" {
			sc.shellID = s.Text()
		}
	}
	doc = sc.post(sc.request(wsman.ActionCommand, &wsman.CommandLine{Command: line}))
	if doc == nil {
		return ""
	}
	id := doc.FindElement("//CommandId").Text()
	for i, data := range stdin {
		if !sc.send(id, data, i == len(stdin)-1, reshape[i%len(reshape)]) {
			return ""
		}
	}
	var out []byte
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		doc = sc.post(sc.request(wsman.ActionReceive, &wsman.Receive{CommandID: id, Streams: []string{"stdout", "stderr"}}))
		if doc == nil {
			return ""
		}
		for _, s := range doc.FindElements("//Stream") {
			b, err := base64.StdEncoding.DecodeString(s.Text())
			if err != nil {
				sc.t.Errorf("output stream: %v", err)
			}
			out = append(out, b...)
		}
		if st := doc.FindElement("//CommandState"); st != nil && st.SelectAttrValue("State", "") == wsman.StateDone {
			return string(out)
		}
	}
	sc.t.Error("the command did not end")
	return ""
}

// TestSendStdinByteExact sends stdin as make bench's rows do (one Send of
// about 500 KB after another) and in the layouts clients use, through the
// server: readBody's pooled buffers, the Stream text decoded over itself
// (wsman.DecodeInPlace), the Stdin frame written with writev. Two
// connections do it at once with different data, so that buffers go from
// one request to the next and between connections; the command's view of
// its stdin is checked byte for byte (sha256sum). Run it with -race.
func TestSendStdinByteExact(t *testing.T) {
	ts := startServer(t, nil)
	// pemLines lays the base64 out as PEM does: lines of 64 characters,
	// ending in nl.
	pemLines := func(nl string) func(string) string {
		return func(s string) string {
			data, _ := base64.StdEncoding.DecodeString(s)
			p := string(pem.EncodeToMemory(&pem.Block{Type: "D", Bytes: data}))
			p = strings.TrimSuffix(strings.TrimPrefix(p, "-----BEGIN D-----\n"), "\n-----END D-----\n")
			return strings.ReplaceAll(p, "\n", nl)
		}
	}
	half := func(s string) string { return s[:len(s)/8*4] + "<!-- split -->" + s[len(s)/8*4:] }
	var wg sync.WaitGroup
	for conn := 0; conn < 2; conn++ {
		var stdin [][]byte
		var all []byte
		for i, n := range []int{375000, 375000, 1000, 374999, 0, 20000, 375000, 375000, 300000, 375000} {
			b := make([]byte, n)
			for j := range b {
				b[j] = byte(j*7 + j>>9 + i*31 + conn*101)
			}
			stdin = append(stdin, b)
			all = append(all, b...)
		}
		sum := sha256.Sum256(all)
		want := hex.EncodeToString(sum[:]) + "  -\n"
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := &stdinClient{t: t, c: tlsClient(), url: "https://" + ts.https + "/wsman"}
			got := sc.run("sha256sum", stdin, []func(string) string{
				nil, nil, nil, nil, nil, pemLines("\r\n"), nil, pemLines("\n"), half, nil,
			})
			if got != want {
				t.Errorf("connection %d: stdin arrived as %q, want %q", conn, got, want)
			}
		}()
	}
	wg.Wait()
}
