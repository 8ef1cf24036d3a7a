package bundlestore

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rotaupdate/rota/bundle"
)

// Types of the file blob a Registry keeps with RegistryOptions.FileBlob.
const (
	// FileArtifactType is the artifactType of the referrer manifest that
	// names a bundle's .rota file blob. Its subject is the bundle
	// manifest, its config the empty descriptor and its one layer the
	// file blob.
	FileArtifactType = "application/vnd.rota.bundle.file.v1"

	// FileMediaType is the media type of a bundle's .rota file blob.
	FileMediaType = "application/vnd.rota.bundle.file.v1.tar"
)

// Limits of the download URLs a Registry remembers.
const (
	// maxCachedURLs caps their number; past it the memory starts over.
	maxCachedURLs = 4096

	// urlLifetime is how long one is used before the registry is asked
	// again, so that a bundle another process deleted stops being sent
	// to its file blob soon.
	urlLifetime = time.Minute
)

// foundURL is a download URL and when it was found.
type foundURL struct {
	url string
	at  time.Time
}

// emptyConfig is the empty JSON config of a file referrer manifest.
var emptyConfig = []byte("{}")

// DownloadURL returns the absolute address of the bundle's .rota file
// blob, "<scheme>://<registry>/v2/<repository>/blobs/sha256:<hex>", which
// serves byte for byte what Open returns and answers Range requests. The
// first call for a bundle checks with a one-byte ranged GET, made without
// credentials as a device makes it, that the blob is there, of the right
// size and readable anonymously; the address is then remembered for a
// minute.
//
// It returns an error wrapping ErrNotFound when the bundle has no file
// blob, as for one put without RegistryOptions.FileBlob or not stored,
// and ErrInvalidDigest for a malformed digest. Any error means the
// caller should serve the bundle itself.
func (r *Registry) DownloadURL(ctx context.Context, digest string) (string, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return "", fmt.Errorf("find download url: %w", err)
	}
	if u, ok := r.cachedURL(h); ok {
		return u, nil
	}
	d, err := r.findFile(h, r.remoteOptions(ctx))
	if err != nil {
		return "", fmt.Errorf("find download url of bundle %s in %s: %w", h, r.repo, err)
	}
	u := r.blobURL(d.Digest)
	if err := r.probe(ctx, u, d.Size); err != nil {
		return "", fmt.Errorf("find download url of bundle %s in %s: %w", h, r.repo, err)
	}
	r.rememberURL(h, u)
	return u, nil
}

// findFile returns the file blob named by a referrer of bundle h;
// ErrNotFound if no referrer names one. Other referrers are skipped, as
// are those that cannot be read when one of the others names the blob.
func (r *Registry) findFile(h v1.Hash, opts []remote.Option) (v1.Descriptor, error) {
	idx, err := remote.Referrers(r.repo.Digest(h.String()), opts...)
	if isNotFound(err) {
		return v1.Descriptor{}, ErrNotFound
	}
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("list referrers: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("list referrers: %w", err)
	}
	var failed error
	for i, d := range im.Manifests {
		if i >= bundle.MaxReferrers {
			break
		}
		// The artifactType a registry lists is not relied upon: the
		// manifest itself says what it is. Signatures are cached.
		if d.MediaType != types.OCIManifestSchema1 || d.Size > bundle.MaxMetadataSize {
			continue
		}
		raw, err := r.manifest(d.Digest, opts)
		if err != nil {
			failed = cmp.Or(failed, err)
			continue
		}
		if fd, ok := parseFileManifest(raw, h); ok {
			return fd, nil
		}
	}
	if failed != nil {
		return v1.Descriptor{}, failed
	}
	return v1.Descriptor{}, ErrNotFound
}

// fileManifest is a file referrer manifest as Put writes it.
type fileManifest struct {
	SchemaVersion int64           `json:"schemaVersion"`
	MediaType     types.MediaType `json:"mediaType"`
	ArtifactType  string          `json:"artifactType"`
	Config        v1.Descriptor   `json:"config"`
	Layers        []v1.Descriptor `json:"layers"`
	Subject       *v1.Descriptor  `json:"subject,omitempty"`
}

