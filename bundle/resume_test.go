package bundle

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// framedBundle returns a bundle whose rootfs spans several frames, and the
// two images.
func framedBundle(t *testing.T) (raw, rootfs, boot []byte, kr *Keyring) {
	t.Helper()
	dir := t.TempDir()
	s, kr := testKey(t, Ed25519)
	rp := writeImage(t, dir, "rootfs", 3*int(DefaultChunkSize)+12345, 11)
	bp := writeImage(t, dir, "boot", 300<<10, 12)
	raw = buildBundle(t, s, ImageSource{Class: "rootfs", Path: rp}, ImageSource{Class: "boot", Path: bp})
	rootfs, err := os.ReadFile(rp)
	require.NoError(t, err)
	boot, err = os.ReadFile(bp)
	require.NoError(t, err)
	return raw, rootfs, boot, kr
}

func openVerified(t *testing.T, raw []byte, kr *Keyring) *Bundle {
	t.Helper()
	b, err := OpenReader(bytes.NewReader(raw), Options{})
	require.NoError(t, err)
	_, err = b.Verify(kr)
	require.NoError(t, err)
	return b
}

func TestCreate_RecordsFrameTable(t *testing.T) {
	raw, rootfs, _, kr := framedBundle(t)
	b := openVerified(t, raw, kr)
	im := b.Config().Images[0]
	assert.Equal(t, int64(DefaultChunkSize), im.ChunkSize)
	assert.Len(t, im.Frames, 4)
	ir, err := b.NextImage(context.Background())
	require.NoError(t, err)
	got, err := io.ReadAll(ir)
	require.NoError(t, err)
	require.True(t, bytes.Equal(rootfs, got))
}

func TestResumeImage_ContinuesInAnotherReader(t *testing.T) {
	ctx := context.Background()
	raw, rootfs, boot, kr := framedBundle(t)

	// The first process reads 9 MiB of the rootfs, then dies.
	b := openVerified(t, raw, kr)
	ir, err := b.NextImage(ctx)
	require.NoError(t, err)
	_, err = io.CopyN(io.Discard, ir, 9<<20)
	require.NoError(t, err)
	require.Nil(t, ir.Checkpoint(DefaultChunkSize-1), "no boundary before the first frame ends")
	cp := ir.Checkpoint(9 << 20)
	require.NotNil(t, cp)
	assert.Equal(t, 2, cp.Frame)
	assert.Equal(t, int64(2*DefaultChunkSize), cp.Uncompressed)
	b.Close()

	// The checkpoint survives a trip through JSON, as an agent stores it.
	js, err := json.Marshal(cp)
	require.NoError(t, err)
	var saved Checkpoint
	require.NoError(t, json.Unmarshal(js, &saved))

	// A second process reads the metadata again and resumes from there.
	b2 := openVerified(t, raw, kr)
	defer b2.Close()
	rest := bytes.NewReader(raw[saved.FileOffset+saved.Compressed:])
	ir2, err := b2.ResumeImage(ctx, &saved, rest)
	require.NoError(t, err)
	got, err := io.ReadAll(ir2)
	require.NoError(t, err, "the whole image's digests are checked")
	require.True(t, bytes.Equal(rootfs[saved.Uncompressed:], got))

	ir3, err := b2.NextImage(ctx)
	require.NoError(t, err)
	got, err = io.ReadAll(ir3)
	require.NoError(t, err)
	require.True(t, bytes.Equal(boot, got), "the following images come from the same stream")
	_, err = b2.NextImage(ctx)
	require.ErrorIs(t, err, io.EOF)
}

