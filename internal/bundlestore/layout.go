package bundlestore

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/atomicfile"
)

// copyBufferSize is the buffer used to copy blobs into a layout.
const copyBufferSize = 1 << 20

// Layout is a Store that keeps bundles in an OCI image layout directory:
// oci-layout, index.json and blobs/sha256/<hex>. Each bundle is an entry
// of index.json for its manifest, named "sha256-<hex>.rota" and annotated
// with when it was stored, followed by one entry per signature manifest
// annotated with the bundle's digest. Blobs shared by bundles are kept
// once.
//
// Writers (Put and Delete) hold a lock, an flock(2) on the file
// .rota-lock in the directory, while they change index.json or remove
// blobs, so that several processes may share the directory. Other tools
// may read the directory at any time, but must not write to it while a
// Delete runs: its garbage collection removes every blob that no entry
// of index.json refers to.
type Layout struct {
	dir  string
	lock *dirLock
	now  func() time.Time
}

var _ Store = (*Layout)(nil)

// OpenLayout opens the OCI image layout directory dir as a Store. A
// missing directory, oci-layout or index.json is created; a layout of
// another version or an index.json that does not parse is refused.
func OpenLayout(dir string) (*Layout, error) {
	l := &Layout{dir: dir, lock: newDirLock(filepath.Join(dir, lockName)), now: time.Now}
	if err := os.MkdirAll(l.blobDir(), 0o755); err != nil {
		return nil, fmt.Errorf("open bundle layout %s: %w", dir, err)
	}
	unlock, err := l.lock.lock(context.Background())
	if err != nil {
		return nil, fmt.Errorf("open bundle layout %s: %w", dir, err)
	}
	defer unlock()
	if err := l.init(); err != nil {
		return nil, fmt.Errorf("open bundle layout %s: %w", dir, err)
	}
	return l, nil
}

// init checks or writes the oci-layout marker and writes an empty
// index.json if there is none.
func (l *Layout) init() error {
	path := filepath.Join(l.dir, ociLayoutName)
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := atomicfile.WriteBytes(path, ociLayoutFile, 0o644); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		var marker struct {
			Version string `json:"imageLayoutVersion"`
		}
		if err := json.Unmarshal(raw, &marker); err != nil {
			return fmt.Errorf("parse %s: %w", path, err)
		}
		if marker.Version != "1.0.0" {
			return fmt.Errorf("%s: OCI layout version %q (want 1.0.0)", path, marker.Version)
		}
	}
	if _, err := os.Stat(filepath.Join(l.dir, indexName)); errors.Is(err, fs.ErrNotExist) {
		return l.writeIndex(emptyIndex())
	}
	_, err = l.readIndex()
	return err
}

// Dir returns the layout directory.
func (l *Layout) Dir() string { return l.dir }

func (l *Layout) blobDir() string { return filepath.Join(l.dir, "blobs", "sha256") }

// blobPath returns the file of a blob; h must be a sha256 digest whose
// hex part was checked.
func (l *Layout) blobPath(h v1.Hash) string { return filepath.Join(l.blobDir(), h.Hex) }

func (l *Layout) location(h v1.Hash) string { return l.dir + "@" + h.String() }

// Put copies every blob of the .rota file at path into the layout, each
// through a synced temporary file renamed into place once its size and
// digest matched, and only then lists the bundle in index.json. A
// failure leaves nothing listed; blobs already copied stay, unreferenced,
// until a Delete collects them.
func (l *Layout) Put(ctx context.Context, path string) (Entry, error) {
	b, err := bundle.Open(path, bundle.Options{})
	if err != nil {
		return Entry{}, fmt.Errorf("store bundle: %w", err)
	}
	parts := b.Parts()
	h, err := v1.NewHash(b.Digest())
	b.Close()
	if err != nil {
		return Entry{}, fmt.Errorf("store bundle %s: %w", path, err)
	}
	if e, err := l.entry(ctx, h); err == nil {
		return e, nil
	}
	blobs, err := parts.Blobs()
	if err != nil {
		return Entry{}, fmt.Errorf("store bundle %s: %w", h, err)
	}
	src, err := openSource(path)
	if err != nil {
		return Entry{}, fmt.Errorf("store bundle %s: %w", h, err)
	}
	defer src.Close()

	// The large copies happen without the lock, so that writers do not
	// wait for each other; the lock then covers checking that every blob
	// is still there (a Delete may have collected it meanwhile) and
	// listing the bundle.
	for _, d := range blobs {
		if err := l.storeBlob(ctx, src, d); err != nil {
			return Entry{}, fmt.Errorf("store bundle %s: %w", h, err)
		}
	}
	unlock, err := l.lock.lock(ctx)
	if err != nil {
		return Entry{}, fmt.Errorf("store bundle %s: %w", h, err)
	}
	err = l.commit(ctx, src, h, parts, blobs)
	unlock()
	if err != nil {
		return Entry{}, fmt.Errorf("store bundle %s: %w", h, err)
	}
	return l.entry(ctx, h)
}

