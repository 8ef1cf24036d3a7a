package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// Decoder limits for slot images.
const (
	// MaxWindowSize caps the zstd window a reader accepts (and so the
	// decoder's memory). Bundles written by this package use
	// DefaultWindowSize.
	MaxWindowSize = 32 << 20
)

// Bundle is an opened bundle: its metadata, read and checked, and access
// to its slot images in install order. Image data is available only after
// Verify succeeds. A Bundle is not safe for concurrent use.
type Bundle struct {
	meta *metadata
	src  layerSource

	verified []Signature
	next     int
	current  *ImageReader
	progress func(int64)
}

// layerSource yields compressed layers in manifest order.
type layerSource interface {
	// layer returns layer i, bounded to d.Size bytes. Layers are requested
	// in increasing order; skipping is allowed.
	layer(ctx context.Context, i int, d v1.Descriptor) (io.ReadCloser, error)

	// finish checks what follows the last layer and releases resources.
	finish() error

	Close() error
}

// Options tunes how a bundle is read. The zero value is ready to use.
type Options struct {
	// Progress, when set, is called with the number of compressed image
	// bytes consumed, as they are consumed. Bundle.LayerSize is the total.
	Progress func(n int64)
}

// Open opens a .rota file and reads and checks its metadata. It does not
// verify signatures: call Verify.
func Open(path string, opts Options) (*Bundle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open bundle %s: %w", path, err)
	}
	b, err := openStream(f, f, opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open bundle %s: %w", path, err)
	}
	return b, nil
}

// OpenReader reads a .rota stream, such as an HTTP response body, and
// checks its metadata; it reads nothing past the metadata until images are
// requested. Closing the Bundle does not close r.
func OpenReader(r io.Reader, opts Options) (*Bundle, error) {
	b, err := openStream(r, nil, opts)
	if err != nil {
		return nil, fmt.Errorf("open bundle stream: %w", err)
	}
	return b, nil
}

func openStream(r io.Reader, c io.Closer, opts Options) (*Bundle, error) {
	ts := &tarSource{tr: tar.NewReader(r), closer: c}
	m, err := ts.readMetadata()
	if err != nil {
		return nil, err
	}
	return &Bundle{meta: m, src: ts, progress: opts.Progress}, nil
}

// Digest returns the digest of the bundle manifest, the bundle's identity.
func (b *Bundle) Digest() string { return b.meta.manifestDigest.String() }

// Config returns the bundle config.
func (b *Bundle) Config() Config { return b.meta.config }

// Manifest returns the bundle manifest as stored.
func (b *Bundle) Manifest() []byte { return bytes.Clone(b.meta.manifestRaw) }

// RawConfig returns the config blob as stored.
func (b *Bundle) RawConfig() []byte { return bytes.Clone(b.meta.configRaw) }

// Signatures returns all attached signatures, verified or not.
func (b *Bundle) Signatures() []Signature { return b.meta.signatures() }

// Layers returns the image layer descriptors in install order.
func (b *Bundle) Layers() []v1.Descriptor {
	return append([]v1.Descriptor(nil), b.meta.manifest.Layers...)
}

// LayerSize returns the total compressed size of the image layers.
func (b *Bundle) LayerSize() int64 { return b.meta.layerSize() }

// Verify checks the signatures against the keyring and returns those that
// verify. It fails with ErrUnsigned or ErrUntrusted unless at least one
// does. Nothing of the images is read.
func (b *Bundle) Verify(kr *Keyring) ([]Signature, error) {
	good, err := b.meta.verify(kr)
	if err != nil {
		return nil, err
	}
	b.verified = good
	return good, nil
}

// Verified reports whether Verify succeeded.
func (b *Bundle) Verified() bool { return b.verified != nil }

// NextImage returns a reader of the next slot image, in install order, or
// io.EOF after the last. An image not read to its end is skipped, without
// being checked, when NextImage is called again. The Bundle must be
// verified.
func (b *Bundle) NextImage(ctx context.Context) (*ImageReader, error) {
	if !b.Verified() {
		return nil, fmt.Errorf("read images of bundle %s: %w", b.Digest(), ErrNotVerified)
	}
	if b.current != nil {
		b.current.Close()
		b.current = nil
	}
	if b.next >= len(b.meta.manifest.Layers) {
		if err := b.src.finish(); err != nil {
			return nil, fmt.Errorf("read bundle %s: %w", b.Digest(), err)
		}
		return nil, io.EOF
	}
	i := b.next
	b.next++
	d := b.meta.manifest.Layers[i]
	rc, err := b.src.layer(ctx, i, d)
	if err != nil {
		return nil, fmt.Errorf("read image %s of bundle %s: %w",
			b.meta.config.Images[i].Class, b.Digest(), err)
	}
	ir, err := newImageReader(rc, d, b.meta.config.Images[i], b.progress)
	if err != nil {
		rc.Close()
		return nil, err
	}
	b.current = ir
	return ir, nil
}

