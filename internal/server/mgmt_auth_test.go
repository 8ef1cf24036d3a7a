package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewManagementAPI_RefusesIncompleteConfig(t *testing.T) {
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "rota.db"))
	require.NoError(t, err)
	defer st.Close()
	good := func() server.ManagementAPIConfig {
		return server.ManagementAPIConfig{Store: st, Bundles: &dirStore{dir: t.TempDir()},
			Keyring: testKeys().keyring, TempDir: t.TempDir()}
	}
	tests := []struct {
		name   string
		change func(*server.ManagementAPIConfig)
	}{
		{"no store", func(c *server.ManagementAPIConfig) { c.Store = nil }},
		{"no bundle store", func(c *server.ManagementAPIConfig) { c.Bundles = nil }},
		{"no temporary directory", func(c *server.ManagementAPIConfig) { c.TempDir = "" }},
		{"a missing temporary directory", func(c *server.ManagementAPIConfig) {
			c.TempDir = filepath.Join(c.TempDir, "missing")
		}},
		{"a negative upload size", func(c *server.ManagementAPIConfig) {
			c.MaxUploadSize = -1
		}},
		{"a negative session lifetime", func(c *server.ManagementAPIConfig) {
			c.SessionLifetime = -time.Hour
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.change(&cfg)
			_, err := server.NewManagementAPI(cfg)
			require.ErrorIs(t, err, server.ErrConfig)
		})
	}
	_, err = server.NewManagementAPI(good())
	require.NoError(t, err)
}

func TestHashPassword(t *testing.T) {
	hash, err := server.HashPassword("correct horse battery")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$"), hash)
	other, err := server.HashPassword("correct horse battery")
	require.NoError(t, err)
	assert.NotEqual(t, hash, other, "the salt is random")

	match, err := server.CheckPassword(hash, "correct horse battery")
	require.NoError(t, err)
	assert.True(t, match)
	match, err = server.CheckPassword(hash, "correct horse battery!")
	require.NoError(t, err)
	assert.False(t, match)

	for _, weak := range []string{"", "short", "123456789", "\xff\xfe0123456789",
		strings.Repeat("x", server.MaxPasswordLength+1)} {
		_, err := server.HashPassword(weak)
		assert.ErrorIs(t, err, server.ErrWeakPassword, "%q", weak)
	}
	_, err = server.HashPassword("ünïcödé-10") // ten characters, more bytes
	assert.NoError(t, err)
}

func TestCheckPassword_RefusesMalformedHashes(t *testing.T) {
	const salt, key = "c2FsdHNhbHRzYWx0c2FsdA", "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U"
	tests := []struct {
		name, hash string
	}{
		{"an empty hash", ""},
		{"a bcrypt hash", "$2a$10$abcdefghijklmnopqrstuuJdKXyB1zT9q6sF5hW0o2wfpIMrXEZ6"},
		{"argon2i", "$argon2i$v=19$m=19456,t=2,p=1$" + salt + "$" + key},
		{"another version", "$argon2id$v=16$m=19456,t=2,p=1$" + salt + "$" + key},
		{"zero passes", "$argon2id$v=19$m=19456,t=0,p=1$" + salt + "$" + key},
		{"zero threads", "$argon2id$v=19$m=19456,t=2,p=0$" + salt + "$" + key},
		{"huge memory", "$argon2id$v=19$m=99999999,t=2,p=1$" + salt + "$" + key},
		{"negative memory", "$argon2id$v=19$m=-5,t=2,p=1$" + salt + "$" + key},
		{"parameters with trailing junk", "$argon2id$v=19$m=19456,t=2,p=1x$" + salt + "$" +
			key},
		{"a salt that is not base64", "$argon2id$v=19$m=19456,t=2,p=1$!!!$" + key},
		{"a short key", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$a2V5"},
		{"too many fields", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key + "$x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			match, err := server.CheckPassword(tt.hash, "correct horse battery")
			assert.ErrorIs(t, err, server.ErrBadHash)
			assert.False(t, match)
		})
	}
}

