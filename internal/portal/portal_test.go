package portal_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/portal"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// pages are the pages of the portal, each needing a session.
var pages = []string{"/", "/account", "/devices", "/devices/abc", "/releases",
	"/releases/new", "/releases/abc", "/deployments", "/deployments/new", "/deployments/abc",
	"/audit", "/users", "/tokens", "/devices?status=pending&tag=x"}

func TestSignedOutPagesRedirectToSignIn(t *testing.T) {
	e := newEnv(t, portal.Config{})
	b := e.browser()
	for _, path := range pages {
		t.Run(path, func(t *testing.T) {
			resp := b.get(path)
			require.Equal(t, http.StatusSeeOther, resp.code)
			want := "/login"
			if path != "/" {
				want += "?next=" + url.QueryEscape(path)
			}
			assert.Equal(t, want, resp.header.Get("Location"))
		})
	}
	t.Run("a form post", func(t *testing.T) {
		resp := b.post("/devices/abc/accept", url.Values{"csrf": {"x"}})
		require.Equal(t, http.StatusSeeOther, resp.code)
		assert.Equal(t, "/login", resp.header.Get("Location"))
	})
	t.Run("the live monitor's poll", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/deployments/abc/progress", nil)
		require.NoError(t, err)
		req.Header.Set("Accept", "application/json")
		assert.Equal(t, http.StatusUnauthorized, b.do(req).code)
	})
	t.Run("a forged session cookie", func(t *testing.T) {
		u, _ := url.Parse(e.srv.URL)
		b.c.Jar.SetCookies(u, []*http.Cookie{{Name: portal.SessionCookie, Value: "forged"}})
		resp := b.get("/devices")
		require.Equal(t, http.StatusSeeOther, resp.code)
		assert.Contains(t, resp.header.Values("Set-Cookie")[0], portal.SessionCookie+"=;")
	})
	t.Run("static files need no session", func(t *testing.T) {
		resp := b.get("/static/portal.css")
		require.Equal(t, http.StatusOK, resp.code)
		assert.Contains(t, resp.header.Get("Content-Type"), "text/css")
	})
}

func TestSignIn(t *testing.T) {
	e := newEnv(t, portal.Config{})
	for _, tc := range []struct {
		name     string
		form     url.Values
		code     int
		location string
		says     string
	}{
		{"right password", url.Values{"name": {"operator"}, "password": {password},
			"next": {"/devices?status=pending"}}, http.StatusSeeOther,
			"/devices?status=pending", ""},
		{"wrong password", url.Values{"name": {"operator"}, "password": {"nope nope nope"}},
			http.StatusUnauthorized, "", "Wrong user name or password."},
		{"unknown user", url.Values{"name": {"nobody"}, "password": {password}},
			http.StatusUnauthorized, "", "Wrong user name or password."},
		{"empty fields", url.Values{}, http.StatusUnprocessableEntity, "",
			"Enter your user name."},
		{"next on another site", url.Values{"name": {"operator"}, "password": {password},
			"next": {"//evil.example/x"}}, http.StatusSeeOther, "/", ""},
		{"next with a scheme", url.Values{"name": {"operator"}, "password": {password},
			"next": {"https://evil.example/"}}, http.StatusSeeOther, "/", ""},
		{"next with a backslash", url.Values{"name": {"operator"}, "password": {password},
			"next": {"/\\evil.example"}}, http.StatusSeeOther, "/", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := e.browser()
			tc.form.Set("csrf", hiddenCSRF(t, b.get("/login").body))
			resp := b.post("/login", tc.form)
			require.Equal(t, tc.code, resp.code, resp.body)
			assert.Equal(t, tc.location, resp.header.Get("Location"))
			assert.Contains(t, resp.body, tc.says)
			if tc.code == http.StatusUnauthorized {
				assert.Contains(t, resp.body, `value="`+tc.form.Get("name")+`"`,
					"the user name is kept")
				assert.NotContains(t, resp.body, tc.form.Get("password"))
			}
		})
	}
}

