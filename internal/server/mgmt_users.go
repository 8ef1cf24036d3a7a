package server

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rotaupdate/rota/internal/store"
)

type userJSON struct {
	Name    string     `json:"name"`
	Role    store.Role `json:"role"`
	Created time.Time  `json:"created"`
	Updated time.Time  `json:"updated"`
}

func toUserJSON(u store.User) userJSON {
	return userJSON{Name: u.Name, Role: u.Role, Created: u.Created, Updated: u.Updated}
}

func validRole(r store.Role) bool {
	return r == store.RoleAdmin || r == store.RoleOperator || r == store.RoleViewer
}

const roleHelp = "role must be admin, operator or viewer"

// userName returns the {name} of the path, or answers 400.
func userName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if !validLabel(name) {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("user name %.80q is invalid", name))
		return "", false
	}
	return name, true
}

func (a *mgmtAPI) listUsers(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, pageParams...)
	if !ok {
		return
	}
	page, ok := readPage(w, q)
	if !ok {
		return
	}
	users, err := a.cfg.Store.ListUsers(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	users, next := pageOf(users, func(u store.User) string { return u.Name }, page)
	writeJSON(w, http.StatusOK, newPage(users, next, toUserJSON))
}

type userRequest struct {
	Name     string     `json:"name"`
	Role     store.Role `json:"role"`
	Password string     `json:"password"`
}

func (a *mgmtAPI) createUser(w http.ResponseWriter, r *http.Request) {
	var req userRequest
	if !readStrictJSON(w, r, &req) {
		return
	}
	switch {
	case !validLabel(req.Name):
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf(
			"name must be 1 to %d letters, digits or '._-@', starting with a letter or digit",
			MaxLabelLength))
		return
	case !validRole(req.Role):
		writeProblem(w, http.StatusBadRequest, roleHelp)
		return
	}
	hash, err := HashPassword(req.Password)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, passwordPolicy)
		return
	}
	ctx := a.audited(r, "user.create", "user:"+req.Name, map[string]any{"role": req.Role})
	u, err := a.cfg.Store.CreateUser(ctx, store.User{Name: req.Name, Role: req.Role,
		PasswordHash: hash})
	if err != nil {
		a.storeError(w, r, "user "+req.Name, err)
		return
	}
	w.Header().Set("Location", ManagementAPIPath+"/users/"+u.Name)
	writeJSON(w, http.StatusCreated, toUserJSON(u))
}

func (a *mgmtAPI) getUser(w http.ResponseWriter, r *http.Request) {
	name, ok := userName(w, r)
	if !ok {
		return
	}
	u, err := a.cfg.Store.User(r.Context(), name)
	if err != nil {
		a.storeError(w, r, "user "+name, err)
		return
	}
	writeJSON(w, http.StatusOK, toUserJSON(u))
}

type userPatch struct {
	Role     *store.Role `json:"role"`
	Password *string     `json:"password"`
}

// updateUser changes a user's role, password or both; it refuses to
// demote the last admin.
func (a *mgmtAPI) updateUser(w http.ResponseWriter, r *http.Request) {
	name, ok := userName(w, r)
	if !ok {
		return
	}
	var req userPatch
	if !readStrictJSON(w, r, &req) {
		return
	}
	switch {
	case req.Role == nil && req.Password == nil:
		writeProblem(w, http.StatusBadRequest, "nothing to change: give role, password or both")
		return
	case req.Role != nil && !validRole(*req.Role):
		writeProblem(w, http.StatusBadRequest, roleHelp)
		return
	}
	var hash string
	if req.Password != nil {
		var err error
		if hash, err = HashPassword(*req.Password); err != nil {
			writeProblem(w, http.StatusBadRequest, passwordPolicy)
			return
		}
	}

	a.usersMu.Lock()
	defer a.usersMu.Unlock()
	u, err := a.cfg.Store.User(r.Context(), name)
	if err != nil {
		a.storeError(w, r, "user "+name, err)
		return
	}
	details := map[string]any{}
	if req.Role != nil && *req.Role != u.Role {
		details["role"] = *req.Role
		u.Role = *req.Role
	}
	if hash != "" {
		details["password"] = "changed"
		u.PasswordHash = hash
	}
	// A new password ends the user's sessions, but for the caller's own
	// session when they reset their own password.
	var keep []byte
	if c := callerOf(r); c.session != nil && c.name == name {
		keep = c.session.IDHash
	}
	u, err = a.cfg.Store.UpdateUser(a.audited(r, "user.update", "user:"+name, details), u, keep)
	if err != nil {
		a.storeError(w, r, "user "+name, err)
		return
	}
	writeJSON(w, http.StatusOK, toUserJSON(u))
}

