package bundlestore

import (
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/rotaupdate/rota/bundle"
)

// parseDigest accepts only "sha256:" and 64 lowercase hex digits, so that
// a digest can name neither a path outside a directory nor a registry
// reference other than a digest.
func parseDigest(s string) (v1.Hash, error) {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || !isHex64(h) {
		return v1.Hash{}, fmt.Errorf("digest %.80q: %w", s, ErrInvalidDigest)
	}
	return v1.Hash{Algorithm: "sha256", Hex: h}, nil
}

// isHex64 reports whether s is 64 lowercase hex digits.
func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// refName is the name a stored bundle goes by: its layout index ref name
// and its registry tag. It cannot be "sha256-<hex>" alone, which the OCI
// referrers tag scheme uses for the index of a manifest's referrers.
func refName(h v1.Hash) string { return "sha256-" + h.Hex + ".rota" }

// file is a stored bundle opened as a .rota file.
type file struct {
	*bundle.Assembled
	modTime time.Time
}

func (f *file) ModTime() time.Time { return f.modTime }
