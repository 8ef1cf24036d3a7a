package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"hash"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testCreated is the creation time of test bundles.
var testCreated = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// writeImage writes a compressible pseudo-random image of size bytes.
func writeImage(t testing.TB, dir, name string, size int, seed uint64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, size)
	for i := 0; i < size; {
		// Runs of repeated bytes and random stretches, like a filesystem.
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
func testKey(t testing.TB, alg Algorithm) (*Signer, *Keyring) {
	t.Helper()
	priv, pub, err := GenerateKey(alg, nil)
	require.NoError(t, err)
	s, err := LoadSigner(priv, nil)
	require.NoError(t, err)
	k, err := ParsePublicKey(pub)
	require.NoError(t, err)
	return s, NewKeyring(k)
}

// buildBundle creates a signed bundle with the given images (class ->
// path) and returns its bytes.
func buildBundle(t testing.TB, s *Signer, images ...ImageSource) []byte {
	t.Helper()
	var buf bytes.Buffer
	var signers []*Signer
	if s != nil {
		signers = []*Signer{s}
	}
	_, err := Create(context.Background(), &buf, Spec{
		Compatible:    "acme-board-v1",
		Version:       "1.2.3",
		RollbackIndex: 7,
		Created:       testCreated,
		Images:        images,
	}, CreateOptions{Signers: signers, TempDir: t.TempDir()})
	require.NoError(t, err)
	return buf.Bytes()
}

func newSHA256Of(b []byte) hash.Hash {
	h := sha256.New()
	h.Write(b)
	return h
}
