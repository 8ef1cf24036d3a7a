package bundlestore

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rotaupdate/rota/bundle"
)

// maxCachedBytes caps the manifests and small blobs a Registry keeps in
// memory. They are content-addressed, so a cached copy never goes stale.
const maxCachedBytes = 32 << 20

// annotationCreated is the OCI creation time annotation.
const annotationCreated = "org.opencontainers.image.created"

// RegistryOptions tunes a Registry. The zero value talks HTTPS (plain
// HTTP to localhost and loopback addresses, as go-containerregistry
// does) with the credentials of the Docker configuration.
type RegistryOptions struct {
	// PlainHTTP talks to the registry over plain HTTP, for a registry on
	// a trusted network.
	PlainHTTP bool

	// Auth authenticates to the registry; nil means the credentials
	// authn.DefaultKeychain finds (~/.docker/config.json and its
	// credential helpers).
	Auth authn.Authenticator

	// Transport carries the requests, which are retried on transient
	// errors on top of it; nil means remote.DefaultTransport.
	Transport http.RoundTripper

	// FileBlob makes Put also store each bundle's .rota file, byte for
	// byte what Open returns, as one blob of the repository, so that
	// devices can download it from the registry (see DownloadURL). It
	// doubles the space a bundle takes in the registry. False means Put
	// stores the bundle's own blobs only.
	FileBlob bool
}

// Registry is a Store that keeps bundles in one repository of an OCI
// registry, pushed with bundle.Push: each bundle manifest is tagged
// "sha256-<hex>.rota" after its digest, so that no bundle overwrites
// another, and its signatures are attached as OCI referrers.
//
// Open assembles the .rota file from the registry's blobs: the manifests
// and small blobs are fetched once and cached, and the layers are read
// with HTTP Range requests as the file is read. The signatures are
// listed afresh on each Open and put in a fixed order (by signing time,
// then digest), so that every process serving the repository gives the
// same bytes; the file is byte-identical to the .rota file that was put
// when its signatures were made at different times, or there is one.
//
// With RegistryOptions.FileBlob, Put also keeps the .rota file itself as
// a blob, named by a referrer manifest of artifactType FileArtifactType,
// and DownloadURL gives its address.
//
// The registry verifies uploaded blobs against their digests; deleted
// bundles' blobs are reclaimed by the registry's own garbage collection.
type Registry struct {
	repo     name.Repository
	opts     RegistryOptions
	keychain authn.Keychain

	mu         sync.Mutex
	client     *http.Client // authenticated, for blob reads; nil until needed
	cache      map[v1.Hash][]byte
	cacheBytes int
	urls       map[v1.Hash]foundURL // download URLs by bundle digest
	now        func() time.Time
}

var _ Store = (*Registry)(nil)

