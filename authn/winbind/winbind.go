// Package winbind verifies NTLM responses through Samba's winbindd, for
// Active Directory (or Samba domain) accounts whose NT hashes this host
// does not have. It drives ntlm_auth --helper-protocol=ntlm-server-1: one
// request is a block of "Key: value" lines ended by ".", answered the same
// way:
//
//	Username:: <base64>           Authenticated: Yes|No
//	NT-Domain:: <base64>          User-Session-Key: <hex>      (on success)
//	LANMAN-Challenge: <hex>       Authentication-Error: <text> (on failure)
//	NT-Response: <hex>            .
//	Request-User-Session-Key: Yes
//	.
//
// Helpers are kept in a small pool and reused only after a clean success:
// ntlm_auth answers some failures with an extra "." line, so a helper that
// reported anything else is discarded. The session key is only handed to
// callers allowed on winbindd's privileged pipe (root, or the
// winbindd_priv group).
package winbind

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/ntlm"
)

// DefaultPath is where Debian and most distributions install ntlm_auth.
const DefaultPath = "/usr/bin/ntlm_auth"

const (
	defaultTimeout  = 10 * time.Second
	defaultIdle     = 2
	defaultMaxProcs = 8
	idleLifetime    = time.Minute
	maxLine         = 4096
	maxLines        = 32
)

// Option configures a Verifier.
type Option func(*Verifier)

// WithTimeout bounds one verification, helper start included (default 10 s).
func WithTimeout(d time.Duration) Option { return func(v *Verifier) { v.timeout = d } }

// WithPool sets how many idle helpers are kept for reuse (default 2; 0
// starts one helper per verification).
func WithPool(n int) Option { return func(v *Verifier) { v.maxIdle = n } }

// WithMaxProcs bounds concurrent helper processes (default 8); further
// verifications wait for one, within their timeout.
func WithMaxProcs(n int) Option { return func(v *Verifier) { v.maxProcs = n } }

// WithArgs adds ntlm_auth arguments, e.g. "--configfile=/etc/samba/x.conf".
func WithArgs(args ...string) Option {
	return func(v *Verifier) { v.args = append(v.args, args...) }
}

// Verifier is an ntlm.Verifier backed by ntlm_auth. It is safe for
// concurrent use.
type Verifier struct {
	path     string
	args     []string
	timeout  time.Duration
	maxIdle  int
	maxProcs int

	slots chan struct{} // one token per running helper process
	idle  chan *helper  // helpers waiting for reuse (nil without a pool)
}

var _ ntlm.Verifier = (*Verifier)(nil)

// New returns a Verifier running the ntlm_auth at path (DefaultPath when
// empty). Nothing is started until the first verification.
func New(ntlmAuthPath string, opts ...Option) *Verifier {
	if ntlmAuthPath == "" {
		ntlmAuthPath = DefaultPath
	}
	v := &Verifier{path: ntlmAuthPath, timeout: defaultTimeout, maxIdle: defaultIdle, maxProcs: defaultMaxProcs}
	for _, o := range opts {
		o(v)
	}
	if v.maxProcs < 1 {
		v.maxProcs = 1
	}
	v.maxIdle = min(max(v.maxIdle, 0), v.maxProcs)
	v.slots = make(chan struct{}, v.maxProcs)
	if v.maxIdle > 0 {
		v.idle = make(chan *helper, v.maxIdle)
	}
	return v
}

// Close stops the idle helpers.
func (v *Verifier) Close() error {
	for {
		select {
		case h := <-v.idle:
			v.discard(h)
		default:
			return nil
		}
	}
}

func backend(format string, args ...any) error {
	return fmt.Errorf("winbind: "+format+": %w", append(args, authn.ErrBackend)...)
}

// Verify checks one NTLM response through winbindd.
func (v *Verifier) Verify(ctx context.Context, r ntlm.VerifyRequest) (ntlm.VerifyResult, error) {
	if len(r.NtResponse) == 24 {
		return ntlm.VerifyResult{}, fmt.Errorf("winbind: NTLMv1 refused: %w", authn.ErrUnsupported)
	}
	if len(r.NtResponse) < 48 {
		return ntlm.VerifyResult{}, fmt.Errorf("winbind: NtChallengeResponse of %d bytes: %w", len(r.NtResponse), authn.ErrMalformed)
	}
	if r.User == "" {
		return ntlm.VerifyResult{}, fmt.Errorf("winbind: empty user: %w", authn.ErrBadCredentials)
	}
	if v.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, v.timeout)
		defer cancel()
	}
	req := request(r)
	for attempt := 0; ; attempt++ {
		h, reused, err := v.get(ctx)
		if err != nil {
			return ntlm.VerifyResult{}, err
		}
		resp, clean, err := h.exchange(ctx, req)
		if err != nil {
			v.discard(h)
			// An idle helper may have died meanwhile (winbindd restart):
			// retry once with a fresh one if it answered nothing.
			if reused && attempt == 0 && errors.Is(err, errNoAnswer) && ctx.Err() == nil {
				continue
			}
			return ntlm.VerifyResult{}, err
		}
		res, err := interpret(resp)
		if err == nil && clean {
			v.put(h)
		} else {
			v.discard(h)
		}
		return res, err
	}
}