// commit lists bundle h in index.json once all its blobs are in place.
// The caller holds the lock.
func (l *Layout) commit(ctx context.Context, src *source, h v1.Hash, parts bundle.Parts,
	blobs []v1.Descriptor) error {
	for _, d := range blobs {
		if err := l.storeBlob(ctx, src, d); err != nil {
			return err
		}
	}
	ix, err := l.readIndex()
	if err != nil {
		return err
	}
	if _, _, ok := ix.find(h); ok {
		return nil
	}
	entries := []v1.Descriptor{{
		MediaType:    types.OCIManifestSchema1,
		Size:         int64(len(parts.Manifest)),
		Digest:       h,
		ArtifactType: bundle.ArtifactType,
		Annotations: map[string]string{
			annotationRefName: refName(h),
			AnnotationStored:  l.now().UTC().Format(time.RFC3339Nano),
		},
	}}
	for _, raw := range parts.Signatures {
		sum := sha256.Sum256(raw)
		entries = append(entries, v1.Descriptor{
			MediaType:    types.OCIManifestSchema1,
			Size:         int64(len(raw)),
			Digest:       v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])},
			ArtifactType: bundle.SignatureArtifactType,
			Annotations:  map[string]string{AnnotationSubject: h.String()},
		})
	}
	if err := ix.add(entries...); err != nil {
		return err
	}
	return l.writeIndex(ix)
}

// storeBlob copies blob d from src into the layout unless a file of its
// size is there already. The copy is hashed on the way and renamed into
// place only if it matches d.
func (l *Layout) storeBlob(ctx context.Context, src *source, d v1.Descriptor) error {
	loc, ok := src.blobs[d.Digest]
	if !ok {
		return fmt.Errorf("%w: blob %s is not in the file", bundle.ErrInvalidBundle, d.Digest)
	}
	if loc.size != d.Size {
		return fmt.Errorf("%w: blob %s has %d bytes, its descriptor says %d",
			bundle.ErrDigestMismatch, d.Digest, loc.size, d.Size)
	}
	path := l.blobPath(d.Digest)
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Size() == d.Size {
		return nil
	}
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		return copyVerified(ctx, w, io.NewSectionReader(src.f, loc.off, d.Size), d)
	})
}

// copyVerified copies a blob from r to w and checks its size and digest.
func copyVerified(ctx context.Context, w io.Writer, r io.Reader, d v1.Descriptor) error {
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(w, h), &ctxReader{ctx: ctx, r: r},
		make([]byte, copyBufferSize))
	if err != nil {
		return fmt.Errorf("copy blob %s: %w", d.Digest, err)
	}
	if n != d.Size {
		return fmt.Errorf("copy blob %s: %w: %d of %d bytes", d.Digest, bundle.ErrTruncated, n, d.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Digest.Hex {
		return fmt.Errorf("copy blob %s: %w: content hashes to sha256:%s",
			d.Digest, bundle.ErrDigestMismatch, got)
	}
	return nil
}

// ctxReader fails reads once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// source is a .rota file being stored: where each blob's bytes are.
type source struct {
	f     *os.File
	blobs map[v1.Hash]extent
}

type extent struct{ off, size int64 }

// openSource opens a .rota file and finds its blob entries.
func openSource(path string) (*source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	s := &source{f: f, blobs: map[v1.Hash]extent{}}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			f.Close()
			return nil, fmt.Errorf("%w: read %s: %v", bundle.ErrTruncated, path, err)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: read %s: %v", bundle.ErrInvalidBundle, path, err)
		}
		// tar.Reader reads headers exactly and seeks over data, so the
		// file offset is where this entry's data starts.
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		hx, ok := cutBlobName(hdr.Name)
		if ok && hdr.Typeflag == tar.TypeReg {
			s.blobs[v1.Hash{Algorithm: "sha256", Hex: hx}] = extent{off: off, size: hdr.Size}
		}
	}
}

func cutBlobName(name string) (string, bool) {
	const prefix = "blobs/sha256/"
	if len(name) != len(prefix)+64 || name[:len(prefix)] != prefix || !isHex64(name[len(prefix):]) {
		return "", false
	}
	return name[len(prefix):], true
}

func (s *source) Close() error { return s.f.Close() }

