package bundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ociLayoutFile is the content of the oci-layout marker file.
var ociLayoutFile = []byte(`{"imageLayoutVersion":"1.0.0"}`)

// Names of the fixed entries of a .rota file.
const (
	ociLayoutName = "oci-layout"
	indexName     = "index.json"
	blobPrefix    = "blobs/sha256/"
)

// copyBufferSize is the buffer used to copy layers.
const copyBufferSize = 1 << 20

// layerOpener returns the compressed bytes of layer i of a bundle. Layers
// are requested in order, each once.
type layerOpener func(ctx context.Context, i int, d v1.Descriptor) (io.ReadCloser, error)

// layoutWriter writes a .rota file in the fixed order.
type layoutWriter struct {
	w        io.Writer // under tw
	tw       *tar.Writer
	modTime  time.Time
	progress func(int64)
	check    bool
	room     int64 // bytes of the first layer's padded header; 0 for a plain one
}

func blobName(h v1.Hash) string { return blobPrefix + h.Hex }

// tarHeader returns the header of a .rota entry. Write and Assemble both
// encode headers from it, so their output agrees byte for byte.
func tarHeader(name string, size int64, modTime time.Time) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  modTime,
		Format:   tar.FormatPAX,
	}
}

// entryTime is the modification time of every entry of m's .rota file:
// the bundle's creation time, so that the same inputs give the same file.
func (m *metadata) entryTime() time.Time { return m.config.Created.UTC() }

// layoutEntry is one file of a .rota archive: a metadata file held in
// memory, or an image layer.
type layoutEntry struct {
	name string
	size int64

	// data is the content of a metadata file.
	data []byte

	// layer is the index in the manifest of an image layer, or -1.
	layer int
}

// entries lists the files of m's .rota archive in their fixed order:
// oci-layout, index.json, the bundle manifest, the config, each signature
// manifest followed by the blobs it introduces, then the image layers.
func (m *metadata) entries() ([]layoutEntry, error) {
	idx, err := m.index()
	if err != nil {
		return nil, fmt.Errorf("encode index: %w", err)
	}
	small := func(name string, b []byte) layoutEntry {
		return layoutEntry{name: name, size: int64(len(b)), data: b, layer: -1}
	}
	out := []layoutEntry{
		small(ociLayoutName, ociLayoutFile),
		small(indexName, idx),
		small(blobName(m.manifestDigest), m.manifestRaw),
		small(blobName(m.manifest.Config.Digest), m.configRaw),
	}
	seen := map[v1.Hash]bool{}
	for i, s := range m.sigs {
		out = append(out, small(blobName(s.digest), s.raw))
		for _, h := range m.sigBlobs(i, seen) {
			out = append(out, small(blobName(h), m.blobs[h]))
		}
	}
	for i, d := range m.manifest.Layers {
		out = append(out, layoutEntry{name: blobName(d.Digest), size: d.Size, layer: i})
	}
	return out, nil
}

func (lw *layoutWriter) header(name string, size int64) error {
	return lw.tw.WriteHeader(tarHeader(name, size, lw.modTime))
}

