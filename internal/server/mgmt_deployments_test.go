package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// deploymentOut is a deployment as the API shows it.
type deploymentOut struct {
	ID, Name, ReleaseID, Status string
	Target                      struct {
		Group  string
		Filter *store.DeviceFilter
	}
	Strategy store.Strategy
	Release  struct{ ID, Version string }
	Counts   struct {
		Total      int
		States     map[string]int
		InProgress int
		Phases     []struct {
			Phase  int
			Total  int
			States map[string]int
		}
	}
}

// devices stores n accepted devices in group and returns their IDs.
func (e *mgmtEnv) devices(t *testing.T, n int, group string) []string {
	t.Helper()
	var ids []string
	for range n {
		ids = append(ids, e.device(t, store.Device{Status: store.StatusAccepted,
			Groups: []string{group}}))
	}
	return ids
}

func TestManagementAPI_CreateDeployment(t *testing.T) {
	e := newMgmtEnv(t)
	rel := e.release(t, "1.0.0")
	e.devices(t, 10, "fleet")
	e.device(t, store.Device{Status: store.StatusPending, Groups: []string{"fleet"}})
	e.device(t, store.Device{Status: store.StatusAccepted, Groups: []string{"other"}})

	w := e.as(t, store.RoleOperator, "POST", "/deployments", map[string]any{
		"name": "canary", "releaseId": rel, "target": map[string]any{"group": "fleet"},
		"strategy": map[string]any{
			"phases": []map[string]any{{"percent": 20}, {"count": 3, "soak": 3600e9},
				{"afterSuccessPercent": 90}},
			"failureThreshold": map[string]any{"percent": 10},
			"maxConcurrent":    5,
			"retries":          2,
			"windows": []map[string]any{{"start": "02:00", "duration": 4 * 3600e9,
				"timeZone": "Europe/Berlin", "days": []int{1, 2, 3}}},
		}})
	created := ok[deploymentOut](t, w, http.StatusCreated)
	assert.Equal(t, "/api/v1/deployments/"+created.ID, w.Header().Get("Location"))
	assert.Equal(t, "active", created.Status)
	assert.Equal(t, "fleet", created.Target.Group)
	assert.Equal(t, time.Hour, created.Strategy.Phases[1].Soak)

	d := ok[deploymentOut](t, e.as(t, store.RoleViewer, "GET", "/deployments/"+created.ID,
		nil), http.StatusOK)
	assert.Equal(t, "canary", d.Name)
	assert.Equal(t, rel, d.Release.ID)
	assert.Equal(t, "1.0.0", d.Release.Version)
	assert.Equal(t, 10, d.Counts.Total, "only the accepted devices of the group")
	assert.Equal(t, map[string]int{"pending": 10}, d.Counts.States)
	require.Len(t, d.Counts.Phases, 3)
	for i, want := range []int{2, 3, 5} {
		assert.Equal(t, i, d.Counts.Phases[i].Phase)
		assert.Equal(t, want, d.Counts.Phases[i].Total, "phase %d", i)
	}

	page := ok[struct {
		Items []struct {
			DeviceID, State string
			Phase           int
		}
		Next string
	}](t, e.as(t, store.RoleViewer, "GET", "/deployments/"+created.ID+"/devices?phase=1",
		nil), http.StatusOK)
	assert.Len(t, page.Items, 3)
	for _, it := range page.Items {
		assert.Equal(t, 1, it.Phase)
		assert.Equal(t, "pending", it.State)
	}

	var all []string
	path := "/deployments/" + created.ID + "/devices?limit=4&state=pending"
	for pages := 0; ; pages++ {
		require.Less(t, pages, 4)
		page := ok[struct {
			Items []struct{ DeviceID string }
			Next  string
		}](t, e.as(t, store.RoleViewer, "GET", path, nil), http.StatusOK)
		for _, it := range page.Items {
			all = append(all, it.DeviceID)
		}
		if page.Next == "" {
			break
		}
		path = "/deployments/" + created.ID + "/devices?limit=4&state=pending&after=" +
			page.Next
	}
	assert.Len(t, all, 10)

	entry := e.audit(t)[0]
	assert.Equal(t, "deployment.create", entry.Action)
	assert.Equal(t, "deployment:"+created.ID, entry.Object)
	var details map[string]any
	require.NoError(t, json.Unmarshal(entry.Details, &details))
	assert.Equal(t, float64(10), details["devices"])
	assert.Equal(t, []any{float64(2), float64(3), float64(5)}, details["phases"])

	list := ok[struct{ Items []deploymentOut }](t, e.as(t, store.RoleViewer, "GET",
		"/deployments?status=active", nil), http.StatusOK)
	require.Len(t, list.Items, 1)
	list = ok[struct{ Items []deploymentOut }](t, e.as(t, store.RoleViewer, "GET",
		"/deployments?status=paused", nil), http.StatusOK)
	assert.Empty(t, list.Items)

	bad := []struct{ name, query, detail string }{
		{"a phase the deployment lacks", "phase=3", "not a phase"},
		{"a negative phase", "phase=-1", "not a phase"},
		{"an unknown state", "state=exploded", "not a device state"},
		{"a malformed cursor", "after=zz*", "cursor"},
	}
	for _, tt := range bad {
		t.Run("listing its devices by "+tt.name+" is refused", func(t *testing.T) {
			w := e.as(t, store.RoleViewer, "GET",
				"/deployments/"+created.ID+"/devices?"+tt.query, nil)
			requireProblem(t, w, http.StatusBadRequest, tt.detail)
		})
	}
	requireProblem(t, e.as(t, store.RoleViewer, "GET", "/deployments?status=done", nil),
		http.StatusBadRequest, "status")
	requireProblem(t, e.as(t, store.RoleViewer, "GET", "/deployments/nope/devices", nil),
		http.StatusNotFound, "not found")
}

