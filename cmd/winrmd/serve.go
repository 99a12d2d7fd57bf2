package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/accounts"
	"github.com/winrmd/winrmd/authn/basic"
	"github.com/winrmd/winrmd/authn/credssp"
	"github.com/winrmd/winrmd/authn/kerberos"
	"github.com/winrmd/winrmd/authn/ntlm"
	"github.com/winrmd/winrmd/authn/spnego"
	"github.com/winrmd/winrmd/authn/winbind"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/server"
	"github.com/winrmd/winrmd/server/procs"
	"github.com/winrmd/winrmd/session"
	"github.com/winrmd/winrmd/session/obs"
)

func serveCmd(args []string, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	path := fs.String("config", "/etc/winrmd/winrmd.yaml", "configuration file")
	ready := fs.String("ready-file", "", "write the bound addresses (JSON) here once serving")
	lab := fs.Bool("lab", false, "unprivileged lab mode: every shell runs as the daemon's own user and the account store decides who may log in")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := configs.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "winrmd: %v\n", err)
		return 1
	}
	if err := serve(cfg, *path, *ready, *lab, nil); err != nil {
		fmt.Fprintf(stderr, "winrmd: %v\n", err)
		return 1
	}
	return 0
}

// swapAuthorizer lets SIGHUP replace the authorization policy in place.
type swapAuthorizer struct {
	p atomic.Pointer[authn.Authorizer]
}

func (s *swapAuthorizer) Authorize(p authn.Principal, sch authn.Scheme) (*authn.Identity, error) {
	return s.p.Load().Authorize(p, sch)
}

func (s *swapAuthorizer) AuthorizeUncached(p authn.Principal, sch authn.Scheme) (*authn.Identity, error) {
	return s.p.Load().AuthorizeUncached(p, sch)
}

func (s *swapAuthorizer) ServiceAccount(name string) (authn.Account, error) {
	return s.p.Load().ServiceAccount(name)
}

func (s *swapAuthorizer) AccountsVersion() string { return s.p.Load().AccountsVersion() }

// hostNameSet is this host's names for service binding and local
// qualifiers (authn.HostNames), the same for every mechanism.
func hostNameSet(cfg *configs.Config) *authn.HostNames {
	n := cfg.Host.Resolved()
	return authn.NewHostNames(append([]string{n.DNSName, n.NetBIOSName}, cfg.Host.Names...)...)
}

func buildAuthorizer(cfg *configs.Config, lab bool) (*authn.Authorizer, error) {
	return authn.NewAuthorizer(authn.AuthorizerConfig{
		AllowedGroups: cfg.Authorization.AllowedGroups,
		AllowedSIDs:   cfg.Authorization.AllowedSIDs,
		AllowRoot:     cfg.Authorization.AllowRoot,
		Lab:           lab,
		HostNames:     hostNameSet(cfg),
		Accounts:      sidecarAccounts(cfg),
	})
}