func TestEnsureAdmin(t *testing.T) {
	tests := []struct {
		name     string
		password string
	}{
		{"with a given password", "the admin's password"},
		{"with a generated password", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMgmtEnv(t)
			ctx := context.Background()
			oneTime, err := server.EnsureAdmin(ctx, e.st, tt.password)
			require.NoError(t, err)
			password := tt.password
			if password == "" {
				require.GreaterOrEqual(t, len(oneTime), server.MinPasswordLength)
				password = oneTime
			} else {
				require.Empty(t, oneTime)
			}
			u, err := e.st.User(ctx, server.AdminName)
			require.NoError(t, err)
			assert.Equal(t, store.RoleAdmin, u.Role)
			assert.NotContains(t, u.PasswordHash, password)
			s := e.login(t, server.AdminName, password)
			me := ok[map[string]any](t, e.call(t, "GET", "/me", s, nil), http.StatusOK)
			assert.Equal(t, "admin", me["role"])

			entries := e.audit(t)
			created := entries[len(entries)-1]
			assert.Equal(t, server.SetupActor, created.Actor)
			assert.Equal(t, "user.create", created.Action)

			again, err := server.EnsureAdmin(ctx, e.st, "")
			require.NoError(t, err)
			assert.Empty(t, again)
			users, err := e.st.ListUsers(ctx)
			require.NoError(t, err)
			assert.Len(t, users, 1)
			e.login(t, server.AdminName, password) // unchanged
		})
	}
}

func TestEnsureAdmin_RefusesAWeakPassword(t *testing.T) {
	e := newMgmtEnv(t)
	_, err := server.EnsureAdmin(context.Background(), e.st, "short")
	require.ErrorIs(t, err, server.ErrWeakPassword)
	users, err := e.st.ListUsers(context.Background())
	require.NoError(t, err)
	assert.Empty(t, users)
}

func TestManagementAPI_Roles(t *testing.T) {
	e := newMgmtEnv(t)
	none, viewer, operator, admin := store.Role(""), store.RoleViewer, store.RoleOperator,
		store.RoleAdmin
	tests := []struct {
		method, path string
		body         any
		need         store.Role
	}{
		{"GET", "/me", nil, viewer},
		{"POST", "/logout", nil, viewer},
		{"GET", "/releases", nil, viewer},
		{"GET", "/releases/nope", nil, viewer},
		{"POST", "/releases", "not a bundle", operator},
		{"POST", "/releases/register", map[string]string{"reference": ""}, operator},
		{"DELETE", "/releases/nope", nil, operator},
		{"GET", "/devices", nil, viewer},
		{"GET", "/devices/nope", nil, viewer},
		{"POST", "/devices/preauthorize", map[string]string{}, operator},
		{"POST", "/devices/nope/accept", nil, operator},
		{"POST", "/devices/nope/reject", nil, operator},
		{"POST", "/devices/nope/decommission", nil, operator},
		{"PUT", "/devices/nope/tags", map[string][]string{"tags": {}}, operator},
		{"PUT", "/devices/nope/groups", map[string][]string{"groups": {}}, operator},
		{"GET", "/groups", nil, viewer},
		{"GET", "/deployments", nil, viewer},
		{"POST", "/deployments", map[string]string{}, operator},
		{"GET", "/deployments/nope", nil, viewer},
		{"GET", "/deployments/nope/devices", nil, viewer},
		{"POST", "/deployments/nope/pause", nil, operator},
		{"POST", "/deployments/nope/resume", nil, operator},
		{"POST", "/deployments/nope/abort", nil, operator},
		{"GET", "/audit", nil, viewer},
		{"GET", "/users", nil, admin},
		{"POST", "/users", map[string]string{}, admin},
		{"GET", "/users/nobody", nil, admin},
		{"PATCH", "/users/nobody", map[string]string{}, admin},
		{"DELETE", "/users/nobody", nil, admin},
		{"GET", "/tokens", nil, admin},
		{"POST", "/tokens", map[string]string{}, admin},
		{"DELETE", "/tokens/nope", nil, admin},
	}
	rank := map[store.Role]int{none: 0, viewer: 1, operator: 2, admin: 3}
	for _, tt := range tests {
		for _, role := range []store.Role{none, viewer, operator, admin} {
			name := tt.method + " " + tt.path + " as " + string(role)
			if role == none {
				name = tt.method + " " + tt.path + " without credentials"
			}
			t.Run(name, func(t *testing.T) {
				var who credentials = bearer("")
				if role != none {
					who = e.tokens[role]
				}
				w := e.call(t, tt.method, tt.path, who, tt.body)
				switch {
				case role == none:
					requireProblem(t, w, http.StatusUnauthorized, "authentication required")
					assert.Equal(t, `Bearer realm="rota"`, w.Header().Get("WWW-Authenticate"))
				case rank[role] < rank[tt.need]:
					requireProblem(t, w, http.StatusForbidden, "takes the "+string(tt.need))
				default:
					assert.NotContains(t, []int{401, 403}, w.Code, w.Body.String())
				}
			})
		}
	}
}

