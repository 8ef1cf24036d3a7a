package bundlestore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fixture holds two bundles that share their rootfs layer, signed by the
// key kr trusts.
type fixture struct {
	dir  string
	kr   *bundle.Keyring
	a, b *testBundle
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	s, kr := testKey(t, bundle.Ed25519)
	rootfs := bundle.ImageSource{Class: "rootfs", Path: writeImage(t, dir, "rootfs", 3<<20, 1)}
	bootA := bundle.ImageSource{Class: "boot", Path: writeImage(t, dir, "boot-a", 300<<10, 2)}
	bootB := bundle.ImageSource{Class: "boot", Path: writeImage(t, dir, "boot-b", 200<<10, 3)}
	return &fixture{
		dir: dir,
		kr:  kr,
		a:   buildBundle(t, dir, "1.0.0", s, bootA, rootfs),
		b:   buildBundle(t, dir, "1.1.0", s, bootB, rootfs),
	}
}

// blobsOf lists a bundle's blobs by digest.
func blobsOf(t testing.TB, path string) map[v1.Hash]bool {
	t.Helper()
	b, err := bundle.Open(path, bundle.Options{})
	require.NoError(t, err)
	defer b.Close()
	ds, err := b.Parts().Blobs()
	require.NoError(t, err)
	out := map[v1.Hash]bool{}
	for _, d := range ds {
		out[d.Digest] = true
	}
	return out
}

func openLayout(t testing.TB) *Layout {
	t.Helper()
	l, err := OpenLayout(filepath.Join(t.TempDir(), "bundles"))
	require.NoError(t, err)
	return l
}

func TestLayout_PutOpen(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	l := openLayout(t)

	before := time.Now()
	e, err := l.Put(ctx, fx.a.path)
	require.NoError(t, err)
	assert.Equal(t, fx.a.digest, e.Digest)
	assert.Equal(t, int64(len(fx.a.raw)), e.Size)
	assert.Equal(t, l.Dir()+"@"+fx.a.digest, e.Location)

	f, err := l.Open(ctx, fx.a.digest)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, e.Size, f.Size())
	assert.WithinRange(t, f.ModTime(), before, time.Now())
	got := readFile(t, f)
	require.True(t, bytes.Equal(fx.a.raw, got), "the stored bundle reads as the original file")
	require.NoError(t, verifyStream(bytes.NewReader(got), fx.kr, fx.a.images))

	again, err := l.Put(ctx, fx.a.path)
	require.NoError(t, err)
	assert.Equal(t, e, again, "putting the same bundle again returns the same entry")
}

func TestLayout_PutTwiceIsNoOp(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	l := openLayout(t)
	_, err := l.Put(ctx, fx.a.path)
	require.NoError(t, err)
	index, err := os.ReadFile(filepath.Join(l.Dir(), indexName))
	require.NoError(t, err)

	_, err = l.Put(ctx, fx.a.path)
	require.NoError(t, err)
	after, err := os.ReadFile(filepath.Join(l.Dir(), indexName))
	require.NoError(t, err)
	assert.Equal(t, string(index), string(after))
}

func TestLayout_SignaturesKeepTheirOrder(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	s2, kr2 := testKey(t, bundle.ECDSAP256)
	_, err := bundle.SignFile(ctx, fx.a.path, s2)
	require.NoError(t, err)
	fx.a.reload(t)
	l := openLayout(t)
	_, err = l.Put(ctx, fx.a.path)
	require.NoError(t, err)

	f, err := l.Open(ctx, fx.a.digest)
	require.NoError(t, err)
	defer f.Close()
	got := readFile(t, f)
	require.True(t, bytes.Equal(fx.a.raw, got))
	for _, kr := range []*bundle.Keyring{fx.kr, kr2} {
		require.NoError(t, verifyStream(bytes.NewReader(got), kr, fx.a.images))
	}
}

