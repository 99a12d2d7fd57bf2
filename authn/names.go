package authn

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameBytes bounds a principal or account name anywhere in authn. Longer
// names are refused before any lookup.
const MaxNameBytes = 256

// MapName reduces a principal name to the local account name it stands for,
// or "" when it cannot name a local account.
//
//	"DOMAIN\\user", ".\\user" -> "user"  (NetBIOS form; the domain is dropped)
//	"user@REALM"              -> "user"  (UPN / Kerberos form)
//	"user"                    -> "user"
//
// domain is the domain a mechanism carried separately (NTLM); it never
// changes the result, because a qualifier in name already says the same, and
// every form resolves to one local account through NSS.
//
// The user part is returned as spelled (case is kept: the authorizer tries
// the exact spelling, then lower case). "" is returned for names that cannot
// be a local account: empty parts, more than one qualifier ("a\\b\\c",
// "D\\u@R"), Kerberos principals with an instance ("HTTP/host@R"), control
// characters or invisible ones (format, line separators, private use),
// surrounding spaces, ':' (the passwd field separator), a leading '-' (option
// injection into any tool that might later see it), names that are only
// dots, invalid UTF-8, or more than MaxNameBytes bytes.
//
// Mapping is not authorization: "CORP\\root" maps to "root", and the
// Authorizer refuses uid 0. Every domain maps onto the same local namespace,
// so deploy it only where every accepted domain's "alice" is the host's
// "alice" (see Authorizer for the lookup order that prefers NSS's qualified
// names).
func MapName(name, domain string) string {
	_ = domain
	if name == "" || len(name) > MaxNameBytes || !utf8.ValidString(name) {
		return ""
	}
	user := name
	if i := strings.IndexByte(name, '\\'); i >= 0 {
		if i == 0 {
			return "" // "\\user": empty domain
		}
		user = name[i+1:]
	} else if i := strings.LastIndexByte(name, '@'); i >= 0 {
		if i == len(name)-1 {
			return "" // "user@": empty realm
		}
		user = name[:i]
	}
	if !validLocalName(user) {
		return ""
	}
	return user
}

// validLocalName reports whether s may be looked up as a local account.
func validLocalName(s string) bool {
	if s == "" || len(s) > MaxNameBytes || !utf8.ValidString(s) {
		return false
	}
	if s[0] == '-' || strings.Trim(s, ".") == "" {
		return false
	}
	if strings.TrimSpace(s) != s {
		return false
	}
	for _, r := range s {
		switch {
		case r == '\\', r == '@', r == '/', r == ':':
			return false
		case unicode.IsControl(r), r == utf8.RuneError,
			unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Co):
			// control, format (zero-width, bidi), line/paragraph
			// separators, private use: invisible or spoofable
			return false
		}
	}
	return true
}

// foldName is the case-insensitive key for a user name (Windows compares
// account names without regard to case).
func foldName(s string) string { return strings.ToLower(s) }

// SplitName separates a principal name into its user part and its
// qualifier: "D\\u" -> ("u", "D"), "u@R" -> ("u", "R"), "u" -> ("u", "").
// ok is false when the name cannot be a local account (see MapName).
func SplitName(name string) (user, qualifier string, ok bool) {
	user = MapName(name, "")
	if user == "" {
		return "", "", false
	}
	if i := strings.IndexByte(name, '\\'); i >= 0 {
		return user, name[:i], true
	}
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		return user, name[i+1:], true
	}
	return user, "", true
}

// MapPrincipal is the one rule, for every mechanism, from a verified name to
// the account names NSS is asked for, in order:
//
//   - A qualifier that names this host (".\\alice", "HOST\\alice",
//     "alice@host", or none) means the local account: "alice", then its
//     lower-case form.
//   - Any other qualifier is honoured only when the domain itself verified
//     the name (p.Verifier == VerifiedDomain): then "<p.Domain>\\alice"
//     (or "alice@<p.Domain>") with the domain's canonical name, never the
//     bare local "alice".
//   - A locally verified name (account store, PAM) with a foreign qualifier
//     is refused (ErrUnknownAccount): the local password proved "alice", not
//     "CORP\\alice".
//
// The qualifier is the one in p.Name, else p.Domain (NTLM carries it apart).
func MapPrincipal(p Principal, host *HostNames) ([]string, error) {
	user, qual, ok := SplitName(p.Name)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a local account name", ErrUnknownAccount, p.Name)
	}
	if qual == "" {
		qual = p.Domain
	}
	if !host.IsLocal(qual) {
		if p.Verifier != VerifiedDomain {
			return nil, fmt.Errorf("%w: %q: qualifier %q is not this host, and the name was verified locally (%s), not by that domain", ErrUnknownAccount, p.Name, qual, p.Mechanism)
		}
		domain := p.Domain
		if domain == "" {
			domain = qual
		}
		// Both spellings NSS modules use for a domain's accounts
		// (winbind: D\u; sssd: either), both with the verified domain.
		var names []string
		for _, n := range []string{domain + `\` + user, user + "@" + domain} {
			if validQualifiedName(n) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("%w: %q: domain %q cannot qualify an account name", ErrUnknownAccount, p.Name, domain)
		}
		return names, nil
	}
	names := []string{user}
	if l := strings.ToLower(user); l != user {
		names = append(names, l)
	}
	return names, nil
}
