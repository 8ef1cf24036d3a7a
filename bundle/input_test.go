package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// sparseImage writes an image of chunk-sized pieces: data, a hole, data,
// zeros written out, a hole and a short data tail, and returns its path
// and content.
func sparseImage(t *testing.T, dir string, chunk int) (string, []byte) {
	t.Helper()
	data, err := os.ReadFile(writeImage(t, dir, "data", 2*chunk, 3))
	require.NoError(t, err)
	want := make([]byte, 5*chunk+1000)
	copy(want, data[:chunk])
	copy(want[2*chunk:], data[chunk:])
	copy(want[5*chunk:], data[:1000])

	p := filepath.Join(dir, "sparse.img")
	f, err := os.Create(p)
	require.NoError(t, err)
	defer f.Close()
	for _, piece := range []struct{ off, n int }{{0, chunk}, {2 * chunk, 2 * chunk}, {5 * chunk, 1000}} {
		_, err := f.WriteAt(want[piece.off:piece.off+piece.n], int64(piece.off))
		require.NoError(t, err)
	}
	return p, want
}

// openSource opens the file at p and returns its chunk source; the file
// is closed when the test ends.
func openSource(t *testing.T, p string, chunk int, zeros []byte) chunkSource {
	t.Helper()
	f, err := os.Open(p)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return newChunkSource(f, int64(chunk), zeros)
}

func TestCreate_SparseAndPipedImagesGiveTheSameBundle(t *testing.T) {
	dir := t.TempDir()
	chunk := 64 << 10
	sparse, content := sparseImage(t, dir, chunk)
	dense := filepath.Join(dir, "dense.img")
	require.NoError(t, os.WriteFile(dense, content, 0o644))

	layer := func(r io.Reader) ([]byte, string, []int64) {
		var out bytes.Buffer
		uh := sha256.New()
		n, frames, err := compress(context.Background(), &out, r, uh, nil,
			CreateOptions{ChunkSize: int64(chunk)})
		require.NoError(t, err)
		require.Equal(t, int64(len(content)), n)
		return out.Bytes(), hex.EncodeToString(uh.Sum(nil)), frames
	}
	open := func(p string) *os.File {
		f, err := os.Open(p)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		return f
	}
	want, wantSum, wantFrames := layer(bytes.NewReader(content))
	sum := sha256.Sum256(content)
	require.Equal(t, hex.EncodeToString(sum[:]), wantSum)
	for name, r := range map[string]io.Reader{"sparse file": open(sparse), "dense file": open(dense)} {
		got, gotSum, gotFrames := layer(r)
		require.Equal(t, want, got, name)
		require.Equal(t, wantSum, gotSum, name)
		require.Equal(t, wantFrames, gotFrames, name)
	}
}

func TestCatchFault_PassesOtherPanicsOn(t *testing.T) {
	require.PanicsWithValue(t, "boom", func() {
		_ = catchFault(func() { panic("boom") })
	})
	var m map[string]int
	require.Panics(t, func() {
		_ = catchFault(func() { m["x"] = 1 })
	})
}

