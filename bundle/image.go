package bundle

import (
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// ImageReader streams one slot image, decompressed. It checks the
// compressed digest and size of the layer and the uncompressed sha256 and
// size of the image; Read returns io.EOF only when all four matched and an
// error wrapping ErrDigestMismatch or ErrTruncated otherwise. It never
// yields more bytes than the declared size.
//
// Decompression and hashing run in goroutines ahead of the caller, a few
// chunks at most. When the image has a frame table (ImageInfo.Frames),
// frames are decompressed in parallel and every frame boundary the caller
// has read past is a Checkpoint from which another process can resume.
type ImageReader struct {
	// Info describes the image.
	Info ImageInfo

	// Layer is the compressed layer's descriptor.
	Layer v1.Descriptor

	// Index is the image's position in the bundle, from 0.
	Index int

	// FileOffset is the offset of the layer's first byte in the .rota
	// file or stream, or -1 when the bundle is not read from one.
	FileOffset int64

	src  io.ReadCloser
	out  chan chunk // hashed chunks, in order
	done chan struct{}
	wg   sync.WaitGroup

	cur  chunk // chunk being handed out
	off  int   // read offset in cur
	err  error // sticky: io.EOF after success
	once sync.Once

	mu  sync.Mutex
	cps []Checkpoint // recent frame boundaries the caller read past

	framePool sync.Pool // decompressed frames
}

// Checkpoint is a frame boundary of an image that a reader has passed,
// with the state needed to resume reading there, even in another process:
// see Bundle.ResumeImage. Checkpoints are meaningful only for the bundle
// they came from.
type Checkpoint struct {
	// Image is the image's index in the bundle.
	Image int `json:"image"`

	// Frame is the number of frames before the boundary.
	Frame int `json:"frame"`

	// Compressed is the number of layer bytes before the boundary.
	Compressed int64 `json:"compressed"`

	// Uncompressed is the number of image bytes before the boundary.
	Uncompressed int64 `json:"uncompressed"`

	// FileOffset is the layer's offset in the .rota file (-1 if unknown):
	// resume by reading the file from FileOffset+Compressed.
	FileOffset int64 `json:"fileOffset"`

	// CompressedHash and UncompressedHash are the serialized sha256 states
	// of the layer and of the image at the boundary.
	CompressedHash   []byte `json:"compressedHash"`
	UncompressedHash []byte `json:"uncompressedHash"`
}

// maxCheckpoints is how many recent checkpoints an ImageReader keeps.
const maxCheckpoints = 64

// chunk is a piece of decompressed image, or the final error.
type chunk struct {
	buf  *[]byte
	n    int
	err  error
	pool *sync.Pool // where buf goes back to; nil for none

	// For frame-aligned chunks: the frame that ends with this chunk, and
	// the compressed hash state after it.
	frame     int
	compState []byte
	cp        *Checkpoint
}

// Pipeline sizes.
const (
	chunkSize     = 1 << 20
	chunksInAhead = 4
)

var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, chunkSize)
	return &b
}}

// release returns the chunk's buffer to its pool.
func (c *chunk) release() {
	if c.buf != nil && c.pool != nil {
		c.pool.Put(c.buf)
	}
	c.buf = nil
}

// imageStart says where reading an image begins: at its start, or at a
// checkpoint.
type imageStart struct {
	index      int
	fileOffset int64
	cp         *Checkpoint
	workers    int // frames decoded at once; 0 means the default
}

