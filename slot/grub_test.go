package slot

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newTestGRUB returns a GRUB backend for slots A and B on a fresh grubenv
// holding vars.
func newTestGRUB(t *testing.T, vars grubVars) *GRUB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "grubenv")
	env := NewGrubEnv()
	for _, kv := range vars {
		require.NoError(t, env.Set(kv[0], kv[1]))
	}
	require.NoError(t, WriteGrubEnv(path, env))
	g, err := NewGRUB(path, []string{"A", "B"})
	require.NoError(t, err)
	return g
}

// grubValue reads one variable from g's file.
func grubValue(t *testing.T, g *GRUB, name string) string {
	t.Helper()
	env, err := ReadGrubEnv(g.Path())
	require.NoError(t, err)
	v, _ := env.Get(name)
	return v
}

func TestNewGRUB(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		bootnames []string
		wantPath  string
		wantErr   string
	}{
		{
			name:      "an empty path means the default",
			bootnames: []string{"A"}, wantPath: DefaultGrubEnvPath,
		},
		{
			name: "a path is kept",
			path: "/x/grubenv", bootnames: []string{"A", "b_2"}, wantPath: "/x/grubenv",
		},
		{name: "no bootnames are refused", path: "/x", wantErr: "no bootnames"},
		{
			name:      "a bootname with '-' is refused",
			bootnames: []string{"rootfs-a"}, wantErr: `"rootfs-a"`,
		},
		{
			name:      "a bootname starting with a digit is refused",
			bootnames: []string{"1"}, wantErr: `"1"`,
		},
		{
			name:      "a bootname given twice is refused",
			bootnames: []string{"A", "A"}, wantErr: "twice",
		},
		{
			name:      "a bootname too long for the block is refused",
			bootnames: []string{strings.Repeat("a", 33)}, wantErr: "1 to 32",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewGRUB(tt.path, tt.bootnames)
			if tt.wantErr != "" {
				assert.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantPath, g.Path())
		})
	}
}

func TestGRUB_StateAndPrimary(t *testing.T) {
	tests := []struct {
		name        string
		vars        grubVars
		wantA       BootState
		wantB       BootState
		wantPrimary string
	}{
		{
			name: "two confirmed slots: the first in ORDER is primary",
			vars: grubVars{
				{"ORDER", "B A"}, {"A_OK", "1"}, {"A_TRY", "0"}, {"B_OK", "1"}, {"B_TRY", "0"},
			},
			wantA:       BootState{Good: true, AttemptsLeft: -1},
			wantB:       BootState{Good: true, AttemptsLeft: -1},
			wantPrimary: "B",
		},
		{
			name: "a slot on trial has one try",
			vars: grubVars{
				{"ORDER", "B A"}, {"A_OK", "1"}, {"B_OK", "1"}, {"ROTA_B_TRIAL", "1"},
			},
			wantA:       BootState{Good: true, AttemptsLeft: -1},
			wantB:       BootState{AttemptsLeft: 1},
			wantPrimary: "B",
		},
		{
			name:        "a tried slot is skipped and bad",
			vars:        grubVars{{"ORDER", "B A"}, {"A_OK", "1"}, {"B_OK", "1"}, {"B_TRY", "1"}},
			wantA:       BootState{Good: true, AttemptsLeft: -1},
			wantB:       BootState{Bad: true},
			wantPrimary: "A",
		},
		{
			name:        "a slot not OK is bad",
			vars:        grubVars{{"ORDER", "A B"}, {"A_OK", "0"}, {"B_OK", "1"}},
			wantA:       BootState{Bad: true},
			wantB:       BootState{Good: true, AttemptsLeft: -1},
			wantPrimary: "B",
		},
		{
			name:        "a slot missing from ORDER is bad",
			vars:        grubVars{{"ORDER", "A"}, {"A_OK", "1"}, {"B_OK", "1"}},
			wantA:       BootState{Good: true, AttemptsLeft: -1},
			wantB:       BootState{Bad: true},
			wantPrimary: "A",
		},
		{
			name: "when every OK slot was tried the fallback picks the first",
			vars: grubVars{
				{"ORDER", "B A"}, {"A_OK", "1"}, {"A_TRY", "1"}, {"B_OK", "1"}, {"B_TRY", "1"},
			},
			wantA:       BootState{Bad: true},
			wantB:       BootState{Bad: true},
			wantPrimary: "B",
		},
		{
			name:  "no slot is bootable in an empty block",
			wantA: BootState{Bad: true}, wantB: BootState{Bad: true},
		},
		{
			name:  "OK must be exactly 1, as the script compares strings",
			vars:  grubVars{{"ORDER", "A B"}, {"A_OK", "01"}, {"B_OK", "yes"}},
			wantA: BootState{Bad: true}, wantB: BootState{Bad: true},
		},
		{
			name:        "names the script cannot use are skipped",
			vars:        grubVars{{"ORDER", "x;y A"}, {"x;y_OK", "1"}, {"A_OK", "1"}},
			wantA:       BootState{Good: true, AttemptsLeft: -1},
			wantB:       BootState{Bad: true},
			wantPrimary: "A",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			g := newTestGRUB(t, tt.vars)
			before, err := os.ReadFile(g.Path())
			require.NoError(t, err)

			primary, err := g.Primary(ctx)
			require.NoError(t, err)
			assert.Equal(t, tt.wantPrimary, primary)
			for name, want := range map[string]BootState{"A": tt.wantA, "B": tt.wantB} {
				got, err := g.State(ctx, name)
				require.NoError(t, err)
				assert.Equal(t, want, got, name)
			}

			after, err := os.ReadFile(g.Path())
			require.NoError(t, err)
			assert.Equal(t, before, after, "reading never writes")
		})
	}
}