func TestManagementAPI_Tokens(t *testing.T) {
	e := newMgmtEnv(t)
	w := e.as(t, store.RoleAdmin, "POST", "/tokens", map[string]any{"name": "ci",
		"role": "operator", "expiresIn": "1h"})
	created := ok[struct {
		ID, Name, Role, Secret string
		ExpiresAt              time.Time
	}](t, w, http.StatusCreated)
	require.True(t, strings.HasPrefix(created.Secret, server.TokenPrefix), created.Secret)
	assert.Equal(t, e.clock.Now().Add(time.Hour).UTC(), created.ExpiresAt)
	assert.Equal(t, "/api/v1/tokens/"+created.ID, w.Header().Get("Location"))

	secret := bearer(created.Secret)
	me := ok[map[string]any](t, e.call(t, "GET", "/me", secret, nil), http.StatusOK)
	assert.Equal(t, map[string]any{"name": "ci", "role": "operator", "kind": "token",
		"id": created.ID}, me)
	w = e.call(t, "GET", "/tokens", secret, nil)
	requireProblem(t, w, http.StatusForbidden, "takes the admin role")

	list := e.as(t, store.RoleAdmin, "GET", "/tokens", nil)
	assert.NotContains(t, list.Body.String(), created.Secret)
	assert.NotContains(t, list.Body.String(), "secret")
	for _, entry := range e.audit(t) {
		assert.NotContains(t, string(entry.Details), created.Secret)
	}

	e.clock.Advance(time.Hour)
	w = e.call(t, "GET", "/me", secret, nil)
	requireProblem(t, w, http.StatusUnauthorized, "unknown or expired API token")

	w = e.as(t, store.RoleAdmin, "DELETE", "/tokens/"+created.ID, nil)
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
	w = e.as(t, store.RoleAdmin, "DELETE", "/tokens/"+created.ID, nil)
	requireProblem(t, w, http.StatusNotFound, "not found")

	viewer := e.tokens[store.RoleViewer]
	w = e.as(t, store.RoleAdmin, "DELETE", "/tokens/"+e.tokenID(t, viewer), nil)
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
	w = e.call(t, "GET", "/me", viewer, nil)
	requireProblem(t, w, http.StatusUnauthorized, "unknown or expired")
}

