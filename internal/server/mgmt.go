package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/bundlestore"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// ManagementAPIPath is the base path of the management API.
const ManagementAPIPath = "/api/v1"

// Defaults and limits of the management API.
const (
	// DefaultMaxUploadSize is the largest .rota file accepted by upload
	// or pulled from a registry when the configuration sets no limit.
	DefaultMaxUploadSize = 16 << 30

	// DefaultSessionLifetime is how long a portal session lasts after
	// login when the configuration does not say.
	DefaultSessionLifetime = 12 * time.Hour

	// MaxLabelLength is the longest tag, group or user name, in bytes.
	MaxLabelLength = 64

	// maxIDLength is the longest ID accepted in a path or a body.
	maxIDLength = 128

	// maxQueryValue is the longest query parameter value accepted.
	maxQueryValue = poll.MaxAttributeValueSize

	// maxCursor is the longest decoded pagination cursor accepted.
	maxCursor = 2*maxIDLength + 8
)

// ManagementAPIConfig configures the management API.
type ManagementAPIConfig struct {
	// Store keeps users, devices, releases, deployments and the audit
	// log; required.
	Store store.Store

	// Bundles keeps the .rota files of releases; required.
	Bundles bundlestore.Store

	// Keyring holds the keys that release bundles must be signed with;
	// nil or empty trusts no key, and every new release is refused.
	Keyring *bundle.Keyring

	// TempDir is the existing directory where uploaded and pulled
	// bundles are spooled before they are stored; required. It should
	// be on a disk with room for the largest bundle.
	TempDir string

	// MaxUploadSize caps an uploaded or pulled .rota file, in bytes;
	// zero means DefaultMaxUploadSize.
	MaxUploadSize int64

	// SessionLifetime is how long a portal session lasts after login;
	// zero means DefaultSessionLifetime.
	SessionLifetime time.Duration

	// SecureCookies marks the session cookie Secure even on requests
	// that did not come over TLS, as behind a TLS-terminating proxy;
	// false sets Secure only on requests that came over TLS.
	SecureCookies bool

	// Remote configures registry access for releases registered from
	// a registry reference; the zero value uses the Docker credential
	// configuration and HTTPS.
	Remote bundle.RemoteOptions

	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	// Logger receives server-side failures, logins and failed logins;
	// nil means silence.
	Logger *slog.Logger
}

// mgmtAPI serves the management API.
type mgmtAPI struct {
	cfg    ManagementAPIConfig
	log    *slog.Logger
	mux    *http.ServeMux
	logins *limiter // failed logins, by user name

	// usersMu serialises the read and write of a user that a change
	// makes in this process. The store itself keeps an admin.
	usersMu sync.Mutex
}

// NewManagementAPI returns the handler of the management API, serving
// the paths under ManagementAPIPath as docs/management-api.yaml
// specifies: users and API tokens, portal sessions, releases, devices,
// groups, deployments and the audit log. Every change it makes is
// written to the audit log in the same store transaction.
func NewManagementAPI(cfg ManagementAPIConfig) (http.Handler, error) {
	switch {
	case cfg.Store == nil:
		return nil, fmt.Errorf("new management api: no store: %w", ErrConfig)
	case cfg.Bundles == nil:
		return nil, fmt.Errorf("new management api: no bundle store: %w", ErrConfig)
	case cfg.TempDir == "":
		return nil, fmt.Errorf("new management api: no temporary directory: %w", ErrConfig)
	case cfg.MaxUploadSize < 0 || cfg.SessionLifetime < 0:
		return nil, fmt.Errorf("new management api: negative upload size or lifetime: %w",
			ErrConfig)
	}
	if fi, err := os.Stat(cfg.TempDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("new management api: temporary directory %s: not a directory: %w",
			cfg.TempDir, ErrConfig)
	}
	cfg.MaxUploadSize = cmp.Or(cfg.MaxUploadSize, DefaultMaxUploadSize)
	cfg.SessionLifetime = cmp.Or(cfg.SessionLifetime, DefaultSessionLifetime)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &mgmtAPI{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(),
		logins: newLimiter(loginRate, loginBurst)}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.routes()
	return a, nil
}

// Route roles beyond the store's: roleNone marks a route that needs no
// authentication, roleAny one that every authenticated caller may use.
const (
	roleNone = store.Role("")
	roleAny  = store.RoleViewer
)

