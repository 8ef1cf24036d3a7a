package bundlestore

import (
	"bytes"
	"context"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quietRegistry keeps the in-memory registry from logging every request.
var quietRegistry = registry.Logger(log.New(io.Discard, "", 0))

// startMemoryRegistry serves go-containerregistry's in-memory registry
// through a faultyRegistry and returns its host:port.
func startMemoryRegistry(t testing.TB, referrers bool) (string, *faultyRegistry) {
	t.Helper()
	fr := &faultyRegistry{next: registry.New(registry.WithReferrersSupport(referrers), quietRegistry)}
	srv := httptest.NewServer(fr)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), fr
}

// Fault modes of a faultyRegistry.
const (
	faultNone          = ""
	faultRefuseDeletes = "refuse deletes"
	faultLoseBlobs     = "lose blobs"
	faultIgnoreRanges  = "ignore ranges"
	faultCutResponses  = "cut responses"
)

// faultyRegistry passes requests to a registry, counts the blob bytes it
// serves, and misbehaves as its mode says.
type faultyRegistry struct {
	next      http.Handler
	mu        sync.Mutex
	mode      string
	password  string // when set, requests need basic auth as user "rota"
	blobBytes atomic.Int64
	ranges    atomic.Int64
}

func (f *faultyRegistry) setMode(m string) {
	f.mu.Lock()
	f.mode = m
	f.mu.Unlock()
}

func (f *faultyRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	mode, password := f.mode, f.password
	f.mu.Unlock()
	blobGet := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
	if user, pass, _ := r.BasicAuth(); password != "" && (user != "rota" || pass != password) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	switch {
	case mode == faultRefuseDeletes && r.Method == http.MethodDelete:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		io.WriteString(w, `{"errors":[{"code":"UNSUPPORTED","message":"deletes are disabled"}]}`)
		return
	case !blobGet:
		f.next.ServeHTTP(w, r)
		return
	case mode == faultLoseBlobs:
		http.Error(w, "blob unknown", http.StatusNotFound)
		return
	case mode == faultIgnoreRanges:
		r.Header.Del("Range")
	}
	if r.Header.Get("Range") != "" {
		f.ranges.Add(1)
	}
	cw := &countingWriter{ResponseWriter: w, n: &f.blobBytes, limit: -1}
	if mode == faultCutResponses {
		cw.limit = 10 << 10
	}
	f.next.ServeHTTP(cw, r)
	if cw.cut {
		// Drop the connection, as a proxy or a network failure would.
		panic(http.ErrAbortHandler)
	}
}

// countingWriter counts the body bytes written, and stops writing after
// limit of them unless limit is negative.
type countingWriter struct {
	http.ResponseWriter
	n     *atomic.Int64
	limit int64
	sent  int64
	cut   bool
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.limit >= 0 && c.sent+int64(len(p)) > c.limit {
		p = p[:c.limit-c.sent]
		c.cut = true
	}
	n, err := c.ResponseWriter.Write(p)
	c.sent += int64(n)
	c.n.Add(int64(n))
	if c.cut {
		return n, io.ErrShortWrite
	}
	return n, err
}

// registryFixture is a bundle signed twice, at different times, as a
// release signed again after a key rotation is.
func registryFixture(t *testing.T) (*fixture, *bundle.Keyring) {
	fx := newFixture(t)
	s2, kr2 := testKey(t, bundle.ECDSAP256)
	_, err := bundle.SignFile(context.Background(), fx.a.path, s2)
	require.NoError(t, err)
	fx.a.reload(t)
	return fx, kr2
}

