package bundle

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memBlobs holds the blobs of a bundle by digest, as a store would.
type memBlobs map[v1.Hash][]byte

// blobsOf reads every blob entry of a .rota file.
func blobsOf(t *testing.T, raw []byte) memBlobs {
	t.Helper()
	out := memBlobs{}
	for _, e := range readEntries(t, raw) {
		hex, ok := strings.CutPrefix(e.hdr.Name, blobPrefix)
		if ok {
			out[v1.Hash{Algorithm: "sha256", Hex: hex}] = e.data
		}
	}
	return out
}

// nopCloser is a BlobReader over bytes.
type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func (m memBlobs) open(_ context.Context, d v1.Descriptor) (BlobReader, error) {
	b, ok := m[d.Digest]
	if !ok {
		return nil, os.ErrNotExist
	}
	return nopCloser{bytes.NewReader(b)}, nil
}

// partsOf opens raw and returns its parts.
func partsOf(t *testing.T, raw []byte) Parts {
	t.Helper()
	b, err := OpenReader(bytes.NewReader(raw), Options{})
	require.NoError(t, err)
	defer b.Close()
	return b.Parts()
}

// assembleTestBundles returns .rota files of several shapes, by name.
func assembleTestBundles(t *testing.T) map[string][]byte {
	ctx := context.Background()
	dir := t.TempDir()
	s1, _ := testKey(t, Ed25519)
	s2, _ := testKey(t, ECDSAP256)
	rootfs := ImageSource{Class: "rootfs", Path: writeImage(t, dir, "rootfs", 5<<20+123, 1)}
	boot := ImageSource{Class: "boot", Path: writeImage(t, dir, "boot", 777, 2)}

	twoSigs := filepath.Join(dir, "two.rota")
	require.NoError(t, os.WriteFile(twoSigs, buildBundle(t, s1, rootfs), 0o644))
	_, err := SignFile(ctx, twoSigs, s2)
	require.NoError(t, err)
	twoRaw, err := os.ReadFile(twoSigs)
	require.NoError(t, err)

	return map[string][]byte{
		"one image, one signature":              buildBundle(t, s1, rootfs),
		"two images, one signature":             buildBundle(t, s1, boot, rootfs),
		"unsigned":                              buildBundle(t, nil, boot),
		"two signatures sharing a payload blob": twoRaw,
	}
}

func TestAssemble_SameBytesAsWrite(t *testing.T) {
	for name, raw := range assembleTestBundles(t) {
		t.Run(name, func(t *testing.T) {
			b, err := OpenReader(bytes.NewReader(raw), Options{})
			require.NoError(t, err)
			var written bytes.Buffer
			_, err = b.Write(context.Background(), &written)
			require.NoError(t, err)
			require.Equal(t, raw, written.Bytes(), "Create and Write agree")

			a, err := Assemble(context.Background(), partsOf(t, raw), blobsOf(t, raw).open)
			require.NoError(t, err)
			defer a.Close()
			assert.Equal(t, int64(len(raw)), a.Size())
			assert.Equal(t, b.Digest(), a.Digest())
			got, err := io.ReadAll(a)
			require.NoError(t, err)
			require.True(t, bytes.Equal(raw, got), "assembled file differs from the written one")
		})
	}
}

func TestAssemble_RandomRanges(t *testing.T) {
	raw := assembleTestBundles(t)["two images, one signature"]
	a, err := Assemble(context.Background(), partsOf(t, raw), blobsOf(t, raw).open)
	require.NoError(t, err)
	defer a.Close()

	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		off := r.Int64N(int64(len(raw)))
		n := r.IntN(200 << 10)
		_, err := a.Seek(off, io.SeekStart)
		require.NoError(t, err)
		got := make([]byte, n)
		k, err := io.ReadFull(a, got)
		want := raw[off:min(int(off)+n, len(raw))]
		if len(want) < n {
			require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		} else {
			require.NoError(t, err)
		}
		require.True(t, bytes.Equal(want, got[:k]), "range %d+%d", off, n)
	}

	end, err := a.Seek(0, io.SeekEnd)
	require.NoError(t, err)
	assert.Equal(t, int64(len(raw)), end)
	n, err := a.Read(make([]byte, 1))
	assert.Equal(t, 0, n)
	assert.ErrorIs(t, err, io.EOF)
	_, err = a.Seek(-1, io.SeekStart)
	assert.Error(t, err)
}