// serve runs the daemon until SIGTERM/SIGINT. lab is unprivileged lab mode
// (serve --lab, or winrmd lab run by an ordinary user). started, when
// non-nil, is called with the ready info (the lab command prints it).
func serve(cfg *configs.Config, cfgPath, readyFile string, lab bool, started func(server.Ready)) error {
	log, level, err := obs.NewLogger(cfg.Logging.Level, cfg.Logging.Format)
	if err != nil {
		return err
	}
	defer log.Sync()
	audit, err := obs.NewAudit(cfg.Logging.AuditFile, log)
	if err != nil {
		return err
	}
	defer audit.Close()
	metrics := obs.NewMetrics()
	announceTrace(log, cfg)
	if lab {
		log.Warn("running unprivileged (lab mode): every shell runs as the daemon's own user; the account store decides who may log in")
	}
	for _, w := range buildWarnings(cfg) {
		log.Warn(w)
	}

	var store *accounts.Store
	if cfg.Accounts.StoreFile != "" {
		store, err = accounts.Open(cfg.Accounts.StoreFile)
		if err != nil {
			return fmt.Errorf("accounts.store_file: %w", err)
		}
	}
	limiter := authn.NewRateLimiter(authn.RateLimitConfig{Exempt: cfg.Accounts.LockoutExempt})

	auth := &swapAuthorizer{}
	a, err := buildAuthorizer(cfg, lab)
	if err != nil {
		return fmt.Errorf("authorization: %w", err)
	}
	auth.p.Store(a)

	var basicAuth server.BasicAuthenticator
	if cfg.Service.Auth.Basic {
		basicAuth = basic.New(basic.Config{Store: store, PAMService: cfg.Accounts.PAMService, Limiter: limiter})
	}

	names := cfg.Host.Resolved()
	hosts := hostNameSet(cfg)
	for _, w := range cfg.UnservedSchemes() {
		log.Warn("configuration claims a scheme that is not served", zap.String("reason", w))
	}
	krb, err := buildKerberos(cfg, log)
	if err != nil {
		return err
	}
	// Every context gets the connection (address, TLS, channel binding)
	// with each Step (authn.ConnInfo); the factory only picks mechanisms.
	var mkNTLM func() *ntlm.Acceptor
	var domainPasswords ntlm.Verifier // winbind: CredSSP's delegated passwords of domain accounts
	if cfg.Service.Auth.Negotiate {
		chain := &ntlm.Chain{Hosts: hosts}
		if store != nil {
			chain.Store, chain.Local = store, ntlm.NewNTHashVerifier(store)
		}
		if cfg.Accounts.Winbind.Enabled {
			chain.Domain = winbind.New(cfg.Accounts.Winbind.NTLMAuthPath)
			domainPasswords = chain.Domain
		}
		if chain.Local == nil && chain.Domain == nil {
			log.Warn("negotiate is enabled but no NT hash source exists (accounts.store_file or accounts.winbind); NTLM logons will fail")
		}
		verifier := &ntlm.RateLimited{V: chain, Limiter: limiter}
		mkNTLM = func() *ntlm.Acceptor {
			return ntlm.NewAcceptor(ntlm.Config{
				Verifier: verifier, NetBIOSComputer: names.NetBIOSName, NetBIOSDomain: names.Domain,
				DNSComputer: names.DNSName, DNSDomain: names.DNSName,
				CBTLevel: strings.ToLower(cfg.Service.Auth.CBTHardeningLevel), Hosts: hosts,
			})
		}
	}
	var mkKrb func() authn.Context
	if krb != nil {
		mkKrb = func() authn.Context { return kerberos.NewAcceptor(krb) }
	}
	var credsspCert *tls.Certificate
	var credsspPasswords *credssp.PasswordCheck
	if cfg.Service.Auth.CredSSP {
		var certFile, keyFile string
		for _, l := range cfg.Listeners {
			if l.Transport == "https" {
				certFile, keyFile = l.CertFile, l.KeyFile
				break
			}
		}
		if credsspCert, err = credssp.InnerCertificate(certFile, keyFile); err != nil {
			return fmt.Errorf("service.auth.credssp: %w", err)
		}
		credsspPasswords = &credssp.PasswordCheck{
			Local:           basic.New(basic.Config{Store: store, PAMService: cfg.Accounts.PAMService, Limiter: limiter}),
			Domain:          domainPasswords,
			Limiter:         limiter,
			NetBIOSComputer: names.NetBIOSName, NetBIOSDomain: names.Domain,
		}
		log.Warn("CredSSP is enabled: clients hand this host their passwords (see README, CredSSP)")
		if err := credssp.NoCoreDumps(); err != nil {
			return fmt.Errorf("service.auth.credssp: %w", err)
		}
	}
	// CredSSP's second hop: with Kerberos configured, the delegated
	// password becomes a TGT for the shell (kinit in the daemon, the
	// password in no argv, environment or file); without it, nothing.
	var secondHop func(authn.Principal, string) *authn.Secret
	if credsspCert != nil && krb != nil {
		secondHop = func(p authn.Principal, password string) *authn.Secret {
			user, realm := kerberos.SecondHopPrincipal(p, krb.Realm)
			cc, err := kerberos.PasswordTGT(cfg.Kerberos.Krb5Conf, realm, user, password)
			if err != nil {
				log.Info("CredSSP second hop: no TGT for the shell", zap.String(obs.FUser, user+"@"+realm), zap.Error(err))
				return nil
			}
			return cc
		}
	}
	var contexts server.ContextFactory
	if mkNTLM != nil || krb != nil {
		contexts = func(sch authn.Scheme) authn.Context {
			switch {
			case sch == authn.SchemeCredSSP && credsspCert != nil:
				// The inner context: SPNEGO with NTLM (and Kerberos when
				// configured); the acceptor steps it without channel
				// binding (CredSSP binds the inner TLS key instead).
				a, err := credssp.New(credssp.Config{
					Certificate: credsspCert,
					Inner:       func() authn.Context { return spnego.NewAcceptor(spnego.Config{NTLM: mkNTLM, Kerberos: mkKrb}) },
					Verify:      credsspPasswords.Verify,
					SecondHop:   secondHop,
				})
				if err != nil {
					log.Error("credssp", zap.Error(err))
					return nil
				}
				return a
			case sch == authn.SchemeNegotiate && cfg.Service.Auth.Negotiate:
				return spnego.NewAcceptor(spnego.Config{NTLM: mkNTLM, Kerberos: mkKrb})
			case sch == authn.SchemeNTLM && mkNTLM != nil:
				return spnego.NewNTLMSchemeAcceptor(spnego.Config{NTLM: mkNTLM})
			case sch == authn.SchemeKerberos && mkKrb != nil:
				// Raw krb5 tokens or SPNEGO offering Kerberos; never NTLM.
				return spnego.NewAcceptor(spnego.Config{Kerberos: mkKrb})
			}
			return nil
		}
	}

	if err := isolation.SweepCCaches(); err != nil {
		log.Warn("removing credential caches of earlier runs", zap.Error(err))
	}
	budget := isolation.NewOutputBudget(int64(cfg.Winrs.MaxOutputBufferMB)<<20, int64(cfg.Winrs.MaxOutputBufferPerUserMB)<<20)
	metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "winrmd_output_buffered_bytes",
		Help: "Command output the daemon may hold undelivered: reserved in the output budget (winrs.max_output_buffer_mb)."},
		func() float64 { total, _ := budget.Used(0); return float64(total) }))
	spawner, err := isolation.NewSpawner(isolation.SpawnerOptions{Lab: lab, AllowRoot: cfg.Authorization.AllowRoot, Logger: obs.Slog(log), Sidecar: cfg.Sidecar.Target,
		Watchdog: true, OutputBudget: budget,
		PrestartedWorkers: cfg.Winrs.PrestartedWorkers, PrestartNewPrivileges: cfg.Winrs.AllowNewPrivileges})
	if err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	if ps, ok := spawner.(interface{ PoolStats() isolation.PoolStats }); ok {
		metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "winrmd_prestarted_workers_idle",
			Help: "Pre-started shell workers waiting for a shell (winrs.prestarted_workers)."},
			func() float64 { return float64(ps.PoolStats().Idle) }))
		for _, src := range []string{"prestarted", "cold"} {
			metrics.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "winrmd_worker_starts_total",
				Help: "Shell workers by how they were started: taken from the pre-started pool, or started by the Create itself.", ConstLabels: prometheus.Labels{"source": src}},
				func() float64 {
					st := ps.PoolStats()
					if src == "prestarted" {
						return float64(st.Taken)
					}
					return float64(st.Cold)
				}))
		}
	}
	sessions := session.NewManager(session.Config{
		Limits:            session.LimitsFor(cfg),
		Winrs:             cfg.Winrs,
		MaxEnvelopeSizeKB: cfg.Service.MaxEnvelopeSizeKB,
		Service:           cfg.Service,
		Spawner:           spawner,
		PowerShell:        cfg.PowerShell,
		ServiceAccount:    auth.ServiceAccount,
		Log:               log,
		Audit:             audit,
		Metrics:           metrics,
	})
	srv, err := server.New(server.Deps{
		Config: cfg, Log: log, Audit: audit, Metrics: metrics, Sessions: sessions,
		Basic: basicAuth, Contexts: contexts, Kerberos: krb != nil, Authorizer: auth, Limiter: limiter, Machine: names.DNSName,
		Version: "OS: 0.0.0 SP: 0.0 Stack: 3.0",
	})
	if err != nil {
		_ = spawner.Close()
		return err
	}
	bound, err := srv.Start()
	if err != nil {
		sessions.Shutdown(context.Background())
		_ = spawner.Close()
		return err
	}
	info := server.Ready{PID: os.Getpid(), Listeners: bound}
	var msrv *http.Server
	if cfg.Metrics.Address != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Address)
		if err != nil {
			srv.Close()
			sessions.Shutdown(context.Background())
			_ = spawner.Close()
			return fmt.Errorf("metrics.address: %w", err)
		}
		msrv = serveMetrics(ln, metrics.Registry)
		info.Metrics = ln.Addr().String()
	}
	// The signals are ours before the ready file says the daemon serves: a
	// SIGTERM sent the moment it appears (a supervisor, a test) is a clean
	// shutdown, not the default action's death.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if readyFile != "" {
		b, _ := json.Marshal(info)
		if err := writeAtomic(readyFile, b, 0o644); err != nil {
			log.Error("writing ready file", zap.Error(err))
		}
	}
	log.Info("winrmd serving", zap.String("version", Version), zap.Any("listeners", bound), zap.String("metrics", info.Metrics))
	if started != nil {
		started(info)
	}

	stopProcs := governProcs(cfg, log, metrics)
	relaxSysmon(log)
	defer stopProcs()

	for sig := range sigs {
		if sig == syscall.SIGHUP {
			reload(cfgPath, lab, log, level, auth, srv, sessions)
			continue
		}
		log.Info("shutting down", zap.String("signal", sig.String()))
		break
	}
	signal.Stop(sigs)
	// Refuse new shells, let in-flight requests finish, then end every worker.
	srv.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), requestsGrace)
	srv.Shutdown(ctx)
	cancel()
	ctx, cancel = context.WithTimeout(context.Background(), shellsGrace)
	sessions.Shutdown(ctx)
	cancel()
	if err := spawner.Close(); err != nil {
		log.Warn("removing the shells' cgroup parents", zap.Error(err))
	}
	if msrv != nil {
		msrv.Close()
	}
	log.Info("stopped")
	return nil
}

