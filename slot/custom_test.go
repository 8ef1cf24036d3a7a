package slot

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeCustomScript implements the Custom protocol in sh, keeping one file
// per slot next to itself; it knows slots A and B.
const fakeCustomScript = `#!/bin/sh
dir=$(dirname "$0")
known() { [ -f "$dir/state.$1" ] || { echo "no slot $1" >&2; exit 3; }; }
case "$1" in
get-primary) cat "$dir/primary" ;;
get-state) known "$2"; cat "$dir/state.$2" ;;
set-primary) known "$2"; echo "$2" >"$dir/primary"; echo "trying $3" >"$dir/state.$2" ;;
set-state) known "$2"; echo "$3" >"$dir/state.$2" ;;
get-current) cat "$dir/current" ;;
*) echo "usage: $0 command" >&2; exit 64 ;;
esac
`

// newFakeCustom writes a program into a fresh directory; with no body it
// is fakeCustomScript with A booted and primary, A and B good.
func newFakeCustom(t *testing.T, body string) *Custom {
	t.Helper()
	dir := t.TempDir()
	if body == "" {
		body = fakeCustomScript
		for name, content := range map[string]string{
			"primary": "A\n", "current": "A\n", "state.A": "good\n", "state.B": "good\n",
		} {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
		}
	}
	prog := filepath.Join(dir, "bootctl.sh")
	require.NoError(t, os.WriteFile(prog, []byte(body), 0o755))
	return &Custom{Program: prog}
}

func TestCustom_Protocol(t *testing.T) {
	ctx := context.Background()
	c := newFakeCustom(t, "")

	primary, err := c.Primary(ctx)
	require.NoError(t, err)
	assert.Equal(t, "A", primary)

	require.NoError(t, c.Mark(ctx, "B", Mark{Kind: MarkActive, Attempts: 3}))
	primary, err = c.Primary(ctx)
	require.NoError(t, err)
	assert.Equal(t, "B", primary)
	st, err := c.State(ctx, "B")
	require.NoError(t, err)
	assert.Equal(t, BootState{AttemptsLeft: 3}, st)

	require.NoError(t, c.Mark(ctx, "B", Mark{Kind: MarkBad}))
	st, err = c.State(ctx, "B")
	require.NoError(t, err)
	assert.Equal(t, BootState{Bad: true}, st)

	require.NoError(t, c.Mark(ctx, "B", Mark{Kind: MarkGood}))
	st, err = c.State(ctx, "B")
	require.NoError(t, err)
	assert.Equal(t, BootState{Good: true, AttemptsLeft: -1}, st)

	booted, err := c.Booted(ctx)
	require.NoError(t, err)
	assert.Equal(t, "A", booted)

	require.NoError(t, c.Mark(ctx, "A", Mark{Kind: MarkActive}))
	st, err = c.State(ctx, "A")
	require.NoError(t, err)
	assert.Equal(t, BootState{AttemptsLeft: DefaultAttempts}, st, "zero attempts means the default")
}