func (a *mgmtAPI) routes() {
	for _, rt := range []struct {
		method, path string
		role         store.Role
		h            http.HandlerFunc
	}{
		{"POST", "/login", roleNone, a.login},
		{"POST", "/logout", roleAny, a.logout},
		{"GET", "/me", roleAny, a.me},
		{"POST", "/me/password", roleAny, a.changeOwnPassword},

		{"GET", "/users", store.RoleAdmin, a.listUsers},
		{"POST", "/users", store.RoleAdmin, a.createUser},
		{"GET", "/users/{name}", store.RoleAdmin, a.getUser},
		{"PATCH", "/users/{name}", store.RoleAdmin, a.updateUser},
		{"DELETE", "/users/{name}", store.RoleAdmin, a.deleteUser},
		{"GET", "/tokens", store.RoleAdmin, a.listTokens},
		{"POST", "/tokens", store.RoleAdmin, a.createToken},
		{"DELETE", "/tokens/{id}", store.RoleAdmin, a.deleteToken},

		{"GET", "/releases", roleAny, a.listReleases},
		{"POST", "/releases", store.RoleOperator, a.uploadRelease},
		{"POST", "/releases/register", store.RoleOperator, a.registerRelease},
		{"GET", "/releases/{id}", roleAny, a.getRelease},
		{"DELETE", "/releases/{id}", store.RoleOperator, a.deleteRelease},

		{"GET", "/devices", roleAny, a.listDevices},
		{"POST", "/devices/preauthorize", store.RoleOperator, a.preauthorize},
		{"GET", "/devices/{id}", roleAny, a.getDevice},
		{"POST", "/devices/{id}/accept", store.RoleOperator,
			a.setDeviceStatus(store.StatusAccepted, "accept")},
		{"POST", "/devices/{id}/reject", store.RoleOperator,
			a.setDeviceStatus(store.StatusRejected, "reject")},
		{"POST", "/devices/{id}/decommission", store.RoleOperator,
			a.setDeviceStatus(store.StatusDecommissioned, "decommission")},
		{"PUT", "/devices/{id}/tags", store.RoleOperator, a.setLabels(labelTags)},
		{"PUT", "/devices/{id}/groups", store.RoleOperator, a.setLabels(labelGroups)},
		{"GET", "/groups", roleAny, a.listGroups},

		{"GET", "/deployments", roleAny, a.listDeployments},
		{"POST", "/deployments", store.RoleOperator, a.createDeployment},
		{"GET", "/deployments/{id}", roleAny, a.getDeployment},
		{"GET", "/deployments/{id}/devices", roleAny, a.listDeploymentDevices},
		{"POST", "/deployments/{id}/pause", store.RoleOperator,
			a.setDeploymentStatus(store.DeploymentPaused, "pause")},
		{"POST", "/deployments/{id}/resume", store.RoleOperator,
			a.setDeploymentStatus(store.DeploymentActive, "resume")},
		{"POST", "/deployments/{id}/abort", store.RoleOperator,
			a.setDeploymentStatus(store.DeploymentAborted, "abort")},

		{"GET", "/audit", roleAny, a.listAudit},
	} {
		h := rt.h
		if rt.role != roleNone {
			h = a.authed(rt.role, h)
		}
		a.mux.HandleFunc(rt.method+" "+ManagementAPIPath+rt.path, h)
	}
}

// ServeHTTP implements http.Handler.
func (a *mgmtAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Answers carry tokens, session secrets and state that changes;
	// none may be cached.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h, pattern := a.mux.Handler(r)
	if pattern != "" {
		a.mux.ServeHTTP(w, r)
		return
	}
	// The mux answers unknown paths and methods in plain text; learn
	// which it is, and the allowed methods, and answer with a problem.
	var rec headerRecorder
	h.ServeHTTP(&rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.header.Get("Allow"))
		writeProblem(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here")
		return
	}
	writeProblem(w, http.StatusNotFound, "no such endpoint")
}

// headerRecorder keeps the status and header of an answer and drops its
// body.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header {
	if h.header == nil {
		h.header = http.Header{}
	}
	return h.header
}

func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }

func (h *headerRecorder) WriteHeader(status int) { h.status = status }

// fail answers 500 for an error that is the server's, not the caller's.
func (a *mgmtAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.log.ErrorContext(r.Context(), "management api request failed",
		"method", r.Method, "path", r.URL.Path, "err", err)
	writeProblem(w, http.StatusInternalServerError, "internal server error")
}