// The stop's two bounds (SIGTERM, SIGINT): in-flight requests get
// requestsGrace to finish (srv.Shutdown), then the shells shellsGrace
// (sessions.Shutdown). systemd's TimeoutStopSec (30 s in
// deploy/winrmd.service) is above their sum.
const (
	requestsGrace = 10 * time.Second
	shellsGrace   = 10 * time.Second
)

// relaxSysmon gives the Go runtime's sysmon thread procs.SysmonSlack of
// timer slack: fewer wake-ups taking a CPU from the users' commands (see
// procs.SysmonSlack). Without CAP_SYS_NICE (a lab daemon as a user) it
// stays as it is.
func relaxSysmon(log *zap.Logger) {
	tid, err := procs.RelaxSysmon(procs.SysmonSlack)
	if err != nil {
		log.Info("sysmon's timer slack unchanged", zap.Error(err))
		return
	}
	log.Debug("sysmon's timer slack", zap.Int("tid", tid), zap.Duration("slack", procs.SysmonSlack))
}

// governProcs starts the GOMAXPROCS governor (server/procs) unless the
// configuration turns it off, the environment sets GOMAXPROCS (the
// operator's choice stands), or the daemon may use one CPU only. It
// returns what stops it and gives back every P.
func governProcs(cfg *configs.Config, log *zap.Logger, metrics *obs.Metrics) (stop func()) {
	ceiling := runtime.GOMAXPROCS(0)
	metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "winrmd_gomaxprocs",
		Help: "The daemon's GOMAXPROCS: 1 while its load fits on one CPU, else the CPUs it may use (service.adaptive_procs)."},
		func() float64 { return float64(runtime.GOMAXPROCS(0)) }))
	_, set := os.LookupEnv("GOMAXPROCS")
	if !cfg.Service.AdaptiveProcs || set || ceiling <= 1 {
		log.Info("GOMAXPROCS fixed", zap.Int("procs", ceiling), zap.Bool("adaptive_procs", cfg.Service.AdaptiveProcs), zap.Bool("from_environment", set))
		return func() {}
	}
	changes := prometheus.NewCounter(prometheus.CounterOpts{Name: "winrmd_gomaxprocs_changes_total",
		Help: "How often the daemon's GOMAXPROCS was set (service.adaptive_procs), the first time to 1 at start included."})
	metrics.Registry.MustRegister(changes)
	gov := procs.New(procs.Config{Max: ceiling})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		gov.Run(ctx, func(n int) {
			changes.Inc()
			log.Debug("GOMAXPROCS", zap.Int("procs", n), zap.Int("max", ceiling))
		})
	}()
	return func() { cancel(); <-done }
}

