package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// deviceOut is a device as the API shows it.
type deviceOut struct {
	ID, KeyID, PublicKey, Status string
	Identity, Inventory          map[string]string
	Tags, Groups                 []string
	History                      []struct {
		DeploymentID, DeploymentName, ReleaseVersion, State string
		Log                                                 []string
		Reports                                             []struct {
			ID, State, Message string
			Received           time.Time
		}
	}
}

type devicePage struct {
	Items []deviceOut
	Next  string
	Total int
}

func TestManagementAPI_ListDevices(t *testing.T) {
	e := newMgmtEnv(t)
	ctx := context.Background()
	ids := map[string]string{}
	for _, d := range []struct {
		name string
		dev  store.Device
	}{
		{"a", store.Device{Status: store.StatusAccepted, Groups: []string{"lab"},
			Tags: []string{"beta"}, Inventory: map[string]string{"hw": "rev2", "site": "x"}}},
		{"b", store.Device{Status: store.StatusAccepted, Groups: []string{"lab", "field"},
			Inventory: map[string]string{"hw": "rev1"}}},
		{"c", store.Device{Status: store.StatusAccepted, Groups: []string{"field"},
			Tags: []string{"beta"}, Inventory: map[string]string{"hw": "rev2"}}},
		{"d", store.Device{Status: store.StatusPending}},
		{"e", store.Device{Status: store.StatusRejected, Tags: []string{"beta"}}},
	} {
		ids[d.name] = e.device(t, d.dev)
	}
	require.NoError(t, e.st.RecordCheck(ctx, ids["a"], store.CheckInfo{Version: "1.0.0"}))
	require.NoError(t, e.st.RecordCheck(ctx, ids["c"], store.CheckInfo{Version: "1.0.0"}))

	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"no filter lists all", "", []string{"a", "b", "c", "d", "e"}},
		{"by status", "status=accepted", []string{"a", "b", "c"}},
		{"by group", "group=lab", []string{"a", "b"}},
		{"by tag", "tag=beta", []string{"a", "c", "e"}},
		{"by version", "version=1.0.0", []string{"a", "c"}},
		{"by an inventory attribute", "inventory.hw=rev2", []string{"a", "c"}},
		{"by two inventory attributes", "inventory.hw=rev2&inventory.site=x", []string{"a"}},
		{"by everything at once", "status=accepted&group=field&tag=beta&inventory.hw=rev2",
			[]string{"c"}},
		{"by a group nobody is in", "group=none", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page := ok[devicePage](t, e.as(t, store.RoleViewer, "GET", "/devices?"+tt.query,
				nil), http.StatusOK)
			var want []string
			for _, n := range tt.want {
				want = append(want, ids[n])
			}
			var got []string
			for _, d := range page.Items {
				got = append(got, d.ID)
			}
			assert.ElementsMatch(t, want, got)
			assert.Equal(t, len(tt.want), page.Total)
			assert.Empty(t, page.Next)
		})
	}

	t.Run("pages follow each other", func(t *testing.T) {
		var got []string
		path := "/devices?tag=beta&limit=2"
		for pages := 0; ; pages++ {
			require.Less(t, pages, 3)
			page := ok[devicePage](t, e.as(t, store.RoleViewer, "GET", path, nil),
				http.StatusOK)
			assert.Equal(t, 3, page.Total)
			assert.LessOrEqual(t, len(page.Items), 2)
			for _, d := range page.Items {
				got = append(got, d.ID)
			}
			if page.Next == "" {
				break
			}
			path = "/devices?tag=beta&limit=2&after=" + url.QueryEscape(page.Next)
		}
		assert.ElementsMatch(t, []string{ids["a"], ids["c"], ids["e"]}, got)
		assert.True(t, slices.IsSorted(got))
	})

	bad := []struct {
		name, query, detail string
	}{
		{"an unknown status", "status=happy", "status"},
		{"an invalid group", "group=a%20b", "group"},
		{"an invalid tag", "tag=-x", "tag"},
		{"an empty inventory name", "inventory.=x", "inventory"},
		{"an unknown parameter", "stauts=accepted", "unknown query parameter"},
		{"a repeated parameter", "tag=a&tag=b", "given 2 times"},
		{"a negative limit", "limit=-1", "limit"},
		{"a limit over the maximum", "limit=1001", "limit"},
		{"a limit that is no number", "limit=ten", "limit"},
		{"a garbage cursor", "after=%%%", "malformed query"},
		{"a cursor that is not base64", "after=not*base64", "cursor"},
	}
	for _, tt := range bad {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			w := e.as(t, store.RoleViewer, "GET", "/devices?"+tt.query, nil)
			requireProblem(t, w, http.StatusBadRequest, tt.detail)
		})
	}
}

