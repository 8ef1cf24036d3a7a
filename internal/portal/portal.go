package portal

import (
	"cmp"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults of the portal.
const (
	// DefaultAPITimeout bounds each management API request the portal
	// makes, uploads excepted, when the configuration does not say.
	DefaultAPITimeout = 30 * time.Second

	// DefaultServer is the base URL of the API when the configuration
	// names none: a name that only a Transport such as
	// InProcessTransport needs to resolve.
	DefaultServer = "http://rota-server"
)

// Limits of what the portal reads.
const (
	// maxFormSize caps a form post other than an upload.
	maxFormSize = 1 << 20

	// maxAPIAnswer caps an API answer the portal decodes.
	maxAPIAnswer = 64 << 20

	// maxUploadDrain is how much of a refused upload the portal still
	// reads, so that the browser gets the answer rather than a broken
	// connection; a larger rest is cut off.
	maxUploadDrain = 256 << 20
)

// ErrConfig is returned by New for a configuration it cannot use.
var ErrConfig = errors.New("portal: invalid configuration")

// Config configures the portal.
type Config struct {
	// Server is the base URL of the rota-server whose management API
	// the portal uses, such as https://rota.example.com; the API is at
	// its path /api/v1. Empty means DefaultServer, for a Transport that
	// ignores the host.
	Server string

	// Transport carries the requests to the management API; nil means
	// http.DefaultTransport. Give InProcessTransport when the portal
	// runs in the same process as the API.
	Transport http.RoundTripper

	// SecureCookies marks the portal's cookies Secure even on requests
	// that did not come over TLS, as behind a TLS-terminating proxy;
	// false sets Secure only on requests that came over TLS.
	SecureCookies bool

	// APITimeout bounds each API request but uploads; zero means
	// DefaultAPITimeout.
	APITimeout time.Duration

	// Logger receives failures of the API and of rendering; nil means
	// silence.
	Logger *slog.Logger
}

// portal serves the pages.
type portal struct {
	cfg     Config
	log     *slog.Logger
	api     *apiClient
	pages   map[string]*template.Template
	assets  *assets
	handler http.Handler
}

// New returns the portal as a handler to be served at the root of its
// origin. Every page but sign-in needs a session of the management API;
// a request without one is sent to /login.
func New(cfg Config) (http.Handler, error) {
	cfg.Server = cmp.Or(cfg.Server, DefaultServer)
	cfg.APITimeout = cmp.Or(cfg.APITimeout, DefaultAPITimeout)
	base, err := url.Parse(cfg.Server)
	switch {
	case err != nil:
		return nil, fmt.Errorf("new portal: server %q: %w: %w", cfg.Server, ErrConfig, err)
	case base.Scheme != "http" && base.Scheme != "https", base.Host == "":
		return nil, fmt.Errorf("new portal: server %q is not an http or https URL: %w",
			cfg.Server, ErrConfig)
	case cfg.APITimeout < 0:
		return nil, fmt.Errorf("new portal: negative API timeout: %w", ErrConfig)
	}
	p := &portal{cfg: cfg, log: cfg.Logger}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	transport := cfg.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	p.api = &apiClient{
		base:    strings.TrimSuffix(base.String(), "/") + apiPath,
		client:  &http.Client{Transport: transport, CheckRedirect: noRedirects},
		timeout: cfg.APITimeout,
	}
	if p.assets, err = loadAssets(); err != nil {
		return nil, fmt.Errorf("new portal: %w", err)
	}
	if p.pages, err = parsePages(p.assets); err != nil {
		return nil, fmt.Errorf("new portal: %w", err)
	}
	p.handler = p.routes()
	return p, nil
}

// noRedirects hands redirects of the API back to the portal, which
// treats them as errors: the API answers none.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func (p *portal) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", p.assets)
	mux.HandleFunc("GET /login", p.loginPage)
	mux.HandleFunc("POST /login", p.login)
	mux.HandleFunc("/", p.notFound)

	for pattern, h := range map[string]handlerFunc{
		"POST /logout":                   p.logout,
		"GET /{$}":                       p.dashboard,
		"GET /account":                   p.account,
		"POST /account/password":         p.changePassword,
		"GET /devices":                   p.devices,
		"POST /devices/admission":        p.admitSelected,
		"GET /devices/{id}":              p.device,
		"POST /devices/{id}/labels":      p.setLabels,
		"POST /devices/{id}/{verb}":      p.admitOne,
		"GET /releases":                  p.releases,
		"GET /releases/new":              p.newRelease,
		"POST /releases/register":        p.register,
		"GET /releases/{id}":             p.release,
		"POST /releases/{id}/delete":     p.deleteRelease,
		"GET /deployments":               p.deployments,
		"GET /deployments/new":           p.newDeployment,
		"POST /deployments":              p.createDeployment,
		"GET /deployments/{id}":          p.deployment,
		"GET /deployments/{id}/progress": p.progress,
		"POST /deployments/{id}/{verb}":  p.setDeploymentStatus,
		"GET /audit":                     p.audit,
		"GET /users":                     p.users,
		"POST /users":                    p.createUser,
		"POST /users/{name}/role":        p.setRole,
		"POST /users/{name}/delete":      p.deleteUser,
		"GET /tokens":                    p.tokens,
		"POST /tokens":                   p.createToken,
		"POST /tokens/{id}/delete":       p.deleteToken,
	} {
		mux.Handle(pattern, p.signedIn(h, true))
	}
	// An upload checks its CSRF token itself, so that the file streams
	// through rather than being parsed as a form.
	mux.Handle("POST /releases/upload", p.signedIn(p.upload, false))

	// Besides the form tokens, refuse cross-origin posts the browser
	// marks as such.
	return http.NewCrossOriginProtection().Handler(mux)
}

// ServeHTTP implements http.Handler.
func (p *portal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; "+
		"style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; "+
		"frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	p.handler.ServeHTTP(w, r)
}

// secure reports whether cookies set in answer to r must be Secure.
func (p *portal) secure(r *http.Request) bool {
	return p.cfg.SecureCookies || r.TLS != nil
}

func (p *portal) notFound(w http.ResponseWriter, r *http.Request) {
	p.errorPage(w, r, nil, http.StatusNotFound, "There is no page at this address.")
}
