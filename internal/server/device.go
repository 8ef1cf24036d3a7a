package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/rotaupdate/rota/internal/bundlestore"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// Defaults of a DeviceAPIConfig.
const (
	// DefaultTokenLifetime is how long a device token is valid. Devices
	// renew it shortly before it expires, so a short lifetime costs one
	// signed request per device and lifetime.
	DefaultTokenLifetime = time.Hour

	// DefaultPollInterval is the time between checks the server asks of
	// devices, and the wait it tells pending devices.
	DefaultPollInterval = 5 * time.Minute

	// DefaultRateLimit is how many requests per second a device may make
	// on average.
	DefaultRateLimit = 2.0

	// DefaultRateBurst is how many requests a device may make at once
	// before DefaultRateLimit applies; an update's reports and its
	// download come in such a burst.
	DefaultRateBurst = 30

	// DefaultAuthFailureRate is how many failed auth requests per second
	// a client address regains: a device whose clock is off, failing at
	// every poll, stays far below it.
	DefaultAuthFailureRate = 1.0

	// DefaultAuthFailureBurst is how many failed auth requests a client
	// address may make at once before DefaultAuthFailureRate applies.
	DefaultAuthFailureBurst = 20

	// MaxRequestSize is the largest request body the device API reads;
	// the largest valid request, an inventory of MaxAttributes long
	// values, fits well below it.
	MaxRequestSize = 1 << 20
)

// ErrConfig is returned by NewDeviceAPI when its configuration lacks a
// required field or holds an impossible value.
var ErrConfig = errors.New("server: invalid configuration")

// DeviceAPIConfig configures the device API.
type DeviceAPIConfig struct {
	// Store keeps devices, releases and deployments; required.
	Store store.Store

	// Bundles holds the .rota files of releases; required.
	Bundles bundlestore.Store

	// BundleURL, when set, gives the absolute http(s) URL a bundle can
	// be downloaded from elsewhere, such as (*bundlestore.Registry).
	// DownloadURL does. A device allowed to download the bundle is then
	// redirected there with 307 rather than served the bytes; an error
	// makes the server serve the bundle itself, as nil does for every
	// bundle. The URL must serve the same .rota file, answer Range
	// requests and need no credentials: devices send their token only to
	// the server.
	BundleURL func(ctx context.Context, digest string) (string, error)

	// EnrollmentToken admits at once a pending device that presents it;
	// empty means devices wait for an operator.
	EnrollmentToken string

	// TokenLifetime is how long an issued device token is valid; zero
	// means DefaultTokenLifetime.
	TokenLifetime time.Duration

	// PollInterval is the time between checks asked of devices, and the
	// wait told to pending devices; zero means DefaultPollInterval.
	PollInterval time.Duration

	// RateLimit is how many requests per second each device may make on
	// average, beyond which it gets 429 with Retry-After; zero means
	// DefaultRateLimit, negative means no limit, on failed auth requests
	// too. Auth requests are counted by device key, apart from the
	// requests made with a token.
	RateLimit float64

	// RateBurst is how many requests a device may make at once; zero
	// means DefaultRateBurst.
	RateBurst int

	// AuthFailureRate is how many failed auth requests per second each
	// client address regains; zero means DefaultAuthFailureRate, and a
	// negative value, or a negative RateLimit, means no limit. A failed
	// request is one that is malformed, badly signed, replayed or from a
	// rejected device. An IPv6 client is counted by its /64, all of which
	// one host may own. Once an address has spent its failures, every
	// auth request from it gets 429 with Retry-After before its signature
	// is checked, a valid one too: checking signatures is the work this
	// limit spares the server. Successful requests spend nothing, so that
	// a fleet behind one NAT may enroll at once.
	AuthFailureRate float64

	// AuthFailureBurst is how many failed auth requests a client address
	// may make at once; zero means DefaultAuthFailureBurst.
	AuthFailureBurst int

	// TrustedProxies lists the proxies in front of the server whose
	// X-Forwarded-For header is believed. A request from one of them is
	// counted against the address the proxies name: X-Forwarded-For is
	// read from the right, passing over addresses in these prefixes, and
	// its first address outside them is the client. Nil means no proxy
	// is trusted: the client is the peer of the connection, and
	// X-Forwarded-For is ignored. Trust only proxies that append to
	// X-Forwarded-For, since a client can write anything there itself.
	TrustedProxies []netip.Prefix

	// TokenKey signs device tokens; every replica of a server must use
	// the same key, of at least 32 bytes. Nil means a random key, so
	// that tokens are good only at this process until it stops.
	TokenKey []byte

	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	// Logger receives server-side failures and admission changes; nil
	// means silence.
	Logger *slog.Logger
}

// deviceAPI serves the device API.
type deviceAPI struct {
	cfg      DeviceAPIConfig
	log      *slog.Logger
	sessions *sessions
	limit    *limiter // nil means no limit
	failures *limiter // failed auth requests by client address; nil means no limit
	seen     *seenBatch
}