func (lw *layoutWriter) file(name string, b []byte) error {
	if err := lw.header(name, int64(len(b))); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := lw.tw.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// writeLayout writes m and its layers as a .rota file to w, its entries
// in the order m.entries gives. Every layer's size and digest are checked
// while copying.
func writeLayout(ctx context.Context, w io.Writer, m *metadata, open layerOpener,
	progress func(int64)) error {
	return writeLayoutOpts(ctx, w, m, open, progress, true)
}

// writeLayoutOpts is writeLayout; with check false, layers are trusted to
// match their descriptors (Create just hashed them) and copied unhashed.
func writeLayoutOpts(ctx context.Context, w io.Writer, m *metadata, open layerOpener,
	progress func(int64), check bool) error {
	lw := &layoutWriter{w: w, tw: tar.NewWriter(w), modTime: m.entryTime(),
		progress: progress, check: check}
	entries, err := m.entries()
	if err != nil {
		return err
	}
	if lw.room, err = m.firstHeaderRoom(); err != nil {
		return err
	}
	buf := make([]byte, copyBufferSize)
	for _, e := range entries {
		if e.layer < 0 {
			err = lw.file(e.name, e.data)
		} else {
			err = lw.layer(ctx, open, e.layer, m.manifest.Layers[e.layer], buf)
		}
		if err != nil {
			return err
		}
	}
	if err := lw.tw.Close(); err != nil {
		return fmt.Errorf("finish tar: %w", err)
	}
	return nil
}

func (lw *layoutWriter) layer(ctx context.Context, open layerOpener, i int, d v1.Descriptor,
	buf []byte) error {
	rc, err := open(ctx, i, d)
	if err != nil {
		return fmt.Errorf("open layer %s: %w", d.Digest, err)
	}
	defer rc.Close()
	room := lw.room
	if i != 0 {
		room = 0
	}
	hdr, err := layerHeader(blobName(d.Digest), d.Size, lw.modTime, room)
	if err != nil {
		return fmt.Errorf("write layer %s: %w", d.Digest, err)
	}
	if err := lw.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write layer %s: %w", d.Digest, err)
	}
	if staged, ok := rc.(stagedFile); ok && !lw.check {
		if cw, ok := lw.w.(*countingWriter); ok {
			if out, ok := cw.w.(*os.File); ok {
				return lw.copyFile(ctx, cw, out, staged.File, d)
			}
		}
	}
	h := sha256.New()
	src := io.LimitReader(rc, d.Size)
	if lw.check {
		src = io.TeeReader(src, h)
	}
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, rerr := src.Read(buf)
		if k > 0 {
			if _, err := lw.tw.Write(buf[:k]); err != nil {
				return fmt.Errorf("write layer %s: %w", d.Digest, err)
			}
			n += int64(k)
			if lw.progress != nil {
				lw.progress(int64(k))
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read layer %s: %w", d.Digest, rerr)
		}
	}
	if n != d.Size {
		return fmt.Errorf("%w: layer %s: %d of %d bytes", ErrTruncated, d.Digest, n, d.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); lw.check && got != d.Digest.Hex {
		return fmt.Errorf("%w: layer %s: content hashes to sha256:%s", ErrDigestMismatch, d.Digest, got)
	}
	return nil
}

// stagedFile is a layer Create staged in a temporary file, trusted to
// match its descriptor. Closing it leaves the file open.
type stagedFile struct{ *os.File }

func (stagedFile) Close() error { return nil }

// writebackSize is how much of a copied layer is written before its
// writeback to disk is started.
const writebackSize = 8 << 20

// copyFile copies a staged layer into the output file after its header
// has been written, in the kernel where the file systems allow it
// (copy_file_range), and starts writing the copy back to disk as it
// goes, so that the caller's final sync of the output has little left to
// wait for.
func (lw *layoutWriter) copyFile(ctx context.Context, cw *countingWriter, out, in *os.File,
	d v1.Descriptor) error {
	off, err := out.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("write layer %s: %w", d.Digest, err)
	}
	for n := int64(0); n < d.Size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, err := out.ReadFrom(io.LimitReader(in, min(writebackSize, d.Size-n)))
		cw.n += k
		if lw.progress != nil && k > 0 {
			lw.progress(k)
		}
		switch {
		case err != nil:
			return fmt.Errorf("write layer %s: %w", d.Digest, err)
		case k == 0:
			return fmt.Errorf("%w: layer %s: %d of %d bytes", ErrTruncated, d.Digest, n, d.Size)
		}
		startWriteback(out, off+n, k)
		n += k
	}
	if _, err := cw.Write(make([]byte, padding(d.Size))); err != nil {
		return fmt.Errorf("write layer %s: %w", d.Digest, err)
	}
	// The tar writer still counts the layer's bytes as missing; the next
	// entry starts afresh.
	lw.tw = tar.NewWriter(cw)
	return nil
}