func TestManagementAPI_CreateDeployment_ByFilter(t *testing.T) {
	e := newMgmtEnv(t)
	rel := e.release(t, "1.0.0")
	want := e.device(t, store.Device{Status: store.StatusAccepted,
		Inventory: map[string]string{"hw": "rev2"}})
	e.device(t, store.Device{Status: store.StatusAccepted,
		Inventory: map[string]string{"hw": "rev1"}})
	w := e.as(t, store.RoleOperator, "POST", "/deployments", map[string]any{
		"releaseId": rel, "target": map[string]any{"filter": map[string]any{
			"inventory": map[string]string{"hw": "rev2"}}}})
	dep := ok[deploymentOut](t, w, http.StatusCreated)
	require.NotNil(t, dep.Target.Filter)
	dd, err := e.st.DeviceDeployment(context.Background(), dep.ID, want)
	require.NoError(t, err)
	assert.Equal(t, store.StatePending, dd.State)
	d := ok[deploymentOut](t, e.as(t, store.RoleViewer, "GET", "/deployments/"+dep.ID, nil),
		http.StatusOK)
	assert.Equal(t, 1, d.Counts.Total)
}

func TestManagementAPI_CreateDeployment_RefusesBadRequests(t *testing.T) {
	e := newMgmtEnv(t)
	rel := e.release(t, "1.0.0")
	e.devices(t, 2, "fleet")
	e.device(t, store.Device{Status: store.StatusPending, Groups: []string{"waiting"}})
	group := map[string]any{"group": "fleet"}
	with := func(strategy any) map[string]any {
		return map[string]any{"releaseId": rel, "target": group, "strategy": strategy}
	}
	phases := func(p ...map[string]any) map[string]any {
		return map[string]any{"phases": p}
	}
	window := func(w map[string]any) map[string]any {
		full := map[string]any{"start": "02:00", "duration": 3600e9}
		for k, v := range w {
			full[k] = v
		}
		return map[string]any{"windows": []any{full}}
	}
	tests := []struct {
		name   string
		body   any
		code   int
		detail string
	}{
		{"an unknown release", map[string]any{"releaseId": "nope", "target": group}, 422,
			"release nope does not exist"},
		{"no release", map[string]any{"target": group}, 400, "releaseId"},
		{"no target", map[string]any{"releaseId": rel}, 400, "target must be"},
		{"a target with group and filter", map[string]any{"releaseId": rel,
			"target": map[string]any{"group": "fleet", "filter": map[string]any{}}}, 400,
			"target must be"},
		{"a target matching nothing", map[string]any{"releaseId": rel,
			"target": map[string]any{"group": "empty"}}, 422, "matches no accepted device"},
		{"a target of pending devices only", map[string]any{"releaseId": rel,
			"target": map[string]any{"group": "waiting"}}, 422, "matches no accepted device"},
		{"a filter on another status", map[string]any{"releaseId": rel,
			"target": map[string]any{"filter": map[string]any{"status": "rejected"}}}, 422,
			"matches no accepted device"},
		{"a filter with an unknown status", map[string]any{"releaseId": rel,
			"target": map[string]any{"filter": map[string]any{"status": "happy"}}}, 400,
			"target filter: status"},
		{"a filter with an unknown field", map[string]any{"releaseId": rel,
			"target": map[string]any{"filter": map[string]any{"model": "x"}}}, 400,
			"unknown field"},
		{"an invalid group name", map[string]any{"releaseId": rel,
			"target": map[string]any{"group": "a b"}}, 400, "target group"},
		{"an unknown strategy field", with(map[string]any{"maxConcurent": 3}), 400,
			`unknown field "maxConcurent"`},
		{"an unknown phase field", with(phases(map[string]any{"percnt": 10})), 400,
			`unknown field "percnt"`},
		{"a soak given as text", with(phases(map[string]any{"soak": "1h"})), 400,
			"decode request"},
		{"a phase percent over 100", with(phases(map[string]any{"percent": 101})), 400,
			"phase 0: percent 101"},
		{"a negative phase percent", with(phases(map[string]any{"percent": -1})), 400,
			"phase 0: percent -1"},
		{"percents over 100 in all", with(phases(map[string]any{"percent": 60},
			map[string]any{"percent": 50})), 400, "add up to 110"},
		{"a negative count", with(phases(map[string]any{"count": -2})), 400,
			"negative count"},
		{"percent and count at once", with(phases(map[string]any{"percent": 10,
			"count": 2})), 400, "not both"},
		{"a middle phase taking all", with(phases(map[string]any{},
			map[string]any{"count": 2})), 400, "only the last phase"},
		{"an afterSuccessPercent over 100", with(phases(map[string]any{"percent": 10},
			map[string]any{"afterSuccessPercent": 101})), 400, "phase 1: afterSuccessPercent"},
		{"a negative soak", with(phases(map[string]any{"percent": 10, "soak": -1})), 400,
			"negative soak"},
		{"too many phases", with(map[string]any{"phases": make([]map[string]any, 101)}), 400,
			"101 phases"},
		{"a negative failure count", with(map[string]any{"failureThreshold": map[string]any{
			"count": -1}}), 400, "failureThreshold"},
		{"a failure percent over 100", with(map[string]any{"failureThreshold": map[string]any{
			"percent": 150}}), 400, "failureThreshold"},
		{"a negative maxConcurrent", with(map[string]any{"maxConcurrent": -1}), 400,
			"maxConcurrent"},
		{"negative retries", with(map[string]any{"retries": -1}), 400, "retries"},
		{"too many retries", with(map[string]any{"retries": 101}), 400, "retries"},
		{"a window start that is no time", with(window(map[string]any{"start": "25:00"})),
			400, "window 0: start"},
		{"a window start without a leading zero", with(window(map[string]any{
			"start": "2:00"})), 400, "window 0: start"},
		{"a window of no duration", with(window(map[string]any{"duration": 0})), 400,
			"duration"},
		{"a window over a week", with(window(map[string]any{"duration": 8 * 24 * 3600e9})),
			400, "duration"},
		{"an unknown time zone", with(window(map[string]any{"timeZone": "Mars/Olympus"})),
			400, "timeZone"},
		{"the server's local zone", with(window(map[string]any{"timeZone": "Local"})), 400,
			"timeZone"},
		{"a path as time zone", with(window(map[string]any{"timeZone": "../../etc/passwd"})),
			400, "timeZone"},
		{"a day out of range", with(window(map[string]any{"days": []int{7}})), 400,
			"day 7"},
		{"an oversized name", map[string]any{"name": strings.Repeat("n", 300),
			"releaseId": rel, "target": group}, 400, "name"},
		{"a name with control characters", map[string]any{"name": "a\nb",
			"releaseId": rel, "target": group}, 400, "name"},
		{"malformed JSON", `{"releaseId": `, 400, "decode request"},
		{"two JSON values", `{} {}`, 400, "data after"},
		{"an empty body", "", 400, "empty body"},
		{"an oversized body", `{"name": "` + strings.Repeat("x", server.MaxRequestSize) +
			`"}`, 413, "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.as(t, store.RoleOperator, "POST", "/deployments", tt.body)
			requireProblem(t, w, tt.code, tt.detail)
		})
	}
	deps, _, err := e.st.ListDeployments(context.Background(), store.DeploymentFilter{},
		store.Page{})
	require.NoError(t, err)
	assert.Empty(t, deps)
}