func TestManagementAPI_CreateToken_RefusesBadRequests(t *testing.T) {
	e := newMgmtEnv(t)
	future := e.clock.Now().Add(time.Hour).Format(time.RFC3339)
	tests := []struct {
		name   string
		body   any
		detail string
	}{
		{"no name", map[string]any{"role": "viewer"}, "name"},
		{"an unknown role", map[string]any{"name": "x", "role": "root"}, "role"},
		{"both expiries", map[string]any{"name": "x", "role": "viewer", "expiresIn": "1h",
			"expiresAt": future}, "not both"},
		{"a negative lifetime", map[string]any{"name": "x", "role": "viewer",
			"expiresIn": "-1h"}, "expiresIn"},
		{"a lifetime that is no duration", map[string]any{"name": "x", "role": "viewer",
			"expiresIn": "soon"}, "expiresIn"},
		{"an expiry in the past", map[string]any{"name": "x", "role": "viewer",
			"expiresAt": "2001-01-01T00:00:00Z"}, "not in the future"},
		{"an unknown field", map[string]any{"name": "x", "role": "viewer", "expires": "1h"},
			"unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.as(t, store.RoleAdmin, "POST", "/tokens", tt.body)
			requireProblem(t, w, http.StatusBadRequest, tt.detail)
		})
	}
}

func TestManagementAPI_Login(t *testing.T) {
	e := newMgmtEnv(t)
	password := e.user(t, "alice", store.RoleOperator)

	w := e.call(t, "POST", "/login", nil, map[string]string{"name": "alice",
		"password": password})
	resp := ok[struct {
		User      struct{ Name, Role string }
		CSRFToken string
	}](t, w, http.StatusOK)
	assert.Equal(t, "alice", resp.User.Name)
	assert.Equal(t, "operator", resp.User.Role)
	cookies := w.Result().Cookies()
	require.Len(t, cookies, 1)
	c := cookies[0]
	assert.Equal(t, server.SessionCookie, c.Name)
	assert.True(t, c.HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, c.SameSite)
	assert.False(t, c.Secure, "plain HTTP without SecureCookies")
	assert.Equal(t, int(server.DefaultSessionLifetime/time.Second), c.MaxAge)

	s := session{cookie: c, csrf: resp.CSRFToken}
	me := ok[map[string]any](t, e.call(t, "GET", "/me", s, nil), http.StatusOK)
	assert.Equal(t, map[string]any{"name": "alice", "role": "operator", "kind": "user",
		"csrfToken": resp.CSRFToken}, me)

	sessions := e.audit(t)
	assert.Equal(t, "user.login", sessions[0].Action)
	assert.Equal(t, "user:alice", sessions[0].Actor)

	w = e.call(t, "POST", "/logout", s, nil)
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
	assert.Equal(t, -1, w.Result().Cookies()[0].MaxAge)
	w = e.call(t, "GET", "/me", s, nil)
	requireProblem(t, w, http.StatusUnauthorized, "log in again")
}

func TestManagementAPI_Login_Fails(t *testing.T) {
	e := newMgmtEnv(t)
	password := e.user(t, "alice", store.RoleViewer)
	tests := []struct {
		name     string
		body     any
		code     int
		detail   string
		fromName string
	}{
		{"a wrong password", map[string]string{"name": "alice", "password": "wrong-password"},
			http.StatusUnauthorized, "wrong user name or password", ""},
		{"an unknown user", map[string]string{"name": "bob", "password": password},
			http.StatusUnauthorized, "wrong user name or password", ""},
		{"an oversized name", map[string]string{"name": strings.Repeat("a", 100),
			"password": password}, http.StatusUnauthorized, "wrong user name or password", ""},
		{"an unknown field", map[string]string{"name": "alice", "password": password,
			"otp": "1"}, http.StatusBadRequest, "unknown field", ""},
		{"malformed JSON", `{"name": "alice"`, http.StatusBadRequest, "decode request", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.call(t, "POST", "/login", nil, tt.body)
			requireProblem(t, w, tt.code, tt.detail)
			assert.Empty(t, w.Result().Cookies())
		})
	}
	t.Run("a body not declared as JSON", func(t *testing.T) {
		w := e.call(t, "POST", "/login", nil, map[string]string{"name": "alice",
			"password": password}, "Content-Type", "application/x-www-form-urlencoded")
		requireProblem(t, w, http.StatusUnsupportedMediaType, "application/json")
	})
}