// NewRegistry returns a Store keeping bundles in repository repo, such as
// "registry.example.com/fleet/bundles". It does not contact the registry.
func NewRegistry(repo string, opts RegistryOptions) (*Registry, error) {
	var nopts []name.Option
	if opts.PlainHTTP {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.NewRepository(repo, nopts...)
	if err != nil {
		return nil, fmt.Errorf("bundle registry %q: %w", repo, err)
	}
	var kc authn.Keychain = authn.DefaultKeychain
	if opts.Auth != nil {
		kc = fixedKeychain{opts.Auth}
	}
	return &Registry{repo: r, opts: opts, keychain: kc, cache: map[v1.Hash][]byte{},
		urls: map[v1.Hash]foundURL{}, now: time.Now}, nil
}

// fixedKeychain gives the same credentials for every registry.
type fixedKeychain struct{ auth authn.Authenticator }

func (k fixedKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.auth, nil }

// Repository returns the repository the bundles are kept in.
func (r *Registry) Repository() string { return r.repo.String() }

func (r *Registry) remoteOptions(ctx context.Context) []remote.Option {
	opts := []remote.Option{remote.WithAuthFromKeychain(r.keychain), remote.WithContext(ctx)}
	if r.opts.Transport != nil {
		opts = append(opts, remote.WithTransport(r.opts.Transport))
	}
	return opts
}

// Put pushes the .rota file at path unless the repository already has
// the bundle under its tag. With RegistryOptions.FileBlob it then stores
// the bundle's file blob unless the bundle has one, also for a bundle
// stored before the option was set.
func (r *Registry) Put(ctx context.Context, path string) (Entry, error) {
	b, err := bundle.Open(path, bundle.Options{})
	if err != nil {
		return Entry{}, fmt.Errorf("store bundle: %w", err)
	}
	h, err := v1.NewHash(b.Digest())
	b.Close()
	if err != nil {
		return Entry{}, fmt.Errorf("store bundle %s: %w", path, err)
	}
	tag := r.repo.Tag(refName(h))
	desc, err := remote.Head(tag, r.remoteOptions(ctx)...)
	if err != nil || desc.Digest != h {
		_, err := bundle.Push(ctx, path, tag.String(), bundle.RemoteOptions{
			Insecure: r.opts.PlainHTTP,
			Remote:   r.remoteOptions(ctx),
		})
		if err != nil {
			return Entry{}, fmt.Errorf("store bundle %s in %s: %w", h, r.repo, err)
		}
	}
	f, err := r.open(ctx, h)
	if err != nil {
		return Entry{}, fmt.Errorf("store bundle %s in %s: %w", h, r.repo, err)
	}
	defer f.Close()
	if r.opts.FileBlob {
		if err := r.putFile(ctx, h, path, f.Size()); err != nil {
			return Entry{}, fmt.Errorf("store bundle %s in %s: %w", h, r.repo, err)
		}
	}
	return Entry{Digest: h.String(), Size: f.Size(), Location: r.repo.Digest(h.String()).String()}, nil
}

// Open returns the bundle as a .rota file read from the registry. Its
// reads are made with ctx: they fail once ctx is done. ModTime is the
// bundle's creation time, since a registry records no upload time.
func (r *Registry) Open(ctx context.Context, digest string) (File, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return nil, fmt.Errorf("open bundle: %w", err)
	}
	f, err := r.open(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("open bundle %s in %s: %w", h, r.repo, err)
	}
	return f, nil
}