func TestManagementAPI_CreateDeployment_RefusesBusyDevices(t *testing.T) {
	e := newMgmtEnv(t)
	rel := e.release(t, "1.0.0")
	busy := e.devices(t, 25, "fleet")
	w := e.as(t, store.RoleOperator, "POST", "/deployments", map[string]any{
		"releaseId": rel, "target": map[string]any{"group": "fleet"}})
	first := ok[deploymentOut](t, w, http.StatusCreated)
	free := e.device(t, store.Device{Status: store.StatusAccepted, Groups: []string{"fleet"}})

	w = e.as(t, store.RoleOperator, "POST", "/deployments", map[string]any{
		"releaseId": rel, "target": map[string]any{"group": "fleet"}})
	requireProblem(t, w, http.StatusConflict, "25 target devices take part")
	var p struct{ Devices []string }
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
	assert.Len(t, p.Devices, 20)
	assert.Subset(t, busy, p.Devices)
	assert.NotContains(t, p.Devices, free)

	// Once the first deployment is over, its devices are free again.
	w = e.as(t, store.RoleOperator, "POST", "/deployments/"+first.ID+"/abort", nil)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	w = e.as(t, store.RoleOperator, "POST", "/deployments", map[string]any{
		"releaseId": rel, "target": map[string]any{"group": "fleet"}})
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
}

