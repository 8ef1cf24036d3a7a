package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name    string
		write   func(w io.Writer) error
		want    string // content of the file afterwards
		wantErr bool
	}{
		{"new content replaces the old", func(w io.Writer) error {
			_, err := io.WriteString(w, "new")
			return err
		}, "new", false},
		{"a failed write leaves the old content", func(w io.Writer) error {
			io.WriteString(w, "half")
			return errors.New("disk gone")
		}, "old", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f.conf")
			require.NoError(t, os.WriteFile(p, []byte("old"), 0o600))
			err := Write(p, 0o640, tt.write)
			if tt.wantErr {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
				fi, err := os.Stat(p)
				require.NoError(t, err)
				assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
			}
			got, err := os.ReadFile(p)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
			ents, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Len(t, ents, 1, "no temporary file is left behind")
		})
	}
}

func TestWriteBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.json")
	require.NoError(t, WriteBytes(p, []byte("{}\n"), 0o644))
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "{}\n", string(got))
}

func TestRename_SyncsTheFileAndItsDirectory(t *testing.T) {
	dir := t.TempDir()
	oldPath, newPath := filepath.Join(dir, ".env.tmp"), filepath.Join(dir, "env")
	require.NoError(t, os.WriteFile(oldPath, []byte("new"), 0o644))
	require.NoError(t, os.WriteFile(newPath, []byte("old"), 0o644))
	var synced []string
	sync := syncFile
	syncFile = func(f *os.File) error {
		synced = append(synced, f.Name())
		return sync(f)
	}
	t.Cleanup(func() { syncFile = sync })

	require.NoError(t, Rename(oldPath, newPath))
	// On vfat the directory entry of the renamed file is written only
	// with the file itself, so both must be synced, the file first.
	assert.Equal(t, []string{newPath, dir}, synced)
	got, err := os.ReadFile(newPath)
	require.NoError(t, err)
	assert.Equal(t, "new", string(got))
}