func TestLayout_RandomRanges(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	l := openLayout(t)
	_, err := l.Put(ctx, fx.a.path)
	require.NoError(t, err)
	f, err := l.Open(ctx, fx.a.digest)
	require.NoError(t, err)
	defer f.Close()

	raw := fx.a.raw
	r := rand.New(rand.NewPCG(7, 8))
	for range 500 {
		off := r.Int64N(int64(len(raw)) + 10)
		n := r.IntN(300 << 10)
		whence := r.IntN(3)
		var pos int64
		switch whence {
		case io.SeekStart:
			pos = off
		case io.SeekCurrent:
			cur, err := f.Seek(0, io.SeekCurrent)
			require.NoError(t, err)
			pos = off
			off -= cur
		case io.SeekEnd:
			pos = off
			off -= int64(len(raw))
		}
		got, err := f.Seek(off, whence)
		require.NoError(t, err)
		require.Equal(t, pos, got)

		buf := make([]byte, n)
		k, err := io.ReadFull(f, buf)
		want := raw[min(pos, int64(len(raw))):min(pos+int64(n), int64(len(raw)))]
		require.Equal(t, len(want), k, "bytes read at %d", pos)
		if len(want) < n {
			require.Error(t, err)
		}
		require.True(t, bytes.Equal(want, buf[:k]), "range %d+%d", pos, n)
	}
}

func TestLayout_SharedBlobs(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	l := openLayout(t)
	_, err := l.Put(ctx, fx.a.path)
	require.NoError(t, err)
	_, err = l.Put(ctx, fx.b.path)
	require.NoError(t, err)

	blobsA, blobsB := blobsOf(t, fx.a.path), blobsOf(t, fx.b.path)
	shared := 0
	for h := range blobsA {
		if blobsB[h] {
			shared++
		}
	}
	require.GreaterOrEqual(t, shared, 2, "the rootfs layer and the empty config are shared")
	ents, err := os.ReadDir(l.blobDir())
	require.NoError(t, err)
	assert.Len(t, ents, len(blobsA)+len(blobsB)-shared, "shared blobs are stored once")

	require.NoError(t, l.Delete(ctx, fx.a.digest))
	_, err = l.Open(ctx, fx.a.digest)
	require.ErrorIs(t, err, ErrNotFound)
	f, err := l.Open(ctx, fx.b.digest)
	require.NoError(t, err)
	require.True(t, bytes.Equal(fx.b.raw, readFile(t, f)), "the other bundle is intact")
	f.Close()
	for h := range blobsA {
		_, err := os.Stat(l.blobPath(h))
		if blobsB[h] {
			assert.NoError(t, err, "shared blob %s stays", h)
		} else {
			assert.ErrorIs(t, err, os.ErrNotExist, "blob %s of the deleted bundle is gone", h)
		}
	}

	require.NoError(t, l.Delete(ctx, fx.a.digest), "deleting a deleted bundle succeeds")
	require.NoError(t, l.Delete(ctx, fx.b.digest))
	ents, err = os.ReadDir(l.blobDir())
	require.NoError(t, err)
	assert.Empty(t, ents)
}

func TestLayout_DeleteDuringDownload(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	l := openLayout(t)
	_, err := l.Put(ctx, fx.a.path)
	require.NoError(t, err)
	f, err := l.Open(ctx, fx.a.digest)
	require.NoError(t, err)
	defer f.Close()

	require.NoError(t, l.Delete(ctx, fx.a.digest))
	assert.True(t, bytes.Equal(fx.a.raw, readFile(t, f)),
		"a file opened before the delete still reads whole")
}