// racyStore reports no device busy, as if the other deployment took
// them between the check and the adding.
type racyStore struct {
	store.Store
}

func (racyStore) ActiveDeviceDeployment(context.Context, string) (store.DeviceDeployment,
	error) {
	return store.DeviceDeployment{}, store.ErrNotFound
}

func TestManagementAPI_CreateDeployment_AbortsOnARace(t *testing.T) {
	var racy *mgmtEnv
	racy = newMgmtEnv(t, func(c *server.ManagementAPIConfig) {
		c.Store = racyStore{c.Store}
	})
	rel := racy.release(t, "1.0.0")
	racy.devices(t, 3, "fleet")
	body := map[string]any{"releaseId": rel, "target": map[string]any{"group": "fleet"}}
	w := racy.as(t, store.RoleOperator, "POST", "/deployments", body)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())

	w = racy.as(t, store.RoleOperator, "POST", "/deployments", body)
	requireProblem(t, w, http.StatusConflict, "was aborted")
	var p struct{ DeploymentID string }
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
	dep, err := racy.st.Deployment(context.Background(), p.DeploymentID)
	require.NoError(t, err)
	assert.Equal(t, store.DeploymentAborted, dep.Status)
	assert.Equal(t, "deployment.abort", racy.audit(t)[0].Action)
	assert.Equal(t, "deployment.create", racy.audit(t)[1].Action)
}

