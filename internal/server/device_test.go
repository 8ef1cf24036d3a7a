package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewDeviceAPI_RefusesIncompleteConfig(t *testing.T) {
	st, err := store.OpenSQLite(context.Background(), t.TempDir()+"/rota.db")
	require.NoError(t, err)
	defer st.Close()
	tests := []struct {
		name string
		cfg  server.DeviceAPIConfig
	}{
		{"no store", server.DeviceAPIConfig{Bundles: &dirStore{}}},
		{"no bundles", server.DeviceAPIConfig{Store: st}},
		{"a negative token lifetime", server.DeviceAPIConfig{Store: st,
			Bundles: &dirStore{}, TokenLifetime: -time.Second}},
		{"an oversized enrollment token", server.DeviceAPIConfig{Store: st,
			Bundles: &dirStore{}, EnrollmentToken: strings.Repeat("x", 300)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := server.NewDeviceAPI(tt.cfg)
			require.ErrorIs(t, err, server.ErrConfig)
		})
	}
}

func TestDeviceAPI_Auth(t *testing.T) {
	tests := []struct {
		name       string
		send       func(t *testing.T, e *env, key ed25519.PrivateKey) *httptest.ResponseRecorder
		wantCode   int
		wantStatus poll.AuthState // for JSON answers
		wantDetail string         // for problem answers
	}{
		{"an unknown key is registered as pending", func(t *testing.T, e *env,
			key ed25519.PrivateKey) *httptest.ResponseRecorder {
			w, _ := e.auth(t, key, e.authPayload(t, key))
			return w
		}, http.StatusAccepted, poll.AuthPending, ""},
		{"the enrollment token admits at once", func(t *testing.T, e *env,
			key ed25519.PrivateKey) *httptest.ResponseRecorder {
			p := e.authPayload(t, key)
			p.EnrollmentToken = testEnrollment
			w, _ := e.auth(t, key, p)
			return w
		}, http.StatusOK, poll.AuthAccepted, ""},
		{"a wrong enrollment token leaves the device pending", func(t *testing.T, e *env,
			key ed25519.PrivateKey) *httptest.ResponseRecorder {
			p := e.authPayload(t, key)
			p.EnrollmentToken = "guess"
			w, _ := e.auth(t, key, p)
			return w
		}, http.StatusAccepted, poll.AuthPending, ""},
		{"a replayed request is refused", func(t *testing.T, e *env,
			key ed25519.PrivateKey) *httptest.ResponseRecorder {
			req, err := poll.SignAuth(key, e.authPayload(t, key))
			require.NoError(t, err)
			require.Equal(t, http.StatusAccepted, e.do(t, "POST", "/auth", "", req).Code)
			return e.do(t, "POST", "/auth", "", req)
		}, http.StatusBadRequest, "", "nonce already used"},
		{"a timestamp beyond the clock skew is refused", func(t *testing.T, e *env,
			key ed25519.PrivateKey) *httptest.ResponseRecorder {
			p := e.authPayload(t, key)
			p.Timestamp = p.Timestamp.Add(-poll.MaxClockSkew - time.Minute)
			w, _ := e.auth(t, key, p)
			return w
		}, http.StatusBadRequest, "", "from the server's clock"},
		{"a signature by another key is refused", func(t *testing.T, e *env,
			key ed25519.PrivateKey) *httptest.ResponseRecorder {
			req, err := poll.SignAuth(newKey(t), e.authPayload(t, key))
			require.NoError(t, err)
			return e.do(t, "POST", "/auth", "", req)
		}, http.StatusBadRequest, "", "bad signature"},
		{"a payload that is not base64 is refused", func(t *testing.T, e *env,
			_ ed25519.PrivateKey) *httptest.ResponseRecorder {
			return e.do(t, "POST", "/auth", "", poll.AuthRequest{Payload: "%%%",
				Signature: "AAAA"})
		}, http.StatusBadRequest, "", "payload"},
		{"malformed JSON is refused", func(t *testing.T, e *env,
			_ ed25519.PrivateKey) *httptest.ResponseRecorder {
			return e.do(t, "POST", "/auth", "", `{"payload": `)
		}, http.StatusBadRequest, "", "decode request"},
		{"an empty body is refused", func(t *testing.T, e *env,
			_ ed25519.PrivateKey) *httptest.ResponseRecorder {
			return e.do(t, "POST", "/auth", "", "")
		}, http.StatusBadRequest, "", "empty body"},
		{"two JSON values are refused", func(t *testing.T, e *env,
			_ ed25519.PrivateKey) *httptest.ResponseRecorder {
			return e.do(t, "POST", "/auth", "", `{} {}`)
		}, http.StatusBadRequest, "", "data after"},
		{"an oversized body is refused", func(t *testing.T, e *env,
			_ ed25519.PrivateKey) *httptest.ResponseRecorder {
			big := `{"payload": "` + strings.Repeat("A", server.MaxRequestSize) + `"}`
			return e.do(t, "POST", "/auth", "", big)
		}, http.StatusRequestEntityTooLarge, "", "over"},
		{"another method is refused", func(t *testing.T, e *env,
			_ ed25519.PrivateKey) *httptest.ResponseRecorder {
			return e.do(t, "GET", "/auth", "", nil)
		}, http.StatusMethodNotAllowed, "", "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, server.DeviceAPIConfig{EnrollmentToken: testEnrollment})
			w := tt.send(t, e, newKey(t))
			require.Equal(t, tt.wantCode, w.Code, w.Body.String())
			if tt.wantDetail != "" {
				assert.Contains(t, problem(t, w).Detail, tt.wantDetail)
				return
			}
			var resp poll.AuthResponse
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &resp))
			assert.Equal(t, tt.wantStatus, resp.Status)
			if tt.wantStatus == poll.AuthAccepted {
				assert.True(t, strings.HasPrefix(resp.Token, "v1."), resp.Token)
				assert.WithinDuration(t, e.clock.Now().Add(server.DefaultTokenLifetime),
					resp.ExpiresAt, time.Second)
			} else {
				assert.Empty(t, resp.Token)
				assert.Equal(t, int(server.DefaultPollInterval/time.Second), resp.RetryAfter)
			}
		})
	}
}

