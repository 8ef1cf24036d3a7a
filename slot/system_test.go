package slot

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSystem_Booted(t *testing.T) {
	tests := []struct {
		name     string
		cmdline  string
		reporter bool // keep the file backend's BootedReporter
		want     string
		wantErr  error
	}{
		{
			name:    "rota.slot names a slot",
			cmdline: "console=ttyS0 rota.slot=rootfs.1 root=/dev/sda2",
			want:    "rootfs.1",
		},
		{
			name:    "rota.slot names a bootname",
			cmdline: "rota.slot=B quiet",
			want:    "rootfs.1",
		},
		{
			name:    "the last rota.slot wins",
			cmdline: "rota.slot=A rota.slot=B",
			want:    "rootfs.1",
		},
		{
			name:    "rota.slot naming nothing is an error, not a guess",
			cmdline: "rota.slot=C root=/dev/sda2",
			wantErr: ErrBootedUnknown,
		},
		{
			name:    "root= as a /dev path behind a configured PARTLABEL",
			cmdline: "root=/dev/sda2 rw",
			want:    "rootfs.0",
		},
		{
			name:    "root= as a /dev path equal to the configured one",
			cmdline: "root=/dev/sda3",
			want:    "rootfs.1",
		},
		{
			name:    "root= as PARTLABEL",
			cmdline: "root=PARTLABEL=rootfs-b",
			want:    "rootfs.1",
		},
		{
			name:    "root= as PARTUUID in upper case",
			cmdline: "root=PARTUUID=0000AAAA-02",
			want:    "rootfs.0",
		},
		{
			name:    "root= as UUID",
			cmdline: "root=UUID=cafe-0003",
			want:    "rootfs.1",
		},
		{
			name:    "root= as LABEL",
			cmdline: "root=LABEL=root-a",
			want:    "rootfs.0",
		},
		{
			name:    "root= as a udev link",
			cmdline: "root=/dev/disk/by-partuuid/0000aaaa-03",
			want:    "rootfs.1",
		},
		{
			name:    "quoted parameters do not hide root=",
			cmdline: `dyndbg="file a.c +p" root=/dev/sda3`,
			want:    "rootfs.1",
		},
		{
			name:     "the boot loader answers when root= matches nothing",
			cmdline:  "root=/dev/mapper/verity",
			reporter: true,
			want:     "rootfs.0",
		},
		{
			name:     "the boot loader answers when the command line is silent",
			cmdline:  "quiet",
			reporter: true,
			want:     "rootfs.0",
		},
		{
			name:    "no source at all is ErrBootedUnknown",
			cmdline: "quiet",
			wantErr: ErrBootedUnknown,
		},
		{
			name:    "an unmatched root= without a reporter is ErrBootedUnknown",
			cmdline: "root=/dev/nfs",
			wantErr: ErrBootedUnknown,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newDeviceFixture(t, tt.cmdline, "")
			boot, err := NewFileBootloader(fx.bootState, "A", "B")
			require.NoError(t, err)
			var b Bootloader = boot
			if !tt.reporter {
				b = noReporter{boot}
			}
			sys := fx.open(t, WithBootloader(b))

			got, err := sys.Booted(context.Background())
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got.Name())
		})
	}
}

