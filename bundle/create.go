package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// Compression defaults for Create.
const (
	// DefaultCompressionLevel is the zstd level Create uses when
	// CreateOptions.Level is zero: comparable to the zstd tool's -3.
	DefaultCompressionLevel = zstd.SpeedDefault

	// DefaultWindowSize is the zstd window Create uses, the window of the
	// zstd tool's -3.
	DefaultWindowSize = 2 << 20

	// MaxConcurrency caps the compression goroutines Create starts when
	// CreateOptions.Concurrency is zero, which bounds its memory on
	// machines with many cores.
	MaxConcurrency = 8
)

// Spec describes the bundle Create builds.
type Spec struct {
	// Compatible names the device kind; required.
	Compatible string

	// Version is the release's semantic version; required.
	Version string

	// RollbackIndex is the rollback counter; zero is the lowest.
	RollbackIndex uint64

	// Created is the creation time recorded in the config and the tar
	// headers; zero means now. Equal inputs with equal Created and key give
	// equal files, apart from randomized (ECDSA) signature bytes.
	Created time.Time

	// Description is optional free text.
	Description string

	// MinAgentVersion is the lowest agent version that may install the
	// bundle; empty means any.
	MinAgentVersion string

	// Images are the slot images in install order.
	Images []ImageSource
}

// ImageSource is one slot image to put into a bundle.
type ImageSource struct {
	// Class is the slot class the image installs to (rootfs, boot, ...).
	Class string

	// Path is a raw image file or block device, or a directory, which is
	// stored as a file tree (a tar archive).
	Path string

	// Filesystem is the image's filesystem type; empty means detected from
	// the image (ext2/3/4, squashfs, erofs, vfat, btrfs, xfs) or left empty.
	Filesystem string
}

// CreateOptions tunes Create. The zero value creates an unsigned bundle
// with the defaults.
type CreateOptions struct {
	// Signers sign the bundle; a bundle without signature cannot be
	// verified, so give at least one.
	Signers []*Signer

	// TempDir holds the compressed layers while the bundle is built, when
	// they cannot go straight into the output; "" means os.TempDir().
	// The files are unlinked as soon as they are made, where the system
	// allows it, so that a killed process leaves none behind.
	TempDir string

	// Concurrency is the number of compression goroutines; zero means
	// GOMAXPROCS, at most MaxConcurrency.
	Concurrency int

	// Level is the zstd encoder level; zero means DefaultCompressionLevel.
	Level zstd.EncoderLevel

	// ChunkSize is the uncompressed size of each zstd frame, a multiple
	// of 4096 up to MaxChunkSize; zero means DefaultChunkSize. Smaller
	// chunks give finer resume points and cost ratio.
	ChunkSize int64

	// Progress, when set, is called with the number of input bytes
	// consumed, as they are consumed; the total is in the Total callback.
	Progress func(n int64)

	// Total, when set, is called once before compression starts with the
	// total number of input bytes (raw images only; trees count as read).
	Total func(n int64)
}

// Info describes a bundle that was written.
type Info struct {
	// Digest is the digest of the bundle manifest: the bundle's identity.
	Digest string

	// Config is the bundle config.
	Config Config

	// Signatures are the attached signatures.
	Signatures []Signature

	// Size is the number of bytes written.
	Size int64
}

