package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/testutil"
)

// bin holds the rota-server and rota-client binaries the tests run.
var bin string

func TestMain(m *testing.M) {
	dir, err := testutil.BuildCommands(nil, "github.com/rotaupdate/rota/cmd/rota-server",
		"github.com/rotaupdate/rota/cmd/rota-client")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// adminPassword is the first admin's password in every test server.
const adminPassword = testutil.AdminPassword

// enrollmentToken admits the simulated devices at once.
const enrollmentToken = "e2e-enrollment-token"

// serverProc is a rota-server process of a test.
type serverProc struct {
	*testutil.Server
	t *testing.T
}

// startServer starts rota-server on a loopback port with its data in a
// temporary directory; extra are more flags, such as --database.
func startServer(t *testing.T, extra ...string) *serverProc {
	t.Helper()
	args := append([]string{"--poll-interval", "1s", "--schedule-interval", "200ms",
		"--enrollment-token", enrollmentToken, "--log-level", "debug"}, extra...)
	return &serverProc{Server: testutil.StartServer(t, filepath.Join(bin, "rota-server"),
		args...), t: t}
}

// fleetKey writes a release signing key pair: the public key where the
// server looks for keys, the signer for building bundles.
func fleetKey(t *testing.T, data string) (*bundle.Signer, string) {
	t.Helper()
	priv, pub, err := bundle.GenerateKey(bundle.Ed25519, nil)
	require.NoError(t, err)
	signer, err := bundle.LoadSigner(priv, nil)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(data, "keys"), 0o700))
	pubPath := filepath.Join(data, "keys", "release.pub")
	require.NoError(t, os.WriteFile(pubPath, pub, 0o644))
	return signer, pubPath
}

// buildRelease builds a signed bundle of version for the simulated
// devices and returns its bytes.
func buildRelease(t *testing.T, s *bundle.Signer, version string) []byte {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.img")
	content := bytes.Repeat([]byte("rootfs "+version+"\n"), 64<<10)
	require.NoError(t, os.WriteFile(img, content, 0o644))
	var buf bytes.Buffer
	_, err := bundle.Create(context.Background(), &buf, bundle.Spec{
		Compatible: "rota-sim",
		Version:    version,
		Images:     []bundle.ImageSource{{Class: "rootfs", Path: img}},
	}, bundle.CreateOptions{Signers: []*bundle.Signer{s}, TempDir: dir})
	require.NoError(t, err)
	return buf.Bytes()
}

// simulate starts rota-client simulate with n devices against s; devices
// fail the health check of the versions in failHealth.
func simulate(t *testing.T, s *serverProc, keyring string, n int, failHealth string) {
	t.Helper()
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "simulate.log"))
	require.NoError(t, err)
	cmd := exec.Command(filepath.Join(bin, "rota-client"), "simulate",
		"--server", s.URL(), "--devices", fmt.Sprint(n), "--dir", dir,
		"--keyring", keyring, "--enrollment-token", enrollmentToken,
		"--fail-health", failHealth, "--poll", "1s", "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			log, _ := os.ReadFile(logf.Name())
			t.Logf("rota-client simulate log:\n%s", testutil.Tail(string(log), 150))
		}
	})
}
