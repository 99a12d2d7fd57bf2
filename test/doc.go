// Package e2e holds winrmd's end-to-end tests: they build the real daemon,
// create real Linux users (prefix wrmde2e), start `winrmd serve` on
// 127.0.0.1 with port 0, and drive it with real clients — pywinrm and pypsrp
// from a virtualenv (test/clients/*.py, JSON in and out), masterzen/winrm as
// a Go library, curl, and raw TCP/TLS for the attack suite.
//
// Layout:
//
//	main_test.go      TestMain: one-time set-up (binary, users, store, cert) and teardown
//	users_test.go     Linux users and groups, the process scan used for leftover checks
//	daemon_test.go    config, start/stop, ready file, audit log, metrics
//	wsman_test.go     raw WS-Man envelopes and a minimal HTTP client (Basic, NTLM+sealing)
//	clients_test.go   the client drivers: python scripts and masterzen
//	interop_test.go   the functional scenarios, for every client and transport
//	negative_test.go  refusals with real clients (no auth, Basic on HTTP, bad XML, ...)
//	ntlm_test.go      NTLM negatives over raw sockets, curl --ntlm
//	certificate_test.go client certificates: every client, curl --cert, each refusal
//	credssp_test.go   CredSSP with pywinrm and pypsrp (HTTP sealed, HTTPS), and its refusals
//	attack_test.go    the table-driven attack suite (issue 4 §1)
//	lab_test.go       `winrmd lab`, as the README tells a newcomer to use it
//	stats_test.go     figures for the summary printed at the end of `make test`
//	psrp_test.go      PowerShell remoting with pypsrp through the daemon to the far end
//	psrp_farend_test.go  the PSRP far end: real pwsh when on PATH, else the stand-in
//	                  (standin/pwsh_standin.py), proven with standin/oop_client.py,
//	                  copied where the test users can read it by standin.Install
//	                  (which the bench's PSRP rows use too)
//
// Everything that needs root skips, saying so, when not run as root; CI runs
// as root. Figures go to $WINRMD_E2E_STATS (default test/.work/stats.jsonl)
// and are printed by test/cmd/e2esummary.
package e2e
