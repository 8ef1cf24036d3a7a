package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// emptyJSON is the content of the empty config blob of signature manifests.
var emptyJSON = []byte("{}")

// metadata is everything in a bundle except the image layers: the bytes
// exactly as stored plus their parsed form.
type metadata struct {
	manifestRaw    []byte
	manifest       v1.Manifest
	manifestDigest v1.Hash

	configRaw []byte
	config    Config

	sigs []*sigManifest

	// blobs holds the small blobs signature manifests refer to (the empty
	// config and the payloads), by digest.
	blobs map[v1.Hash][]byte
}

// sigManifest is one signature manifest as stored.
type sigManifest struct {
	raw      []byte
	digest   v1.Hash
	manifest v1.Manifest
}

// manifestDescriptor returns the descriptor of the bundle manifest.
func (m *metadata) manifestDescriptor() v1.Descriptor {
	return v1.Descriptor{
		MediaType: types.OCIManifestSchema1,
		Size:      int64(len(m.manifestRaw)),
		Digest:    m.manifestDigest,
	}
}

// layerSize returns the sum of the compressed layer sizes.
func (m *metadata) layerSize() int64 {
	var n int64
	for _, l := range m.manifest.Layers {
		n += l.Size
	}
	return n
}

// sigBlobs returns, in the fixed file order, the digests of the blobs of
// signature manifest i that no earlier signature manifest referred to.
func (m *metadata) sigBlobs(i int, seen map[v1.Hash]bool) []v1.Hash {
	var out []v1.Hash
	s := m.sigs[i].manifest
	for _, d := range append([]v1.Descriptor{s.Config}, s.Layers...) {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			out = append(out, d.Digest)
		}
	}
	return out
}

// index returns the OCI layout index.json of the bundle.
func (m *metadata) index() ([]byte, error) {
	bd := m.manifestDescriptor()
	bd.ArtifactType = ArtifactType
	bd.Annotations = map[string]string{annotationRefName: RefName(m.config.Version)}
	idx := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests:     []v1.Descriptor{bd},
	}
	for _, s := range m.sigs {
		idx.Manifests = append(idx.Manifests, v1.Descriptor{
			MediaType:    types.OCIManifestSchema1,
			Size:         int64(len(s.raw)),
			Digest:       s.digest,
			ArtifactType: SignatureArtifactType,
		})
	}
	return json.Marshal(idx)
}

// RefName returns the name a bundle of the given version carries in its
// OCI layout index (org.opencontainers.image.ref.name) and the default tag
// it is pushed under: the version with "+" replaced by "_", since tags may
// not contain "+".
func RefName(version string) string {
	return strings.ReplaceAll(version, "+", "_")
}

// digestOf returns the sha256 digest of b.
func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// parseDigest parses "sha256:<64 lowercase hex>"; no other algorithm is
// accepted.
func parseDigest(s string) (v1.Hash, error) {
	alg, h, ok := strings.Cut(s, ":")
	if !ok || alg != "sha256" || !hexRE.MatchString(h) {
		return v1.Hash{}, fmt.Errorf("%w: digest %q: want sha256:<64 lowercase hex>",
			ErrInvalidBundle, s)
	}
	return v1.Hash{Algorithm: alg, Hex: h}, nil
}

// checkDescriptor checks a descriptor's digest form and size bounds.
func checkDescriptor(what string, d v1.Descriptor, maxSize int64) error {
	if _, err := parseDigest(d.Digest.String()); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if d.Size < 0 || d.Size > maxSize {
		return fmt.Errorf("%w: %s %s: size %d out of range (at most %d)",
			ErrInvalidBundle, what, d.Digest, d.Size, maxSize)
	}
	return nil
}

// decodeJSON strictly decodes one JSON value with nothing after it.
func decodeJSON(what string, b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: parse %s: %w", ErrInvalidBundle, what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: parse %s: data after the JSON value", ErrInvalidBundle, what)
	}
	return nil
}

// readAllCapped reads r to EOF, failing once more than limit bytes arrive.
func readAllCapped(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrInvalidBundle, limit)
	}
	return b, nil
}

