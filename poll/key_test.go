package poll_test

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "device.key")

	created, err := poll.LoadOrCreateKey(path)
	require.NoError(t, err)
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	loaded, err := poll.LoadOrCreateKey(path)
	require.NoError(t, err)
	assert.True(t, created.Equal(loaded), "the second start reuses the key")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file left behind")
}

func TestLoadOrCreateKey_race(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	keys := make([]ed25519.PrivateKey, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := poll.LoadOrCreateKey(path)
			assert.NoError(t, err)
			keys[i] = k
		})
	}
	wg.Wait()

	for _, k := range keys[1:] {
		assert.True(t, keys[0].Equal(k), "every process ends up with the same key")
	}
}

func TestLoadKey_invalid(t *testing.T) {
	tests := []struct {
		name    string
		content string
		wantErr string
	}{
		{name: "not PEM", content: "hello", wantErr: "no PEM PRIVATE KEY block"},
		{name: "another block type",
			content: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
			wantErr: "no PEM PRIVATE KEY block"},
		{name: "garbage inside the block",
			content: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
			wantErr: "load device key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k")
			require.NoError(t, os.WriteFile(path, []byte(tt.content), 0o600))

			_, err := poll.LoadKey(path)

			assert.ErrorContains(t, err, tt.wantErr)
		})
	}
}