func newImageReader(rc io.ReadCloser, d v1.Descriptor, info ImageInfo, start imageStart,
	progress func(int64)) (*ImageReader, error) {
	r := &ImageReader{
		Info:       info,
		Layer:      d,
		Index:      start.index,
		FileOffset: start.fileOffset,
		src:        rc,
		out:        make(chan chunk, chunksInAhead),
		done:       make(chan struct{}),
	}
	cr := &hashCounter{r: rc, h: sha256.New(), progress: progress}
	uh := sha256.New()
	var (
		uoff  int64
		frame int
	)
	if cp := start.cp; cp != nil {
		if err := restoreHash(cr.h, cp.CompressedHash); err != nil {
			return nil, err
		}
		if err := restoreHash(uh, cp.UncompressedHash); err != nil {
			return nil, err
		}
		cr.n, uoff, frame = cp.Compressed, cp.Uncompressed, cp.Frame
	}
	r.wg.Add(1)
	if info.ChunkSize > 0 {
		// Frames are large: the decoding workers are all the look-ahead
		// needed, and the frame collector hashes them itself.
		// With one worker (a memory-frugal agent) the hand-off is
		// unbuffered; otherwise one frame waits, so that hashing the next
		// frame overlaps with the caller writing this one.
		ahead := 1
		if start.workers == 1 {
			ahead = 0
		}
		r.out = make(chan chunk, ahead)
		go r.decodeFrames(cr, uh, uoff, frame, start.workers)
	} else {
		dec, err := zstd.NewReader(cr,
			zstd.WithDecoderMaxWindow(MaxWindowSize),
			zstd.WithDecoderMaxMemory(MaxWindowSize),
			zstd.WithDecoderConcurrency(1),
		)
		if err != nil {
			return nil, fmt.Errorf("start zstd decoder: %w", err)
		}
		decoded := make(chan chunk, chunksInAhead)
		r.wg.Add(1)
		go r.decodeStream(dec, cr, decoded)
		go r.hash(cr, uh, uoff, decoded)
	}
	return r, nil
}

func restoreHash(h hash.Hash, state []byte) error {
	u, ok := h.(encoding.BinaryUnmarshaler)
	if !ok {
		return errors.New("restore hash state: not supported")
	}
	if err := u.UnmarshalBinary(state); err != nil {
		return fmt.Errorf("%w: checkpoint hash state: %v", ErrInvalidBundle, err)
	}
	return nil
}

func saveHash(h hash.Hash) []byte {
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return nil
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return nil
	}
	return b
}

// send hands c to the next stage unless the reader was closed.
func (r *ImageReader) send(out chan<- chunk, c chunk) bool {
	select {
	case out <- c:
		return true
	case <-r.done:
		c.release()
		return false
	}
}

// decodeStream decompresses a layer without a frame table into pooled
// chunks, never more than one byte past the declared size.
func (r *ImageReader) decodeStream(dec *zstd.Decoder, cr *hashCounter, out chan<- chunk) {
	defer r.wg.Done()
	defer close(out)
	defer dec.Close()
	lim := io.LimitReader(dec, r.Info.Size+1)
	for {
		bp := chunkPool.Get().(*[]byte)
		n, err := io.ReadFull(lim, *bp)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		if err != nil && !errors.Is(err, io.EOF) {
			err = r.decodeError(cr, err)
		}
		c := chunk{buf: bp, n: n, err: err, frame: -1, pool: &chunkPool}
		if !r.send(out, c) || err != nil {
			return
		}
	}
}

// frameJob is one frame to decompress.
type frameJob struct {
	k    int
	comp *[]byte
	out  chunk
	done chan struct{}
}

// decodeFrames reads the layer frame by frame, as its frame table says,
// and decompresses frames in parallel, handing them on in order.
func (r *ImageReader) decodeFrames(cr *hashCounter, uh hash.Hash, n int64, first, workers int) {
	defer r.wg.Done()
	defer close(r.out)
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), MaxConcurrency)
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderMaxWindow(MaxWindowSize),
		// Output is bounded by the destination buffers (cap limit);
		// the window by MaxWindowSize.
		zstd.WithDecoderMaxMemory(uint64(max(r.Info.ChunkSize, MaxWindowSize))),
		zstd.WithDecoderConcurrency(workers),
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		r.send(r.out, chunk{err: fmt.Errorf("start zstd decoder: %w", err)})
		return
	}
	defer dec.Close()

	r.framePool.New = func() any {
		b := make([]byte, 0, r.Info.ChunkSize)
		return &b
	}
	if workers == 1 {
		r.decodeFramesInOrder(dec, cr, uh, n, first)
		return
	}

	jobs := make(chan *frameJob)
	order := make(chan *frameJob, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r.decodeFrame(dec, j)
				j.comp = nil
				close(j.done)
			}
		}()
	}
	go func() {
		defer close(order)
		defer close(jobs)
		for k := first; k < len(r.Info.Frames); k++ {
			// Compressed frames are read into buffers of their own size,
			// most of them far smaller than a chunk.
			b := make([]byte, r.Info.Frames[k])
			comp := &b
			if _, err := io.ReadFull(cr, *comp); err != nil {
				j := &frameJob{k: k, done: make(chan struct{})}
				j.out = chunk{err: r.fail(ErrTruncated, "layer ends in frame %d after %d bytes: %v",
					k, cr.n, err)}
				close(j.done)
				select {
				case order <- j:
				case <-r.done:
				}
				return
			}
			j := &frameJob{k: k, comp: comp, done: make(chan struct{})}
			j.out.compState = saveHash(cr.h)
			select {
			case order <- j:
			case <-r.done:
				return
			}
			jobs <- j
		}
	}()
	defer wg.Wait()
	for j := range order {
		<-j.done
		if !r.hashOne(j.out, cr, uh, &n) {
			// Drain so the feeder and workers can stop.
			for j := range order {
				<-j.done
				j.out.release()
			}
			return
		}
	}
	r.hashOne(chunk{err: io.EOF, frame: -1}, cr, uh, &n)
}