// parseFileManifest returns the file blob a referrer manifest of bundle
// h names, and false if raw is no such manifest.
func parseFileManifest(raw []byte, h v1.Hash) (v1.Descriptor, bool) {
	var m fileManifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return v1.Descriptor{}, false
	}
	if m.SchemaVersion != 2 || m.MediaType != types.OCIManifestSchema1 ||
		m.ArtifactType != FileArtifactType || m.Subject == nil || m.Subject.Digest != h ||
		len(m.Layers) != 1 {
		return v1.Descriptor{}, false
	}
	d := m.Layers[0]
	if d.MediaType != FileMediaType || d.Digest.Algorithm != "sha256" ||
		!isHex64(d.Digest.Hex) || d.Size <= 0 {
		return v1.Descriptor{}, false
	}
	return d, true
}

// probe asks for the first byte of the blob at u as a device would, with
// no credentials and following redirects, and checks the answer gives
// the blob's size.
func (r *Registry) probe(ctx context.Context, u string, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("check file blob: %w", err)
	}
	req.Header.Set("Range", "bytes=0-0")
	base := r.opts.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	resp, err := (&http.Client{Transport: base}).Do(req)
	if err != nil {
		return fmt.Errorf("check file blob: %w", err)
	}
	defer resp.Body.Close()
	var total int64 = -1
	switch resp.StatusCode {
	case http.StatusPartialContent:
		var first, last int64
		_, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d",
			&first, &last, &total)
		if err != nil || first != 0 {
			return fmt.Errorf("check file blob %s: Content-Range %.80q", u,
				resp.Header.Get("Content-Range"))
		}
	case http.StatusOK:
		total = resp.ContentLength
	case http.StatusNotFound:
		return fmt.Errorf("check file blob %s: %s: %w", u, resp.Status, ErrNotFound)
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("check file blob %s: not readable without credentials: %s",
			u, resp.Status)
	default:
		return fmt.Errorf("check file blob %s: %s", u, resp.Status)
	}
	if total >= 0 && total != size {
		return fmt.Errorf("check file blob %s: %w: %d bytes, its descriptor says %d",
			u, bundle.ErrDigestMismatch, total, size)
	}
	return nil
}

func (r *Registry) cachedURL(h v1.Hash) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.urls[h]
	if !ok || r.now().Sub(f.at) >= urlLifetime {
		return "", false
	}
	return f.url, true
}

func (r *Registry) rememberURL(h v1.Hash, u string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.urls) >= maxCachedURLs {
		clear(r.urls)
	}
	r.urls[h] = foundURL{url: u, at: r.now()}
}

func (r *Registry) forgetURL(h v1.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.urls, h)
}