// announceTrace says loudly that the wire trace is on: it puts every
// client's command lines into the log.
func announceTrace(log *zap.Logger, cfg *configs.Config) {
	if !cfg.Logging.TraceWire {
		return
	}
	if cfg.Logging.Level != "debug" {
		log.Warn("logging.trace_wire is on but logging.level is " + cfg.Logging.Level + ": nothing is traced until the level is debug")
		return
	}
	log.Warn("WIRE TRACE ON (logging.trace_wire): every request and response envelope is logged at debug level, command lines included; "+
		"authentication tokens, Basic values, stream contents, environment values and PSRP fragments are redacted",
		zap.Int("trace_wire_max_bytes", cfg.Logging.TraceWireMaxBytes))
}

// reload applies SIGHUP: certificates, authorization, log level, filters and
// auth switches. Listeners, quotas and account sources need a restart.
func reload(path string, lab bool, log *zap.Logger, level *zap.AtomicLevel, auth *swapAuthorizer, srv *server.Server, sessions *session.Manager) {
	if path == "" {
		log.Warn("SIGHUP: no configuration file to reload")
		return
	}
	cfg, err := configs.Load(path)
	if err != nil {
		log.Error("SIGHUP: configuration rejected; keeping the running one", zap.Error(err))
		return
	}
	if err := level.UnmarshalText([]byte(cfg.Logging.Level)); err != nil {
		log.Error("SIGHUP: logging.level", zap.Error(err))
	}
	announceTrace(log, cfg)
	if a, err := buildAuthorizer(cfg, lab); err != nil {
		log.Error("SIGHUP: authorization rejected; keeping the running one", zap.Error(err))
	} else {
		auth.p.Store(a)
	}
	if err := srv.Reload(cfg); err != nil {
		log.Error("SIGHUP: service settings rejected", zap.Error(err))
	} else {
		sessions.SetService(cfg.Service)
	}
	if err := srv.ReloadCertificates(); err != nil {
		log.Error("SIGHUP: certificate reload failed; keeping the old certificate", zap.Error(err))
	}
	log.Info("SIGHUP: configuration reloaded")
}