func TestDeviceAPI_AuthFollowsAdmission(t *testing.T) {
	tests := []struct {
		name       string
		steps      []store.AdmissionStatus
		wantCode   int
		wantStatus poll.AuthState
	}{
		{"an operator accepts a pending device", []store.AdmissionStatus{
			store.StatusAccepted}, http.StatusOK, poll.AuthAccepted},
		{"an operator rejects a pending device", []store.AdmissionStatus{
			store.StatusRejected}, http.StatusForbidden, poll.AuthRejected},
		{"an accepted device is rejected later", []store.AdmissionStatus{
			store.StatusAccepted, store.StatusRejected}, http.StatusForbidden,
			poll.AuthRejected},
		{"a rejected device is accepted again", []store.AdmissionStatus{
			store.StatusRejected, store.StatusAccepted}, http.StatusOK, poll.AuthAccepted},
		{"a decommissioned device stays out", []store.AdmissionStatus{
			store.StatusAccepted, store.StatusDecommissioned}, http.StatusForbidden,
			poll.AuthRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, server.DeviceAPIConfig{EnrollmentToken: testEnrollment})
			key := newKey(t)
			w, _ := e.auth(t, key, e.authPayload(t, key))
			require.Equal(t, http.StatusAccepted, w.Code)
			dev, err := e.st.DeviceByKey(context.Background(),
				poll.KeyID(key.Public().(ed25519.PublicKey)))
			require.NoError(t, err)
			assert.Equal(t, map[string]string{"serial": "SN-1"}, dev.Identity)
			for _, s := range tt.steps {
				_, err := e.st.SetDeviceStatus(context.Background(), dev.ID, s)
				require.NoError(t, err)
			}

			// The enrollment token must not overrule an operator.
			p := e.authPayload(t, key)
			p.EnrollmentToken = testEnrollment
			w, resp := e.auth(t, key, p)
			require.Equal(t, tt.wantCode, w.Code, w.Body.String())
			assert.Equal(t, tt.wantStatus, resp.Status)
			assert.Equal(t, tt.wantStatus == poll.AuthAccepted, resp.Token != "")
		})
	}
}

