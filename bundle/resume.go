package bundle

import (
	"context"
	"fmt"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"io"
)

// ResumeImage continues reading image cp.Image at the checkpoint cp,
// taken by an ImageReader of the same bundle, perhaps in an earlier
// process. rest must yield the .rota stream from byte
// cp.FileOffset+cp.Compressed on, for example the body of an HTTP
// response to a Range request; after this image, NextImage reads the
// following images from rest. The returned reader yields the image from
// byte cp.Uncompressed on, and checks the digests of the whole image as
// if it had been read in one go. The bundle must be verified, and no image
// read yet.
func (b *Bundle) ResumeImage(ctx context.Context, cp *Checkpoint, rest io.Reader) (*ImageReader,
	error) {
	if !b.Verified() {
		return nil, fmt.Errorf("resume image of bundle %s: %w", b.Digest(), ErrNotVerified)
	}
	if b.next != 0 {
		return nil, fmt.Errorf("resume image of bundle %s: images were already read", b.Digest())
	}
	if err := b.checkCheckpoint(cp); err != nil {
		return nil, fmt.Errorf("resume image of bundle %s: %w", b.Digest(), err)
	}
	d := b.meta.manifest.Layers[cp.Image]
	info := b.meta.config.Images[cp.Image]
	remaining := d.Size - cp.Compressed
	rc := io.NopCloser(&tarEntryReader{r: io.LimitReader(rest, remaining)})
	ir, err := newImageReader(rc, d, info,
		imageStart{index: cp.Image, fileOffset: cp.FileOffset, cp: cp, workers: b.workers},
		b.progress)
	if err != nil {
		return nil, fmt.Errorf("resume image %s of bundle %s: %w", info.Class, b.Digest(), err)
	}
	// After this layer, the tar stream pads it to a 512-byte block and
	// goes on with the next entry.
	pad := (512 - d.Size%512) % 512
	old := b.src
	b.src = &resumedSource{
		rest: rest,
		pad:  pad,
		base: cp.FileOffset + d.Size + pad,
		old:  old,
	}
	b.next = cp.Image + 1
	b.current = ir
	return ir, nil
}

// checkCheckpoint makes sure cp fits this bundle's frame table.
func (b *Bundle) checkCheckpoint(cp *Checkpoint) error {
	if cp == nil || cp.Image < 0 || cp.Image >= len(b.meta.config.Images) {
		return fmt.Errorf("%w: checkpoint names no image of this bundle", ErrInvalidBundle)
	}
	im := b.meta.config.Images[cp.Image]
	if im.ChunkSize == 0 {
		return fmt.Errorf("%w: image %s has no frame table", ErrInvalidBundle, im.Class)
	}
	if cp.Frame < 1 || cp.Frame > len(im.Frames) || cp.FileOffset < 0 {
		return fmt.Errorf("%w: checkpoint frame %d of image %s out of range",
			ErrInvalidBundle, cp.Frame, im.Class)
	}
	var comp int64
	for _, f := range im.Frames[:cp.Frame] {
		comp += f
	}
	if cp.Compressed != comp || cp.Uncompressed != min(int64(cp.Frame)*im.ChunkSize, im.Size) {
		return fmt.Errorf("%w: checkpoint offsets do not match frame %d of image %s",
			ErrInvalidBundle, cp.Frame, im.Class)
	}
	return nil
}

// resumedSource reads the layers after a resumed one from the rest of the
// stream.
type resumedSource struct {
	rest io.Reader
	pad  int64
	base int64
	old  layerSource
	ts   *tarSource
}

func (s *resumedSource) tar() (*tarSource, error) {
	if s.ts == nil {
		if _, err := io.CopyN(io.Discard, s.rest, s.pad); err != nil {
			return nil, fmt.Errorf("%w: after resumed layer: %v", ErrTruncated, err)
		}
		s.ts = newTarSource(s.rest, nil, s.base)
	}
	return s.ts, nil
}

func (s *resumedSource) layer(ctx context.Context, i int, d v1.Descriptor) (io.ReadCloser, error) {
	ts, err := s.tar()
	if err != nil {
		return nil, err
	}
	return ts.layer(ctx, i, d)
}

func (s *resumedSource) finish() error {
	ts, err := s.tar()
	if err != nil {
		return err
	}
	return ts.finish()
}

func (s *resumedSource) offset() int64 {
	if s.ts == nil {
		return -1
	}
	return s.ts.offset()
}

func (s *resumedSource) Close() error { return s.old.Close() }