// buildKerberos loads the keytab and makes the acceptor configuration
// shared by every connection, or returns nil when Kerberos is off (neither
// scheme that carries it is enabled, or no keytab and none configured).
func buildKerberos(cfg *configs.Config, log *zap.Logger) (*kerberos.Config, error) {
	a := cfg.Service.Auth
	if !a.Kerberos && !a.Negotiate {
		return nil, nil
	}
	path := cfg.KerberosKeytab()
	if path == "" {
		log.Info("Kerberos is off: no kerberos.keytab configured and no " + configs.DefaultKeytab)
		return nil, nil
	}
	kt, err := kerberos.OpenKeytab(path)
	if err != nil {
		return nil, fmt.Errorf("kerberos.keytab: %w", err)
	}
	kc := &kerberos.Config{
		Keytab:            kt,
		ServicePrincipals: cfg.Kerberos.ServicePrincipals,
		Realm:             cfg.Kerberos.Realm,
		Realms:            cfg.Kerberos.Realms,
		MaxClockSkew:      time.Duration(cfg.Kerberos.MaxClockSkewS) * time.Second,
		Replay:            kerberos.NewReplayCache(0),
		CBTLevel:          strings.ToLower(a.CBTHardeningLevel),
	}
	if err := kc.Validate(); err != nil {
		return nil, fmt.Errorf("kerberos: %w", err)
	}
	if cd := cfg.Kerberos.ConstrainedDelegation; cd.Enabled {
		kc.Constrained = &kerberos.ConstrainedDelegation{Account: cd.Account, Realm: kc.Realm, Krb5Conf: cfg.Kerberos.Krb5Conf, Keytab: kt,
			Logf: log.Sugar().Warnf}
		// Loud at start: every shell without a forwarded TGT will hold
		// this account's TGT (README "Constrained delegation").
		log.Warn("Kerberos constrained delegation on: shells of logons without a forwarded TGT get an S4U2Proxy cache holding the service account's TGT",
			zap.String("account", cd.Account))
	}
	log.Info("Kerberos acceptor ready", zap.String("keytab", path), zap.Strings("principals", kt.Principals()),
		zap.String("realm", kc.Realm), zap.Strings("service_principals", kc.ServicePrincipals))
	return kc, nil
}