func TestGRUB_Mark(t *testing.T) {
	start := grubVars{
		{"ORDER", "A B"}, {"A_OK", "1"}, {"A_TRY", "0"}, {"B_OK", "1"}, {"B_TRY", "1"},
		{"saved_entry", "x"},
	}
	tests := []struct {
		name     string
		vars     grubVars
		bootname string
		mark     Mark
		want     grubVars
		state    BootState
	}{
		{
			name: "active moves the slot first and puts it on trial", vars: start,
			bootname: "B", mark: Mark{Kind: MarkActive, Attempts: 3},
			want: grubVars{
				{"ORDER", "B A"}, {"A_OK", "1"}, {"A_TRY", "0"}, {"B_OK", "1"}, {"B_TRY", "0"},
				{"saved_entry", "x"}, {"ROTA_B_TRIAL", "1"},
			},
			state: BootState{AttemptsLeft: 1},
		},
		{
			name:     "good confirms the slot and keeps ORDER",
			vars:     append(slicesClone(start), [2]string{"ROTA_B_TRIAL", "1"}),
			bootname: "B", mark: Mark{Kind: MarkGood},
			want: grubVars{
				{"ORDER", "A B"}, {"A_OK", "1"}, {"A_TRY", "0"}, {"B_OK", "1"}, {"B_TRY", "0"},
				{"saved_entry", "x"},
			},
			state: BootState{Good: true, AttemptsLeft: -1},
		},
		{
			name: "bad disables the slot and keeps ORDER", vars: start,
			bootname: "A", mark: Mark{Kind: MarkBad},
			want: grubVars{
				{"ORDER", "A B"}, {"A_OK", "0"}, {"A_TRY", "0"}, {"B_OK", "1"}, {"B_TRY", "1"},
				{"saved_entry", "x"},
			},
			state: BootState{Bad: true},
		},
		{
			name: "good appends a slot missing from ORDER", vars: grubVars{{"ORDER", "A"}},
			bootname: "B", mark: Mark{Kind: MarkGood},
			want:  grubVars{{"ORDER", "A B"}, {"B_OK", "1"}, {"B_TRY", "0"}},
			state: BootState{Good: true, AttemptsLeft: -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			g := newTestGRUB(t, tt.vars)
			require.NoError(t, g.Mark(ctx, tt.bootname, tt.mark))

			env, err := ReadGrubEnv(g.Path())
			require.NoError(t, err)
			assert.Equal(t, tt.want, grubEnvVars(t, env))
			state, err := g.State(ctx, tt.bootname)
			require.NoError(t, err)
			assert.Equal(t, tt.state, state)
		})
	}
}

