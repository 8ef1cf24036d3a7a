package bundlestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rotaupdate/rota/internal/atomicfile"
)

// Limits of garbage collection.
const (
	// staleTempAge is how long a temporary file must have been left
	// unchanged before collection removes it: younger ones may belong to
	// a Put still copying.
	staleTempAge = time.Hour

	// maxManifestSize caps a manifest or index that collection reads to
	// learn which blobs it refers to.
	maxManifestSize = 4 << 20

	// maxManifestDepth caps how deeply indexes may nest.
	maxManifestDepth = 8
)

// collect removes the blobs that no entry of ix refers to, directly or
// through a manifest or an index, and the temporary files of writes that
// were abandoned. The caller holds the lock. When an entry or a manifest
// cannot be read, nothing is removed: its blobs are unknown.
func (l *Layout) collect(ix *layoutIndex) error {
	keep := map[string]bool{}
	for i, raw := range ix.Manifests {
		d, ok := parseEntry(raw)
		if !ok {
			return fmt.Errorf("collect unused blobs: index entry %d does not parse", i)
		}
		if err := l.mark(keep, d, true, 0); err != nil {
			return fmt.Errorf("collect unused blobs: %w", err)
		}
	}
	var errs []error
	removed := false
	ents, err := os.ReadDir(l.blobDir())
	if err != nil {
		return fmt.Errorf("collect unused blobs: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if (isHex64(name) && !keep[name]) || l.staleTemp(e) {
			if err := os.Remove(filepath.Join(l.blobDir(), name)); err != nil &&
				!errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			removed = true
		}
	}
	if removed {
		if err := atomicfile.SyncDir(l.blobDir()); err != nil {
			errs = append(errs, err)
		}
	}
	// Temporary copies of index.json or oci-layout.
	if ents, err := os.ReadDir(l.dir); err == nil {
		for _, e := range ents {
			if l.staleTemp(e) {
				os.Remove(filepath.Join(l.dir, e.Name()))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("collect unused blobs: %w", err)
	}
	return nil
}

// staleTemp reports whether e is a temporary file that atomicfile left
// (".<name>.tmp-<random>") and that has not changed for staleTempAge.
func (l *Layout) staleTemp(e fs.DirEntry) bool {
	if !strings.HasPrefix(e.Name(), ".") || !strings.Contains(e.Name(), ".tmp-") {
		return false
	}
	fi, err := e.Info()
	return err == nil && fi.Mode().IsRegular() && l.now().Sub(fi.ModTime()) > staleTempAge
}

// mark records blob d as used and, when it is a manifest or an index (or
// any index entry, whatever its media type), the blobs it refers to.
func (l *Layout) mark(keep map[string]bool, d v1.Descriptor, entry bool, depth int) error {
	// Only blobs/sha256 is ever collected; other algorithms' blobs stay.
	if d.Digest.Algorithm != "sha256" || !isHex64(d.Digest.Hex) || keep[d.Digest.Hex] {
		return nil
	}
	keep[d.Digest.Hex] = true
	if !entry && !isManifest(d.MediaType) {
		return nil
	}
	if depth >= maxManifestDepth {
		return fmt.Errorf("manifest %s: indexes nested more than %d deep", d.Digest, maxManifestDepth)
	}
	f, err := os.Open(l.blobPath(d.Digest))
	if errors.Is(err, fs.ErrNotExist) {
		// A dangling entry refers to nothing that could be kept.
		return nil
	}
	if err != nil {
		return fmt.Errorf("read manifest %s: %w", d.Digest, err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return fmt.Errorf("read manifest %s: %w", d.Digest, err)
	}
	if len(raw) > maxManifestSize {
		return fmt.Errorf("manifest %s: larger than %d bytes", d.Digest, maxManifestSize)
	}
	var m struct {
		Config    *v1.Descriptor  `json:"config"`
		Layers    []v1.Descriptor `json:"layers"`
		Blobs     []v1.Descriptor `json:"blobs"`
		Manifests []v1.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("parse manifest %s: %w", d.Digest, err)
	}
	children := append(append(m.Layers, m.Blobs...), m.Manifests...)
	if m.Config != nil {
		children = append(children, *m.Config)
	}
	for _, c := range children {
		if err := l.mark(keep, c, false, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// isManifest reports whether mt is the media type of a manifest or an
// index, whose content names other blobs.
func isManifest(mt types.MediaType) bool {
	switch mt {
	case types.OCIManifestSchema1, types.OCIImageIndex,
		types.DockerManifestSchema2, types.DockerManifestList:
		return true
	}
	return false
}