func TestRegistry_RoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		start func(t *testing.T) string
	}{
		{"in-memory registry with the referrers API", func(t *testing.T) string {
			host, _ := startMemoryRegistry(t, true)
			return host
		}},
		{"in-memory registry without the referrers API", func(t *testing.T) string {
			host, _ := startMemoryRegistry(t, false)
			return host
		}},
		{"distribution registry", func(t *testing.T) string { return testutil.StartRegistry(t) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fx, kr2 := registryFixture(t)
			host := tc.start(t)
			r, err := NewRegistry(host+"/fleet/bundles", RegistryOptions{})
			require.NoError(t, err)

			e, err := r.Put(ctx, fx.a.path)
			require.NoError(t, err)
			assert.Equal(t, Entry{Digest: fx.a.digest, Size: int64(len(fx.a.raw)),
				Location: host + "/fleet/bundles@" + fx.a.digest}, e)
			again, err := r.Put(ctx, fx.a.path)
			require.NoError(t, err)
			assert.Equal(t, e, again)
			_, err = r.Put(ctx, fx.b.path)
			require.NoError(t, err)

			f, err := r.Open(ctx, fx.a.digest)
			require.NoError(t, err)
			assert.Equal(t, e.Size, f.Size())
			assert.True(t, testCreated.Equal(f.ModTime()), "ModTime is the creation time")
			got := readFile(t, f)
			require.True(t, bytes.Equal(fx.a.raw, got), "the bundle reads as the file that was put")
			for _, kr := range []*bundle.Keyring{fx.kr, kr2} {
				require.NoError(t, verifyStream(bytes.NewReader(got), kr, fx.a.images))
			}
			checkRanges(t, f, fx.a.raw, 40)
			require.NoError(t, f.Close())

			require.NoError(t, r.Delete(ctx, fx.a.digest))
			_, err = r.Open(ctx, fx.a.digest)
			require.ErrorIs(t, err, ErrNotFound)
			require.NoError(t, r.Delete(ctx, fx.a.digest), "deleting a deleted bundle succeeds")
			f, err = r.Open(ctx, fx.b.digest)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(fx.b.raw, readFile(t, f)), "the other bundle is intact")
			f.Close()
		})
	}
}

// checkRanges reads n random ranges of f and compares them with raw.
func checkRanges(t *testing.T, f File, raw []byte, n int) {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	for range n {
		off := r.Int64N(int64(len(raw)))
		buf := make([]byte, r.IntN(200<<10))
		_, err := f.Seek(off, io.SeekStart)
		require.NoError(t, err)
		k, err := io.ReadFull(f, buf)
		want := raw[off:min(off+int64(len(buf)), int64(len(raw)))]
		if len(want) < len(buf) {
			require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		} else {
			require.NoError(t, err)
		}
		require.True(t, bytes.Equal(want, buf[:k]), "range %d+%d", off, len(buf))
	}
}

func TestRegistry_ReadsOnlyWhatIsAsked(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	host, fr := startMemoryRegistry(t, true)
	r, err := NewRegistry(host+"/fleet/bundles", RegistryOptions{})
	require.NoError(t, err)
	_, err = r.Put(ctx, fx.a.path)
	require.NoError(t, err)

	f, err := r.Open(ctx, fx.a.digest)
	require.NoError(t, err)
	defer f.Close()
	fr.blobBytes.Store(0)
	fr.ranges.Store(0)
	tail := make([]byte, 4096)
	_, err = f.Seek(-int64(len(tail))-2048, io.SeekEnd)
	require.NoError(t, err)
	_, err = io.ReadFull(f, tail)
	require.NoError(t, err)
	end := int64(len(fx.a.raw)) - 2048
	assert.Equal(t, fx.a.raw[end-int64(len(tail)):end], tail)
	assert.Equal(t, int64(1), fr.ranges.Load(), "one Range request")
	assert.Less(t, fr.blobBytes.Load(), int64(64<<10), "the rest of the layer is not fetched")

	f2, err := r.Open(ctx, fx.a.digest)
	require.NoError(t, err)
	f2.Close()
	assert.Equal(t, int64(1), fr.ranges.Load(), "metadata blobs come from the cache")
}

func TestRegistry_Faults(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		readErr bool // reading fails; otherwise it gives the right bytes
	}{
		{name: "registry loses the blobs after Open", mode: faultLoseBlobs, readErr: true},
		{name: "responses cut off midway", mode: faultCutResponses, readErr: true},
		{name: "registry ignores Range", mode: faultIgnoreRanges},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fx := newFixture(t)
			host, fr := startMemoryRegistry(t, true)
			r, err := NewRegistry(host+"/fleet/bundles", RegistryOptions{})
			require.NoError(t, err)
			_, err = r.Put(ctx, fx.a.path)
			require.NoError(t, err)
			f, err := r.Open(ctx, fx.a.digest)
			require.NoError(t, err)
			defer f.Close()

			fr.setMode(tc.mode)
			got, err := io.ReadAll(f)
			if !tc.readErr {
				require.NoError(t, err)
				require.True(t, bytes.Equal(fx.a.raw, got))
				checkRanges(t, f, fx.a.raw, 10)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), fx.a.digest)
			assert.Less(t, len(got), len(fx.a.raw))
			assert.True(t, bytes.Equal(fx.a.raw[:len(got)], got),
				"what was read before the error is the bundle's")
		})
	}
}

