package slot

import (
	"os"
	"os/exec"
	"testing"
)

// requireTool returns the path of the external program name. When it is
// missing the test is skipped, except under CI=true, where every tool the
// tests talk to must be installed and a missing one fails the test.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true: %v", name, err)
	}
	t.Skipf("%s not installed: %v", name, err)
	return ""
}