func TestCustom_Output(t *testing.T) {
	tests := []struct {
		name    string
		print   string
		want    BootState
		wantErr error
	}{
		{"good", "good", BootState{Good: true, AttemptsLeft: -1}, nil},
		{"bad", "bad", BootState{Bad: true}, nil},
		{"trying with tries left", "trying 2", BootState{AttemptsLeft: 2}, nil},
		{"trying with no tries left is bad", "trying 0", BootState{Bad: true}, nil},
		{"surrounding white space is ignored", "  good \\n\\n",
			BootState{Good: true, AttemptsLeft: -1}, nil},
		{"an unknown word is a protocol error", "maybe", BootState{}, ErrCorruptEnv},
		{"a negative count is a protocol error", "trying -1", BootState{}, ErrCorruptEnv},
		{"a padded count is a protocol error", "trying 01", BootState{}, ErrCorruptEnv},
		{"two lines are a protocol error", "good\\nbad", BootState{}, ErrCorruptEnv},
		{"no output is a protocol error", "", BootState{}, ErrCorruptEnv},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeCustom(t, "#!/bin/sh\nprintf '"+tc.print+"'\n")
			got, err := c.State(context.Background(), "A")
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestCustom_Failures(t *testing.T) {
	ctx := context.Background()

	t.Run("an unknown bootname is reported by exit status 3", func(t *testing.T) {
		c := newFakeCustom(t, "")
		_, err := c.State(ctx, "C")
		require.ErrorIs(t, err, ErrUnknownBootname)
		assert.ErrorContains(t, err, "no slot C")
	})

	t.Run("a bootname that looks like an option is never passed", func(t *testing.T) {
		c := newFakeCustom(t, "#!/bin/sh\necho ran >&2\nexit 1\n")
		require.ErrorIs(t, c.Mark(ctx, "-rf", Mark{Kind: MarkGood}), ErrUnknownBootname)
		_, err := c.State(ctx, "A B")
		require.ErrorIs(t, err, ErrUnknownBootname)
	})

	t.Run("a failing program names command, status and stderr", func(t *testing.T) {
		c := newFakeCustom(t, "#!/bin/sh\necho 'flash locked' >&2\nexit 7\n")
		err := c.Mark(ctx, "A", Mark{Kind: MarkGood})
		require.Error(t, err)
		assert.ErrorContains(t, err, "set-state A good")
		assert.ErrorContains(t, err, "exit status 7")
		assert.ErrorContains(t, err, "flash locked")
		assert.NotErrorIs(t, err, ErrUnknownBootname)
	})

	t.Run("only the tail of a long stderr is quoted", func(t *testing.T) {
		c := newFakeCustom(t,
			"#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' x >&2\necho END >&2\nexit 1\n")
		_, err := c.Primary(ctx)
		require.Error(t, err)
		assert.ErrorContains(t, err, "END")
		assert.Less(t, len(err.Error()), 2*customStderrTail)
	})

	t.Run("a hanging program is killed at the timeout", func(t *testing.T) {
		c := newFakeCustom(t, "#!/bin/sh\nsleep 60\necho A\n")
		c.Timeout = 200 * time.Millisecond
		start := time.Now()
		_, err := c.Primary(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorContains(t, err, "killed after 200ms")
		assert.Less(t, time.Since(start), 5*time.Second)
	})

	t.Run("a cancelled context stops the program", func(t *testing.T) {
		c := newFakeCustom(t, "#!/bin/sh\nsleep 60\n")
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := c.Primary(cctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})

	t.Run("a program flooding its output fails", func(t *testing.T) {
		c := newFakeCustom(t, "#!/bin/sh\nhead -c 10000000 /dev/zero | tr '\\0' A\n")
		_, err := c.Primary(ctx)
		require.ErrorContains(t, err, "output exceeds")
	})

	t.Run("a program flooding forever is killed at the timeout", func(t *testing.T) {
		c := newFakeCustom(t, "#!/bin/sh\nyes A\n")
		c.Timeout = 300 * time.Millisecond
		_, err := c.Primary(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})

	t.Run("a missing program fails clearly", func(t *testing.T) {
		c := &Custom{Program: filepath.Join(t.TempDir(), "missing")}
		_, err := c.Primary(ctx)
		require.ErrorIs(t, err, os.ErrNotExist)
		require.ErrorContains(t, err, "get-primary")
	})

	t.Run("no program fails clearly", func(t *testing.T) {
		_, err := (&Custom{}).Booted(ctx)
		require.ErrorContains(t, err, "no program configured")
	})

	t.Run("a bootname outside the protocol is refused", func(t *testing.T) {
		c := newFakeCustom(t, "#!/bin/sh\necho '../etc'\n")
		_, err := c.Booted(ctx)
		require.ErrorIs(t, err, ErrCorruptEnv)
		_, err = c.Primary(ctx)
		require.ErrorIs(t, err, ErrCorruptEnv)
	})
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 4}
	for _, s := range []string{"ab", "cde", "", "fghijk", "l"} {
		n, err := b.Write([]byte(s))
		require.NoError(t, err)
		require.Equal(t, len(s), n)
	}
	assert.Equal(t, "ijkl", b.String())
}
