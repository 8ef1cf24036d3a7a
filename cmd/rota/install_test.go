package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/stretchr/testify/require"
)

// runCLI runs one rota command line in process.
func runCLI(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), &cliEnv{
		stdin:  strings.NewReader(""),
		stdout: &out,
		stderr: &errb,
		getenv: func(k string) string { return env[k] },
	}, args)
	return out.String(), errb.String(), code
}

// simulatedDevice writes a file-backed device configuration into dir and
// returns the environment that points rota at it.
func simulatedDevice(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{
		"cmdline": "",
		"a.img":   "A",
		"b.img":   "B",
		"system.toml": `compatible = "acme-board"
data-dir = "data"
[bootloader]
backend = "file"
[install]
keyring = "release.pub"
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
`,
	}
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	return map[string]string{
		"ROTA_CONFIG":  filepath.Join(dir, "system.toml"),
		"ROTA_CMDLINE": filepath.Join(dir, "cmdline"),
	}
}

func TestInstall_FromURLAndRegistry(t *testing.T) {
	dir := t.TempDir()
	env := simulatedDevice(t, dir)
	img := bytes.Repeat([]byte("new rootfs "), 100000)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "v2.img"), img, 0o644))
	_, stderr, code := runCLI(t, env, "key", "generate", "--out", filepath.Join(dir, "release"))
	require.Zero(t, code, stderr)
	bundlePath := filepath.Join(dir, "v2.rota")
	_, stderr, code = runCLI(t, env, "bundle", "create", "--compatible", "acme-board",
		"--version", "2.0.0", "--slot", "rootfs="+filepath.Join(dir, "v2.img"),
		"--key", filepath.Join(dir, "release.key"), "-o", bundlePath)
	require.Zero(t, code, stderr)

	web := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer web.Close()
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref := strings.TrimPrefix(reg.URL, "http://") + "/fleet/acme:2.0.0"
	_, stderr, code = runCLI(t, env, "bundle", "push", bundlePath, ref)
	require.Zero(t, code, stderr)

	tests := []struct {
		name   string
		source string
	}{
		{"an http URL streams the bundle", web.URL + "/v2.rota"},
		{"an OCI reference reads it from the registry", ref},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "b.img"), []byte("B"), 0o644))
			stdout, stderr, code := runCLI(t, env, "install", tt.source)
			require.Zero(t, code, stderr)
			require.Contains(t, stdout, "slot rootfs.1 is active for the next boot")
			got, err := os.ReadFile(filepath.Join(dir, "b.img"))
			require.NoError(t, err)
			require.Equal(t, img, got)
		})
	}

	_, stderr, code = runCLI(t, env, "install", web.URL+"/missing.rota")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "404 Not Found")
}
