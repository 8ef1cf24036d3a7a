package slot

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newTestUBoot returns a UBoot backend for slots A and B on a fresh
// environment in the given fixture layout holding vars.
func newTestUBoot(t *testing.T, layout string, vars map[string]string) (*UBoot, ubootFixture) {
	t.Helper()
	f := newUBootFixture(t, layout)
	env := NewUBootEnv()
	for n, v := range vars {
		require.NoError(t, env.Set(n, v))
	}
	require.NoError(t, WriteUBootEnv(f.cfg, env))
	u, err := NewUBoot(UBootOptions{Env: f.cfg, Bootnames: []string{"A", "B"}})
	require.NoError(t, err)
	return u, f
}

// ubootValue reads one variable of u's environment.
func ubootValue(t *testing.T, u *UBoot, name string) string {
	t.Helper()
	env, err := ReadUBootEnv(u.EnvConfig())
	require.NoError(t, err)
	v, _ := env.Get(name)
	return v
}

func TestNewUBoot(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "fw_env.config")
	require.NoError(t, os.WriteFile(cfgPath, []byte("/dev/mmcblk0 0x3f8000 0x4000\n"), 0o644))
	explicit := UBootEnvConfig{Copies: []UBootEnvLocation{{Device: "/x", Size: 0x2000}}}

	tests := []struct {
		name    string
		opts    UBootOptions
		wantEnv UBootEnvConfig
		wantErr string
	}{
		{
			name: "the environment comes from fw_env.config",
			opts: UBootOptions{FWEnvConfig: cfgPath, Bootnames: []string{"A", "B"}},
			wantEnv: UBootEnvConfig{Copies: []UBootEnvLocation{
				{Device: "/dev/mmcblk0", Offset: 0x3f8000, Size: 0x4000},
			}},
		},
		{
			name:    "an explicit environment wins over the file",
			opts:    UBootOptions{Env: explicit, FWEnvConfig: "/missing", Bootnames: []string{"A"}},
			wantEnv: explicit,
		},
		{
			name: "a missing config file is an error",
			opts: UBootOptions{
				FWEnvConfig: filepath.Join(dir, "missing"), Bootnames: []string{"A"},
			},
			wantErr: "missing",
		},
		{
			name:    "attempts above 9 are refused",
			opts:    UBootOptions{Env: explicit, Bootnames: []string{"A"}, Attempts: 10},
			wantErr: "attempts 10 outside 1..9",
		},
		{
			name:    "a bad bootname is refused",
			opts:    UBootOptions{Env: explicit, Bootnames: []string{"a b"}},
			wantErr: `bootname "a b"`,
		},
		{
			name: "an invalid explicit environment is refused",
			opts: UBootOptions{
				Env:       UBootEnvConfig{Copies: []UBootEnvLocation{{Device: "/x", Size: 1}}},
				Bootnames: []string{"A"},
			},
			wantErr: "outside",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := NewUBoot(tt.opts)
			if tt.wantErr != "" {
				assert.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantEnv, u.EnvConfig())
		})
	}
}

func TestUBoot_StateAndPrimary(t *testing.T) {
	tests := []struct {
		name        string
		vars        map[string]string
		wantA       BootState
		wantB       BootState
		wantPrimary string
	}{
		{
			name: "two good slots: the first in BOOT_ORDER is primary",
			vars: map[string]string{
				"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "1",
			},
			wantA:       BootState{Good: true, AttemptsLeft: -1},
			wantB:       BootState{Good: true, AttemptsLeft: -1},
			wantPrimary: "B",
		},
		{
			name: "a slot on trial reports its tries",
			vars: map[string]string{
				"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2", "ROTA_B_TRIAL": "1",
			},
			wantA:       BootState{Good: true, AttemptsLeft: -1},
			wantB:       BootState{AttemptsLeft: 2},
			wantPrimary: "B",
		},
		{
			name: "a slot without tries is skipped and bad",
			vars: map[string]string{
				"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0",
			},
			wantA:       BootState{Good: true, AttemptsLeft: -1},
			wantB:       BootState{Bad: true},
			wantPrimary: "A",
		},
		{
			name: "tries that are not a decimal number count as none",
			vars: map[string]string{
				"BOOT_ORDER": "A B", "BOOT_A_LEFT": "x", "BOOT_B_LEFT": "-1",
			},
			wantA: BootState{Bad: true}, wantB: BootState{Bad: true},
		},
		{
			name: "a slot missing from BOOT_ORDER is bad",
			vars: map[string]string{
				"BOOT_ORDER": "A", "BOOT_A_LEFT": "1", "BOOT_B_LEFT": "3",
			},
			wantA:       BootState{Good: true, AttemptsLeft: -1},
			wantB:       BootState{Bad: true},
			wantPrimary: "A",
		},
		{
			name:  "no slot is bootable in an empty environment",
			wantA: BootState{Bad: true}, wantB: BootState{Bad: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			u, f := newTestUBoot(t, "two files", tt.vars)
			before := [][]byte{f.copyBytes(t, 0), f.copyBytes(t, 1)}

			primary, err := u.Primary(ctx)
			require.NoError(t, err)
			assert.Equal(t, tt.wantPrimary, primary)
			for name, want := range map[string]BootState{"A": tt.wantA, "B": tt.wantB} {
				got, err := u.State(ctx, name)
				require.NoError(t, err)
				assert.Equal(t, want, got, name)
			}
			after := [][]byte{f.copyBytes(t, 0), f.copyBytes(t, 1)}
			assert.Equal(t, before, after, "reading never writes")
		})
	}
}

