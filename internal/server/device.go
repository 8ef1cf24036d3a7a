package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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
	// DefaultRateLimit, negative means no limit. Auth requests are
	// counted by device key, apart from the requests made with a token.
	RateLimit float64

	// RateBurst is how many requests a device may make at once; zero
	// means DefaultRateBurst.
	RateBurst int

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
	case cfg.TokenLifetime < 0 || cfg.PollInterval < 0 || cfg.RateBurst < 0:
		return nil, fmt.Errorf("new device api: negative lifetime, interval or burst: %w",
			ErrConfig)
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
	if ok {
		return false
	}
	secs := max(int((wait+time.Second-1)/time.Second), 1)
	w.Header().Set("Retry-After", fmt.Sprint(secs))
	writeProblem(w, http.StatusTooManyRequests,
		fmt.Sprintf("too many requests; retry in %d s", secs))
	return true
}

// fail answers 500 for an error that is the server's, not the device's.
func (a *deviceAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.log.ErrorContext(r.Context(), "device api request failed",
		"method", r.Method, "path", r.URL.Path, "err", err)
	writeProblem(w, http.StatusInternalServerError, "internal server error")
}