func TestSessionCookie(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secure bool
	}{{"plain HTTP", false}, {"secure cookies configured", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, portal.Config{SecureCookies: tc.secure})
			b := e.browser()
			page := b.get("/login")
			resp := b.post("/login", url.Values{"csrf": {hiddenCSRF(t, page.body)},
				"name": {"admin"}, "password": {password}})
			require.Equal(t, http.StatusSeeOther, resp.code)
			var session *http.Cookie
			for _, c := range (&http.Response{Header: resp.header}).Cookies() {
				if c.Name == portal.SessionCookie {
					session = c
				}
			}
			require.NotNil(t, session)
			assert.True(t, session.HttpOnly)
			assert.Equal(t, http.SameSiteStrictMode, session.SameSite)
			assert.Equal(t, "/", session.Path)
			assert.Equal(t, tc.secure, session.Secure)
			assert.Positive(t, session.MaxAge)

			// Signing out ends the session at the API too.
			b2 := e.browser()
			u, _ := url.Parse(e.srv.URL)
			b2.c.Jar.SetCookies(u, []*http.Cookie{{Name: portal.SessionCookie,
				Value: session.Value}})
			require.Equal(t, http.StatusOK, b2.get("/devices").code)
			token := b2.csrf()
			resp = b2.post("/logout", url.Values{"csrf": {token}})
			require.Equal(t, http.StatusSeeOther, resp.code)
			b3 := e.browser()
			b3.c.Jar.SetCookies(u, []*http.Cookie{{Name: portal.SessionCookie,
				Value: session.Value}})
			assert.Equal(t, http.StatusSeeOther, b3.get("/devices").code)
		})
	}
}

func TestSignInFormNeedsItsToken(t *testing.T) {
	e := newEnv(t, portal.Config{})
	for _, tc := range []struct {
		name  string
		token func(page string) string
	}{
		{"missing", func(string) string { return "" }},
		{"wrong", func(string) string { return strings.Repeat("A", 52) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := e.browser()
			page := b.get("/login")
			resp := b.post("/login", url.Values{"csrf": {tc.token(page.body)},
				"name": {"admin"}, "password": {password}})
			assert.Equal(t, http.StatusForbidden, resp.code)
			assert.Contains(t, resp.body, "The sign-in form expired")
		})
	}
}

// formPosts are the portal's form posts, with valid fields but the
// CSRF token; {dev} is a pending device, {rel} a release.
var formPosts = []struct {
	path string
	form url.Values
}{
	{"/logout", nil},
	{"/account/password", url.Values{"current": {password}, "new": {"another password"},
		"confirm": {"another password"}}},
	{"/devices/admission", url.Values{"action": {"accept"}, "id": {"{dev}"}}},
	{"/devices/{dev}/accept", nil},
	{"/devices/{dev}/reject", nil},
	{"/devices/{dev}/decommission", url.Values{"confirm": {"yes"}}},
	{"/devices/{dev}/labels", url.Values{"tags": {"t1"}, "groups": {"g1"}}},
	{"/releases/register", url.Values{"reference": {"registry.invalid/x:1"}}},
	{"/releases/{rel}/delete", url.Values{"confirm": {"yes"}}},
	{"/deployments", url.Values{"release": {"{rel}"}, "target": {"all"}}},
	{"/deployments/x/pause", nil},
	{"/deployments/x/abort", url.Values{"confirm": {"yes"}}},
	{"/users", url.Values{"name": {"eve"}, "role": {"admin"}, "password": {password},
		"confirm": {password}}},
	{"/users/viewer/role", url.Values{"role": {"admin"}}},
	{"/users/viewer/delete", url.Values{"confirm": {"yes"}}},
	{"/tokens", url.Values{"name": {"ci"}, "role": {"admin"}, "expires": {""}}},
	{"/tokens/x/delete", url.Values{"confirm": {"yes"}}},
}