// Image skips to the image of the given class and returns its reader.
// Images are in install order, so Image can only move forward.
func (b *Bundle) Image(ctx context.Context, class string) (*ImageReader, error) {
	if b.meta.config.Image(class) == nil {
		return nil, fmt.Errorf("read bundle %s: %w: class %q", b.Digest(), ErrNoImage, class)
	}
	for {
		ir, err := b.NextImage(ctx)
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read bundle %s: image %s was already passed", b.Digest(), class)
		}
		if err != nil {
			return nil, err
		}
		if ir.Info.Class == class {
			return ir, nil
		}
	}
}

// Close releases the bundle's resources (the file opened by Open).
func (b *Bundle) Close() error {
	if b.current != nil {
		b.current.Close()
	}
	return b.src.Close()
}

// ImageReader streams one slot image, decompressed. It checks the
// compressed digest and size of the layer and the uncompressed sha256 and
// size of the image; Read returns io.EOF only when all four matched and an
// error wrapping ErrDigestMismatch or ErrTruncated otherwise. It never
// yields more bytes than the declared size.
//
// Decompression and hashing run in two goroutines ahead of the caller, a
// few chunks at most, so reading an image keeps two cores busy.
type ImageReader struct {
	// Info describes the image.
	Info ImageInfo

	// Layer is the compressed layer's descriptor.
	Layer v1.Descriptor

	src  io.ReadCloser
	out  chan chunk // hashed chunks, in order
	done chan struct{}
	wg   sync.WaitGroup

	cur  chunk // chunk being handed out
	off  int   // read offset in cur
	err  error // sticky: io.EOF after success
	once sync.Once
}

// chunk is a piece of decompressed image, or the final error.
type chunk struct {
	buf *[]byte
	n   int
	err error
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

func newImageReader(rc io.ReadCloser, d v1.Descriptor, info ImageInfo,
	progress func(int64)) (*ImageReader, error) {
	cr := &hashCounter{r: rc, h: sha256.New(), progress: progress}
	dec, err := zstd.NewReader(cr,
		zstd.WithDecoderMaxWindow(MaxWindowSize),
		zstd.WithDecoderMaxMemory(MaxWindowSize),
		zstd.WithDecoderConcurrency(1),
	)
	if err != nil {
		return nil, fmt.Errorf("start zstd decoder: %w", err)
	}
	r := &ImageReader{
		Info:  info,
		Layer: d,
		src:   rc,
		out:   make(chan chunk, chunksInAhead),
		done:  make(chan struct{}),
	}
	decoded := make(chan chunk, chunksInAhead)
	r.wg.Add(2)
	go r.decode(dec, cr, decoded)
	go r.hash(cr, decoded)
	return r, nil
}

// decode runs in its own goroutine: it decompresses into pooled chunks,
// never more than one byte past the declared size.
func (r *ImageReader) decode(dec *zstd.Decoder, cr *hashCounter, out chan<- chunk) {
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
		select {
		case out <- chunk{buf: bp, n: n, err: err}:
		case <-r.done:
			chunkPool.Put(bp)
			return
		}
		if err != nil {
			return
		}
	}
}

func (r *ImageReader) decodeError(cr *hashCounter, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrTruncated) {
		return r.fail(ErrTruncated, "layer ends early after %d compressed bytes: %v", cr.n, err)
	}
	return r.fail(ErrInvalidBundle, "decompress: %v", err)
}

// hash runs in its own goroutine: it hashes chunks in order and, at the
// end of the image, replaces io.EOF with the verdict of check.
func (r *ImageReader) hash(cr *hashCounter, in <-chan chunk) {
	defer r.wg.Done()
	defer close(r.out)
	uh := sha256.New()
	var n int64
	for c := range in {
		if n+int64(c.n) > r.Info.Size {
			chunkPool.Put(c.buf)
			c = chunk{err: r.fail(ErrDigestMismatch,
				"decompresses to more than its declared %d bytes", r.Info.Size)}
		} else if c.n > 0 {
			uh.Write((*c.buf)[:c.n])
			n += int64(c.n)
		}
		if errors.Is(c.err, io.EOF) {
			c.err = r.check(cr, uh, n)
		}
		select {
		case r.out <- c:
		case <-r.done:
			if c.buf != nil {
				chunkPool.Put(c.buf)
			}
			return
		}
		if c.err != nil {
			return
		}
	}
}

