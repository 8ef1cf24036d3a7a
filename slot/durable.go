package slot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// atomicReplaceFile writes data to path so that a power cut leaves either the
// old or the new content: it writes a hidden temporary file in the same
// directory, syncs it, renames it over path and syncs the directory.
func atomicReplaceFile(path string, data []byte, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}

	// The leading dot keeps boot loaders that scan a directory by suffix
	// (systemd-boot reads only *.conf) away from a half-written file.
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", path, err)
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()

	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmpName, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmpName, err)
	}

	if err := renameDurably(tmpName, path); err != nil {
		return err
	}
	committed = true
	return nil
}

// renameDurably renames oldPath to newPath (atomic on POSIX file systems)
// and syncs the parent directory so the rename survives a power cut.
func renameDurably(oldPath, newPath string) error {
	if err := os.Rename(oldPath, newPath); err != nil {
		return fmt.Errorf("rename %s: %w", oldPath, err)
	}
	return syncDirectory(filepath.Dir(newPath))
}

// syncDirectory flushes a directory's entries to stable storage.
func syncDirectory(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()

	// Some file systems (vfat on a few kernels) refuse fsync on a
	// directory; the rename itself has then already been written through.
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
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
