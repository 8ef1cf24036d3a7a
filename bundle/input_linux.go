package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// mappedSource maps a regular file one chunk at a time instead of copying
// it into buffers, and hands out the chunks that lie in a hole as zeros
// without reading them. Pages past the end of a file that shrinks while
// mapped fault: the code that touches chunks runs under catchFault.
type mappedSource struct {
	f     *os.File
	fd    int
	end   int64 // file size when the source was made
	off   int64 // offset of the next chunk
	size  int64 // chunk size
	zeros []byte
	data  int64 // first offset at or after off that may hold data
}

func mapSource(r io.Reader, size int64, zeros []byte) chunkSource {
	f, ok := r.(*os.File)
	if !ok {
		return nil
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil || off%int64(os.Getpagesize()) != 0 {
		return nil
	}
	// Probe once: some file systems (FUSE ones, /proc) refuse mappings.
	if fi.Size() > off {
		b, err := unix.Mmap(int(f.Fd()), off, 1, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return nil
		}
		unix.Munmap(b)
	}
	return &mappedSource{f: f, fd: int(f.Fd()), end: fi.Size(), off: off, data: off, size: size, zeros: zeros}
}

// twin returns a second source over the same bytes from where s stands
// now, with its own position: Create hashes a mapped image through one
// while it compresses it through the other.
func (s *mappedSource) twin() chunkSource {
	t := *s
	return &t
}

func (s *mappedSource) next(ctx context.Context) (inChunk, error) {
	if err := ctx.Err(); err != nil {
		return inChunk{}, err
	}
	if s.off >= s.end {
		// A file cut short under a hole reads as zeros: check its size.
		if fi, err := s.f.Stat(); err == nil && fi.Size() < s.end {
			return inChunk{}, fmt.Errorf("%w: %s shrank from %d to %d bytes",
				ErrImageChanged, s.f.Name(), s.end, fi.Size())
		}
		return inChunk{}, io.EOF
	}
	n := min(s.size, s.end-s.off)
	off := s.off
	s.off += n
	if s.data < off+n {
		s.data = s.nextData(off)
	}
	if s.data >= off+n {
		return inChunk{b: s.zeros[:n], zero: true}, nil
	}
	b, err := unix.Mmap(s.fd, off, int(n), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return inChunk{}, fmt.Errorf("map %s at %d: %w", s.f.Name(), off, err)
	}
	return inChunk{b: b, put: func() { unix.Munmap(b) }}, nil
}

// nextData returns the offset of the first byte at or after off that is
// not in a hole, or off when the file system cannot say.
func (s *mappedSource) nextData(off int64) int64 {
	d, err := unix.Seek(s.fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return s.end // only a hole is left
	case err != nil || d < off:
		return off
	}
	return d
}
