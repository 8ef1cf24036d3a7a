package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rotaupdate/rota/internal/cli"
)

// config is rota-server's configuration, from flags and ROTA_* variables.
type config struct {
	listen          string
	data            string
	database        string
	registry        string
	registryHTTP    bool
	redirect        bool
	keyring         string
	tlsCert         string
	tlsKey          string
	enrollmentToken string
	pollInterval    time.Duration
	tokenLifetime   time.Duration
	rateLimit       float64
	schedule        time.Duration
	noScheduler     bool
	maxUpload       int64
	shutdownTimeout time.Duration
	secureCookies   bool
	trustedProxies  string
	proxies         []netip.Prefix // parsed from trustedProxies by check
	noPortal        bool
	logFormat       string
	logLevel        string
}

// flags declares the serve flags on fs, with their defaults, into c.
func (c *config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.listen, "listen", ":8080", "`address` to listen on")
	fs.StringVar(&c.data, "data", "rota-data", "`directory` for the database, bundles and keys")
	fs.StringVar(&c.database, "database", "",
		"database: a SQLite file `path` or a postgres:// URL (default DATA/rota.db)")
	fs.StringVar(&c.registry, "registry", "",
		"keep bundles in this OCI registry `repository` instead of DATA/bundles")
	fs.BoolVar(&c.redirect, "registry-redirect", false,
		"send devices to the registry for bundle downloads (needs anonymous pulls)")
	fs.BoolVar(&c.registryHTTP, "registry-plain-http", false,
		"talk to the registry over plain HTTP (loopback test registries)")
	fs.StringVar(&c.keyring, "keyring", "",
		"comma-separated public key `files` releases must be signed with, besides DATA/keys/*.pub")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "TLS certificate `file` (PEM); plain HTTP without")
	fs.StringVar(&c.tlsKey, "tls-key", "", "TLS private key `file` (PEM)")
	fs.StringVar(&c.enrollmentToken, "enrollment-token", "",
		"`token` that admits new devices at once (ROTA_ENROLLMENT_TOKEN keeps it out of ps)")
	fs.DurationVar(&c.pollInterval, "poll-interval", 5*time.Minute,
		"time between update checks asked of devices")
	fs.DurationVar(&c.tokenLifetime, "device-token-lifetime", time.Hour,
		"how long a device token is valid")
	fs.Float64Var(&c.rateLimit, "device-rate-limit", 2,
		"requests per second each device may make on average; negative means no limit")
	fs.DurationVar(&c.schedule, "schedule-interval", 5*time.Second,
		"how often deployments are advanced")
	fs.BoolVar(&c.noScheduler, "no-scheduler", false,
		"do not advance deployments here (another replica does)")
	fs.Int64Var(&c.maxUpload, "max-upload", 16<<30, "largest release upload in `bytes`")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second,
		"how long to let requests finish on SIGTERM")
	fs.BoolVar(&c.secureCookies, "secure-cookies", false,
		"mark session cookies Secure behind a TLS-terminating proxy")
	fs.StringVar(&c.trustedProxies, "trusted-proxies", "",
		"comma-separated `prefixes` (CIDRs or IPs) of proxies whose X-Forwarded-For is believed")
	fs.BoolVar(&c.noPortal, "no-portal", false,
		"do not serve the web portal at / (the APIs stay)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// parseFlags parses args into fs, taking a flag not given from its
// ROTA_* variable; flags win over the environment.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	return cli.ParseFlags(fs, args, getenv)
}

// check validates c, parses --trusted-proxies and fills in the defaults
// that depend on other fields.
func (c *config) check() error {
	switch {
	case c.data == "":
		return fmt.Errorf("%w: --data is empty", errUsage)
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return fmt.Errorf("%w: --tls-cert and --tls-key go together", errUsage)
	case c.pollInterval < time.Second:
		return fmt.Errorf("%w: --poll-interval under 1s", errUsage)
	case c.tokenLifetime < time.Minute:
		return fmt.Errorf("%w: --device-token-lifetime under 1m", errUsage)
	case c.schedule < 100*time.Millisecond:
		return fmt.Errorf("%w: --schedule-interval under 100ms", errUsage)
	case c.redirect && c.registry == "":
		return fmt.Errorf("%w: --registry-redirect needs --registry", errUsage)
	case c.maxUpload <= 0:
		return fmt.Errorf("%w: --max-upload must be positive", errUsage)
	case c.shutdownTimeout < 0:
		return fmt.Errorf("%w: --shutdown-timeout is negative", errUsage)
	case c.logFormat != "text" && c.logFormat != "json":
		return fmt.Errorf("%w: --log-format %q: want text or json", errUsage, c.logFormat)
	}
	proxies, err := parsePrefixes(c.trustedProxies)
	if err != nil {
		return fmt.Errorf("%w: --trusted-proxies: %w", errUsage, err)
	}
	c.proxies = proxies
	if c.database == "" {
		c.database = filepath.Join(c.data, "rota.db")
	}
	return nil
}

// parsePrefixes parses a comma-separated list of CIDR prefixes and IP
// addresses, skipping empty entries.
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	for s := range strings.SplitSeq(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, ok := parsePrefix(s)
		if !ok {
			return nil, fmt.Errorf("%.100q is not an IP address or CIDR prefix", s)
		}
		prefixes = append(prefixes, p)
	}
	return prefixes, nil
}

// parsePrefix parses a CIDR prefix, or an IP address as the prefix of
// its full length. A zone is refused: the server drops the zones of the
// addresses it compares, so one here would promise a distinction that
// is not made.
func parsePrefix(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err == nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// postgres reports whether the database is a PostgreSQL URL.
func (c *config) postgres() bool {
	return strings.HasPrefix(c.database, "postgres://") ||
		strings.HasPrefix(c.database, "postgresql://")
}

// keyFiles lists the public keys releases are checked against: those of
// --keyring and every DATA/keys/*.pub.
func (c *config) keyFiles() ([]string, error) {
	var files []string
	for f := range strings.SplitSeq(c.keyring, ",") {
		if f = strings.TrimSpace(f); f != "" {
			files = append(files, f)
		}
	}
	found, err := filepath.Glob(filepath.Join(c.data, "keys", "*.pub"))
	if err != nil {
		return nil, err
	}
	return append(files, found...), nil
}

// exists reports whether path names an existing file.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