// check runs when the decoder reached the end of the layer.
func (r *ImageReader) check(cr *hashCounter, uh hash.Hash, n int64) error {
	// The decoder stops after the last frame; anything after it in the
	// layer is part of the layer and must be hashed too.
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
		if r.cur.buf != nil {
			chunkPool.Put(r.cur.buf)
			r.cur.buf = nil
		}
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
		if err != nil {
			return total, err
		}
	}
	if errors.Is(r.err, io.EOF) {
		return total, nil
	}
	return total, r.err
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
		if r.cur.buf != nil {
			chunkPool.Put(r.cur.buf)
			r.cur.buf = nil
		}
		if r.err == nil {
			r.err = fmt.Errorf("read image %s: closed", r.Info.Class)
		}
	})
	return err
}

// hashCounter hashes and counts what is read through it.
type hashCounter struct {
	r        io.Reader
	h        hash.Hash
	n        int64
	progress func(int64)
}

func (c *hashCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.h.Write(p[:n])
		c.n += int64(n)
		if c.progress != nil {
			c.progress(int64(n))
		}
	}
	return n, err
}

// tarSource reads a .rota tar stream in its fixed order.
type tarSource struct {
	tr     *tar.Reader
	closer io.Closer
	names  map[string]bool
}

// nextEntry reads the next tar header and checks that it is a regular file
// with the expected name and, when size >= 0, the expected size.
func (t *tarSource) nextEntry(want string, size int64) (*tar.Header, error) {
	hdr, err := t.tr.Next()
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("%w: ends before %s", ErrTruncated, want)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read tar header before %s: %v", ErrInvalidBundle, want, err)
	}
	if err := checkEntryName(hdr.Name); err != nil {
		return nil, err
	}
	if t.names == nil {
		t.names = map[string]bool{}
	}
	if t.names[hdr.Name] {
		return nil, fmt.Errorf("%w: duplicate entry %q", ErrInvalidBundle, hdr.Name)
	}
	t.names[hdr.Name] = true
	if hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%w: entry %q is not a regular file (type %q)",
			ErrInvalidBundle, hdr.Name, hdr.Typeflag)
	}
	if hdr.Name != want {
		return nil, fmt.Errorf("%w: entry %q where %s belongs (entries out of order)",
			ErrInvalidBundle, hdr.Name, want)
	}
	if size >= 0 && hdr.Size != size {
		return nil, fmt.Errorf("%w: entry %s has %d bytes, its descriptor says %d",
			ErrDigestMismatch, want, hdr.Size, size)
	}
	return hdr, nil
}

// checkEntryName rejects absolute names, "..", and anything that is not a
// plain relative path.
func checkEntryName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") ||
		strings.ContainsRune(name, 0) {
		return fmt.Errorf("%w: unsafe entry name %q", ErrInvalidBundle, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." || part == "." || part == "" {
			return fmt.Errorf("%w: unsafe entry name %q", ErrInvalidBundle, name)
		}
	}
	return nil
}

// readSmall reads the next entry, which must be named want, whole, capped
// at MaxMetadataSize.
func (t *tarSource) readSmall(want string, size int64) ([]byte, error) {
	hdr, err := t.nextEntry(want, size)
	if err != nil {
		return nil, err
	}
	if hdr.Size > MaxMetadataSize {
		return nil, fmt.Errorf("%w: %s has %d bytes (at most %d)",
			ErrInvalidBundle, want, hdr.Size, MaxMetadataSize)
	}
	b := make([]byte, hdr.Size)
	if _, err := io.ReadFull(t.tr, b); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrTruncated, want, err)
	}
	return b, nil
}

