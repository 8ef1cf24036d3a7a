package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
)

// ErrImageChanged reports an image file that shrank while Create was
// reading it.
var ErrImageChanged = errors.New("image changed while being read")

// inChunk is one chunk of an image being compressed.
type inChunk struct {
	b    []byte
	zero bool   // known to be all zeros without looking (a hole)
	put  func() // gives b back; nil for none
}

// chunkSource hands out an image in chunks of a fixed size, the last one
// shorter. A chunk stays valid until its put function is called; several
// may be out at once.
type chunkSource interface {
	next(ctx context.Context) (inChunk, error)
}

// twinSource is a chunkSource that can be read twice at once, each
// reader at its own pace.
type twinSource interface {
	chunkSource
	twin() chunkSource
}

// newChunkSource returns the fastest source for r: a regular file is
// mapped chunk by chunk, where the platform allows, and its holes are
// skipped unread; anything else is read into pooled buffers.
func newChunkSource(r io.Reader, size int64, zeros []byte) chunkSource {
	if s := mapSource(r, size, zeros); s != nil {
		return s
	}
	return &readSource{r: r, pool: sync.Pool{New: func() any { return make([]byte, size) }}}
}

// readSource reads chunks into pooled buffers.
type readSource struct {
	r    io.Reader
	pool sync.Pool
}

func (s *readSource) next(ctx context.Context) (inChunk, error) {
	buf := s.pool.Get().([]byte)
	n, err := io.ReadFull(&ctxReader{ctx: ctx, r: s.r}, buf)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	if n == 0 {
		s.pool.Put(buf)
		return inChunk{}, err
	}
	return inChunk{b: buf[:n], put: func() { s.pool.Put(buf[:cap(buf)]) }}, err
}

// catchFault runs fn with faults on memory access turned into an error
// wrapping ErrImageChanged: a mapped file that shrinks under its mapping
// faults on the pages past its new end.
func catchFault(fn func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			fe, ok := p.(interface{ Addr() uintptr })
			if !ok {
				panic(p)
			}
			err = fmt.Errorf("%w: %v (fault at %#x)", ErrImageChanged, p, fe.Addr())
		}
	}()
	fn()
	return nil
}