// Create builds a bundle from spec and writes it as a .rota file to w.
// Images are streamed from disk, compressed and hashed at once, so memory
// use does not grow with image size. When w is a regular
// *os.File and the images are raw image files, each layer is compressed
// straight to its place in the file (see docs/bundle-format.md, reserved
// offset) and the metadata is written in front of the layers at the end;
// otherwise each layer is compressed to a temporary file in
// CreateOptions.TempDir first. On Linux, image files are mapped rather
// than read, hashed through a mapping of their own so that hashing runs
// ahead of compression, and their holes are skipped unread. An image file
// must not change while Create reads it: one that shrinks fails with
// ErrImageChanged, and one changed in place can give a bundle whose
// digests do not match its layers, which readers refuse. The output is
// the same whatever w is.
func Create(ctx context.Context, w io.Writer, spec Spec, opts CreateOptions) (*Info, error) {
	created := spec.Created
	if created.IsZero() {
		created = time.Now()
	}
	cfg := Config{
		FormatVersion:   FormatVersion,
		Compatible:      spec.Compatible,
		Version:         spec.Version,
		RollbackIndex:   spec.RollbackIndex,
		Created:         created.UTC().Truncate(time.Second),
		Description:     spec.Description,
		MinAgentVersion: spec.MinAgentVersion,
	}
	for _, src := range spec.Images {
		cfg.Images = append(cfg.Images, ImageInfo{Class: src.Class, SHA256: zeroSHA,
			Filesystem: src.Filesystem})
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.ChunkSize < 4096 || opts.ChunkSize > MaxChunkSize || opts.ChunkSize%4096 != 0 {
		return nil, fmt.Errorf("create bundle: chunk size %d: want a multiple of 4096 up to %d",
			opts.ChunkSize, MaxChunkSize)
	}
	if opts.Total != nil {
		opts.Total(rawInputSize(spec.Images))
	}

	reserved, err := plannedOffset(cfg, spec, opts)
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	if f, ok := w.(*os.File); ok && reserved != 0 {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			return createInFile(ctx, f, cfg, spec, opts, reserved)
		}
	}

	layers := make([]*stagedLayer, 0, len(spec.Images))
	defer func() {
		for _, l := range layers {
			l.remove()
		}
	}()
	for i, src := range spec.Images {
		l, err := stageImage(ctx, src, opts)
		if err != nil {
			return nil, fmt.Errorf("create bundle: image %s: %w", src.Class, err)
		}
		layers = append(layers, l)
		cfg.Images[i] = l.info
	}
	m, err := newSignedMetadata(cfg, layers, opts)
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	return writeStaged(ctx, w, m, layers)
}