func (r *Registry) open(ctx context.Context, h v1.Hash) (*file, error) {
	opts := r.remoteOptions(ctx)
	desc, err := remote.Head(r.repo.Tag(refName(h)), opts...)
	if isNotFound(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if desc.Digest != h {
		return nil, fmt.Errorf("%w: tag %s names %s", ErrNotFound, refName(h), desc.Digest)
	}
	parts, err := r.parts(h, opts)
	if err != nil {
		return nil, err
	}
	client, err := r.httpClient(ctx)
	if err != nil {
		return nil, err
	}
	open := func(ctx context.Context, d v1.Descriptor) (bundle.BlobReader, error) {
		return r.openBlob(ctx, client, d)
	}
	a, err := bundle.Assemble(ctx, parts, open)
	if err != nil {
		return nil, err
	}
	var created time.Time
	if m, err := v1.ParseManifest(bytes.NewReader(parts.Manifest)); err == nil {
		created, _ = time.Parse(time.RFC3339, m.Annotations[annotationCreated])
	}
	return &file{Assembled: a, modTime: created}, nil
}

// parts fetches the bundle manifest and its signature manifests.
// Referrers that are not signatures of this bundle are ignored, as
// bundle.OpenRemote does.
func (r *Registry) parts(h v1.Hash, opts []remote.Option) (bundle.Parts, error) {
	man, err := r.manifest(h, opts)
	if err != nil {
		return bundle.Parts{}, err
	}
	idx, err := remote.Referrers(r.repo.Digest(h.String()), opts...)
	if err != nil {
		return bundle.Parts{}, fmt.Errorf("list referrers: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return bundle.Parts{}, fmt.Errorf("list referrers: %w", err)
	}
	type signature struct {
		raw     []byte
		digest  string
		created string
	}
	var sigs []signature
	for i, d := range im.Manifests {
		if i >= bundle.MaxReferrers {
			break
		}
		if d.MediaType != types.OCIManifestSchema1 || d.Size > bundle.MaxMetadataSize {
			continue
		}
		raw, err := r.manifest(d.Digest, opts)
		if err != nil {
			continue
		}
		if _, err := (bundle.Parts{Manifest: man, Signatures: [][]byte{raw}}).Blobs(); err != nil {
			continue
		}
		sm, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			continue
		}
		sigs = append(sigs, signature{raw: raw, digest: d.Digest.String(),
			created: sm.Annotations[annotationCreated]})
	}
	// RFC 3339 UTC times in whole seconds, as bundle writes them, sort
	// as strings.
	slices.SortFunc(sigs, func(a, b signature) int {
		return cmp.Or(cmp.Compare(a.created, b.created), cmp.Compare(a.digest, b.digest))
	})
	p := bundle.Parts{Manifest: man}
	for _, s := range sigs[:min(len(sigs), bundle.MaxSignatures)] {
		p.Signatures = append(p.Signatures, s.raw)
	}
	return p, nil
}

// manifest returns the manifest with digest h, from the cache or the
// registry.
func (r *Registry) manifest(h v1.Hash, opts []remote.Option) ([]byte, error) {
	if b, ok := r.cached(h); ok {
		return b, nil
	}
	desc, err := remote.Get(r.repo.Digest(h.String()), opts...)
	if err != nil {
		return nil, fmt.Errorf("get manifest %s: %w", h, err)
	}
	if len(desc.Manifest) > bundle.MaxMetadataSize || sha256Hex(desc.Manifest) != h.Hex {
		return nil, fmt.Errorf("%w: manifest %s from the registry", bundle.ErrDigestMismatch, h)
	}
	r.remember(h, desc.Manifest)
	return desc.Manifest, nil
}

// openBlob opens a blob for Assemble: a small one is fetched whole,
// checked and cached; a layer is read with Range requests.
func (r *Registry) openBlob(ctx context.Context, client *http.Client,
	d v1.Descriptor) (bundle.BlobReader, error) {
	if b, ok := r.cached(d.Digest); ok {
		return bytesBlob{bytes.NewReader(b)}, nil
	}
	rb := &rangedBlob{
		ctx:    ctx,
		client: client,
		url:    r.blobURL(d.Digest),
		digest: d.Digest,
		size:   d.Size,
	}
	if d.Size > bundle.MaxMetadataSize {
		return rb, nil
	}
	defer rb.Close()
	b := make([]byte, d.Size)
	if _, err := rb.ReadAt(b, 0); err != nil && len(b) > 0 {
		return nil, err
	}
	if sha256Hex(b) != d.Digest.Hex {
		return nil, fmt.Errorf("%w: blob %s from the registry", bundle.ErrDigestMismatch, d.Digest)
	}
	r.remember(d.Digest, b)
	return bytesBlob{bytes.NewReader(b)}, nil
}

// blobURL returns the address of blob h in the repository.
func (r *Registry) blobURL(h v1.Hash) string {
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", r.repo.Scheme(), r.repo.RegistryStr(),
		r.repo.RepositoryStr(), h)
}

// bytesBlob is a BlobReader over bytes in memory.
type bytesBlob struct{ *bytes.Reader }

func (bytesBlob) Close() error { return nil }

func (r *Registry) cached(h v1.Hash) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.cache[h]
	return b, ok
}

func (r *Registry) remember(h v1.Hash, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cacheBytes+len(b) > maxCachedBytes {
		// Starting over is simpler than tracking use, and the cache
		// only fills this far with thousands of bundles.
		clear(r.cache)
		r.cacheBytes = 0
	}
	r.cache[h] = b
	r.cacheBytes += len(b)
}

