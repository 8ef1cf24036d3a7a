package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// MaxReferrers caps the referrers of a bundle manifest that OpenRemote
// examines for signatures.
const MaxReferrers = 64

// RemoteOptions tunes registry access. The zero value uses the Docker
// credential configuration (~/.docker/config.json and helpers), HTTPS for
// every registry but localhost and loopback, and the Referrers API with
// fallback to the referrers tag scheme.
type RemoteOptions struct {
	Options

	// Insecure allows plain HTTP and unverified TLS to the registry.
	Insecure bool

	// Remote are extra go-containerregistry options (transport, auth,
	// user agent); they come after the defaults, so they override them.
	Remote []remote.Option
}

func (o RemoteOptions) parse(ref string) (name.Reference, []remote.Option, error) {
	var nopts []name.Option
	if o.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, nil, fmt.Errorf("parse reference %q: %w", ref, err)
	}
	return r, append([]remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)},
		o.Remote...), nil
}

// OpenRemote reads a bundle's manifest, config and signatures from a
// registry; layers are fetched when read. ref is a tag or digest
// reference such as registry.example.com/fleet/acme:1.2.3.
func OpenRemote(ctx context.Context, ref string, opts RemoteOptions) (*Bundle, error) {
	r, ropts, err := opts.parse(ref)
	if err != nil {
		return nil, err
	}
	ropts = append(ropts, remote.WithContext(ctx))
	m, err := fetchMetadata(r, ropts)
	if err != nil {
		return nil, fmt.Errorf("open bundle %s: %w", ref, err)
	}
	src := &remoteSource{repo: r.Context(), opts: ropts}
	return &Bundle{meta: m, src: src, progress: opts.Progress, workers: opts.Concurrency}, nil
}

func fetchMetadata(r name.Reference, opts []remote.Option) (*metadata, error) {
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("get manifest: %w", err)
	}
	if desc.MediaType != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("%w: %s is a %s, not an OCI manifest",
			ErrInvalidBundle, r, desc.MediaType)
	}
	if len(desc.Manifest) > MaxMetadataSize {
		return nil, fmt.Errorf("%w: manifest has %d bytes", ErrInvalidBundle, len(desc.Manifest))
	}
	m := &metadata{manifestRaw: desc.Manifest, blobs: map[v1.Hash][]byte{}}
	m.manifestDigest = digestOf(desc.Manifest)
	if d, ok := r.(name.Digest); ok && d.DigestStr() != m.manifestDigest.String() {
		return nil, fmt.Errorf("%w: manifest %s hashes to %s", ErrDigestMismatch,
			d.DigestStr(), m.manifestDigest)
	}
	if m.manifest, err = parseManifest(m.manifestRaw); err != nil {
		return nil, err
	}
	repo := r.Context()
	if m.configRaw, err = fetchBlob(repo, m.manifest.Config, opts); err != nil {
		return nil, fmt.Errorf("bundle config: %w", err)
	}
	if m.config, err = parseConfig(m.configRaw, &m.manifest); err != nil {
		return nil, err
	}
	if err := fetchSignatures(repo, m, opts); err != nil {
		return nil, err
	}
	return m, nil
}

// fetchSignatures reads the signature manifests among the referrers of the
// bundle manifest. Referrers of other kinds (SBOMs, attestations) and
// malformed signature manifests are ignored: the registry is not trusted,
// and a bundle without a valid signature fails Verify anyway.
func fetchSignatures(repo name.Repository, m *metadata, opts []remote.Option) error {
	idx, err := remote.Referrers(repo.Digest(m.manifestDigest.String()), opts...)
	if err != nil {
		return fmt.Errorf("list referrers of %s: %w", m.manifestDigest, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("list referrers of %s: %w", m.manifestDigest, err)
	}
	refs := im.Manifests
	if len(refs) > MaxReferrers {
		refs = refs[:MaxReferrers]
	}
	for _, d := range refs {
		// The artifactType a registry reports is not relied upon (some
		// report it wrongly); each candidate manifest is read and checked.
		if d.MediaType != types.OCIManifestSchema1 || d.Size > MaxMetadataSize {
			continue
		}
		desc, err := remote.Get(repo.Digest(d.Digest.String()), opts...)
		if err != nil || digestOf(desc.Manifest) != d.Digest {
			continue
		}
		sm, err := parseSigManifest(desc.Manifest, m.manifestDigest)
		if err != nil {
			continue
		}
		blobs := map[v1.Hash][]byte{}
		for _, bd := range append([]v1.Descriptor{sm.Config}, sm.Layers...) {
			b, err := fetchBlob(repo, bd, opts)
			if err != nil {
				blobs = nil
				break
			}
			blobs[bd.Digest] = b
		}
		if blobs == nil || len(m.sigs) >= MaxSignatures {
			continue
		}
		for h, b := range blobs {
			m.blobs[h] = b
		}
		m.sigs = append(m.sigs, &sigManifest{raw: desc.Manifest, digest: d.Digest, manifest: sm})
	}
	return nil
}

// fetchBlob reads a small blob, capped and digest-checked.
func fetchBlob(repo name.Repository, d v1.Descriptor, opts []remote.Option) ([]byte, error) {
	if d.Size > MaxMetadataSize {
		return nil, fmt.Errorf("%w: blob %s has %d bytes", ErrInvalidBundle, d.Digest, d.Size)
	}
	l, err := remote.Layer(repo.Digest(d.Digest.String()), opts...)
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", d.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", d.Digest, err)
	}
	defer rc.Close()
	b, err := readAllCapped(rc, d.Size)
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", d.Digest, err)
	}
	if int64(len(b)) != d.Size || digestOf(b) != d.Digest {
		return nil, fmt.Errorf("%w: blob %s", ErrDigestMismatch, d.Digest)
	}
	return b, nil
}

