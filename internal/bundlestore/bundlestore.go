// Package bundlestore keeps the .rota bundles of a server's releases.
//
// A [Store] holds bundles by their manifest digest and hands each back
// as a seekable .rota file, so that the device API can serve byte ranges
// and devices can resume downloads.
package bundlestore

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned when a store holds no bundle with the digest.
var ErrNotFound = errors.New("bundlestore: no such bundle")

// Entry describes a stored bundle.
type Entry struct {
	// Digest is the bundle manifest digest, "sha256:…".
	Digest string

	// Size is the size in bytes of the .rota file Open returns.
	Size int64

	// Location says where the bundle is kept, such as a directory path
	// or an OCI reference.
	Location string
}

// File is a stored bundle opened as a .rota file.
type File interface {
	io.ReadSeekCloser

	// Size is the size of the file in bytes.
	Size() int64

	// ModTime is when the bundle was stored.
	ModTime() time.Time
}

// Store keeps bundles. All methods are safe for concurrent use.
type Store interface {
	// Put copies the .rota file at path into the store, checking every
	// blob against its digest, and returns its entry. Putting a bundle
	// already stored succeeds and returns the stored entry. The caller
	// verifies signatures first: Put checks integrity, not trust.
	Put(ctx context.Context, path string) (Entry, error)

	// Open returns the bundle with digest as a .rota file; ErrNotFound
	// if there is none. The caller closes the file.
	Open(ctx context.Context, digest string) (File, error)

	// Delete removes the bundle with digest; deleting one not stored
	// succeeds. Blobs that another stored bundle shares stay.
	Delete(ctx context.Context, digest string) error
}
