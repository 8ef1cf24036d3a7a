package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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
	workers  int
}

// layerSource yields compressed layers in manifest order.
type layerSource interface {
	// layer returns layer i, bounded to d.Size bytes. Layers are requested
	// in increasing order; skipping is allowed.
	layer(ctx context.Context, i int, d v1.Descriptor) (io.ReadCloser, error)

	// finish checks what follows the last layer and releases resources.
	finish() error

	// offset returns the stream offset of the data of the layer last
	// returned by layer, or -1 when the source is not a stream.
	offset() int64

	Close() error
}

// Options tunes how a bundle is read. The zero value is ready to use.
type Options struct {
	// Progress, when set, is called with the number of compressed image
	// bytes consumed, as they are consumed. Bundle.LayerSize is the total.
	// It may be called from another goroutine than the reader's.
	Progress func(n int64)

	// Concurrency is the number of frames decompressed at once; each
	// holds up to a chunk (4 MiB) in memory. Zero means GOMAXPROCS, at
	// most MaxConcurrency. Memory-constrained agents use 1.
	Concurrency int
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
	ts := newTarSource(r, c, 0)
	m, err := ts.readMetadata()
	if err != nil {
		return nil, err
	}
	return &Bundle{meta: m, src: ts, progress: opts.Progress, workers: opts.Concurrency}, nil
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
	ir, err := newImageReader(rc, d, b.meta.config.Images[i],
		imageStart{index: i, fileOffset: b.src.offset(), workers: b.workers}, b.progress)
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
	tr      *tar.Reader
	cnt     *countReader
	closer  io.Closer
	names   map[string]bool
	lastOff int64
}

// newTarSource reads a tar stream from r, whose first byte is at offset
// base of the .rota file.
func newTarSource(r io.Reader, c io.Closer, base int64) *tarSource {
	cnt := &countReader{r: r, n: base}
	var tr *tar.Reader
	if rs, ok := r.(io.ReadSeeker); ok {
		// Let tar.Reader seek over layers it skips.
		tr = tar.NewReader(&countSeeker{countReader: cnt, s: rs})
	} else {
		tr = tar.NewReader(cnt)
	}
	return &tarSource{tr: tr, cnt: cnt, closer: c, lastOff: -1}
}

// countSeeker is a countReader over a seekable file.
type countSeeker struct {
	*countReader
	s io.Seeker
}

func (c *countSeeker) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekCurrent {
		return 0, errors.New("seek: only relative seeks are supported")
	}
	pos, err := c.s.Seek(off, whence)
	if err == nil {
		c.n += off
	}
	return pos, err
}

// countReader counts the bytes read through it. tar.Reader reads headers
// exactly, so after Next the count is the offset of the entry's data.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (t *tarSource) offset() int64 { return t.lastOff }

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
	t.lastOff = t.cnt.n
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