// NewDeviceAPI returns the handler of the device API, serving the paths
// under poll.APIPath as docs/device-api.yaml specifies. Bundles are
// served at poll.APIPath + "/bundles/<digest>", to the devices whose
// active deployment deploys them.
func NewDeviceAPI(cfg DeviceAPIConfig) (http.Handler, error) {
	switch {
	case cfg.Store == nil:
		return nil, fmt.Errorf("new device api: no store: %w", ErrConfig)
	case cfg.Bundles == nil:
		return nil, fmt.Errorf("new device api: no bundle source: %w", ErrConfig)
	case cfg.TokenLifetime < 0 || cfg.PollInterval < 0 || cfg.RateBurst < 0 ||
		cfg.AuthFailureBurst < 0:
		return nil, fmt.Errorf("new device api: negative lifetime, interval or burst: %w",
			ErrConfig)
	case slices.ContainsFunc(cfg.TrustedProxies, func(p netip.Prefix) bool {
		return !p.IsValid()
	}):
		return nil, fmt.Errorf("new device api: invalid trusted proxy prefix: %w", ErrConfig)
	case cfg.TokenKey != nil && len(cfg.TokenKey) < tokenKeySize:
		return nil, fmt.Errorf("new device api: token key under %d bytes: %w",
			tokenKeySize, ErrConfig)
	case len(cfg.EnrollmentToken) > poll.MaxFieldSize:
		return nil, fmt.Errorf("new device api: enrollment token over %d bytes: %w",
			poll.MaxFieldSize, ErrConfig)
	}
	cfg.TokenLifetime = cmp.Or(cfg.TokenLifetime, DefaultTokenLifetime)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, DefaultPollInterval)
	cfg.RateLimit = cmp.Or(cfg.RateLimit, DefaultRateLimit)
	cfg.RateBurst = cmp.Or(cfg.RateBurst, DefaultRateBurst)
	cfg.AuthFailureRate = cmp.Or(cfg.AuthFailureRate, DefaultAuthFailureRate)
	cfg.AuthFailureBurst = cmp.Or(cfg.AuthFailureBurst, DefaultAuthFailureBurst)
	cfg.TrustedProxies = normalPrefixes(cfg.TrustedProxies)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TokenKey == nil {
		cfg.TokenKey = make([]byte, tokenKeySize)
		rand.Read(cfg.TokenKey)
	}
	a := &deviceAPI{cfg: cfg, log: cfg.Logger, sessions: newSessions(cfg.TokenKey),
		seen: newSeenBatch()}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if cfg.RateLimit > 0 {
		a.limit = newLimiter(cfg.RateLimit, cfg.RateBurst)
	}
	if cfg.RateLimit > 0 && cfg.AuthFailureRate > 0 {
		a.failures = newLimiter(cfg.AuthFailureRate, cfg.AuthFailureBurst)
	}
	return a.routes(), nil
}

func (a *deviceAPI) routes() http.Handler {
	mux := http.NewServeMux()
	route := func(method, path string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+poll.APIPath+path, h)
		// Any other method on a known path gets a problem document too.
		mux.HandleFunc(poll.APIPath+path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", method)
			writeProblem(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here")
		})
	}
	route(http.MethodPost, "/auth", a.auth)
	route(http.MethodPost, "/check", a.check)
	route(http.MethodGet, "/bundles/{digest}", a.bundle)
	route(http.MethodPost, "/deployments/{id}/reports", a.report)
	route(http.MethodPut, "/inventory", a.inventory)
	mux.HandleFunc(poll.APIPath+"/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "no such endpoint")
	})
	return mux
}

func (a *deviceAPI) pollSeconds() int {
	return int(a.cfg.PollInterval.Round(time.Second) / time.Second)
}

// rateLimited answers 429 and returns true if key has spent its requests.
func (a *deviceAPI) rateLimited(w http.ResponseWriter, key string) bool {
	if a.limit == nil {
		return false
	}
	ok, wait := a.limit.allow(key, a.cfg.Now())
	if !ok {
		tooManyRequests(w, wait)
	}
	return !ok
}

// blocked answers 429 and returns true if client, a key of clientKey,
// has spent its failed auth requests. It spends nothing itself: only
// failed requests do, through failed.
func (a *deviceAPI) blocked(w http.ResponseWriter, client string) bool {
	if a.failures == nil {
		return false
	}
	ok, wait := a.failures.ready(client, a.cfg.Now())
	if !ok {
		tooManyRequests(w, wait)
	}
	return !ok
}

// failed spends one failed auth request of client, a key of clientKey.
func (a *deviceAPI) failed(client string) {
	if a.failures != nil {
		a.failures.allow(client, a.cfg.Now())
	}
}

// tooManyRequests answers 429, telling to retry after wait.
func tooManyRequests(w http.ResponseWriter, wait time.Duration) {
	secs := max(int((wait+time.Second-1)/time.Second), 1)
	w.Header().Set("Retry-After", fmt.Sprint(secs))
	writeProblem(w, http.StatusTooManyRequests,
		fmt.Sprintf("too many requests; retry in %d s", secs))
}

// fail answers 500 for an error that is the server's, not the device's.
func (a *deviceAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.log.ErrorContext(r.Context(), "device api request failed",
		"method", r.Method, "path", r.URL.Path, "err", err)
	writeProblem(w, http.StatusInternalServerError, "internal server error")
}