func TestLayout_CorruptBlobs(t *testing.T) {
	fx := newFixture(t)
	b, err := bundle.Open(fx.a.path, bundle.Options{})
	require.NoError(t, err)
	var config v1.Hash
	require.NoError(t, json.Unmarshal(b.Manifest(), &struct {
		Config struct{ Digest *v1.Hash } `json:"config"`
	}{struct{ Digest *v1.Hash }{&config}}))
	layer := b.Layers()[1].Digest // rootfs
	manifest, err := v1.NewHash(b.Digest())
	require.NoError(t, err)
	b.Close()

	flip := func(h v1.Hash) func(l *Layout) error {
		return func(l *Layout) error {
			p := l.blobPath(h)
			raw, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			raw[len(raw)/2] ^= 0x40
			return os.WriteFile(p, raw, 0o644)
		}
	}
	tests := []struct {
		name    string
		corrupt func(l *Layout) error
		openErr error // from Open, or nil if Open succeeds
		readErr error // from reading and verifying the file
	}{
		{
			name:    "a byte of a layer flipped",
			corrupt: flip(layer),
			readErr: bundle.ErrDigestMismatch,
		},
		{
			name:    "a layer cut short",
			corrupt: func(l *Layout) error { return os.Truncate(l.blobPath(layer), 1000) },
			openErr: bundle.ErrDigestMismatch,
		},
		{
			name:    "a layer removed",
			corrupt: func(l *Layout) error { return os.Remove(l.blobPath(layer)) },
			openErr: os.ErrNotExist,
		},
		{
			name:    "the config altered",
			corrupt: flip(config),
			openErr: bundle.ErrDigestMismatch,
		},
		{
			name:    "the manifest altered",
			corrupt: flip(manifest),
			openErr: bundle.ErrDigestMismatch,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			l := openLayout(t)
			_, err := l.Put(ctx, fx.a.path)
			require.NoError(t, err)
			require.NoError(t, tc.corrupt(l))

			f, err := l.Open(ctx, fx.a.digest)
			if tc.openErr != nil {
				require.ErrorIs(t, err, tc.openErr)
				assert.NotErrorIs(t, err, ErrNotFound)
				assert.Contains(t, err.Error(), fx.a.digest, "the error names the bundle")
				return
			}
			require.NoError(t, err)
			defer f.Close()
			err = verifyStream(f, fx.kr, fx.a.images)
			require.ErrorIs(t, err, tc.readErr)
			assert.Contains(t, err.Error(), "rootfs", "the error names the image")
		})
	}
}

func TestLayout_PutRefusesDamagedFiles(t *testing.T) {
	fx := newFixture(t)
	b, err := bundle.Open(fx.a.path, bundle.Options{})
	require.NoError(t, err)
	layerSize := b.Layers()[1].Size
	b.Close()
	// The rootfs layer is the last entry: its data ends 1024 bytes of
	// end-of-archive and up to 511 of padding before the end of the file.
	lastLayerEnd := int64(len(fx.a.raw)) - 1024 - (-layerSize & 511)

	tests := []struct {
		name   string
		damage func(raw []byte) []byte
		is     error
	}{
		{
			name:   "cut in the middle of the last layer",
			damage: func(raw []byte) []byte { return raw[:lastLayerEnd-layerSize/2] },
			is:     bundle.ErrTruncated,
		},
		{
			name: "a byte of the last layer flipped",
			damage: func(raw []byte) []byte {
				raw[lastLayerEnd-100] ^= 1
				return raw
			},
			is: bundle.ErrDigestMismatch,
		},
		{
			name:   "cut in the metadata",
			damage: func(raw []byte) []byte { return raw[:2000] },
			is:     bundle.ErrTruncated,
		},
		{
			name:   "not a bundle at all",
			damage: func([]byte) []byte { return []byte("hello") },
			is:     bundle.ErrTruncated,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			l := openLayout(t)
			index, err := os.ReadFile(filepath.Join(l.Dir(), indexName))
			require.NoError(t, err)

			p := filepath.Join(t.TempDir(), "damaged.rota")
			require.NoError(t, os.WriteFile(p, tc.damage(bytes.Clone(fx.a.raw)), 0o644))
			_, err = l.Put(ctx, p)
			require.ErrorIs(t, err, tc.is)

			after, err := os.ReadFile(filepath.Join(l.Dir(), indexName))
			require.NoError(t, err)
			assert.Equal(t, string(index), string(after), "index.json is unchanged")
			_, err = l.Open(ctx, fx.a.digest)
			assert.ErrorIs(t, err, ErrNotFound)

			// What the failed Put copied is collected by the next Delete.
			require.NoError(t, l.Delete(ctx, fx.a.digest))
			ents, err := os.ReadDir(l.blobDir())
			require.NoError(t, err)
			assert.Empty(t, ents)
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := openLayout(t).Put(context.Background(), filepath.Join(t.TempDir(), "none.rota"))
		require.ErrorIs(t, err, os.ErrNotExist)
	})
}

