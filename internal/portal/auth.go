package portal

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Cookies and fields of the portal besides the session cookie.
const (
	// loginCookie holds the token the sign-in form must carry, since
	// there is no session yet to take one from.
	loginCookie = "rota_login"

	// flashCookie carries a message to the page after a redirect.
	flashCookie = "rota_flash"

	// csrfField is the hidden field of every form holding the CSRF
	// token.
	csrfField = "csrf"

	// loginTokenLen is the length of the sign-in form's token: two
	// rand.Text strings.
	loginTokenLen = 52

	// maxSessionID bounds what is accepted as a session cookie.
	maxSessionID = 256

	// minPassword and maxPassword are the API's password policy.
	minPassword = 10
	maxPassword = 1024
)

// roleRank orders the roles by what they may do.
var roleRank = map[string]int{"viewer": 1, "operator": 2, "admin": 3}

// session is the signed-in user of a request, as the API's GET /me
// describes them.
type session struct {
	id string // the session cookie's value

	// Name and Role are the user's.
	Name, Role string

	// CSRF is the session's CSRF token, which every form carries.
	CSRF string
}

// May reports whether the user's role includes role.
func (s *session) May(role string) bool {
	return s != nil && roleRank[s.Role] >= roleRank[role] && roleRank[role] > 0
}

// validToken reports, in constant time, whether token is the session's
// CSRF token.
func (s *session) validToken(token string) bool {
	return s.CSRF != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.CSRF)) == 1
}

// handlerFunc serves a request of a signed-in user.
type handlerFunc func(w http.ResponseWriter, r *http.Request, s *session)

// errSignedOut means a request has no valid session.
var errSignedOut = errors.New("signed out")

// signedIn wraps h so that it runs only for a signed-in user; others are
// sent to sign in. With checkForm, a POST's form is parsed and must carry
// the session's CSRF token, or gets 403.
func (p *portal) signedIn(h handlerFunc, checkForm bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := p.session(r)
		if errors.Is(err, errSignedOut) {
			p.clearCookie(w, r, SessionCookie, "/")
			p.toLogin(w, r)
			return
		}
		if err != nil {
			p.fail(w, r, nil, err)
			return
		}
		if r.Method == http.MethodPost && checkForm {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormSize)
			if err := r.ParseForm(); err != nil {
				p.errorPage(w, r, s, http.StatusBadRequest, "The form could not be read.")
				return
			}
			if !s.validToken(r.PostForm.Get(csrfField)) {
				p.errorPage(w, r, s, http.StatusForbidden, "The form's security token is "+
					"missing or out of date. Go back, reload the page and try again.")
				return
			}
		}
		h(w, r, s)
	})
}

// session returns the signed-in user of r, or errSignedOut.
func (p *portal) session(r *http.Request) (*session, error) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > maxSessionID {
		return nil, errSignedOut
	}
	s := &session{id: c.Value}
	var m me
	err = p.api.call(r.Context(), s, http.MethodGet, "/me", nil, &m)
	if statusOf(err) == http.StatusUnauthorized {
		return nil, errSignedOut
	}
	if err != nil {
		return nil, err
	}
	if m.Kind != "user" || m.CSRFToken == "" {
		return nil, errSignedOut
	}
	s.Name, s.Role, s.CSRF = m.Name, m.Role, m.CSRFToken
	return s, nil
}

