package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sparseBlock is the granularity at which runs of zeros become holes.
const sparseBlock = 64 << 10

var zeroBlock = make([]byte, sparseBlock)

// directAlign is the alignment of buffers, lengths and offsets that
// O_DIRECT writes get here: a multiple of every logical block size.
const directAlign = 4096

// sparseWriter writes to a regular file, leaving holes where whole blocks
// are zero, as zstd and cp --sparse do. Finish must be called to set the
// final size.
//
// Where the file system takes it, the data goes with O_DIRECT, straight
// from the caller's buffers to the disk: copying a large image into the
// page cache cost as much again as decompressing it, and far more on
// some runs, while its pages only waited for the final fsync. The first
// write that is not aligned (the end of an image, or a caller's odd
// buffer) turns O_DIRECT off for the rest.
type sparseWriter struct {
	f      *os.File
	off    int64 // logical offset: bytes written or skipped
	pos    int64 // file position
	queued int64 // offset up to which writeback was started
	direct bool  // O_DIRECT is on
}

// newSparseWriter returns a sparseWriter on f, a new empty regular file,
// writing with O_DIRECT where f's file system takes it.
func newSparseWriter(f *os.File) *sparseWriter {
	s := &sparseWriter{f: f}
	_ = s.setDirect(true) // or buffered writes, where the file system refuses it
	return s
}

// setDirect turns O_DIRECT on or off.
func (s *sparseWriter) setDirect(on bool) error {
	fd := s.f.Fd()
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err == nil {
		if on {
			flags |= unix.O_DIRECT
		} else {
			flags &^= unix.O_DIRECT
		}
		_, err = unix.FcntlInt(fd, unix.F_SETFL, flags)
	}
	if err != nil {
		return fmt.Errorf("set direct I/O on %s: %w", s.f.Name(), err)
	}
	s.direct = on
	return nil
}

// writeRun writes p, a run of non-zero blocks, at the file position.
func (s *sparseWriter) writeRun(p []byte) (int, error) {
	if s.direct && (len(p)%directAlign != 0 || s.pos%directAlign != 0 ||
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign != 0) {
		if err := s.setDirect(false); err != nil {
			return 0, err
		}
	}
	n, err := s.f.Write(p)
	if s.direct && n == 0 && errors.Is(err, unix.EINVAL) {
		// The file system took the flag but not the write.
		if err := s.setDirect(false); err != nil {
			return 0, err
		}
		n, err = s.f.Write(p)
	}
	s.pos += int64(n)
	if err == nil && !s.direct {
		s.startWriteback()
	}
	return n, err
}

// writebackChunk is how much written data sparseWriter lets accumulate
// before it asks the kernel to start writing it out, so that the final
// fsync does not find the whole file dirty.
const writebackChunk = 16 << 20

// startWriteback asks the kernel to begin writing out what was written
// since the last call, without waiting. It is only a hint.
func (s *sparseWriter) startWriteback() {
	if s.pos-s.queued < writebackChunk {
		return
	}
	unix.SyncFileRange(int(s.f.Fd()), s.queued, s.pos-s.queued, unix.SYNC_FILE_RANGE_WRITE)
	s.queued = s.pos
}

func (s *sparseWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), sparseBlock-int(s.off%sparseBlock))
		blk := p[:k]
		if bytes.Equal(blk, zeroBlock[:k]) {
			s.off += int64(k)
		} else {
			if s.pos != s.off {
				if _, err := s.f.Seek(s.off, io.SeekStart); err != nil {
					return n - len(p), err
				}
				s.pos = s.off
			}
			// Write the non-zero run in one call.
			j := k
			for j < len(p) {
				m := min(len(p)-j, sparseBlock)
				if bytes.Equal(p[j:j+m], zeroBlock[:m]) {
					break
				}
				j += m
			}
			w, err := s.writeRun(p[:j])
			s.off += int64(w)
			if err != nil {
				return n - len(p) + w, err
			}
			k = j
		}
		p = p[k:]
	}
	return n, nil
}

// Finish gives the file its full length, materializing a trailing hole.
func (s *sparseWriter) Finish() error {
	return s.f.Truncate(s.off)
}
