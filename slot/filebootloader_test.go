package slot

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// simulatedBootloader is a backend that can also play the boot loader.
type simulatedBootloader interface {
	Bootloader
	SimulateBoot(ctx context.Context) (string, error)
}

// runBootScript drives bl through a script, one step per line:
//
//	active NAME [N]          Mark(NAME, MarkActive, N)
//	good NAME | bad NAME     Mark(NAME, MarkGood|MarkBad)
//	boot NAME|-              SimulateBoot must boot NAME ("-" for no slot)
//	primary NAME|-           Primary must be NAME ("-" for "")
//	state NAME good|bad|N    State must be good, bad or on trial with N
func runBootScript(t *testing.T, bl simulatedBootloader, script string) {
	t.Helper()
	ctx := context.Background()

	for i, line := range strings.Split(strings.TrimSpace(script), "\n") {
		f := strings.Fields(line)
		msg := "step " + strconv.Itoa(i+1) + ": " + line
		switch f[0] {
		case "active":
			n := 0
			if len(f) > 2 {
				n, _ = strconv.Atoi(f[2])
			}
			require.NoError(t, bl.Mark(ctx, f[1], Mark{Kind: MarkActive, Attempts: n}), msg)
		case "good":
			require.NoError(t, bl.Mark(ctx, f[1], Mark{Kind: MarkGood}), msg)
		case "bad":
			require.NoError(t, bl.Mark(ctx, f[1], Mark{Kind: MarkBad}), msg)
		case "boot":
			got, err := bl.SimulateBoot(ctx)
			require.NoError(t, err, msg)
			require.Equal(t, strings.TrimPrefix(f[1], "-"), got, msg)
		case "primary":
			got, err := bl.Primary(ctx)
			require.NoError(t, err, msg)
			require.Equal(t, strings.TrimPrefix(f[1], "-"), got, msg)
		case "state":
			got, err := bl.State(ctx, f[1])
			require.NoError(t, err, msg)
			require.Equal(t, wantBootState(t, f[2]), got, msg)
		default:
			t.Fatalf("%s: unknown step", msg)
		}
	}
}

// wantBootState converts "good", "bad" or a number of tries to a BootState
// as the counting backends report it.
func wantBootState(t *testing.T, s string) BootState {
	switch s {
	case "good":
		return BootState{Good: true, AttemptsLeft: -1}
	case "bad":
		return BootState{Bad: true}
	}
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return BootState{AttemptsLeft: n}
}

// bootScripts are the boot-once scenarios every simulated backend with
// boot counting must pass, on slots A (booted, good) and B (good).
var bootScripts = []struct {
	name   string
	script string
}{
	{"a fresh device boots its first slot", `
		primary A
		state A good
		state B good
		boot A
		boot A`},
	{"an active slot is tried once and falls back", `
		active B
		primary B
		state B 1
		boot B
		state B bad
		primary A
		boot A
		boot A`},
	{"a slot marked good after its trial keeps booting", `
		active B
		boot B
		good B
		state B good
		primary B
		boot B
		boot B`},
	{"a slot gets as many tries as marked", `
		active B 3
		boot B
		state B 2
		boot B
		boot B
		state B bad
		boot A`},
	{"marking the running slot bad falls back at once", `
		active B 2
		boot B
		bad B
		state B bad
		primary A
		boot A`},
	{"rolling forward again after a failed update", `
		active B
		boot B
		boot A
		active B
		boot B
		good B
		active A
		boot A
		good A
		boot A`},
}

func TestFileBootloader_Scripts(t *testing.T) {
	for _, tc := range bootScripts {
		t.Run(tc.name, func(t *testing.T) {
			bl, err := NewFileBootloader(filepath.Join(t.TempDir(), "boot.json"), "A", "B")
			require.NoError(t, err)
			runBootScript(t, bl, tc.script)
		})
	}
}

func TestFileBootloader_Booted(t *testing.T) {
	ctx := context.Background()
	bl, err := NewFileBootloader(filepath.Join(t.TempDir(), "boot.json"), "A", "B")
	require.NoError(t, err)

	got, err := bl.Booted(ctx)
	require.NoError(t, err)
	assert.Equal(t, "A", got)

	require.NoError(t, bl.Mark(ctx, "B", Mark{Kind: MarkActive}))
	require.NoError(t, bl.Reboot(ctx))
	got, err = bl.Booted(ctx)
	require.NoError(t, err)
	assert.Equal(t, "B", got)
}

