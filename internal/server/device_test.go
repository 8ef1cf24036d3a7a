package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
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
		{"a negative failure burst", server.DeviceAPIConfig{Store: st,
			Bundles: &dirStore{}, AuthFailureBurst: -1}},
		{"an invalid trusted proxy", server.DeviceAPIConfig{Store: st,
			Bundles: &dirStore{}, TrustedProxies: []netip.Prefix{{}}}},
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
		{"a request replayed to another replica is refused", func(t *testing.T, e *env,
			key ed25519.PrivateKey) *httptest.ResponseRecorder {
			req, err := poll.SignAuth(key, e.authPayload(t, key))
			require.NoError(t, err)
			require.Equal(t, http.StatusAccepted, e.do(t, "POST", "/auth", "", req).Code)
			other := newEnvWith(t, e.st, server.DeviceAPIConfig{TokenKey: e.tokenKey})
			return other.do(t, "POST", "/auth", "", req)
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

func TestDeviceAPI_AuthFailuresLimitedByAddress(t *testing.T) {
	from := origin{remote: "192.0.2.1:1234"}
	tests := []struct {
		name string
		// fail makes one failed auth request from the address from.
		fail     func(t *testing.T, e *env) *httptest.ResponseRecorder
		wantCode int
	}{
		{"malformed JSON", func(t *testing.T, e *env) *httptest.ResponseRecorder {
			return e.authFrom(t, from, `{"payload": `)
		}, http.StatusBadRequest},
		{"an oversized body", func(t *testing.T, e *env) *httptest.ResponseRecorder {
			return e.authFrom(t, from, `"`+strings.Repeat("A", server.MaxRequestSize)+`"`)
		}, http.StatusRequestEntityTooLarge},
		{"a bad signature", func(t *testing.T, e *env) *httptest.ResponseRecorder {
			return e.authFrom(t, from, badSignature(t, e))
		}, http.StatusBadRequest},
		{"a replayed request", func(t *testing.T, e *env) *httptest.ResponseRecorder {
			req := e.enrollRequest(t)
			require.Equal(t, http.StatusOK, e.authFrom(t, from, req).Code)
			return e.authFrom(t, from, req)
		}, http.StatusBadRequest},
		{"a rejected device", func(t *testing.T, e *env) *httptest.ResponseRecorder {
			key := newKey(t)
			w := e.authFrom(t, from, signed(t, key, e.authPayload(t, key)))
			require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
			e.setStatus(t, key, store.StatusRejected)
			return e.authFrom(t, from, signed(t, key, e.authPayload(t, key)))
		}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, server.DeviceAPIConfig{EnrollmentToken: testEnrollment,
				AuthFailureRate: 0.5, AuthFailureBurst: 3})
			for range 3 {
				w := tt.fail(t, e)
				require.Equal(t, tt.wantCode, w.Code, w.Body.String())
			}

			// A blocked address is refused before its request is read, so
			// that even a valid request gets 429.
			w := e.authFrom(t, from, e.enrollRequest(t))
			require.Equal(t, http.StatusTooManyRequests, w.Code, w.Body.String())
			assert.Equal(t, "2", w.Header().Get("Retry-After"))
			assert.Contains(t, problem(t, w).Detail, "too many requests")
			assert.Equal(t, http.StatusTooManyRequests, e.authFrom(t, from, "{").Code)
			w = e.authFrom(t, origin{remote: "192.0.2.2:1234"}, e.enrollRequest(t))
			assert.Equal(t, http.StatusOK, w.Code, "other addresses keep their own budget")

			e.clock.Advance(2 * time.Second)
			w = e.authFrom(t, from, e.enrollRequest(t))
			assert.Equal(t, http.StatusOK, w.Code, "a request is regained after Retry-After")
		})
	}
}

