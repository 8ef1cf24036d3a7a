package bundle

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCreate_RoundTrip(t *testing.T) {
	for _, alg := range []Algorithm{Ed25519, ECDSAP256} {
		t.Run(string(alg), func(t *testing.T) {
			dir := t.TempDir()
			rootfs := writeImage(t, dir, "rootfs.img", 3<<20+17, 1)
			boot := writeImage(t, dir, "boot.img", 100<<10, 2)
			s, kr := testKey(t, alg)
			raw := buildBundle(t, s,
				ImageSource{Class: "rootfs", Path: rootfs},
				ImageSource{Class: "boot", Path: boot, Filesystem: "vfat"})

			b, err := OpenReader(bytes.NewReader(raw), Options{})
			require.NoError(t, err)
			defer b.Close()
			cfg := b.Config()
			assert.Equal(t, "acme-board-v1", cfg.Compatible)
			assert.Equal(t, "1.2.3", cfg.Version)
			assert.Equal(t, uint64(7), cfg.RollbackIndex)
			require.Len(t, cfg.Images, 2)

			_, err = b.NextImage(context.Background())
			require.ErrorIs(t, err, ErrNotVerified)

			sigs, err := b.Verify(kr)
			require.NoError(t, err)
			require.Len(t, sigs, 1)
			assert.Equal(t, s.KeyID(), sigs[0].KeyID)

			for _, want := range []string{rootfs, boot} {
				ir, err := b.NextImage(context.Background())
				require.NoError(t, err)
				got, err := io.ReadAll(ir)
				require.NoError(t, err)
				wantBytes, err := os.ReadFile(want)
				require.NoError(t, err)
				require.True(t, bytes.Equal(wantBytes, got), "image %s differs", ir.Info.Class)
			}
			_, err = b.NextImage(context.Background())
			require.ErrorIs(t, err, io.EOF)
		})
	}
}