func TestFormPostsNeedTheCSRFToken(t *testing.T) {
	e := newEnv(t, portal.Config{})
	b := e.signIn("admin")
	dev := e.addDevice(store.StatusPending, nil, nil)
	rel := b.release("1.0.0")
	fill := func(s string) string {
		return strings.NewReplacer("{dev}", dev, "{rel}", rel).Replace(s)
	}
	for _, fp := range formPosts {
		for _, token := range []string{"", "wrong-token"} {
			name := fmt.Sprintf("%s with token %q", fp.path, token)
			t.Run(name, func(t *testing.T) {
				form := url.Values{}
				for k, vs := range fp.form {
					for _, v := range vs {
						form.Add(k, fill(v))
					}
				}
				if token != "" {
					form.Set("csrf", token)
				}
				resp := b.post(fill(fp.path), form)
				assert.Equal(t, http.StatusForbidden, resp.code)
				assert.Contains(t, resp.body, "security token")
			})
		}
	}
	t.Run("uploads", func(t *testing.T) {
		for _, token := range []string{"", "wrong-token"} {
			resp := b.uploadRaw(bundleFile(t, "2.0.0"), token)
			assert.Equal(t, http.StatusForbidden, resp.code)
			resp = b.uploadMultipart(token, "b.rota", bundleFile(t, "2.0.0"), false)
			assert.Equal(t, http.StatusForbidden, resp.code)
		}
	})

	// Nothing changed: the device waits, the release and the users stay,
	// and the session is still open.
	d, err := e.store.Device(context.Background(), dev)
	require.NoError(t, err)
	assert.Equal(t, store.StatusPending, d.Status)
	assert.Empty(t, d.Tags)
	assert.Equal(t, http.StatusOK, b.get("/releases/"+rel).code)
	users, err := e.store.ListUsers(context.Background())
	require.NoError(t, err)
	assert.Len(t, users, 3)
	assert.Equal(t, http.StatusOK, b.get("/devices").code)
}

// mutationMarkers are the traces of controls that change something.
var mutationMarkers = []string{`action="/devices/admission"`, "Accept selected", ">Accept<",
	">Reject<", "Decommission…", "Add a release", "New deployment", "Deploy this release",
	"Delete…", ">Pause<", ">Resume<", "Abort…", `action="/devices/`, `name="tags"`,
	`type="file"`}

func TestViewerSeesNoMutationControls(t *testing.T) {
	e := newEnv(t, portal.Config{})
	admin := e.signIn("admin")
	dev := e.addDevice(store.StatusPending, map[string]string{"serial": "v-1"}, nil)
	accepted := e.addDevice(store.StatusAccepted, nil, nil)
	rel := admin.release("1.0.0")
	resp := admin.post("/deployments", url.Values{"csrf": {admin.csrf()}, "release": {rel},
		"target": {"all"}, "start": {"2099-01-01T00:00"}})
	require.Equal(t, http.StatusSeeOther, resp.code, resp.body)
	depPath := resp.header.Get("Location")
	_ = accepted

	viewer := e.signIn("viewer")
	for _, path := range []string{"/", "/devices", "/devices/" + dev, "/releases",
		"/releases/" + rel, "/deployments", depPath, "/audit", "/account"} {
		t.Run(path, func(t *testing.T) {
			page := viewer.get(path)
			require.Equal(t, http.StatusOK, page.code)
			for _, m := range mutationMarkers {
				assert.NotContains(t, page.body, m)
			}
			// The one form that posts signs out, and on the account page
			// the one that changes the viewer's own password.
			forms := 1
			if path == "/account" {
				forms = 2
			}
			assert.Equal(t, forms, strings.Count(page.body, `method="post"`))
		})
	}
	t.Run("operators see the controls", func(t *testing.T) {
		op := e.signIn("operator")
		assert.Contains(t, op.get("/devices").body, "Accept selected")
		assert.Contains(t, op.get("/devices/"+dev).body, ">Accept<")
		assert.Contains(t, op.get(depPath).body, "Abort…")
	})
	t.Run("admin pages are refused", func(t *testing.T) {
		for _, path := range []string{"/users", "/tokens"} {
			assert.Equal(t, http.StatusForbidden, viewer.get(path).code)
		}
		assert.NotContains(t, viewer.get("/").body, `href="/users"`)
	})
	t.Run("a forced post is refused by the API", func(t *testing.T) {
		token := viewer.csrf()
		for _, path := range []string{"/devices/" + dev + "/accept",
			"/releases/" + rel + "/delete", depPath + "/pause"} {
			resp := viewer.post(path, url.Values{"csrf": {token}, "confirm": {"yes"}})
			assert.Equal(t, http.StatusForbidden, resp.code, path)
			assert.Contains(t, resp.body, "Your role may not do this")
		}
		resp := viewer.post("/devices/admission", url.Values{"csrf": {token},
			"action": {"accept"}, "id": {dev}})
		assert.Equal(t, http.StatusForbidden, resp.code)
		resp = viewer.uploadRaw(bundleFile(t, "9.9.9"), token)
		assert.Equal(t, http.StatusForbidden, resp.code)
		d, err := e.store.Device(context.Background(), dev)
		require.NoError(t, err)
		assert.Equal(t, store.StatusPending, d.Status)
		assert.Equal(t, http.StatusOK, viewer.get("/releases/"+rel).code)
	})
}

