package bundlestore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// httpGet fetches url with an optional Range header and returns the
// status, the body and the Content-Range.
func httpGet(t *testing.T, url, rng string) (int, []byte, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body, resp.Header.Get("Content-Range")
}

// fileReferrers counts the referrers of a bundle that name a file blob.
// It reads each manifest: registries list the artifactType differently.
func fileReferrers(t *testing.T, repo, digest string) int {
	t.Helper()
	d, err := name.NewDigest(repo + "@" + digest)
	require.NoError(t, err)
	idx, err := remote.Referrers(d)
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	h, err := parseDigest(digest)
	require.NoError(t, err)
	n := 0
	for _, m := range im.Manifests {
		desc, err := remote.Get(d.Context().Digest(m.Digest.String()))
		require.NoError(t, err)
		if _, ok := parseFileManifest(desc.Manifest, h); ok {
			n++
		}
	}
	return n
}

func TestRegistry_FileBlob(t *testing.T) {
	tests := []struct {
		name string
		// openRanges says the registry understands "bytes=<first>-",
		// which go-containerregistry's in-memory registry does not.
		openRanges bool
		start      func(t *testing.T) string
	}{
		{"in-memory registry with the referrers API", false, func(t *testing.T) string {
			host, _ := startMemoryRegistry(t, true)
			return host
		}},
		{"in-memory registry without the referrers API", false, func(t *testing.T) string {
			host, _ := startMemoryRegistry(t, false)
			return host
		}},
		{"distribution registry", true, func(t *testing.T) string {
			return testutil.StartRegistry(t)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fx, kr2 := registryFixture(t)
			host := tc.start(t)
			repo := host + "/fleet/bundles"
			r, err := NewRegistry(repo, RegistryOptions{FileBlob: true})
			require.NoError(t, err)

			e, err := r.Put(ctx, fx.a.path)
			require.NoError(t, err)
			f, err := r.Open(ctx, fx.a.digest)
			require.NoError(t, err)
			opened := readFile(t, f)
			f.Close()
			require.True(t, bytes.Equal(fx.a.raw, opened),
				"the file referrer is not taken for a signature")
			for _, kr := range []*bundle.Keyring{fx.kr, kr2} {
				require.NoError(t, verifyStream(bytes.NewReader(opened), kr, fx.a.images))
			}

			u, err := r.DownloadURL(ctx, fx.a.digest)
			require.NoError(t, err)
			assert.True(t, strings.HasPrefix(u, "http://"+host+"/v2/fleet/bundles/blobs/sha256:"), u)
			status, body, _ := httpGet(t, u, "")
			require.Equal(t, http.StatusOK, status)
			require.Equal(t, e.Size, int64(len(body)))
			require.True(t, bytes.Equal(opened, body), "the blob holds Open's bytes")

			last := e.Size - 1
			ranges := []string{"bytes=0-0", fmt.Sprintf("bytes=1000-%d", last),
				"bytes=70000-70999"}
			if tc.openRanges {
				ranges = append(ranges, "bytes=1000-")
			}
			for _, rg := range ranges {
				status, body, cr := httpGet(t, u, rg)
				require.Equal(t, http.StatusPartialContent, status, rg)
				var first, end int64
				if _, err := fmt.Sscanf(rg, "bytes=%d-%d", &first, &end); err != nil {
					end = last
				}
				assert.Equal(t, fmt.Sprintf("bytes %d-%d/%d", first, end, e.Size), cr)
				require.True(t, bytes.Equal(opened[first:end+1], body), rg)
			}

			again, err := r.Put(ctx, fx.a.path)
			require.NoError(t, err)
			assert.Equal(t, e, again)
			assert.Equal(t, 1, fileReferrers(t, repo, fx.a.digest),
				"putting again adds no referrer")
			fresh, err := NewRegistry(repo, RegistryOptions{})
			require.NoError(t, err)
			u2, err := fresh.DownloadURL(ctx, fx.a.digest)
			require.NoError(t, err)
			assert.Equal(t, u, u2, "another process finds the same blob")

			require.NoError(t, r.Delete(ctx, fx.a.digest))
			_, err = r.DownloadURL(ctx, fx.a.digest)
			require.ErrorIs(t, err, ErrNotFound)
			assert.Zero(t, fileReferrers(t, repo, fx.a.digest))
			u2, err = fresh.DownloadURL(ctx, fx.a.digest)
			require.NoError(t, err, "another process uses the URL it found for a while")
			assert.Equal(t, u, u2)
			fresh.now = func() time.Time { return time.Now().Add(urlLifetime) }
			_, err = fresh.DownloadURL(ctx, fx.a.digest)
			require.ErrorIs(t, err, ErrNotFound, "and then looks again")
		})
	}
}

