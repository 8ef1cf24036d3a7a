package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"github.com/rotaupdate/rota/internal/testutil"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
	"github.com/stretchr/testify/require"
)

// env is a device API on a fresh SQLite store with a fake clock.
type env struct {
	st       *store.SQLite
	h        http.Handler
	clock    *testutil.Clock
	bundles  *dirStore
	tokenKey []byte
	keys     map[string]ed25519.PrivateKey // by device ID
}

const testEnrollment = "enroll-me"

// newEnv returns a device API configured by cfg, whose Store, Bundles
// and Now it fills in.
func newEnv(t *testing.T, cfg server.DeviceAPIConfig) *env {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "rota.db"))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return newEnvWith(t, st, cfg)
}

// newEnvWith returns a device API on st configured by cfg, as another
// replica of a server on the same store.
func newEnvWith(t *testing.T, st *store.SQLite, cfg server.DeviceAPIConfig) *env {
	t.Helper()
	e := &env{st: st, clock: testutil.NewClock(time.Now().UTC()),
		bundles: &dirStore{dir: t.TempDir()}, tokenKey: cfg.TokenKey,
		keys: map[string]ed25519.PrivateKey{}}
	cfg.Store, cfg.Bundles, cfg.Now = st, e.bundles, e.clock.Now
	var err error
	e.h, err = server.NewDeviceAPI(cfg)
	require.NoError(t, err)
	return e
}

// tokenFor authenticates the device with key here and returns its
// token.
func (e *env) tokenFor(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	w, resp := e.auth(t, key, e.authPayload(t, key))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	return resp.Token
}

// tamper changes one byte of part (1 the payload, 2 the signature) of a
// device token.
func tamper(token string, part int) string {
	parts := strings.Split(token, ".")
	b := []byte(parts[part])
	b[len(b)/2] ^= 'A' ^ 'B'
	parts[part] = string(b)
	return strings.Join(parts, ".")
}

// do sends a request with body (a string sent as is, or a value sent as
// JSON) and token, if not empty, to the handler.
func (e *env) do(t *testing.T, method, path, token string, body any,
	header ...string) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader = http.NoBody
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		require.NoError(t, err)
		r = bytes.NewReader(data)
	}
	req := httptest.NewRequest(method, poll.APIPath+path, r)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	return w
}

// newKey returns a fresh device key.
func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return key
}

// authPayload returns a valid payload for key at the env's time.
func (e *env) authPayload(t *testing.T, key ed25519.PrivateKey) poll.AuthPayload {
	t.Helper()
	pem, err := poll.PublicKeyPEM(key.Public().(ed25519.PublicKey))
	require.NoError(t, err)
	return poll.AuthPayload{
		Identity:  poll.Identity{Attributes: map[string]string{"serial": "SN-1"}},
		PublicKey: pem,
		Timestamp: e.clock.Now(),
		Nonce:     rand.Text(),
	}
}

// auth signs p with key and posts it.
func (e *env) auth(t *testing.T, key ed25519.PrivateKey,
	p poll.AuthPayload) (*httptest.ResponseRecorder, poll.AuthResponse) {
	t.Helper()
	req, err := poll.SignAuth(key, p)
	require.NoError(t, err)
	w := e.do(t, http.MethodPost, "/auth", "", req)
	var resp poll.AuthResponse
	if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &resp))
	}
	return w, resp
}

// acceptedDevice registers a device, has an operator accept it and
// returns its ID and a token.
func (e *env) acceptedDevice(t *testing.T) (string, string) {
	t.Helper()
	key := newKey(t)
	w, _ := e.auth(t, key, e.authPayload(t, key))
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	id := e.setStatus(t, key, store.StatusAccepted)
	w, resp := e.auth(t, key, e.authPayload(t, key))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	e.keys[id] = key
	return id, resp.Token
}

// setStatus gives the registered device with key the admission status,
// as an operator would, and returns its ID.
func (e *env) setStatus(t *testing.T, key ed25519.PrivateKey, status store.AdmissionStatus) string {
	t.Helper()
	dev, err := e.st.DeviceByKey(context.Background(),
		poll.KeyID(key.Public().(ed25519.PublicKey)))
	require.NoError(t, err)
	_, err = e.st.SetDeviceStatus(context.Background(), dev.ID, status)
	require.NoError(t, err)
	return dev.ID
}

// enrolled admits the device of key by the enrollment token and returns
// its token.
func (e *env) enrolled(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	p := e.authPayload(t, key)
	p.EnrollmentToken = testEnrollment
	w, resp := e.auth(t, key, p)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	return resp.Token
}

// testDigest is the digest of a release the tests deploy.
const testDigest = "sha256:" +
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// deploy stores raw as the bundle with digest, registers it as a release
// for "acme-board" and deploys it at once to devices; it returns the
// deployment ID.
func (e *env) deploy(t *testing.T, digest string, raw []byte, devices ...string) string {
	t.Helper()
	return e.deployWith(t, store.Strategy{}, digest, raw, devices...)
}

// deployWith is deploy with a rollout strategy.
func (e *env) deployWith(t *testing.T, s store.Strategy, digest string, raw []byte,
	devices ...string) string {
	t.Helper()
	ctx := context.Background()
	p, err := e.bundles.path(digest)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, raw, 0o644))
	rel, err := e.st.CreateRelease(ctx, store.Release{Version: "2.0.0",
		Compatible: "acme-board", Digest: digest, Size: int64(len(raw)), Location: p})
	require.NoError(t, err)
	dep, err := e.st.CreateDeployment(ctx, store.Deployment{Name: "test",
		ReleaseID: rel.ID, Target: store.Target{Filter: &store.DeviceFilter{}},
		Strategy: s})
	require.NoError(t, err)
	require.NoError(t, e.st.AddDeploymentDevices(ctx, dep.ID, 0, devices))
	return dep.ID
}

// problem decodes a problem document.
func problem(t *testing.T, w *httptest.ResponseRecorder) poll.Problem {
	t.Helper()
	require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"),
		w.Body.String())
	var p poll.Problem
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
	return p
}
