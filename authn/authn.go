// Package authn answers "who are you": the mechanisms (one package each:
// basic, ntlm, spnego, later kerberos) turn tokens into a Principal; this
// package maps a Principal to a local Account and decides whether it may log
// in. Identity is the only value the rest of the daemon trusts.
//
// A zero Identity is unusable: Valid reports false and Account panics, so
// a forgotten authentication step can never mean "uid 0" (the OMI bug).
package authn

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Scheme names an HTTP authentication scheme as it appears on the wire.
type Scheme string

const (
	SchemeBasic     Scheme = "Basic"
	SchemeNegotiate Scheme = "Negotiate"
	SchemeNTLM      Scheme = "NTLM"
	SchemeKerberos  Scheme = "Kerberos"
	// SchemeCertificate is a TLS client certificate. On the wire clients
	// send the WS-Management mutual-authentication profile URI
	// (CertificateProfile) as the whole Authorization value, or nothing.
	SchemeCertificate Scheme = "Certificate"
	// SchemeCredSSP is MS-CSSP: TLS records in the tokens, the password
	// delegated inside.
	SchemeCredSSP Scheme = "CredSSP"
)

// CertificateProfile is the Authorization value pywinrm, pypsrp and
// masterzen/winrm send with a client certificate (DSP0226 C.3.5).
const CertificateProfile = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"

// Principal is what a mechanism proved: a name as the client spelled it,
// and who verified it.
type Principal struct {
	// Name as authenticated: "user", "DOMAIN\\user" or "user@REALM".
	Name string
	// Domain when the mechanism carries one separately (NTLM), else "". For
	// VerifiedDomain it is the domain's canonical name, the qualifier NSS
	// resolves the domain's accounts by ("CORP" for CORP\\alice).
	Domain string
	// Mechanism that proved it, for audit and metrics: "basic", "ntlm",
	// "kerberos", "certificate".
	Mechanism string
	// Verifier says who checked the credentials, which decides the local
	// account the name may become (MapPrincipal). The zero value is
	// VerifiedLocal, the narrowest.
	Verifier Verifier
	// Service is the service name the client said it meant to reach (NTLM's
	// MsvAvTargetName, a Kerberos ticket's server), "" when it sent none.
	// For audit.
	Service string
	// Binding is the outcome of the channel-binding / service-binding
	// check, for audit: "match" (TLS channel binding verified),
	// "service-name" (no channel binding; the service name named this
	// host), "absent" (neither sent, admitted by cbt_hardening_level
	// relaxed), "not-checked" (plain HTTP without a service name, or level
	// none), "" when the mechanism has no binding (Basic).
	Binding string
	// SIDs are the Windows security identifiers the mechanism verified for
	// this principal (Kerberos: from a PAC whose server signature it
	// checked, authn/pac); nil when it has none. The authorizer matches
	// them against authorization.allowed_sids. A mechanism must never fill
	// them from anything unverified. A pointer keeps Principal comparable;
	// the value is not modified after the mechanism made it.
	SIDs *SIDs
	// Client is the principal exactly as the mechanism proved it, when
	// that differs from Name ("alice@REALM" for Kerberos), for audit.
	Client string
	// Delegated is a credential cache (MIT ccache v4) holding what the
	// client delegated (a forwarded Kerberos TGT), or nil. It is a secret:
	// it prints as "[redacted]" and only the shell's worker gets it. A
	// pointer keeps Principal comparable.
	Delegated *Secret
}

// SIDs is a verified Windows identity: the user, its logon domain and its
// groups, as "S-1-…" strings.
type SIDs struct {
	User   string
	Domain string // the logon domain, for "DOMAIN-<rid>" rules
	Groups []string
}

// Verifier is who verified a Principal's name.
type Verifier string

const (
	// VerifiedLocal: this host verified the password of one of its own
	// accounts (the account store, PAM). The name is the bare local
	// account; a qualifier is accepted only when it names this host
	// (".\\alice", "HOST\\alice", "alice@host") and otherwise refused, so a
	// local password never becomes "CORP\\alice" on a host where NSS
	// resolves domain names (winbind, sssd).
	VerifiedLocal Verifier = ""
	// VerifiedDomain: the domain itself verified the name (winbind asking
	// a domain controller; a KDC of a trusted realm). Domain must be the
	// domain's canonical name as NSS qualifies its accounts; only that
	// qualified name is looked up, never the bare one.
	VerifiedDomain Verifier = "domain"
)

// String names the verifier for audit.
func (v Verifier) String() string {
	if v == VerifiedLocal {
		return "local"
	}
	return string(v)
}

// Secret is credential material. Formatting, JSON and text marshalling
// print "[redacted]", so a Principal that reaches a log line carries no
// ticket.
type Secret []byte

const redacted = "[redacted]"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// Account is a local account from the account database (NSS).
type Account struct {
	Username string
	UID      uint32
	GID      uint32
	Groups   []uint32 // supplementary groups, from the account database
	Home     string
	Shell    string
}

