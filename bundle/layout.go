package bundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
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
	tw       *tar.Writer
	modTime  time.Time
	progress func(int64)
	check    bool
}

func blobName(h v1.Hash) string { return blobPrefix + h.Hex }

func (lw *layoutWriter) header(name string, size int64) error {
	return lw.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  lw.modTime,
		Format:   tar.FormatPAX,
	})
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

// writeLayout writes m and its layers as a .rota file to w: oci-layout,
// index.json, the bundle manifest, the config, each signature manifest
// followed by the blobs it introduces, then the image layers in order.
// Every layer's size and digest are checked while copying.
func writeLayout(ctx context.Context, w io.Writer, m *metadata, open layerOpener,
	progress func(int64)) error {
	return writeLayoutOpts(ctx, w, m, open, progress, true)
}

// writeLayoutOpts is writeLayout; with check false, layers are trusted to
// match their descriptors (Create just hashed them) and copied unhashed.
func writeLayoutOpts(ctx context.Context, w io.Writer, m *metadata, open layerOpener,
	progress func(int64), check bool) error {
	lw := &layoutWriter{tw: tar.NewWriter(w), modTime: m.config.Created.UTC(),
		progress: progress, check: check}
	idx, err := m.index()
	if err != nil {
		return fmt.Errorf("encode index: %w", err)
	}
	if err := lw.file(ociLayoutName, ociLayoutFile); err != nil {
		return err
	}
	if err := lw.file(indexName, idx); err != nil {
		return err
	}
	if err := lw.file(blobName(m.manifestDigest), m.manifestRaw); err != nil {
		return err
	}
	if err := lw.file(blobName(m.manifest.Config.Digest), m.configRaw); err != nil {
		return err
	}
	seen := map[v1.Hash]bool{}
	for i, s := range m.sigs {
		if err := lw.file(blobName(s.digest), s.raw); err != nil {
			return err
		}
		for _, h := range m.sigBlobs(i, seen) {
			if err := lw.file(blobName(h), m.blobs[h]); err != nil {
				return err
			}
		}
	}
	buf := make([]byte, copyBufferSize)
	for i, d := range m.manifest.Layers {
		if err := lw.layer(ctx, open, i, d, buf); err != nil {
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
	if err := lw.header(blobName(d.Digest), d.Size); err != nil {
		return fmt.Errorf("write layer %s: %w", d.Digest, err)
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