// request renders one ntlm-server-1 request. Names go base64-encoded, so
// no client-supplied byte can break the line protocol.
func request(r ntlm.VerifyRequest) []byte {
	var b strings.Builder
	b.WriteString("Username:: " + base64.StdEncoding.EncodeToString([]byte(r.User)) + "\n")
	if r.Domain != "" {
		b.WriteString("NT-Domain:: " + base64.StdEncoding.EncodeToString([]byte(r.Domain)) + "\n")
	}
	b.WriteString("LANMAN-Challenge: " + hex.EncodeToString(r.ServerChallenge[:]) + "\n")
	b.WriteString("NT-Response: " + hex.EncodeToString(r.NtResponse) + "\n")
	b.WriteString("Request-User-Session-Key: Yes\n.\n")
	return []byte(b.String())
}

// response is one parsed answer.
type response struct {
	authenticated string // "Yes", "No" or ""
	sessionKey    string
	authError     string
	errors        []string
}

// interpret maps an answer to a result or an authn error.
func interpret(resp response) (ntlm.VerifyResult, error) {
	switch {
	case resp.authenticated == "Yes":
		key, err := hex.DecodeString(resp.sessionKey)
		if err != nil || len(key) != 16 {
			return ntlm.VerifyResult{}, backend("authenticated, but no user session key (is this process allowed on winbindd's privileged pipe, e.g. in group winbindd_priv?)")
		}
		return ntlm.VerifyResult{SessionBaseKey: key}, nil
	case resp.authenticated == "No":
		return ntlm.VerifyResult{}, classify(resp.authError)
	case len(resp.errors) > 0:
		return ntlm.VerifyResult{}, backend("ntlm_auth: %s", strings.Join(resp.errors, "; "))
	default:
		return ntlm.VerifyResult{}, backend("ntlm_auth gave no verdict")
	}
}

// classify maps ntlm_auth's Authentication-Error text to an authn error,
// keeping the text for the log.
func classify(msg string) error {
	m := strings.ToUpper(msg)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(m, s) {
				return true
			}
		}
		return false
	}
	switch {
	// ntlm_auth prints either NT_STATUS names or Samba's descriptions of
	// them ("The specified account does not exist.").
	case has("NO_SUCH_USER", "NO SUCH USER", "NONE_MAPPED", "ACCOUNT DOES NOT EXIST"):
		return fmt.Errorf("winbind: %s: %w", msg, authn.ErrUnknownAccount)
	case has("WINBIND", "WBC_ERR", "NO_LOGON_SERVERS", "NO LOGON SERVERS", "DOMAIN_CONTROLLER_NOT_FOUND",
		"CANT_ACCESS_DOMAIN_INFO", "TRUSTED_RELATIONSHIP_FAILURE", "NO_TRUST", "IO_TIMEOUT", "PIPE_", "NETLOGON",
		"CONNECTION_", "ACCESS_DENIED", "INTERNAL_ERROR", "ACCESS IS DENIED"):
		return backend("%s", msg)
	case has("WRONG_PASSWORD", "WRONG PASSWORD", "LOGON_FAILURE", "LOGON FAILURE",
		"ACCOUNT_DISABLED", "ACCOUNT_LOCKED_OUT", "ACCOUNT_EXPIRED", "PASSWORD_EXPIRED",
		"PASSWORD_MUST_CHANGE", "ACCOUNT_RESTRICTION", "INVALID_LOGON_HOURS", "INVALID_WORKSTATION",
		"PASSWORD IS NOT CORRECT", "LOGON IS INVALID", "LOCKED", "DISABLED", "HAS EXPIRED", "MUST BE CHANGED"):
		return fmt.Errorf("winbind: %s: %w", msg, authn.ErrBadCredentials)
	case msg == "":
		return fmt.Errorf("winbind: authentication failed: %w", authn.ErrBadCredentials)
	default:
		return fmt.Errorf("winbind: %s: %w", msg, authn.ErrBadCredentials)
	}
}

// --- helper processes ------------------------------------------------------

type helper struct {
	cmd     *exec.Cmd
	in      *os.File
	out     *os.File
	r       *bufio.Reader
	stderr  *limitedBuffer
	started time.Time
	used    time.Time
	exited  chan struct{}
}

var errNoAnswer = errors.New("winbind: helper gave no answer")