// decodeFramesInOrder is decodeFrames with one worker: it reads, decodes
// and hashes each frame in turn in this goroutine, so that no more than
// two frames (this one and the caller's) are in memory.
func (r *ImageReader) decodeFramesInOrder(dec *zstd.Decoder, cr *hashCounter, uh hash.Hash,
	n int64, first int) {
	for k := first; k < len(r.Info.Frames); k++ {
		comp := make([]byte, r.Info.Frames[k])
		if _, err := io.ReadFull(cr, comp); err != nil {
			r.hashOne(chunk{err: r.fail(ErrTruncated, "layer ends in frame %d after %d bytes: %v",
				k, cr.n, err)}, cr, uh, &n)
			return
		}
		j := &frameJob{k: k, comp: &comp}
		j.out.compState = saveHash(cr.h)
		r.decodeFrame(dec, j)
		if !r.hashOne(j.out, cr, uh, &n) {
			return
		}
	}
	r.hashOne(chunk{err: io.EOF, frame: -1}, cr, uh, &n)
}

// decodeFrame decompresses frame j.k, which must give exactly the frame's
// share of the image.
func (r *ImageReader) decodeFrame(dec *zstd.Decoder, j *frameJob) {
	want := r.Info.frameLen(j.k)
	bp := r.framePool.Get().(*[]byte)
	got, err := dec.DecodeAll(*j.comp, (*bp)[:0:want])
	switch {
	case err != nil && int64(len(got)) >= want:
		j.out.err = r.fail(ErrDigestMismatch,
			"frame %d decompresses to more than its %d bytes", j.k, want)
	case err != nil:
		j.out.err = r.fail(ErrInvalidBundle, "decompress frame %d: %v", j.k, err)
	case int64(len(got)) != want:
		j.out.err = r.fail(ErrDigestMismatch, "frame %d decompresses to %d bytes, not %d",
			j.k, len(got), want)
	default:
		// DecodeAll appended to the pooled buffer; make sure the
		// bytes are there even if it ever chose another array.
		dst := (*bp)[:len(got)]
		if len(got) > 0 && &dst[0] != &got[0] {
			copy(dst, got)
		}
		*bp = dst
		j.out.buf, j.out.n, j.out.frame, j.out.pool = bp, len(got), j.k, &r.framePool
		return
	}
	r.framePool.Put(bp)
}

func (r *ImageReader) decodeError(cr *hashCounter, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrTruncated) {
		return r.fail(ErrTruncated, "layer ends early after %d compressed bytes: %v", cr.n, err)
	}
	return r.fail(ErrInvalidBundle, "decompress: %v", err)
}

// hash hashes the chunks of a stream-decoded image in order.
func (r *ImageReader) hash(cr *hashCounter, uh hash.Hash, n int64, in <-chan chunk) {
	defer r.wg.Done()
	defer close(r.out)
	for c := range in {
		if !r.hashOne(c, cr, uh, &n) {
			return
		}
	}
}

// hashOne hashes chunk c, notes a checkpoint after a frame and, at the
// end of the image, replaces io.EOF with the verdict of check; then it
// hands c to the caller. It returns false when nothing more is to be
// sent.
func (r *ImageReader) hashOne(c chunk, cr *hashCounter, uh hash.Hash, n *int64) bool {
	if *n+int64(c.n) > r.Info.Size {
		c.release()
		c = chunk{err: r.fail(ErrDigestMismatch,
			"decompresses to more than its declared %d bytes", r.Info.Size)}
	} else if c.n > 0 {
		uh.Write((*c.buf)[:c.n])
		*n += int64(c.n)
	}
	if c.err == nil && c.frame >= 0 && c.compState != nil {
		c.cp = &Checkpoint{
			Image:            r.Index,
			Frame:            c.frame + 1,
			Compressed:       r.framesBefore(c.frame + 1),
			Uncompressed:     *n,
			FileOffset:       r.FileOffset,
			CompressedHash:   c.compState,
			UncompressedHash: saveHash(uh),
		}
	}
	if errors.Is(c.err, io.EOF) {
		c.err = r.check(cr, uh, *n)
	}
	return r.send(r.out, c) && c.err == nil
}

