package bundlestore

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rotaupdate/rota/bundle"
)

// benchBundleSize is the size of the slot image of the serving
// benchmark. It is incompressible, so the bundle is as large.
const benchBundleSize = 256 << 20

// BenchmarkServe serves a 256 MiB bundle with http.ServeContent, whole
// and from its middle (a resumed download), from the plain .rota file
// and from a Layout's assembled File, and reads both without HTTP.
func BenchmarkServe(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	img := make([]byte, benchBundleSize)
	rand.NewChaCha8([32]byte{1}).Read(img)
	imgPath := filepath.Join(dir, "rootfs.img")
	if err := os.WriteFile(imgPath, img, 0o644); err != nil {
		b.Fatal(err)
	}
	img = nil
	s, _ := testKey(b, bundle.Ed25519)
	tb := buildBundle(b, dir, "1.0.0", s, bundle.ImageSource{Class: "rootfs", Path: imgPath})
	tb.raw = nil
	os.Remove(imgPath)
	l := openLayout(b)
	e, err := l.Put(ctx, tb.path)
	if err != nil {
		b.Fatal(err)
	}

	sources := []struct {
		name string
		open func() (io.ReadSeekCloser, time.Time, error)
	}{
		{"plain file", func() (io.ReadSeekCloser, time.Time, error) {
			f, err := os.Open(tb.path)
			return f, time.Time{}, err
		}},
		{"layout", func() (io.ReadSeekCloser, time.Time, error) {
			f, err := l.Open(ctx, e.Digest)
			if err != nil {
				return nil, time.Time{}, err
			}
			return f, f.ModTime(), nil
		}},
	}
	for _, src := range sources {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f, modTime, err := src.open()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			defer f.Close()
			http.ServeContent(w, r, "bundle.rota", modTime, f)
		}))
		for _, from := range []int64{0, e.Size / 2} {
			name := fmt.Sprintf("http/%s/whole", src.name)
			if from > 0 {
				name = fmt.Sprintf("http/%s/second half", src.name)
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(e.Size - from)
				for b.Loop() {
					benchGet(b, srv.URL, from, e.Size-from)
				}
			})
		}
		srv.Close()

		b.Run(fmt.Sprintf("read/%s", src.name), func(b *testing.B) {
			b.SetBytes(e.Size)
			buf := make([]byte, 32<<10)
			for b.Loop() {
				f, _, err := src.open()
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
				f.Close()
				if err != nil || n != e.Size {
					b.Fatalf("read %d of %d bytes: %v", n, e.Size, err)
				}
			}
		})
	}
}

// benchGet downloads url from byte from and checks it got want bytes.
func benchGet(b *testing.B, url string, from, want int64) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	if from > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", from))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != want {
		b.Fatalf("GET %s from %d: %d of %d bytes: %v (%s)", url, from, n, want, err, resp.Status)
	}
}
