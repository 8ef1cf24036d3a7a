package portal

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// roles are the roles a user or token may hold, least first.
var roles = []string{"viewer", "operator", "admin"}

// tokenLifetimes are the lifetimes offered for new API tokens, as Go
// durations; "" never expires.
var tokenLifetimes = []struct{ Value, Label string }{
	{"720h", "30 days"}, {"2160h", "90 days"}, {"8760h", "1 year"}, {"", "Never"},
}

// adminOnly answers 403 and returns false unless s is an admin. The API
// refuses anyway; this spares a request and says why plainly.
func (p *portal) adminOnly(w http.ResponseWriter, r *http.Request, s *session) bool {
	if s.May("admin") {
		return true
	}
	p.errorPage(w, r, s, http.StatusForbidden, "Only admins manage users and API tokens.")
	return false
}

type usersData struct {
	Users []user
	Form  *form
	Roles []string
}

// users lists the users, with forms to change their role, delete them
// and create new ones.
func (p *portal) users(w http.ResponseWriter, r *http.Request, s *session) {
	if p.adminOnly(w, r, s) {
		p.renderUsers(w, r, s, http.StatusOK, newForm(url.Values{"role": {"viewer"}}))
	}
}

func (p *portal) renderUsers(w http.ResponseWriter, r *http.Request, s *session, status int,
	f *form) {
	d := usersData{Form: f, Roles: roles}
	var list page[user]
	if err := p.api.call(r.Context(), s, http.MethodGet, "/users?limit=1000", nil,
		&list); err != nil {
		p.fail(w, r, s, err)
		return
	}
	d.Users = list.Items
	p.render(w, r, s, status, "users", view{Title: "Users", Section: "users", Data: d})
}

// createUser creates a user from the form.
func (p *portal) createUser(w http.ResponseWriter, r *http.Request, s *session) {
	if !p.adminOnly(w, r, s) {
		return
	}
	f := newForm(r.PostForm)
	name, role, pw := strings.TrimSpace(f.Get("name")), f.Get("role"), f.Get("password")
	if !validLabel(name) {
		f.fail("name", fmt.Sprintf("Use 1 to %d %s.", maxLabel, labelHelp))
	}
	if !slices.Contains(roles, role) {
		f.fail("role", "Pick a role.")
	}
	if msg := checkPassword(pw); msg != "" {
		f.fail("password", msg)
	} else if f.Get("confirm") != pw {
		f.fail("confirm", "The two passwords differ.")
	}
	if !f.ok() {
		p.renderUsers(w, r, s, http.StatusUnprocessableEntity, f)
		return
	}
	err := p.api.call(r.Context(), s, http.MethodPost, "/users",
		map[string]string{"name": name, "role": role, "password": pw}, nil)
	switch statusOf(err) {
	case 0:
		if err != nil {
			p.fail(w, r, s, err)
			return
		}
		p.setFlash(w, r, fmt.Sprintf("User %s created as %s.", name, role))
		http.Redirect(w, r, "/users", http.StatusSeeOther)
		return
	case http.StatusConflict:
		f.fail("name", "A user has this name already.")
	case http.StatusBadRequest:
		f.Error = detailOf(err)
	default:
		p.fail(w, r, s, err)
		return
	}
	p.renderUsers(w, r, s, statusOf(err), f)
}

// setRole changes a user's role.
func (p *portal) setRole(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	role := r.PostForm.Get("role")
	if !p.adminOnly(w, r, s) {
		return
	}
	if !validLabel(name) || !slices.Contains(roles, role) {
		p.errorPage(w, r, s, http.StatusBadRequest, "Pick a user and a role.")
		return
	}
	err := p.api.call(r.Context(), s, http.MethodPatch, "/users/"+url.PathEscape(name),
		map[string]string{"role": role}, nil)
	switch statusOf(err) {
	case 0:
		if err != nil {
			p.fail(w, r, s, err)
			return
		}
		p.setFlash(w, r, fmt.Sprintf("%s is now %s.", name, role))
	case http.StatusConflict:
		p.setFlash(w, r, detailOf(err))
	default:
		p.fail(w, r, s, err)
		return
	}
	http.Redirect(w, r, "/users", http.StatusSeeOther)
}

