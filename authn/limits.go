package authn

// The handshake limits every mechanism shares. The rest are each
// mechanism's own and sit with it: RateLimitConfig (failures per source
// and account), kerberos.Config.MaxClockSkew and the replay cache,
// credssp's field limits (MaxNameBytes, MaxPasswordBytes), MaxNameBytes
// here for names; the server's timeouts around a handshake are
// server.Limits.

// MaxTokenSize bounds one decoded authentication token of any mechanism:
// an NTLM, SPNEGO, Kerberos or CredSSP token from an Authorization header,
// and a TSRequest inside CredSSP's TLS channel. 48 KiB: Windows'
// MaxTokenSize is 48000, and a Kerberos AP-REQ carrying the PAC of a user
// in 1,000 groups is ~12 KiB. The server refuses a longer header value
// before decoding it (server.Limits.MaxToken); the mechanisms check the
// same constant for their other callers (CredSSP's inner tokens, the fuzz
// targets, the bench's client), so no mechanism has a cap of its own that
// the server's would make unreachable.
const MaxTokenSize = 48 << 10
