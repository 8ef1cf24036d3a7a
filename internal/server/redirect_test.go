package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/bundlestore"
	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/rotaupdate/rota/poll"
)

func TestDeviceAPI_BundleRedirect(t *testing.T) {
	raw := []byte(strings.Repeat("0123456789", 100))
	const blobURL = "https://registry.example.com/v2/fleet/bundles/blobs/sha256:0f0f"
	other := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name     string
		path     string
		url      string // what BundleURL gives
		err      error  // what BundleURL fails with
		noURL    bool   // no BundleURL at all
		noToken  bool
		noDeploy bool
		header   []string
		wantCode int
		wantAsks int // calls of BundleURL
	}{
		{name: "a deployed bundle is redirected", path: testDigest, url: blobURL,
			wantCode: http.StatusTemporaryRedirect, wantAsks: 1},
		{name: "a ranged request is redirected too", path: testDigest, url: blobURL,
			header:   []string{"Range", "bytes=990-"},
			wantCode: http.StatusTemporaryRedirect, wantAsks: 1},
		{name: "a bundle without a URL is served", path: testDigest,
			err: fmt.Errorf("find: %w", bundlestore.ErrNotFound), wantCode: http.StatusOK,
			wantAsks: 1},
		{name: "a failed lookup falls back to serving", path: testDigest,
			err: errors.New("registry unreachable"), wantCode: http.StatusOK, wantAsks: 1},
		{name: "a URL that is not absolute is not sent", path: testDigest,
			url: "/v2/fleet/bundles/blobs/sha256:0f0f", wantCode: http.StatusOK, wantAsks: 1},
		{name: "a URL of another scheme is not sent", path: testDigest,
			url: "file:///etc/passwd", wantCode: http.StatusOK, wantAsks: 1},
		{name: "without BundleURL the server serves", path: testDigest, noURL: true,
			wantCode: http.StatusOK},
		{name: "no token gets 401, not a redirect", path: testDigest, url: blobURL,
			noToken: true, wantCode: http.StatusUnauthorized},
		{name: "a bundle not deployed to the device gets 404", path: other, url: blobURL,
			wantCode: http.StatusNotFound},
		{name: "a device without deployment gets 404", path: testDigest, url: blobURL,
			noDeploy: true, wantCode: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var asked []string
			cfg := server.DeviceAPIConfig{}
			if !tt.noURL {
				cfg.BundleURL = func(_ context.Context, digest string) (string, error) {
					mu.Lock()
					defer mu.Unlock()
					asked = append(asked, digest)
					return tt.url, tt.err
				}
			}
			e := newEnv(t, cfg)
			id, token := e.acceptedDevice(t)
			if !tt.noDeploy {
				e.deploy(t, testDigest, raw, id)
			}
			if tt.noToken {
				token = ""
			}

			w := e.do(t, "GET", "/bundles/"+tt.path, token, nil, tt.header...)
			require.Equal(t, tt.wantCode, w.Code, w.Body.String())
			mu.Lock()
			assert.Len(t, asked, tt.wantAsks)
			for _, d := range asked {
				assert.Equal(t, testDigest, d)
			}
			mu.Unlock()
			switch tt.wantCode {
			case http.StatusTemporaryRedirect:
				assert.Equal(t, tt.url, w.Header().Get("Location"))
				assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
				assert.Empty(t, w.Body.String())
			case http.StatusOK:
				assert.Empty(t, w.Header().Get("Location"))
				assert.Equal(t, string(raw), w.Body.String())
			default:
				assert.Empty(t, w.Header().Get("Location"))
				problem(t, w)
			}
		})
	}
}

// hostRecorder is a transport that records the host and path of every
// request a device makes.
type hostRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen []string
}

func (h *hostRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.seen = append(h.seen, r.URL.Host+r.URL.Path)
	h.mu.Unlock()
	return h.next.RoundTrip(r)
}

func (h *hostRecorder) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.seen...)
}

// registryDevice is a device admitted by a device API that keeps its
// bundles in a registry, with a deployment of a release.
type registryDevice struct {
	client *poll.Client
	hosts  *hostRecorder
	raw    []byte
	digest string
}