// readBlob reads a small blob entry and checks its digest.
func (t *tarSource) readBlob(what string, d v1.Descriptor) ([]byte, error) {
	b, err := t.readSmall(blobName(d.Digest), d.Size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if got := digestOf(b); got != d.Digest {
		return nil, fmt.Errorf("%w: %s %s hashes to %s", ErrDigestMismatch, what, d.Digest, got)
	}
	return b, nil
}

// readMetadata reads everything before the first layer.
func (t *tarSource) readMetadata() (*metadata, error) {
	lay, err := t.readSmall(ociLayoutName, -1)
	if err != nil {
		return nil, err
	}
	var marker struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := decodeJSON(ociLayoutName, lay, &marker); err != nil {
		return nil, err
	}
	if marker.Version != "1.0.0" {
		return nil, fmt.Errorf("%w: OCI layout version %q (want 1.0.0)",
			ErrUnsupportedFormat, marker.Version)
	}
	rawIdx, err := t.readSmall(indexName, -1)
	if err != nil {
		return nil, err
	}
	bundleDesc, sigDescs, err := parseIndex(rawIdx)
	if err != nil {
		return nil, err
	}

	m := &metadata{manifestDigest: bundleDesc.Digest, blobs: map[v1.Hash][]byte{}}
	if m.manifestRaw, err = t.readBlob("bundle manifest", bundleDesc); err != nil {
		return nil, err
	}
	if m.manifest, err = parseManifest(m.manifestRaw); err != nil {
		return nil, err
	}
	if m.configRaw, err = t.readBlob("bundle config", m.manifest.Config); err != nil {
		return nil, err
	}
	if m.config, err = parseConfig(m.configRaw, &m.manifest); err != nil {
		return nil, err
	}
	seen := map[v1.Hash]bool{}
	for i, sd := range sigDescs {
		raw, err := t.readBlob("signature manifest", sd)
		if err != nil {
			return nil, err
		}
		sm, err := parseSigManifest(raw, m.manifestDigest)
		if err != nil {
			return nil, err
		}
		m.sigs = append(m.sigs, &sigManifest{raw: raw, digest: sd.Digest, manifest: sm})
		for _, d := range append([]v1.Descriptor{sm.Config}, sm.Layers...) {
			if seen[d.Digest] {
				continue
			}
			seen[d.Digest] = true
			b, err := t.readBlob(fmt.Sprintf("signature %d blob", i), d)
			if err != nil {
				return nil, err
			}
			m.blobs[d.Digest] = b
		}
	}
	return m, nil
}

// parseIndex checks an index.json and returns the bundle manifest's
// descriptor and the signature manifests' descriptors in order.
func parseIndex(raw []byte) (v1.Descriptor, []v1.Descriptor, error) {
	var idx v1.IndexManifest
	if err := decodeJSON(indexName, raw, &idx); err != nil {
		return v1.Descriptor{}, nil, err
	}
	if idx.SchemaVersion != 2 {
		return v1.Descriptor{}, nil, fmt.Errorf("%w: index schemaVersion %d (want 2)",
			ErrInvalidBundle, idx.SchemaVersion)
	}
	if len(idx.Manifests) == 0 || len(idx.Manifests) > 1+MaxSignatures {
		return v1.Descriptor{}, nil, fmt.Errorf("%w: index lists %d manifests (want 1 to %d)",
			ErrInvalidBundle, len(idx.Manifests), 1+MaxSignatures)
	}
	var (
		bundle *v1.Descriptor
		sigs   []v1.Descriptor
		seen   = map[v1.Hash]bool{}
	)
	for i, d := range idx.Manifests {
		if err := checkDescriptor(fmt.Sprintf("index entry %d", i), d, MaxMetadataSize); err != nil {
			return v1.Descriptor{}, nil, err
		}
		if seen[d.Digest] {
			return v1.Descriptor{}, nil, fmt.Errorf("%w: index lists %s twice",
				ErrInvalidBundle, d.Digest)
		}
		seen[d.Digest] = true
		switch {
		case i == 0 && d.ArtifactType == ArtifactType:
			bundle = &idx.Manifests[i]
		case i > 0 && d.ArtifactType == SignatureArtifactType:
			sigs = append(sigs, d)
		default:
			return v1.Descriptor{}, nil, fmt.Errorf("%w: index entry %d has artifactType %q",
				ErrInvalidBundle, i, d.ArtifactType)
		}
	}
	if bundle == nil {
		return v1.Descriptor{}, nil, fmt.Errorf("%w: index does not list a bundle manifest first",
			ErrInvalidBundle)
	}
	return *bundle, sigs, nil
}

func (t *tarSource) layer(_ context.Context, i int, d v1.Descriptor) (io.ReadCloser, error) {
	if _, err := t.nextEntry(blobName(d.Digest), d.Size); err != nil {
		return nil, fmt.Errorf("layer %d: %w", i, err)
	}
	return io.NopCloser(&tarEntryReader{r: io.LimitReader(t.tr, d.Size)}), nil
}

// tarEntryReader turns the tar reader's io.ErrUnexpectedEOF into ours.
type tarEntryReader struct{ r io.Reader }

func (t *tarEntryReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("%w: %v", ErrTruncated, err)
	}
	return n, err
}

func (t *tarSource) finish() error {
	hdr, err := t.tr.Next()
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("%w: after the last image: %v", ErrInvalidBundle, err)
	default:
		return fmt.Errorf("%w: unexpected entry %q after the last image", ErrInvalidBundle, hdr.Name)
	}
}

func (t *tarSource) Close() error {
	if t.closer != nil {
		return t.closer.Close()
	}
	return nil
}
