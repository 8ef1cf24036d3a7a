package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// tarEntry is one entry of a tar file under test.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

func readEntries(t *testing.T, raw []byte) []tarEntry {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(raw))
	var out []tarEntry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		out = append(out, tarEntry{hdr: *hdr, data: data})
	}
}

func writeEntries(t *testing.T, es []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		require.NoError(t, tw.WriteHeader(&h))
		_, err := tw.Write(e.data)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

// rebuild opens raw, lets mutate change the metadata and the layers, then
// recomputes every digest, re-signs with s (when non-nil) and writes the
// result, so that only what mutate changed is wrong.
func rebuild(t *testing.T, raw []byte, s *Signer,
	mutate func(cfg *Config, man *v1.Manifest, layers [][]byte)) []byte {
	t.Helper()
	es := readEntries(t, raw)
	b, err := OpenReader(bytes.NewReader(raw), Options{})
	require.NoError(t, err)
	m := b.meta
	var layers [][]byte
	for _, l := range m.manifest.Layers {
		for _, e := range es {
			if e.hdr.Name == blobName(l.Digest) {
				layers = append(layers, e.data)
			}
		}
	}
	cfg, man := m.config, m.manifest
	cfg.Images = append([]ImageInfo(nil), cfg.Images...)
	man.Layers = append([]v1.Descriptor(nil), man.Layers...)
	orig := append([][]byte(nil), layers...)
	mutate(&cfg, &man, layers)
	for i := range man.Layers {
		if !bytes.Equal(orig[i], layers[i]) &&
			slices.Equal(cfg.Images[i].Frames, m.config.Images[i].Frames) {
			// A replaced layer has no frame table unless mutate made one.
			cfg.Images[i].ChunkSize, cfg.Images[i].Frames = 0, nil
		}
		man.Layers[i].Digest = digestOf(layers[i])
		man.Layers[i].Size = int64(len(layers[i]))
	}
	cfgRaw, err := json.Marshal(cfg)
	require.NoError(t, err)
	man.Config.Digest, man.Config.Size = digestOf(cfgRaw), int64(len(cfgRaw))
	manRaw, err := json.Marshal(man)
	require.NoError(t, err)
	nm := &metadata{manifestRaw: manRaw, manifest: man, manifestDigest: digestOf(manRaw),
		configRaw: cfgRaw, config: cfg, blobs: map[v1.Hash][]byte{}}
	if s != nil {
		require.NoError(t, nm.addSignature(s, testCreated))
	}
	var out bytes.Buffer
	open := func(_ context.Context, i int, _ v1.Descriptor) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layers[i])), nil
	}
	require.NoError(t, writeLayout(context.Background(), &out, nm, open, nil))
	return out.Bytes()
}

// readAll opens, verifies and reads every image of raw, returning the
// first error.
func readAll(raw []byte, kr *Keyring) error {
	b, err := OpenReader(bytes.NewReader(raw), Options{})
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := b.Verify(kr); err != nil {
		return err
	}
	for {
		ir, err := b.NextImage(context.Background())
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, ir); err != nil {
			return err
		}
	}
}

func zstdBytes(t *testing.T, data []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, opts...)
	require.NoError(t, err)
	_, err = enc.Write(data)
	require.NoError(t, err)
	require.NoError(t, enc.Close())
	return buf.Bytes()
}