func TestDeviceAPI_BearerTokens(t *testing.T) {
	check := poll.CheckRequest{Compatible: "acme-board"}
	tests := []struct {
		name     string
		token    func(t *testing.T, e *env, id, token string) string
		wantCode int
	}{
		{"a valid token", func(_ *testing.T, _ *env, _, token string) string {
			return token
		}, http.StatusOK},
		{"no token", func(*testing.T, *env, string, string) string { return "" },
			http.StatusUnauthorized},
		{"an unknown token", func(*testing.T, *env, string, string) string {
			return "bm90LWEtdG9rZW4"
		}, http.StatusUnauthorized},
		{"an expired token", func(_ *testing.T, e *env, _, token string) string {
			e.clock.Advance(server.DefaultTokenLifetime + time.Second)
			return token
		}, http.StatusUnauthorized},
		{"a token with another device's ID", func(_ *testing.T, _ *env, _, token string) string {
			return tamper(token, 1)
		}, http.StatusUnauthorized},
		{"a token with a changed signature", func(_ *testing.T, _ *env, _, token string) string {
			return tamper(token, 2)
		}, http.StatusUnauthorized},
		{"a token of another server", func(t *testing.T, e *env, id, _ string) string {
			other := newEnvWith(t, e.st, server.DeviceAPIConfig{
				TokenKey: bytes.Repeat([]byte{7}, 32)})
			return other.tokenFor(t, e.keys[id])
		}, http.StatusUnauthorized},
		{"a token of a replica sharing the key", func(t *testing.T, e *env, id, _ string) string {
			other := newEnvWith(t, e.st, server.DeviceAPIConfig{TokenKey: e.tokenKey})
			return other.tokenFor(t, e.keys[id])
		}, http.StatusOK},
		{"the token of a device rejected since", func(t *testing.T, e *env, id,
			token string) string {
			_, err := e.st.SetDeviceStatus(context.Background(), id, store.StatusRejected)
			require.NoError(t, err)
			return token
		}, http.StatusForbidden},
		{"the token of a deleted device", func(t *testing.T, e *env, id,
			token string) string {
			require.NoError(t, e.st.DeleteDevice(context.Background(), id))
			return token
		}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, server.DeviceAPIConfig{TokenKey: bytes.Repeat([]byte{1}, 32)})
			id, token := e.acceptedDevice(t)
			w := e.do(t, "POST", "/check", tt.token(t, e, id, token), check)
			require.Equal(t, tt.wantCode, w.Code, w.Body.String())
			if tt.wantCode == http.StatusUnauthorized {
				assert.NotEmpty(t, w.Header().Get("WWW-Authenticate"))
				problem(t, w)
			}
		})
	}
}

