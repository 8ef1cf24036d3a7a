package bundlestore

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors. Stores wrap them with the operation and the digest, so
// test them with errors.Is.
var (
	// ErrNotFound is returned when a store holds no bundle with the
	// digest.
	ErrNotFound = errors.New("bundlestore: no such bundle")

	// ErrInvalidDigest is returned for a digest that is not "sha256:"
	// followed by 64 lowercase hex digits. No stored bundle has one.
	ErrInvalidDigest = errors.New("bundlestore: invalid digest")

	// ErrDeleteRefused is returned by Registry.Delete when the registry
	// does not allow deleting manifests, as many are configured. The
	// bundle then stays in the registry (untagged where the registry
	// allowed that much), and a caller that only wanted it gone from
	// the server may ignore the error.
	ErrDeleteRefused = errors.New("bundlestore: registry refused to delete")
)

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

	// ModTime is when the bundle was stored, or, where a store keeps no
	// such time, when it was created; zero when unknown.
	ModTime() time.Time
}

// Store keeps bundles. All methods are safe for concurrent use.
type Store interface {
	// Put copies the .rota file at path into the store, checking every
	// blob against its digest, and returns its entry. Putting a bundle
	// already stored succeeds and returns the stored entry, unchanged:
	// signatures the file has beyond the stored ones are not added. The
	// caller verifies signatures first: Put checks integrity, not trust.
	Put(ctx context.Context, path string) (Entry, error)

	// Open returns the bundle with digest as a .rota file; ErrNotFound
	// if there is none, ErrInvalidDigest if digest is malformed. The
	// caller closes the file.
	Open(ctx context.Context, digest string) (File, error)

	// Delete removes the bundle with digest; deleting one not stored
	// succeeds. Blobs that another stored bundle shares stay.
	Delete(ctx context.Context, digest string) error
}
