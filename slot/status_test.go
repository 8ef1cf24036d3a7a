package slot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatus_InstallRecords(t *testing.T) {
	ctx := context.Background()
	fx := newDeviceFixture(t, "rota.slot=A", "")
	sys := fx.open(t)
	rootfs1 := mustSlot(t, sys, "rootfs.1")
	v1 := BundleInfo{Version: "1.0", Digest: "sha256:01", RollbackIndex: 3}
	v2 := BundleInfo{Version: "2.0", Digest: "sha256:02", RollbackIndex: 5}

	record := func() SlotRecord {
		t.Helper()
		st, err := sys.loadStatus()
		require.NoError(t, err)
		return st.Slots["rootfs.1"]
	}

	require.NoError(t, sys.BeginInstall(ctx, rootfs1, v1))
	assert.Equal(t, StateInstalling, record().State)
	assert.Equal(t, BootState{Bad: true}, bootStateOf(t, sys, "B"),
		"the target is marked bad before the first byte")

	require.NoError(t, sys.CommitInstall(ctx, rootfs1, WriteResult{Size: 4, SHA256: "aa"}))
	rec := record()
	assert.Equal(t, StateInstalled, rec.State)
	assert.Equal(t, 1, rec.Count)
	assert.Equal(t, "aa", rec.ImageSHA256)
	assert.Equal(t, v1, rec.BundleInfo)
	assert.Equal(t, BootState{Bad: true}, bootStateOf(t, sys, "B"),
		"commit does not activate")

	require.NoError(t, sys.MarkGood(ctx, rootfs1))
	idx, err := sys.RollbackIndex()
	require.NoError(t, err)
	assert.Equal(t, uint64(0), idx, "a slot that never booted commits nothing")

	// The new slot boots and confirms itself.
	require.NoError(t, os.WriteFile(fx.cmdline, []byte("rota.slot=B\n"), 0o644))
	sys = fx.open(t)
	rootfs1 = mustSlot(t, sys, "rootfs.1")
	require.NoError(t, sys.MarkGood(ctx, rootfs1))
	idx, err = sys.RollbackIndex()
	require.NoError(t, err)
	assert.Equal(t, uint64(3), idx)
	require.NoError(t, os.WriteFile(fx.cmdline, []byte("rota.slot=A\n"), 0o644))
	sys = fx.open(t)
	rootfs1 = mustSlot(t, sys, "rootfs.1")

	require.NoError(t, sys.BeginInstall(ctx, rootfs1, v2))
	require.NoError(t, sys.FailInstall(ctx, rootfs1, errors.New("network gone")))
	rec = record()
	assert.Equal(t, StateFailed, rec.State)
	assert.Equal(t, "network gone", rec.Error)
	assert.Equal(t, 1, rec.Count, "the count keeps successful installs")
	assert.Equal(t, v2, rec.BundleInfo)

	idx, err = sys.RollbackIndex()
	require.NoError(t, err)
	assert.Equal(t, uint64(3), idx, "the rollback index never goes down")

	err = sys.CommitInstall(ctx, rootfs1, WriteResult{})
	require.ErrorIs(t, err, ErrNoInstall)
	require.ErrorIs(t, sys.FailInstall(ctx, mustSlot(t, sys, "boot.1"), nil), ErrNoInstall)

	err = sys.BeginInstall(ctx, mustSlot(t, sys, "boot.0"), v2)
	require.ErrorIs(t, err, ErrBootedSlot, "the booted group is never prepared for writing")
}

func TestStatus_File(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{name: "truncated JSON", content: `{"format": 1, "slots": {`, want: "unexpected EOF"},
		{name: "not JSON", content: "\x00\x01garbage", want: "invalid character"},
		{name: "unknown fields", content: `{"format": 1, "colour": 1}`, want: "colour"},
		{name: "trailing data", content: `{"format": 1}{}`, want: "data after"},
		{name: "another format", content: `{"format": 9}`, want: "format 9, want 1"},
		{
			name:    "an oversized file",
			content: `{"format": 1, "x": "` + strings.Repeat("x", MaxStatusSize) + `"}`,
			want:    "larger than",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newDeviceFixture(t, "rota.slot=A", "")
			sys := fx.open(t)
			path := filepath.Join(fx.dataDir, StatusFileName)
			require.NoError(t, os.MkdirAll(fx.dataDir, 0o755))
			require.NoError(t, os.WriteFile(path, []byte(tt.content), 0o644))

			_, err := sys.RollbackIndex()
			require.ErrorIs(t, err, ErrCorruptStatus)
			assert.Contains(t, err.Error(), path, "the error names the file")
			assert.Contains(t, err.Error(), tt.want)

			err = sys.BeginInstall(context.Background(), mustSlot(t, sys, "rootfs.1"),
				BundleInfo{})
			require.ErrorIs(t, err, ErrCorruptStatus)
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, tt.content, string(got), "a corrupt file is never replaced")
		})
	}
}

func TestStatus_AtomicUpdates(t *testing.T) {
	fx := newDeviceFixture(t, "rota.slot=A", "")
	// Two Systems stand for two processes: they share only the file.
	systems := []*System{fx.open(t), fx.open(t)}
	const perSystem = 25

	var wg sync.WaitGroup
	for _, sys := range systems {
		for range perSystem {
			wg.Go(func() {
				err := sys.updateStatus(func(st *statusFile) error {
					rec := st.Slots["rootfs.1"]
					rec.Count++
					st.Slots["rootfs.1"] = rec
					return nil
				})
				assert.NoError(t, err)
			})
		}
	}
	wg.Wait()

	st, err := systems[0].loadStatus()
	require.NoError(t, err)
	assert.Equal(t, 2*perSystem, st.Slots["rootfs.1"].Count, "no update was lost")

	entries, err := os.ReadDir(fx.dataDir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.Equal(t, StatusFileName, e.Name(), "no temporary file is left behind")
	}
}

func TestStatus_FailedUpdateKeepsOldFile(t *testing.T) {
	fx := newDeviceFixture(t, "rota.slot=A", "")
	sys := fx.open(t)
	require.NoError(t, sys.BeginInstall(context.Background(), mustSlot(t, sys, "rootfs.1"),
		BundleInfo{Version: "1"}))
	path := filepath.Join(fx.dataDir, StatusFileName)
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	err = sys.updateStatus(func(st *statusFile) error {
		st.Slots["rootfs.1"] = SlotRecord{State: StateFailed}
		return errors.New("changed my mind")
	})
	require.Error(t, err)
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after)
}