// Open returns the stored bundle as a .rota file, assembled from the
// layout's blobs as it is read (see bundle.Assemble). The file keeps the
// layer blobs open, so a download under way completes even if the bundle
// is deleted meanwhile.
func (l *Layout) Open(ctx context.Context, digest string) (File, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return nil, fmt.Errorf("open bundle: %w", err)
	}
	f, err := l.open(ctx, h)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (l *Layout) open(ctx context.Context, h v1.Hash) (*file, error) {
	ix, err := l.readIndex()
	if err != nil {
		return nil, fmt.Errorf("open bundle %s: %w", h, err)
	}
	bd, sigs, ok := ix.find(h)
	if !ok {
		return nil, fmt.Errorf("open bundle %s: %w", h, ErrNotFound)
	}
	f, err := l.assemble(ctx, bd, sigs)
	if errors.Is(err, fs.ErrNotExist) {
		// A Delete may have removed the bundle after the index was read.
		if ix, err := l.readIndex(); err == nil {
			if _, _, ok := ix.find(h); !ok {
				return nil, fmt.Errorf("open bundle %s: %w", h, ErrNotFound)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open bundle %s: %w", h, err)
	}
	return f, nil
}

// assemble reads the manifests of a bundle and assembles its file.
func (l *Layout) assemble(ctx context.Context, bd v1.Descriptor,
	sigs []v1.Descriptor) (*file, error) {
	var parts bundle.Parts
	var err error
	if parts.Manifest, err = l.readSmall(bd); err != nil {
		return nil, err
	}
	for _, d := range sigs {
		raw, err := l.readSmall(d)
		if err != nil {
			return nil, err
		}
		parts.Signatures = append(parts.Signatures, raw)
	}
	a, err := bundle.Assemble(ctx, parts, l.openBlob)
	if err != nil {
		return nil, err
	}
	// A missing or malformed time is left zero, which HTTP serving
	// treats as unknown, rather than making the bundle unreadable.
	stored, _ := time.Parse(time.RFC3339Nano, bd.Annotations[AnnotationStored])
	return &file{Assembled: a, modTime: stored}, nil
}

// readSmall reads a manifest blob whole and checks it against d.
func (l *Layout) readSmall(d v1.Descriptor) ([]byte, error) {
	if d.Size < 0 || d.Size > bundle.MaxMetadataSize {
		return nil, fmt.Errorf("%w: manifest %s has %d bytes (at most %d)",
			bundle.ErrInvalidBundle, d.Digest, d.Size, bundle.MaxMetadataSize)
	}
	f, err := os.Open(l.blobPath(d.Digest))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", d.Digest, err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, d.Size+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", d.Digest, err)
	}
	sum := sha256.Sum256(raw)
	if int64(len(raw)) != d.Size || hex.EncodeToString(sum[:]) != d.Digest.Hex {
		return nil, fmt.Errorf("%w: manifest %s on disk", bundle.ErrDigestMismatch, d.Digest)
	}
	return raw, nil
}

// openBlob opens a blob file for Assemble, checking its size.
func (l *Layout) openBlob(_ context.Context, d v1.Descriptor) (bundle.BlobReader, error) {
	f, err := os.Open(l.blobPath(d.Digest))
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.Size() != d.Size {
		f.Close()
		return nil, fmt.Errorf("%w: blob %s has %d bytes on disk, its descriptor says %d",
			bundle.ErrDigestMismatch, d.Digest, fi.Size(), d.Size)
	}
	return f, nil
}

// entry describes stored bundle h.
func (l *Layout) entry(ctx context.Context, h v1.Hash) (Entry, error) {
	f, err := l.open(ctx, h)
	if err != nil {
		return Entry{}, err
	}
	defer f.Close()
	return Entry{Digest: h.String(), Size: f.Size(), Location: l.location(h)}, nil
}

// Delete removes the bundle from index.json, then removes every blob that
// no remaining entry refers to, all under the lock. Deleting a bundle not
// stored only collects unreferenced blobs, such as those a failed Put
// left.
func (l *Layout) Delete(ctx context.Context, digest string) error {
	h, err := parseDigest(digest)
	if err != nil {
		return fmt.Errorf("delete bundle: %w", err)
	}
	unlock, err := l.lock.lock(ctx)
	if err != nil {
		return fmt.Errorf("delete bundle %s: %w", h, err)
	}
	defer unlock()
	ix, err := l.readIndex()
	if err != nil {
		return fmt.Errorf("delete bundle %s: %w", h, err)
	}
	if ix.remove(h) {
		if err := l.writeIndex(ix); err != nil {
			return fmt.Errorf("delete bundle %s: %w", h, err)
		}
	}
	if err := l.collect(ix); err != nil {
		return fmt.Errorf("delete bundle %s: %w", h, err)
	}
	return nil
}