// newSignedMetadata builds and signs the metadata of a bundle.
func newSignedMetadata(cfg Config, layers []*stagedLayer, opts CreateOptions) (*metadata, error) {
	m, err := newMetadata(cfg, layers)
	if err != nil {
		return nil, err
	}
	for _, s := range opts.Signers {
		if err := m.addSignature(s, cfg.Created); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// writeStaged writes the .rota file of m, whose layers are in temporary
// files, to w.
func writeStaged(ctx context.Context, w io.Writer, m *metadata, layers []*stagedLayer) (*Info, error) {
	cw := &countingWriter{w: w}
	open := func(_ context.Context, i int, _ v1.Descriptor) (io.ReadCloser, error) {
		if _, err := layers[i].f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		return stagedFile{layers[i].f}, nil
	}
	if err := writeLayoutOpts(ctx, cw, m, open, nil, false); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	return m.info(cw.n), nil
}

func (m *metadata) info(size int64) *Info {
	return &Info{
		Digest:     m.manifestDigest.String(),
		Config:     m.config,
		Signatures: m.signatures(),
		Size:       size,
	}
}

// createInFile is Create for an output file when the layers' place is
// reserved: each layer is compressed straight to its place in f, its
// writeback to disk started as it goes, and the metadata and tar headers
// are written in front of the layers at the end.
func createInFile(ctx context.Context, f *os.File, cfg Config, spec Spec, opts CreateOptions,
	reserved int64) (*Info, error) {
	base, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	var layers []*stagedLayer
	off := reserved // of the next layer's data, from base
	for i, src := range spec.Images {
		if i > 0 {
			off += tarBlockSize
		}
		if _, err := f.Seek(base+off, io.SeekStart); err != nil {
			return nil, fmt.Errorf("create bundle: %w", err)
		}
		l := &stagedLayer{off: off}
		l.info, l.desc, err = compressImage(ctx, src, opts, &writebackWriter{f: f, off: base + off, done: base + off})
		if err != nil {
			return nil, fmt.Errorf("create bundle: image %s: %w", src.Class, err)
		}
		layers = append(layers, l)
		cfg.Images[i] = l.info
		off += l.desc.Size + padding(l.desc.Size)
	}
	m, err := newSignedMetadata(cfg, layers, opts)
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}

	var head bytes.Buffer
	meta, err := encodeMetadata(m, &head)
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	var room int64
	if final, err := reservedOffset(m.config, len(m.sigs)); err == nil && final == reserved {
		room = firstHeaderRoom(reserved, meta)
	}
	if room == 0 {
		// The images changed size or the bound was wrong: move the
		// layers out of the way and write the file as Write would.
		return moveAndWrite(ctx, f, base, m, layers, opts.TempDir)
	}
	for i, l := range layers {
		if i == 0 {
			h, err := encodeHeader(blobName(l.desc.Digest), l.desc.Size, m, room)
			if err != nil {
				return nil, fmt.Errorf("create bundle: %w", err)
			}
			head.Write(h)
			if int64(head.Len()) != reserved {
				return nil, fmt.Errorf("create bundle: metadata and first header take %d bytes, not %d",
					head.Len(), reserved)
			}
			if _, err := f.WriteAt(head.Bytes(), base); err != nil {
				return nil, fmt.Errorf("create bundle: %w", err)
			}
		} else {
			h, err := encodeHeader(blobName(l.desc.Digest), l.desc.Size, m, 0)
			if err != nil {
				return nil, fmt.Errorf("create bundle: %w", err)
			}
			if _, err := f.WriteAt(h, base+l.off-tarBlockSize); err != nil {
				return nil, fmt.Errorf("create bundle: %w", err)
			}
		}
		end := l.off + l.desc.Size
		if _, err := f.WriteAt(make([]byte, padding(l.desc.Size)), base+end); err != nil {
			return nil, fmt.Errorf("create bundle: %w", err)
		}
	}
	// The end-of-archive marker: two zero blocks.
	if _, err := f.WriteAt(make([]byte, 2*tarBlockSize), base+off); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	size := off + 2*tarBlockSize
	if _, err := f.Seek(base+size, io.SeekStart); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	return m.info(size), nil
}

// moveAndWrite copies layers written in place in f to temporary files,
// then writes f afresh from base.
func moveAndWrite(ctx context.Context, f *os.File, base int64, m *metadata, layers []*stagedLayer,
	tempDir string) (*Info, error) {
	defer func() {
		for _, l := range layers {
			if l.f != nil {
				l.remove()
			}
		}
	}()
	for _, l := range layers {
		tmp, err := newTempLayer(tempDir)
		if err != nil {
			return nil, fmt.Errorf("create bundle: %w", err)
		}
		l.f, l.named = tmp.f, tmp.named
		src := io.NewSectionReader(f, base+l.off, l.desc.Size)
		if _, err := io.Copy(l.f, src); err != nil {
			return nil, fmt.Errorf("create bundle: move layer: %w", err)
		}
	}
	if err := f.Truncate(base); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	if _, err := f.Seek(base, io.SeekStart); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	return writeStaged(ctx, f, m, layers)
}

// writebackWriter writes to a file from offset off on and starts the
// writeback to disk of every writebackSize bytes it writes.
type writebackWriter struct {
	f         *os.File
	off, done int64
}

func (w *writebackWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.done >= writebackSize {
		startWriteback(w.f, w.done, w.off-w.done)
		w.done = w.off
	}
	return n, err
}

// zeroSHA stands in for an image digest while the config is validated
// before images are hashed.
const zeroSHA = "0000000000000000000000000000000000000000000000000000000000000000"

// newMetadata builds the manifest for cfg and staged layers.
func newMetadata(cfg Config, layers []*stagedLayer) (*metadata, error) {
	cfgRaw, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	man := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  ArtifactType,
		Config: v1.Descriptor{
			MediaType: ConfigMediaType,
			Size:      int64(len(cfgRaw)),
			Digest:    digestOf(cfgRaw),
		},
		Annotations: map[string]string{annotationCreated: cfg.Created.Format(time.RFC3339)},
	}
	seen := map[v1.Hash]string{}
	for _, l := range layers {
		if other, dup := seen[l.desc.Digest]; dup {
			return nil, fmt.Errorf("images %s and %s have identical content", other, l.info.Class)
		}
		seen[l.desc.Digest] = l.info.Class
		man.Layers = append(man.Layers, l.desc)
	}
	raw, err := json.Marshal(man)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return &metadata{
		manifestRaw:    raw,
		manifest:       man,
		manifestDigest: digestOf(raw),
		configRaw:      cfgRaw,
		config:         cfg,
		blobs:          map[v1.Hash][]byte{},
	}, nil
}

// stagedLayer is a compressed image in a temporary file, or at offset
// off of the output file when f is nil.
type stagedLayer struct {
	f     *os.File
	named bool // still has a name to remove
	off   int64
	desc  v1.Descriptor
	info  ImageInfo
}

func (l *stagedLayer) remove() {
	l.f.Close()
	if l.named {
		os.Remove(l.f.Name())
	}
}