func TestUBoot_Mark(t *testing.T) {
	start := map[string]string{
		"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0", "bootcmd": "run x",
	}
	tests := []struct {
		name     string
		bootname string
		mark     Mark
		want     map[string]string
		state    BootState
	}{
		{
			name: "active moves the slot first with the configured tries", bootname: "B",
			mark: Mark{Kind: MarkActive},
			want: map[string]string{
				"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "bootcmd": "run x",
				"ROTA_B_TRIAL": "1",
			},
			state: BootState{AttemptsLeft: 3},
		},
		{
			name: "active with attempts gives that many tries", bootname: "B",
			mark: Mark{Kind: MarkActive, Attempts: 1},
			want: map[string]string{
				"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "1", "bootcmd": "run x",
				"ROTA_B_TRIAL": "1",
			},
			state: BootState{AttemptsLeft: 1},
		},
		{
			name: "good restores the configured tries and keeps the order", bootname: "B",
			mark: Mark{Kind: MarkGood},
			want: map[string]string{
				"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "bootcmd": "run x",
			},
			state: BootState{Good: true, AttemptsLeft: -1},
		},
		{
			name: "good with attempts gives that many tries back", bootname: "A",
			mark: Mark{Kind: MarkGood, Attempts: 5},
			want: map[string]string{
				"BOOT_ORDER": "A B", "BOOT_A_LEFT": "5", "BOOT_B_LEFT": "0", "bootcmd": "run x",
			},
			state: BootState{Good: true, AttemptsLeft: -1},
		},
		{
			name: "bad takes every try away", bootname: "A", mark: Mark{Kind: MarkBad},
			want: map[string]string{
				"BOOT_ORDER": "A B", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "0", "bootcmd": "run x",
			},
			state: BootState{Bad: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			u, _ := newTestUBoot(t, "two files", start)
			require.NoError(t, u.Mark(ctx, tt.bootname, tt.mark))

			env, err := ReadUBootEnv(u.EnvConfig())
			require.NoError(t, err)
			assert.Equal(t, tt.want, ubootVars(env))
			state, err := u.State(ctx, tt.bootname)
			require.NoError(t, err)
			assert.Equal(t, tt.state, state)
		})
	}
}