func TestManagementAPI_DeploymentStatus(t *testing.T) {
	e := newMgmtEnv(t)
	rel := e.release(t, "1.0.0")
	e.devices(t, 2, "fleet")
	w := e.as(t, store.RoleOperator, "POST", "/deployments", map[string]any{
		"releaseId": rel, "target": map[string]any{"group": "fleet"}})
	id := ok[deploymentOut](t, w, http.StatusCreated).ID
	tests := []struct {
		action string
		code   int
		want   string
	}{
		{"pause", http.StatusOK, "paused"},
		{"pause", http.StatusOK, "paused"},
		{"resume", http.StatusOK, "active"},
		{"abort", http.StatusOK, "aborted"},
		{"resume", http.StatusConflict, "aborted"},
		{"pause", http.StatusConflict, "aborted"},
	}
	for _, tt := range tests {
		t.Run(tt.action+" gives "+tt.want, func(t *testing.T) {
			w := e.as(t, store.RoleOperator, "POST", "/deployments/"+id+"/"+tt.action, nil)
			if tt.code == http.StatusConflict {
				requireProblem(t, w, tt.code, "is aborted and cannot become")
			} else {
				assert.Equal(t, tt.want, ok[deploymentOut](t, w, tt.code).Status)
			}
			dep, err := e.st.Deployment(context.Background(), id)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(dep.Status))
		})
	}
	d := ok[deploymentOut](t, e.as(t, store.RoleViewer, "GET", "/deployments/"+id, nil),
		http.StatusOK)
	assert.Equal(t, map[string]int{"skipped": 2}, d.Counts.States)

	var actions []string
	for _, entry := range e.audit(t)[:4] {
		actions = append(actions, entry.Action)
		assert.Equal(t, "deployment:"+id, entry.Object)
	}
	assert.Equal(t, []string{"deployment.abort", "deployment.resume", "deployment.pause",
		"deployment.pause"}, actions)
	requireProblem(t, e.as(t, store.RoleOperator, "POST", "/deployments/nope/pause", nil),
		http.StatusNotFound, "not found")
}

func TestManagementAPI_Audit(t *testing.T) {
	e := newMgmtEnv(t)
	s := e.login(t, "alice", e.user(t, "alice", store.RoleOperator))
	dev := e.device(t, store.Device{})
	w := e.call(t, "POST", "/devices/"+dev+"/accept", s, nil)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	w = e.as(t, store.RoleOperator, "PUT", "/devices/"+dev+"/tags",
		map[string]any{"tags": []string{"x"}})
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	for range 3 {
		e.as(t, store.RoleOperator, "POST", "/devices/"+dev+"/reject", nil)
	}

	type entryOut struct {
		ID                    int64
		Actor, Action, Object string
		At                    time.Time
		Details               map[string]any
	}
	type auditPage struct {
		Items []entryOut
		Next  string
	}
	page := ok[auditPage](t, e.as(t, store.RoleViewer, "GET", "/audit?object=device:"+dev,
		nil), http.StatusOK)
	require.Len(t, page.Items, 5)
	operator := "token:" + e.tokenID(t, e.tokens[store.RoleOperator])
	assert.Equal(t, entryOut{ID: page.Items[4].ID, Actor: "user:alice",
		Action: "device.accept", Object: "device:" + dev, At: e.clock.Now(),
		Details: map[string]any{"from": "pending", "to": "accepted"}}, page.Items[4])
	assert.Equal(t, operator, page.Items[3].Actor)
	assert.Equal(t, "device.tags", page.Items[3].Action)
	assert.Equal(t, "device.reject", page.Items[0].Action)

	page = ok[auditPage](t, e.as(t, store.RoleViewer, "GET",
		"/audit?object=device:"+dev+"&limit=2", nil), http.StatusOK)
	require.Len(t, page.Items, 2)
	require.NotEmpty(t, page.Next)
	older := ok[auditPage](t, e.as(t, store.RoleViewer, "GET",
		"/audit?object=device:"+dev+"&limit=10&before="+page.Next, nil), http.StatusOK)
	require.Len(t, older.Items, 3)
	assert.Less(t, older.Items[0].ID, page.Items[1].ID)

	for _, tt := range []struct{ name, query string }{
		{"a before that is no number", "before=x"},
		{"a negative before", "before=-3"},
		{"a limit over the maximum", "limit=5000"},
		{"an unknown parameter", "actor=me"},
	} {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			w := e.as(t, store.RoleViewer, "GET", "/audit?"+tt.query, nil)
			require.Equal(t, http.StatusBadRequest, w.Code, w.Body.String())
			problem(t, w)
		})
	}
}

