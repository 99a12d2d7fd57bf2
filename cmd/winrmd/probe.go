package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// identifyEnvelope is an anonymous WS-Management Identify.
const identifyEnvelope = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsmid="http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"><s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>`

// probeCmd sends an anonymous Identify and succeeds when an
// IdentifyResponse comes back: the liveness and readiness probe of the
// image and the Kubernetes manifests (exec probes; an HTTP GET probe cannot
// send a SOAP request).
func probeCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("probe", stderr)
	url := fs.String("url", "http://127.0.0.1:5985/wsman", "the listener to ask")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := &http.Client{Timeout: *timeout, Transport: &http.Transport{
		// A probe checks that the daemon answers, not who signed its
		// certificate (often self-signed inside a cluster).
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
		Proxy:           nil,
	}}
	req, err := http.NewRequest(http.MethodPost, *url, strings.NewReader(identifyEnvelope))
	if err != nil {
		fmt.Fprintf(stderr, "winrmd probe: %v\n", err)
		return 2
	}
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	req.Header.Set("WSMANIDENTIFY", "unauthenticated")
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "winrmd probe: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "IdentifyResponse") {
		fmt.Fprintf(stderr, "winrmd probe: %s answered HTTP %d without an IdentifyResponse\n", *url, resp.StatusCode)
		return 1
	}
	fmt.Fprintf(stdout, "%s: IdentifyResponse\n", *url)
	return 0
}