// attacks are device-supplied strings that must appear only escaped.
var attacks = []string{`<script>alert(1)</script>`, `"><img src=x onerror=alert(1)>`}

func TestDeviceStringsAreEscaped(t *testing.T) {
	e := newEnv(t, portal.Config{})
	b := e.signIn("operator")
	id := e.addDevice(store.StatusAccepted,
		map[string]string{"serial": attacks[1], "model": attacks[0]},
		map[string]string{"note": attacks[0], "hw": attacks[1]})
	rel := b.release("1.0.0")
	resp := b.post("/deployments", url.Values{"csrf": {b.csrf()}, "release": {rel},
		"target": {"all"}, "name": {"escape test"}})
	require.Equal(t, http.StatusSeeOther, resp.code, resp.body)
	depID := strings.TrimPrefix(resp.header.Get("Location"), "/deployments/")
	_, err := e.store.RecordReport(context.Background(), depID, id, poll.Report{ID: "r1",
		State: poll.ReportFailure, Message: attacks[1], Log: attacks})
	require.NoError(t, err)

	for _, path := range []string{"/devices/" + id, "/devices", "/deployments/" + depID,
		"/", "/devices?inv=" + url.QueryEscape("hw="+attacks[1])} {
		t.Run(path, func(t *testing.T) {
			page := b.get(path)
			require.Equal(t, http.StatusOK, page.code)
			for _, a := range attacks {
				assert.NotContains(t, page.body, a)
			}
			assert.NotContains(t, page.body, "<img src=x")
			assert.NotContains(t, page.body, "<script>alert")
		})
	}
	page := b.get("/devices/" + id).body
	for _, a := range attacks {
		assert.Contains(t, page, html.EscapeString(a), "shown, escaped")
	}
}

