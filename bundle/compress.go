package bundle

import (
	"bytes"
	"context"
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
// and written in order, while another goroutine feeds the input to uh. It
// returns the number of input bytes. Memory is bounded by about
// 2 x (conc + 2) chunks.
func compress(ctx context.Context, w io.Writer, r io.Reader, uh hash.Hash,
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
		in     []byte
		out    *bytes.Buffer
		err    error
		done   chan struct{} // compressed
		hashed chan struct{} // fed to uh
	}
	pool := sync.Pool{New: func() any { return make([]byte, opts.ChunkSize) }}
	outPool := sync.Pool{New: func() any { return new(bytes.Buffer) }}
	jobs := make(chan *job)
	order := make(chan *job, conc+1)
	hashq := make(chan *job, conc+1)
	go func() {
		for j := range hashq {
			uh.Write(j.in)
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
				if bytes.Equal(j.in, zeroChunk) {
					j.out.Write(zeroFrame)
					close(j.done)
					continue
				}
				enc.Reset(j.out)
				_, err := enc.Write(j.in)
				if err == nil {
					err = enc.Close()
				}
				if err != nil {
					// Writing to a bytes.Buffer cannot fail; an encoder
					// error is a bug, reported as a failed write.
					j.out.Reset()
					j.err = err
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
			buf := pool.Get().([]byte)
			n, err := io.ReadFull(&ctxReader{ctx: ctx, r: r}, buf)
			if n > 0 {
				total += int64(n)
				j := &job{in: buf[:n], out: outPool.Get().(*bytes.Buffer),
					done: make(chan struct{}), hashed: make(chan struct{})}
				select {
				case order <- j:
				case <-ctx.Done():
					readErr = ctx.Err()
					return
				}
				hashq <- j
				jobs <- j
			} else {
				pool.Put(buf)
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
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
		if writeErr == nil && j.err != nil {
			writeErr = j.err
			cancel()
		}
		if writeErr == nil {
			if _, err := w.Write(j.out.Bytes()); err != nil {
				writeErr = err
				cancel()
			}
			frames = append(frames, int64(j.out.Len()))
		}
		pool.Put(j.in[:cap(j.in)])
		outPool.Put(j.out)
	}
	wg.Wait()
	switch {
	case readErr != nil:
		return total, nil, fmt.Errorf("compress: %w", readErr)
	case writeErr != nil:
		return total, nil, fmt.Errorf("compress: %w", writeErr)
	}
	return total, frames, nil
}
