package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tarBlockSize is the tar block size: each entry's data is padded to a
// multiple of it.
const tarBlockSize = 512

// Parts is a bundle's metadata as a registry or an OCI layout directory
// keeps it: the bundle manifest and the signature manifests, byte for
// byte. Every other blob of the bundle is named in them by digest.
type Parts struct {
	// Manifest is the bundle manifest.
	Manifest []byte

	// Signatures are the signature manifests, in the order the .rota
	// file lists them; empty for an unsigned bundle.
	Signatures [][]byte
}

// Parts returns the bundle's manifest and signature manifests as stored,
// with those added by AddSignature.
func (b *Bundle) Parts() Parts {
	p := Parts{Manifest: bytes.Clone(b.meta.manifestRaw)}
	for _, s := range b.meta.sigs {
		p.Signatures = append(p.Signatures, bytes.Clone(s.raw))
	}
	return p
}

// parse checks the parts and returns the bundle's metadata, still
// without its config and signature blobs.
func (p Parts) parse() (*metadata, error) {
	if len(p.Manifest) > MaxMetadataSize {
		return nil, fmt.Errorf("%w: bundle manifest has %d bytes (at most %d)",
			ErrInvalidBundle, len(p.Manifest), MaxMetadataSize)
	}
	man, err := parseManifest(p.Manifest)
	if err != nil {
		return nil, err
	}
	m := &metadata{
		manifestRaw:    p.Manifest,
		manifest:       man,
		manifestDigest: digestOf(p.Manifest),
		blobs:          map[v1.Hash][]byte{},
	}
	if len(p.Signatures) > MaxSignatures {
		return nil, fmt.Errorf("%w: %d signatures (at most %d)",
			ErrInvalidBundle, len(p.Signatures), MaxSignatures)
	}
	seen := map[v1.Hash]bool{}
	for i, raw := range p.Signatures {
		if len(raw) > MaxMetadataSize {
			return nil, fmt.Errorf("%w: signature manifest %d has %d bytes (at most %d)",
				ErrInvalidBundle, i, len(raw), MaxMetadataSize)
		}
		sm, err := parseSigManifest(raw, m.manifestDigest)
		if err != nil {
			return nil, fmt.Errorf("signature manifest %d: %w", i, err)
		}
		d := digestOf(raw)
		if seen[d] {
			return nil, fmt.Errorf("%w: signature manifest %s listed twice", ErrInvalidBundle, d)
		}
		seen[d] = true
		m.sigs = append(m.sigs, &sigManifest{raw: raw, digest: d, manifest: sm})
	}
	return m, nil
}

// Blobs checks the parts and lists every blob of the bundle once, in the
// order of its .rota file: the bundle manifest, the config, each
// signature manifest followed by the blobs it introduces, then the image
// layers.
func (p Parts) Blobs() ([]v1.Descriptor, error) {
	m, err := p.parse()
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	out := []v1.Descriptor{m.manifestDescriptor(), m.manifest.Config}
	seen := map[v1.Hash]bool{}
	for _, s := range m.sigs {
		out = append(out, v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Size:      int64(len(s.raw)),
			Digest:    s.digest,
		})
		for _, d := range append([]v1.Descriptor{s.manifest.Config}, s.manifest.Layers...) {
			if !seen[d.Digest] {
				seen[d.Digest] = true
				out = append(out, d)
			}
		}
	}
	return append(out, m.manifest.Layers...), nil
}

// BlobReader reads one blob at any offset.
type BlobReader interface {
	io.ReaderAt
	io.Closer
}

// BlobOpener opens the blob that d describes. It may check d.Size against
// what it holds; it need not check the digest.
type BlobOpener func(ctx context.Context, d v1.Descriptor) (BlobReader, error)

// Assemble returns the .rota file of the bundle made of p and the blobs
// that open gives, byte for byte what Write produces for that bundle,
// without copying any layer: the tar headers, the metadata files and the
// padding are generated in memory, and layer bytes are read from their
// blobs when that part of the file is read.
//
// The config and the signature blobs are read at once and checked
// against their digests, and every layer blob is opened at once. Layers
// are not hashed: a layer blob that is shorter than its descriptor says
// makes reads fail with ErrTruncated, but one with other content is
// served as it is, and a reader of the file detects it (see Verify and
// NextImage). Signatures are not verified.
func Assemble(ctx context.Context, p Parts, open BlobOpener) (*Assembled, error) {
	m, err := p.parse()
	if err != nil {
		return nil, fmt.Errorf("assemble bundle: %w", err)
	}
	a := &Assembled{digest: m.manifestDigest.String()}
	if err := a.build(ctx, m, open); err != nil {
		a.Close()
		return nil, fmt.Errorf("assemble bundle %s: %w", a.digest, err)
	}
	return a, nil
}