func TestManagementAPI_Login_RateLimitsFailures(t *testing.T) {
	e := newMgmtEnv(t)
	password := e.user(t, "alice", store.RoleViewer)
	e.user(t, "bob", store.RoleViewer)
	wrong := map[string]string{"name": "alice", "password": "wrong-password"}
	for range 5 {
		w := e.call(t, "POST", "/login", nil, wrong)
		require.Equal(t, http.StatusUnauthorized, w.Code, w.Body.String())
	}
	right := map[string]string{"name": "alice", "password": password}
	w := e.call(t, "POST", "/login", nil, right)
	requireProblem(t, w, http.StatusTooManyRequests, "too many failed attempts")
	assert.Equal(t, "30", w.Header().Get("Retry-After"))

	// Other names are not affected.
	e.login(t, "bob", "pw-bob-0123456789")

	e.clock.Advance(30 * time.Second)
	e.login(t, "alice", password)
}

func TestManagementAPI_Sessions(t *testing.T) {
	tests := []struct {
		name       string
		secure     bool
		tls        bool
		wantSecure bool
	}{
		{"plain HTTP", false, false, false},
		{"SecureCookies behind a proxy", true, false, true},
		{"a request over TLS", false, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name+" sets Secure accordingly", func(t *testing.T) {
			e := newMgmtEnv(t, func(c *server.ManagementAPIConfig) {
				c.SecureCookies = tt.secure
			})
			password := e.user(t, "alice", store.RoleViewer)
			scheme := "http"
			if tt.tls {
				scheme = "https" // which makes NewRequest set r.TLS
			}
			body := strings.NewReader(`{"name":"alice","password":"` + password + `"}`)
			r := httptest.NewRequest("POST", scheme+"://rota.example.com/api/v1/login", body)
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			e.h.ServeHTTP(w, r)
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			assert.Equal(t, tt.wantSecure, w.Result().Cookies()[0].Secure)
		})
	}

	t.Run("an expired session is refused", func(t *testing.T) {
		e := newMgmtEnv(t, func(c *server.ManagementAPIConfig) {
			c.SessionLifetime = time.Hour
		})
		s := e.login(t, "alice", e.user(t, "alice", store.RoleViewer))
		require.Equal(t, http.StatusOK, e.call(t, "GET", "/me", s, nil).Code)
		e.clock.Advance(time.Hour)
		w := e.call(t, "GET", "/me", s, nil)
		requireProblem(t, w, http.StatusUnauthorized, "session expired or unknown")
	})

	t.Run("a deleted user's session ends", func(t *testing.T) {
		e := newMgmtEnv(t)
		s := e.login(t, "alice", e.user(t, "alice", store.RoleViewer))
		w := e.as(t, store.RoleAdmin, "DELETE", "/users/alice", nil)
		require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
		requireProblem(t, e.call(t, "GET", "/me", s, nil), http.StatusUnauthorized, "log in")
	})

	t.Run("a role change applies to open sessions", func(t *testing.T) {
		e := newMgmtEnv(t)
		s := e.login(t, "alice", e.user(t, "alice", store.RoleViewer))
		requireProblem(t, e.call(t, "POST", "/deployments/x/pause", s, nil),
			http.StatusForbidden, "takes the operator role")
		w := e.as(t, store.RoleAdmin, "PATCH", "/users/alice", map[string]string{
			"role": "operator"})
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		requireProblem(t, e.call(t, "POST", "/deployments/x/pause", s, nil),
			http.StatusNotFound, "not found")
	})

	t.Run("a new password ends the user's other sessions", func(t *testing.T) {
		e := newMgmtEnv(t)
		old := e.user(t, "alice", store.RoleAdmin)
		here, there := e.login(t, "alice", old), e.login(t, "alice", old)
		bob := e.login(t, "bob", e.user(t, "bob", store.RoleViewer))
		w := e.call(t, "POST", "/me/password", here, map[string]string{"current": old,
			"new": "a new password"})
		require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
		assert.Equal(t, http.StatusOK, e.call(t, "GET", "/me", here, nil).Code,
			"the session that changed it stays")
		requireProblem(t, e.call(t, "GET", "/me", there, nil), http.StatusUnauthorized, "log in")
		assert.Equal(t, http.StatusOK, e.call(t, "GET", "/me", bob, nil).Code)

		// An admin's reset ends all of them; the admin's own reset keeps
		// the admin's session.
		w = e.call(t, "PATCH", "/users/bob", here, map[string]string{"password": "bob's new one"})
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		requireProblem(t, e.call(t, "GET", "/me", bob, nil), http.StatusUnauthorized, "log in")
		there = e.login(t, "alice", "a new password")
		w = e.call(t, "PATCH", "/users/alice", here, map[string]string{"password": "a third one"})
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		assert.Equal(t, http.StatusOK, e.call(t, "GET", "/me", here, nil).Code)
		requireProblem(t, e.call(t, "GET", "/me", there, nil), http.StatusUnauthorized, "log in")
	})

	t.Run("an unknown cookie is refused", func(t *testing.T) {
		e := newMgmtEnv(t)
		s := session{cookie: &http.Cookie{Name: server.SessionCookie, Value: "forged"}}
		requireProblem(t, e.call(t, "GET", "/me", s, nil), http.StatusUnauthorized, "log in")
	})
}

