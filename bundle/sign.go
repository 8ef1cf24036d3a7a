package bundle

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// maxSignatureLen caps the decoded length of one signature.
const maxSignatureLen = 1024

// Signature describes one signature attached to a bundle.
type Signature struct {
	// KeyID is the ID of the key that made the signature, as recorded in
	// the signature manifest; empty when the manifest names no key.
	KeyID string

	// Digest is the digest of the signature manifest.
	Digest string

	// Created is the signing time recorded in the signature manifest; zero
	// when absent.
	Created time.Time
}

// simpleSigningPayload returns the cosign-compatible simple-signing
// payload naming the manifest digest. identity is recorded as the claimed
// docker-reference; ROTA puts the bundle's compatible string there.
func simpleSigningPayload(manifestDigest v1.Hash, identity string) ([]byte, error) {
	p := payload.SimpleContainerImage{
		Critical: payload.Critical{
			Identity: payload.Identity{DockerReference: identity},
			Image:    payload.Image{DockerManifestDigest: manifestDigest.String()},
			Type:     payload.CosignSignatureType,
		},
	}
	return json.Marshal(p)
}

// addSignature signs the bundle manifest with s and appends a signature
// manifest to m. created is recorded in the signature manifest.
func (m *metadata) addSignature(s *Signer, created time.Time) error {
	for _, old := range m.sigs {
		if old.manifest.Annotations[AnnotationKeyID] == s.KeyID() {
			return fmt.Errorf("sign bundle %s: already signed by key %s",
				m.manifestDigest, shortID(s.KeyID()))
		}
	}
	if len(m.sigs) >= MaxSignatures {
		return fmt.Errorf("sign bundle %s: already %d signatures", m.manifestDigest, len(m.sigs))
	}
	pl, err := simpleSigningPayload(m.manifestDigest, m.config.Compatible)
	if err != nil {
		return fmt.Errorf("sign bundle %s: encode payload: %w", m.manifestDigest, err)
	}
	sig, err := s.sign(pl)
	if err != nil {
		return fmt.Errorf("sign bundle %s: %w", m.manifestDigest, err)
	}
	sm := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  SignatureArtifactType,
		Config: v1.Descriptor{
			MediaType: EmptyMediaType,
			Size:      int64(len(emptyJSON)),
			Digest:    digestOf(emptyJSON),
		},
		Layers: []v1.Descriptor{{
			MediaType: SimpleSigningMediaType,
			Size:      int64(len(pl)),
			Digest:    digestOf(pl),
			Annotations: map[string]string{
				AnnotationSignature: base64.StdEncoding.EncodeToString(sig),
			},
		}},
		Subject: &v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Size:      int64(len(m.manifestRaw)),
			Digest:    m.manifestDigest,
		},
		Annotations: map[string]string{
			AnnotationKeyID:   s.KeyID(),
			annotationCreated: created.UTC().Format(time.RFC3339),
		},
	}
	raw, err := json.Marshal(sm)
	if err != nil {
		return fmt.Errorf("sign bundle %s: encode signature manifest: %w", m.manifestDigest, err)
	}
	if m.blobs == nil {
		m.blobs = map[v1.Hash][]byte{}
	}
	m.blobs[sm.Config.Digest] = emptyJSON
	m.blobs[sm.Layers[0].Digest] = pl
	m.sigs = append(m.sigs, &sigManifest{raw: raw, digest: digestOf(raw), manifest: sm})
	return nil
}

// signatures describes the attached signatures.
func (m *metadata) signatures() []Signature {
	out := make([]Signature, 0, len(m.sigs))
	for _, s := range m.sigs {
		out = append(out, s.describe())
	}
	return out
}

func (s *sigManifest) describe() Signature {
	sig := Signature{
		KeyID:  s.manifest.Annotations[AnnotationKeyID],
		Digest: s.digest.String(),
	}
	if t, err := time.Parse(time.RFC3339, s.manifest.Annotations[annotationCreated]); err == nil {
		sig.Created = t
	}
	return sig
}

// verify checks the signatures against kr and returns those that verify.
// At least one must; signatures by keys outside kr are ignored, so a
// bundle signed during a key rotation verifies with either keyring.
func (m *metadata) verify(kr *Keyring) ([]Signature, error) {
	if len(m.sigs) == 0 {
		return nil, fmt.Errorf("verify bundle %s: %w", m.manifestDigest, ErrUnsigned)
	}
	if kr.Len() == 0 {
		return nil, fmt.Errorf("verify bundle %s: %w: the keyring is empty",
			m.manifestDigest, ErrUntrusted)
	}
	var (
		good []Signature
		errs []error
	)
	for _, s := range m.sigs {
		err := m.verifyOne(s, kr)
		if err == nil {
			good = append(good, s.describe())
			continue
		}
		errs = append(errs, err)
	}
	if len(good) == 0 {
		return nil, fmt.Errorf("verify bundle %s: %w: %w", m.manifestDigest, ErrUntrusted,
			errors.Join(errs...))
	}
	return good, nil
}

func (m *metadata) verifyOne(s *sigManifest, kr *Keyring) error {
	layer := s.manifest.Layers[0]
	pl, ok := m.blobs[layer.Digest]
	if !ok {
		return fmt.Errorf("signature %s: payload %s missing", s.digest, layer.Digest)
	}
	var p payload.SimpleContainerImage
	if err := decodeJSON("signature payload", pl, &p); err != nil {
		return fmt.Errorf("signature %s: %w", s.digest, err)
	}
	if p.Critical.Type != payload.CosignSignatureType {
		return fmt.Errorf("signature %s: payload type %q (want %q)",
			s.digest, p.Critical.Type, payload.CosignSignatureType)
	}
	if p.Critical.Image.DockerManifestDigest != m.manifestDigest.String() {
		return fmt.Errorf("signature %s: payload names manifest %s, not %s",
			s.digest, p.Critical.Image.DockerManifestDigest, m.manifestDigest)
	}
	b64 := layer.Annotations[AnnotationSignature]
	if base64.StdEncoding.DecodedLen(len(b64)) > maxSignatureLen {
		return fmt.Errorf("signature %s: signature longer than %d bytes", s.digest, maxSignatureLen)
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("signature %s: decode base64: %w", s.digest, err)
	}
	keys := kr.keys
	if id := s.manifest.Annotations[AnnotationKeyID]; id != "" {
		k := kr.Key(id)
		if k == nil {
			return fmt.Errorf("signature %s: key %s is not in the keyring", s.digest, shortID(id))
		}
		keys = []*PublicKey{k}
	}
	for _, k := range keys {
		if k.verify(sig, pl) == nil {
			return nil
		}
	}
	return fmt.Errorf("signature %s: does not verify with the trusted keys", s.digest)
}
