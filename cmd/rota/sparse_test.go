package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestSparseWriter_SameBytes(t *testing.T) {
	data := make([]byte, 5*sparseBlock+1234)
	copy(data[10:], "head")
	copy(data[2*sparseBlock+7:], bytes.Repeat([]byte{9}, sparseBlock))
	tests := []struct {
		name  string
		data  []byte
		write int // bytes per Write call
	}{
		{"mixed blocks in one write", data, len(data)},
		{"mixed blocks in odd writes", data, 4097},
		{"trailing zeros only", make([]byte, 3*sparseBlock+5), 1000},
		{"no zeros", bytes.Repeat([]byte{1}, sparseBlock+3), 777},
		{"empty", nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "out"))
			require.NoError(t, err)
			defer f.Close()
			sw := newSparseWriter(f)
			for p := tt.data; len(p) > 0; {
				k := min(len(p), tt.write)
				n, err := sw.Write(p[:k])
				require.NoError(t, err)
				require.Equal(t, k, n)
				p = p[k:]
			}
			require.NoError(t, sw.Finish())
			got, err := os.ReadFile(f.Name())
			require.NoError(t, err)
			require.True(t, bytes.Equal(tt.data, got))
		})
	}
}

// alignedBytes returns n bytes starting at a directAlign boundary.
func alignedBytes(n int) []byte {
	b := make([]byte, n+directAlign)
	off := int(directAlign - uintptr(unsafe.Pointer(&b[0]))%directAlign)
	return b[off%directAlign:][:n]
}

// TestSparseWriter_Direct writes an image in aligned blocks, as extract
// does, then an unaligned tail: the blocks go with O_DIRECT where the
// temporary directory's file system takes it, the tail buffered, and the
// file holds every byte either way.
func TestSparseWriter_Direct(t *testing.T) {
	const frame = 4 * sparseBlock
	data := alignedBytes(3*frame + 1000)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	clear(data[frame : 2*frame]) // a hole
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "out"))
	require.NoError(t, err)
	defer f.Close()
	sw := newSparseWriter(f)
	direct := sw.direct
	var fs unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &fs))
	switch fs.Type {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC:
		require.True(t, direct, "O_DIRECT refused on a file system that takes it")
	}
	for off := 0; off < 3*frame; off += frame {
		n, err := sw.Write(data[off : off+frame])
		require.NoError(t, err)
		require.Equal(t, frame, n)
		require.Equal(t, direct, sw.direct, "aligned frames keep O_DIRECT")
	}
	n, err := sw.Write(data[3*frame:])
	require.NoError(t, err)
	require.Equal(t, 1000, n)
	require.False(t, sw.direct, "an unaligned tail is written buffered")
	require.NoError(t, sw.Finish())
	got, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))

	// An unaligned buffer from the start goes buffered too.
	f2, err := os.Create(filepath.Join(t.TempDir(), "out2"))
	require.NoError(t, err)
	defer f2.Close()
	sw = newSparseWriter(f2)
	_, err = sw.Write(data[1 : frame+1])
	require.NoError(t, err)
	require.False(t, sw.direct)
	require.NoError(t, sw.Finish())
	got, err = os.ReadFile(f2.Name())
	require.NoError(t, err)
	require.True(t, bytes.Equal(data[1:frame+1], got))
}