func TestCreate_FileOutputMatchesAnyWriter(t *testing.T) {
	dir := t.TempDir()
	signer, kr := testKey(t, Ed25519)
	rootfs := ImageSource{Class: "rootfs", Path: writeImage(t, dir, "rootfs", 3<<20+77, 9)}
	boot := ImageSource{Class: "boot", Path: writeImage(t, dir, "boot", 5000, 10)}
	empty := ImageSource{Class: "data", Path: writeImage(t, dir, "empty", 0, 11)}
	tree := filepath.Join(dir, "tree")
	require.NoError(t, os.MkdirAll(tree, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(tree, "f"), []byte("file"), 0o644))
	tests := []struct {
		name     string
		images   []ImageSource
		reserved bool // the first layer's data is at the reserved offset
	}{
		{"one image", []ImageSource{rootfs}, true},
		{"three images", []ImageSource{boot, rootfs, empty}, true},
		{"a file tree", []ImageSource{boot, {Class: "app", Path: tree}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			spec := Spec{Compatible: "c", Version: "1.0.0", Created: testCreated, Images: tt.images}
			opts := CreateOptions{TempDir: tmp, Signers: []*Signer{signer}, ChunkSize: 1 << 20}
			out, err := os.Create(filepath.Join(tmp, "out.rota"))
			require.NoError(t, err)
			defer out.Close()
			info, err := Create(context.Background(), out, spec, opts)
			require.NoError(t, err)
			left, err := os.ReadDir(tmp)
			require.NoError(t, err)
			require.Len(t, left, 1, "only the output is left")
			got, err := os.ReadFile(out.Name())
			require.NoError(t, err)
			require.Equal(t, info.Size, int64(len(got)))
			pos, err := out.Seek(0, io.SeekCurrent)
			require.NoError(t, err)
			require.Equal(t, info.Size, pos, "the file offset is at the end")

			var buf bytes.Buffer
			_, err = Create(context.Background(), &buf, spec, opts)
			require.NoError(t, err)
			require.True(t, bytes.Equal(buf.Bytes(), got), "file and buffer outputs differ")

			b, err := OpenReader(bytes.NewReader(got), Options{})
			require.NoError(t, err)
			var written bytes.Buffer
			_, err = b.Write(context.Background(), &written)
			require.NoError(t, err)
			require.True(t, bytes.Equal(got, written.Bytes()), "Create and Write differ")

			want, err := reservedOffset(b.Config(), len(b.Signatures()))
			require.NoError(t, err)
			b, err = Open(out.Name(), Options{})
			require.NoError(t, err)
			defer b.Close()
			_, err = b.Verify(kr)
			require.NoError(t, err)
			ir, err := b.NextImage(context.Background())
			require.NoError(t, err)
			if tt.reserved {
				require.NotZero(t, want)
				require.Equal(t, want, ir.FileOffset)
				require.Zero(t, want%4096)
			} else {
				require.Zero(t, want)
			}
		})
	}
}

func TestCreateInFile_AfterOtherBytesAndWithAWrongReservation(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Compatible: "c", Version: "1.0.0", Created: testCreated, Images: []ImageSource{
		{Class: "boot", Path: writeImage(t, dir, "boot", 70000, 12)},
		{Class: "rootfs", Path: writeImage(t, dir, "rootfs", 2<<20, 13)},
	}}
	opts := CreateOptions{TempDir: dir, ChunkSize: DefaultChunkSize}
	var want bytes.Buffer
	_, err := Create(context.Background(), &want, spec, opts)
	require.NoError(t, err)

	cfg := Config{FormatVersion: FormatVersion, Compatible: "c", Version: "1.0.0", Created: testCreated,
		Images: make([]ImageInfo, 2)}
	planned, err := plannedOffset(cfg, spec, opts)
	require.NoError(t, err)
	require.NotZero(t, planned)
	for _, reserved := range []int64{planned, planned + 4096, 4096} {
		out, err := os.Create(filepath.Join(dir, "out.rota"))
		require.NoError(t, err)
		_, err = out.WriteString("kept")
		require.NoError(t, err)
		info, err := createInFile(context.Background(), out, cfg, spec, opts, reserved)
		require.NoError(t, err)
		require.NoError(t, out.Close())
		got, err := os.ReadFile(out.Name())
		require.NoError(t, err)
		require.Equal(t, "kept", string(got[:4]), "bytes before the start are kept")
		require.Equal(t, int64(want.Len()), info.Size)
		require.True(t, bytes.Equal(want.Bytes(), got[4:]), "reserved %d: output differs", reserved)
	}
}

func TestPadHeader(t *testing.T) {
	for _, room := range []int64{1536, 2048, 4096, 8192 + 512, 65536} {
		for _, size := range []int64{0, 1 << 20, 9 << 30} {
			hdr := tarHeader("blobs/sha256/abc", size, testCreated)
			require.NoError(t, padHeader(hdr, room))
			var buf bytes.Buffer
			require.NoError(t, tar.NewWriter(&buf).WriteHeader(hdr))
			require.Equal(t, room, int64(buf.Len()), "room %d size %d", room, size)
			got, err := tar.NewReader(&buf).Next()
			require.NoError(t, err)
			require.Equal(t, "blobs/sha256/abc", got.Name)
			require.Equal(t, size, got.Size)
			require.Equal(t, byte(tar.TypeReg), got.Typeflag)
		}
	}
	for _, room := range []int64{0, 512, 1024, 1500} {
		require.Error(t, padHeader(tarHeader("x", 1, testCreated), room), "room %d", room)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func TestCompress_ReportsTheWriteError(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Open(writeImage(t, dir, "a", 1<<20, 2))
	require.NoError(t, err)
	defer f.Close()
	full := errors.New("disk full")
	_, _, err = compress(context.Background(), failingWriter{full}, f, sha256.New(), nil,
		CreateOptions{ChunkSize: 64 << 10})
	require.ErrorIs(t, err, full)
}
