package portal_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/portal"
	"github.com/rotaupdate/rota/internal/store"
)

// addDevices adds n accepted devices with serials sim-0000 and up,
// half of them in group "lab".
func (e *env) addDevices(n int) {
	e.t.Helper()
	for i := range n {
		id := e.addDevice(store.StatusAccepted,
			map[string]string{"serial": fmt.Sprintf("sim-%04d", i)}, nil)
		if i%2 == 0 {
			require.NoError(e.t, e.store.SetGroups(context.Background(), id,
				[]string{"lab"}))
		}
	}
}

// pagerLink finds the href of a pager link by its rel.
func pagerLink(t testing.TB, body, rel string) string {
	t.Helper()
	m := mustCompile(`rel="` + rel + `" href="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

func TestDevicesPagination(t *testing.T) {
	e := newEnv(t, portal.Config{})
	e.addDevices(60)
	b := e.signIn("viewer")

	first := b.get("/devices?limit=25")
	require.Equal(t, http.StatusOK, first.code)
	assert.Contains(t, first.body, "60 devices.")
	assert.Equal(t, 25, strings.Count(first.body, `<a class="mono" href="/devices/`))
	assert.Empty(t, pagerLink(t, first.body, "prev"))
	next := pagerLink(t, first.body, "next")
	require.NotEmpty(t, next)

	second := b.get(next)
	require.Equal(t, http.StatusOK, second.code)
	assert.Contains(t, second.body, "Page 2")
	third := b.get(pagerLink(t, second.body, "next"))
	assert.Contains(t, third.body, "Page 3")
	assert.Equal(t, 10, strings.Count(third.body, `<a class="mono" href="/devices/`))
	assert.Empty(t, pagerLink(t, third.body, "next"), "the last page")

	back := b.get(pagerLink(t, third.body, "prev"))
	assert.Equal(t, pageIDs(second.body), pageIDs(back.body), "previous is page 2 again")
	back = b.get(pagerLink(t, back.body, "prev"))
	assert.Equal(t, pageIDs(first.body), pageIDs(back.body), "and then page 1")

	t.Run("a filter holds across pages", func(t *testing.T) {
		page := b.get("/devices?group=lab&limit=25")
		assert.Contains(t, page.body, "30 devices match the filter.")
		next := pagerLink(t, page.body, "next")
		assert.Contains(t, next, "group=lab")
		assert.Equal(t, 5, strings.Count(b.get(next).body, `<a class="mono" href="/devices/`))
	})
	t.Run("a broken cursor says so", func(t *testing.T) {
		page := b.get("/devices?after=%21%21")
		assert.Equal(t, http.StatusBadRequest, page.code)
		assert.Contains(t, page.body, "cursor")
	})
}

// pageIDs returns the device links of a page, in order.
func pageIDs(body string) []string {
	return mustCompile(`<a class="mono" href="/devices/[^"]+"`).FindAllString(body, -1)
}

func TestDevicesAdmission(t *testing.T) {
	e := newEnv(t, portal.Config{})
	b := e.signIn("operator")
	var pending []string
	for i := range 3 {
		pending = append(pending, e.addDevice(store.StatusPending,
			map[string]string{"serial": fmt.Sprintf("p-%d", i)}, nil))
	}
	token := b.csrf()

	page := b.get("/devices?status=pending")
	assert.Contains(t, page.body, "3 devices match the filter.")
	resp := b.post("/devices/admission", url.Values{"csrf": {token}, "action": {"accept"},
		"id": pending[:2], "back": {"/devices?status=pending"}})
	require.Equal(t, http.StatusSeeOther, resp.code)
	assert.Equal(t, "/devices?status=pending", resp.header.Get("Location"))
	page = b.get("/devices?status=pending")
	assert.Contains(t, page.body, "Accepted 2 devices.")
	assert.Contains(t, page.body, "1 device matches the filter.")

	resp = b.post("/devices/"+pending[2]+"/reject", url.Values{"csrf": {token},
		"back": {"https://evil.example/"}})
	require.Equal(t, http.StatusSeeOther, resp.code)
	assert.Equal(t, "/", resp.header.Get("Location"), "back is a local path")
	d, err := e.store.Device(context.Background(), pending[2])
	require.NoError(t, err)
	assert.Equal(t, store.StatusRejected, d.Status)

	resp = b.post("/devices/"+pending[0]+"/decommission", url.Values{"csrf": {token}})
	require.Equal(t, http.StatusOK, resp.code, "asks first")
	assert.Contains(t, resp.body, "can never be accepted again")

	t.Run("tags and groups", func(t *testing.T) {
		resp := b.post("/devices/"+pending[0]+"/labels", url.Values{"csrf": {token},
			"tags": {"b a, a"}, "groups": {"lab canary"}})
		require.Equal(t, http.StatusSeeOther, resp.code, resp.body)
		d, err := e.store.Device(context.Background(), pending[0])
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "b"}, d.Tags)
		assert.Equal(t, []string{"canary", "lab"}, d.Groups)
		page := b.get("/devices?group=canary")
		assert.Contains(t, page.body, "1 device matches the filter.")
	})
	t.Run("find by ID", func(t *testing.T) {
		resp := b.get("/devices?id=" + pending[1])
		require.Equal(t, http.StatusSeeOther, resp.code)
		assert.Equal(t, "/devices/"+pending[1], resp.header.Get("Location"))
		resp = b.get("/devices?id=nope")
		assert.Equal(t, http.StatusBadRequest, resp.code)
		assert.Contains(t, resp.body, "No device has this ID.")
	})
	t.Run("inventory filter", func(t *testing.T) {
		id := e.addDevice(store.StatusAccepted, nil, map[string]string{"hw": "rev 2"})
		page := b.get("/devices?inv=" + url.QueryEscape("hw=rev 2"))
		assert.Contains(t, page.body, "1 device matches the filter.")
		assert.Contains(t, page.body, "/devices/"+id)
	})
}

// fakeAPI answers the management API calls of a signed-in admin with
// empty lists, and records the queries of GET /devices.
type fakeAPI struct {
	mu      sync.Mutex
	devices []url.Values
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/api/v1/me":
		fmt.Fprint(w, `{"name":"admin","role":"admin","kind":"user","csrfToken":"tok"}`)
	case "/api/v1/groups":
		fmt.Fprint(w, `[]`)
	case "/api/v1/devices":
		f.mu.Lock()
		f.devices = append(f.devices, r.URL.Query())
		f.mu.Unlock()
		fmt.Fprint(w, `{"items":[{"id":"d1","status":"accepted"}],"next":"bmV4dA","total":100000}`)
	default:
		http.NotFound(w, r)
	}
}

func TestDevicesAskOnlyForOnePage(t *testing.T) {
	api := &fakeAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	p, err := portal.New(portal.Config{Server: srv.URL})
	require.NoError(t, err)
	req := httptest.NewRequest(http.MethodGet, "/devices?status=accepted&after=YWJj", nil)
	req.AddCookie(&http.Cookie{Name: portal.SessionCookie, Value: "s"})
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Body.String(), "100,000 devices match the filter.")
	require.Len(t, api.devices, 1, "one request of the API")
	assert.Equal(t, url.Values{"status": {"accepted"}, "limit": {"50"}, "after": {"YWJj"}},
		api.devices[0])
}
