package bundle

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Media and artifact types of the format, version 1.
const (
	// ArtifactType is the artifactType of a bundle manifest.
	ArtifactType = "application/vnd.rota.bundle.v1"

	// ConfigMediaType is the media type of the bundle config blob.
	ConfigMediaType = "application/vnd.rota.bundle.config.v1+json"

	// RawImageMediaType is the media type of a layer holding a raw slot
	// image (a filesystem or partition image), zstd-compressed.
	RawImageMediaType = "application/vnd.rota.image.raw.v1+zstd"

	// TreeImageMediaType is the media type of a layer holding a file tree
	// as a tar archive, zstd-compressed.
	TreeImageMediaType = "application/vnd.rota.image.tar.v1+zstd"

	// SignatureArtifactType is the artifactType of a signature manifest,
	// as cosign uses it for OCI 1.1 referrers.
	SignatureArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"

	// SimpleSigningMediaType is the media type of the signed payload.
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"

	// EmptyMediaType is the media type of the empty JSON config "{}" used by
	// signature manifests.
	EmptyMediaType = "application/vnd.oci.empty.v1+json"

	// FormatVersion is the config format version this package writes and
	// the highest it reads.
	FormatVersion = 1
)

// Annotation keys written by this package.
const (
	// AnnotationSignature holds the base64 signature on a payload layer
	// descriptor, as cosign does.
	AnnotationSignature = "dev.cosignproject.cosign/signature"

	// AnnotationKeyID names the signing key on a signature manifest.
	AnnotationKeyID = "dev.rotaupdate.key-id"

	// AnnotationClass names the slot class on an image layer descriptor.
	AnnotationClass = "dev.rotaupdate.slot.class"

	// annotationRefName is the OCI layout's name for a manifest.
	annotationRefName = "org.opencontainers.image.ref.name"

	// annotationCreated is the OCI creation time annotation.
	annotationCreated = "org.opencontainers.image.created"
)

// Limits on what a reader accepts. They bound memory on hostile input.
const (
	// MaxMetadataSize caps the oci-layout file, the index, the manifest,
	// the config, each signature manifest and each payload.
	MaxMetadataSize = 256 << 10

	// MaxImages caps the number of slot images in one bundle.
	MaxImages = 32

	// MaxSignatures caps the number of signatures attached to one bundle.
	MaxSignatures = 32

	// MaxImageSize caps the declared uncompressed size of one slot image.
	MaxImageSize = 1 << 40
)

// Config is the bundle config blob: what the release is and what each slot
// image holds. Its JSON form is specified in docs/bundle-format.md.
type Config struct {
	// FormatVersion is the format version; readers reject versions above
	// [FormatVersion].
	FormatVersion int `json:"formatVersion"`

	// Compatible names the kind of device the bundle is for; a device
	// installs only bundles whose compatible string equals its own.
	Compatible string `json:"compatible"`

	// Version is the release version (semantic versioning).
	Version string `json:"version"`

	// RollbackIndex is a monotonic counter; devices refuse bundles whose
	// index is lower than the one installed. Zero is the lowest.
	RollbackIndex uint64 `json:"rollbackIndex"`

	// Created is the creation time, UTC, to the second.
	Created time.Time `json:"created"`

	// Description is free text for humans; empty when not given.
	Description string `json:"description,omitempty"`

	// MinAgentVersion is the lowest agent version able to install the
	// bundle; empty means any.
	MinAgentVersion string `json:"minAgentVersion,omitempty"`

	// Images describes the slot images in install order, one per layer.
	Images []ImageInfo `json:"images"`
}

// ImageInfo describes one slot image.
type ImageInfo struct {
	// Class is the slot class the image is written to (rootfs, boot, ...).
	Class string `json:"class"`

	// Size is the uncompressed size in bytes.
	Size int64 `json:"size"`

	// SHA256 is the lowercase hex sha256 of the uncompressed image.
	SHA256 string `json:"sha256"`

	// Filesystem is the filesystem type of a raw image (ext4, squashfs,
	// vfat, ...) or "tar" for a file tree; empty when unknown.
	Filesystem string `json:"filesystem,omitempty"`

	// ChunkSize, when not zero, says the layer is a series of independent
	// zstd frames, each decompressing to ChunkSize bytes but the last.
	// Zero means the layer's framing is unknown.
	ChunkSize int64 `json:"chunkSize,omitempty"`

	// Frames lists the compressed size of each frame when ChunkSize is
	// set. The table lets readers decompress frames in parallel and resume
	// an interrupted download at a frame boundary.
	Frames []int64 `json:"frames,omitempty"`
}

// Limits on frame tables.
const (
	// MaxChunkSize caps ImageInfo.ChunkSize, and so what one frame may
	// decompress to.
	MaxChunkSize = 16 << 20

	// maxFrameOverhead is how much larger than its chunk a frame may be:
	// zstd stores incompressible data with a few bytes per block.
	maxFrameOverhead = 64 << 10
)