func TestSystem_Passive(t *testing.T) {
	const flat = `
compatible = "x"
[bootloader]
backend = "file"
[[slot]]
name = "rootfs.0"
class = "rootfs"
device = "/dev/sda2"
bootname = "A"
[[slot]]
name = "rootfs.1"
class = "rootfs"
device = "/dev/sda3"
bootname = "B"
[[slot]]
name = "rootfs.2"
class = "rootfs"
device = "/dev/sda4"
bootname = "C"
[[slot]]
name = "data"
class = "appdata"
device = "/dev/sdb9"
`
	tests := []struct {
		name    string
		config  string // "" means fixtureConfig, which has parents
		cmdline string
		class   string
		want    string
		wantErr error
	}{
		{
			name:    "the other rootfs when A runs",
			cmdline: "rota.slot=A",
			class:   "rootfs",
			want:    "rootfs.1",
		},
		{
			name:    "the other rootfs when B runs",
			cmdline: "rota.slot=B",
			class:   "rootfs",
			want:    "rootfs.0",
		},
		{
			name:    "the boot slot whose parent is the passive rootfs",
			cmdline: "rota.slot=A",
			class:   "boot",
			want:    "boot.1",
		},
		{
			name:    "booted through the boot slot's sibling",
			cmdline: "rota.slot=rootfs.1",
			class:   "boot",
			want:    "boot.0",
		},
		{
			name:    "a class nobody has",
			cmdline: "rota.slot=A",
			class:   "firmware",
			wantErr: ErrNoPassive,
		},
		{
			name:    "the first passive slot in configuration order",
			config:  flat,
			cmdline: "rota.slot=A",
			class:   "rootfs",
			want:    "rootfs.1",
		},
		{
			name:    "passive slots skip the booted one",
			config:  flat,
			cmdline: "rota.slot=B",
			class:   "rootfs",
			want:    "rootfs.0",
		},
		{
			name:    "a stand-alone slot is never in the booted group",
			config:  flat,
			cmdline: "rota.slot=A",
			class:   "appdata",
			want:    "data",
		},
		{
			name:    "unknown booted slot means no passive slot",
			cmdline: "quiet",
			class:   "rootfs",
			wantErr: ErrBootedUnknown,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newDeviceFixture(t, tt.cmdline, tt.config)
			sys := fx.open(t, WithBootloader(noReporter{}))

			got, err := sys.Passive(context.Background(), tt.class)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got.Name())
		})
	}
}

func TestSystem_Slot(t *testing.T) {
	fx := newDeviceFixture(t, "rota.slot=A", "")
	sys := fx.open(t)

	names := []string{}
	for _, s := range sys.Slots() {
		names = append(names, s.Name())
	}
	assert.Equal(t, []string{"rootfs.0", "rootfs.1", "boot.0", "boot.1"}, names)

	boot1 := mustSlot(t, sys, "boot.1")
	assert.Equal(t, "boot", boot1.Class())
	assert.Equal(t, "UUID=b00b-0001", boot1.Device())
	assert.Equal(t, "rootfs.1", boot1.Parent().Name())
	assert.Equal(t, "rootfs.1", boot1.Root().Name())
	assert.Empty(t, boot1.Bootname())

	_, err := sys.Slot("rootfs.9")
	require.ErrorIs(t, err, ErrUnknownSlot)
}

func TestSystem_Mark(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		do   func(sys *System) error
		want map[string]BootState
	}{
		{
			name: "mark-active gives the slot its tries and makes it primary",
			do: func(sys *System) error {
				return sys.MarkActive(ctx, mustSlot(t, sys, "rootfs.1"), 2)
			},
			want: map[string]BootState{
				"A": {Good: true, AttemptsLeft: -1},
				"B": {AttemptsLeft: 2},
			},
		},
		{
			name: "mark-active with zero attempts uses boot-attempts",
			do: func(sys *System) error {
				return sys.MarkActive(ctx, mustSlot(t, sys, "rootfs.1"), 0)
			},
			want: map[string]BootState{"B": {AttemptsLeft: DefaultBootAttempts}},
		},
		{
			name: "a child is marked through its parent's bootname",
			do: func(sys *System) error {
				return sys.MarkBad(ctx, mustSlot(t, sys, "boot.1"))
			},
			want: map[string]BootState{"B": {Bad: true}},
		},
		{
			name: "mark-good confirms",
			do: func(sys *System) error {
				if err := sys.MarkBad(ctx, mustSlot(t, sys, "rootfs.1")); err != nil {
					return err
				}
				return sys.MarkGood(ctx, mustSlot(t, sys, "rootfs.1"))
			},
			want: map[string]BootState{"B": {Good: true, AttemptsLeft: -1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newDeviceFixture(t, "rota.slot=A", "")
			sys := fx.open(t)
			require.NoError(t, tt.do(sys))
			for bootname, want := range tt.want {
				assert.Equal(t, want, bootStateOf(t, sys, bootname), bootname)
			}
		})
	}
}