func TestLayout_BadDigests(t *testing.T) {
	ctx := context.Background()
	l := openLayout(t)
	hex64 := strings.Repeat("ab", 32)
	tests := []struct {
		name   string
		digest string
	}{
		{"empty", ""},
		{"algorithm only", "sha256:"},
		{"path traversal", "sha256:../../../../etc/passwd"},
		{"path traversal padded to length", "sha256:" + "../" + hex64[3:]},
		{"uppercase hex", "sha256:" + strings.ToUpper(hex64)},
		{"another algorithm", "sha512:" + hex64 + hex64},
		{"too short", "sha256:" + hex64[:63]},
		{"too long", "sha256:" + hex64 + "0"},
		{"a file name", "index.json"},
		{"trailing slash", "sha256:" + hex64 + "/"},
		{"a NUL byte", "sha256:" + hex64[:63] + "\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Open(ctx, tc.digest)
			require.ErrorIs(t, err, ErrInvalidDigest)
			require.ErrorIs(t, l.Delete(ctx, tc.digest), ErrInvalidDigest)
		})
	}

	t.Run("well formed but not stored", func(t *testing.T) {
		_, err := l.Open(ctx, "sha256:"+hex64)
		require.ErrorIs(t, err, ErrNotFound)
		require.NoError(t, l.Delete(ctx, "sha256:"+hex64))
	})
}

func TestLayout_ConcurrentWriters(t *testing.T) {
	// Several Layouts on one directory stand for server replicas: they
	// share nothing but the flock. One bundle is put and deleted over
	// and over while the others are put, so that collection runs while
	// Puts copy blobs they share with the deleted bundle.
	ctx := context.Background()
	dir := t.TempDir()
	s, kr := testKey(t, bundle.Ed25519)
	rootfs := bundle.ImageSource{Class: "rootfs", Path: writeImage(t, dir, "rootfs", 1<<20, 1)}
	var bundles []*testBundle
	for i := range 4 {
		boot := bundle.ImageSource{Class: "boot",
			Path: writeImage(t, dir, fmt.Sprintf("boot%d", i), 64<<10, uint64(10+i))}
		bundles = append(bundles, buildBundle(t, dir, fmt.Sprintf("1.%d.0", i), s, boot, rootfs))
	}
	churn := bundles[0]
	root := filepath.Join(t.TempDir(), "bundles")

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 6 {
		l, err := OpenLayout(root)
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 6 {
				if w == 0 {
					if _, err := l.Put(ctx, churn.path); err != nil {
						errs <- err
					}
					if err := l.Delete(ctx, churn.digest); err != nil {
						errs <- err
					}
					continue
				}
				tb := bundles[1+(w+i)%3]
				if _, err := l.Put(ctx, tb.path); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	l, err := OpenLayout(root)
	require.NoError(t, err)
	ix, err := l.readIndex()
	require.NoError(t, err)
	assert.Len(t, ix.Manifests, 6, "three bundles with one signature each, each listed once")
	for _, tb := range bundles[1:] {
		f, err := l.Open(ctx, tb.digest)
		require.NoError(t, err)
		got := readFile(t, f)
		f.Close()
		require.True(t, bytes.Equal(tb.raw, got))
		require.NoError(t, verifyStream(bytes.NewReader(got), kr, tb.images))
	}
	_, err = l.Open(ctx, churn.digest)
	require.ErrorIs(t, err, ErrNotFound)
}

func TestLayout_Reopen(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	root := filepath.Join(t.TempDir(), "bundles")
	l, err := OpenLayout(root)
	require.NoError(t, err)
	modTimes := map[string]time.Time{}
	for _, tb := range []*testBundle{fx.a, fx.b} {
		_, err := l.Put(ctx, tb.path)
		require.NoError(t, err)
		f, err := l.Open(ctx, tb.digest)
		require.NoError(t, err)
		modTimes[tb.digest] = f.ModTime()
		f.Close()
	}

	again, err := OpenLayout(root)
	require.NoError(t, err)
	for _, tb := range []*testBundle{fx.a, fx.b} {
		f, err := again.Open(ctx, tb.digest)
		require.NoError(t, err)
		assert.True(t, modTimes[tb.digest].Equal(f.ModTime()), "ModTime survives a restart")
		assert.True(t, bytes.Equal(tb.raw, readFile(t, f)))
		f.Close()
	}
}

func TestOpenLayout_RefusesBadLayouts(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		data  string
		error string
	}{
		{"another layout version", ociLayoutName, `{"imageLayoutVersion":"2.0.0"}`, "2.0.0"},
		{"an oci-layout that is not JSON", ociLayoutName, `1.0.0`, ociLayoutName},
		{"an index that is not JSON", indexName, `{"manifests":`, indexName},
		{"an index of another schema", indexName, `{"schemaVersion":1,"manifests":[]}`, "schemaVersion"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.data), 0o644))
			_, err := OpenLayout(dir)
			require.ErrorContains(t, err, tc.error)
		})
	}
}

