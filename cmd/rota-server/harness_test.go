package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/testutil"
)

// bin holds the rota-server and rota-client binaries the tests run.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rota-server-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	build := exec.Command("go", "build", "-o", dir+"/",
		"github.com/rotaupdate/rota/cmd/rota-server",
		"github.com/rotaupdate/rota/cmd/rota-client")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the commands:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// adminPassword is the first admin's password in every test server.
const adminPassword = "correct horse battery"

// enrollmentToken admits the simulated devices at once.
const enrollmentToken = "e2e-enrollment-token"

// serverProc is a rota-server process and what it needs to restart.
type serverProc struct {
	t        *testing.T
	data     string
	database string
	addr     string
	args     []string
	cmd      *exec.Cmd
	log      *os.File
	exited   chan error
	token    string
	client   *http.Client
	scheme   string
}

// startServer starts rota-server on a loopback port with its data in a
// temporary directory; extra are more flags, such as --database.
func startServer(t *testing.T, extra ...string) *serverProc {
	t.Helper()
	data := t.TempDir()
	s := &serverProc{t: t, data: data, client: http.DefaultClient, scheme: "http",
		addr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))}
	s.args = append([]string{"--listen", s.addr, "--data", data,
		"--poll-interval", "1s", "--schedule-interval", "200ms",
		"--enrollment-token", enrollmentToken, "--log-level", "debug"}, extra...)
	for i, a := range extra {
		switch {
		case i+1 >= len(extra):
		case a == "--database":
			s.database = extra[i+1]
		case a == "--tls-cert":
			s.scheme, s.client = "https", tlsClient(t, extra[i+1])
		}
	}
	var err error
	s.log, err = os.Create(filepath.Join(data, "server.log"))
	require.NoError(t, err)
	t.Cleanup(func() {
		s.kill()
		s.log.Close()
		if t.Failed() {
			log, _ := os.ReadFile(s.log.Name())
			t.Logf("rota-server log:\n%s", tail(log, 200))
		}
	})
	s.start()
	s.token = s.createToken("e2e", "admin")
	return s
}

// start starts the process and waits until it is ready.
func (s *serverProc) start() {
	s.t.Helper()
	s.cmd = exec.Command(filepath.Join(bin, "rota-server"), s.args...)
	s.cmd.Env = append(os.Environ(), "ROTA_ADMIN_PASSWORD="+adminPassword)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	require.NoError(s.t, s.cmd.Start())
	exited := make(chan error, 1)
	s.exited = exited
	go func() { exited <- s.cmd.Wait() }()

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := s.client.Get(s.url() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-exited:
			s.t.Fatalf("rota-server exited at start: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.t.Fatal("rota-server did not become ready in 30s")
}

// kill ends the process with SIGKILL, as a power cut or OOM kill would.
func (s *serverProc) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// stop ends the process with SIGTERM and returns its exit error.
func (s *serverProc) stop() error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		s.cmd = nil
		return err
	case <-time.After(40 * time.Second):
		s.kill()
		return fmt.Errorf("rota-server did not stop in 40s after SIGTERM")
	}
}

func (s *serverProc) url() string { return s.scheme + "://" + s.addr }

// tlsClient returns an HTTP client that trusts only the certificate in
// the PEM file certFile.
func tlsClient(t *testing.T, certFile string) *http.Client {
	t.Helper()
	pemCert, err := os.ReadFile(certFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pemCert))
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// createToken creates a management API token with the offline command.
func (s *serverProc) createToken(name, role string) string {
	s.t.Helper()
	args := []string{"token", "create", "--data", s.data, "--name", name, "--role", role}
	if s.database != "" {
		args = append(args, "--database", s.database)
	}
	out, err := exec.Command(filepath.Join(bin, "rota-server"), args...).Output()
	require.NoError(s.t, err, "rota-server token create")
	return strings.TrimSpace(string(out))
}

// api makes a management API request with the admin token and decodes
// the answer into out, unless out is nil; it returns the status code.
func (s *serverProc) api(method, path string, body any, out any) int {
	s.t.Helper()
	var r io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		r, ctype = bytes.NewReader(b), "application/vnd.rota.bundle"
	default:
		raw, err := json.Marshal(b)
		require.NoError(s.t, err)
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.url()+path, r)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+s.token)
	if r != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := s.client.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	if out != nil && resp.StatusCode < 300 {
		require.NoError(s.t, json.Unmarshal(raw, out), "decode %s %s: %s", method, path, raw)
	}
	if resp.StatusCode >= 300 {
		s.t.Logf("%s %s: %s: %s", method, path, resp.Status, raw)
	}
	return resp.StatusCode
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
		"--server", s.url(), "--devices", fmt.Sprint(n), "--dir", dir,
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
			t.Logf("rota-client simulate log:\n%s", tail(log, 150))
		}
	})
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// eventually calls cond every 200ms until it returns true or timeout
// passes, and fails the test with what then.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
