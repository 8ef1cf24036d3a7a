package bundlestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rotaupdate/rota/bundle"
	"github.com/stretchr/testify/require"
)

// testCreated is the creation time of test bundles; it lies before any
// signature SignFile adds now, so signing order and time order agree.
var testCreated = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// writeImage writes a compressible pseudo-random image of size bytes.
func writeImage(t testing.TB, dir, name string, size int, seed uint64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, size)
	for i := 0; i < size; {
		n := min(size-i, 1+r.IntN(4096))
		if r.IntN(3) == 0 {
			for j := range n {
				b[i+j] = byte(r.Uint32())
			}
		} else {
			c := byte(r.IntN(4))
			for j := range n {
				b[i+j] = c
			}
		}
		i += n
	}
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// testKey returns a fresh signer and a keyring trusting it.
func testKey(t testing.TB, alg bundle.Algorithm) (*bundle.Signer, *bundle.Keyring) {
	t.Helper()
	priv, pub, err := bundle.GenerateKey(alg, nil)
	require.NoError(t, err)
	s, err := bundle.LoadSigner(priv, nil)
	require.NoError(t, err)
	k, err := bundle.ParsePublicKey(pub)
	require.NoError(t, err)
	return s, bundle.NewKeyring(k)
}

// testBundle is a .rota file made for a test.
type testBundle struct {
	path   string
	raw    []byte
	digest string
	images map[string][]byte // class -> uncompressed image
}

// buildBundle creates a bundle of version with the images, signed by s,
// as dir/<version>.rota.
func buildBundle(t testing.TB, dir, version string, s *bundle.Signer,
	images ...bundle.ImageSource) *testBundle {
	t.Helper()
	tb := &testBundle{path: filepath.Join(dir, version+".rota"), images: map[string][]byte{}}
	for _, im := range images {
		b, err := os.ReadFile(im.Path)
		require.NoError(t, err)
		tb.images[im.Class] = b
	}
	f, err := os.Create(tb.path)
	require.NoError(t, err)
	info, err := bundle.Create(context.Background(), f, bundle.Spec{
		Compatible:    "acme-board-v1",
		Version:       version,
		RollbackIndex: 1,
		Created:       testCreated,
		Images:        images,
	}, bundle.CreateOptions{Signers: []*bundle.Signer{s}, TempDir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, f.Close())
	tb.digest = info.Digest
	tb.reload(t)
	return tb
}

// reload rereads the file after it changed on disk.
func (tb *testBundle) reload(t testing.TB) {
	t.Helper()
	raw, err := os.ReadFile(tb.path)
	require.NoError(t, err)
	tb.raw = raw
}

// readFile reads an opened store file whole.
func readFile(t testing.TB, f File) []byte {
	t.Helper()
	_, err := f.Seek(0, io.SeekStart)
	require.NoError(t, err)
	b, err := io.ReadAll(f)
	require.NoError(t, err)
	return b
}

// verifyStream checks raw as a device would: it opens it, verifies it
// with kr and reads every image to its end, comparing it with want.
func verifyStream(r io.Reader, kr *bundle.Keyring, want map[string][]byte) error {
	b, err := bundle.OpenReader(r, bundle.Options{})
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := b.Verify(kr); err != nil {
		return err
	}
	for {
		ir, err := b.NextImage(context.Background())
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		h := sha256.New()
		if _, err := io.Copy(h, ir); err != nil {
			return err
		}
		sum := sha256.Sum256(want[ir.Info.Class])
		if !bytes.Equal(h.Sum(nil), sum[:]) {
			return errors.New("image " + ir.Info.Class + " differs: " + hex.EncodeToString(h.Sum(nil)))
		}
	}
}