// deleteUser deletes a user, once confirmed.
func (p *portal) deleteUser(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	if !p.adminOnly(w, r, s) {
		return
	}
	if !validLabel(name) {
		p.notFound(w, r)
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		p.confirm(w, r, s, confirmation{Title: "Delete user " + name,
			Message: "The user is deleted and signed out everywhere.",
			Action:  r.URL.Path, Button: "Delete user", Back: "/users", Danger: true})
		return
	}
	err := p.api.call(r.Context(), s, http.MethodDelete, "/users/"+url.PathEscape(name), nil,
		nil)
	switch statusOf(err) {
	case 0:
		if err != nil {
			p.fail(w, r, s, err)
			return
		}
		p.setFlash(w, r, fmt.Sprintf("User %s deleted.", name))
	case http.StatusConflict:
		p.setFlash(w, r, detailOf(err))
	default:
		p.fail(w, r, s, err)
		return
	}
	http.Redirect(w, r, "/users", http.StatusSeeOther)
}

type tokensData struct {
	Tokens    []token
	Form      *form
	Roles     []string
	Lifetimes []struct{ Value, Label string }
	Created   *token
}

// tokens lists the API tokens, with forms to revoke them and create new
// ones.
func (p *portal) tokens(w http.ResponseWriter, r *http.Request, s *session) {
	if p.adminOnly(w, r, s) {
		p.renderTokens(w, r, s, http.StatusOK, newForm(url.Values{"role": {"viewer"},
			"expires": {"2160h"}}), nil)
	}
}

func (p *portal) renderTokens(w http.ResponseWriter, r *http.Request, s *session,
	status int, f *form, created *token) {
	d := tokensData{Form: f, Roles: roles, Lifetimes: tokenLifetimes, Created: created}
	var list page[token]
	if err := p.api.call(r.Context(), s, http.MethodGet, "/tokens?limit=1000", nil,
		&list); err != nil {
		p.fail(w, r, s, err)
		return
	}
	d.Tokens = list.Items
	slices.SortStableFunc(d.Tokens, func(a, b token) int { return b.Created.Compare(a.Created) })
	p.render(w, r, s, status, "tokens", view{Title: "API tokens", Section: "tokens", Data: d})
}

// createToken creates an API token and shows its secret, this once.
func (p *portal) createToken(w http.ResponseWriter, r *http.Request, s *session) {
	if !p.adminOnly(w, r, s) {
		return
	}
	f := newForm(r.PostForm)
	name, role, expires := strings.TrimSpace(f.Get("name")), f.Get("role"), f.Get("expires")
	if name == "" || !validText(name) {
		f.fail("name", fmt.Sprintf("Name the token, in at most %d characters, such as "+
			"“CI pipeline”.", maxText))
	}
	if !slices.Contains(roles, role) {
		f.fail("role", "Pick a role.")
	}
	if !slices.ContainsFunc(tokenLifetimes, func(l struct{ Value, Label string }) bool {
		return l.Value == expires
	}) {
		f.fail("expires", "Pick a lifetime.")
	}
	if !f.ok() {
		p.renderTokens(w, r, s, http.StatusUnprocessableEntity, f, nil)
		return
	}
	req := map[string]string{"name": name, "role": role}
	if expires != "" {
		req["expiresIn"] = expires
	}
	var tok token
	err := p.api.call(r.Context(), s, http.MethodPost, "/tokens", req, &tok)
	switch statusOf(err) {
	case 0:
		if err != nil {
			p.fail(w, r, s, err)
			return
		}
		p.renderTokens(w, r, s, http.StatusCreated, newForm(url.Values{"role": {"viewer"},
			"expires": {"2160h"}}), &tok)
		return
	case http.StatusBadRequest:
		f.Error = detailOf(err)
	default:
		p.fail(w, r, s, err)
		return
	}
	p.renderTokens(w, r, s, statusOf(err), f, nil)
}

// deleteToken revokes an API token, once confirmed.
func (p *portal) deleteToken(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !p.adminOnly(w, r, s) {
		return
	}
	if !validID(id) {
		p.notFound(w, r)
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		p.confirm(w, r, s, confirmation{Title: "Revoke API token " + shortID(id),
			Message: "Programs using this token lose access at once.",
			Action:  r.URL.Path, Button: "Revoke token", Back: "/tokens", Danger: true})
		return
	}
	err := p.api.call(r.Context(), s, http.MethodDelete, "/tokens/"+url.PathEscape(id), nil,
		nil)
	if err != nil && statusOf(err) != http.StatusNotFound {
		p.fail(w, r, s, err)
		return
	}
	p.setFlash(w, r, fmt.Sprintf("API token %s revoked.", shortID(id)))
	http.Redirect(w, r, "/tokens", http.StatusSeeOther)
}
