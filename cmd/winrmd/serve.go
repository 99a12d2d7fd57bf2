package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/accounts"
	"github.com/winrmd/winrmd/authn/basic"
	"github.com/winrmd/winrmd/authn/ntlm"
	"github.com/winrmd/winrmd/authn/spnego"
	"github.com/winrmd/winrmd/authn/winbind"
	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/obs"
	"github.com/winrmd/winrmd/server"
	"github.com/winrmd/winrmd/session"
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

// readyInfo is what --ready-file receives.
type readyInfo struct {
	PID       int            `json:"pid"`
	Listeners []server.Bound `json:"listeners"`
	Metrics   string         `json:"metrics,omitempty"`
}

// swapAuthorizer lets SIGHUP replace the authorization policy in place.
type swapAuthorizer struct {
	p atomic.Pointer[authn.Authorizer]
}

func (s *swapAuthorizer) Authorize(p authn.Principal, sch authn.Scheme) (*authn.Identity, error) {
	return s.p.Load().Authorize(p, sch)
}

func buildAuthorizer(cfg *configs.Config, lab bool) (*authn.Authorizer, error) {
	return authn.NewAuthorizer(authn.AuthorizerConfig{
		AllowedGroups: cfg.Authorization.AllowedGroups,
		AllowRoot:     cfg.Authorization.AllowRoot,
		Lab:           lab,
	})
}

// serve runs the daemon until SIGTERM/SIGINT. lab is unprivileged lab mode
// (serve --lab, or winrmd lab run by an ordinary user). started, when
// non-nil, is called with the ready info (the lab command prints it).
func serve(cfg *configs.Config, cfgPath, readyFile string, lab bool, started func(readyInfo)) error {
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
	limiter := authn.NewRateLimiter(authn.RateLimitConfig{})

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
	var contexts server.ContextFactory
	if cfg.Service.Auth.Negotiate {
		chain := &ntlm.Chain{}
		if store != nil {
			chain.Store, chain.Local = store, ntlm.NewNTHashVerifier(store)
		}
		if cfg.Accounts.Winbind.Enabled {
			chain.Domain = winbind.New(cfg.Accounts.Winbind.NTLMAuthPath)
		}
		if chain.Local == nil && chain.Domain == nil {
			log.Warn("negotiate is enabled but no NT hash source exists (accounts.store_file or accounts.winbind); NTLM logons will fail")
		}
		verifier := &ntlm.RateLimited{V: chain, Limiter: limiter}
		contexts = func(sch authn.Scheme) authn.Context {
			mk := func() *ntlm.Acceptor {
				return ntlm.NewAcceptor(ntlm.Config{
					Verifier: verifier, NetBIOSComputer: names.NetBIOSName, NetBIOSDomain: names.Domain,
					DNSComputer: names.DNSName, DNSDomain: names.DNSName,
					CBTLevel: strings.ToLower(cfg.Service.Auth.CBTHardeningLevel),
				})
			}
			switch sch {
			case authn.SchemeNegotiate:
				return spnego.NewAcceptor(spnego.Config{NTLM: mk})
			case authn.SchemeNTLM:
				return spnego.NewNTLMSchemeAcceptor(spnego.Config{NTLM: mk})
			}
			return nil // Kerberos arrives with its own issue
		}
	}

	spawner, err := isolation.NewSpawner(isolation.SpawnerOptions{Lab: lab, AllowRoot: cfg.Authorization.AllowRoot, Logger: log.Named("isolation")})
	if err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	sessions := session.NewManager(session.Config{
		Winrs:                cfg.Winrs,
		MaxTimeout:           time.Duration(cfg.Service.MaxTimeoutMS) * time.Millisecond,
		MaxOperationsPerUser: cfg.Service.MaxConcurrentOperationsPerUser,
		MaxEnvelopeSizeKB:    cfg.Service.MaxEnvelopeSizeKB,
		Spawner:              spawner,
		Log:                  log,
		Audit:                audit,
		Metrics:              metrics,
	})
	srv, err := server.New(server.Deps{
		Config: cfg, Log: log, Audit: audit, Metrics: metrics, Sessions: sessions,
		Basic: basicAuth, Contexts: contexts, Authorizer: auth, Machine: names.DNSName,
		Version: "OS: 0.0.0 SP: 0.0 Stack: 3.0",
	})
	if err != nil {
		return err
	}
	bound, err := srv.Start()
	if err != nil {
		sessions.Shutdown(context.Background())
		return err
	}
	info := readyInfo{PID: os.Getpid(), Listeners: bound}
	var msrv *http.Server
	if cfg.Metrics.Address != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Address)
		if err != nil {
			srv.Close()
			sessions.Shutdown(context.Background())
			return fmt.Errorf("metrics.address: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go msrv.Serve(ln)
		info.Metrics = ln.Addr().String()
	}
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

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			reload(cfgPath, lab, log, level, auth, srv)
			continue
		}
		log.Info("shutting down", zap.String("signal", sig.String()))
		break
	}
	signal.Stop(sigs)
	// Refuse new shells, let in-flight requests finish, then end every worker.
	srv.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	srv.Shutdown(ctx)
	cancel()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	sessions.Shutdown(ctx)
	cancel()
	if msrv != nil {
		msrv.Close()
	}
	log.Info("stopped")
	return nil
}

// reload applies SIGHUP: certificates, authorization, log level, filters and
// auth switches. Listeners, quotas and account sources need a restart.
func reload(path string, lab bool, log *zap.Logger, level *zap.AtomicLevel, auth *swapAuthorizer, srv *server.Server) {
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
	if a, err := buildAuthorizer(cfg, lab); err != nil {
		log.Error("SIGHUP: authorization rejected; keeping the running one", zap.Error(err))
	} else {
		auth.p.Store(a)
	}
	if err := srv.Reload(cfg); err != nil {
		log.Error("SIGHUP: service settings rejected", zap.Error(err))
	}
	if err := srv.ReloadCertificates(); err != nil {
		log.Error("SIGHUP: certificate reload failed; keeping the old certificate", zap.Error(err))
	}
	log.Info("SIGHUP: configuration reloaded")
}