func TestRegistry_DeleteRefused(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	host, fr := startMemoryRegistry(t, true)
	r, err := NewRegistry(host+"/fleet/bundles", RegistryOptions{})
	require.NoError(t, err)
	_, err = r.Put(ctx, fx.a.path)
	require.NoError(t, err)

	fr.setMode(faultRefuseDeletes)
	err = r.Delete(ctx, fx.a.digest)
	require.ErrorIs(t, err, ErrDeleteRefused)
	f, err := r.Open(ctx, fx.a.digest)
	require.NoError(t, err, "the bundle stays")
	f.Close()
}

func TestRegistry_BadDigests(t *testing.T) {
	ctx := context.Background()
	host, _ := startMemoryRegistry(t, true)
	r, err := NewRegistry(host+"/fleet/bundles", RegistryOptions{})
	require.NoError(t, err)
	for _, d := range []string{"", "latest", "sha256:../x", "sha256:" + strings.Repeat("A", 64)} {
		_, err := r.Open(ctx, d)
		require.ErrorIs(t, err, ErrInvalidDigest, d)
		require.ErrorIs(t, r.Delete(ctx, d), ErrInvalidDigest, d)
	}
	missing := "sha256:" + strings.Repeat("ab", 32)
	_, err = r.Open(ctx, missing)
	require.ErrorIs(t, err, ErrNotFound)
	require.NoError(t, r.Delete(ctx, missing))
}

func TestNewRegistry_BadRepository(t *testing.T) {
	_, err := NewRegistry("Not A/Repo!", RegistryOptions{})
	require.Error(t, err)
}

func TestRegistry_PutRefusesDamagedFiles(t *testing.T) {
	fx := newFixture(t)
	b, err := bundle.Open(fx.a.path, bundle.Options{})
	require.NoError(t, err)
	layerSize := b.Layers()[1].Size
	b.Close()
	lastLayerEnd := int64(len(fx.a.raw)) - 1024 - (-layerSize & 511)

	tests := []struct {
		name   string
		damage func(raw []byte) []byte
	}{
		{"cut in the middle of the last layer", func(raw []byte) []byte {
			return raw[:lastLayerEnd-layerSize/2]
		}},
		{"a byte of the last layer flipped", func(raw []byte) []byte {
			raw[lastLayerEnd-100] ^= 1
			return raw
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			host, _ := startMemoryRegistry(t, true)
			r, err := NewRegistry(host+"/fleet/bundles", RegistryOptions{})
			require.NoError(t, err)
			p := filepath.Join(t.TempDir(), "damaged.rota")
			require.NoError(t, os.WriteFile(p, tc.damage(bytes.Clone(fx.a.raw)), 0o644))

			_, err = r.Put(ctx, p)
			require.Error(t, err)
			_, err = r.Open(ctx, fx.a.digest)
			require.ErrorIs(t, err, ErrNotFound, "nothing is tagged")
		})
	}
}

func TestRegistry_Credentials(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	host, fr := startMemoryRegistry(t, true)
	fr.mu.Lock()
	fr.password = "s3cret"
	fr.mu.Unlock()

	tests := []struct {
		name string
		auth authn.Authenticator
		ok   bool
	}{
		{"right password", &authn.Basic{Username: "rota", Password: "s3cret"}, true},
		{"wrong password", &authn.Basic{Username: "rota", Password: "guess"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRegistry(host+"/fleet/bundles", RegistryOptions{Auth: tc.auth})
			require.NoError(t, err)
			_, err = r.Put(ctx, fx.a.path)
			if !tc.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			f, err := r.Open(ctx, fx.a.digest)
			require.NoError(t, err)
			defer f.Close()
			require.True(t, bytes.Equal(fx.a.raw, readFile(t, f)),
				"blob reads authenticate too")
		})
	}
}