func TestManagementAPI_CSRF(t *testing.T) {
	e := newMgmtEnv(t)
	s := e.login(t, "alice", e.user(t, "alice", store.RoleOperator))
	devID := e.device(t, store.Device{})
	tests := []struct {
		name string
		who  credentials
		code int
	}{
		{"a session without the header is refused", session{cookie: s.cookie},
			http.StatusForbidden},
		{"a session with a wrong token is refused", session{cookie: s.cookie,
			csrf: s.csrf + "x"}, http.StatusForbidden},
		{"a session with the token passes", s, http.StatusOK},
		{"a bearer token needs none", e.tokens[store.RoleOperator], http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.call(t, "POST", "/devices/"+devID+"/accept", tt.who, nil)
			require.Equal(t, tt.code, w.Code, w.Body.String())
			if tt.code == http.StatusForbidden {
				requireProblem(t, w, tt.code, server.CSRFHeader)
			}
		})
	}
	t.Run("reading needs no token", func(t *testing.T) {
		w := e.call(t, "GET", "/devices/"+devID, session{cookie: s.cookie}, nil)
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	})
	t.Run("logging out needs the token", func(t *testing.T) {
		w := e.call(t, "POST", "/logout", session{cookie: s.cookie}, nil)
		requireProblem(t, w, http.StatusForbidden, server.CSRFHeader)
	})
}