func TestUBoot_Errors(t *testing.T) {
	ctx := context.Background()
	t.Run("an unknown bootname is refused", func(t *testing.T) {
		u, _ := newTestUBoot(t, "single", nil)
		_, err := u.State(ctx, "C")
		assert.ErrorIs(t, err, ErrUnknownBootname)
		assert.ErrorIs(t, u.Mark(ctx, "C", Mark{Kind: MarkBad}), ErrUnknownBootname)
	})
	t.Run("attempts above 9 are refused", func(t *testing.T) {
		u, _ := newTestUBoot(t, "single", nil)
		err := u.Mark(ctx, "A", Mark{Kind: MarkActive, Attempts: 10})
		assert.ErrorContains(t, err, "attempts 10 outside 0..9")
	})
	t.Run("an unknown mark kind is refused", func(t *testing.T) {
		u, _ := newTestUBoot(t, "single", nil)
		assert.ErrorContains(t, u.Mark(ctx, "A", Mark{Kind: 42}), "unknown mark kind 42")
	})
	t.Run("a corrupt environment is reported and never replaced", func(t *testing.T) {
		for _, layout := range ubootLayouts {
			u, f := newTestUBoot(t, layout, map[string]string{"a": "1"})
			for i := range f.cfg.Copies {
				img := f.copyBytes(t, i)
				img[0] ^= 1
				f.putCopy(t, i, img)
			}
			before := f.copyBytes(t, 0)

			err := u.Mark(ctx, "A", Mark{Kind: MarkGood})
			require.ErrorIs(t, err, ErrCorruptEnv, layout)
			assert.ErrorContains(t, err, f.cfg.Copies[0].Device, layout)
			_, err = u.SimulateBoot(ctx)
			assert.ErrorIs(t, err, ErrCorruptEnv, layout)
			assert.Equal(t, before, f.copyBytes(t, 0), layout)
		}
	})
	t.Run("a full environment refuses the mark", func(t *testing.T) {
		u, f := newTestUBoot(t, "two files", map[string]string{"filler": strings.Repeat("x", 980)})
		before := [][]byte{f.copyBytes(t, 0), f.copyBytes(t, 1)}
		err := u.Mark(ctx, "A", Mark{Kind: MarkActive})
		require.ErrorIs(t, err, ErrEnvFull)
		assert.Equal(t, before, [][]byte{f.copyBytes(t, 0), f.copyBytes(t, 1)})
	})
	t.Run("a missing device is an error", func(t *testing.T) {
		cfg := UBootEnvConfig{Copies: []UBootEnvLocation{
			{Device: filepath.Join(t.TempDir(), "none"), Size: ubootTestSize},
		}}
		u, err := NewUBoot(UBootOptions{Env: cfg, Bootnames: []string{"A"}})
		require.NoError(t, err)
		_, err = u.Primary(ctx)
		assert.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("a character device is refused", func(t *testing.T) {
		cfg := UBootEnvConfig{Copies: []UBootEnvLocation{{Device: os.DevNull, Size: ubootTestSize}}}
		_, err := ReadUBootEnv(cfg)
		assert.ErrorContains(t, err, "character devices")
	})
}

func TestUBoot_SimulateBoot(t *testing.T) {
	type step struct {
		mark     string // "A good", "B active", "B bad"; empty to boot
		wantBoot string // expected slot when booting; "" for none
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "an update that is confirmed stays",
			steps: []step{
				{mark: "A good"}, {mark: "B bad"}, {wantBoot: "A"}, {mark: "B active"},
				{wantBoot: "B"}, {mark: "B good"}, {wantBoot: "B"}, {wantBoot: "B"},
			},
		},
		{
			name: "an update that is never confirmed falls back after its tries",
			steps: []step{
				{mark: "A good"}, {mark: "B active"}, {wantBoot: "B"}, {wantBoot: "B"},
				{wantBoot: "B"}, {wantBoot: "A"},
			},
		},
		{
			name: "a good slot never confirmed runs out of tries",
			steps: []step{
				{mark: "A good"}, {mark: "B bad"}, {wantBoot: "A"}, {wantBoot: "A"},
				{wantBoot: "A"}, {wantBoot: ""},
			},
		},
	}
	for _, layout := range ubootLayouts {
		for _, tt := range tests {
			t.Run(layout+"/"+tt.name, func(t *testing.T) {
				ctx := context.Background()
				u, _ := newTestUBoot(t, layout, nil)
				for i, s := range tt.steps {
					if s.mark != "" {
						name, kind, _ := strings.Cut(s.mark, " ")
						mark := Mark{Kind: markKinds[kind]}
						require.NoError(t, u.Mark(ctx, name, mark), "step %d", i)
						continue
					}
					primary, err := u.Primary(ctx)
					require.NoError(t, err)
					before := ubootValue(t, u, "BOOT_"+primary+"_LEFT")
					got, err := u.SimulateBoot(ctx)
					if s.wantBoot == "" {
						require.ErrorIs(t, err, ErrNoBootableSlot, "step %d", i)
						assert.Empty(t, got)
						assert.ErrorContains(t, err, "no slot in BOOT_ORDER")
						continue
					}
					require.NoError(t, err, "step %d", i)
					assert.Equal(t, s.wantBoot, got, "step %d", i)
					assert.Equal(t, primary, got, "step %d: Primary predicts the boot", i)
					assert.NotEqual(t, before, ubootValue(t, u, "BOOT_"+got+"_LEFT"), "step %d", i)
				}
			})
		}
	}
}

func TestUBoot_InteropFwTools(t *testing.T) {
	requireTool(t, "fw_setenv")
	ctx := context.Background()
	for _, layout := range ubootLayouts {
		t.Run(layout, func(t *testing.T) {
			u, f := newTestUBoot(t, layout, map[string]string{"bootcmd": "run distro_bootcmd"})
			_, err := f.fwTool(t, "fw_setenv", "BOOT_ORDER", "A B")
			require.NoError(t, err)
			_, err = f.fwTool(t, "fw_setenv", "BOOT_A_LEFT", "3")
			require.NoError(t, err)

			require.NoError(t, u.Mark(ctx, "B", Mark{Kind: MarkActive, Attempts: 2}))
			got, err := u.SimulateBoot(ctx)
			require.NoError(t, err)
			require.Equal(t, "B", got)

			out, err := f.fwTool(t, "fw_printenv")
			require.NoError(t, err)
			assert.Equal(t, "BOOT_A_LEFT=3\nBOOT_B_LEFT=1\nBOOT_ORDER=B A\n"+
				"ROTA_B_TRIAL=1\nbootcmd=run distro_bootcmd\n", out)

			// An admin disabling B by hand is seen by the backend.
			_, err = f.fwTool(t, "fw_setenv", "BOOT_B_LEFT", "0")
			require.NoError(t, err)
			primary, err := u.Primary(ctx)
			require.NoError(t, err)
			assert.Equal(t, "A", primary)
		})
	}
}