func TestDeviceAPI_Check(t *testing.T) {
	installed := poll.CheckRequest{Compatible: "acme-board",
		Installed: poll.Installed{Version: "2.0.0", Digest: testDigest},
		Slots:     []poll.SlotInfo{{Name: "rootfs.0", Class: "rootfs", Booted: true}}}
	phased := store.Strategy{Phases: []store.Phase{{Percent: 50}, {Percent: 50}}}
	tests := []struct {
		name       string
		deploy     bool
		strategy   store.Strategy
		start      bool // as the rollout scheduler would
		pause      bool
		body       any
		wantCode   int
		wantUpdate bool
		wantDetail string
	}{
		{name: "no deployment offers nothing",
			body: poll.CheckRequest{Compatible: "acme-board"}, wantCode: http.StatusOK},
		{name: "a deployment offers its release", deploy: true,
			body:     poll.CheckRequest{Compatible: "acme-board"},
			wantCode: http.StatusOK, wantUpdate: true},
		{name: "the installed release is offered all the same", deploy: true,
			body: installed, wantCode: http.StatusOK, wantUpdate: true},
		{name: "another compatible is offered nothing", deploy: true,
			body: poll.CheckRequest{Compatible: "other-board"}, wantCode: http.StatusOK},
		{name: "a paused deployment starts no device", deploy: true, pause: true,
			body: poll.CheckRequest{Compatible: "acme-board"}, wantCode: http.StatusOK},
		{name: "a started device goes on in a paused deployment", deploy: true,
			start: true, pause: true, body: poll.CheckRequest{Compatible: "acme-board"},
			wantCode: http.StatusOK, wantUpdate: true},
		{name: "a phased deployment waits for its scheduler", deploy: true,
			strategy: phased, body: poll.CheckRequest{Compatible: "acme-board"},
			wantCode: http.StatusOK},
		{name: "a phased deployment offers a started device", deploy: true,
			strategy: phased, start: true,
			body:     poll.CheckRequest{Compatible: "acme-board"},
			wantCode: http.StatusOK, wantUpdate: true},
		{name: "a missing compatible is refused", body: poll.CheckRequest{},
			wantCode: http.StatusBadRequest, wantDetail: "compatible is empty"},
		{name: "a malformed digest is refused", body: poll.CheckRequest{
			Compatible: "acme-board", Installed: poll.Installed{Digest: "md5:x"}},
			wantCode: http.StatusBadRequest, wantDetail: "installed.digest"},
		{name: "too many slots are refused", body: poll.CheckRequest{
			Compatible: "acme-board", Slots: make([]poll.SlotInfo, poll.MaxSlots+1)},
			wantCode: http.StatusBadRequest, wantDetail: "slots"},
		{name: "malformed JSON is refused", body: `{"compatible": 7}`,
			wantCode: http.StatusBadRequest, wantDetail: "decode request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, server.DeviceAPIConfig{})
			id, token := e.acceptedDevice(t)
			var dep string
			if tt.deploy {
				dep = e.deployWith(t, tt.strategy, testDigest, []byte("bundle bytes"), id)
			}
			if tt.start {
				started, err := e.st.StartDevices(ctx, dep, 0, 1)
				require.NoError(t, err)
				require.Equal(t, []string{id}, started)
			}
			if tt.pause {
				_, err := e.st.SetDeploymentStatus(ctx, dep, store.DeploymentPaused)
				require.NoError(t, err)
			}

			w := e.do(t, "POST", "/check", token, tt.body)
			require.Equal(t, tt.wantCode, w.Code, w.Body.String())
			if tt.wantDetail != "" {
				assert.Contains(t, problem(t, w).Detail, tt.wantDetail)
				return
			}
			var resp poll.CheckResponse
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &resp))
			require.NoError(t, resp.Validate())
			assert.Equal(t, int(server.DefaultPollInterval/time.Second), resp.PollInterval)
			if !tt.wantUpdate {
				assert.Nil(t, resp.Update)
				return
			}
			assert.Equal(t, &poll.Update{DeploymentID: dep, Version: "2.0.0",
				BundleURL: poll.APIPath + "/bundles/" + testDigest, Digest: testDigest,
				Size: int64(len("bundle bytes"))}, resp.Update)
		})
	}
}

func TestDeviceAPI_CheckIsRecordedAndCached(t *testing.T) {
	e := newEnv(t, server.DeviceAPIConfig{PollInterval: time.Minute})
	id, token := e.acceptedDevice(t)
	req := poll.CheckRequest{Compatible: "acme-board",
		Installed: poll.Installed{Version: "1.0.0"},
		Slots:     []poll.SlotInfo{{Name: "rootfs.0", Class: "rootfs", Booted: true}}}

	w := e.do(t, "POST", "/check", token, req)
	require.Equal(t, http.StatusOK, w.Code)
	etag := w.Header().Get("ETag")
	require.NotEmpty(t, etag)
	assert.JSONEq(t, `{"update": null, "pollInterval": 60}`, w.Body.String())
	dev, err := e.st.Device(context.Background(), id)
	require.NoError(t, err)
	assert.Equal(t, "1.0.0", dev.InstalledVersion)
	assert.False(t, dev.LastCheck.IsZero())
	assert.JSONEq(t, `[{"name": "rootfs.0", "class": "rootfs", "booted": true}]`,
		string(dev.Slots))

	w = e.do(t, "POST", "/check", token, req, "If-None-Match", etag)
	assert.Equal(t, http.StatusNotModified, w.Code)
	assert.Empty(t, w.Body.String())

	e.deploy(t, testDigest, []byte("bundle bytes"), id)
	w = e.do(t, "POST", "/check", token, req, "If-None-Match", etag)
	require.Equal(t, http.StatusOK, w.Code, "a new answer gets a new ETag")
	assert.NotEqual(t, etag, w.Header().Get("ETag"))
}

