package main

import (
	"bytes"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// sparseBlock is the granularity at which runs of zeros become holes.
const sparseBlock = 64 << 10

var zeroBlock = make([]byte, sparseBlock)

// sparseWriter writes to a regular file, leaving holes where whole blocks
// are zero, as zstd and cp --sparse do. Finish must be called to set the
// final size.
type sparseWriter struct {
	f      *os.File
	off    int64 // logical offset: bytes written or skipped
	pos    int64 // file position
	queued int64 // offset up to which writeback was started
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
			w, err := s.f.Write(p[:j])
			s.off += int64(w)
			s.pos += int64(w)
			if err != nil {
				return n - len(p) + w, err
			}
			s.startWriteback()
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
