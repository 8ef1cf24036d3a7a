package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rotaupdate/rota/internal/store"
)

// Names in the authentication scheme of the management API.
const (
	// SessionCookie is the name of the cookie holding a portal session
	// ID.
	SessionCookie = "rota_session"

	// CSRFHeader is the header that must carry the session's CSRF token
	// on every cookie-authenticated request other than GET, HEAD and
	// OPTIONS.
	CSRFHeader = "X-CSRF-Token"

	// TokenPrefix starts every API token secret, so that a leaked one is
	// easy to recognise, by people and by secret scanners.
	TokenPrefix = "rota_"
)

// Limits of login attempts: a user name may fail loginBurst times in a
// row, and then once per 1/loginRate seconds.
const (
	loginBurst = 5
	loginRate  = 1.0 / 30
)

// secretSize is the number of random bytes in a token secret, a session
// ID and a CSRF token; maxSecretLength bounds what is accepted as one.
const (
	secretSize      = 32
	maxSecretLength = 128
)

// The kinds of caller.
const (
	kindUser  = "user"
	kindToken = "token"
)

// caller is who made a request: a logged-in user or an API token.
type caller struct {
	kind    string
	name    string // user name, or the token's label
	tokenID string // set for tokens
	role    store.Role
	session *store.Session // set for users
}

// actor names the caller in the audit log.
func (c *caller) actor() string {
	if c.kind == kindToken {
		return "token:" + c.tokenID
	}
	return "user:" + c.name
}

// roleRank orders the roles by what they may do.
var roleRank = map[store.Role]int{store.RoleViewer: 1, store.RoleOperator: 2,
	store.RoleAdmin: 3}

// may reports whether the caller's role includes need.
func (c *caller) may(need store.Role) bool {
	return roleRank[c.role] >= roleRank[need]
}

type callerKey struct{}

// callerOf returns the caller that authed put in the request's context.
func callerOf(r *http.Request) *caller {
	c, _ := r.Context().Value(callerKey{}).(*caller)
	if c == nil {
		// Only routes wrapped by authed call this; should one not be,
		// its audit entries still name no one falsely.
		return &caller{kind: kindUser, name: "unknown"}
	}
	return c
}

// authed wraps h so that it runs only for a caller whose role includes
// need, found in the request's context.
func (a *mgmtAPI) authed(need store.Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := a.authenticate(w, r)
		if !ok {
			return
		}
		if !c.may(need) {
			writeProblem(w, http.StatusForbidden, fmt.Sprintf(
				"the %s role may not do this; it takes the %s role", c.role, need))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	}
}

// authenticate returns the caller of r, by its bearer token or else its
// session cookie, or answers 401 or 403 and returns false. A request
// with an Authorization header is judged by it alone.
func (a *mgmtAPI) authenticate(w http.ResponseWriter, r *http.Request) (*caller, bool) {
	if r.Header.Get("Authorization") != "" {
		return a.tokenCaller(w, r)
	}
	cookie, err := r.Cookie(SessionCookie)
	if err != nil {
		unauthorized(w, "authentication required: send an API token as a bearer token, or log in")
		return nil, false
	}
	return a.sessionCaller(w, r, cookie.Value)
}

func (a *mgmtAPI) tokenCaller(w http.ResponseWriter, r *http.Request) (*caller, bool) {
	secret, ok := bearerToken(r)
	if !ok || !strings.HasPrefix(secret, TokenPrefix) || len(secret) > maxSecretLength {
		unauthorized(w, "malformed Authorization header: want Bearer "+TokenPrefix+"…")
		return nil, false
	}
	sum := sha256.Sum256([]byte(secret))
	t, err := a.cfg.Store.TokenByHash(r.Context(), sum[:], a.cfg.Now())
	if errors.Is(err, store.ErrNotFound) {
		unauthorized(w, "unknown or expired API token")
		return nil, false
	}
	if err != nil {
		a.fail(w, r, err)
		return nil, false
	}
	return &caller{kind: kindToken, name: t.Name, tokenID: t.ID, role: t.Role}, true
}

