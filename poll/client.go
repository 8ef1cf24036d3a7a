package poll

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Defaults of Config.
const (
	// DefaultRetryMax is how many times a request is retried.
	DefaultRetryMax = 4

	// DefaultRetryWaitMin is the first backoff ceiling between retries.
	DefaultRetryWaitMin = time.Second

	// DefaultRetryWaitMax caps the backoff between retries.
	DefaultRetryWaitMax = 30 * time.Second

	// DefaultMaxRetryAfter is the longest Retry-After the client waits
	// out by itself; a longer one is returned to the caller.
	DefaultMaxRetryAfter = 2 * time.Minute

	// DefaultRequestTimeout bounds one attempt of an API request, and the
	// wait for the headers of a download.
	DefaultRequestTimeout = 30 * time.Second

	// DefaultMinThroughput is the download speed, in bytes per second,
	// below which a download counts as stalled.
	DefaultMinThroughput = 1 << 10

	// DefaultThroughputWindow is the time over which download speed is
	// measured.
	DefaultThroughputWindow = 30 * time.Second

	// DefaultMaxResponseSize caps the body of an API answer.
	DefaultMaxResponseSize = 1 << 20

	// DefaultTokenRefreshMargin is how long before its expiry a token is
	// replaced.
	DefaultTokenRefreshMargin = time.Minute
)

// maxProblemSize caps how much of an error body is decoded.
const maxProblemSize = 64 << 10

// Config configures a Client. ServerURL and Key are required.
type Config struct {
	// ServerURL is the server's base URL, such as
	// "https://rota.example.com"; the API lives under APIPath below it.
	ServerURL string

	// Key is the device's private key; see LoadOrCreateKey.
	Key ed25519.PrivateKey

	// Identity holds the device's identity attributes, such as serial
	// and mac; nil means none, so the key alone names the device.
	Identity map[string]string

	// EnrollmentToken, if set, asks the server to admit the device
	// without an operator; empty means wait for one.
	EnrollmentToken string

	// CAFile is a PEM file of certificates that replaces the system
	// roots for verifying the server; empty means the system roots.
	CAFile string

	// CertFile and KeyFile name a PEM client certificate and its key
	// for TLS client authentication; empty means none.
	CertFile, KeyFile string

	// HTTPClient replaces the HTTP client, for tests; nil means one
	// built from CAFile, CertFile and KeyFile, which are then ignored.
	HTTPClient *http.Client

	// Logger receives debug and warning records; nil means silence.
	Logger *slog.Logger

	// RetryMax is how many times a failed request is retried, and how
	// many resumes in a row a download may try without progress; zero
	// means DefaultRetryMax, negative means none.
	RetryMax int

	// RetryWaitMin and RetryWaitMax bound the exponential backoff
	// between retries, which waits a random time up to RetryWaitMin
	// doubled per attempt and capped at RetryWaitMax; zero means
	// DefaultRetryWaitMin and DefaultRetryWaitMax.
	RetryWaitMin, RetryWaitMax time.Duration

	// MaxRetryAfter is the longest Retry-After the client waits out
	// itself; a longer one ends the request with an *Error carrying it.
	// Zero means DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration

	// RequestTimeout bounds each attempt of an API request and the wait
	// for a download's headers; zero means DefaultRequestTimeout.
	RequestTimeout time.Duration

	// MinThroughput is the speed, in bytes per second averaged over
	// ThroughputWindow of waiting for data, below which a download is
	// aborted and resumed; zero means DefaultMinThroughput, negative
	// turns the watchdog off.
	MinThroughput int64

	// ThroughputWindow is the period MinThroughput is averaged over; zero
	// means DefaultThroughputWindow.
	ThroughputWindow time.Duration

	// MaxResponseSize caps the body of an API answer; zero means
	// DefaultMaxResponseSize.
	MaxResponseSize int64

	// TokenRefreshMargin is how long before expiry a token is renewed;
	// zero means DefaultTokenRefreshMargin.
	TokenRefreshMargin time.Duration
}

// Client talks to the device API of one server. Its methods may be called
// from several goroutines at once.
type Client struct {
	cfg    Config
	server *url.URL
	pubPEM string
	log    *slog.Logger

	api *retryablehttp.Client // each attempt bounded by RequestTimeout
	dl  *retryablehttp.Client // only the headers bounded

	authMu sync.Mutex // serialises authentication

	mu      sync.Mutex // guards the fields below
	token   string
	expires time.Time
	etag    string
	last    *CheckResponse
}

