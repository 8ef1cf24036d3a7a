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
// It calls progress, when not nil, with each chunk's size as it is read.
// It returns the number of input bytes. Memory is bounded by about
// 2 x (conc + 2) chunks.
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
	// One single-threaded stream encoder per goroutine: reset for each
	// chunk, it costs less than EncodeAll. Frames carry no xxhash
	// checksum, since the layer's sha256 digests cover every byte.
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
	var zf bytes.Buffer
	encs[0].Reset(&zf)
	if _, err := encs[0].Write(zeroChunk); err != nil {
		return 0, nil, fmt.Errorf("compress: %w", err)
	}
	if err := encs[0].Close(); err != nil {
		return 0, nil, fmt.Errorf("compress: %w", err)
	}
	zeroFrame := zf.Bytes()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type job struct {
		in      inChunk
		out     *bytes.Buffer
		err     error         // from compressing
		hashErr error         // from hashing
		done    chan struct{} // compressed
		hashed  chan struct{} // fed to uh
	}
	src := newChunkSource(r, opts.ChunkSize, zeroChunk)
	// Output buffers are kept for the whole run, each big enough for an
	// incompressible chunk: a sync.Pool would lose them at every garbage
	// collection, and each new buffer would grow through fresh pages.
	outs := make(chan *bytes.Buffer, 2*conc+4)
	getOut := func() *bytes.Buffer {
		select {
		case b := <-outs:
			return b
		default:
			return bytes.NewBuffer(make([]byte, 0, opts.ChunkSize+opts.ChunkSize/128+4096))
		}
	}
	jobs := make(chan *job)
	order := make(chan *job, conc+1)
	hashq := make(chan *job, conc+1)
	go func() {
		for j := range hashq {
			j.hashErr = catchFault(func() { uh.Write(j.in.b) })
			close(j.hashed)
		}
	}()

	var wg sync.WaitGroup
	for _, enc := range encs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				j.out.Reset()
				in := j.in.b
				err := catchFault(func() {
					if len(in) == len(zeroChunk) && (j.in.zero || bytes.Equal(in, zeroChunk)) {
						j.out.Write(zeroFrame)
						return
					}
					enc.Reset(j.out)
					_, j.err = enc.Write(in)
					if j.err == nil {
						j.err = enc.Close()
					}
				})
				if err != nil {
					j.err = err
				}
				if j.err != nil {
					// Writing to a bytes.Buffer cannot fail; an encoder
					// error is a bug, reported as a failed write.
					j.out.Reset()
				}
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
		defer close(hashq)
		defer close(jobs)
		for {
			c, err := src.next(ctx)
			if n := len(c.b); n > 0 {
				total += int64(n)
				if progress != nil {
					progress(int64(n))
				}
				j := &job{in: c, out: getOut(),
					done: make(chan struct{}), hashed: make(chan struct{})}
				select {
				case order <- j:
				case <-ctx.Done():
					if c.put != nil {
						c.put()
					}
					readErr = ctx.Err()
					return
				}
				hashq <- j
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
		<-j.hashed
		if writeErr == nil {
			writeErr = cmp.Or(j.err, j.hashErr)
			if writeErr != nil {
				cancel()
			}
		}
		if writeErr == nil {
			if _, err := w.Write(j.out.Bytes()); err != nil {
				writeErr = err
				cancel()
			}
			frames = append(frames, int64(j.out.Len()))
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
	switch {
	case readErr != nil && (writeErr == nil || !errors.Is(readErr, context.Canceled)):
		return total, nil, fmt.Errorf("compress: %w", readErr)
	case writeErr != nil:
		return total, nil, fmt.Errorf("compress: %w", writeErr)
	}
	return total, frames, nil
}