// parseManifest parses and checks a bundle manifest.
func parseManifest(raw []byte) (v1.Manifest, error) {
	var m v1.Manifest
	if err := decodeJSON("bundle manifest", raw, &m); err != nil {
		return m, err
	}
	switch {
	case m.SchemaVersion != 2:
		return m, fmt.Errorf("%w: bundle manifest schemaVersion %d (want 2)",
			ErrInvalidBundle, m.SchemaVersion)
	case m.MediaType != types.OCIManifestSchema1:
		return m, fmt.Errorf("%w: bundle manifest mediaType %q (want %s)",
			ErrInvalidBundle, m.MediaType, types.OCIManifestSchema1)
	case m.ArtifactType != ArtifactType:
		return m, fmt.Errorf("%w: manifest artifactType %q is not a ROTA bundle (want %s)",
			ErrInvalidBundle, m.ArtifactType, ArtifactType)
	case m.Config.MediaType != ConfigMediaType:
		return m, fmt.Errorf("%w: config mediaType %q (want %s)",
			ErrInvalidBundle, m.Config.MediaType, ConfigMediaType)
	case m.Subject != nil:
		return m, fmt.Errorf("%w: bundle manifest has a subject", ErrInvalidBundle)
	case len(m.Layers) == 0 || len(m.Layers) > MaxImages:
		return m, fmt.Errorf("%w: %d image layers (want 1 to %d)",
			ErrInvalidBundle, len(m.Layers), MaxImages)
	}
	if err := checkDescriptor("config", m.Config, MaxMetadataSize); err != nil {
		return m, err
	}
	seen := map[v1.Hash]bool{}
	for i, l := range m.Layers {
		if l.MediaType != RawImageMediaType && l.MediaType != TreeImageMediaType {
			return m, fmt.Errorf("%w: layer %d mediaType %q is not a ROTA image",
				ErrInvalidBundle, i, l.MediaType)
		}
		if err := checkDescriptor(fmt.Sprintf("layer %d", i), l, MaxImageSize); err != nil {
			return m, err
		}
		if seen[l.Digest] {
			return m, fmt.Errorf("%w: layer %s appears twice", ErrInvalidBundle, l.Digest)
		}
		seen[l.Digest] = true
	}
	return m, nil
}

// parseConfig parses a config and checks it against its manifest.
func parseConfig(raw []byte, m *v1.Manifest) (Config, error) {
	var c Config
	if err := decodeJSON("bundle config", raw, &c); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	if len(c.Images) != len(m.Layers) {
		return c, fmt.Errorf("%w: config lists %d images but the manifest has %d layers",
			ErrInvalidBundle, len(c.Images), len(m.Layers))
	}
	for i, l := range m.Layers {
		im := c.Images[i]
		if cl := l.Annotations[AnnotationClass]; cl != im.Class {
			return c, fmt.Errorf("%w: layer %d is annotated class %q but config image %d is %q",
				ErrInvalidBundle, i, cl, i, im.Class)
		}
		if im.ChunkSize != 0 {
			var sum int64
			for _, f := range im.Frames {
				sum += f
			}
			if sum != l.Size {
				return c, fmt.Errorf("%w: image %s: frames add up to %d bytes, the layer has %d",
					ErrInvalidBundle, im.Class, sum, l.Size)
			}
		}
		if (l.MediaType == TreeImageMediaType) != (im.Filesystem == "tar") {
			return c, fmt.Errorf("%w: image %s: media type %s does not match filesystem %q",
				ErrInvalidBundle, im.Class, l.MediaType, im.Filesystem)
		}
	}
	return c, nil
}

// parseSigManifest parses and checks a signature manifest for the bundle
// manifest subject.
func parseSigManifest(raw []byte, subject v1.Hash) (v1.Manifest, error) {
	var m v1.Manifest
	if err := decodeJSON("signature manifest", raw, &m); err != nil {
		return m, err
	}
	switch {
	case m.SchemaVersion != 2 || m.MediaType != types.OCIManifestSchema1:
		return m, fmt.Errorf("%w: signature manifest is not an OCI image manifest", ErrInvalidBundle)
	case m.ArtifactType != SignatureArtifactType:
		return m, fmt.Errorf("%w: signature manifest artifactType %q (want %s)",
			ErrInvalidBundle, m.ArtifactType, SignatureArtifactType)
	case m.Subject == nil || m.Subject.Digest != subject:
		return m, fmt.Errorf("%w: signature manifest subject is not bundle manifest %s",
			ErrInvalidBundle, subject)
	case m.Config.MediaType != EmptyMediaType || m.Config.Digest != digestOf(emptyJSON) ||
		m.Config.Size != int64(len(emptyJSON)):
		return m, fmt.Errorf("%w: signature manifest config is not the empty descriptor",
			ErrInvalidBundle)
	case len(m.Layers) != 1:
		return m, fmt.Errorf("%w: signature manifest has %d layers (want 1)",
			ErrInvalidBundle, len(m.Layers))
	case m.Layers[0].MediaType != SimpleSigningMediaType:
		return m, fmt.Errorf("%w: signature payload mediaType %q (want %s)",
			ErrInvalidBundle, m.Layers[0].MediaType, SimpleSigningMediaType)
	case m.Layers[0].Annotations[AnnotationSignature] == "":
		return m, fmt.Errorf("%w: signature payload has no %s annotation",
			ErrInvalidBundle, AnnotationSignature)
	}
	if err := checkDescriptor("signature payload", m.Layers[0], MaxMetadataSize); err != nil {
		return m, err
	}
	return m, nil
}
