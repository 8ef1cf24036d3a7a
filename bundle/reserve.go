package bundle

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Where the first layer's data starts in a .rota file is a function of
// the bundle's config and number of signatures alone (reservedOffset):
// past a bound on the metadata that is known before any image is
// compressed. Create can then write the layers to an output file as they
// are compressed and put the metadata, known last, in front of them;
// Write and Assemble place the layers the same way, so that every writer
// gives the same bytes. The room between the metadata and the first
// layer's header is taken by a pax extended header on that entry, whose
// comment record readers ignore.

// Terms of the bound.
const (
	// sigReserve is the room counted for each signature: its entry in
	// index.json, its manifest, payload and config entries.
	sigReserve = 8 << 10

	// reserveSlack is added to the bound before it is rounded up to a
	// page.
	reserveSlack = 2 << 10

	// maxReservedImage is the largest image placed this way: its layer's
	// tar header must fit in one block (a size below 8 GiB).
	maxReservedImage = 8<<30 - 256<<20
)

// reservedOffset returns the offset in the .rota file at which the first
// layer's data starts for a bundle with config cfg and nsig signatures,
// or 0 when the layers simply follow the metadata: for file trees, images
// without a frame table and very large images.
func reservedOffset(cfg Config, nsig int) (int64, error) {
	cfg.Images = slices.Clone(cfg.Images)
	layers := make([]*stagedLayer, len(cfg.Images))
	for i, im := range cfg.Images {
		if im.Filesystem == "tar" || im.Size > maxReservedImage || (im.Size > 0 && im.ChunkSize <= 0) {
			return 0, nil
		}
		// Every frame at twice the chunk size has at least as many digits
		// as any frame can have.
		maxFrame := 2 * max(im.ChunkSize, 1)
		var frames []int64
		if im.Size > 0 {
			frames = make([]int64, (im.Size+im.ChunkSize-1)/im.ChunkSize)
		}
		for k := range frames {
			frames[k] = maxFrame
		}
		im.SHA256, im.Frames = zeroSHA, frames
		cfg.Images[i] = im
		layers[i] = &stagedLayer{info: im, desc: v1.Descriptor{
			MediaType:   RawImageMediaType,
			Size:        int64(len(frames)+1) * maxFrame,
			Digest:      v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", i)},
			Annotations: map[string]string{AnnotationClass: im.Class},
		}}
	}
	m, err := newMetadata(cfg, layers)
	if err != nil {
		return 0, err
	}
	n, err := metadataSize(m)
	if err != nil {
		return 0, err
	}
	n += int64(nsig)*sigReserve + tarBlockSize + reserveSlack
	const page = 4096
	return (n + page - 1) / page * page, nil
}

// plannedOffset is reservedOffset for the bundle Create is about to make
// of spec, from the sizes of its image files, before reading them. It
// returns 0 when an image's size cannot be known in advance.
func plannedOffset(cfg Config, spec Spec, opts CreateOptions) (int64, error) {
	cfg.Images = slices.Clone(cfg.Images)
	for i, src := range spec.Images {
		fi, err := os.Stat(src.Path)
		if err != nil {
			return 0, err
		}
		if !fi.Mode().IsRegular() {
			return 0, nil
		}
		fs, err := fileFilesystem(src)
		if err != nil {
			return 0, err
		}
		cfg.Images[i] = ImageInfo{Class: src.Class, Size: fi.Size(), Filesystem: fs}
		if fi.Size() > 0 {
			cfg.Images[i].ChunkSize = opts.ChunkSize
		}
	}
	return reservedOffset(cfg, len(opts.Signers))
}

// fileFilesystem returns the filesystem type Create records for a raw
// image file.
func fileFilesystem(src ImageSource) (string, error) {
	if src.Filesystem != "" {
		return src.Filesystem, nil
	}
	f, err := os.Open(src.Path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return detectFilesystem(f), nil
}

// metadataSize returns the number of bytes of m's .rota file before the
// first layer's header.
func metadataSize(m *metadata) (int64, error) { return encodeMetadata(m, io.Discard) }

// encodeMetadata writes the part of m's .rota file before the first
// layer's header to w and returns its size.
func encodeMetadata(m *metadata, w io.Writer) (int64, error) {
	entries, err := m.entries()
	if err != nil {
		return 0, err
	}
	cw := &countingWriter{w: w}
	lw := &layoutWriter{w: cw, tw: tar.NewWriter(cw), modTime: m.entryTime()}
	for _, e := range entries {
		if e.layer >= 0 {
			break
		}
		if err := lw.file(e.name, e.data); err != nil {
			return 0, err
		}
	}
	if err := lw.tw.Flush(); err != nil {
		return 0, err
	}
	return cw.n, nil
}

// firstHeaderRoom returns the number of bytes the first layer's tar
// header takes in m's .rota file, or 0 for a plain header.
func (m *metadata) firstHeaderRoom() (int64, error) {
	reserved, err := reservedOffset(m.config, len(m.sigs))
	if err != nil || reserved == 0 {
		return 0, err
	}
	meta, err := metadataSize(m)
	if err != nil {
		return 0, err
	}
	return firstHeaderRoom(reserved, meta), nil
}

// firstHeaderRoom returns the number of bytes the first layer's tar
// header takes when the metadata before it has meta bytes and its data
// is reserved at offset reserved: what is left, or 0 (a plain header)
// when nothing is reserved or the metadata does not leave room for a pax
// header.
func firstHeaderRoom(reserved, meta int64) int64 {
	room := reserved - meta
	if reserved == 0 || room < 3*tarBlockSize {
		return 0
	}
	return room
}

// padHeader sets a pax comment record on hdr so that its encoding takes
// exactly room bytes: the extended header's own header block, its records
// and the header block of hdr.
func padHeader(hdr *tar.Header, room int64) error {
	records := room - 2*tarBlockSize
	if room%tarBlockSize != 0 || records < tarBlockSize {
		return fmt.Errorf("no room for a padded header in %d bytes", room)
	}
	const text = "room reserved for the bundle metadata "
	// A record is "<length> comment=<value>\n"; leaving a few bytes for
	// the length digits and any other record, the block rounding of the
	// records makes up the rest.
	n := int(records) - 64
	hdr.PAXRecords = map[string]string{"comment": text + strings.Repeat(".", max(n-len(text), 0))}
	var buf bytes.Buffer
	if err := tar.NewWriter(&buf).WriteHeader(hdr); err != nil {
		return err
	}
	if int64(buf.Len()) != room {
		return fmt.Errorf("padded header takes %d bytes, not %d", buf.Len(), room)
	}
	return nil
}

// layerHeader returns the tar header of a layer entry, padded to room
// bytes when room is not zero.
func layerHeader(name string, size int64, modTime time.Time, room int64) (*tar.Header, error) {
	hdr := tarHeader(name, size, modTime)
	if room != 0 {
		if err := padHeader(hdr, room); err != nil {
			return nil, err
		}
	}
	return hdr, nil
}

// encodeHeader returns the encoded tar header of a layer entry, padded to
// room bytes when room is not zero.
func encodeHeader(name string, size int64, m *metadata, room int64) ([]byte, error) {
	hdr, err := layerHeader(name, size, m.entryTime(), room)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := tar.NewWriter(&buf).WriteHeader(hdr); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
