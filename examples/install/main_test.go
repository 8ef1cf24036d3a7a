package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rotaupdate/rota/bundle"
	"github.com/stretchr/testify/require"
)

func TestRun_InstallsIntoPassiveSlot(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return p
	}
	write("a.img", []byte("A"))
	write("b.img", []byte("B"))
	cfg := write("system.toml", []byte(`compatible = "demo"
data-dir = "data"
[bootloader]
backend = "file"
[[slot]]
name = "rootfs.0"
class = "rootfs"
device = "a.img"
bootname = "A"
[[slot]]
name = "rootfs.1"
class = "rootfs"
device = "b.img"
bootname = "B"
`))
	priv, pub, err := bundle.GenerateKey(bundle.Ed25519, nil)
	require.NoError(t, err)
	keyring := write("release.pub", pub)
	signer, err := bundle.LoadSigner(priv, nil)
	require.NoError(t, err)
	img := write("rootfs.img", bytes.Repeat([]byte("v2"), 4096))
	f, err := os.Create(filepath.Join(dir, "update.rota"))
	require.NoError(t, err)
	_, err = bundle.Create(context.Background(), f, bundle.Spec{Compatible: "demo",
		Version: "2.0.0", Images: []bundle.ImageSource{{Class: "rootfs", Path: img}}},
		bundle.CreateOptions{Signers: []*bundle.Signer{signer}, TempDir: dir})
	require.NoError(t, err)
	require.NoError(t, f.Close())

	require.NoError(t, run(context.Background(),
		[]string{"-config", cfg, "-keyring", keyring, f.Name()}))
	got, err := os.ReadFile(filepath.Join(dir, "b.img"))
	require.NoError(t, err)
	require.Equal(t, bytes.Repeat([]byte("v2"), 4096), got)
}