func TestFormErrorsShowNextToFieldsAndKeepInput(t *testing.T) {
	e := newEnv(t, portal.Config{})
	b := e.signIn("admin")
	dev := e.addDevice(store.StatusAccepted, nil, nil)
	rel := b.release("1.0.0")
	for _, tc := range []struct {
		name   string
		path   string
		form   url.Values
		errors map[string]string // field: message
		kept   []string
	}{
		{"deployment phases", "/deployments", url.Values{"release": {rel},
			"target": {"all"}, "phases": {"10%, lots, rest"}, "soak": {"soon"},
			"failure": {"120%"}, "name": {"wave <1>"}},
			map[string]string{"phases": `&#34;lots&#34; is not a number of devices`,
				"soak": "Give a duration", "failure": "from 0% to 100%"},
			[]string{`value="10%, lots, rest"`, `value="soon"`, `value="wave &lt;1&gt;"`}},
		{"deployment percentages over 100", "/deployments", url.Values{"release": {rel},
			"target": {"all"}, "phases": {"60%, 60%"}},
			map[string]string{"phases": "add up to 120%"}, nil},
		{"deployment window", "/deployments", url.Values{"release": {rel},
			"target": {"group"}, "w0_start": {"25:00"}, "w0_duration": {"9d"},
			"w0_zone": {"Mars/Olympus"}},
			map[string]string{"group": "Pick a group.", "w0_start": "hours and minutes",
				"w0_duration": "at most 7d", "w0_zone": "time zone name"},
			[]string{`value="Mars/Olympus"`}},
		{"deployment without release", "/deployments", url.Values{"target": {"all"}},
			map[string]string{"release": "Pick the release"}, nil},
		{"new user", "/users", url.Values{"name": {"-bad name"}, "role": {"viewer"},
			"password": {"short"}, "confirm": {"short"}},
			map[string]string{"name": "Use 1 to 64", "password": "at least 10"},
			[]string{`value="-bad name"`}},
		{"password confirmation", "/account/password", url.Values{"current": {password},
			"new": {"a long new password"}, "confirm": {"a different one"}},
			map[string]string{"confirm": "differ"}, nil},
		{"wrong current password", "/account/password", url.Values{
			"current": {"not my password"}, "new": {"a long new password"},
			"confirm": {"a long new password"}},
			map[string]string{"current": "current password is wrong"}, nil},
		{"device labels", "/devices/" + dev + "/labels", url.Values{"tags": {"ok, <bad>"},
			"groups": {"fine"}}, map[string]string{"tags": "is not a valid name"},
			[]string{`value="ok, &lt;bad&gt;"`, `value="fine"`}},
		{"token without name", "/tokens", url.Values{"role": {"viewer"}, "expires": {""}},
			map[string]string{"name": "Name the token"}, nil},
		{"register without reference", "/releases/register", url.Values{},
			map[string]string{"reference": "Enter a registry reference"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.form.Set("csrf", b.csrf())
			resp := b.post(tc.path, tc.form)
			require.Equal(t, http.StatusUnprocessableEntity, resp.code, resp.body)
			for field, msg := range tc.errors {
				re := fmt.Sprintf(`id="f-%s-error">[^<]*%s`, field, regexpQuote(msg))
				assert.Regexp(t, re, resp.body, "error of %s", field)
				assert.Contains(t, resp.body, fmt.Sprintf(`href="#f-%s"`, field),
					"the summary links the field")
			}
			for _, k := range tc.kept {
				assert.Contains(t, resp.body, k)
			}
		})
	}
	t.Run("device filter", func(t *testing.T) {
		resp := b.get("/devices?tag=%3Cx%3E&inv=novalue")
		require.Equal(t, http.StatusBadRequest, resp.code)
		assert.Regexp(t, `id="f-tag-error">[^<]*Not a valid tag name`, resp.body)
		assert.Regexp(t, `id="f-inv-error">[^<]*Write name=value`, resp.body)
		assert.Contains(t, resp.body, `value="&lt;x&gt;"`)
	})
}

func regexpQuote(s string) string {
	return strings.NewReplacer(`.`, `\.`, `(`, `\(`, `)`, `\)`, `%`, `%`, `?`, `\?`,
		`*`, `\*`, `+`, `\+`).Replace(s)
}