// newTempLayer creates an empty temporary layer file in dir.
func newTempLayer(dir string) (*stagedLayer, error) {
	tmp, err := os.CreateTemp(dir, ".rota-layer-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary layer: %w", err)
	}
	// Unlinked at once where the system allows it, the file cannot
	// outlive a killed process.
	return &stagedLayer{f: tmp, named: os.Remove(tmp.Name()) != nil}, nil
}

// stageImage compresses one image into a temporary file.
func stageImage(ctx context.Context, src ImageSource, opts CreateOptions) (*stagedLayer, error) {
	l, err := newTempLayer(opts.TempDir)
	if err != nil {
		return nil, err
	}
	l.info, l.desc, err = compressImage(ctx, src, opts, l.f)
	if err != nil {
		l.remove()
		return nil, err
	}
	return l, nil
}

// compressImage compresses one image to w, hashing both the input and the
// output on the way.
func compressImage(ctx context.Context, src ImageSource, opts CreateOptions,
	w io.Writer) (ImageInfo, v1.Descriptor, error) {
	fi, err := os.Stat(src.Path)
	if err != nil {
		return ImageInfo{}, v1.Descriptor{}, err
	}
	var (
		in        io.Reader
		mediaType = RawImageMediaType
		fs        = src.Filesystem
		progress  func(int64)
	)
	if fi.IsDir() {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeTree(ctx, pw, src.Path)) }()
		defer pr.Close()
		in, mediaType, fs = pr, TreeImageMediaType, "tar"
	} else {
		f, err := os.Open(src.Path)
		if err != nil {
			return ImageInfo{}, v1.Descriptor{}, err
		}
		defer f.Close()
		if fs == "tar" {
			return ImageInfo{}, v1.Descriptor{}, fmt.Errorf("filesystem type tar is only for directories")
		}
		if fs == "" {
			fs = detectFilesystem(f)
		}
		in, progress = f, opts.Progress
	}

	uh := sha256.New()
	ch := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(w, ch)}
	n, frames, err := compress(ctx, cw, in, uh, progress, opts)
	if err != nil {
		return ImageInfo{}, v1.Descriptor{}, err
	}
	info := ImageInfo{Class: src.Class, Size: n, SHA256: hexSum(uh), Filesystem: fs}
	if n > 0 {
		info.ChunkSize, info.Frames = opts.ChunkSize, frames
	}
	desc := v1.Descriptor{
		MediaType:   types.MediaType(mediaType),
		Size:        cw.n,
		Digest:      v1.Hash{Algorithm: "sha256", Hex: hexSum(ch)},
		Annotations: map[string]string{AnnotationClass: src.Class},
	}
	if err := info.validate(); err != nil {
		return ImageInfo{}, v1.Descriptor{}, err
	}
	return info, desc, nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

func rawInputSize(images []ImageSource) int64 {
	var total int64
	for _, im := range images {
		if fi, err := os.Stat(im.Path); err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
	}
	return total
}

// countingWriter counts what passes through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// progressReader reports each read's byte count.
type progressReader struct {
	r  io.Reader
	fn func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.fn(int64(n))
	}
	return n, err
}

// ctxReader stops reading once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// detectFilesystem recognises a filesystem from its superblock magic. It
// returns "" when it does not recognise one.
func detectFilesystem(r io.ReaderAt) string {
	buf := make([]byte, 64<<10+128)
	n, err := r.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	buf = buf[:n]
	at := func(off int, magic string) bool {
		return len(buf) >= off+len(magic) && string(buf[off:off+len(magic)]) == magic
	}
	switch {
	case at(0x438, "\x53\xef"):
		// ext2/3/4 superblock at 1024; feature flags tell them apart.
		incompat := le32(buf[0x460:])
		compat := le32(buf[0x45c:])
		switch {
		case incompat&0x2c0 != 0: // extents, 64bit, flex_bg
			return "ext4"
		case compat&0x4 != 0: // has_journal
			return "ext3"
		}
		return "ext2"
	case at(0, "hsqs"):
		return "squashfs"
	case at(1024, "\xe2\xe1\xf5\xe0"):
		return "erofs"
	case at(0x10040, "_BHRfS_M"):
		return "btrfs"
	case at(0, "XFSB"):
		return "xfs"
	case at(0x52, "FAT32   ") || at(0x36, "FAT16   ") || at(0x36, "FAT12   "):
		return "vfat"
	}
	return ""
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
