package testutil

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// AdminPassword is the first admin's password of every Server.
const AdminPassword = "correct horse battery"

// BuildCommands builds the commands of this module named by their
// package paths into a new temporary directory and returns it; env is
// added to the build's environment (such as CGO_ENABLED=0). The caller
// removes the directory.
func BuildCommands(env []string, pkgs ...string) (string, error) {
	dir, err := os.MkdirTemp("", "rota-commands-")
	if err != nil {
		return "", err
	}
	build := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	build.Env = append(os.Environ(), env...)
	if out, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return dir, nil
}

// Server is a rota-server process on a loopback port, with its data in a
// temporary directory, for tests that run the real command.
type Server struct {
	t      testing.TB
	bin    string
	args   []string
	cmd    *exec.Cmd
	exited chan error
	log    *os.File

	// Data is the server's data directory and Addr its listening address.
	Data, Addr string
	// Database is the --database flag, if given.
	Database string
	// Scheme is https with --tls-cert, http otherwise.
	Scheme string
	// Client makes the requests of API, each within a minute; it trusts
	// the server's certificate when the test sets one.
	Client *http.Client
	// Token is a management API token of the admin role.
	Token string
}

// StartServer starts the rota-server binary bin with --listen on a free
// loopback port, --data in a temporary directory unless args name one,
// and the further flags args; the first admin's password is
// AdminPassword. It waits until the server is ready, creates an admin API
// token, and stops the server when the test ends, logging the end of its
// log if the test failed. The log is kept in the test's ArtifactDir.
func StartServer(t testing.TB, bin string, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: bin, Scheme: "http", Client: &http.Client{Timeout: time.Minute},
		Addr: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--data":
			s.Data = args[i+1]
		case "--database":
			s.Database = args[i+1]
		case "--tls-cert":
			s.Scheme, s.Client = "https", tlsClient(t, args[i+1])
		}
	}
	if s.Data == "" {
		s.Data = t.TempDir()
		args = append([]string{"--data", s.Data}, args...)
	}
	s.args = append([]string{"--listen", s.Addr}, args...)
	var err error
	if s.log, err = os.CreateTemp(t.ArtifactDir(), "rota-server-*.log"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd != nil {
			if err := s.Stop(); err != nil {
				t.Errorf("stop rota-server: %v", err)
			}
		}
		s.log.Close()
		if t.Failed() {
			t.Logf("rota-server log:\n%s", Tail(s.LogText(), 200))
		}
	})
	s.Start()
	s.Token = s.CreateToken("test", "admin")
	return s
}

// URL is the server's base URL.
func (s *Server) URL() string { return s.Scheme + "://" + s.Addr }

// LogText returns what the server wrote to its output so far.
func (s *Server) LogText() string {
	b, _ := os.ReadFile(s.log.Name())
	return string(b)
}

// Start starts the process, after StartServer or Kill, and waits until
// it is ready.
func (s *Server) Start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Env = append(os.Environ(), "ROTA_ADMIN_PASSWORD="+AdminPassword)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start rota-server: %v", err)
	}
	exited := make(chan error, 1)
	s.exited = exited
	go func() { exited <- s.cmd.Wait() }()

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := s.Client.Get(s.URL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-exited:
			s.cmd = nil
			s.t.Fatalf("rota-server exited at start: %v\n%s", err, Tail(s.LogText(), 40))
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.t.Fatal("rota-server did not become ready in 30s")
}

// Kill ends the process with SIGKILL, as a power cut or the OOM killer
// would.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// Stop ends the process with SIGTERM and returns its exit error; after
// 40 s it kills it.
func (s *Server) Stop() error {
	if s.cmd == nil {
		return nil
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		s.cmd = nil
		return err
	case <-time.After(40 * time.Second):
		s.Kill()
		return fmt.Errorf("rota-server did not stop in 40s after SIGTERM")
	}
}

// CreateToken creates a management API token with the offline command.
func (s *Server) CreateToken(name, role string) string {
	s.t.Helper()
	args := []string{"token", "create", "--data", s.Data, "--name", name, "--role", role}
	if s.Database != "" {
		args = append(args, "--database", s.Database)
	}
	out, err := exec.Command(s.bin, args...).Output()
	if err != nil {
		s.t.Fatalf("rota-server token create: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// API makes a request of the management API, path relative to /api/v1,
// with the admin token. A body of []byte is sent as a bundle, any other
// as JSON. It decodes a successful answer into out unless out is nil,
// logs an unsuccessful one, and returns the status code.
func (s *Server) API(method, path string, body, out any) int {
	s.t.Helper()
	var r io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		r, ctype = bytes.NewReader(b), "application/vnd.rota.bundle"
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.URL()+"/api/v1"+path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	if r != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: read the answer: %v", method, path, err)
	}
	if resp.StatusCode >= 300 {
		s.t.Logf("%s %s: %s: %s", method, path, resp.Status, raw)
	} else if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("decode %s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode
}

// tlsClient returns an HTTP client that trusts only the certificate in
// the PEM file certFile.
func tlsClient(t testing.TB, certFile string) *http.Client {
	t.Helper()
	pemCert, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCert) {
		t.Fatalf("no certificate in %s", certFile)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Eventually calls cond every 200 ms until it returns true, and fails the
// test, saying what it waited for, once timeout has passed.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