// New returns a client for cfg. It makes no request.
func New(cfg Config) (*Client, error) {
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("new poll client: no valid Ed25519 key")
	}
	server, err := url.Parse(cfg.ServerURL)
	if err != nil || (server.Scheme != "https" && server.Scheme != "http") || server.Host == "" {
		return nil, fmt.Errorf("new poll client: server url %q is not an http(s) URL", cfg.ServerURL)
	}
	if err := ValidateAttributes(cfg.Identity); err != nil {
		return nil, fmt.Errorf("new poll client: identity: %w", err)
	}
	pubPEM, err := PublicKeyPEM(cfg.Key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("new poll client: %w", err)
	}
	cfg = withDefaults(cfg)

	base := cfg.HTTPClient
	if base == nil {
		base, err = newHTTPClient(cfg)
		if err != nil {
			return nil, fmt.Errorf("new poll client: %w", err)
		}
	}

	c := &Client{cfg: cfg, server: server, pubPEM: pubPEM, log: cfg.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}

	api := *base
	if api.Timeout == 0 {
		api.Timeout = cfg.RequestTimeout
	}
	dl := *base
	dl.Timeout = 0
	dl.Transport = headerTimeout{next: transportOf(base), d: cfg.RequestTimeout}
	dl.CheckRedirect = c.downloadRedirect(base.CheckRedirect)
	c.api = c.retrying(&api)
	c.dl = c.retrying(&dl)
	return c, nil
}

func withDefaults(cfg Config) Config {
	setDefault(&cfg.RetryMax, DefaultRetryMax)
	cfg.RetryMax = max(cfg.RetryMax, 0)
	setDefault(&cfg.RetryWaitMin, DefaultRetryWaitMin)
	setDefault(&cfg.RetryWaitMax, DefaultRetryWaitMax)
	cfg.RetryWaitMax = max(cfg.RetryWaitMax, cfg.RetryWaitMin)
	setDefault(&cfg.MaxRetryAfter, DefaultMaxRetryAfter)
	setDefault(&cfg.RequestTimeout, DefaultRequestTimeout)
	setDefault(&cfg.MinThroughput, DefaultMinThroughput)
	setDefault(&cfg.ThroughputWindow, DefaultThroughputWindow)
	setDefault(&cfg.MaxResponseSize, DefaultMaxResponseSize)
	setDefault(&cfg.TokenRefreshMargin, DefaultTokenRefreshMargin)
	return cfg
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

func newHTTPClient(cfg Config) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read ca file %s: no PEM certificate", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	return &http.Client{Transport: tr}, nil
}

func transportOf(c *http.Client) http.RoundTripper {
	if c.Transport != nil {
		return c.Transport
	}
	return http.DefaultTransport
}

// retrying wraps hc with the client's retry policy. The last answer is
// passed through rather than turned into an error, so that the caller can
// read its status and problem document.
func (c *Client) retrying(hc *http.Client) *retryablehttp.Client {
	rc := &retryablehttp.Client{
		HTTPClient:   hc,
		RetryWaitMin: c.cfg.RetryWaitMin,
		RetryWaitMax: c.cfg.RetryWaitMax,
		RetryMax:     c.cfg.RetryMax,
		CheckRetry:   c.checkRetry,
		Backoff:      backoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	if c.cfg.Logger != nil {
		rc.Logger = debugLogger{c.log}
	}
	return rc
}

// checkRetry retries network failures and the statuses retryableStatus
// names, unless the server asks for a wait longer than MaxRetryAfter.
func (c *Client) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return false, err
		}
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	if !retryableStatus(resp.StatusCode) {
		return false, nil
	}
	if wait, ok := retryAfter(resp, time.Now()); ok && wait > c.cfg.MaxRetryAfter {
		return false, nil
	}
	return true, nil
}

// backoff waits what a 429 or 503 answer's Retry-After says, or else a
// random time between zero and min doubled attempt times, capped at max
// ("full jitter"), so that devices that failed together retry apart.
func backoff(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
	if wait, ok := retryAfter(resp, time.Now()); ok {
		return wait
	}
	ceiling := max
	if attempt < 32 && min<<attempt > 0 && min<<attempt < max {
		ceiling = min << attempt
	}
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

// retryAfter reads the Retry-After header of a 429 or 503 answer, given
// in seconds or as an HTTP date.
func retryAfter(resp *http.Response, now time.Time) (time.Duration, bool) {
	if resp == nil || (resp.StatusCode != http.StatusTooManyRequests &&
		resp.StatusCode != http.StatusServiceUnavailable) {
		return 0, false
	}
	return parseRetryAfter(resp.Header.Get("Retry-After"), now)
}

func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 32); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(at.Sub(now), 0), true
}

// reply is an API answer with its body read.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// call sends an API request as the device, authenticating first if
// needed and once more if the server refuses the token.
func (c *Client) call(ctx context.Context, op, method, path string, in any,
	header http.Header) (*reply, string, error) {
	u := c.endpoint(path)
	body, err := json.Marshal(in)
	if err != nil {
		return nil, u, &Error{Op: op, URL: u, Err: fmt.Errorf("encode request: %w", err)}
	}

	for attempt := 0; ; attempt++ {
		token, err := c.bearer(ctx)
		if err != nil {
			return nil, u, err
		}
		h := header.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set("Authorization", "Bearer "+token)

		rep, err := c.send(ctx, op, method, u, body, h)
		if err != nil {
			return nil, u, err
		}
		if rep.status == http.StatusUnauthorized && attempt == 0 {
			c.dropToken(token)
			continue
		}
		return rep, u, nil
	}
}

