package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrNoBundle is returned by a BundleSource when it holds no bundle with
// the asked digest.
var ErrNoBundle = errors.New("server: no such bundle")

// BundleSource opens stored .rota files by their manifest digest.
type BundleSource interface {
	// Open returns the bundle with digest ("sha256:…"), its size and
	// modification time; ErrNoBundle if there is none. The caller closes
	// the file.
	Open(ctx context.Context, digest string) (f io.ReadSeekCloser, size int64,
		modTime time.Time, err error)
}

// DirBundles is a BundleSource keeping each bundle in a directory as
// "<hex digest>.rota".
type DirBundles struct {
	// Dir is the directory; empty means the working directory.
	Dir string
}

// Path returns where d keeps the bundle with digest, or an error
// wrapping ErrNoBundle if digest is not "sha256:" and 64 lowercase hex
// digits, so that no digest can name a file outside Dir.
func (d DirBundles) Path(digest string) (string, error) {
	hexPart, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || !isLowerHex(hexPart, 64) {
		return "", fmt.Errorf("bundle %.80q: %w", digest, ErrNoBundle)
	}
	return filepath.Join(d.Dir, hexPart+".rota"), nil
}

// Open implements BundleSource.
func (d DirBundles) Open(ctx context.Context, digest string) (io.ReadSeekCloser, int64,
	time.Time, error) {
	p, err := d.Path(digest)
	if err != nil {
		return nil, 0, time.Time{}, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, time.Time{}, fmt.Errorf("open bundle %s: %w", digest, ErrNoBundle)
	}
	if err != nil {
		return nil, 0, time.Time{}, fmt.Errorf("open bundle %s: %w", digest, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, time.Time{}, fmt.Errorf("stat bundle %s: %w", digest, err)
	}
	return f, fi.Size(), fi.ModTime(), nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