func TestManagementAPI_DeviceStatus(t *testing.T) {
	tests := []struct {
		name   string
		from   store.AdmissionStatus
		action string
		code   int
		want   store.AdmissionStatus
	}{
		{"a pending device is accepted", store.StatusPending, "accept", 200,
			store.StatusAccepted},
		{"a pending device is rejected", store.StatusPending, "reject", 200,
			store.StatusRejected},
		{"an accepted device is rejected", store.StatusAccepted, "reject", 200,
			store.StatusRejected},
		{"a rejected device is accepted again", store.StatusRejected, "accept", 200,
			store.StatusAccepted},
		{"an accepted device is decommissioned", store.StatusAccepted, "decommission", 200,
			store.StatusDecommissioned},
		{"accepting an accepted device changes nothing", store.StatusAccepted, "accept", 200,
			store.StatusAccepted},
		{"a decommissioned device cannot be accepted", store.StatusDecommissioned, "accept",
			409, store.StatusDecommissioned},
		{"a decommissioned device cannot be rejected", store.StatusDecommissioned, "reject",
			409, store.StatusDecommissioned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMgmtEnv(t)
			id := e.device(t, store.Device{Status: tt.from})
			w := e.as(t, store.RoleOperator, "POST", "/devices/"+id+"/"+tt.action, nil)
			if tt.code == http.StatusConflict {
				requireProblem(t, w, tt.code, "cannot become")
			} else {
				dev := ok[deviceOut](t, w, tt.code)
				assert.Equal(t, string(tt.want), dev.Status)
				entry := e.audit(t)[0]
				assert.Equal(t, "device."+tt.action, entry.Action)
				assert.Equal(t, "device:"+id, entry.Object)
			}
			dev, err := e.st.Device(context.Background(), id)
			require.NoError(t, err)
			assert.Equal(t, tt.want, dev.Status)
		})
	}
	t.Run("an unknown device is not found", func(t *testing.T) {
		e := newMgmtEnv(t)
		w := e.as(t, store.RoleOperator, "POST", "/devices/nope/accept", nil)
		requireProblem(t, w, http.StatusNotFound, "device nope not found")
	})
}

func TestManagementAPI_DeviceLabels(t *testing.T) {
	e := newMgmtEnv(t)
	id := e.device(t, store.Device{Status: store.StatusAccepted})
	tests := []struct {
		name, path string
		body       any
		code       int
		detail     string
	}{
		{"tags are set, sorted and deduplicated", "/tags", map[string]any{
			"tags": []string{"beta", "alpha", "beta"}}, 200, ""},
		{"groups are set", "/groups", map[string]any{"groups": []string{"lab", "field"}},
			200, ""},
		{"an empty name is refused", "/tags", map[string]any{"tags": []string{""}}, 400,
			"tags"},
		{"an oversized name is refused", "/groups", map[string]any{"groups": []string{
			"a123456789012345678901234567890123456789012345678901234567890123456789"}}, 400,
			"groups"},
		{"unsafe characters are refused", "/tags", map[string]any{"tags": []string{
			"a/b"}}, 400, "tags"},
		{"the other field is refused", "/tags", map[string]any{"groups": []string{"x"}},
			400, `{"tags"`},
		{"no list is refused", "/groups", map[string]any{}, 400, `{"groups"`},
		{"an unknown field is refused", "/tags", map[string]any{"tags": []string{},
			"labels": 1}, 400, "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.as(t, store.RoleOperator, "PUT", "/devices/"+id+tt.path, tt.body)
			if tt.detail != "" {
				requireProblem(t, w, tt.code, tt.detail)
				return
			}
			require.Equal(t, tt.code, w.Code, w.Body.String())
		})
	}
	dev := ok[deviceOut](t, e.as(t, store.RoleViewer, "GET", "/devices/"+id, nil), 200)
	assert.Equal(t, []string{"alpha", "beta"}, dev.Tags)
	assert.Equal(t, []string{"field", "lab"}, dev.Groups)
	w := e.as(t, store.RoleOperator, "PUT", "/devices/nope/tags",
		map[string]any{"tags": []string{}})
	requireProblem(t, w, http.StatusNotFound, "not found")

	e.device(t, store.Device{Groups: []string{"lab"}})
	groups := ok[[]struct {
		Name    string
		Devices int
	}](t, e.as(t, store.RoleViewer, "GET", "/groups", nil), http.StatusOK)
	assert.Equal(t, []struct {
		Name    string
		Devices int
	}{{"field", 1}, {"lab", 2}}, groups)

	actions := []string{e.audit(t)[0].Action, e.audit(t)[1].Action}
	assert.Equal(t, []string{"device.groups", "device.tags"}, actions)
}