func TestDeviceAPI_CheckTimesAreBatched(t *testing.T) {
	e := newEnv(t, server.DeviceAPIConfig{})
	id, token := e.acceptedDevice(t)
	req := poll.CheckRequest{Compatible: "acme-board",
		Installed: poll.Installed{Version: "1.0.0"},
		Slots:     []poll.SlotInfo{{Name: "rootfs.0", Class: "rootfs", Booted: true}}}
	lastCheck := func() time.Time {
		dev, err := e.st.Device(context.Background(), id)
		require.NoError(t, err)
		return dev.LastCheck
	}

	require.Equal(t, http.StatusOK, e.do(t, "POST", "/check", token, req).Code)
	require.False(t, lastCheck().IsZero(), "the first check is written at once")

	// A check that changes nothing starts a batch...
	e.clock.Advance(300 * time.Millisecond)
	require.Equal(t, http.StatusOK, e.do(t, "POST", "/check", token, req).Code)
	second := e.clock.Now().UTC().Truncate(time.Microsecond)
	require.Eventually(t, func() bool { return lastCheck().Equal(second) },
		5*time.Second, 10*time.Millisecond)

	// ...and within a second of it, the next waits for the next batch...
	e.clock.Advance(300 * time.Millisecond)
	require.Equal(t, http.StatusOK, e.do(t, "POST", "/check", token, req).Code)
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, second, lastCheck().UTC())

	// ...which a check a second later writes, with the latest time.
	e.clock.Advance(time.Second)
	require.Equal(t, http.StatusOK, e.do(t, "POST", "/check", token, req).Code)
	want := e.clock.Now().UTC().Truncate(time.Microsecond)
	require.Eventually(t, func() bool { return lastCheck().Equal(want) },
		5*time.Second, 10*time.Millisecond)

	// A check that reports a new release is written before the answer.
	e.clock.Advance(100 * time.Millisecond)
	req.Installed.Version = "1.1.0"
	require.Equal(t, http.StatusOK, e.do(t, "POST", "/check", token, req).Code)
	dev, err := e.st.Device(context.Background(), id)
	require.NoError(t, err)
	assert.Equal(t, "1.1.0", dev.InstalledVersion)
	assert.Equal(t, e.clock.Now().UTC().Truncate(time.Microsecond), dev.LastCheck.UTC())
}

