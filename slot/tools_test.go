package slot

import (
	"testing"

	"github.com/rotaupdate/rota/internal/testutil"
)

// requireTool returns the path of the external program name; see
// testutil.RequireTool for what happens when it is missing.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	return testutil.RequireTool(t, name)
}