// storeError answers for an error of the store about the object named
// what, such as "device 42": 404, 409 or 400 for the errors the caller
// caused, 500 for the others.
func (a *mgmtAPI) storeError(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, http.StatusNotFound, what+" not found")
	case errors.Is(err, store.ErrExists):
		writeProblem(w, http.StatusConflict, what+" already exists")
	case errors.Is(err, store.ErrInvalidTransition):
		writeProblem(w, http.StatusConflict, fmt.Sprintf("%s: %v", what, err))
	case errors.Is(err, store.ErrInUse):
		writeProblem(w, http.StatusConflict, what+" is in use")
	case errors.Is(err, store.ErrLastAdmin):
		writeProblem(w, http.StatusConflict, fmt.Sprintf(
			"%s is the last admin; make another user admin first", what))
	case errors.Is(err, store.ErrDeviceBusy):
		writeProblem(w, http.StatusConflict, fmt.Sprintf("%s: %v", what, err))
	case errors.Is(err, store.ErrInvalid):
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("%s: %v", what, err))
	default:
		a.fail(w, r, err)
	}
}

// writeProblemWith is writeProblem with extension members, such as the
// IDs a conflict is about.
func writeProblemWith(w http.ResponseWriter, status int, detail string, ext map[string]any) {
	doc := map[string]any{"title": http.StatusText(status), "status": status, "detail": detail}
	for k, v := range ext {
		doc[k] = v
	}
	body, err := json.Marshal(doc)
	if err != nil {
		writeProblem(w, status, detail)
		return
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	w.Write(body)
}

// audited returns the request's context carrying the audit entry of the
// mutation about to be made by the request's caller. Pass it to exactly
// one store mutation.
func (a *mgmtAPI) audited(r *http.Request, action, object string,
	details any) context.Context {
	return store.WithAudit(r.Context(), store.AuditEntry{
		Actor:   callerOf(r).actor(),
		Action:  action,
		Object:  object,
		At:      a.cfg.Now(),
		Details: detailsJSON(details),
	})
}

// detailsJSON encodes audit details, nil for none. Details are maps and
// slices of strings and numbers built here, which always encode; should
// one not, the entry goes without details rather than not at all.
func detailsJSON(v any) json.RawMessage {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// newID returns a random ID in the form the store gives its objects,
// for objects whose audit entry must name them before they exist.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pathID returns the path wildcard name, or answers 400 and returns
// false if it is not a plausible ID.
func pathID(w http.ResponseWriter, r *http.Request, name string) (string, bool) {
	id := r.PathValue(name)
	if !validID(id) {
		writeProblem(w, http.StatusBadRequest,
			fmt.Sprintf("%s %.80q is not 1 to %d letters, digits or '._:-'", name, id,
				maxIDLength))
		return "", false
	}
	return id, true
}

// validID accepts 1 to maxIDLength bytes of [A-Za-z0-9._:-], which
// covers the IDs the store makes and device key IDs.
func validID(id string) bool {
	if id == "" || len(id) > maxIDLength {
		return false
	}
	for _, c := range []byte(id) {
		if !isTokenByte(c) && c != '.' && c != ':' {
			return false
		}
	}
	return true
}

// validLabel accepts tag, group and user names: 1 to MaxLabelLength
// bytes of ASCII letters, digits and "._-@", starting with a letter or
// digit, so that they are safe in URLs, shells and file names.
func validLabel(s string) bool {
	if s == "" || len(s) > MaxLabelLength || !isAlnum(s[0]) {
		return false
	}
	for _, c := range []byte(s) {
		if !isTokenByte(c) && c != '.' && c != '@' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isTokenByte(c byte) bool {
	return isAlnum(c) || c == '-' || c == '_'
}

// validText accepts a short free text, such as a deployment or token
// name: at most poll.MaxFieldSize bytes of UTF-8 without control
// characters.
func validText(s string) bool {
	if len(s) > poll.MaxFieldSize || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// query returns the request's query parameters, or answers 400 and
// returns false if the query does not parse, names a parameter not in
// allowed, repeats one or holds an oversized value. An allowed name
// ending in "." admits every parameter with that prefix.
func query(w http.ResponseWriter, r *http.Request, allowed ...string) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "malformed query: "+err.Error())
		return nil, false
	}
	for name, vs := range q {
		known := false
		for _, a := range allowed {
			if name == a || strings.HasSuffix(a, ".") && strings.HasPrefix(name, a) {
				known = true
				break
			}
		}
		switch {
		case !known:
			takes := "none"
			if len(allowed) > 0 {
				takes = strings.Join(allowed, ", ")
			}
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf(
				"unknown query parameter %.80q; this endpoint takes %s", name, takes))
			return nil, false
		case len(vs) != 1:
			writeProblem(w, http.StatusBadRequest,
				fmt.Sprintf("query parameter %.80q given %d times", name, len(vs)))
			return nil, false
		case len(vs[0]) > maxQueryValue || !utf8.ValidString(vs[0]):
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf(
				"query parameter %.80q is over %d bytes or not UTF-8", name, maxQueryValue))
			return nil, false
		}
	}
	return q, true
}

