package bundle

import "errors"

// Sentinel errors. Functions wrap them with the operation and object, so
// test them with errors.Is.
var (
	// ErrInvalidBundle is returned when a bundle is malformed: a tar entry
	// out of order, duplicated, not a regular file or with an unsafe name;
	// metadata that does not parse or breaks the format's rules; a size
	// over a limit.
	ErrInvalidBundle = errors.New("bundle: invalid bundle")

	// ErrUnsupportedFormat is returned for a format version this package
	// does not know.
	ErrUnsupportedFormat = errors.New("bundle: unsupported format version")

	// ErrTruncated is returned when a bundle ends before all of its
	// declared content was read.
	ErrTruncated = errors.New("bundle: truncated")

	// ErrDigestMismatch is returned when a blob or an image does not match
	// its declared digest or size.
	ErrDigestMismatch = errors.New("bundle: digest mismatch")

	// ErrUnsigned is returned by Verify when a bundle carries no signature.
	ErrUnsigned = errors.New("bundle: no signature")

	// ErrUntrusted is returned by Verify when no signature verifies with a
	// key of the keyring.
	ErrUntrusted = errors.New("bundle: no signature from a trusted key")

	// ErrNotVerified is returned when image data is requested from a bundle
	// that has not passed Verify.
	ErrNotVerified = errors.New("bundle: not verified")

	// ErrNoImage is returned when a bundle has no image of the requested
	// slot class.
	ErrNoImage = errors.New("bundle: no such image")

	// ErrBadKey is returned for a key file that does not parse, has an
	// unsupported algorithm or a wrong password.
	ErrBadKey = errors.New("bundle: bad key")
)