// TestManagementAPI_NeverStoresSecrets runs every kind of mutation that
// handles a secret and checks that neither the audit log nor the store
// keeps one in clear.
func TestManagementAPI_NeverStoresSecrets(t *testing.T) {
	e := newMgmtEnv(t)
	const password = "a secret password"
	secrets := []string{password}
	w := e.as(t, store.RoleAdmin, "POST", "/users", map[string]string{"name": "bob",
		"role": "admin", "password": password})
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	s := e.login(t, "bob", password)
	secrets = append(secrets, s.cookie.Value, s.csrf)
	w = e.call(t, "POST", "/tokens", s, map[string]string{"name": "ci", "role": "viewer"})
	secrets = append(secrets, ok[struct{ Secret string }](t, w, http.StatusCreated).Secret)
	w = e.call(t, "POST", "/me/password", s, map[string]string{"current": password,
		"new": "another secret password"})
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
	secrets = append(secrets, "another secret password")

	for _, entry := range e.audit(t) {
		raw, err := json.Marshal(entry)
		require.NoError(t, err)
		for _, secret := range secrets {
			assert.NotContains(t, string(raw), secret)
		}
	}
	u, err := e.st.User(context.Background(), "bob")
	require.NoError(t, err)
	for _, secret := range secrets {
		assert.NotContains(t, u.PasswordHash, secret)
	}
	ses, err := e.st.Session(context.Background(), []byte(s.cookie.Value), e.clock.Now())
	assert.True(t, errors.Is(err, store.ErrNotFound), "session stored by its ID: %v", ses)
}

func TestManagementAPI_BadPathIDs(t *testing.T) {
	e := newMgmtEnv(t)
	long := strings.Repeat("a", 129)
	for _, path := range []string{"/devices/" + long, "/releases/" + long,
		"/deployments/" + long, "/deployments/" + long + "/devices", "/devices/a%20b",
		"/releases/%00"} {
		t.Run(path, func(t *testing.T) {
			w := e.as(t, store.RoleAdmin, "GET", path, nil)
			requireProblem(t, w, http.StatusBadRequest, "is not 1 to 128")
		})
	}
}