// get returns an idle helper or starts one. When every process slot is
// taken it waits for a slot or for a helper to come back idle.
func (v *Verifier) get(ctx context.Context) (*helper, bool, error) {
	for {
		select {
		case h := <-v.idle:
			if h, ok := v.fresh(h); ok {
				return h, true, nil
			}
			continue
		default:
		}
		select {
		case h := <-v.idle:
			if h, ok := v.fresh(h); ok {
				return h, true, nil
			}
		case v.slots <- struct{}{}:
			h, err := v.start()
			if err != nil {
				<-v.slots
				return nil, false, err
			}
			return h, false, nil
		case <-ctx.Done():
			return nil, false, backend("no free ntlm_auth helper: %v", ctx.Err())
		}
	}
}

// fresh discards an idle helper that has lived too long or exited.
func (v *Verifier) fresh(h *helper) (*helper, bool) {
	if time.Since(h.used) < idleLifetime && !h.dead() {
		return h, true
	}
	v.discard(h)
	return nil, false
}

func (v *Verifier) put(h *helper) {
	h.used = time.Now()
	if v.idle != nil {
		select {
		case v.idle <- h:
			return
		default:
		}
	}
	v.discard(h)
}

func (v *Verifier) discard(h *helper) {
	h.close()
	<-v.slots
}

func (v *Verifier) start() (*helper, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, backend("pipe: %v", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, backend("pipe: %v", err)
	}
	args := append([]string{"--helper-protocol=ntlm-server-1"}, v.args...)
	cmd := exec.Command(v.path, args...)
	cmd.Stdin, cmd.Stdout = inR, outW
	stderr := &limitedBuffer{max: 4096}
	cmd.Stderr = stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// Its own process group, so that a wrapper's children die with it;
	// stop waiting for stderr shortly after the process has gone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 200 * time.Millisecond
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, backend("starting %s: %v", v.path, err)
	}
	h := &helper{cmd: cmd, in: inW, out: outR, r: bufio.NewReaderSize(outR, maxLine), stderr: stderr,
		started: time.Now(), used: time.Now(), exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(h.exited)
	}()
	return h, nil
}

func (h *helper) dead() bool {
	select {
	case <-h.exited:
		return true
	default:
		return false
	}
}

func (h *helper) close() {
	h.in.Close()
	h.out.Close()
	if !h.dead() {
		syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-h.exited
}

// exchange sends one request and reads the answer up to the "." line.
// clean reports whether the helper can be reused.
func (h *helper) exchange(ctx context.Context, req []byte) (resp response, clean bool, err error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultTimeout)
	}
	h.in.SetWriteDeadline(deadline)
	h.out.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() {
		h.out.SetReadDeadline(time.Now())
		h.in.SetWriteDeadline(time.Now())
	})
	defer stop()
	if _, err := h.in.Write(req); err != nil {
		return resp, false, h.fail(ctx, err, true)
	}
	for n := 0; ; n++ {
		if n == maxLines {
			return resp, false, backend("ntlm_auth answered more than %d lines", maxLines)
		}
		line, err := h.r.ReadSlice('\n')
		if err != nil {
			return resp, false, h.fail(ctx, err, n == 0)
		}
		l := strings.TrimRight(string(line), "\r\n")
		if l == "." {
			break
		}
		k, val, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch strings.ToLower(strings.TrimSuffix(k, ":")) {
		case "authenticated":
			resp.authenticated = val
		case "user-session-key":
			resp.sessionKey = val
		case "authentication-error":
			resp.authError = val
		case "error":
			resp.errors = append(resp.errors, val)
		}
	}
	clean = resp.authenticated == "Yes" && len(resp.errors) == 0
	return resp, clean, nil
}

// fail turns an I/O error into a log-able backend error.
func (h *helper) fail(ctx context.Context, err error, nothingRead bool) error {
	switch {
	case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
		return backend("ntlm_auth did not answer in time (%v)", time.Since(h.started).Round(time.Millisecond))
	case errors.Is(err, bufio.ErrBufferFull):
		return backend("ntlm_auth answered a line over %d bytes", maxLine)
	}
	exited := errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) || strings.Contains(err.Error(), "broken pipe")
	if exited {
		// Let the process finish so that its stderr is complete.
		select {
		case <-h.exited:
		case <-time.After(time.Second):
		}
	}
	msg := strings.TrimSpace(h.stderr.String())
	if msg != "" {
		msg = ": " + msg
	}
	if nothingRead && exited {
		return fmt.Errorf("%w (ntlm_auth exited%s): %w", errNoAnswer, msg, authn.ErrBackend)
	}
	return backend("ntlm_auth: %v%s", err, msg)
}

// limitedBuffer keeps the first max bytes of a helper's stderr.
type limitedBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