// toLogin sends the browser to sign in, and back to this page after.
func (p *portal) toLogin(w http.ResponseWriter, r *http.Request) {
	if wantsJSON(r) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "signed out"})
		return
	}
	target := "/login"
	if r.Method == http.MethodGet && r.URL.Path != "/" {
		target += "?next=" + url.QueryEscape(r.URL.RequestURI())
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// localPath returns next if it is a path of this site, and "/" for
// anything else: another site, a scheme, a protocol-relative or
// backslashed path, control characters, or the sign-in page itself.
func localPath(next string) string {
	if next == "" || len(next) > 2048 || next[0] != '/' || !utf8.ValidString(next) ||
		strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\x00\r\n\t") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil ||
		u.Path == "/login" || !strings.HasPrefix(u.Path, "/") {
		return "/"
	}
	for _, c := range next {
		if c < 0x20 || c == 0x7f {
			return "/"
		}
	}
	return next
}

// loginPage shows the sign-in form, or sends a signed-in user on.
func (p *portal) loginPage(w http.ResponseWriter, r *http.Request) {
	next := localPath(r.URL.Query().Get("next"))
	if _, err := p.session(r); err == nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	f := newForm(url.Values{"next": {next}})
	p.renderLogin(w, r, http.StatusOK, f)
}

// renderLogin shows the sign-in form f with a form token, made anew
// unless the browser has one.
func (p *portal) renderLogin(w http.ResponseWriter, r *http.Request, status int, f *form) {
	tok := ""
	if c, err := r.Cookie(loginCookie); err == nil && len(c.Value) == loginTokenLen {
		tok = c.Value
	} else {
		tok = rand.Text() + rand.Text()
		http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/login",
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: p.secure(r)})
	}
	p.render(w, r, nil, status, "login", view{Title: "Sign in",
		Data: struct {
			Form  *form
			Token string
		}{f, tok}})
}

// login checks the sign-in form, starts a session of the API and hands
// its cookie to the browser.
func (p *portal) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormSize)
	if err := r.ParseForm(); err != nil {
		p.errorPage(w, r, nil, http.StatusBadRequest, "The form could not be read.")
		return
	}
	f := newForm(url.Values{"name": {strings.TrimSpace(r.PostForm.Get("name"))},
		"next": {localPath(r.PostForm.Get("next"))}})
	c, err := r.Cookie(loginCookie)
	if err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value),
		[]byte(r.PostForm.Get(csrfField))) != 1 {
		f.Error = "The sign-in form expired. Please sign in again."
		r.Header.Del("Cookie") // so that a new form token is made
		p.renderLogin(w, r, http.StatusForbidden, f)
		return
	}
	name, password := f.Get("name"), r.PostForm.Get("password")
	f.require("name", "Enter your user name.")
	if password == "" {
		f.fail("password", "Enter your password.")
	}
	if !f.ok() {
		p.renderLogin(w, r, http.StatusUnprocessableEntity, f)
		return
	}
	id, maxAge, err := p.api.login(r.Context(), name, password)
	switch statusOf(err) {
	case 0:
		if err != nil {
			p.fail(w, r, nil, err)
			return
		}
	case http.StatusUnauthorized, http.StatusBadRequest:
		f.Error = "Wrong user name or password."
		p.renderLogin(w, r, http.StatusUnauthorized, f)
		return
	default:
		f.Error = detailOf(err)
		p.renderLogin(w, r, statusOf(err), f)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: p.secure(r)})
	p.clearCookie(w, r, loginCookie, "/login")
	http.Redirect(w, r, f.Get("next"), http.StatusSeeOther)
}

