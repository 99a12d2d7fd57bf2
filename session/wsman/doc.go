// Package wsman is the wire layer: it parses and builds the SOAP 1.2 /
// WS-Management envelopes that WinRM clients (pywinrm, pypsrp,
// masterzen/winrm, the Windows client) send and expect.
//
// A request goes Parse (bytes to a bounded tree and typed headers), then
// Decode (the body to a typed WinRS value: Shell, CommandLine, Send,
// Receive, Signal, Enumerate, Pull, Release; winrs.go). Responses are
// encoded from typed values (winrs_reply.go; the ReceiveResponse hot path
// in receive.go renders straight into one buffer), faults from *Fault
// (fault.go). EncodeRequest is the client side of Decode. No other package
// handles XML: the session layer sees Message values only.
//
// The package sits at the bottom of the import graph with configs: it
// imports nothing of this module, so server, session and the tools can all
// use it without a cycle.
//
// The package is pure: no I/O, no logging and no package state beyond
// constants and read-only lookup tables. Request bodies are hostile input,
// so Parse enforces explicit Limits (size, nesting depth, element count,
// attributes per element, name length) on the token stream as it builds the
// tree, and rejects DTDs, entity declarations and processing instructions
// outright. Every
// error Parse returns is a *Fault ready to be rendered with FaultEnvelope.
//
// Namespaces are always resolved by URI, never by prefix: clients use env:,
// s:, wsa:, wsman:, wsmv: and others for the same URIs. Responses use the
// prefixes Windows emits (s a x w rsp p).
//
// The wire facts it encodes are MS-WSMV's and DSP0226's; requests recorded
// from real clients are in testdata/requests.
//
// Parse reads the subset of XML those clients send with a scanner of its
// own (scan.go) and everything else with encoding/xml's strict tokenizer;
// a fault always comes from the latter, so both give the same answers.
package wsman
