package bundle

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// DefaultChunkSize is the input size of each independently compressed
// zstd frame Create writes. Frames let every core compress at once; at
// four windows each, they cost well under one percent of ratio.
const DefaultChunkSize = 4 << 20

// compress zstd-compresses r into w as a series of frames of up to
// opts.ChunkSize input bytes each, compressed by conc goroutines at once
// and written in order, while another goroutine feeds the input to uh.
// A mapped file is hashed through a mapping of its own, so that hashing,
// the one step that cannot be split across cores, runs ahead of the
// compression instead of waiting for it; other input is hashed chunk by
// chunk as it is read. It calls progress, when not nil, with each chunk's
// size as it is read. It returns the number of input bytes. Memory is
// bounded by about 2 x (conc + 2) chunks.
func compress(ctx context.Context, w io.Writer, r io.Reader, uh hash.Hash, progress func(int64),
	opts CreateOptions) (int64, []int64, error) {
	level := opts.Level
	if level == 0 {
		level = DefaultCompressionLevel
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = min(runtime.GOMAXPROCS(0), MaxConcurrency)
	}
	// One single-threaded encoder per goroutine, each chunk encoded with
	// EncodeAll straight from the input into a kept output buffer. Frames
	// carry no xxhash checksum, since the layer's sha256 digests cover
	// every byte.
	encs := make([]*zstd.Encoder, conc)
	for i := range encs {
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(level),
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(DefaultWindowSize),
			zstd.WithEncoderCRC(false),
		)
		if err != nil {
			return 0, nil, fmt.Errorf("start zstd encoder: %w", err)
		}
		encs[i] = enc
	}

	// Filesystem images hold long runs of zeros; a chunk of zeros always
	// compresses to the same frame, made once.
	zeroChunk := make([]byte, opts.ChunkSize)
	zeroFrame := encs[0].EncodeAll(zeroChunk, nil)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type job struct {
		in      inChunk
		out     []byte
		err     error         // from reading the chunk while compressing it
		hashErr error         // from hashing
		done    chan struct{} // compressed
		hashed  chan struct{} // fed to uh
	}
	src := newChunkSource(r, opts.ChunkSize, zeroChunk)
	// Output buffers are kept for the whole run, each big enough for an
	// incompressible chunk: a sync.Pool would lose them at every garbage
	// collection, and each new buffer would grow through fresh pages.
	outs := make(chan []byte, 2*conc+4)
	getOut := func() []byte {
		select {
		case b := <-outs:
			return b[:0]
		default:
			return make([]byte, 0, opts.ChunkSize+opts.ChunkSize/128+4096)
		}
	}
	jobs := make(chan *job)
	order := make(chan *job, conc+1)
	hashq := make(chan *job, conc+1)
	var (
		hashDone  = make(chan struct{})
		hashed    int64 // bytes hashed through the twin source
		twinErr   error
		perChunk  = true
		twinInput chunkSource
	)
	if ts, ok := src.(twinSource); ok {
		twinInput, perChunk = ts.twin(), false
		close(hashq)
	}
	go func() {
		defer close(hashDone)
		if perChunk {
			for j := range hashq {
				j.hashErr = catchFault(func() { uh.Write(j.in.b) })
				close(j.hashed)
			}
			return
		}
		twinErr = hashAll(ctx, twinInput, uh, &hashed)
	}()
	// However compress returns, the hasher has stopped using the input
	// and uh by then.
	defer func() {
		cancel()
		<-hashDone
	}()

	var wg sync.WaitGroup
	for _, enc := range encs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				in := j.in.b
				j.err = catchFault(func() {
					if len(in) == len(zeroChunk) && (j.in.zero || bytes.Equal(in, zeroChunk)) {
						j.out = append(j.out, zeroFrame...)
						return
					}
					j.out = enc.EncodeAll(in, j.out)
				})
				close(j.done)
			}
		}()
	}

	// The reader feeds jobs in order; the writer below drains them in the
	// same order, so frames land in input order.
	var (
		total   int64
		readErr error
	)
	go func() {
		defer close(order)
		if perChunk {
			defer close(hashq)
		}
		defer close(jobs)
		for {
			c, err := src.next(ctx)
			if n := len(c.b); n > 0 {
				total += int64(n)
				if progress != nil {
					progress(int64(n))
				}
				j := &job{in: c, out: getOut(), done: make(chan struct{})}
				if perChunk {
					j.hashed = make(chan struct{})
				}
				select {
				case order <- j:
				case <-ctx.Done():
					if c.put != nil {
						c.put()
					}
					readErr = ctx.Err()
					return
				}
				if perChunk {
					hashq <- j
				}
				jobs <- j
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()

	var (
		writeErr error
		frames   []int64
	)
	for j := range order {
		<-j.done
		if j.hashed != nil {
			<-j.hashed
		}
		if writeErr == nil {
			writeErr = cmp.Or(j.err, j.hashErr)
			if writeErr != nil {
				cancel()
			}
		}
		if writeErr == nil {
			if _, err := w.Write(j.out); err != nil {
				writeErr = err
				cancel()
			}
			frames = append(frames, int64(len(j.out)))
		}
		if j.in.put != nil {
			j.in.put()
		}
		select {
		case outs <- j.out:
		default:
		}
	}
	wg.Wait()
	if !perChunk && readErr == nil && writeErr == nil {
		<-hashDone
		switch {
		case twinErr != nil:
			return total, nil, fmt.Errorf("compress: %w", twinErr)
		case hashed != total:
			return total, nil, fmt.Errorf("compress: %w: hashed %d bytes but compressed %d",
				ErrImageChanged, hashed, total)
		}
	}
	switch {
	case readErr != nil && (writeErr == nil || !errors.Is(readErr, context.Canceled)):
		return total, nil, fmt.Errorf("compress: %w", readErr)
	case writeErr != nil:
		return total, nil, fmt.Errorf("compress: %w", writeErr)
	}
	return total, frames, nil
}

// hashAll feeds every chunk of src to h, adding their sizes to *n.
func hashAll(ctx context.Context, src chunkSource, h hash.Hash, n *int64) error {
	for {
		c, err := src.next(ctx)
		if len(c.b) > 0 {
			herr := catchFault(func() { h.Write(c.b) })
			*n += int64(len(c.b))
			if c.put != nil {
				c.put()
			}
			if herr != nil {
				return herr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
