// Package testutil holds helpers shared by the repository's tests: finding
// the real tools the tests talk to and starting throwaway servers.
package testutil

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// CI reports whether the tests run in CI (CI=true), where a missing tool is
// a failure rather than a reason to skip.
func CI() bool { return os.Getenv("CI") == "true" }

// RequireTool returns the path of the named command. When it is missing
// the test fails under CI and is skipped otherwise; `make test` installs
// every tool the tests need.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin", "/sbin"} {
		if dir == "" {
			if p, err := exec.LookPath(name); err == nil {
				return p
			}
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	toolMissing(t, name)
	return ""
}

// toolMissing fails the test under CI and skips it otherwise.
func toolMissing(t testing.TB, name string) {
	t.Helper()
	if CI() {
		t.Fatalf("%s is not installed; make test installs it", name)
	}
	t.Skipf("%s is not installed (run make test to install it)", name)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartRegistry starts Debian's docker-registry (the CNCF distribution
// registry) on a loopback port with storage in a temporary directory, and
// returns its host:port. It is stopped when the test ends.
func StartRegistry(t testing.TB) string {
	t.Helper()
	bin := RequireTool(t, "docker-registry")
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	cfg := filepath.Join(dir, "config.yml")
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfg)
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
	t.Fatalf("docker-registry did not start on %s:\n%s", addr, log)
	return ""
}
