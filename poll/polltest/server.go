package polltest

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotaupdate/rota/poll"
)

// Defaults of a Server.
const (
	// DefaultTokenLifetime is how long an issued token is valid.
	DefaultTokenLifetime = time.Hour

	// maxRequestSize caps the request bodies the server reads.
	maxRequestSize = 1 << 20
)

// Server is a fake device-API server. Unknown devices stay pending until
// admitted with SetAdmission or an enrollment token.
type Server struct {
	// URL is the server's base URL, to use as poll.Config.ServerURL.
	URL string

	srv *httptest.Server

	mu           sync.Mutex // guards the fields below
	defaultState poll.AuthState
	admission    map[string]poll.AuthState // by key ID
	enrollment   string
	lifetime     time.Duration
	pendingRetry int
	tokens       map[string]session
	nonces       map[string]bool
	identities   map[string]map[string]string
	inventories  map[string]map[string]string
	update       *poll.Update
	pollInterval int
	checks       []poll.CheckRequest
	files        map[string]file
	reports      map[string][]poll.Report
	seenReports  map[reportKey]bool
	faults       map[string][]Fault
	hits         map[string]int
}

type session struct {
	keyID   string
	expires time.Time
}

type file struct {
	data     []byte
	etag     string
	auth     bool
	redirect string // where to send requests instead; empty for none
}

type reportKey struct {
	deployment, id string
	state          poll.ReportState
}

// NewServer starts a plain-HTTP server that closes when t ends.
func NewServer(t testing.TB) *Server {
	return start(t, false)
}

// NewTLSServer starts an HTTPS server that closes when t ends; Client
// returns an HTTP client that trusts its certificate.
func NewTLSServer(t testing.TB) *Server {
	return start(t, true)
}

func start(t testing.TB, useTLS bool) *Server {
	s := newServer()
	s.srv = httptest.NewUnstartedServer(s.handler())
	// Send the server's complaints, such as failed handshakes, to the
	// test log rather than to stderr.
	s.srv.Config.ErrorLog = log.New(testWriter{t}, "polltest: ", 0)
	if useTLS {
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newServer() *Server {
	return &Server{
		defaultState: poll.AuthPending,
		admission:    map[string]poll.AuthState{},
		lifetime:     DefaultTokenLifetime,
		tokens:       map[string]session{},
		nonces:       map[string]bool{},
		identities:   map[string]map[string]string{},
		inventories:  map[string]map[string]string{},
		files:        map[string]file{},
		reports:      map[string][]poll.Report{},
		seenReports:  map[reportKey]bool{},
		faults:       map[string][]Fault{},
		hits:         map[string]int{},
	}
}

// Client returns an HTTP client for the server, trusting its certificate
// if it uses TLS.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Certificate returns the certificate of a TLS server; nil for plain
// HTTP.
func (s *Server) Certificate() *x509.Certificate { return s.srv.Certificate() }

// SetAdmission sets the admission state of the device with key ID keyID
// (see poll.KeyID).
func (s *Server) SetAdmission(keyID string, state poll.AuthState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.admission[keyID] = state
}

// SetDefaultAdmission sets the state of devices not named by
// SetAdmission; the default is poll.AuthPending.
func (s *Server) SetDefaultAdmission(state poll.AuthState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaultState = state
}

// SetEnrollmentToken sets the token that admits a device at once; empty,
// the default, admits none that way.
func (s *Server) SetEnrollmentToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enrollment = token
}

// SetTokenLifetime sets the lifetime of tokens issued from now on; zero
// means DefaultTokenLifetime.
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = cmp.Or(d, DefaultTokenLifetime)
}

// SetPendingRetry sets the retryAfter, in seconds, told to pending
// devices; zero, the default, tells none.
func (s *Server) SetPendingRetry(seconds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pendingRetry = seconds
}

// RevokeTokens invalidates every token issued so far, as a server restart
// or key rotation would.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// SetUpdate sets the update offered to every device; nil, the default,
// offers none.
func (s *Server) SetUpdate(u *poll.Update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.update = u
}

// SetPollInterval sets the poll interval in seconds sent with checks;
// zero, the default, sends none.
func (s *Server) SetPollInterval(seconds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pollInterval = seconds
}

// AddFile serves data at path, such as "/bundles/a.rota", with Range
// support and a strong ETag; auth requires a device token. Adding a file
// again replaces it and changes its ETag.
func (s *Server) AddFile(path string, data []byte, auth bool) {
	sum := sha256.Sum256(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[path] = file{data: data, auth: auth, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// Redirect answers requests for path, such as "/bundles/a.rota", with
// 307 Temporary Redirect to target, as a server that sends downloads to
// a registry or a CDN does; auth requires a device token first. It
// replaces a file at path, and AddFile replaces the redirect.
func (s *Server) Redirect(path, target string, auth bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[path] = file{auth: auth, redirect: target}
}

// Reports returns the reports received for a deployment, without
// duplicates, in order of arrival.
func (s *Server) Reports(deploymentID string) []poll.Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]poll.Report(nil), s.reports[deploymentID]...)
}

