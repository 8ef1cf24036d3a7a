package slot

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sdLoaderConf is a loader.conf as an installer might leave it.
const sdLoaderConf = "# written by the installer\ntimeout 3\ndefault debian-*\nconsole-mode max\n"

// newTestESP builds an ESP with one Type #1 entry per file name and returns
// a SystemdBoot for bootnames A and B on it.
func newTestESP(t *testing.T, files ...string) *SystemdBoot {
	t.Helper()
	esp := t.TempDir()
	dir := filepath.Join(esp, "loader", "entries")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	conf := filepath.Join(esp, "loader", "loader.conf")
	require.NoError(t, os.WriteFile(conf, []byte(sdLoaderConf), 0o644))
	for _, f := range files {
		name, _, _ := strings.Cut(strings.TrimSuffix(f, ".conf"), "+")
		body := "title " + name + "\nlinux /" + name + "/vmlinuz\noptions rota.slot=" + name + "\n"
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte(body), 0o644))
	}
	return NewSystemdBoot(esp, "A", "B")
}

// entryFiles lists loader/entries.
func entryFiles(t *testing.T, b *SystemdBoot) []string {
	t.Helper()
	list, err := os.ReadDir(b.entriesDir())
	require.NoError(t, err)
	var names []string
	for _, de := range list {
		names = append(names, de.Name())
	}
	slices.Sort(names)
	return names
}

func TestSystemdBoot_Scripts(t *testing.T) {
	for _, tc := range bootScripts {
		t.Run(tc.name, func(t *testing.T) {
			// The installer's loader.conf points elsewhere until ROTA takes
			// over with its first MarkActive.
			b := newTestESP(t, "rota-A.conf", "rota-B.conf")
			require.NoError(t, b.Mark(context.Background(), "A", Mark{Kind: MarkActive}))
			require.NoError(t, b.Mark(context.Background(), "A", Mark{Kind: MarkGood}))
			runBootScript(t, b, tc.script)
		})
	}
}

func TestSystemdBoot_MarkActiveFiles(t *testing.T) {
	ctx := context.Background()
	b := newTestESP(t, "rota-A.conf", "rota-B.conf", "debian.conf")

	require.NoError(t, b.Mark(ctx, "B", Mark{Kind: MarkActive, Attempts: 3}))
	assert.Equal(t, []string{"debian.conf", "rota-A.conf", "rota-B+3-0.conf"}, entryFiles(t, b))

	conf, err := os.ReadFile(b.loaderConf())
	require.NoError(t, err)
	want := "# written by the installer\ntimeout 3\ndefault rota-*\nconsole-mode max\n"
	assert.Equal(t, want, string(conf), "only the default line changes")

	entryB, err := os.ReadFile(b.entryPath("rota-B+3-0.conf"))
	require.NoError(t, err)
	assert.Equal(t, "title rota-B\nlinux /rota-B/vmlinuz\noptions rota.slot=rota-B\nsort-key rota-1\n",
		string(entryB))
	entryA, err := os.ReadFile(b.entryPath("rota-A.conf"))
	require.NoError(t, err)
	assert.Contains(t, string(entryA), "sort-key rota-2\n")

	got, err := b.SimulateBoot(ctx)
	require.NoError(t, err)
	assert.Equal(t, "B", got)
	assert.Equal(t, []string{"debian.conf", "rota-A.conf", "rota-B+2-1.conf"}, entryFiles(t, b))

	require.NoError(t, b.Mark(ctx, "B", Mark{Kind: MarkBad}))
	assert.Equal(t, []string{"debian.conf", "rota-A.conf", "rota-B+0-1.conf"}, entryFiles(t, b),
		"bad keeps the tries done")
	require.NoError(t, b.Mark(ctx, "B", Mark{Kind: MarkGood}))
	assert.Equal(t, []string{"debian.conf", "rota-A.conf", "rota-B.conf"}, entryFiles(t, b))
}

