package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/bundlestore"
	"github.com/rotaupdate/rota/internal/cli"
	"github.com/rotaupdate/rota/internal/metrics"
	"github.com/rotaupdate/rota/internal/portal"
	"github.com/rotaupdate/rota/internal/rollout"
	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// Timeouts of the HTTP server. There is no write timeout: a bundle
// download to a slow device may take hours, and each one is bounded by
// the device's own stall watchdog instead.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	readyTimeout      = 2 * time.Second
	sessionSweep      = 10 * time.Minute
)

// runServe runs the server until ctx is done, then shuts it down.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer,
	getenv func(string) string) error {
	var c config
	fs := flag.NewFlagSet("rota-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.flags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rota-server [serve] [flags]\n\n"+
			"Every flag may also be set by its ROTA_* variable, such as ROTA_LISTEN for --listen.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	log := cli.NewLogger(stderr, c.logFormat, c.logLevel)

	srv, err := open(ctx, &c, log)
	if err != nil {
		return err
	}
	defer srv.close()

	oneTime, err := server.EnsureAdmin(ctx, srv.store, getenv("ROTA_ADMIN_PASSWORD"))
	if err != nil {
		return fmt.Errorf("create the first admin: %w", err)
	}
	if oneTime != "" {
		// Printed once, to the terminal or journal of whoever started
		// the server; only its hash is stored.
		fmt.Fprintf(stdout, "Created user admin with one-time password: %s\n"+
			"Sign in and change it; it is not shown again.\n", oneTime)
	}
	return srv.serve(ctx, &c, stdout)
}

// instance is one running server: its store, bundles and handlers.
type instance struct {
	log     *slog.Logger
	store   store.Store
	bundles bundlestore.Store
	metrics *metrics.Metrics
	handler http.Handler
	ready   atomic.Bool
}

// open opens the store and the bundle storage and builds the handlers.
func open(ctx context.Context, c *config, log *slog.Logger) (*instance, error) {
	if err := os.MkdirAll(c.data, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	s := &instance{log: log}
	var err error
	if s.store, err = openStore(ctx, c, log); err != nil {
		return nil, err
	}
	var bundleURL func(ctx context.Context, digest string) (string, error)
	if c.registry != "" {
		var reg *bundlestore.Registry
		reg, err = bundlestore.NewRegistry(c.registry,
			bundlestore.RegistryOptions{PlainHTTP: c.registryHTTP, FileBlob: c.redirect})
		s.bundles = reg
		if c.redirect {
			bundleURL = reg.DownloadURL
		}
	} else {
		s.bundles, err = bundlestore.OpenLayout(filepath.Join(c.data, "bundles"))
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("open bundle storage: %w", err)
	}
	keyring, err := loadKeyring(c, log)
	if err != nil {
		s.close()
		return nil, err
	}
	uploads := filepath.Join(c.data, "uploads")
	if err := os.MkdirAll(uploads, 0o700); err != nil {
		s.close()
		return nil, fmt.Errorf("create upload directory: %w", err)
	}

	// Every replica signs device tokens with the key the first stored.
	tokenKey := make([]byte, 32)
	rand.Read(tokenKey)
	if tokenKey, err = s.store.Secret(ctx, "device-token-key", tokenKey); err != nil {
		s.close()
		return nil, fmt.Errorf("device token key: %w", err)
	}
	devices, err := server.NewDeviceAPI(server.DeviceAPIConfig{
		Store:           s.store,
		Bundles:         s.bundles,
		BundleURL:       bundleURL,
		TokenKey:        tokenKey,
		EnrollmentToken: c.enrollmentToken,
		TokenLifetime:   c.tokenLifetime,
		PollInterval:    c.pollInterval,
		RateLimit:       c.rateLimit,
		TrustedProxies:  c.proxies,
		Logger:          log,
	})
	if err != nil {
		s.close()
		return nil, err
	}
	mgmt, err := server.NewManagementAPI(server.ManagementAPIConfig{
		Store:         s.store,
		Bundles:       s.bundles,
		Keyring:       keyring,
		TempDir:       uploads,
		MaxUploadSize: c.maxUpload,
		SecureCookies: c.secureCookies,
		Logger:        log,
	})
	if err != nil {
		s.close()
		return nil, err
	}

	s.metrics = metrics.New(s.store, log)
	mgmt = s.metrics.Instrument("management", mgmt)
	mux := http.NewServeMux()
	mux.Handle(poll.APIPath+"/", s.metrics.Instrument("device", devices))
	mux.Handle(server.ManagementAPIPath+"/", mgmt)
	if !c.noPortal {
		// The portal is a client of the management API; in this process
		// it calls the API's handler directly.
		web, err := portal.New(portal.Config{
			Transport:     portal.InProcessTransport(mgmt),
			SecureCookies: c.secureCookies,
			Logger:        log,
		})
		if err != nil {
			s.close()
			return nil, err
		}
		mux.Handle("/", web)
	}
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	s.handler = mux
	return s, nil
}

// openStore opens the database of c, migrating it to this version.
func openStore(ctx context.Context, c *config, log *slog.Logger) (store.Store, error) {
	if c.postgres() {
		return store.OpenPostgres(ctx, c.database, store.WithLogger(log))
	}
	return store.OpenSQLite(ctx, c.database, store.WithLogger(log))
}

// loadKeyring reads the public keys releases must be signed with.
func loadKeyring(c *config, log *slog.Logger) (*bundle.Keyring, error) {
	files, err := c.keyFiles()
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		log.Warn("no release signing keys: uploads are refused until one is given",
			"flag", "--keyring", "directory", filepath.Join(c.data, "keys"))
		return bundle.NewKeyring(), nil
	}
	kr, err := bundle.LoadKeyring(files...)
	if err != nil {
		return nil, fmt.Errorf("load keyring: %w", err)
	}
	log.Info("release signing keys loaded", "keys", kr.Len())
	return kr, nil
}

// readyz answers 200 while the server takes requests and its store
// answers, and 503 otherwise.
func (s *instance) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if _, _, err := s.store.ListReleases(ctx, store.Page{Limit: 1}); err != nil {
		s.log.Warn("readiness check failed", "err", err)
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// serve listens and serves until ctx is done, runs the scheduler and the
// session sweeper beside, and shuts down gracefully.
func (s *instance) serve(ctx context.Context, c *config, stdout io.Writer) error {
	l, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}

	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	if !c.noScheduler {
		sched := &rollout.Scheduler{Store: s.store, Logger: s.log}
		wg.Go(func() { sched.Run(bg, c.schedule) })
	}
	wg.Go(func() { s.sweepSessions(bg) })
	defer func() {
		stopBG()
		wg.Wait()
	}()

	served := make(chan error, 1)
	go func() {
		if c.tlsCert != "" {
			served <- hs.ServeTLS(l, c.tlsCert, c.tlsKey)
		} else {
			served <- hs.Serve(l)
		}
	}()
	s.ready.Store(true)
	scheme := "http"
	if c.tlsCert != "" {
		scheme = "https"
	}
	addr := fmt.Sprintf("%s://%s", scheme, cli.DisplayAddr(l.Addr()))
	s.log.Info("rota-server listening", "url", addr, "data", c.data,
		"database", redactURL(c.database))
	fmt.Fprintf(stdout, "rota-server listening on %s\n", addr)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	s.ready.Store(false)
	s.log.Info("shutting down", "timeout", c.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		s.log.Warn("requests cut at shutdown", "err", err)
		hs.Close()
	}
	return nil
}

// sweepSessions removes expired portal sessions now and then.
func (s *instance) sweepSessions(ctx context.Context) {
	t := time.NewTicker(sessionSweep)
	defer t.Stop()
	for {
		n, err := s.store.DeleteExpiredSessions(ctx, time.Now())
		if err != nil && ctx.Err() == nil {
			s.log.Warn("remove expired sessions", "err", err)
		} else if n > 0 {
			s.log.Debug("removed expired sessions", "sessions", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *instance) close() {
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			s.log.Warn("close store", "err", err)
		}
	}
}

// redactURL hides the password of a database URL for logging.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}