func TestOpen_HostileInput(t *testing.T) {
	dir := t.TempDir()
	s, kr := testKey(t, Ed25519)
	good := buildBundle(t, s,
		ImageSource{Class: "rootfs", Path: writeImage(t, dir, "a", 1<<20, 3)},
		ImageSource{Class: "boot", Path: writeImage(t, dir, "b", 64<<10, 4)})
	require.NoError(t, readAll(good, kr))
	// layout, index, manifest, config, signature manifest, {}, payload,
	// then the two layers.
	require.Equal(t, 9, len(readEntries(t, good)))

	edit := func(f func(es []tarEntry) []tarEntry) []byte {
		return writeEntries(t, f(readEntries(t, good)))
	}
	flip := func(i int) []byte {
		return edit(func(es []tarEntry) []tarEntry {
			es[i].data = bytes.Clone(es[i].data)
			es[i].data[len(es[i].data)/2] ^= 0x40
			return es
		})
	}
	other, _ := testKey(t, Ed25519)

	tests := []struct {
		name string
		raw  []byte
		want error
	}{
		{"an empty file is truncated", nil, ErrTruncated},
		{"a file cut inside the metadata is truncated", good[:1536], ErrTruncated},
		{"a file cut inside the first image is truncated", good[:len(good)-(64<<10)-4096],
			ErrTruncated},
		{"entries out of order are refused", edit(func(es []tarEntry) []tarEntry {
			es[2], es[3] = es[3], es[2]
			return es
		}), ErrInvalidBundle},
		{"a duplicate entry is refused", edit(func(es []tarEntry) []tarEntry {
			return append(es[:4], es[3:]...)
		}), ErrInvalidBundle},
		{"a directory entry is refused", edit(func(es []tarEntry) []tarEntry {
			d := tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "blobs/", Mode: 0o755}}
			return append(es[:2], append([]tarEntry{d}, es[2:]...)...)
		}), ErrInvalidBundle},
		{"a symlink entry is refused", edit(func(es []tarEntry) []tarEntry {
			es[3].hdr.Typeflag, es[3].hdr.Linkname, es[3].data = tar.TypeSymlink, "/etc/passwd", nil
			return es
		}), ErrInvalidBundle},
		{"a path traversal name is refused", edit(func(es []tarEntry) []tarEntry {
			es[2].hdr.Name = "blobs/sha256/../../../etc/passwd"
			return es
		}), ErrInvalidBundle},
		{"an absolute name is refused", edit(func(es []tarEntry) []tarEntry {
			es[0].hdr.Name = "/oci-layout"
			return es
		}), ErrInvalidBundle},
		{"an oversized index is refused", edit(func(es []tarEntry) []tarEntry {
			es[1].data = bytes.Repeat([]byte(" "), MaxMetadataSize+1)
			return es
		}), ErrInvalidBundle},
		{"an unknown layout version is refused", edit(func(es []tarEntry) []tarEntry {
			es[0].data = []byte(`{"imageLayoutVersion":"9.0.0"}`)
			return es
		}), ErrUnsupportedFormat},
		{"a corrupt manifest fails its digest", flip(2), ErrDigestMismatch},
		{"a corrupt config fails its digest", flip(3), ErrDigestMismatch},
		{"a corrupt signature manifest fails its digest", flip(4), ErrDigestMismatch},
		{"a corrupt payload fails its digest", flip(6), ErrDigestMismatch},
		{"a corrupt image layer fails its digest", flip(7), nil},
		{"an unknown format version is refused", rebuild(t, good, s,
			func(c *Config, _ *v1.Manifest, _ [][]byte) { c.FormatVersion = 2 }),
			ErrUnsupportedFormat},
		{"an unsigned bundle is refused", rebuild(t, good, nil,
			func(*Config, *v1.Manifest, [][]byte) {}), ErrUnsigned},
		{"a bundle signed by an unknown key is refused", rebuild(t, good, other,
			func(*Config, *v1.Manifest, [][]byte) {}), ErrUntrusted},
		{"a signature of another bundle is refused", edit(func(es []tarEntry) []tarEntry {
			alt := readEntries(t, rebuild(t, good, s, func(c *Config, _ *v1.Manifest, _ [][]byte) {
				c.Description = "changed"
			}))
			es[4], es[6] = alt[4], alt[6]
			return es
		}), ErrInvalidBundle},
		{"a wrong image sha256 is caught at the end of the image", rebuild(t, good, s,
			func(c *Config, _ *v1.Manifest, _ [][]byte) { c.Images[1].SHA256 = zeroSHA }),
			ErrDigestMismatch},
		{"an image smaller than declared is caught", rebuild(t, good, s,
			func(c *Config, _ *v1.Manifest, _ [][]byte) { c.Images[1].Size++ }),
			ErrDigestMismatch},
		{"a zstd bomb is capped at the declared size", rebuild(t, good, s,
			func(c *Config, _ *v1.Manifest, l [][]byte) {
				l[1] = zstdBytes(t, make([]byte, 256<<20))
			}), ErrDigestMismatch},
		{"a window above the limit is refused", rebuild(t, good, s,
			func(c *Config, _ *v1.Manifest, l [][]byte) {
				// A frame declaring a 1 GiB window (window descriptor
				// 0xa0) holding one raw block of one byte.
				l[1] = []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa0, 0x09, 0x00, 0x00, 'x'}
			}), ErrInvalidBundle},
		{"garbage in a layer is refused", rebuild(t, good, s,
			func(c *Config, _ *v1.Manifest, l [][]byte) { l[1] = []byte("not zstd at all") }),
			ErrInvalidBundle},
		{"trailing entries after the last image are refused", edit(func(es []tarEntry) []tarEntry {
			return append(es, tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "extra",
				Mode: 0o644}, data: []byte("x")})
		}), ErrInvalidBundle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := readAll(tt.raw, kr)
			require.Error(t, err)
			if tt.want != nil {
				require.ErrorIs(t, err, tt.want, "got %v", err)
			} else {
				require.True(t, errors.Is(err, ErrDigestMismatch) ||
					errors.Is(err, ErrInvalidBundle), "got %v", err)
			}
		})
	}
}