// TestManagementAPI_AuditsEveryMutation makes each kind of change in
// turn and checks the audit entry it wrote.
func TestManagementAPI_AuditsEveryMutation(t *testing.T) {
	e := newMgmtEnv(t)
	admin, operator := e.tokens[store.RoleAdmin], e.tokens[store.RoleOperator]
	adminActor := "token:" + e.tokenID(t, admin)
	operatorActor := "token:" + e.tokenID(t, operator)
	e.user(t, "erin", store.RoleAdmin) // so that dora is not the last admin
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	key, err := poll.PublicKeyPEM(pub)
	require.NoError(t, err)

	var (
		s          session
		tokenID    string
		releaseID  string
		deviceID   string
		deployment string
	)
	steps := []struct {
		name          string
		do            func(t *testing.T) string // returns the object
		actor, action string
	}{
		{"creating a user", func(t *testing.T) string {
			w := e.call(t, "POST", "/users", admin, map[string]string{"name": "dora",
				"role": "operator", "password": "dora's password"})
			require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
			return "user:dora"
		}, adminActor, "user.create"},
		{"changing a user", func(t *testing.T) string {
			w := e.call(t, "PATCH", "/users/dora", admin, map[string]string{"role": "admin"})
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			return "user:dora"
		}, adminActor, "user.update"},
		{"logging in", func(t *testing.T) string {
			s = e.login(t, "dora", "dora's password")
			return "user:dora"
		}, "user:dora", "user.login"},
		{"changing one's password", func(t *testing.T) string {
			w := e.call(t, "POST", "/me/password", s, map[string]string{
				"current": "dora's password", "new": "dora's new password"})
			require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
			return "user:dora"
		}, "user:dora", "user.password"},
		{"creating a token", func(t *testing.T) string {
			w := e.call(t, "POST", "/tokens", s, map[string]string{"name": "ci",
				"role": "viewer"})
			tokenID = ok[struct{ ID string }](t, w, http.StatusCreated).ID
			return "token:" + tokenID
		}, "user:dora", "token.create"},
		{"deleting a token", func(t *testing.T) string {
			w := e.call(t, "DELETE", "/tokens/"+tokenID, s, nil)
			require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
			return "token:" + tokenID
		}, "user:dora", "token.delete"},
		{"logging out", func(t *testing.T) string {
			w := e.call(t, "POST", "/logout", s, nil)
			require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
			return "user:dora"
		}, "user:dora", "user.logout"},
		{"deleting a user", func(t *testing.T) string {
			w := e.call(t, "DELETE", "/users/dora", admin, nil)
			require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
			return "user:dora"
		}, adminActor, "user.delete"},
		{"uploading a release", func(t *testing.T) string {
			releaseID = e.release(t, "3.0.0")
			return "release:" + releaseID
		}, operatorActor, "release.create"},
		{"preauthorizing a device", func(t *testing.T) string {
			w := e.call(t, "POST", "/devices/preauthorize", operator, map[string]string{
				"publicKey": key})
			deviceID = ok[struct{ ID string }](t, w, http.StatusCreated).ID
			return "device:" + deviceID
		}, operatorActor, "device.preauthorize"},
		{"tagging a device", func(t *testing.T) string {
			w := e.call(t, "PUT", "/devices/"+deviceID+"/tags", operator,
				map[string][]string{"tags": {"beta"}})
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			return "device:" + deviceID
		}, operatorActor, "device.tags"},
		{"grouping a device", func(t *testing.T) string {
			w := e.call(t, "PUT", "/devices/"+deviceID+"/groups", operator,
				map[string][]string{"groups": {"lab"}})
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			return "device:" + deviceID
		}, operatorActor, "device.groups"},
		{"deploying", func(t *testing.T) string {
			w := e.call(t, "POST", "/deployments", operator, map[string]any{
				"releaseId": releaseID, "target": map[string]string{"group": "lab"}})
			deployment = ok[struct{ ID string }](t, w, http.StatusCreated).ID
			return "deployment:" + deployment
		}, operatorActor, "deployment.create"},
		{"pausing", func(t *testing.T) string {
			e.call(t, "POST", "/deployments/"+deployment+"/pause", operator, nil)
			return "deployment:" + deployment
		}, operatorActor, "deployment.pause"},
		{"resuming", func(t *testing.T) string {
			e.call(t, "POST", "/deployments/"+deployment+"/resume", operator, nil)
			return "deployment:" + deployment
		}, operatorActor, "deployment.resume"},
		{"aborting", func(t *testing.T) string {
			e.call(t, "POST", "/deployments/"+deployment+"/abort", operator, nil)
			return "deployment:" + deployment
		}, operatorActor, "deployment.abort"},
		{"rejecting a device", func(t *testing.T) string {
			e.call(t, "POST", "/devices/"+deviceID+"/reject", operator, nil)
			return "device:" + deviceID
		}, operatorActor, "device.reject"},
		{"accepting a device", func(t *testing.T) string {
			e.call(t, "POST", "/devices/"+deviceID+"/accept", operator, nil)
			return "device:" + deviceID
		}, operatorActor, "device.accept"},
		{"decommissioning a device", func(t *testing.T) string {
			e.call(t, "POST", "/devices/"+deviceID+"/decommission", operator, nil)
			return "device:" + deviceID
		}, operatorActor, "device.decommission"},
		{"failing to delete a release in use", func(t *testing.T) string {
			w := e.call(t, "DELETE", "/releases/"+releaseID, operator, nil)
			require.Equal(t, http.StatusConflict, w.Code, w.Body.String())
			return ""
		}, "", ""},
		{"deleting a release", func(t *testing.T) string {
			releaseID = e.release(t, "3.0.1")
			w := e.call(t, "DELETE", "/releases/"+releaseID, operator, nil)
			require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
			return "release:" + releaseID
		}, operatorActor, "release.delete"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := len(e.audit(t))
			object := st.do(t)
			entries := e.audit(t)
			if st.action == "" {
				assert.Len(t, entries, before, "a refused request writes nothing")
				return
			}
			if st.action == "release.delete" {
				before++ // the upload before it
			}
			require.Len(t, entries, before+1)
			assert.Equal(t, st.actor, entries[0].Actor)
			assert.Equal(t, st.action, entries[0].Action)
			assert.Equal(t, object, entries[0].Object)
		})
	}
}
