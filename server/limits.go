package server

import (
	"time"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/configs"
)

// Limits is everything the HTTP layer bounds: connections, headers, bodies
// and the time each may take. LimitsFor is the one place the service.*
// keys map into it; the other fields are fixed, each with its reason. The
// envelope's own structure (depth, elements, attributes) is bounded below
// this layer by wsman.Limits, the shells' quotas and timeouts by
// session.Limits, the tokens inside the Authorization header by the
// mechanisms (authn.MaxTokenSize).
//
// A zero field takes the default its comment names, except FailureDelay,
// whose zero answers refusals at once (service.auth.failure_delay_ms: 0).
type Limits struct {
	// MaxConnections is how many TCP connections, over all listeners, are
	// served at once (service.max_connections; default 300, Windows'
	// MaxConnections). At the limit a newcomer takes the slot of the
	// longest-idle connection without an identity (evict.go), else it
	// waits in the listen backlog. Fixed when the server is made.
	MaxConnections int

	// ReadHeaderTimeout is how long a client may take to send a request's
	// headers (service.read_header_timeout_ms; default 10 s). Fixed at
	// Start.
	ReadHeaderTimeout time.Duration

	// IdleTimeout closes a keep-alive connection idle this long between
	// requests (service.idle_connection_timeout_ms; default 120 s). Fixed
	// at Start.
	IdleTimeout time.Duration

	// MaxUnauthenticatedPerSource is how many connections that have not
	// authenticated one source address may hold, counted from accept
	// (service.max_unauthenticated_connections_per_source; default 200).
	// Its newcomer beyond that takes the slot of its own longest-idle one,
	// or is closed at accept. Reloadable.
	MaxUnauthenticatedPerSource int

	// UnauthenticatedIdle closes a connection without an identity (it got
	// a 401, or stopped mid-handshake) idle this long between requests
	// (default 10 s; real handshake legs follow each other within
	// milliseconds). With an IdleTimeout below it, IdleTimeout applies to
	// every connection.
	UnauthenticatedIdle time.Duration

	// ReapEvery is how often connections idle without an identity are
	// looked for and closed (default 1 s), so one is closed at most
	// ReapEvery after UnauthenticatedIdle.
	ReapEvery time.Duration

	// MaxHeaderBytes bounds a request's header block (default 64 KiB; Go's
	// server allows 4 KiB more). It admits an Authorization header
	// carrying a token of authn.MaxTokenSize (48 KiB, 64 KiB of base64):
	// a Kerberos ticket with the PAC of a user in 1,000 groups is ~16 KiB.
	MaxHeaderBytes int

	// MaxToken bounds a decoded Authorization token (default
	// authn.MaxTokenSize); a longer header value is refused before it is
	// decoded. The mechanisms check the decoded token against the same
	// constant for their other callers.
	MaxToken int

	// MaxEnvelope bounds a request's SOAP envelope, after unsealing and
	// transcoding (service.max_envelope_size_kb × 1024; default 512000,
	// Windows' MaxEnvelopeSizekb of 500). Reloadable. It becomes
	// wsman.Limits.MaxBytes for the parse.
	MaxEnvelope int

	// SealingOverhead is what message encryption may add to a body beyond
	// MaxEnvelope (default 16 KiB: the multipart framing, the signature and
	// the 16 KiB chunking of CredSSP's multi-encrypted bodies): a sealed
	// body is refused above MaxEnvelope + SealingOverhead before it is
	// unsealed, the envelope inside it above MaxEnvelope after.
	SealingOverhead int

	// BodyTimeout is how long, beyond ReadHeaderTimeout, an authenticated
	// request's body may take to arrive (default 60 s: a 500 KB envelope on
	// a slow link).
	BodyTimeout time.Duration

	// MaxUnauthenticatedBody bounds the body of a request without an
	// identity (default 64 KiB): a handshake leg's, read and discarded so
	// the connection can carry the next leg (a larger one closes the
	// connection), and an anonymous Identify's, which is parsed.
	MaxUnauthenticatedBody int

	// UnauthenticatedBodyTimeout is how long that body may take (default
	// 5 s): an unauthenticated client gets seconds, not a minute.
	UnauthenticatedBodyTimeout time.Duration

	// ReauthorizeEvery is how long an authorization decision lasts on one
	// open connection (default 30 s): a user removed from the allowed
	// groups, or whose password changed (Basic), loses access within it.
	ReauthorizeEvery time.Duration

	// FailureDelay is how long after a credential check began every
	// refusal that followed one is answered (service.auth.failure_delay_ms;
	// 3 s in the default configuration; zero answers at once). Reloadable.
	FailureDelay time.Duration
}

// Fixed limits (the fields no configuration key sets).
const (
	defaultUnauthenticatedIdle        = 10 * time.Second
	defaultReapEvery                  = time.Second
	defaultMaxHeaderBytes             = 64 << 10
	defaultSealingOverhead            = 16 << 10
	defaultBodyTimeout                = 60 * time.Second
	defaultMaxUnauthenticatedBody     = 64 << 10
	defaultUnauthenticatedBodyTimeout = 5 * time.Second
	defaultReauthorizeEvery           = 30 * time.Second
)

// LimitsFor maps the service.* limit keys into Limits: the only place they
// are read. The fixed fields take their defaults.
func LimitsFor(s configs.Service) Limits {
	return Limits{
		MaxConnections:              s.MaxConnections,
		MaxUnauthenticatedPerSource: s.MaxUnauthenticatedPerSource,
		ReadHeaderTimeout:           time.Duration(s.ReadHeaderTimeoutMS) * time.Millisecond,
		IdleTimeout:                 time.Duration(s.IdleConnectionTimeoutMS) * time.Millisecond,
		MaxEnvelope:                 s.MaxEnvelopeBytes(),
		FailureDelay:                time.Duration(s.Auth.FailureDelayMS) * time.Millisecond,
	}.withDefaults()
}

// withDefaults fills every zero field but FailureDelay with its default.
func (l Limits) withDefaults() Limits {
	d := configs.Default().Service
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.MaxConnections, d.MaxConnections)
	set(&l.MaxUnauthenticatedPerSource, d.MaxUnauthenticatedPerSource)
	setD(&l.ReadHeaderTimeout, time.Duration(d.ReadHeaderTimeoutMS)*time.Millisecond)
	setD(&l.IdleTimeout, time.Duration(d.IdleConnectionTimeoutMS)*time.Millisecond)
	setD(&l.UnauthenticatedIdle, defaultUnauthenticatedIdle)
	setD(&l.ReapEvery, defaultReapEvery)
	set(&l.MaxHeaderBytes, defaultMaxHeaderBytes)
	set(&l.MaxToken, authn.MaxTokenSize)
	set(&l.MaxEnvelope, d.MaxEnvelopeBytes())
	set(&l.SealingOverhead, defaultSealingOverhead)
	setD(&l.BodyTimeout, defaultBodyTimeout)
	set(&l.MaxUnauthenticatedBody, defaultMaxUnauthenticatedBody)
	setD(&l.UnauthenticatedBodyTimeout, defaultUnauthenticatedBodyTimeout)
	setD(&l.ReauthorizeEvery, defaultReauthorizeEvery)
	if l.FailureDelay < 0 {
		l.FailureDelay = 0
	}
	return l
}