func TestVerify_PayloadForAnotherManifest(t *testing.T) {
	dir := t.TempDir()
	s, kr := testKey(t, Ed25519)
	raw := buildBundle(t, s, ImageSource{Class: "rootfs", Path: writeImage(t, dir, "a", 4096, 1)})
	b, err := OpenReader(bytes.NewReader(raw), Options{})
	require.NoError(t, err)
	// A correctly signed payload that names another manifest.
	other := digestOf([]byte("another manifest"))
	pl, err := simpleSigningPayload(other, "acme-board-v1")
	require.NoError(t, err)
	sig, err := s.sign(pl)
	require.NoError(t, err)
	l := &b.meta.sigs[0].manifest.Layers[0]
	b.meta.blobs[l.Digest] = pl
	l.Annotations[AnnotationSignature] = base64.StdEncoding.EncodeToString(sig)
	_, err = b.Verify(kr)
	require.ErrorIs(t, err, ErrUntrusted)
	require.ErrorContains(t, err, "names manifest")
}

func TestImageReader_DigestCheckedBeforeEOF(t *testing.T) {
	// A caller that stops at the first error must never have seen io.EOF
	// for a corrupt image, even if it read every byte.
	dir := t.TempDir()
	s, kr := testKey(t, Ed25519)
	good := buildBundle(t, s, ImageSource{Class: "rootfs", Path: writeImage(t, dir, "a", 2<<20, 9)})
	bad := rebuild(t, good, s, func(c *Config, _ *v1.Manifest, _ [][]byte) {
		c.Images[0].SHA256 = zeroSHA
	})
	b, err := OpenReader(bytes.NewReader(bad), Options{})
	require.NoError(t, err)
	_, err = b.Verify(kr)
	require.NoError(t, err)
	ir, err := b.NextImage(context.Background())
	require.NoError(t, err)
	n, err := io.Copy(io.Discard, ir)
	require.ErrorIs(t, err, ErrDigestMismatch)
	require.Equal(t, int64(2<<20), n, "all bytes are handed out, but the end is an error")
}

func TestCreate_Deterministic(t *testing.T) {
	dir := t.TempDir()
	s, _ := testKey(t, Ed25519) // Ed25519 signatures are deterministic
	img := ImageSource{Class: "rootfs", Path: writeImage(t, dir, "a", 1<<20, 5)}
	a := buildBundle(t, s, img)
	b := buildBundle(t, s, img)
	require.True(t, bytes.Equal(a, b), "same inputs and key give the same file")

	e, _ := testKey(t, ECDSAP256)
	x, y := buildBundle(t, e, img), buildBundle(t, e, img)
	ex, ey := readEntries(t, x), readEntries(t, y)
	require.Equal(t, ex[2].data, ey[2].data, "manifest is identical")
	require.Equal(t, ex[3].data, ey[3].data, "config is identical")
	require.Equal(t, ex[len(ex)-1].data, ey[len(ey)-1].data, "layer is identical")
}

func TestCreate_BadSpec(t *testing.T) {
	dir := t.TempDir()
	img := writeImage(t, dir, "a", 4096, 1)
	tests := []struct {
		name string
		spec Spec
	}{
		{"no images", Spec{Compatible: "c", Version: "1.0.0"}},
		{"version not semver", Spec{Compatible: "c", Version: "v1",
			Images: []ImageSource{{Class: "rootfs", Path: img}}}},
		{"empty compatible", Spec{Version: "1.0.0",
			Images: []ImageSource{{Class: "rootfs", Path: img}}}},
		{"bad class", Spec{Compatible: "c", Version: "1.0.0",
			Images: []ImageSource{{Class: "Root FS", Path: img}}}},
		{"two images of one class", Spec{Compatible: "c", Version: "1.0.0",
			Images: []ImageSource{{Class: "rootfs", Path: img}, {Class: "rootfs", Path: img}}}},
		{"missing image file", Spec{Compatible: "c", Version: "1.0.0",
			Images: []ImageSource{{Class: "rootfs", Path: dir + "/missing"}}}},
		{"tar filesystem for a raw image", Spec{Compatible: "c", Version: "1.0.0",
			Images: []ImageSource{{Class: "rootfs", Path: img, Filesystem: "tar"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Create(context.Background(), io.Discard, tt.spec,
				CreateOptions{TempDir: dir})
			require.Error(t, err)
		})
	}
}

func TestCreate_Canceled(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Create(ctx, io.Discard, Spec{Compatible: "c", Version: "1.0.0", Created: time.Now(),
		Images: []ImageSource{{Class: "rootfs", Path: writeImage(t, dir, "a", 4<<20, 1)}}},
		CreateOptions{TempDir: dir})
	require.ErrorIs(t, err, context.Canceled)
}