func TestDeviceAPI_Bundle(t *testing.T) {
	raw := []byte(strings.Repeat("0123456789", 100))
	other := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name      string
		path      string
		noToken   bool
		noDeploy  bool
		removed   bool
		header    []string
		wantCode  int
		wantBody  string
		wantRange string
	}{
		{name: "the whole bundle", path: testDigest, wantCode: http.StatusOK,
			wantBody: string(raw)},
		{name: "the rest of the bundle after a break", path: testDigest,
			header: []string{"Range", "bytes=990-"}, wantCode: http.StatusPartialContent,
			wantBody: string(raw[990:]), wantRange: "bytes 990-999/1000"},
		{name: "a range past the end", path: testDigest,
			header:   []string{"Range", "bytes=1000-"},
			wantCode: http.StatusRequestedRangeNotSatisfiable, wantRange: "bytes */1000"},
		{name: "a bundle not deployed to the device", path: other,
			wantCode: http.StatusNotFound},
		{name: "a malformed digest", path: "..%2f..%2fetc%2fpasswd",
			wantCode: http.StatusNotFound},
		{name: "a device without deployment", path: testDigest, noDeploy: true,
			wantCode: http.StatusNotFound},
		{name: "a bundle missing from storage", path: testDigest, removed: true,
			wantCode: http.StatusNotFound},
		{name: "no token", path: testDigest, noToken: true,
			wantCode: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, server.DeviceAPIConfig{})
			id, token := e.acceptedDevice(t)
			if !tt.noDeploy {
				e.deploy(t, testDigest, raw, id)
			}
			if tt.removed {
				p, err := e.bundles.path(testDigest)
				require.NoError(t, err)
				require.NoError(t, os.Remove(p))
			}
			if tt.noToken {
				token = ""
			}

			w := e.do(t, "GET", "/bundles/"+tt.path, token, nil, tt.header...)
			require.Equal(t, tt.wantCode, w.Code, w.Body.String())
			assert.Equal(t, tt.wantRange, w.Header().Get("Content-Range"))
			switch tt.wantCode {
			case http.StatusOK, http.StatusPartialContent:
				assert.Equal(t, tt.wantBody, w.Body.String())
				assert.Equal(t, `"`+testDigest[len("sha256:"):]+`"`, w.Header().Get("ETag"))
			case http.StatusNotFound, http.StatusUnauthorized:
				problem(t, w)
			}
		})
	}
}

func TestDeviceAPI_Report(t *testing.T) {
	valid := poll.Report{ID: "r1", State: poll.ReportDownloading,
		Progress: &poll.Progress{Done: 1, Total: 2}, Log: []string{"fetching"}}
	tests := []struct {
		name       string
		deployment func(own, others string) string
		body       any
		wantCode   int
		wantDetail string
	}{
		{"a valid report is recorded", func(own, _ string) string { return own }, valid,
			http.StatusNoContent, ""},
		{"a report on an unknown deployment", func(string, string) string {
			return "no-such-deployment"
		}, valid, http.StatusNotFound, "takes no part"},
		{"a report on another device's deployment", func(_, others string) string {
			return others
		}, valid, http.StatusNotFound, "takes no part"},
		{"an unknown state is refused", func(own, _ string) string { return own },
			poll.Report{ID: "r1", State: "exploded"}, http.StatusBadRequest,
			"unknown state"},
		{"a report without ID is refused", func(own, _ string) string { return own },
			poll.Report{State: poll.ReportSuccess}, http.StatusBadRequest, "id"},
		{"too many log lines are refused", func(own, _ string) string { return own },
			poll.Report{ID: "r1", State: poll.ReportFailure,
				Log: make([]string, poll.MaxLogLines+1)}, http.StatusBadRequest, "log lines"},
		{"an oversized deployment ID is refused", func(string, string) string {
			return strings.Repeat("d", poll.MaxFieldSize+1)
		}, valid, http.StatusBadRequest, "deployment id"},
		{"malformed JSON is refused", func(own, _ string) string { return own },
			`{"id": "r1", "state": `, http.StatusBadRequest, "decode request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, server.DeviceAPIConfig{})
			id, token := e.acceptedDevice(t)
			otherID, _ := e.acceptedDevice(t)
			own := e.deploy(t, testDigest, []byte("bundle"), id)
			others := e.deploy(t, "sha256:"+strings.Repeat("cd", 32), []byte("other"),
				otherID)

			dep := tt.deployment(own, others)
			w := e.do(t, "POST", "/deployments/"+dep+"/reports", token, tt.body)
			require.Equal(t, tt.wantCode, w.Code, w.Body.String())
			if tt.wantDetail != "" {
				assert.Contains(t, problem(t, w).Detail, tt.wantDetail)
				return
			}
			// A resent report is accepted and counted once.
			w = e.do(t, "POST", "/deployments/"+dep+"/reports", token, tt.body)
			require.Equal(t, tt.wantCode, w.Code, w.Body.String())
			reports, err := e.st.Reports(context.Background(), dep, id)
			require.NoError(t, err)
			require.Len(t, reports, 1)
			assert.Equal(t, valid.Log, reports[0].Log)
			counts, err := e.st.DeploymentCounts(context.Background(), dep)
			require.NoError(t, err)
			assert.Equal(t, 1, counts.All[store.TargetState(poll.ReportDownloading)])
		})
	}
}

