// Command rota-portal serves ROTA's web portal on its own, against the
// management API of a rota-server elsewhere:
//
//	rota-portal --server https://rota.example.com --listen :8081
//
// rota-server serves the same portal at / by itself; run rota-portal to
// put the portal on another host or port than the server, such as
// inside an office network while the server faces the devices. The
// portal keeps no state: sessions are the server's. Every flag may also
// be set by a ROTA_* environment variable; see rota-portal -h.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rotaupdate/rota/internal/cli"
	"github.com/rotaupdate/rota/internal/portal"
)

// Timeouts of the HTTP server. There is no read or write timeout: an
// upload of a large bundle streams through for as long as it takes.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, cli.ErrUsage):
		fmt.Fprintln(os.Stderr, "rota-portal:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "rota-portal:", err)
		os.Exit(1)
	}
}

// config is rota-portal's configuration, from flags and ROTA_* variables.
type config struct {
	server          string
	listen          string
	tlsCert         string
	tlsKey          string
	secureCookies   bool
	apiTimeout      time.Duration
	shutdownTimeout time.Duration
	logFormat       string
	logLevel        string
}

// flags declares the flags on fs, with their defaults, into c.
func (c *config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "",
		"base `URL` of the rota-server whose management API to use (required)")
	fs.StringVar(&c.listen, "listen", ":8081", "`address` to listen on")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "TLS certificate `file` (PEM); plain HTTP without")
	fs.StringVar(&c.tlsKey, "tls-key", "", "TLS private key `file` (PEM)")
	fs.BoolVar(&c.secureCookies, "secure-cookies", false,
		"mark session cookies Secure behind a TLS-terminating proxy")
	fs.DurationVar(&c.apiTimeout, "api-timeout", portal.DefaultAPITimeout,
		"how long to wait for the server's answer to a request, uploads excepted")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second,
		"how long to let requests finish on SIGTERM")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// check validates c.
func (c *config) check() error {
	u, err := url.Parse(c.server)
	switch {
	case c.server == "":
		return fmt.Errorf("%w: --server is required, such as https://rota.example.com",
			cli.ErrUsage)
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("%w: --server %q is not an http:// or https:// URL", cli.ErrUsage,
			c.server)
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return fmt.Errorf("%w: --tls-cert and --tls-key go together", cli.ErrUsage)
	case c.apiTimeout <= 0:
		return fmt.Errorf("%w: --api-timeout must be positive", cli.ErrUsage)
	case c.shutdownTimeout < 0:
		return fmt.Errorf("%w: --shutdown-timeout is negative", cli.ErrUsage)
	case c.logFormat != "text" && c.logFormat != "json":
		return fmt.Errorf("%w: --log-format %q: want text or json", cli.ErrUsage, c.logFormat)
	}
	return nil
}

// run serves the portal until ctx is done, then shuts it down.
func run(ctx context.Context, args []string, stdout, stderr io.Writer,
	getenv func(string) string) error {
	var c config
	fs := flag.NewFlagSet("rota-portal", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.flags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rota-portal --server URL [flags]\n\n"+
			"Every flag may also be set by its ROTA_* variable, such as ROTA_SERVER for --server.")
		fs.PrintDefaults()
	}
	if err := cli.ParseFlags(fs, args, getenv); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	log := cli.NewLogger(stderr, c.logFormat, c.logLevel)
	if u, _ := url.Parse(c.server); u.Scheme == "http" && !loopback(u.Hostname()) {
		log.Warn("the server is reached over plain HTTP: passwords and sessions cross "+
			"the network in clear", "server", c.server)
	}
	h, err := portal.New(portal.Config{
		Server:        c.server,
		SecureCookies: c.secureCookies,
		APITimeout:    c.apiTimeout,
		Logger:        log,
	})
	if err != nil {
		return err
	}
	return serve(ctx, &c, h, log, stdout)
}

// serve listens and serves h until ctx is done, then shuts down
// gracefully.
func serve(ctx context.Context, c *config, h http.Handler, log *slog.Logger,
	stdout io.Writer) error {
	l, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.listen, err)
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() {
		if c.tlsCert != "" {
			served <- hs.ServeTLS(l, c.tlsCert, c.tlsKey)
		} else {
			served <- hs.Serve(l)
		}
	}()
	scheme := "http"
	if c.tlsCert != "" {
		scheme = "https"
	}
	addr := fmt.Sprintf("%s://%s", scheme, cli.DisplayAddr(l.Addr()))
	log.Info("rota-portal listening", "url", addr, "server", c.server)
	fmt.Fprintf(stdout, "rota-portal listening on %s\n", addr)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", c.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("requests cut at shutdown", "err", err)
		hs.Close()
	}
	return nil
}

// loopback reports whether host names this machine.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