func TestSystem_MarkRefusesIncompleteInstall(t *testing.T) {
	ctx := context.Background()
	fx := newDeviceFixture(t, "rota.slot=A", "")
	sys := fx.open(t)
	boot1 := mustSlot(t, sys, "boot.1")
	require.NoError(t, sys.BeginInstall(ctx, boot1, BundleInfo{Version: "2.0"}))

	err := sys.MarkActive(ctx, mustSlot(t, sys, "rootfs.1"), 1)
	require.ErrorIs(t, err, ErrIncomplete)
	assert.Contains(t, err.Error(), "slot boot.1 is installing")
	require.ErrorIs(t, sys.MarkGood(ctx, mustSlot(t, sys, "rootfs.1")), ErrIncomplete)
	assert.Equal(t, BootState{Bad: true}, bootStateOf(t, sys, "B"))

	require.NoError(t, sys.FailInstall(ctx, boot1, os.ErrDeadlineExceeded))
	require.ErrorIs(t, sys.MarkActive(ctx, boot1, 1), ErrIncomplete)
}

func TestSystem_Status(t *testing.T) {
	ctx := context.Background()
	fx := newDeviceFixture(t, "rota.slot=A", "")
	sys := fx.open(t)
	rootfs1 := mustSlot(t, sys, "rootfs.1")
	info := BundleInfo{Version: "2.0", Digest: "sha256:abcd", Compatible: "acme-gadget",
		RollbackIndex: 7}
	require.NoError(t, sys.BeginInstall(ctx, rootfs1, info))
	require.NoError(t, sys.CommitInstall(ctx, rootfs1, WriteResult{Size: 10, SHA256: "ff"}))
	require.NoError(t, sys.MarkActive(ctx, rootfs1, 1))

	st, err := sys.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "acme-gadget", st.Compatible)
	assert.Equal(t, BackendFile, st.Backend)
	assert.Equal(t, "rootfs.0", st.Booted)
	assert.Equal(t, "B", st.Primary)
	assert.Zero(t, st.RollbackIndex, "nothing is committed before mark-good")
	require.Len(t, st.Slots, 4)

	byName := map[string]SlotStatus{}
	for _, s := range st.Slots {
		byName[s.Name] = s
	}
	r0, r1, b1 := byName["rootfs.0"], byName["rootfs.1"], byName["boot.1"]
	assert.True(t, r0.Booted)
	assert.True(t, byName["boot.0"].Booted, "a child is booted with its parent")
	assert.Equal(t, BootGood, r0.Boot)
	assert.Nil(t, r0.Install)

	assert.False(t, r1.Booted)
	assert.True(t, r1.Primary)
	assert.Equal(t, BootTrying, r1.Boot)
	assert.Equal(t, 1, r1.AttemptsLeft)
	require.NotNil(t, r1.Install)
	assert.Equal(t, StateInstalled, r1.Install.State)
	assert.Equal(t, info, r1.Install.BundleInfo)
	assert.Equal(t, 1, r1.Install.Count)
	assert.False(t, r1.Install.InstalledAt.IsZero())

	assert.Equal(t, "rootfs.1", b1.Parent)
	assert.Equal(t, BootTrying, b1.Boot, "a child shows its parent's boot state")
	assert.True(t, b1.Primary)

	t.Run("mark-good commits the rollback index once the slot booted", func(t *testing.T) {
		require.NoError(t, sys.MarkGood(ctx, rootfs1))
		idx, err := sys.RollbackIndex()
		require.NoError(t, err)
		assert.Equal(t, uint64(0), idx, "not booted yet")

		require.NoError(t, os.WriteFile(fx.cmdline, []byte("rota.slot=B\n"), 0o644))
		booted := fx.open(t)
		require.NoError(t, booted.MarkGood(ctx, mustSlot(t, booted, "rootfs.1")))
		idx, err = booted.RollbackIndex()
		require.NoError(t, err)
		assert.Equal(t, uint64(7), idx)
		require.NoError(t, os.WriteFile(fx.cmdline, []byte("rota.slot=A\n"), 0o644))
	})

	t.Run("an unknown booted slot is reported, not fatal", func(t *testing.T) {
		require.NoError(t, os.WriteFile(fx.cmdline, []byte("quiet\n"), 0o644))
		sys := fx.open(t, WithBootloader(noReporter{sys.Bootloader()}))
		st, err := sys.Status(ctx)
		require.NoError(t, err)
		assert.Empty(t, st.Booted)
		assert.Contains(t, st.BootedError, "cannot tell the booted slot")
	})

	t.Run("a corrupt status file is fatal", func(t *testing.T) {
		p := filepath.Join(fx.dataDir, StatusFileName)
		require.NoError(t, os.WriteFile(p, []byte("{"), 0o644))
		_, err := sys.Status(ctx)
		require.ErrorIs(t, err, ErrCorruptStatus)
	})
}