func TestResumeImage_Refusals(t *testing.T) {
	ctx := context.Background()
	raw, _, _, kr := framedBundle(t)
	b := openVerified(t, raw, kr)
	ir, err := b.NextImage(ctx)
	require.NoError(t, err)
	_, err = io.CopyN(io.Discard, ir, 5<<20)
	require.NoError(t, err)
	good := ir.Checkpoint(5 << 20)
	require.NotNil(t, good)
	b.Close()

	tests := []struct {
		name   string
		change func(cp *Checkpoint)
		rest   func([]byte) []byte
		want   error
	}{
		{"an offset off the frame boundary", func(cp *Checkpoint) { cp.Compressed++ }, nil,
			ErrInvalidBundle},
		{"a frame past the end", func(cp *Checkpoint) { cp.Frame = 99 }, nil, ErrInvalidBundle},
		{"an image the bundle does not have", func(cp *Checkpoint) { cp.Image = 7 }, nil,
			ErrInvalidBundle},
		{"a garbled hash state", func(cp *Checkpoint) { cp.UncompressedHash = []byte("x") }, nil,
			ErrInvalidBundle},
		{"a hash state of other bytes", func(cp *Checkpoint) {
			cp.UncompressedHash = saveHash(newSHA256Of([]byte("other")))
		}, nil, ErrDigestMismatch},
		{"corrupt bytes after the checkpoint", nil, func(r []byte) []byte {
			r = bytes.Clone(r)
			r[len(r)/3] ^= 1
			return r
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := *good
			if tt.change != nil {
				tt.change(&cp)
			}
			b := openVerified(t, raw, kr)
			defer b.Close()
			start := good.FileOffset + good.Compressed
			rest := raw[start:]
			if tt.rest != nil {
				rest = tt.rest(rest)
			}
			ir, err := b.ResumeImage(ctx, &cp, bytes.NewReader(rest))
			if err == nil {
				_, err = io.Copy(io.Discard, ir)
			}
			require.Error(t, err)
			if tt.want != nil {
				require.ErrorIs(t, err, tt.want)
			}
		})
	}
}

func TestFrames_HostileTables(t *testing.T) {
	raw, _, _, kr := framedBundle(t)
	s, kr2 := testKey(t, Ed25519)
	_ = kr
	tests := []struct {
		name   string
		mutate func(c *Config, m *v1.Manifest, l [][]byte)
		want   error
	}{
		{"frame boundaries that do not match the frames", func(c *Config, _ *v1.Manifest,
			_ [][]byte) {
			f := append([]int64(nil), c.Images[0].Frames...)
			f[0]++
			f[1]--
			c.Images[0].Frames = f
		}, nil},
		{"a frame table that does not add up to the layer", func(c *Config, _ *v1.Manifest,
			_ [][]byte) {
			f := append([]int64(nil), c.Images[0].Frames...)
			f[0]++
			c.Images[0].Frames = f
		}, ErrInvalidBundle},
		{"a frame that decompresses to more than its chunk", func(c *Config, _ *v1.Manifest,
			l [][]byte) {
			l[1] = zstdBytes(t, make([]byte, 64<<20))
			c.Images[1].ChunkSize = 1 << 20
			c.Images[1].Size = 1 << 20
			c.Images[1].Frames = []int64{int64(len(l[1]))}
		}, nil},
		{"a chunk size above the limit", func(c *Config, _ *v1.Manifest, _ [][]byte) {
			c.Images[0].ChunkSize = MaxChunkSize + 1
		}, ErrInvalidBundle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := rebuild(t, raw, s, tt.mutate)
			err := readAll(bad, kr2)
			require.Error(t, err)
			if tt.want != nil {
				require.ErrorIs(t, err, tt.want, "got %v", err)
			}
		})
	}
}

func TestImageReader_OneWorkerReadsFramesInOrder(t *testing.T) {
	ctx := context.Background()
	raw, rootfs, boot, kr := framedBundle(t)
	b, err := OpenReader(bytes.NewReader(raw), Options{Concurrency: 1})
	require.NoError(t, err)
	defer b.Close()
	_, err = b.Verify(kr)
	require.NoError(t, err)
	for _, want := range [][]byte{rootfs, boot} {
		ir, err := b.NextImage(ctx)
		require.NoError(t, err)
		got, err := io.ReadAll(ir)
		require.NoError(t, err)
		require.True(t, bytes.Equal(want, got))
		require.NotNil(t, ir.Checkpoint(ir.Info.Size), "checkpoints come with one worker too")
	}
}