func TestFileBootloader_NoBootableSlot(t *testing.T) {
	ctx := context.Background()
	bl, err := NewFileBootloader(filepath.Join(t.TempDir(), "boot.json"), "A", "B")
	require.NoError(t, err)
	require.NoError(t, bl.Mark(ctx, "A", Mark{Kind: MarkBad}))
	require.NoError(t, bl.Mark(ctx, "B", Mark{Kind: MarkBad}))

	primary, err := bl.Primary(ctx)
	require.NoError(t, err)
	assert.Empty(t, primary)

	_, err = bl.SimulateBoot(ctx)
	require.ErrorIs(t, err, ErrNoBootableSlot)
	_, err = bl.Booted(ctx)
	require.ErrorIs(t, err, ErrNoBootableSlot)
}

func TestFileBootloader_KeepsExistingFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "boot.json")
	bl, err := NewFileBootloader(path, "A", "B")
	require.NoError(t, err)
	require.NoError(t, bl.Mark(ctx, "B", Mark{Kind: MarkActive, Attempts: 2}))

	again, err := NewFileBootloader(path, "X", "Y")
	require.NoError(t, err)
	st, err := again.State(ctx, "B")
	require.NoError(t, err)
	assert.Equal(t, BootState{AttemptsLeft: 2}, st)
	assert.Equal(t, path, again.Path())
}

func TestFileBootloader_Errors(t *testing.T) {
	ctx := context.Background()
	valid := `{"version":1,"order":["A","B"],` +
		`"slots":{"A":{"good":true},"B":{"good":true}},"booted":"A"}`

	tests := []struct {
		name    string
		content string
		wantErr error
	}{
		{"garbage is corrupt", "not json", ErrCorruptEnv},
		{"an empty file is corrupt", "", ErrCorruptEnv},
		{"another version is corrupt", strings.Replace(valid, `"version":1`, `"version":2`, 1),
			ErrCorruptEnv},
		{"an unknown field is corrupt", strings.Replace(valid, `"booted"`, `"extra":1,"booted"`, 1),
			ErrCorruptEnv},
		{"a slot missing from the order is corrupt", strings.Replace(valid, `["A","B"]`, `["A"]`, 1),
			ErrCorruptEnv},
		{"a duplicate in the order is corrupt", strings.Replace(valid, `["A","B"]`, `["A","A"]`, 1),
			ErrCorruptEnv},
		{"a slot both good and bad is corrupt",
			strings.Replace(valid, `"B":{"good":true}`, `"B":{"good":true,"bad":true}`, 1), ErrCorruptEnv},
		{"negative tries are corrupt",
			strings.Replace(valid, `"B":{"good":true}`, `"B":{"tries_left":-1}`, 1), ErrCorruptEnv},
		{"an unknown booted slot is corrupt", strings.Replace(valid, `"booted":"A"`, `"booted":"C"`, 1),
			ErrCorruptEnv},
		{"a file over the cap is corrupt", valid + strings.Repeat(" ", MaxFileBootloaderSize),
			ErrCorruptEnv},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "boot.json")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o644))

			_, err := NewFileBootloader(path, "A", "B")
			require.ErrorIs(t, err, tc.wantErr)
			assert.Contains(t, err.Error(), path)
		})
	}

	t.Run("an unknown bootname is refused", func(t *testing.T) {
		bl, err := NewFileBootloader(filepath.Join(t.TempDir(), "boot.json"), "A", "B")
		require.NoError(t, err)
		_, err = bl.State(ctx, "C")
		require.ErrorIs(t, err, ErrUnknownBootname)
		require.ErrorIs(t, bl.Mark(ctx, "C", Mark{Kind: MarkGood}), ErrUnknownBootname)
		require.Error(t, bl.Mark(ctx, "A", Mark{Kind: MarkKind(42)}))
	})

	t.Run("creating without bootnames fails", func(t *testing.T) {
		_, err := NewFileBootloader(filepath.Join(t.TempDir(), "boot.json"))
		require.Error(t, err)
	})

	t.Run("creating with a bad bootname fails", func(t *testing.T) {
		_, err := NewFileBootloader(filepath.Join(t.TempDir(), "boot.json"), "A", "B B")
		require.ErrorIs(t, err, ErrCorruptEnv)
	})

	t.Run("a cancelled context changes nothing", func(t *testing.T) {
		bl, err := NewFileBootloader(filepath.Join(t.TempDir(), "boot.json"), "A", "B")
		require.NoError(t, err)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, bl.Mark(cctx, "B", Mark{Kind: MarkActive}), context.Canceled)
		_, err = bl.SimulateBoot(cctx)
		require.ErrorIs(t, err, context.Canceled)
	})
}

func BenchmarkFileBootloader_MarkAndBoot(b *testing.B) {
	ctx := context.Background()
	bl, err := NewFileBootloader(filepath.Join(b.TempDir(), "boot.json"), "A", "B")
	require.NoError(b, err)
	for b.Loop() {
		_ = bl.Mark(ctx, "B", Mark{Kind: MarkActive})
		_, _ = bl.SimulateBoot(ctx)
	}
}