func TestManagementAPI_Preauthorize(t *testing.T) {
	e := newMgmtEnv(t)
	devAPI, err := server.NewDeviceAPI(server.DeviceAPIConfig{Store: e.st,
		Bundles: &dirStore{dir: t.TempDir()}})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(poll.APIPath+"/", devAPI)
	mux.Handle(server.ManagementAPIPath+"/", e.h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	pub, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	pemKey, err := poll.PublicKeyPEM(pub)
	require.NoError(t, err)
	w := e.as(t, store.RoleOperator, "POST", "/devices/preauthorize", map[string]any{
		"publicKey": pemKey, "identity": map[string]string{"serial": "SN-7"}})
	dev := ok[deviceOut](t, w, http.StatusCreated)
	assert.Equal(t, "accepted", dev.Status)
	assert.Equal(t, poll.KeyID(pub), dev.KeyID)
	assert.Equal(t, map[string]string{"serial": "SN-7"}, dev.Identity)
	entry := e.audit(t)[0]
	assert.Equal(t, "device.preauthorize", entry.Action)
	assert.Equal(t, "device:"+dev.ID, entry.Object)

	client, err := poll.New(poll.Config{ServerURL: srv.URL, Key: key, RetryMax: -1,
		Identity: map[string]string{"serial": "SN-7"}})
	require.NoError(t, err)
	status, err := client.Authenticate(context.Background())
	require.NoError(t, err)
	assert.Equal(t, poll.AuthAccepted, status.State)
	devices, err := e.st.CountDevices(context.Background(), store.DeviceFilter{})
	require.NoError(t, err)
	assert.Equal(t, 1, devices, "the device was not registered twice")

	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	otherPEM, err := poll.PublicKeyPEM(otherKey.Public().(ed25519.PublicKey))
	require.NoError(t, err)
	tests := []struct {
		name   string
		body   any
		code   int
		detail string
	}{
		{"a known key is refused", map[string]any{"publicKey": pemKey}, http.StatusConflict,
			"already has this key"},
		{"a key that is no PEM is refused", map[string]any{"publicKey": "ssh-ed25519 AAAA"},
			http.StatusBadRequest, "PEM"},
		{"no key is refused", map[string]any{}, http.StatusBadRequest, "PEM"},
		{"a bad identity is refused", map[string]any{"publicKey": otherPEM,
			"identity": map[string]string{"bad name!": "x"}}, http.StatusBadRequest,
			"attribute name"},
		{"an unknown field is refused", map[string]any{"publicKey": otherPEM,
			"status": "accepted"}, http.StatusBadRequest, "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.as(t, store.RoleOperator, "POST", "/devices/preauthorize", tt.body)
			requireProblem(t, w, tt.code, tt.detail)
		})
	}
	var p struct{ DeviceID string }
	w = e.as(t, store.RoleOperator, "POST", "/devices/preauthorize",
		map[string]any{"publicKey": pemKey})
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
	assert.Equal(t, dev.ID, p.DeviceID)
}

func TestManagementAPI_DeviceHistory(t *testing.T) {
	e := newMgmtEnv(t)
	ctx := context.Background()
	rel := e.release(t, "1.0.0")
	id := e.device(t, store.Device{Status: store.StatusAccepted,
		Identity: map[string]string{"serial": "SN-1"}})
	w := e.as(t, store.RoleOperator, "POST", "/deployments", map[string]any{
		"name": "first", "releaseId": rel,
		"target": map[string]any{"filter": map[string]any{}}})
	dep := ok[struct{ ID string }](t, w, http.StatusCreated)
	_, err := e.st.RecordReport(ctx, dep.ID, id, poll.Report{ID: "r1",
		State: poll.ReportDownloading})
	require.NoError(t, err)
	_, err = e.st.RecordReport(ctx, dep.ID, id, poll.Report{ID: "r2",
		State: poll.ReportFailure, Message: "disk full", Log: []string{"write: no space"}})
	require.NoError(t, err)

	dev := ok[deviceOut](t, e.as(t, store.RoleViewer, "GET", "/devices/"+id, nil),
		http.StatusOK)
	assert.Equal(t, map[string]string{"serial": "SN-1"}, dev.Identity)
	require.Len(t, dev.History, 1)
	h := dev.History[0]
	assert.Equal(t, dep.ID, h.DeploymentID)
	assert.Equal(t, "first", h.DeploymentName)
	assert.Equal(t, "1.0.0", h.ReleaseVersion)
	assert.Equal(t, "failure", h.State)
	assert.Equal(t, []string{"write: no space"}, h.Log)
	require.Len(t, h.Reports, 2)
	assert.Equal(t, "downloading", h.Reports[0].State)
	assert.Equal(t, "disk full", h.Reports[1].Message)
	assert.False(t, h.Reports[1].Received.IsZero())

	requireProblem(t, e.as(t, store.RoleViewer, "GET", "/devices/nope", nil),
		http.StatusNotFound, "not found")
}
