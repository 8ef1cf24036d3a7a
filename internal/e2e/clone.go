package e2e

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// cloneFile copies the regular file src to the new file dst as cheaply
// as the file system allows: a reflink sharing every block (btrfs, XFS),
// or else a sparse copy of the data extents only, found with SEEK_DATA
// and SEEK_HOLE, skipping blocks of zeros within them too.
func cloneFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return out.Close()
	}
	if err := copyExtents(out, in, fi.Size()); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyExtents copies the data extents of in, size bytes long, into out
// at the same offsets, leaving holes elsewhere.
func copyExtents(out, in *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	fd := int(in.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			// No extent map: copy the rest whole, still skipping zeros.
			return copySparse(out, off, io.NewSectionReader(in, off, size-off), size-off)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			end = size
		}
		n := min(end, size) - start
		if err := copySparse(out, start, io.NewSectionReader(in, start, n), n); err != nil {
			return err
		}
		off = start + n
	}
	return nil
}
