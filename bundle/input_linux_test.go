package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMappedSource_HolesAndShrinking(t *testing.T) {
	dir := t.TempDir()
	chunk := 64 << 10
	p, content := sparseImage(t, dir, chunk)
	zeros := make([]byte, chunk)
	src := openSource(t, p, chunk, zeros)
	require.IsType(t, &mappedSource{}, src)

	ctx := context.Background()
	var got []byte
	var holes int
	for {
		c, err := src.next(ctx)
		got = append(got, c.b...)
		if c.zero {
			holes++
			require.Equal(t, &zeros[0], &c.b[0], "a hole is handed out as the shared zeros")
		}
		if c.put != nil {
			c.put()
		}
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	require.Equal(t, content, got)
	// The hole between the first chunks; the one before the tail is
	// only one when the file system keeps 64 KiB holes.
	require.GreaterOrEqual(t, holes, 1, "holes are not read")

	t.Run("cut under a mapping", func(t *testing.T) {
		src := openSource(t, p, chunk, zeros)
		c, err := src.next(ctx)
		require.NoError(t, err)
		require.NotNil(t, c.put)
		defer c.put()
		require.NoError(t, os.Truncate(p, 0))
		err = catchFault(func() { sha256.Sum256(c.b) })
		require.ErrorIs(t, err, ErrImageChanged)
	})

	t.Run("cut to a hole", func(t *testing.T) {
		p := filepath.Join(dir, "cut.img")
		require.NoError(t, os.WriteFile(p, content[:chunk], 0o644))
		require.NoError(t, os.Truncate(p, 3*int64(chunk)))
		src := openSource(t, p, chunk, zeros)
		c, err := src.next(ctx)
		require.NoError(t, err)
		c.put()
		require.NoError(t, os.Truncate(p, 2*int64(chunk)))
		for err == nil {
			_, err = src.next(ctx)
		}
		require.ErrorIs(t, err, ErrImageChanged)
	})
}

func TestMappedSource_TwinReadsOnItsOwn(t *testing.T) {
	chunk := 64 << 10
	p, content := sparseImage(t, t.TempDir(), chunk)
	src := openSource(t, p, chunk, make([]byte, chunk))
	ts, ok := src.(twinSource)
	require.True(t, ok, "a mapped file can be read twice")
	twin := ts.twin()

	readAll := func(s chunkSource) []byte {
		var got []byte
		for {
			c, err := s.next(context.Background())
			got = append(got, c.b...)
			if c.put != nil {
				c.put()
			}
			if err == io.EOF {
				return got
			}
			require.NoError(t, err)
		}
	}
	// The first chunk read from one does not move the other.
	first, err := src.next(context.Background())
	require.NoError(t, err)
	first.put()
	require.Equal(t, content, readAll(twin))
	require.Equal(t, content[chunk:], readAll(src))

	_, isTwin := newChunkSource(bytes.NewReader(content), int64(chunk), nil).(twinSource)
	require.False(t, isTwin, "a stream is read once")
}

// truncatingWriter cuts a file to cut bytes on its first write.
type truncatingWriter struct {
	path string
	cut  int64
	done bool
}

func (w *truncatingWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.done = true
		if err := os.Truncate(w.path, w.cut); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func TestCompress_ImageCutWhileCompressing(t *testing.T) {
	chunk := 64 << 10
	for name, cut := range map[string]int64{
		"to nothing":       0,
		"mid chunk":        int64(3*chunk + 100),
		"before last byte": int64(16*chunk - 1),
	} {
		t.Run(name, func(t *testing.T) {
			p := writeImage(t, t.TempDir(), "a", 16*chunk, 4)
			f, err := os.Open(p)
			require.NoError(t, err)
			defer f.Close()
			_, _, err = compress(context.Background(), &truncatingWriter{path: p, cut: cut}, f,
				sha256.New(), nil, CreateOptions{ChunkSize: int64(chunk), Concurrency: 2})
			require.ErrorIs(t, err, ErrImageChanged)
		})
	}
}