func TestDeviceAPI_AuthFailuresByClient(t *testing.T) {
	tests := []struct {
		name    string
		trusted []string // TrustedProxies
		fails   func(i int) origin
		blocked origin // from where a valid request then gets 429
		free    origin // from where a valid request still passes
	}{
		{name: "a port is no other client",
			fails: func(i int) origin {
				return origin{remote: fmt.Sprintf("192.0.2.1:%d", 1000+i)}
			},
			blocked: origin{remote: "192.0.2.1:2000"}, free: origin{remote: "192.0.2.2:1000"}},
		{name: "X-Forwarded-For of an untrusted peer is ignored",
			fails: func(i int) origin {
				return origin{remote: "192.0.2.1:1000", xff: fmt.Sprintf("203.0.113.%d", i)}
			},
			blocked: origin{remote: "192.0.2.1:1000", xff: "203.0.113.100"},
			free:    origin{remote: "192.0.2.2:1000", xff: "203.0.113.0"}},
		{name: "clients behind a trusted proxy are told apart",
			trusted: []string{"10.0.0.0/8"},
			fails: func(int) origin {
				return origin{remote: "10.0.0.1:1000", xff: "203.0.113.7"}
			},
			blocked: origin{remote: "10.0.0.2:1000", xff: "203.0.113.7"},
			free:    origin{remote: "10.0.0.1:1000", xff: "203.0.113.8"}},
		{name: "entries a client forges before its own are ignored",
			trusted: []string{"10.0.0.0/8"},
			fails: func(i int) origin {
				return origin{remote: "10.0.0.1:1000",
					xff: fmt.Sprintf("198.51.100.%d, 10.0.0.9, 203.0.113.7", i)}
			},
			blocked: origin{remote: "10.0.0.1:1000", xff: "203.0.113.7"},
			free:    origin{remote: "10.0.0.1:1000", xff: "198.51.100.1, 10.0.0.9, 203.0.113.8"}},
		{name: "an IPv6 client is limited by its /64",
			fails: func(i int) origin {
				return origin{remote: fmt.Sprintf("[2001:db8:1:2::%x]:1000", i+1)}
			},
			blocked: origin{remote: "[2001:db8:1:2:ffff::1]:1000"},
			free:    origin{remote: "[2001:db8:1:3::1]:1000"}},
		{name: "an IPv4-mapped peer is its IPv4 address",
			fails:   func(int) origin { return origin{remote: "[::ffff:192.0.2.1]:1000"} },
			blocked: origin{remote: "192.0.2.1:1000"},
			free:    origin{remote: "[::ffff:192.0.2.2]:1000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var trusted []netip.Prefix
			for _, s := range tt.trusted {
				trusted = append(trusted, netip.MustParsePrefix(s))
			}
			e := newEnv(t, server.DeviceAPIConfig{EnrollmentToken: testEnrollment,
				AuthFailureBurst: 3, TrustedProxies: trusted})
			for i := range 3 {
				w := e.authFrom(t, tt.fails(i), badSignature(t, e))
				require.Equal(t, http.StatusBadRequest, w.Code, w.Body.String())
			}

			w := e.authFrom(t, tt.blocked, e.enrollRequest(t))
			assert.Equal(t, http.StatusTooManyRequests, w.Code, w.Body.String())
			w = e.authFrom(t, tt.free, e.enrollRequest(t))
			assert.Equal(t, http.StatusOK, w.Code, w.Body.String())
		})
	}
}

func TestDeviceAPI_AuthSuccessesSpendNoAddressBudget(t *testing.T) {
	// A fleet behind one NAT enrolls, or registers as pending, at once.
	e := newEnv(t, server.DeviceAPIConfig{EnrollmentToken: testEnrollment})
	nat := origin{remote: "192.0.2.1:1234"}
	for i := range 3 * server.DefaultAuthFailureBurst {
		req, want := e.enrollRequest(t), http.StatusOK
		if i%2 == 1 {
			key := newKey(t)
			req, want = signed(t, key, e.authPayload(t, key)), http.StatusAccepted
		}
		w := e.authFrom(t, nat, req)
		require.Equal(t, want, w.Code, "request %d: %s", i, w.Body.String())
	}

	for i := range server.DefaultAuthFailureBurst {
		w := e.authFrom(t, nat, badSignature(t, e))
		require.Equal(t, http.StatusBadRequest, w.Code, "failure %d: %s", i, w.Body.String())
	}
	w := e.authFrom(t, nat, e.enrollRequest(t))
	assert.Equal(t, http.StatusTooManyRequests, w.Code, "the failures had their whole burst")
	assert.Equal(t, "1", w.Header().Get("Retry-After"))
}

func TestDeviceAPI_AuthFailureLimitOff(t *testing.T) {
	tests := []struct {
		name string
		cfg  server.DeviceAPIConfig
	}{
		{"by a negative rate limit", server.DeviceAPIConfig{RateLimit: -1}},
		{"by a negative failure rate", server.DeviceAPIConfig{AuthFailureRate: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg)
			for i := range 2 * server.DefaultAuthFailureBurst {
				w := e.authFrom(t, origin{remote: "192.0.2.1:1234"}, badSignature(t, e))
				require.Equal(t, http.StatusBadRequest, w.Code, "failure %d: %s", i,
					w.Body.String())
			}
		})
	}
}

// origin is where a request comes from: the peer's address and the
// X-Forwarded-For header, if not empty, that it sends.
type origin struct {
	remote string
	xff    string
}

// authFrom posts body, a string sent as is or a value sent as JSON, to
// /auth from o.
func (e *env) authFrom(t *testing.T, o origin, body any) *httptest.ResponseRecorder {
	t.Helper()
	data, ok := body.(string)
	if !ok {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		data = string(b)
	}
	req := httptest.NewRequest(http.MethodPost, poll.APIPath+"/auth", strings.NewReader(data))
	req.RemoteAddr = o.remote
	if o.xff != "" {
		req.Header.Set("X-Forwarded-For", o.xff)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	return w
}

// signed returns p signed with key.
func signed(t *testing.T, key ed25519.PrivateKey, p poll.AuthPayload) *poll.AuthRequest {
	t.Helper()
	req, err := poll.SignAuth(key, p)
	require.NoError(t, err)
	return req
}

// enrollRequest returns a valid auth request of a new device that shows
// the enrollment token.
func (e *env) enrollRequest(t *testing.T) *poll.AuthRequest {
	t.Helper()
	key := newKey(t)
	p := e.authPayload(t, key)
	p.EnrollmentToken = testEnrollment
	return signed(t, key, p)
}

// badSignature returns an auth request signed by another key than the
// one it names.
func badSignature(t *testing.T, e *env) *poll.AuthRequest {
	t.Helper()
	return signed(t, newKey(t), e.authPayload(t, newKey(t)))
}

func TestDeviceAPI_UnknownPath(t *testing.T) {
	e := newEnv(t, server.DeviceAPIConfig{})
	w := e.do(t, "GET", "/nothing/here", "", nil)
	require.Equal(t, http.StatusNotFound, w.Code)
	assert.Equal(t, "no such endpoint", problem(t, w).Detail)
}
