package bundle

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pushPullRoundTrip pushes a bundle signed by two keys to host, pulls it
// back by tag and by digest, and checks both copies verify and carry every
// signature.
func pushPullRoundTrip(t *testing.T, host string) {
	ctx := context.Background()
	dir := t.TempDir()
	s1, kr1 := testKey(t, Ed25519)
	s2, kr2 := testKey(t, ECDSAP256)
	raw := buildBundle(t, s1, ImageSource{Class: "rootfs", Path: writeImage(t, dir, "a", 3<<20, 8)})
	path := filepath.Join(dir, "b.rota")
	require.NoError(t, os.WriteFile(path, raw, 0o644))
	_, err := SignFile(ctx, path, s2)
	require.NoError(t, err)

	ref := host + "/fleet/acme:1.2.3"
	info, err := Push(ctx, path, ref, RemoteOptions{})
	require.NoError(t, err)
	require.Len(t, info.Signatures, 2)

	for _, r := range []string{ref, host + "/fleet/acme@" + info.Digest} {
		var out bytes.Buffer
		got, err := Pull(ctx, r, &out, RemoteOptions{})
		require.NoError(t, err, r)
		assert.Equal(t, info.Digest, got.Digest)
		assert.Len(t, got.Signatures, 2, "both signatures come back as referrers")
		for _, kr := range []*Keyring{kr1, kr2} {
			require.NoError(t, readAll(out.Bytes(), kr))
		}
	}

	// Reading straight from the registry, without a file in between.
	b, err := OpenRemote(ctx, ref, RemoteOptions{})
	require.NoError(t, err)
	defer b.Close()
	_, err = b.Verify(kr2)
	require.NoError(t, err)
	ir, err := b.NextImage(ctx)
	require.NoError(t, err)
	img, err := os.ReadFile(filepath.Join(dir, "a"))
	require.NoError(t, err)
	var got bytes.Buffer
	_, err = got.ReadFrom(ir)
	require.NoError(t, err)
	require.True(t, bytes.Equal(img, got.Bytes()))
}

func TestPushPull_InMemoryRegistry(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		name := "without the referrers API"
		if referrers {
			name = "with the referrers API"
		}
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(registry.New(registry.WithReferrersSupport(referrers), quietRegistry))
			defer srv.Close()
			pushPullRoundTrip(t, strings.TrimPrefix(srv.URL, "http://"))
		})
	}
}

func TestPushPull_DistributionRegistry(t *testing.T) {
	pushPullRoundTrip(t, testutil.StartRegistry(t))
}

func TestOpenRemote_IgnoresForeignReferrers(t *testing.T) {
	// A referrer that is not a signature (say, an SBOM pushed by another
	// tool) must not break opening or verifying.
	ctx := context.Background()
	srv := httptest.NewServer(registry.New(registry.WithReferrersSupport(true), quietRegistry))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()
	s, kr := testKey(t, Ed25519)
	path := filepath.Join(dir, "b.rota")
	require.NoError(t, os.WriteFile(path,
		buildBundle(t, s, ImageSource{Class: "rootfs", Path: writeImage(t, dir, "a", 4096, 1)}), 0o644))
	info, err := Push(ctx, path, host+"/r:1", RemoteOptions{})
	require.NoError(t, err)

	sbom := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"artifactType":"application/spdx+json","config":{"mediaType":` +
		`"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb` +
		`4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"subject":{"mediaType":` +
		`"application/vnd.oci.image.manifest.v1+json","digest":"` + info.Digest + `","size":1}}`)
	repo, err := name.NewRepository(host + "/r")
	require.NoError(t, err)
	require.NoError(t, remote.Put(repo.Digest(digestOf(sbom).String()), rawManifest(sbom)))

	b, err := OpenRemote(ctx, host+"/r:1", RemoteOptions{})
	require.NoError(t, err)
	defer b.Close()
	require.Len(t, b.Signatures(), 1)
	_, err = b.Verify(kr)
	require.NoError(t, err)
}

func TestSkopeo_ReadsBundleAsOCIArchive(t *testing.T) {
	skopeo := testutil.RequireTool(t, "skopeo")
	dir := t.TempDir()
	s, _ := testKey(t, Ed25519)
	path := filepath.Join(dir, "b.rota")
	require.NoError(t, os.WriteFile(path,
		buildBundle(t, s, ImageSource{Class: "rootfs", Path: writeImage(t, dir, "a", 1<<20, 2)}), 0o644))
	b, err := Open(path, Options{})
	require.NoError(t, err)
	digest := b.Digest()
	b.Close()

	out, err := exec.Command(skopeo, "inspect", "--raw", "oci-archive:"+path+":1.2.3").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, digestOf(bytes.TrimSpace(out)).String(), digest,
		"skopeo sees our manifest byte for byte")

	// A full copy proves every blob is where the layout says it is.
	dst := filepath.Join(dir, "copy")
	out, err = exec.Command(skopeo, "copy", "--quiet", "oci-archive:"+path+":1.2.3",
		"oci:"+dst+":copy").CombinedOutput()
	require.NoError(t, err, "%s", out)
}

// quietRegistry keeps the in-memory registry from logging every request.
var quietRegistry = registry.Logger(log.New(io.Discard, "", 0))