func TestGRUB_Errors(t *testing.T) {
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()

	t.Run("an unknown bootname is refused", func(t *testing.T) {
		g := newTestGRUB(t, nil)
		_, err := g.State(ctx, "C")
		assert.ErrorIs(t, err, ErrUnknownBootname)
		assert.ErrorIs(t, g.Mark(ctx, "C", Mark{Kind: MarkGood}), ErrUnknownBootname)
	})
	t.Run("an unknown mark kind is refused", func(t *testing.T) {
		g := newTestGRUB(t, nil)
		assert.ErrorContains(t, g.Mark(ctx, "A", Mark{}), "unknown mark kind 0")
	})
	t.Run("a canceled context is refused", func(t *testing.T) {
		g := newTestGRUB(t, nil)
		assert.ErrorIs(t, g.Mark(canceled, "A", Mark{Kind: MarkGood}), context.Canceled)
		_, err := g.Primary(canceled)
		assert.ErrorIs(t, err, context.Canceled)
	})
	t.Run("a corrupt block is reported and never replaced", func(t *testing.T) {
		g := newTestGRUB(t, nil)
		bad := grubBlock("# GRUB Environment Block\nnoeq\n")
		require.NoError(t, os.WriteFile(g.Path(), bad, 0o644))

		err := g.Mark(ctx, "A", Mark{Kind: MarkGood})
		require.ErrorIs(t, err, ErrCorruptEnv)
		assert.ErrorContains(t, err, g.Path())
		_, err = g.SimulateBoot(ctx)
		assert.ErrorIs(t, err, ErrCorruptEnv)
		after, err := os.ReadFile(g.Path())
		require.NoError(t, err)
		assert.Equal(t, bad, after)
	})
	t.Run("mark refuses a missing block and creates nothing", func(t *testing.T) {
		g, err := NewGRUB(filepath.Join(t.TempDir(), "grubenv"), []string{"A", "B"})
		require.NoError(t, err)
		_, err = g.Primary(ctx)
		require.ErrorIs(t, err, os.ErrNotExist)

		err = g.Mark(ctx, "A", Mark{Kind: MarkGood})
		require.ErrorIs(t, err, os.ErrNotExist)
		require.ErrorContains(t, err, "grub-editenv")
		_, err = os.Stat(g.Path())
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("a full block refuses the mark and stays as it was", func(t *testing.T) {
		g := newTestGRUB(t, grubVars{{"filler", strings.Repeat("x", 900)}})
		before, err := os.ReadFile(g.Path())
		require.NoError(t, err)
		err = g.Mark(ctx, "A", Mark{Kind: MarkActive})
		require.ErrorIs(t, err, ErrEnvFull)
		after, err := os.ReadFile(g.Path())
		require.NoError(t, err)
		assert.Equal(t, before, after)
	})
}

func TestGRUB_SimulateBoot(t *testing.T) {
	type step struct {
		mark     string // "A good", "B active", "B bad"; empty to boot
		wantBoot string // expected slot when booting; "" for no bootable slot
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "an update that is confirmed stays",
			steps: []step{
				{mark: "A good"}, {mark: "B bad"}, {wantBoot: "A"}, {mark: "A good"},
				{mark: "B active"}, {wantBoot: "B"}, {mark: "B good"}, {wantBoot: "B"},
				{mark: "B good"}, {wantBoot: "B"},
			},
		},
		{
			name: "an update that is never confirmed falls back once",
			steps: []step{
				{mark: "A good"}, {mark: "B active"}, {wantBoot: "B"}, {wantBoot: "A"},
				{mark: "A good"}, {wantBoot: "A"},
			},
		},
		{
			name: "unconfirmed boots of the only good slot never brick",
			steps: []step{
				{mark: "A good"}, {mark: "B bad"},
				{wantBoot: "A"}, {wantBoot: "A"}, {wantBoot: "A"},
			},
		},
		{
			name:  "every slot bad boots nothing",
			steps: []step{{mark: "A bad"}, {mark: "B bad"}, {wantBoot: ""}, {wantBoot: ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			g := newTestGRUB(t, nil)
			for i, s := range tt.steps {
				if s.mark != "" {
					name, kind, _ := strings.Cut(s.mark, " ")
					require.NoError(t, g.Mark(ctx, name, Mark{Kind: markKinds[kind]}), "step %d", i)
					continue
				}
				primary, err := g.Primary(ctx)
				require.NoError(t, err)
				got, err := g.SimulateBoot(ctx)
				if s.wantBoot == "" {
					require.ErrorIs(t, err, ErrNoBootableSlot, "step %d", i)
					continue
				}
				require.NoError(t, err, "step %d", i)
				assert.Equal(t, s.wantBoot, got, "step %d", i)
				assert.Equal(t, primary, got, "step %d: Primary predicts the boot", i)
				assert.Equal(t, "1", grubValue(t, g, got+"_TRY"), "step %d", i)
			}
		})
	}
}

// markKinds maps the words used in test steps to mark kinds.
var markKinds = map[string]MarkKind{"good": MarkGood, "bad": MarkBad, "active": MarkActive}

func TestGRUB_InteropGrubEditenv(t *testing.T) {
	requireTool(t, "grub-editenv")
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "grubenv")
	_, err := grubEditenv(t, path, "create")
	require.NoError(t, err)
	_, err = grubEditenv(t, path, "set", "saved_entry=0", "ORDER=A B", "A_OK=1", "A_TRY=0")
	require.NoError(t, err)

	g, err := NewGRUB(path, []string{"A", "B"})
	require.NoError(t, err)
	require.NoError(t, g.Mark(ctx, "B", Mark{Kind: MarkActive}))
	_, err = g.SimulateBoot(ctx)
	require.NoError(t, err)

	out, err := grubEditenv(t, path, "list")
	require.NoError(t, err)
	assert.Equal(t, "saved_entry=0\nORDER=B A\nA_OK=1\nA_TRY=0\n"+
		"B_OK=1\nB_TRY=1\nROTA_B_TRIAL=1\n", out)

	// What an admin sets by hand is read back the same way.
	_, err = grubEditenv(t, path, "set", "B_TRY=0", "A_OK=0")
	require.NoError(t, err)
	primary, err := g.Primary(ctx)
	require.NoError(t, err)
	assert.Equal(t, "B", primary)
	state, err := g.State(ctx, "A")
	require.NoError(t, err)
	assert.Equal(t, BootState{Bad: true}, state)
}

func TestGRUB_ScriptSyntax(t *testing.T) {
	check := requireTool(t, "grub-script-check")
	script := filepath.Join("..", "docs", "bootloaders", "grub.cfg")
	out, err := exec.Command(check, script).CombinedOutput()
	require.NoError(t, err, string(out))
}