// deleteUser removes a user and their sessions, unless they are the last
// admin.
func (a *mgmtAPI) deleteUser(w http.ResponseWriter, r *http.Request) {
	name, ok := userName(w, r)
	if !ok {
		return
	}
	if err := a.cfg.Store.DeleteUser(a.audited(r, "user.delete", "user:"+name, nil),
		name); err != nil {
		a.storeError(w, r, "user "+name, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type tokenJSON struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      store.Role `json:"role"`
	ExpiresAt time.Time  `json:"expiresAt,omitzero"`
	Created   time.Time  `json:"created"`

	// Secret is set only in the answer that creates the token.
	Secret string `json:"secret,omitempty"`
}

func toTokenJSON(t store.APIToken) tokenJSON {
	return tokenJSON{ID: t.ID, Name: t.Name, Role: t.Role, ExpiresAt: t.Expires,
		Created: t.Created}
}

func (a *mgmtAPI) listTokens(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, pageParams...)
	if !ok {
		return
	}
	page, ok := readPage(w, q)
	if !ok {
		return
	}
	tokens, err := a.cfg.Store.ListTokens(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	tokens, next := pageOf(tokens, func(t store.APIToken) string { return t.ID }, page)
	writeJSON(w, http.StatusOK, newPage(tokens, next, toTokenJSON))
}

// maxTokenLifetime bounds expiresIn; a token meant to outlive it needs
// no expiry at all.
const maxTokenLifetime = 100 * 365 * 24 * time.Hour

type tokenRequest struct {
	Name      string     `json:"name"`
	Role      store.Role `json:"role"`
	ExpiresIn string     `json:"expiresIn"`
	ExpiresAt time.Time  `json:"expiresAt"`
}

// createToken makes an API token and answers with its secret, which is
// shown this once: only its SHA-256 is stored.
func (a *mgmtAPI) createToken(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !readStrictJSON(w, r, &req) {
		return
	}
	now := a.cfg.Now()
	expires, err := tokenExpiry(req, now)
	switch {
	case req.Name == "" || !validText(req.Name):
		err = errors.New("name must be 1 to 256 bytes of text")
	case !validRole(req.Role):
		err = errors.New(roleHelp)
	}
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	secret, t, err := NewAPIToken(req.Name, req.Role, expires)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	details := map[string]any{"name": t.Name, "role": t.Role}
	if !expires.IsZero() {
		details["expiresAt"] = expires
	}
	t, err = a.cfg.Store.CreateToken(a.audited(r, "token.create", "token:"+t.ID, details), t)
	if err != nil {
		a.storeError(w, r, "token", err)
		return
	}
	out := toTokenJSON(t)
	out.Secret = secret
	w.Header().Set("Location", ManagementAPIPath+"/tokens/"+t.ID)
	writeJSON(w, http.StatusCreated, out)
}

// NewAPIToken returns a new API token's secret and the token to store,
// which holds only the secret's SHA-256; expires zero means never. The
// secret starts with TokenPrefix.
func NewAPIToken(name string, role store.Role, expires time.Time) (secret string,
	t store.APIToken, err error) {
	secret, err = randomSecret()
	if err != nil {
		return "", store.APIToken{}, fmt.Errorf("create token: %w", err)
	}
	secret = TokenPrefix + secret
	sum := sha256.Sum256([]byte(secret))
	return secret, store.APIToken{ID: newID(), Name: name, Role: role, Hash: sum[:],
		Expires: expires}, nil
}

// tokenExpiry returns when a requested token expires; zero for never.
func tokenExpiry(req tokenRequest, now time.Time) (time.Time, error) {
	switch {
	case req.ExpiresIn != "" && !req.ExpiresAt.IsZero():
		return time.Time{}, errors.New("give expiresIn or expiresAt, not both")
	case req.ExpiresIn != "":
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 || d > maxTokenLifetime {
			return time.Time{}, fmt.Errorf("expiresIn %.40q is not a duration such as "+
				"720h, above zero and at most %v", req.ExpiresIn, maxTokenLifetime)
		}
		return now.Add(d).UTC(), nil
	case !req.ExpiresAt.IsZero():
		if !req.ExpiresAt.After(now) {
			return time.Time{}, errors.New("expiresAt is not in the future")
		}
		return req.ExpiresAt.UTC(), nil
	}
	return time.Time{}, nil
}

func (a *mgmtAPI) deleteToken(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	if err := a.cfg.Store.DeleteToken(a.audited(r, "token.delete", "token:"+id, nil),
		id); err != nil {
		a.storeError(w, r, "token "+id, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