func TestManagementAPI_Users(t *testing.T) {
	e := newMgmtEnv(t)
	admin := func(method, path string, body any) *httptest.ResponseRecorder {
		return e.as(t, store.RoleAdmin, method, path, body)
	}

	w := admin("POST", "/users", map[string]string{"name": "carol", "role": "admin",
		"password": "carol's password"})
	u := ok[map[string]any](t, w, http.StatusCreated)
	assert.Equal(t, "carol", u["name"])
	assert.Equal(t, "admin", u["role"])
	assert.NotContains(t, w.Body.String(), "password")
	assert.NotContains(t, w.Body.String(), "argon2")

	requireProblem(t, admin("POST", "/users", map[string]string{"name": "carol",
		"role": "viewer", "password": "another password"}), http.StatusConflict, "exists")
	requireProblem(t, admin("POST", "/users", map[string]string{"name": "dave",
		"role": "viewer", "password": "short"}), http.StatusBadRequest, "at least 10")
	requireProblem(t, admin("POST", "/users", map[string]string{"name": "-dave",
		"role": "viewer", "password": "long enough password"}), http.StatusBadRequest, "name")
	requireProblem(t, admin("POST", "/users", map[string]string{"name": "dave",
		"role": "owner", "password": "long enough password"}), http.StatusBadRequest, "role")

	list := ok[struct{ Items []struct{ Name string } }](t, admin("GET", "/users", nil),
		http.StatusOK)
	require.Len(t, list.Items, 1)

	requireProblem(t, admin("PATCH", "/users/carol", map[string]string{"role": "viewer"}),
		http.StatusConflict, "last admin")
	requireProblem(t, admin("DELETE", "/users/carol", nil), http.StatusConflict, "last admin")

	e.user(t, "erin", store.RoleAdmin)
	u = ok[map[string]any](t, admin("PATCH", "/users/carol", map[string]string{
		"role": "viewer", "password": "carol's new password"}), http.StatusOK)
	assert.Equal(t, "viewer", u["role"])
	e.login(t, "carol", "carol's new password")
	requireProblem(t, admin("DELETE", "/users/erin", nil), http.StatusConflict, "last admin")
	require.Equal(t, http.StatusNoContent, admin("DELETE", "/users/carol", nil).Code)
	requireProblem(t, admin("GET", "/users/carol", nil), http.StatusNotFound, "not found")
	requireProblem(t, admin("PATCH", "/users/erin", map[string]string{}),
		http.StatusBadRequest, "nothing to change")
	requireProblem(t, admin("GET", "/users/"+strings.Repeat("x", 65), nil),
		http.StatusBadRequest, "user name")

	var actions []string
	for _, entry := range e.audit(t) {
		if strings.HasPrefix(entry.Action, "user.") && entry.Action != "user.login" {
			actions = append(actions, entry.Action+" "+entry.Object)
			assert.Equal(t, "token:"+e.tokenID(t, e.tokens[store.RoleAdmin]), entry.Actor)
			assert.NotContains(t, string(entry.Details), "carol's")
		}
	}
	assert.Equal(t, []string{"user.delete user:carol", "user.update user:carol",
		"user.create user:carol"}, actions)
}

func TestManagementAPI_ChangeOwnPassword(t *testing.T) {
	e := newMgmtEnv(t)
	old := e.user(t, "alice", store.RoleViewer)
	s := e.login(t, "alice", old)
	tests := []struct {
		name   string
		who    credentials
		body   any
		code   int
		detail string
	}{
		{"a wrong current password is refused", s, map[string]string{"current": "wrong",
			"new": "a new password"}, http.StatusForbidden, "current password is wrong"},
		{"a weak new password is refused", s, map[string]string{"current": old,
			"new": "short"}, http.StatusBadRequest, "at least 10"},
		{"an API token has none", e.tokens[store.RoleAdmin], map[string]string{
			"current": old, "new": "a new password"}, http.StatusForbidden, "no password"},
		{"a viewer may change their own", s, map[string]string{"current": old,
			"new": "a new password"}, http.StatusNoContent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.call(t, "POST", "/me/password", tt.who, tt.body)
			if tt.detail == "" {
				require.Equal(t, tt.code, w.Code, w.Body.String())
				return
			}
			requireProblem(t, w, tt.code, tt.detail)
		})
	}
	e.login(t, "alice", "a new password")
	assert.Equal(t, "user.password", e.audit(t)[1].Action)
}

func TestManagementAPI_UnknownRoutes(t *testing.T) {
	e := newMgmtEnv(t)
	tests := []struct {
		name, method, path string
		code               int
		allow              string
	}{
		{"an unknown path", "GET", "/nothing", http.StatusNotFound, ""},
		{"a trailing slash", "GET", "/releases/", http.StatusNotFound, ""},
		{"another method on a known path", "PUT", "/releases", http.StatusMethodNotAllowed,
			"GET, HEAD, POST"},
		{"another method on a path with a wildcard", "POST", "/releases/abc",
			http.StatusMethodNotAllowed, "DELETE, GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.as(t, store.RoleAdmin, tt.method, tt.path, nil)
			require.Equal(t, tt.code, w.Code, w.Body.String())
			problem(t, w)
			assert.Equal(t, tt.allow, w.Header().Get("Allow"))
		})
	}
}