// remoteSource fetches layers from a registry.
type remoteSource struct {
	repo name.Repository
	opts []remote.Option
}

func (s *remoteSource) layer(_ context.Context, _ int, d v1.Descriptor) (io.ReadCloser, error) {
	l, err := remote.Layer(s.repo.Digest(d.Digest.String()), s.opts...)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, d.Size), rc}, nil
}

func (s *remoteSource) finish() error { return nil }
func (s *remoteSource) offset() int64 { return -1 }
func (s *remoteSource) Close() error  { return nil }

// Pull reads the bundle at ref from a registry and writes it as a .rota
// file to w. Every blob is checked against its digest; signatures are not
// verified (use Verify on the result).
func Pull(ctx context.Context, ref string, w io.Writer, opts RemoteOptions) (*Info, error) {
	b, err := OpenRemote(ctx, ref, opts)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return b.Write(ctx, w)
}

// Push uploads the .rota file at path to the registry reference ref (a tag,
// or a digest that must equal the bundle's): the layers and config, the
// manifest, then each signature as an OCI 1.1 referrer. Against registries
// without the Referrers API, the referrers tag scheme is maintained.
func Push(ctx context.Context, path, ref string, opts RemoteOptions) (*Info, error) {
	b, err := Open(path, Options{})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	r, ropts, err := opts.parse(ref)
	if err != nil {
		return nil, err
	}
	ropts = append(ropts, remote.WithContext(ctx))
	if d, ok := r.(name.Digest); ok && d.DigestStr() != b.Digest() {
		return nil, fmt.Errorf("push %s: bundle digest is %s", ref, b.Digest())
	}
	offsets, err := entryOffsets(path)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", path, err)
	}
	defer f.Close()

	m := b.meta
	repo := r.Context()
	for _, d := range m.manifest.Layers {
		off, ok := offsets[blobName(d.Digest)]
		if !ok {
			return nil, fmt.Errorf("push %s: layer %s not found", path, d.Digest)
		}
		l := &blobLayer{desc: d, open: func() io.Reader {
			var r io.Reader = io.NewSectionReader(f, off, d.Size)
			if opts.Progress != nil {
				r = &progressReader{r: r, fn: opts.Progress}
			}
			return r
		}}
		if err := remote.WriteLayer(repo, l, ropts...); err != nil {
			return nil, fmt.Errorf("push layer %s to %s: %w", d.Digest, repo, err)
		}
	}
	if err := pushSmall(repo, m.manifest.Config, m.configRaw, ropts); err != nil {
		return nil, err
	}
	if err := remote.Put(r, rawManifest(m.manifestRaw), ropts...); err != nil {
		return nil, fmt.Errorf("push manifest to %s: %w", r, err)
	}
	for _, s := range m.sigs {
		for _, d := range append([]v1.Descriptor{s.manifest.Config}, s.manifest.Layers...) {
			if err := pushSmall(repo, d, m.blobs[d.Digest], ropts); err != nil {
				return nil, err
			}
		}
		if err := remote.Put(repo.Digest(s.digest.String()), rawManifest(s.raw), ropts...); err != nil {
			return nil, fmt.Errorf("push signature %s to %s: %w", s.digest, repo, err)
		}
	}
	return &Info{Digest: b.Digest(), Config: m.config, Signatures: m.signatures()}, nil
}

func pushSmall(repo name.Repository, d v1.Descriptor, b []byte, opts []remote.Option) error {
	l := &blobLayer{desc: d, open: func() io.Reader { return bytesReader(b) }}
	if err := remote.WriteLayer(repo, l, opts...); err != nil {
		return fmt.Errorf("push blob %s to %s: %w", d.Digest, repo, err)
	}
	return nil
}

// entryOffsets maps each entry of a tar file to the offset of its data.
func entryOffsets(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	out := map[string]int64{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidBundle, err)
		}
		// tar.Reader reads headers exactly and seeks over data, so the
		// file position is the start of the entry's data.
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		out[hdr.Name] = off
	}
}

// rawManifest is a manifest to put as is.
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error)        { return m, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// blobLayer is a blob of known digest and size to upload; open is called
// for each upload attempt.
type blobLayer struct {
	desc v1.Descriptor
	open func() io.Reader
}

func (l *blobLayer) Digest() (v1.Hash, error)             { return l.desc.Digest, nil }
func (l *blobLayer) DiffID() (v1.Hash, error)             { return l.desc.Digest, nil }
func (l *blobLayer) Size() (int64, error)                 { return l.desc.Size, nil }
func (l *blobLayer) MediaType() (types.MediaType, error)  { return l.desc.MediaType, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error)   { return io.NopCloser(l.open()), nil }
func (l *blobLayer) Uncompressed() (io.ReadCloser, error) { return io.NopCloser(l.open()), nil }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