// Inventory returns the last inventory of a device; nil if none.
func (s *Server) Inventory(keyID string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inventories[keyID]
}

// Identity returns the identity attributes a device last authenticated
// with; nil if it never did.
func (s *Server) Identity(keyID string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.identities[keyID]
}

// Checks returns every check request received, in order.
func (s *Server) Checks() []poll.CheckRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]poll.CheckRequest(nil), s.checks...)
}

// Hits returns how many requests reached path, failed ones included.
func (s *Server) Hits(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+poll.APIPath+"/auth", s.auth)
	mux.HandleFunc("POST "+poll.APIPath+"/check", s.check)
	mux.HandleFunc("POST "+poll.APIPath+"/deployments/{id}/reports", s.report)
	mux.HandleFunc("PUT "+poll.APIPath+"/inventory", s.inventory)
	mux.HandleFunc("GET /", s.serveFile)
	return s.withFaults(mux)
}

func (s *Server) auth(w http.ResponseWriter, r *http.Request) {
	var req poll.AuthRequest
	if !readJSON(w, r, &req) {
		return
	}
	p, pub, err := req.Verify(time.Now())
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	keyID := poll.KeyID(pub)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nonces[p.Nonce] {
		writeProblem(w, http.StatusBadRequest, "replayed nonce")
		return
	}
	s.nonces[p.Nonce] = true
	s.identities[keyID] = p.Identity.Attributes

	if s.enrollment != "" && p.EnrollmentToken == s.enrollment {
		s.admission[keyID] = poll.AuthAccepted
	}
	state, ok := s.admission[keyID]
	if !ok {
		state = s.defaultState
	}
	switch state {
	case poll.AuthAccepted:
		token := rand.Text()
		expires := time.Now().Add(s.lifetime).UTC().Truncate(time.Second)
		s.tokens[token] = session{keyID: keyID, expires: expires}
		writeJSON(w, http.StatusOK, poll.AuthResponse{Status: state, Token: token,
			ExpiresAt: expires})
	case poll.AuthRejected:
		writeJSON(w, http.StatusForbidden, poll.AuthResponse{Status: state})
	default:
		writeJSON(w, http.StatusAccepted, poll.AuthResponse{Status: poll.AuthPending,
			RetryAfter: s.pendingRetry})
	}
}

// device returns the key ID of the request's valid token, or answers 401.
func (s *Server) device(w http.ResponseWriter, r *http.Request) (string, bool) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	sess, known := s.tokens[token]
	s.mu.Unlock()
	if !ok || !known || time.Now().After(sess.expires) {
		writeProblem(w, http.StatusUnauthorized, "missing, unknown or expired token")
		return "", false
	}
	return sess.keyID, true
}

func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.device(w, r); !ok {
		return
	}
	var req poll.CheckRequest
	if !readJSON(w, r, &req) || !valid(w, req.Validate()) {
		return
	}

	s.mu.Lock()
	s.checks = append(s.checks, req)
	resp := poll.CheckResponse{Update: s.update, PollInterval: s.pollInterval}
	s.mu.Unlock()

	body, _ := json.Marshal(resp)
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.device(w, r); !ok {
		return
	}
	var rep poll.Report
	if !readJSON(w, r, &rep) || !valid(w, rep.Validate()) {
		return
	}
	id := r.PathValue("id")
	key := reportKey{deployment: id, id: rep.ID, state: rep.State}

	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.seenReports[key] {
		s.seenReports[key] = true
		s.reports[id] = append(s.reports[id], rep)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) inventory(w http.ResponseWriter, r *http.Request) {
	keyID, ok := s.device(w, r)
	if !ok {
		return
	}
	var req poll.InventoryRequest
	if !readJSON(w, r, &req) || !valid(w, req.Validate()) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inventories[keyID] = req.Attributes
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	f, ok := s.files[r.URL.Path]
	s.mu.Unlock()
	if !ok {
		writeProblem(w, http.StatusNotFound, "no file at "+r.URL.Path)
		return
	}
	if f.auth {
		if _, ok := s.device(w, r); !ok {
			return
		}
	}
	if f.redirect != "" {
		w.Header().Set("Location", f.redirect)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	w.Header().Set("ETag", f.etag)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestSize))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeProblem(w, http.StatusBadRequest, "decode request: "+err.Error())
		return false
	}
	return true
}

func valid(w http.ResponseWriter, err error) bool {
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(poll.Problem{
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
	})
}