func TestDeploymentLifecycle(t *testing.T) {
	e := newEnv(t, portal.Config{})
	b := e.signIn("operator")
	for range 3 {
		e.addDevice(store.StatusAccepted, nil, nil)
	}
	rel := b.release("2.0.0")
	resp := b.post("/deployments", url.Values{"csrf": {b.csrf()}, "release": {rel},
		"target": {"all"}, "name": {"wave 1"}, "phases": {"1, 50%, rest"},
		"after": {"90"}, "soak": {"30m"}, "failure": {"10%"}, "concurrent": {"2"},
		"retries": {"1"}, "start": {"2099-03-04T05:06"}, "start_zone": {"Europe/Berlin"},
		"w0_days": {"1", "3"}, "w0_start": {"02:00"}, "w0_duration": {"4h"},
		"w0_zone": {"Europe/Berlin"}})
	require.Equal(t, http.StatusSeeOther, resp.code, resp.body)
	path := resp.header.Get("Location")

	page := b.get(path)
	require.Equal(t, http.StatusOK, page.code)
	for _, want := range []string{"wave 1", "Phase 1: 1 device; starts at 2099-03-04 04:06 UTC.",
		"Phase 2: 50% of the devices; starts when 90% of phase 1 succeeded, then 30m later.",
		"Phase 3: every device left; starts when 90% of phase 2 succeeded, then 30m later.",
		"Pauses when over 10% of a phase failed.", "At most 2 devices update at once.",
		"Window: Mon, Wed from 02:00 for 4h (Europe/Berlin).", `data-monitor="` + path,
		`http-equiv="refresh"`} {
		assert.Contains(t, html.UnescapeString(page.body), want)
	}

	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path+"/progress", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "application/json")
	var prog struct {
		Status  string
		Overall struct {
			Total, Percent, Pending int
		}
		Phases []struct{ Total int }
	}
	resp = b.do(req)
	require.Equal(t, http.StatusOK, resp.code)
	require.NoError(t, json.Unmarshal([]byte(resp.body), &prog))
	assert.Equal(t, "active", prog.Status)
	assert.Equal(t, 3, prog.Overall.Total)
	assert.Equal(t, 3, prog.Overall.Pending)
	assert.Len(t, prog.Phases, 3)

	token := b.csrf()
	resp = b.post(path+"/pause", url.Values{"csrf": {token}})
	require.Equal(t, http.StatusSeeOther, resp.code)
	assert.Contains(t, b.get(path).body, "Deployment paused.")
	resp = b.post(path+"/abort", url.Values{"csrf": {token}})
	require.Equal(t, http.StatusOK, resp.code, "asks for confirmation")
	assert.Contains(t, resp.body, `name="confirm" value="yes"`)
	resp = b.post(path+"/abort", url.Values{"csrf": {token}, "confirm": {"yes"}})
	require.Equal(t, http.StatusSeeOther, resp.code)
	page = b.get(path)
	assert.Contains(t, page.body, "Deployment aborted.")
	assert.NotContains(t, page.body, `http-equiv="refresh"`, "no refresh once over")
	resp = b.post(path+"/resume", url.Values{"csrf": {token}})
	require.Equal(t, http.StatusSeeOther, resp.code)
	assert.Contains(t, b.get(path).body, "cannot become active", "the API's refusal")

	list := b.get("/deployments?status=aborted").body
	assert.Contains(t, list, "wave 1")
}

func TestTokenSecretIsShownOnce(t *testing.T) {
	e := newEnv(t, portal.Config{})
	b := e.signIn("admin")
	resp := b.post("/tokens", url.Values{"csrf": {b.csrf()}, "name": {"ci pipeline"},
		"role": {"operator"}, "expires": {"720h"}})
	require.Equal(t, http.StatusCreated, resp.code, resp.body)
	m := regexpFind(`value="(rota_[A-Za-z0-9_-]{43})"`, resp.body)
	require.NotEmpty(t, m, resp.body)
	assert.Equal(t, "no-store", resp.header.Get("Cache-Control"))
	list := b.get("/tokens").body
	assert.Contains(t, list, "ci pipeline")
	assert.NotContains(t, list, m)

	// The token works against the API.
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/api/v1/me", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+m)
	assert.Equal(t, http.StatusOK, e.browser().do(req).code)
}

func TestUsers(t *testing.T) {
	e := newEnv(t, portal.Config{})
	b := e.signIn("admin")
	token := b.csrf()
	resp := b.post("/users", url.Values{"csrf": {token}, "name": {"alice"},
		"role": {"operator"}, "password": {password}, "confirm": {password}})
	require.Equal(t, http.StatusSeeOther, resp.code, resp.body)
	assert.Contains(t, b.get("/users").body, "User alice created as operator.")
	resp = b.post("/users", url.Values{"csrf": {token}, "name": {"alice"},
		"role": {"operator"}, "password": {password}, "confirm": {password}})
	require.Equal(t, http.StatusConflict, resp.code)
	assert.Contains(t, resp.body, "A user has this name already.")

	resp = b.post("/users/alice/role", url.Values{"csrf": {token}, "role": {"viewer"}})
	require.Equal(t, http.StatusSeeOther, resp.code)
	u, err := e.store.User(context.Background(), "alice")
	require.NoError(t, err)
	assert.Equal(t, store.RoleViewer, u.Role)

	resp = b.post("/users/alice/delete", url.Values{"csrf": {token}})
	require.Equal(t, http.StatusOK, resp.code, "asks for confirmation")
	resp = b.post("/users/alice/delete", url.Values{"csrf": {token}, "confirm": {"yes"}})
	require.Equal(t, http.StatusSeeOther, resp.code)
	_, err = e.store.User(context.Background(), "alice")
	assert.ErrorIs(t, err, store.ErrNotFound)
}

func regexpFind(re, s string) string {
	m := mustCompile(re).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}
