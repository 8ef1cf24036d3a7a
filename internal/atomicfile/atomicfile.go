// Package atomicfile replaces files so that a crash or a power cut at any
// instant leaves either the old or the new content, never a mix: the new
// content goes to a hidden temporary file in the same directory, which is
// synced, renamed over the target, and the directory synced.
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write creates or replaces path with what write writes to the temporary
// file (an *os.File), with mode perm. On error the temporary file is
// removed and path is unchanged.
func Write(path string, perm os.FileMode, write func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// The leading dot keeps tools that scan a directory by suffix (such
	// as systemd-boot, which reads *.conf) away from a half-written file.
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	return Rename(tmp.Name(), path)
}

// WriteBytes is Write for content already in memory.
func WriteBytes(path string, data []byte, perm os.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	})
}

// Rename renames oldPath to newPath (atomic on POSIX file systems) and
// syncs newPath and its directory so that the rename survives a power cut.
// Syncing the directory alone is not enough on vfat, where an EFI system
// partition's boot loader files live: there the renamed file's directory
// entry is written with the file, and until then the entry on the disk
// still points at the replaced file's clusters, which are already free.
func Rename(oldPath, newPath string) error {
	if err := os.Rename(oldPath, newPath); err != nil {
		return fmt.Errorf("rename %s: %w", oldPath, err)
	}
	if err := syncPath(newPath); err != nil {
		return fmt.Errorf("sync %s: %w", newPath, err)
	}
	return SyncDir(filepath.Dir(newPath))
}

// SyncDir flushes a directory's entries to stable storage.
func SyncDir(dir string) error {
	if err := syncPath(dir); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// syncFile flushes an open file or directory; tests replace it to see
// what is synced.
var syncFile = (*os.File).Sync

// syncPath opens a file or directory and flushes it to stable storage.
func syncPath(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	// Some file systems (vfat on a few kernels) refuse fsync on a
	// directory; the rename itself has then already been written through.
	if err := syncFile(f); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