// putFile stores the .rota file of bundle h, size bytes as Open
// assembles it, as one blob named by a referrer manifest, unless a
// referrer names one already. The file is assembled from the signatures
// in the registry, in Open's order, and the layers of the file at path,
// each checked against its digest; the registry checks the whole.
func (r *Registry) putFile(ctx context.Context, h v1.Hash, path string, size int64) error {
	opts := r.remoteOptions(ctx)
	_, err := r.findFile(h, opts)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, ErrNotFound):
		return fmt.Errorf("find file blob: %w", err)
	}
	parts, err := r.parts(h, opts)
	if err != nil {
		return err
	}
	src, err := openSource(path)
	if err != nil {
		return fmt.Errorf("put file blob: %w", err)
	}
	defer src.Close()
	client, err := r.httpClient(ctx)
	if err != nil {
		return err
	}
	open := func(ctx context.Context, d v1.Descriptor) (bundle.BlobReader, error) {
		if e, ok := src.blobs[d.Digest]; ok && e.size == d.Size {
			return newLocalBlob(src, e, d.Digest), nil
		}
		return r.openBlob(ctx, client, d)
	}
	a, err := bundle.Assemble(ctx, parts, open)
	if err != nil {
		return fmt.Errorf("put file blob: %w", err)
	}
	defer a.Close()
	if a.Size() != size {
		return fmt.Errorf("put file blob: assembled %d bytes, the bundle has %d", a.Size(), size)
	}

	// One pass hashes the file and checks its layers, so that the upload
	// can name its digest; the registry checks the upload against it.
	sum := sha256.New()
	buf := make([]byte, copyBufferSize)
	if _, err := io.CopyBuffer(sum, &ctxReader{ctx: ctx, r: io.NewSectionReader(a, 0, size)},
		buf); err != nil {
		return fmt.Errorf("put file blob: %w", err)
	}
	file := v1.Descriptor{MediaType: FileMediaType, Size: size,
		Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum.Sum(nil))}}
	err = remote.WriteLayer(r.repo, &uploadLayer{desc: file, open: func() io.Reader {
		return io.NewSectionReader(a, 0, size)
	}}, opts...)
	if err != nil {
		return fmt.Errorf("push file blob %s: %w", file.Digest, err)
	}

	config := v1.Descriptor{MediaType: bundle.EmptyMediaType, Size: int64(len(emptyConfig)),
		Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex(emptyConfig)}}
	err = remote.WriteLayer(r.repo, &uploadLayer{desc: config, open: func() io.Reader {
		return bytes.NewReader(emptyConfig)
	}}, opts...)
	if err != nil {
		return fmt.Errorf("push empty config: %w", err)
	}
	raw, err := json.Marshal(fileManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  FileArtifactType,
		Config:        config,
		Layers:        []v1.Descriptor{file},
		Subject: &v1.Descriptor{MediaType: types.OCIManifestSchema1,
			Size: int64(len(parts.Manifest)), Digest: h},
	})
	if err != nil {
		return fmt.Errorf("encode file referrer: %w", err)
	}
	ref := r.repo.Digest("sha256:" + sha256Hex(raw))
	if err := remote.Put(ref, rawManifest(raw), opts...); err != nil {
		return fmt.Errorf("push file referrer %s: %w", ref.DigestStr(), err)
	}
	return nil
}

// localBlob is a blob of the .rota file being put. Its first reads must
// come in order: they are hashed, and the one that reaches the end fails
// unless the blob matched its digest. Once checked, it is read at any
// offset. It is not safe for concurrent use.
type localBlob struct {
	r       *io.SectionReader
	digest  v1.Hash
	hash    hash.Hash
	next    int64
	checked bool
}

func newLocalBlob(src *source, e extent, digest v1.Hash) *localBlob {
	b := &localBlob{r: io.NewSectionReader(src.f, e.off, e.size), digest: digest,
		hash: sha256.New()}
	b.checked = e.size == 0 && hex.EncodeToString(b.hash.Sum(nil)) == digest.Hex
	return b
}

func (b *localBlob) ReadAt(p []byte, off int64) (int, error) {
	if b.checked {
		return b.r.ReadAt(p, off)
	}
	if off != b.next {
		return 0, fmt.Errorf("read blob %s at %d before checking it past %d",
			b.digest, off, b.next)
	}
	n, err := b.r.ReadAt(p, off)
	b.hash.Write(p[:n])
	b.next += int64(n)
	if b.next == b.r.Size() {
		if got := hex.EncodeToString(b.hash.Sum(nil)); got != b.digest.Hex {
			return 0, fmt.Errorf("blob %s in the file: %w: content hashes to sha256:%s",
				b.digest, bundle.ErrDigestMismatch, got)
		}
		b.checked = true
	}
	return n, err
}

func (b *localBlob) Close() error { return nil }

// uploadLayer is a blob of known digest and size to push; open is called
// for each upload attempt.
type uploadLayer struct {
	desc v1.Descriptor
	open func() io.Reader
}

func (l *uploadLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *uploadLayer) DiffID() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *uploadLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *uploadLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *uploadLayer) Compressed() (io.ReadCloser, error)  { return io.NopCloser(l.open()), nil }
func (l *uploadLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(l.open()), nil
}

// rawManifest is a manifest to put as it is.
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error)        { return m, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