// newRegistryDevice stores a signed release in the registry at host,
// with the file blob when fileBlob is set, serves a device API that
// redirects downloads, and deploys the release to a new device.
func newRegistryDevice(t *testing.T, host string, fileBlob bool) *registryDevice {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "rota.db"))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	reg, err := bundlestore.NewRegistry(host+"/fleet/bundles",
		bundlestore.RegistryOptions{FileBlob: fileBlob})
	require.NoError(t, err)
	p, raw, digest := noisyRelease(t)
	entry, err := reg.Put(ctx, p)
	require.NoError(t, err)

	h, err := server.NewDeviceAPI(server.DeviceAPIConfig{Store: st, Bundles: reg,
		BundleURL: reg.DownloadURL, EnrollmentToken: testEnrollment})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	hosts := &hostRecorder{next: http.DefaultTransport}
	c, err := poll.New(poll.Config{ServerURL: srv.URL, Key: key,
		EnrollmentToken: testEnrollment, HTTPClient: &http.Client{Transport: hosts},
		RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
		MinThroughput: -1})
	require.NoError(t, err)
	status, err := c.Authenticate(ctx)
	require.NoError(t, err)
	require.Equal(t, poll.AuthAccepted, status.State)

	dev, err := st.DeviceByKey(ctx, poll.KeyID(key.Public().(ed25519.PublicKey)))
	require.NoError(t, err)
	rel, err := st.CreateRelease(ctx, store.Release{Version: "2.0.0",
		Compatible: "acme-board", Digest: digest, Size: entry.Size, Location: entry.Location})
	require.NoError(t, err)
	dep, err := st.CreateDeployment(ctx, store.Deployment{Name: "test", ReleaseID: rel.ID,
		Target: store.Target{Filter: &store.DeviceFilter{}}})
	require.NoError(t, err)
	require.NoError(t, st.AddDeploymentDevices(ctx, dep.ID, 0, []string{dev.ID}))
	return &registryDevice{client: c, hosts: hosts, raw: raw, digest: digest}
}

// noisyRelease builds a signed bundle of a 1 MiB image that does not
// compress and returns its path, its bytes and its digest.
func noisyRelease(t *testing.T) (string, []byte, string) {
	t.Helper()
	priv, _, err := bundle.GenerateKey(bundle.Ed25519, nil)
	require.NoError(t, err)
	signer, err := bundle.LoadSigner(priv, nil)
	require.NoError(t, err)
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.img")
	noise := make([]byte, 1<<20)
	mrand.NewChaCha8([32]byte{7}).Read(noise)
	require.NoError(t, os.WriteFile(img, noise, 0o644))
	p := filepath.Join(dir, "release.rota")
	f, err := os.Create(p)
	require.NoError(t, err)
	info, err := bundle.Create(context.Background(), f, bundle.Spec{
		Compatible: "acme-board", Version: "2.0.0",
		Images: []bundle.ImageSource{{Class: "rootfs", Path: img}},
	}, bundle.CreateOptions{Signers: []*bundle.Signer{signer}, TempDir: dir})
	require.NoError(t, err)
	require.NoError(t, f.Close())
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	return p, raw, info.Digest
}

// quietRegistry keeps the in-memory registry from logging every request.
var quietRegistry = registry.Logger(log.New(io.Discard, "", 0))

func TestDeviceAPI_DownloadsFromTheRegistry(t *testing.T) {
	memory := func(t testing.TB) string {
		srv := httptest.NewServer(registry.New(quietRegistry))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	tests := []struct {
		name     string
		start    func(t testing.TB) string
		fileBlob bool
		resume   bool // start in the middle, as an agent after a restart
	}{
		{name: "whole, from the distribution registry", start: testutil.StartRegistry,
			fileBlob: true},
		{name: "resumed, from the distribution registry", start: testutil.StartRegistry,
			fileBlob: true, resume: true},
		// The in-memory registry understands only ranges with both ends,
		// and devices resume with "bytes=<offset>-".
		{name: "whole, from the in-memory registry", start: memory, fileBlob: true},
		{name: "whole, from the server without a file blob", start: memory},
		{name: "resumed, from the server without a file blob", start: memory,
			resume: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := tt.start(t)
			d := newRegistryDevice(t, host, tt.fileBlob)
			var offset int64
			if tt.resume {
				offset = int64(len(d.raw))/2 + 7
			}

			dl, err := d.client.Download(t.Context(),
				poll.APIPath+"/bundles/"+d.digest, offset)
			require.NoError(t, err)
			defer dl.Close()
			got, err := io.ReadAll(dl)
			require.NoError(t, err)
			require.True(t, bytes.Equal(d.raw[offset:], got), "the bytes of the release")
			assert.Equal(t, int64(len(d.raw)), dl.Size())

			fromRegistry := false
			for _, r := range d.hosts.requests() {
				if strings.HasPrefix(r, host+"/v2/fleet/bundles/blobs/sha256:") {
					fromRegistry = true
				}
			}
			assert.Equal(t, tt.fileBlob, fromRegistry, "requests: %v", d.hosts.requests())
		})
	}
}