// httpClient returns the client for blob reads, authenticated for pulls
// from the repository; the handshake happens on first use.
func (r *Registry) httpClient(ctx context.Context) (*http.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		return r.client, nil
	}
	auth, err := r.keychain.Resolve(r.repo)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", r.repo.RegistryStr(), err)
	}
	base := r.opts.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	rt, err := transport.NewWithContext(ctx, r.repo.Registry, auth, transport.NewRetry(base),
		[]string{r.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("authenticate to %s: %w", r.repo.RegistryStr(), err)
	}
	r.client = &http.Client{Transport: rt}
	return r.client, nil
}

// Delete removes the bundle's signatures and file blob referrer, its tag
// and its manifest from the repository; deleting a bundle not stored
// succeeds. When the registry refuses to delete manifests the error
// wraps ErrDeleteRefused: the tag is gone if the registry allowed that
// much, and then Open no longer finds the bundle. Blobs, the file blob
// too, are left to the registry's garbage collection, since other
// manifests may share them.
func (r *Registry) Delete(ctx context.Context, digest string) error {
	h, err := parseDigest(digest)
	if err != nil {
		return fmt.Errorf("delete bundle: %w", err)
	}
	defer r.forgetURL(h)
	opts := r.remoteOptions(ctx)
	var errs []error
	refused := false
	del := func(ref name.Reference) {
		err := remote.Delete(ref, opts...)
		var terr *transport.Error
		switch {
		case err == nil || isNotFound(err):
		case isRefused(err):
			refused = true
		case errors.As(err, &terr) && terr.StatusCode < 500 && isTag(ref):
			// Some registries delete manifests only by digest (dropping
			// their tags) and answer a tag with an error; the check
			// below tells whether the tag is gone.
		default:
			errs = append(errs, fmt.Errorf("delete %s: %w", ref, err))
		}
	}

	// The referrers first, while they can still be listed.
	idx, err := remote.Referrers(r.repo.Digest(h.String()), opts...)
	switch {
	case err == nil:
		if im, err := idx.IndexManifest(); err == nil {
			for _, d := range im.Manifests {
				del(r.repo.Digest(d.Digest.String()))
			}
		}
	case !isNotFound(err):
		errs = append(errs, fmt.Errorf("list referrers: %w", err))
	}
	// The index of the referrers tag scheme, on registries without the
	// Referrers API.
	fallback := r.repo.Tag("sha256-" + h.Hex)
	if d, err := remote.Head(fallback, opts...); err == nil {
		del(fallback)
		del(r.repo.Digest(d.Digest.String()))
	}
	del(r.repo.Tag(refName(h)))
	del(r.repo.Digest(h.String()))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete bundle %s from %s: %w", h, r.repo, err)
	}

	// Registries differ in whether deleting a manifest drops its tags and
	// whether a tag can be deleted alone; what counts is what is left.
	for _, ref := range []name.Reference{r.repo.Tag(refName(h)), r.repo.Digest(h.String())} {
		_, err := remote.Head(ref, opts...)
		switch {
		case isNotFound(err):
		case err != nil:
			return fmt.Errorf("delete bundle %s from %s: check %s: %w", h, r.repo, ref, err)
		case refused:
			return fmt.Errorf("delete bundle %s from %s: %w", h, r.repo, ErrDeleteRefused)
		default:
			return fmt.Errorf("delete bundle %s from %s: %s is still there", h, r.repo, ref)
		}
	}
	return nil
}

func isTag(ref name.Reference) bool {
	_, ok := ref.(name.Tag)
	return ok
}

// isNotFound reports whether err is a registry's answer that the manifest,
// blob or repository does not exist.
func isNotFound(err error) bool {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return false
	}
	if terr.StatusCode == http.StatusNotFound {
		return true
	}
	for _, d := range terr.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode,
			transport.BlobUnknownErrorCode:
			return true
		}
	}
	return false
}

// isRefused reports whether err is a registry's answer that it does not
// delete manifests.
func isRefused(err error) bool {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return false
	}
	if terr.StatusCode == http.StatusMethodNotAllowed {
		return true
	}
	for _, d := range terr.Errors {
		if d.Code == transport.UnsupportedErrorCode {
			return true
		}
	}
	return false
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