func TestLayout_CollectsStaleTemporaryFiles(t *testing.T) {
	ctx := context.Background()
	l := openLayout(t)
	stale := filepath.Join(l.blobDir(), "."+strings.Repeat("0", 64)+".tmp-123")
	fresh := filepath.Join(l.blobDir(), "."+strings.Repeat("1", 64)+".tmp-456")
	for _, p := range []string{stale, fresh} {
		require.NoError(t, os.WriteFile(p, []byte("partial"), 0o644))
	}
	old := time.Now().Add(-2 * staleTempAge)
	require.NoError(t, os.Chtimes(stale, old, old))

	require.NoError(t, l.Delete(ctx, "sha256:"+strings.Repeat("2", 64)))
	assert.NoFileExists(t, stale)
	assert.FileExists(t, fresh, "a Put may still be writing it")
}

func TestLayout_ReadableBySkopeo(t *testing.T) {
	skopeo := testutil.RequireTool(t, "skopeo")
	ctx := context.Background()
	fx := newFixture(t)
	l := openLayout(t)
	for _, tb := range []*testBundle{fx.a, fx.b} {
		_, err := l.Put(ctx, tb.path)
		require.NoError(t, err)
	}
	h, err := v1.NewHash(fx.a.digest)
	require.NoError(t, err)
	src := "oci:" + l.Dir() + ":" + refName(h)

	out, err := exec.Command(skopeo, "inspect", "--raw", src).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, fx.a.digest, "sha256:"+sha256Hex(bytes.TrimSpace(out)),
		"skopeo finds the bundle manifest by its ref name")

	// A full copy proves every blob is where the layout says it is.
	dst := filepath.Join(t.TempDir(), "copy")
	out, err = exec.Command(skopeo, "copy", "--quiet", src, "oci:"+dst+":copy").CombinedOutput()
	require.NoError(t, err, "%s", out)

	// Another tool's image in the same directory: skopeo copies the
	// bundle in under another name. Deleting the bundle must keep the
	// blobs that image refers to.
	out, err = exec.Command(skopeo, "copy", "--quiet", src, "oci:"+l.Dir()+":other").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NoError(t, l.Delete(ctx, fx.a.digest))
	_, err = l.Open(ctx, fx.a.digest)
	require.ErrorIs(t, err, ErrNotFound)
	out, err = exec.Command(skopeo, "copy", "--quiet", "oci:"+l.Dir()+":other",
		"oci:"+dst+":other").CombinedOutput()
	require.NoError(t, err, "the other image is intact: %s", out)
	f, err := l.Open(ctx, fx.b.digest)
	require.NoError(t, err)
	f.Close()
}