func TestRegistry_FileBlobOnlyWithTheOption(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	host, _ := startMemoryRegistry(t, true)
	repo := host + "/fleet/bundles"
	plain, err := NewRegistry(repo, RegistryOptions{})
	require.NoError(t, err)
	r, err := NewRegistry(repo, RegistryOptions{FileBlob: true})
	require.NoError(t, err)

	_, err = plain.Put(ctx, fx.a.path)
	require.NoError(t, err)
	_, err = r.DownloadURL(ctx, fx.a.digest)
	require.ErrorIs(t, err, ErrNotFound, "a bundle stored without the option has no blob")
	_, err = r.DownloadURL(ctx, fx.b.digest)
	require.ErrorIs(t, err, ErrNotFound, "a bundle not stored has no blob")
	_, err = r.DownloadURL(ctx, "sha256:../x")
	require.ErrorIs(t, err, ErrInvalidDigest)

	_, err = r.Put(ctx, fx.a.path)
	require.NoError(t, err)
	u, err := r.DownloadURL(ctx, fx.a.digest)
	require.NoError(t, err, "putting it again with the option adds the blob")
	_, body, _ := httpGet(t, u, "")
	assert.True(t, bytes.Equal(fx.a.raw, body))
}

func TestRegistry_FileBlobHoldsOpensBytes(t *testing.T) {
	// The file put later carries a signature the registry does not have:
	// the blob is what Open gives, not that file.
	ctx := context.Background()
	fx := newFixture(t)
	host, _ := startMemoryRegistry(t, true)
	repo := host + "/fleet/bundles"
	plain, err := NewRegistry(repo, RegistryOptions{})
	require.NoError(t, err)
	_, err = plain.Put(ctx, fx.a.path)
	require.NoError(t, err)
	stored := bytes.Clone(fx.a.raw)

	s2, _ := testKey(t, bundle.ECDSAP256)
	_, err = bundle.SignFile(ctx, fx.a.path, s2)
	require.NoError(t, err)
	fx.a.reload(t)
	require.False(t, bytes.Equal(stored, fx.a.raw))

	r, err := NewRegistry(repo, RegistryOptions{FileBlob: true})
	require.NoError(t, err)
	e, err := r.Put(ctx, fx.a.path)
	require.NoError(t, err)
	assert.Equal(t, int64(len(stored)), e.Size)
	u, err := r.DownloadURL(ctx, fx.a.digest)
	require.NoError(t, err)
	_, body, _ := httpGet(t, u, "")
	assert.True(t, bytes.Equal(stored, body))
}

func TestRegistry_FileBlobRefusesDamagedLayers(t *testing.T) {
	// The bundle is stored already, so its layers are not pushed again:
	// the file blob is built from the local file's, which must match.
	ctx := context.Background()
	fx := newFixture(t)
	host, _ := startMemoryRegistry(t, true)
	repo := host + "/fleet/bundles"
	plain, err := NewRegistry(repo, RegistryOptions{})
	require.NoError(t, err)
	_, err = plain.Put(ctx, fx.a.path)
	require.NoError(t, err)

	b, err := bundle.Open(fx.a.path, bundle.Options{})
	require.NoError(t, err)
	layerSize := b.Layers()[1].Size
	b.Close()
	damaged := bytes.Clone(fx.a.raw)
	damaged[int64(len(damaged))-1024-(-layerSize&511)-100] ^= 1
	p := filepath.Join(t.TempDir(), "damaged.rota")
	require.NoError(t, os.WriteFile(p, damaged, 0o644))

	r, err := NewRegistry(repo, RegistryOptions{FileBlob: true})
	require.NoError(t, err)
	_, err = r.Put(ctx, p)
	require.ErrorIs(t, err, bundle.ErrDigestMismatch)
	_, err = r.DownloadURL(ctx, fx.a.digest)
	require.ErrorIs(t, err, ErrNotFound)
}

func TestRegistry_DownloadURLNeedsAnonymousReads(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	host, fr := startMemoryRegistry(t, true)
	fr.mu.Lock()
	fr.password = "s3cret"
	fr.mu.Unlock()
	r, err := NewRegistry(host+"/fleet/bundles", RegistryOptions{FileBlob: true,
		Auth: &authn.Basic{Username: "rota", Password: "s3cret"}})
	require.NoError(t, err)
	_, err = r.Put(ctx, fx.a.path)
	require.NoError(t, err)

	_, err = r.DownloadURL(ctx, fx.a.digest)
	require.Error(t, err, "devices could not read the blob")
	assert.NotErrorIs(t, err, ErrNotFound)
	assert.Contains(t, err.Error(), "not readable without credentials")

	fr.mu.Lock()
	fr.password = ""
	fr.mu.Unlock()
	_, err = r.DownloadURL(ctx, fx.a.digest)
	require.NoError(t, err, "the blob is found once anonymous reads are allowed")
}
