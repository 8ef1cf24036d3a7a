package bundlestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/atomicfile"
)

// Annotations a Layout writes on its index.json entries.
const (
	// AnnotationStored holds, on a bundle manifest's entry, when the
	// bundle was stored: an RFC 3339 UTC time with nanoseconds.
	AnnotationStored = "dev.rotaupdate.stored"

	// AnnotationSubject holds, on a signature manifest's entry, the
	// digest of the bundle manifest it signs.
	AnnotationSubject = "dev.rotaupdate.subject"

	// annotationRefName is the OCI layout's name for a manifest, which
	// tools such as skopeo look up ("oci:DIR:NAME").
	annotationRefName = "org.opencontainers.image.ref.name"
)

// Files of a layout directory.
const (
	ociLayoutName = "oci-layout"
	indexName     = "index.json"
	lockName      = ".rota-lock"
)

// ociLayoutFile is the content of the oci-layout marker file.
var ociLayoutFile = []byte(`{"imageLayoutVersion":"1.0.0"}` + "\n")

// layoutIndex is a layout's index.json. Its entries stay raw JSON, so
// that entries another tool wrote, in forms this package does not parse,
// are written back as they were.
type layoutIndex struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     types.MediaType   `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Manifests     []json.RawMessage `json:"manifests"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

func emptyIndex() *layoutIndex {
	return &layoutIndex{SchemaVersion: 2, MediaType: types.OCIImageIndex,
		Manifests: []json.RawMessage{}}
}

// readIndex reads the layout's index.json; a missing one is empty.
func (l *Layout) readIndex() (*layoutIndex, error) {
	path := filepath.Join(l.dir, indexName)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return emptyIndex(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read layout index: %w", err)
	}
	ix := &layoutIndex{}
	if err := json.Unmarshal(raw, ix); err != nil {
		return nil, fmt.Errorf("parse layout index %s: %w", path, err)
	}
	if ix.SchemaVersion != 2 {
		return nil, fmt.Errorf("parse layout index %s: schemaVersion %d (want 2)",
			path, ix.SchemaVersion)
	}
	return ix, nil
}

// writeIndex replaces the layout's index.json atomically.
func (l *Layout) writeIndex(ix *layoutIndex) error {
	raw, err := json.Marshal(ix)
	if err != nil {
		return fmt.Errorf("encode layout index: %w", err)
	}
	if err := atomicfile.WriteBytes(filepath.Join(l.dir, indexName), raw, 0o644); err != nil {
		return fmt.Errorf("write layout index: %w", err)
	}
	return nil
}

// parseEntry parses an index entry, and returns false for one this
// package cannot parse (another tool's).
func parseEntry(raw json.RawMessage) (v1.Descriptor, bool) {
	var d v1.Descriptor
	if err := json.Unmarshal(raw, &d); err != nil {
		return v1.Descriptor{}, false
	}
	return d, true
}

// ours reports whether d is the entry Put wrote for bundle h. Another
// tool may list the same manifest under another name; that entry is not
// the store's to find or remove.
func ours(d v1.Descriptor, h v1.Hash) bool {
	return d.Digest == h && d.ArtifactType == bundle.ArtifactType &&
		d.Annotations[annotationRefName] == refName(h)
}

// find returns the entries of bundle h: its manifest's and, in order,
// its signature manifests'.
func (ix *layoutIndex) find(h v1.Hash) (v1.Descriptor, []v1.Descriptor, bool) {
	var (
		bd    v1.Descriptor
		found bool
		sigs  []v1.Descriptor
	)
	for _, raw := range ix.Manifests {
		d, ok := parseEntry(raw)
		switch {
		case !ok:
		case ours(d, h) && !found:
			bd, found = d, true
		case d.Annotations[AnnotationSubject] == h.String():
			sigs = append(sigs, d)
		}
	}
	return bd, sigs, found
}

// add appends the entries of a bundle.
func (ix *layoutIndex) add(ds ...v1.Descriptor) error {
	for _, d := range ds {
		raw, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("encode index entry %s: %w", d.Digest, err)
		}
		ix.Manifests = append(ix.Manifests, raw)
	}
	return nil
}

// remove drops the entries of bundle h and reports whether there were
// any.
func (ix *layoutIndex) remove(h v1.Hash) bool {
	var kept []json.RawMessage
	for _, raw := range ix.Manifests {
		d, ok := parseEntry(raw)
		if ok && (ours(d, h) || d.Annotations[AnnotationSubject] == h.String()) {
			continue
		}
		kept = append(kept, raw)
	}
	if len(kept) == len(ix.Manifests) {
		return false
	}
	ix.Manifests = append([]json.RawMessage{}, kept...)
	return true
}