func TestAssemble_BadBlobs(t *testing.T) {
	raw := assembleTestBundles(t)["one image, one signature"]
	parts := partsOf(t, raw)
	b, err := OpenReader(bytes.NewReader(raw), Options{})
	require.NoError(t, err)
	layer := b.Layers()[0].Digest
	config := b.meta.manifest.Config.Digest
	b.Close()

	tests := []struct {
		name       string
		change     func(memBlobs)
		assembleIs error // from Assemble, or nil if it succeeds
		readIs     error // from reading the whole file
	}{
		{
			name:       "config blob altered",
			change:     func(m memBlobs) { m[config] = bytes.ToUpper(m[config]) },
			assembleIs: ErrDigestMismatch,
		},
		{
			name:       "config blob missing",
			change:     func(m memBlobs) { delete(m, config) },
			assembleIs: os.ErrNotExist,
		},
		{
			name:       "layer blob missing",
			change:     func(m memBlobs) { delete(m, layer) },
			assembleIs: os.ErrNotExist,
		},
		{
			name:   "layer blob shorter than its descriptor",
			change: func(m memBlobs) { m[layer] = m[layer][:len(m[layer])/2] },
			readIs: ErrTruncated,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			blobs := blobsOf(t, raw)
			tc.change(blobs)
			a, err := Assemble(context.Background(), parts, blobs.open)
			if tc.assembleIs != nil {
				require.ErrorIs(t, err, tc.assembleIs)
				return
			}
			require.NoError(t, err)
			defer a.Close()
			_, err = io.ReadAll(a)
			require.ErrorIs(t, err, tc.readIs)
			assert.Contains(t, err.Error(), layer.String())
		})
	}
}

func TestParts_Hostile(t *testing.T) {
	bundles := assembleTestBundles(t)
	raw := bundles["one image, one signature"]
	good := partsOf(t, raw)
	other := partsOf(t, bundles["unsigned"])
	tests := []struct {
		name  string
		parts Parts
	}{
		{"empty manifest", Parts{}},
		{"manifest that is not JSON", Parts{Manifest: []byte("{")}},
		{"manifest over the size limit", Parts{Manifest: make([]byte, MaxMetadataSize+1)}},
		{"signature of another bundle", Parts{Manifest: other.Manifest, Signatures: good.Signatures}},
		{"signature listed twice", Parts{Manifest: good.Manifest,
			Signatures: [][]byte{good.Signatures[0], good.Signatures[0]}}},
		{"signature that is not a manifest", Parts{Manifest: good.Manifest,
			Signatures: [][]byte{[]byte("[]")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.parts.Blobs()
			require.ErrorIs(t, err, ErrInvalidBundle)
			_, err = Assemble(context.Background(), tc.parts, blobsOf(t, raw).open)
			require.ErrorIs(t, err, ErrInvalidBundle)
		})
	}
}

func TestParts_Blobs(t *testing.T) {
	raw := assembleTestBundles(t)["two signatures sharing a payload blob"]
	blobs := blobsOf(t, raw)
	list, err := partsOf(t, raw).Blobs()
	require.NoError(t, err)
	seen := map[v1.Hash]bool{}
	for _, d := range list {
		require.False(t, seen[d.Digest], "%s listed once", d.Digest)
		seen[d.Digest] = true
		require.Contains(t, blobs, d.Digest)
		assert.Equal(t, int64(len(blobs[d.Digest])), d.Size)
	}
	assert.Len(t, list, len(blobs), "every blob of the file is listed")
}
