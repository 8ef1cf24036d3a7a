package slot

import (
	"fmt"
	"github.com/rotaupdate/rota/internal/atomicfile"
	"io"
	"os"
)

// atomicReplaceFile writes data to path so that a power cut leaves either
// the old or the new content.
func atomicReplaceFile(path string, data []byte, perm os.FileMode) error {
	return atomicfile.WriteBytes(path, data, perm)
}

// renameDurably renames oldPath to newPath and syncs the directory.
func renameDurably(oldPath, newPath string) error {
	return atomicfile.Rename(oldPath, newPath)
}

// readFileLimit reads at most limit bytes of path and fails when the file is
// larger, so a hostile or damaged file cannot exhaust memory.
func readFileLimit(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("read %s: larger than %d bytes: %w", path, limit, ErrCorruptEnv)
	}
	return data, nil
}