// framesBefore returns the compressed size of the first k frames.
func (r *ImageReader) framesBefore(k int) int64 {
	var s int64
	for _, f := range r.Info.Frames[:k] {
		s += f
	}
	return s
}

// check runs when the decoder reached the end of the layer.
func (r *ImageReader) check(cr *hashCounter, uh hash.Hash, n int64) error {
	// Whatever follows the last frame in the layer is part of the layer
	// and must be hashed too.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return r.fail(ErrTruncated, "read layer: %v", err)
	}
	switch {
	case cr.n != r.Layer.Size:
		return r.fail(ErrTruncated, "layer has %d of %d compressed bytes", cr.n, r.Layer.Size)
	case hexSum(cr.h) != r.Layer.Digest.Hex:
		return r.fail(ErrDigestMismatch, "layer hashes to sha256:%s, not %s",
			hexSum(cr.h), r.Layer.Digest)
	case n != r.Info.Size:
		return r.fail(ErrDigestMismatch, "decompresses to %d bytes, not %d", n, r.Info.Size)
	case hexSum(uh) != r.Info.SHA256:
		return r.fail(ErrDigestMismatch, "image hashes to sha256:%s, not sha256:%s",
			hexSum(uh), r.Info.SHA256)
	}
	return io.EOF
}

func (r *ImageReader) fail(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: image %s: %s", kind, r.Info.Class, fmt.Sprintf(format, args...))
}

// next makes r.cur a chunk with unread bytes, or sets r.err.
func (r *ImageReader) next() bool {
	for r.err == nil && r.off >= r.cur.n {
		r.passed()
		r.cur.release()
		if r.cur.err != nil {
			r.err = r.cur.err
			return false
		}
		c, ok := <-r.out
		if !ok {
			r.err = fmt.Errorf("read image %s: closed", r.Info.Class)
			return false
		}
		r.cur, r.off = c, 0
	}
	return r.err == nil
}

// passed records the current chunk's checkpoint once the caller has all
// of its bytes.
func (r *ImageReader) passed() {
	if r.cur.cp == nil || r.off < r.cur.n {
		return
	}
	r.mu.Lock()
	r.cps = append(r.cps, *r.cur.cp)
	if len(r.cps) > maxCheckpoints {
		r.cps = append(r.cps[:0], r.cps[len(r.cps)-maxCheckpoints:]...)
	}
	r.mu.Unlock()
	r.cur.cp = nil
}

// Read reads decompressed image bytes.
func (r *ImageReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, r.err
	}
	if !r.next() {
		return 0, r.err
	}
	n := copy(p, (*r.cur.buf)[r.off:r.cur.n])
	r.off += n
	r.passed()
	return n, nil
}

// WriteTo writes the rest of the image to w without an intermediate copy.
// It returns nil only when the image was complete and verified.
func (r *ImageReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for r.next() {
		n, err := w.Write((*r.cur.buf)[r.off:r.cur.n])
		total += int64(n)
		r.off += n
		r.passed()
		if err != nil {
			return total, err
		}
	}
	if errors.Is(r.err, io.EOF) {
		return total, nil
	}
	return total, r.err
}

// Checkpoint returns the last frame boundary at or before offset (in image
// bytes) that the caller has read past, or nil when there is none (no
// frame table, or no whole frame read yet). A caller that has made the
// first offset bytes durable may persist the result and resume from it.
func (r *ImageReader) Checkpoint(offset int64) *Checkpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.cps) - 1; i >= 0; i-- {
		if r.cps[i].Uncompressed <= offset {
			cp := r.cps[i]
			return &cp
		}
	}
	return nil
}

// Close stops decompression and releases its resources. Closing before
// io.EOF abandons the image.
func (r *ImageReader) Close() error {
	var err error
	r.once.Do(func() {
		close(r.done)
		// Closing the source first unblocks a decoder waiting on a network
		// read.
		err = r.src.Close()
		r.wg.Wait()
		r.cur.release()
		if r.err == nil {
			r.err = fmt.Errorf("read image %s: closed", r.Info.Class)
		}
	})
	return err
}
