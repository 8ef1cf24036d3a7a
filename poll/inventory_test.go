package poll_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
)

func TestCollector_Collect(t *testing.T) {
	dir := t.TempDir()
	osRelease := filepath.Join(dir, "os-release")
	require.NoError(t, os.WriteFile(osRelease, []byte(
		"ID=rotaos\nVERSION_ID=\"2.1\"\nPRETTY_NAME=\"Rota OS 2.1 (\\\"test\\\")\"\n"+
			"# a comment\nHOME_URL=https://example.com/\n"), 0o644))
	scripts := filepath.Join(dir, "inventory.d")
	require.NoError(t, os.Mkdir(scripts, 0o755))
	write := func(name, body string, mode os.FileMode) {
		require.NoError(t, os.WriteFile(filepath.Join(scripts, name),
			[]byte("#!/bin/sh\n"+body+"\n"), mode))
	}
	write("10-board", "echo board=rev-b\necho 'serial = 1234'\necho not a pair\n"+
		"echo 'bad key=x'\necho hostname=from-script", 0o755)
	write("20-fails", "echo partial=yes\nexit 3", 0o755)
	write("30-hangs", "echo before=hang\nsleep 30", 0o755)
	write("40-floods", "yes flood=x", 0o755)
	write("50-not-executable", "echo skipped=yes", 0o644)

	c := poll.Collector{
		ScriptDir:       scripts,
		DataDir:         dir,
		OSRelease:       osRelease,
		ScriptTimeout:   500 * time.Millisecond,
		MaxScriptOutput: 4 << 10,
	}
	start := time.Now()
	inv, err := c.Collect(t.Context())
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 5*time.Second, "hanging scripts are cut short")
	require.NoError(t, poll.ValidateAttributes(inv), "fits the API limits")

	tests := []struct {
		name string
		key  string
		want string // substring; "" means absent
	}{
		{name: "os id", key: "os.id", want: "rotaos"},
		{name: "quoted os version", key: "os.version-id", want: "2.1"},
		{name: "escaped os name", key: "os.name", want: `Rota OS 2.1 ("test")`},
		{name: "kernel release", key: "kernel", want: "."},
		{name: "machine", key: "hardware", want: ""},
		{name: "a script's attribute", key: "board", want: "rev-b"},
		{name: "spaces around = are trimmed", key: "serial", want: "1234"},
		{name: "a script overrides a built-in attribute", key: "hostname", want: "from-script"},
		{name: "a failing script's output is kept", key: "partial", want: "yes"},
		{name: "a failing script is recorded", key: "error.20-fails", want: "exit status 3"},
		{name: "a hanging script's output is kept", key: "before", want: "hang"},
		{name: "a hanging script times out", key: "error.30-hangs", want: "timed out"},
		{name: "a flooding script is stopped", key: "error.40-floods", want: "output over"},
		{name: "a flooding script's lines are kept", key: "flood", want: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := inv[tt.key]
			require.True(t, ok, "attribute %s missing from %v", tt.key, inv)
			assert.Contains(t, got, tt.want)
		})
	}

	t.Run("free space is a number", func(t *testing.T) {
		free, err := strconv.ParseUint(inv["data.free"], 10, 64)
		require.NoError(t, err)
		assert.Positive(t, free)
	})
	t.Run("nothing else leaks in", func(t *testing.T) {
		for k := range inv {
			assert.False(t, strings.Contains(k, " "), "key %q", k)
		}
		assert.NotContains(t, inv, "skipped")
		assert.NotContains(t, inv, "os.home-url")
	})
}

func TestCollectInventory_missingParts(t *testing.T) {
	inv, err := poll.Collector{
		ScriptDir: filepath.Join(t.TempDir(), "none"),
		OSRelease: filepath.Join(t.TempDir(), "none"),
	}.Collect(t.Context())

	require.NoError(t, err)
	assert.Contains(t, inv["error.os-release"], "no such file")
	assert.NotEmpty(t, inv["hostname"])
}

func TestCollectInventory_cancelled(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a"), []byte("#!/bin/sh\necho a=b\n"), 0o755))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	_, err := poll.CollectInventory(ctx, dir)

	require.ErrorIs(t, err, context.Canceled)
}