// pageParams are the query parameters of a paginated listing.
var pageParams = []string{"after", "limit"}

// readPage returns the page that ?after= and ?limit= ask for, or answers
// 400 and returns false.
func readPage(w http.ResponseWriter, q url.Values) (store.Page, bool) {
	var p store.Page
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > store.MaxPageLimit {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf(
				"limit %.20q is not a number from 0 to %d", s, store.MaxPageLimit))
			return p, false
		}
		p.Limit = n
	}
	if s := q.Get("after"); s != "" {
		c, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(c) == 0 || len(c) > maxCursor || !utf8.Valid(c) {
			writeProblem(w, http.StatusBadRequest,
				"after is not a cursor returned as next by a previous page")
			return p, false
		}
		p.After = string(c)
	}
	return p, true
}

// cursor encodes the store's cursor of the next page for the client,
// which passes it back unchanged as ?after=.
func cursor(next string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(next))
}

// pageJSON is the answer of a paginated listing.
type pageJSON[T any] struct {
	// Items are the page's items; never null.
	Items []T `json:"items"`

	// Next is the cursor of the next page; empty on the last page.
	Next string `json:"next"`

	// Total counts the items of every page, where the listing says.
	Total *int `json:"total,omitempty"`
}

// newPage returns the page of items with the store's cursor next,
// converted by conv.
func newPage[S, T any](items []S, next string, conv func(S) T) pageJSON[T] {
	p := pageJSON[T]{Items: make([]T, 0, len(items))}
	for _, it := range items {
		p.Items = append(p.Items, conv(it))
	}
	if next != "" {
		p.Next = cursor(next)
	}
	return p
}

// pageOf cuts the page p out of items held in memory, sorted by key.
func pageOf[T any](items []T, key func(T) string, p store.Page) ([]T, string) {
	limit := p.Limit
	if limit == 0 {
		limit = store.DefaultPageLimit
	}
	start := 0
	if p.After != "" {
		for start < len(items) && key(items[start]) <= p.After {
			start++
		}
	}
	items = items[start:]
	if len(items) <= limit {
		return items, ""
	}
	items = items[:limit]
	return items, key(items[limit-1])
}

// auditJSON is an audit entry on the wire.
type auditJSON struct {
	ID      int64           `json:"id"`
	Actor   string          `json:"actor"`
	Action  string          `json:"action"`
	Object  string          `json:"object,omitempty"`
	At      time.Time       `json:"at"`
	Details json.RawMessage `json:"details,omitempty"`
}

// listAudit lists audit entries, newest first; next is the ID to pass as
// ?before= for older ones.
func (a *mgmtAPI) listAudit(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "object", "before", "limit")
	if !ok {
		return
	}
	f := store.AuditFilter{Object: q.Get("object"), Limit: store.DefaultPageLimit}
	if len(f.Object) > 2*maxIDLength {
		writeProblem(w, http.StatusBadRequest,
			fmt.Sprintf("object is over %d bytes", 2*maxIDLength))
		return
	}
	if s := q.Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			writeProblem(w, http.StatusBadRequest,
				fmt.Sprintf("before %.20q is not a positive entry ID", s))
			return
		}
		f.Before = n
	}
	page, ok := readPage(w, url.Values{"limit": q["limit"]})
	if !ok {
		return
	}
	if page.Limit > 0 {
		f.Limit = page.Limit
	}
	entries, err := a.cfg.Store.ListAudit(r.Context(), f)
	if err != nil {
		a.storeError(w, r, "audit log", err)
		return
	}
	out := newPage(entries, "", func(e store.AuditEntry) auditJSON {
		return auditJSON{ID: e.ID, Actor: e.Actor, Action: e.Action, Object: e.Object,
			At: e.At, Details: e.Details}
	})
	if len(entries) == f.Limit {
		out.Next = strconv.FormatInt(entries[len(entries)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, out)
}