// build reads m's small blobs and lays out the segments of the file.
func (a *Assembled) build(ctx context.Context, m *metadata, open BlobOpener) error {
	var err error
	if m.configRaw, err = readBlobAt(ctx, open, "bundle config", m.manifest.Config); err != nil {
		return err
	}
	if m.config, err = parseConfig(m.configRaw, &m.manifest); err != nil {
		return err
	}
	for i, s := range m.sigs {
		for _, d := range append([]v1.Descriptor{s.manifest.Config}, s.manifest.Layers...) {
			if _, ok := m.blobs[d.Digest]; ok {
				continue
			}
			what := fmt.Sprintf("signature %d blob", i)
			if m.blobs[d.Digest], err = readBlobAt(ctx, open, what, d); err != nil {
				return err
			}
		}
	}
	entries, err := m.entries()
	if err != nil {
		return err
	}

	room, err := m.firstHeaderRoom()
	if err != nil {
		return err
	}
	modTime := m.entryTime()
	var mem bytes.Buffer
	for _, e := range entries {
		tw := tar.NewWriter(&mem)
		hdrRoom := room
		if e.layer != 0 {
			hdrRoom = 0
		}
		hdr, err := layerHeader(e.name, e.size, modTime, hdrRoom)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("encode header of %s: %w", e.name, err)
		}
		if e.layer < 0 {
			mem.Write(e.data)
			mem.Write(make([]byte, padding(e.size)))
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		d := m.manifest.Layers[e.layer]
		br, err := open(ctx, d)
		if err != nil {
			return fmt.Errorf("open layer %s: %w", d.Digest, err)
		}
		a.blobs = append(a.blobs, br)
		a.addMemory(&mem)
		a.segs = append(a.segs, segment{start: a.size, n: d.Size, blob: br, digest: d.Digest})
		a.size += d.Size
		mem.Write(make([]byte, padding(e.size)))
	}
	// Closing a tar writer writes the end-of-archive blocks.
	if err := tar.NewWriter(&mem).Close(); err != nil {
		return fmt.Errorf("encode end of archive: %w", err)
	}
	a.addMemory(&mem)
	return nil
}

// padding returns the number of zero bytes after an entry of size bytes.
func padding(size int64) int64 { return -size & (tarBlockSize - 1) }

// readBlobAt reads a small blob whole through open and checks it against
// its descriptor.
func readBlobAt(ctx context.Context, open BlobOpener, what string,
	d v1.Descriptor) ([]byte, error) {
	if d.Size > MaxMetadataSize {
		return nil, fmt.Errorf("%w: %s %s has %d bytes (at most %d)",
			ErrInvalidBundle, what, d.Digest, d.Size, MaxMetadataSize)
	}
	br, err := open(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("open %s %s: %w", what, d.Digest, err)
	}
	defer br.Close()
	b := make([]byte, d.Size)
	n, err := br.ReadAt(b, 0)
	if n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			err = ErrTruncated
		}
		return nil, fmt.Errorf("read %s %s: %d of %d bytes: %w", what, d.Digest, n, d.Size, err)
	}
	if got := digestOf(b); got != d.Digest {
		return nil, fmt.Errorf("%w: %s %s hashes to %s", ErrDigestMismatch, what, d.Digest, got)
	}
	return b, nil
}

// Assembled is a bundle's .rota file assembled from its blobs by
// Assemble. Reading at any offset costs a search among a few segments
// and one read of a blob, never a re-read of what comes before. ReadAt
// may be called concurrently when the blob readers allow it; Read and
// Seek share an offset and may not.
type Assembled struct {
	digest string
	segs   []segment
	size   int64
	off    int64
	blobs  []BlobReader
}

// segment is a stretch of the file: bytes in memory, or a layer blob.
type segment struct {
	start, n int64
	data     []byte
	blob     BlobReader
	digest   v1.Hash
}

// addMemory appends what mem holds as a segment and empties mem.
func (a *Assembled) addMemory(mem *bytes.Buffer) {
	if mem.Len() == 0 {
		return
	}
	b := bytes.Clone(mem.Bytes())
	a.segs = append(a.segs, segment{start: a.size, n: int64(len(b)), data: b})
	a.size += int64(len(b))
	mem.Reset()
}

// Digest returns the digest of the bundle manifest.
func (a *Assembled) Digest() string { return a.digest }

// Size returns the size of the .rota file in bytes.
func (a *Assembled) Size() int64 { return a.size }

// ReadAt reads len(p) bytes of the file from offset off. A layer blob
// that ends early or fails to read makes it fail; it never returns bytes
// other than the file's.
func (a *Assembled) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read bundle %s: negative offset %d", a.digest, off)
	}
	if off >= a.size {
		return 0, io.EOF
	}
	i := sort.Search(len(a.segs), func(i int) bool {
		return a.segs[i].start+a.segs[i].n > off
	})
	n := 0
	for ; n < len(p) && i < len(a.segs); i++ {
		s := &a.segs[i]
		rel := off + int64(n) - s.start
		k := int(min(int64(len(p)-n), s.n-rel))
		if s.blob == nil {
			copy(p[n:n+k], s.data[rel:])
			n += k
			continue
		}
		got, err := s.blob.ReadAt(p[n:n+k], rel)
		if got < k {
			if err == nil || errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: blob ends after %d of %d bytes", ErrTruncated, rel+int64(got), s.n)
			}
			return n + got, fmt.Errorf("read bundle %s: layer %s: %w", a.digest, s.digest, err)
		}
		n += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Read reads from the current offset.
func (a *Assembled) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := a.ReadAt(p, a.off)
	a.off += int64(n)
	if n > 0 && errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

// Seek sets the offset of the next Read, as io.Seeker says.
func (a *Assembled) Seek(offset int64, whence int) (int64, error) {
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = a.off
	case io.SeekEnd:
		base = a.size
	default:
		return 0, fmt.Errorf("seek bundle %s: invalid whence %d", a.digest, whence)
	}
	off := base + offset
	if off < 0 {
		return 0, fmt.Errorf("seek bundle %s: negative offset %d", a.digest, off)
	}
	a.off = off
	return off, nil
}

// Close closes the layer blob readers. Closing again does nothing.
func (a *Assembled) Close() error {
	var errs []error
	for _, b := range a.blobs {
		if err := b.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	a.blobs = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close bundle %s: %w", a.digest, err)
	}
	return nil
}