var (
	classRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	hexRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
		`(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$`)
	compatRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$`)
	fstypeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)
)

// ValidVersion reports whether v is a semantic version such as 1.2.3 or
// 2.0.0-rc.1+build.5.
func ValidVersion(v string) bool {
	return len(v) <= 128 && semverRE.MatchString(v)
}

// CompareVersions compares two semantic versions by precedence and returns
// -1, 0 or +1. Build metadata is ignored. Invalid versions compare as
// strings after all valid ones.
func CompareVersions(a, b string) int {
	ma, mb := semverRE.FindStringSubmatch(a), semverRE.FindStringSubmatch(b)
	switch {
	case ma == nil && mb == nil:
		return strings.Compare(a, b)
	case ma == nil:
		return 1
	case mb == nil:
		return -1
	}
	for i := 1; i <= 3; i++ {
		x, _ := strconv.ParseUint(ma[i], 10, 64)
		y, _ := strconv.ParseUint(mb[i], 10, 64)
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return comparePrerelease(ma[4], mb[4])
}

func comparePrerelease(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, errx := strconv.ParseUint(pa[i], 10, 64)
		y, erry := strconv.ParseUint(pb[i], 10, 64)
		switch {
		case errx == nil && erry == nil:
			if x != y {
				if x < y {
					return -1
				}
				return 1
			}
		case errx == nil:
			return -1
		case erry == nil:
			return 1
		default:
			if c := strings.Compare(pa[i], pb[i]); c != 0 {
				return c
			}
		}
	}
	switch {
	case len(pa) < len(pb):
		return -1
	case len(pa) > len(pb):
		return 1
	}
	return 0
}

// Validate checks the config for a supported format version, a valid
// compatible string and version, and well-formed image entries.
func (c *Config) Validate() error {
	if c.FormatVersion < 1 || c.FormatVersion > FormatVersion {
		return fmt.Errorf("%w: format version %d (this reader supports 1 to %d)",
			ErrUnsupportedFormat, c.FormatVersion, FormatVersion)
	}
	if !compatRE.MatchString(c.Compatible) {
		return fmt.Errorf("%w: compatible %q: want 1 to 128 letters, digits or ._:/+-",
			ErrInvalidBundle, c.Compatible)
	}
	if !ValidVersion(c.Version) {
		return fmt.Errorf("%w: version %q is not a semantic version", ErrInvalidBundle, c.Version)
	}
	if c.MinAgentVersion != "" && !ValidVersion(c.MinAgentVersion) {
		return fmt.Errorf("%w: minimum agent version %q is not a semantic version",
			ErrInvalidBundle, c.MinAgentVersion)
	}
	if len(c.Description) > 4096 {
		return fmt.Errorf("%w: description longer than 4096 bytes", ErrInvalidBundle)
	}
	if len(c.Images) == 0 {
		return fmt.Errorf("%w: no slot images", ErrInvalidBundle)
	}
	if len(c.Images) > MaxImages {
		return fmt.Errorf("%w: %d slot images (at most %d)", ErrInvalidBundle, len(c.Images), MaxImages)
	}
	seen := make(map[string]bool, len(c.Images))
	for i, im := range c.Images {
		if err := im.validate(); err != nil {
			return fmt.Errorf("%w: image %d: %w", ErrInvalidBundle, i, err)
		}
		if seen[im.Class] {
			return fmt.Errorf("%w: two images for slot class %q", ErrInvalidBundle, im.Class)
		}
		seen[im.Class] = true
	}
	return nil
}

func (im *ImageInfo) validate() error {
	if !classRE.MatchString(im.Class) {
		return fmt.Errorf("class %q: want 1 to 64 lowercase letters, digits or ._-", im.Class)
	}
	if im.Size < 0 || im.Size > MaxImageSize {
		return fmt.Errorf("class %s: size %d out of range", im.Class, im.Size)
	}
	if !hexRE.MatchString(im.SHA256) {
		return fmt.Errorf("class %s: sha256 %q is not 64 lowercase hex digits", im.Class, im.SHA256)
	}
	if im.Filesystem != "" && !fstypeRE.MatchString(im.Filesystem) {
		return fmt.Errorf("class %s: filesystem %q is not a filesystem type", im.Class, im.Filesystem)
	}
	return im.validateFrames()
}

// validateFrames checks the frame table against the image size.
func (im *ImageInfo) validateFrames() error {
	if im.ChunkSize == 0 {
		if len(im.Frames) != 0 {
			return fmt.Errorf("class %s: frames without a chunk size", im.Class)
		}
		return nil
	}
	if im.ChunkSize < 0 || im.ChunkSize > MaxChunkSize {
		return fmt.Errorf("class %s: chunk size %d out of range (at most %d)",
			im.Class, im.ChunkSize, MaxChunkSize)
	}
	if want := (im.Size + im.ChunkSize - 1) / im.ChunkSize; int64(len(im.Frames)) != want {
		return fmt.Errorf("class %s: %d frames for %d bytes in chunks of %d (want %d)",
			im.Class, len(im.Frames), im.Size, im.ChunkSize, want)
	}
	for i, f := range im.Frames {
		if f <= 0 || f > im.ChunkSize+maxFrameOverhead {
			return fmt.Errorf("class %s: frame %d has %d compressed bytes", im.Class, i, f)
		}
	}
	return nil
}

// frameLen returns what frame k decompresses to.
func (im *ImageInfo) frameLen(k int) int64 {
	return min(im.ChunkSize, im.Size-int64(k)*im.ChunkSize)
}

// Image returns the image of the given class, or nil.
func (c *Config) Image(class string) *ImageInfo {
	for i := range c.Images {
		if c.Images[i].Class == class {
			return &c.Images[i]
		}
	}
	return nil
}