// Identity is an authenticated, authorized caller. Only this package can make
// a valid one.
type Identity struct {
	principal Principal
	account   Account
	scheme    Scheme
	admin     bool
	valid     bool
	version   string // the account database's version it was decided under
}

// AccountsVersion is the version of the account database the identity was
// decided under (Authorizer.AccountsVersion): when the database's version
// is another now, the identity may be stale and is decided again.
func (id *Identity) AccountsVersion() string {
	if !id.Valid() {
		return ""
	}
	return id.version
}

// Administrator reports whether the identity is an administrator of the
// host as the policy sees it: root (when allowed), the lab user, a member
// of an allowed group other than configs.RemoteUsersGroup, or a principal
// with a verified allowed SID other than Remote Management Users. Reading
// the service configuration needs it, as on Windows.
func (id *Identity) Administrator() bool { return id.Valid() && id.admin }

// Valid reports whether the identity came from a completed authentication.
func (id *Identity) Valid() bool { return id != nil && id.valid }

// Account returns the local account; it panics on an invalid identity.
func (id *Identity) Account() Account {
	if !id.Valid() {
		panic("authn: Account on an invalid Identity")
	}
	return id.account
}

// Principal returns the authenticated principal.
func (id *Identity) Principal() Principal { return id.principal }

// Scheme is the HTTP scheme the identity logged on with.
func (id *Identity) Scheme() Scheme { return id.scheme }

// User is the local user name ("" for an invalid identity).
func (id *Identity) User() string {
	if !id.Valid() {
		return ""
	}
	return id.account.Username
}

// Key identifies the owner of shells: two identities with the same Key may
// use each other's shells. It is the account's name and uid together: an
// account deleted and re-created under the same name (another uid) does
// not inherit the old account's shells, nor does another name for the
// same uid (issue 14.11).
func (id *Identity) Key() string {
	if !id.Valid() {
		return ""
	}
	return id.account.Username + "\x00" + strconv.FormatUint(uint64(id.account.UID), 10)
}

// Errors a mechanism or the authorizer returns. They are for logs and audit;
// clients only ever see 401 or Access Denied.
var (
	ErrBadCredentials  = errors.New("bad credentials")
	ErrUnknownAccount  = errors.New("unknown account")
	ErrNotAuthorized   = errors.New("account not in an allowed group")
	ErrRootRefused     = errors.New("root is refused (authorization.allow_root is false)")
	ErrMalformed       = errors.New("malformed authentication token")
	ErrUnsupported     = errors.New("unsupported authentication variant")
	ErrRateLimited     = errors.New("too many failed logons")
	ErrBackend         = errors.New("credential backend unavailable")
	ErrChannelBinding  = errors.New("channel binding mismatch")
	ErrContextComplete = errors.New("security context already complete")
)

// ConnInfo is what a mechanism may know of the connection it authenticates.
// The server fills one per request; every leg of a handshake gets it.
type ConnInfo struct {
	// Remote is the client's address, for rate limits and audit.
	Remote netip.Addr
	// TLS reports an HTTPS listener.
	TLS bool
	// ChannelBinding is the 16-byte MD5 of the gss_channel_bindings_struct
	// whose application data is the listener certificate's
	// tls-server-end-point (RFC 5929, RFC 5056); nil on plain HTTP.
	ChannelBinding []byte
}

// Context is a connection-bound, multi-leg security context (NTLM,
// Negotiate, Kerberos). The server keeps one per TCP connection.
type Context interface {
	// Step consumes the client's token and returns the token to send back
	// (nil when there is none). When done is true the context is complete:
	// Principal and Sealer are available and out (if any) goes on the 200.
	// ctx bounds any backend call the leg makes (winbind, a KDC); ci
	// describes the connection.
	Step(ctx context.Context, ci ConnInfo, in []byte) (out []byte, done bool, err error)
	// Principal is valid after completion.
	Principal() Principal
	// Sealer is the message-protection of a complete context, or nil.
	Sealer() Sealer
}

// Claimant is implemented by contexts that can say, after a failed logon,
// which name the client claimed to be ("" when it never got that far), so
// logon_failure records who was tried. The name is unverified: for audit
// only.
type Claimant interface {
	ClaimedName() string
}

// Sealer protects WinRM message bodies (MS-WSMV 2.2.9.1): NTLM sealing,
// Kerberos wrap. Implementations are not safe for concurrent use: the server
// serialises requests on one connection.
type Sealer interface {
	// Seal encrypts plaintext; sig is the signature / token header that goes
	// after the LE32 length, data the ciphertext that follows it.
	Seal(plain []byte) (sig, data []byte, err error)
	// Unseal verifies and decrypts one message.
	Unseal(sig, data []byte) ([]byte, error)
}

// InPlaceUnsealer is a Sealer that can also unseal into the buffer the
// message came in (NTLM's session, the Kerberos sealer): data is
// overwritten and the plaintext returned is a prefix of it (or, for a
// message laid out unlike any sender's, a new slice). The sealing decoder
// prefers it, so a sealed request costs no allocation of its size.
type InPlaceUnsealer interface {
	Sealer
	UnsealInPlace(sig, data []byte) ([]byte, error)
}