func TestDeviceAPI_Inventory(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		body       any
		wantCode   int
		wantDetail string
	}{
		{"an inventory replaces the last", "PUT", poll.InventoryRequest{
			Attributes: map[string]string{"kernel": "6.12", "mac": "02:00:00:00:00:01"}},
			http.StatusNoContent, ""},
		{"a bad attribute name is refused", "PUT", poll.InventoryRequest{
			Attributes: map[string]string{"not ok": "x"}}, http.StatusBadRequest,
			"attribute name"},
		{"an oversized value is refused", "PUT", poll.InventoryRequest{
			Attributes: map[string]string{"k": strings.Repeat("v",
				poll.MaxAttributeValueSize+1)}}, http.StatusBadRequest, "value"},
		{"malformed JSON is refused", "PUT", `{"attributes": []}`, http.StatusBadRequest,
			"decode request"},
		{"another method is refused", "POST", poll.InventoryRequest{},
			http.StatusMethodNotAllowed, "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, server.DeviceAPIConfig{})
			id, token := e.acceptedDevice(t)
			w := e.do(t, tt.method, "/inventory", token, tt.body)
			require.Equal(t, tt.wantCode, w.Code, w.Body.String())
			if tt.wantDetail != "" {
				assert.Contains(t, problem(t, w).Detail, tt.wantDetail)
				return
			}
			dev, err := e.st.Device(context.Background(), id)
			require.NoError(t, err)
			assert.Equal(t, tt.body.(poll.InventoryRequest).Attributes, dev.Inventory)
		})
	}
}

func TestDeviceAPI_RateLimit(t *testing.T) {
	tests := []struct {
		name string
		// send makes one request as the device of key, or of token.
		send     func(t *testing.T, e *env, key ed25519.PrivateKey, token string) int
		wantCode int // of the requests within the burst
	}{
		{"auth requests are limited per key", func(t *testing.T, e *env,
			key ed25519.PrivateKey, _ string) int {
			w, _ := e.auth(t, key, e.authPayload(t, key))
			return w.Code
		}, http.StatusOK},
		{"checks are limited per device", func(t *testing.T, e *env, _ ed25519.PrivateKey,
			token string) int {
			w := e.do(t, "POST", "/check", token, poll.CheckRequest{Compatible: "acme-board"})
			if w.Code == http.StatusTooManyRequests {
				assert.Equal(t, "2", w.Header().Get("Retry-After"))
				assert.Contains(t, problem(t, w).Detail, "too many requests")
			}
			return w.Code
		}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, server.DeviceAPIConfig{RateLimit: 0.5, RateBurst: 2,
				EnrollmentToken: testEnrollment})
			key, otherKey := newKey(t), newKey(t)
			token, otherToken := e.enrolled(t, key), e.enrolled(t, otherKey)
			e.clock.Advance(10 * time.Second) // refill what enrolling spent

			require.Equal(t, tt.wantCode, tt.send(t, e, key, token))
			require.Equal(t, tt.wantCode, tt.send(t, e, key, token))
			require.Equal(t, http.StatusTooManyRequests, tt.send(t, e, key, token))
			assert.Equal(t, tt.wantCode, tt.send(t, e, otherKey, otherToken),
				"other devices keep their own budget")

			e.clock.Advance(2 * time.Second)
			assert.Equal(t, tt.wantCode, tt.send(t, e, key, token),
				"a request is regained after Retry-After")
		})
	}
}

func TestDeviceAPI_UnknownPath(t *testing.T) {
	e := newEnv(t, server.DeviceAPIConfig{})
	w := e.do(t, "GET", "/nothing/here", "", nil)
	require.Equal(t, http.StatusNotFound, w.Code)
	assert.Equal(t, "no such endpoint", problem(t, w).Detail)
}