// send makes one request with retries and reads the answer's body up to
// MaxResponseSize. body is []byte or a retryablehttp.ReaderFunc.
func (c *Client) send(ctx context.Context, op, method, u string, body any,
	header http.Header) (*reply, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, &Error{Op: op, URL: u, Err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, application/problem+json")

	var data []byte
	handled := false
	req.SetResponseHandler(func(resp *http.Response) error {
		var rerr error
		handled = true
		data, rerr = readCapped(resp.Body, c.cfg.MaxResponseSize)
		return rerr
	})
	resp, err := c.api.Do(req)
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		e := &Error{Op: op, URL: u, Err: err}
		if resp != nil {
			e.StatusCode = resp.StatusCode
		}
		return nil, e
	}
	if !handled {
		// Retries ended on a status the handler never saw; its body
		// only matters as a problem document.
		data, _ = readCapped(resp.Body, maxProblemSize)
	}
	return &reply{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// readCapped reads r to the end, failing with ErrTooLarge past limit
// bytes rather than holding more in memory.
func readCapped(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: body over %d bytes", ErrTooLarge, limit)
	}
	return data, nil
}

// statusError describes an answer that is not a success.
func statusError(op, u string, status int, header http.Header, body []byte) *Error {
	e := &Error{Op: op, URL: u, StatusCode: status}
	resp := &http.Response{StatusCode: status, Header: header}
	e.RetryAfter, _ = retryAfter(resp, time.Now())

	ct, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
	if ct == "application/problem+json" && len(body) <= maxProblemSize {
		var p Problem
		if json.Unmarshal(body, &p) == nil {
			e.Problem = &p
		}
	}

	switch status {
	case http.StatusUnauthorized:
		e.Err = ErrUnauthorized
	case http.StatusForbidden:
		e.Err = ErrRejected
	default:
		e.Err = errors.New(strings.ToLower(http.StatusText(status)))
	}
	return e
}

// decode parses an answer's JSON body into out.
func decode(op, u string, rep *reply, out any) error {
	if err := json.Unmarshal(rep.body, out); err != nil {
		return &Error{Op: op, URL: u, StatusCode: rep.status,
			Err: fmt.Errorf("%w: decode answer: %w", ErrInvalid, err)}
	}
	return nil
}

// endpoint returns the URL of an API path such as "/check".
func (c *Client) endpoint(path string) string {
	u := *c.server
	u.Path = strings.TrimSuffix(u.Path, "/") + APIPath + path
	u.RawPath = ""
	return u.String()
}

// resolve turns a bundle URL into an absolute one, and reports whether it
// belongs to the server's own origin and so may carry the token.
func (c *Client) resolve(ref string) (*url.URL, bool, error) {
	r, err := url.Parse(ref)
	if err != nil {
		return nil, false, fmt.Errorf("%w: parse url: %w", ErrInvalid, err)
	}
	u := c.server.ResolveReference(r)
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, false, fmt.Errorf("%w: url scheme %q is not http(s)", ErrInvalid, u.Scheme)
	}
	return u, c.sameOrigin(u), nil
}

// sameOrigin reports whether u is on the server's origin: the same
// scheme, host and port. Only there is the device token sent.
func (c *Client) sameOrigin(u *url.URL) bool {
	return strings.EqualFold(u.Scheme, c.server.Scheme) &&
		strings.EqualFold(hostPort(u), hostPort(c.server))
}

// maxRedirects is how many redirects a download follows, as many as
// net/http follows by default.
const maxRedirects = 10

// downloadRedirect returns the redirect policy of downloads: next, or
// else a limit of maxRedirects, after removing the token from a request
// that leaves the server's origin. net/http removes it only on a change
// of host name, and keeps it for a subdomain or another port of the same
// host, where a registry or a storage service may answer.
func (c *Client) downloadRedirect(
	next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if !c.sameOrigin(req.URL) {
			req.Header.Del("Authorization")
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return nil
	}
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return u.Hostname() + ":443"
	}
	return u.Hostname() + ":80"
}

// headerTimeout bounds the wait for an answer's headers but not the
// reading of its body, which the download watchdog looks after.
type headerTimeout struct {
	next http.RoundTripper
	d    time.Duration
}

func (t headerTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	timer := time.AfterFunc(t.d, cancel)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	expired := !timer.Stop()
	if err != nil {
		cancel()
		if expired && req.Context().Err() == nil {
			return nil, fmt.Errorf("no answer within %v: %w", t.d, context.DeadlineExceeded)
		}
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// debugLogger hands retryablehttp's records to slog at debug level: the
// failures it reports are returned to the caller, never logged as errors.
type debugLogger struct{ log *slog.Logger }

func (l debugLogger) Error(msg string, kv ...any) { l.log.Debug(msg, kv...) }
func (l debugLogger) Info(msg string, kv ...any)  { l.log.Debug(msg, kv...) }
func (l debugLogger) Debug(msg string, kv ...any) { l.log.Debug(msg, kv...) }
func (l debugLogger) Warn(msg string, kv ...any)  { l.log.Debug(msg, kv...) }