// login starts a session of the API and returns its ID and lifetime in
// seconds, taken from the session cookie the API sets.
func (c *apiClient) login(ctx context.Context, name, password string) (string, int, error) {
	body, err := json.Marshal(map[string]string{"name": name, "password": password})
	if err != nil {
		return "", 0, fmt.Errorf("management api POST /login: encode request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := c.request(ctx, nil, http.MethodPost, "/login", bytes.NewReader(body))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return "", 0, err
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == SessionCookie && ck.Value != "" {
			cookie = ck
		}
	}
	if err := c.read(resp, http.MethodPost, "/login", nil); err != nil {
		return "", 0, err
	}
	if cookie == nil || len(cookie.Value) > maxSessionID {
		return "", 0, errors.New("management api POST /login: no session cookie in the answer")
	}
	return cookie.Value, max(cookie.MaxAge, 0), nil
}

// logout ends the session at the API and in the browser.
func (p *portal) logout(w http.ResponseWriter, r *http.Request, s *session) {
	err := p.api.call(r.Context(), s, http.MethodPost, "/logout", nil, nil)
	if err != nil && statusOf(err) != http.StatusUnauthorized {
		p.fail(w, r, s, err)
		return
	}
	p.clearCookie(w, r, SessionCookie, "/")
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// clearCookie tells the browser to drop the cookie name of path.
func (p *portal) clearCookie(w http.ResponseWriter, r *http.Request, name, path string) {
	http.SetCookie(w, &http.Cookie{Name: name, Path: path, MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: p.secure(r)})
}

// setFlash shows msg on the next page the browser loads.
func (p *portal) setFlash(w http.ResponseWriter, r *http.Request, msg string) {
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Path: "/", MaxAge: 60, HttpOnly: true,
		Value: base64.RawURLEncoding.EncodeToString([]byte(msg)), Secure: p.secure(r),
		SameSite: http.SameSiteStrictMode})
}

// takeFlash returns the message set by setFlash, if any, and drops it.
func (p *portal) takeFlash(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return ""
	}
	p.clearCookie(w, r, flashCookie, "/")
	msg, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil || len(msg) > 1024 || !utf8.Valid(msg) {
		return ""
	}
	return string(msg)
}

// account shows the signed-in user and the form to change their
// password.
func (p *portal) account(w http.ResponseWriter, r *http.Request, s *session) {
	p.renderAccount(w, r, s, http.StatusOK, newForm(nil))
}

func (p *portal) renderAccount(w http.ResponseWriter, r *http.Request, s *session,
	status int, f *form) {
	p.render(w, r, s, status, "account", view{Title: "Your account", Data: f})
}

// changePassword changes the signed-in user's password.
func (p *portal) changePassword(w http.ResponseWriter, r *http.Request, s *session) {
	f := newForm(nil)
	current, next := r.PostForm.Get("current"), r.PostForm.Get("new")
	if current == "" {
		f.fail("current", "Enter your current password.")
	}
	if msg := checkPassword(next); msg != "" {
		f.fail("new", msg)
	} else if r.PostForm.Get("confirm") != next {
		f.fail("confirm", "The two new passwords differ.")
	}
	if !f.ok() {
		p.renderAccount(w, r, s, http.StatusUnprocessableEntity, f)
		return
	}
	err := p.api.call(r.Context(), s, http.MethodPost, "/me/password",
		map[string]string{"current": current, "new": next}, nil)
	switch statusOf(err) {
	case 0:
		if err != nil {
			p.fail(w, r, s, err)
			return
		}
		p.setFlash(w, r, "Your password was changed.")
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	case http.StatusForbidden:
		f.fail("current", "The current password is wrong.")
	case http.StatusBadRequest:
		f.fail("new", detailOf(err))
	case http.StatusUnauthorized:
		p.fail(w, r, s, err)
		return
	default:
		f.Error = detailOf(err)
	}
	status := statusOf(err)
	if status == http.StatusForbidden {
		status = http.StatusUnprocessableEntity // a wrong field, not a refusal
	}
	p.renderAccount(w, r, s, status, f)
}

// checkPassword returns what is wrong with a new password under the
// API's policy, or "".
func checkPassword(pw string) string {
	switch {
	case utf8.RuneCountInString(pw) < minPassword:
		return fmt.Sprintf("Use at least %d characters.", minPassword)
	case len(pw) > maxPassword || !utf8.ValidString(pw):
		return fmt.Sprintf("Use at most %d bytes of text.", maxPassword)
	}
	return ""
}

// wantsJSON reports whether the request, made by the portal's script,
// asks for a JSON answer.
func wantsJSON(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Accept"), "application/json")
}

// writeJSON answers v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		body, status = []byte(`{"error":"encode answer"}`), http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body)
}