func (a *mgmtAPI) sessionCaller(w http.ResponseWriter, r *http.Request,
	id string) (*caller, bool) {
	const gone = "session expired or unknown; log in again"
	if len(id) > maxSecretLength {
		a.clearCookie(w, r)
		unauthorized(w, gone)
		return nil, false
	}
	sum := sha256.Sum256([]byte(id))
	s, err := a.cfg.Store.Session(r.Context(), sum[:], a.cfg.Now())
	var u store.User
	if err == nil {
		u, err = a.cfg.Store.User(r.Context(), s.UserName)
	}
	if errors.Is(err, store.ErrNotFound) {
		a.clearCookie(w, r)
		unauthorized(w, gone)
		return nil, false
	}
	if err != nil {
		a.fail(w, r, err)
		return nil, false
	}
	if unsafeMethod(r.Method) &&
		subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(s.CSRF)) != 1 {
		writeProblem(w, http.StatusForbidden, "missing or wrong "+CSRFHeader+
			" header: changes made with a session cookie need the session's CSRF token")
		return nil, false
	}
	return &caller{kind: kindUser, name: u.Name, role: u.Role, session: &s}, true
}

// unsafeMethod reports whether a request with method may change state.
func unsafeMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

func unauthorized(w http.ResponseWriter, detail string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="rota"`)
	writeProblem(w, http.StatusUnauthorized, detail)
}

// secure reports whether the session cookie must be Secure.
func (a *mgmtAPI) secure(r *http.Request) bool {
	return a.cfg.SecureCookies || r.TLS != nil
}

func (a *mgmtAPI) clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: a.secure(r)})
}

// randomSecret returns secretSize random bytes in unpadded base64url.
func randomSecret() (string, error) {
	b := make([]byte, secretSize)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// dummyHash is checked against when a login names no user, so that the
// answer takes as long as for a wrong password.
var dummyHash = sync.OnceValues(func() (string, error) {
	return HashPassword(rand.Text())
})

// userSummary is a user as the login and me answers show it.
type userSummary struct {
	Name string     `json:"name"`
	Role store.Role `json:"role"`
}

type loginRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

type loginResponse struct {
	User      userSummary `json:"user"`
	CSRFToken string      `json:"csrfToken"`
}

// loginFailed is the one answer to every failed login, so that it does
// not tell which users exist.
const loginFailed = "wrong user name or password"

// login checks a user's password and starts a portal session.
func (a *mgmtAPI) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if !readStrictJSON(w, r, &req) {
		return
	}
	now := a.cfg.Now()
	if len(req.Name) > MaxLabelLength || len(req.Password) > MaxPasswordLength {
		unauthorized(w, loginFailed)
		return
	}
	key := "login:" + req.Name
	if !a.attempt(w, r, key) {
		return
	}
	u, ok, err := a.checkCredentials(r.Context(), req.Name, req.Password)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !ok {
		a.log.InfoContext(r.Context(), "login failed", "user", req.Name)
		unauthorized(w, loginFailed)
		return
	}
	a.logins.refund(key)

	csrf, ok := a.startSession(w, r, u)
	if !ok {
		return
	}
	a.log.InfoContext(r.Context(), "user logged in", "user", u.Name)
	// Logins are rare enough to sweep the expired sessions on.
	if _, err := a.cfg.Store.DeleteExpiredSessions(r.Context(), now); err != nil {
		a.log.WarnContext(r.Context(), "delete expired sessions", "err", err)
	}
	writeJSON(w, http.StatusOK, loginResponse{User: userSummary{Name: u.Name, Role: u.Role},
		CSRFToken: csrf})
}

// startSession stores a new session of u, sets its cookie and returns
// its CSRF token, or answers with an error and returns false.
func (a *mgmtAPI) startSession(w http.ResponseWriter, r *http.Request,
	u store.User) (string, bool) {
	id, err := randomSecret()
	var csrf string
	if err == nil {
		csrf, err = randomSecret()
	}
	if err != nil {
		a.fail(w, r, fmt.Errorf("start session of user %s: %w", u.Name, err))
		return "", false
	}
	now := a.cfg.Now()
	sum := sha256.Sum256([]byte(id))
	ctx := store.WithAudit(r.Context(), store.AuditEntry{Actor: "user:" + u.Name,
		Action: "user.login", Object: "user:" + u.Name, At: now})
	_, err = a.cfg.Store.CreateSession(ctx, store.Session{IDHash: sum[:], UserName: u.Name,
		CSRF: csrf, Expires: now.Add(a.cfg.SessionLifetime)})
	if errors.Is(err, store.ErrNotFound) {
		// The user was deleted since the password check.
		unauthorized(w, loginFailed)
		return "", false
	}
	if err != nil {
		a.fail(w, r, err)
		return "", false
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Path: "/",
		MaxAge: int(a.cfg.SessionLifetime / time.Second), HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: a.secure(r)})
	return csrf, true
}

// attempt spends one password attempt of key, or answers 429 and
// returns false when key failed too often lately. A caller whose attempt
// succeeds refunds it, so that only failures count. Spending before the
// check, rather than after a failure, keeps concurrent attempts from
// passing together.
func (a *mgmtAPI) attempt(w http.ResponseWriter, r *http.Request, key string) bool {
	ok, wait := a.logins.allow(key, a.cfg.Now())
	if ok {
		return true
	}
	secs := max(int((wait+time.Second-1)/time.Second), 1)
	a.log.WarnContext(r.Context(), "password attempts rate limited", "key", key)
	w.Header().Set("Retry-After", fmt.Sprint(secs))
	writeProblem(w, http.StatusTooManyRequests,
		fmt.Sprintf("too many failed attempts; retry in %d s", secs))
	return false
}

// checkCredentials returns the user called name and whether password is
// theirs; an unknown user takes as long as a wrong password.
func (a *mgmtAPI) checkCredentials(ctx context.Context, name,
	password string) (store.User, bool, error) {
	u, err := a.cfg.Store.User(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		if h, err := dummyHash(); err == nil {
			CheckPassword(h, password)
		}
		return store.User{}, false, nil
	}
	if err != nil {
		return store.User{}, false, err
	}
	ok, err := CheckPassword(u.PasswordHash, password)
	if err != nil {
		// A hash no login can match; the user needs a new password.
		a.log.ErrorContext(ctx, "check password", "user", name, "err", err)
		return store.User{}, false, nil
	}
	return u, ok, nil
}

// logout ends the caller's session; for an API token it does nothing.
func (a *mgmtAPI) logout(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	if c.session != nil {
		ctx := a.audited(r, "user.logout", "user:"+c.name, nil)
		if err := a.cfg.Store.DeleteSession(ctx, c.session.IDHash); err != nil {
			a.fail(w, r, err)
			return
		}
		a.clearCookie(w, r)
	}
	w.WriteHeader(http.StatusNoContent)
}

type meJSON struct {
	Name      string     `json:"name"`
	Role      store.Role `json:"role"`
	Kind      string     `json:"kind"`
	ID        string     `json:"id,omitempty"`
	CSRFToken string     `json:"csrfToken,omitempty"`
}

// me describes the caller.
func (a *mgmtAPI) me(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	me := meJSON{Name: c.name, Role: c.role, Kind: c.kind, ID: c.tokenID}
	if c.session != nil {
		me.CSRFToken = c.session.CSRF
	}
	writeJSON(w, http.StatusOK, me)
}

type passwordChange struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

// changeOwnPassword replaces the calling user's password, given the
// current one, and ends the user's other sessions.
func (a *mgmtAPI) changeOwnPassword(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	if c.kind != kindUser {
		writeProblem(w, http.StatusForbidden, "API tokens have no password to change")
		return
	}
	var req passwordChange
	if !readStrictJSON(w, r, &req) {
		return
	}
	key := "login:" + c.name
	if !a.attempt(w, r, key) {
		return
	}
	if len(req.Current) > MaxPasswordLength {
		req.Current = ""
	}
	_, ok, err := a.checkCredentials(r.Context(), c.name, req.Current)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !ok {
		writeProblem(w, http.StatusForbidden, "the current password is wrong")
		return
	}
	a.logins.refund(key)
	hash, err := HashPassword(req.New)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, passwordPolicy)
		return
	}

	a.usersMu.Lock()
	defer a.usersMu.Unlock()
	u, err := a.cfg.Store.User(r.Context(), c.name)
	if err != nil {
		a.storeError(w, r, "user "+c.name, err)
		return
	}
	u.PasswordHash = hash
	ctx := a.audited(r, "user.password", "user:"+c.name, nil)
	var keep []byte
	if c.session != nil {
		keep = c.session.IDHash
	}
	if _, err := a.cfg.Store.UpdateUser(ctx, u, keep); err != nil {
		a.storeError(w, r, "user "+c.name, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// passwordPolicy explains ErrWeakPassword to callers.
var passwordPolicy = fmt.Sprintf("password must be UTF-8 of at least %d characters "+
	"and at most %d bytes", MinPasswordLength, MaxPasswordLength)