func TestSystemdBoot_State(t *testing.T) {
	tests := []struct {
		name string
		file string
		want BootState
	}{
		{"an entry without counter is good", "rota-A.conf", BootState{Good: true, AttemptsLeft: -1}},
		{"a counter without done is on trial", "rota-A+3.conf", BootState{AttemptsLeft: 3}},
		{"a counter with done is on trial", "rota-A+2-1.conf", BootState{AttemptsLeft: 2}},
		{"no tries left is bad", "rota-A+0-5.conf", BootState{Bad: true}},
		{"no tries left and none done is bad", "rota-A+0.conf", BootState{Bad: true}},
		{"the suffix is matched without regard to case", "rota-A+1-0.CONF", BootState{AttemptsLeft: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestESP(t, tc.file, "rota-B.conf")
			got, err := b.State(context.Background(), "A")
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestSystemdBoot_Selection(t *testing.T) {
	tests := []struct {
		name    string
		files   []string
		loader  string
		want    string
		wantErr error
	}{
		{"without default the newest ID boots first", []string{"rota-A.conf", "rota-B.conf"},
			"", "B", nil},
		{"a default glob picks its first match", []string{"rota-A.conf", "rota-B.conf"},
			"default rota-a.conf\n", "A", nil},
		{"the last default line wins", []string{"rota-A.conf", "rota-B.conf"},
			"default rota-b.conf\ndefault rota-a.conf\n", "A", nil},
		{"a bad entry sorts last", []string{"rota-A.conf", "rota-B+0-3.conf"},
			"default rota-*\n", "A", nil},
		{"a default matching only a bad entry still boots it, as systemd-boot does",
			[]string{"rota-A.conf", "rota-B+0-3.conf"}, "default rota-b.conf\n", "B", nil},
		{"a default matching nothing boots the first entry", []string{"rota-A.conf", "rota-B.conf"},
			"default nothing-*\n", "B", nil},
		{"@saved is ignored without EFI variables", []string{"rota-A.conf", "rota-B.conf"},
			"default @saved\n", "B", nil},
		{"another OS's entry boots as no slot", []string{"rota-A.conf", "zeta.conf"}, "", "", nil},
		{"no entry at all cannot boot", nil, "", "", ErrNoBootableSlot},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestESP(t, tc.files...)
			b.Entries = map[string]string{"A": "rota-A", "B": "rota-B"}
			require.NoError(t, os.WriteFile(b.loaderConf(), []byte(tc.loader), 0o644))

			got, err := b.SimulateBoot(context.Background())
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestSystemdBoot_EFIEntryIsNotCounted(t *testing.T) {
	b := newTestESP(t, "rota-A.conf")
	require.NoError(t, os.WriteFile(b.entryPath("rota-B+2-0.conf"), []byte("efi /EFI/B.efi\n"), 0o644))
	require.NoError(t, os.WriteFile(b.loaderConf(), []byte("default rota-b*\n"), 0o644))

	got, err := b.SimulateBoot(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "B", got)
	assert.Contains(t, entryFiles(t, b), "rota-B+2-0.conf")
}

func TestSystemdBoot_Errors(t *testing.T) {
	ctx := context.Background()

	tests := []struct {
		name    string
		setup   func(t *testing.T, b *SystemdBoot)
		wantErr error
	}{
		{"an unconfigured bootname is unknown", nil, ErrUnknownBootname},
		{"a missing entry file is unknown", func(t *testing.T, b *SystemdBoot) {
			require.NoError(t, os.Remove(b.entryPath("rota-C.conf")))
		}, ErrUnknownBootname},
		{"an entry without linux, efi or uki line is unknown", func(t *testing.T, b *SystemdBoot) {
			require.NoError(t, os.WriteFile(b.entryPath("rota-C.conf"), []byte("title C\n"), 0o644))
		}, ErrUnknownBootname},
		{"two files for one entry are corrupt", func(t *testing.T, b *SystemdBoot) {
			require.NoError(t, os.WriteFile(b.entryPath("rota-C+1-0.conf"), []byte("linux /x\n"), 0o644))
		}, ErrCorruptEnv},
		{"an oversized entry is corrupt", func(t *testing.T, b *SystemdBoot) {
			big := "linux /x\n" + strings.Repeat("#", MaxSystemdBootFileSize)
			require.NoError(t, os.WriteFile(b.entryPath("rota-C.conf"), []byte(big), 0o644))
		}, ErrCorruptEnv},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestESP(t, "rota-A.conf", "rota-B.conf", "rota-C.conf")
			name := "D"
			if tc.setup != nil {
				b.Entries["C"] = "rota-C"
				name = "C"
				tc.setup(t, b)
			}
			_, err := b.State(ctx, name)
			require.ErrorIs(t, err, tc.wantErr)
			require.ErrorIs(t, b.Mark(ctx, name, Mark{Kind: MarkGood}), tc.wantErr)
		})
	}

	t.Run("an entry name outside an explicit pattern is refused", func(t *testing.T) {
		b := newTestESP(t, "rota-A.conf")
		b.Pattern = "rota-*"
		b.Entries["X"] = "other-X"
		_, err := b.Primary(ctx)
		require.ErrorContains(t, err, "not matched by pattern")
	})

	t.Run("a missing ESP fails clearly", func(t *testing.T) {
		b := NewSystemdBoot(filepath.Join(t.TempDir(), "nope"), "A")
		_, err := b.Primary(ctx)
		require.ErrorIs(t, err, os.ErrNotExist)
	})

	t.Run("attempts beyond the counter's range are refused", func(t *testing.T) {
		b := newTestESP(t, "rota-A.conf", "rota-B.conf")
		require.Error(t, b.Mark(ctx, "B", Mark{Kind: MarkActive, Attempts: 1 << 40}))
	})
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want int
	}{
		{"equal strings", "6.1.0", "6.1.0", 0},
		{"numbers compare by value", "6.10", "6.9", 1},
		{"leading zeros do not count", "007", "7", 0},
		{"a longer version is newer", "6.1.1", "6.1", 1},
		{"a tilde pre-release is older", "6.1~rc1", "6.1", -1},
		{"a release separator is older than a point release", "6.1-2", "6.1.1", -1},
		{"letters compare as strings", "rota-b.conf", "rota-a.conf", 1},
		{"digits beat letters", "1a", "aa", 1},
		{"empty is oldest", "", "0", -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, compareVersions(tc.a, tc.b))
			assert.Equal(t, -tc.want, compareVersions(tc.b, tc.a))
		})
	}
}

func TestReplaceConfigKey(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"appends a missing key", "title x\n", "title x\nsort-key k\n"},
		{"adds a newline before appending", "title x", "title x\nsort-key k\n"},
		{"replaces in place", "a 1\nsort-key old\nb 2\n", "a 1\nsort-key k\nb 2\n"},
		{"drops duplicates", "sort-key a\nx 1\n\tsort-key b\n", "sort-key k\nx 1\n"},
		{"keeps comments naming the key", "# sort-key a\n", "# sort-key a\nsort-key k\n"},
		{"creates from nothing", "", "sort-key k\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, replaceConfigKey(tc.in, "sort-key", "k"))
		})
	}
}

func TestSystemdBoot_DefaultPattern(t *testing.T) {
	tests := []struct {
		name    string
		entries map[string]string
		want    string
	}{
		{"ROTA entry names use the default", map[string]string{"A": "rota-A", "B": "rota-B"}, "rota-*"},
		{"other names use their common prefix", map[string]string{"A": "os-a", "B": "os-b"}, "os-*"},
		{"names sharing nothing match everything", map[string]string{"A": "x", "B": "y"}, "*"},
		{"no entries use the default", nil, "rota-*"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &SystemdBoot{Entries: tc.entries}
			assert.Equal(t, tc.want, b.pattern())
		})
	}
}
