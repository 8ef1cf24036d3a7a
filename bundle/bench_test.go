package bundle

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// benchImage is the image the Go benchmarks use: ROTA_BENCH_IMAGE (such
// as the 400 MiB ext4 corpus image), or a 64 MiB synthetic one.
func benchImage(b *testing.B) string {
	if p := os.Getenv("ROTA_BENCH_IMAGE"); p != "" {
		return p
	}
	return writeImage(b, b.TempDir(), "bench.img", 64<<20, 42)
}

func BenchmarkCreate(b *testing.B) {
	img := benchImage(b)
	fi, err := os.Stat(img)
	if err != nil {
		b.Fatal(err)
	}
	s, _ := testKey(b, Ed25519)
	dir := b.TempDir()
	b.SetBytes(fi.Size())
	for b.Loop() {
		f, err := os.Create(filepath.Join(dir, "out.rota"))
		if err != nil {
			b.Fatal(err)
		}
		_, err = Create(context.Background(), f, Spec{Compatible: "bench", Version: "1.0.0",
			Images: []ImageSource{{Class: "rootfs", Path: img}}},
			CreateOptions{Signers: []*Signer{s}, TempDir: dir})
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}

func benchBundle(b *testing.B) (string, *Keyring, int64) {
	img := benchImage(b)
	fi, err := os.Stat(img)
	if err != nil {
		b.Fatal(err)
	}
	s, kr := testKey(b, Ed25519)
	dir := b.TempDir()
	p := filepath.Join(dir, "b.rota")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := Create(context.Background(), f, Spec{Compatible: "bench", Version: "1.0.0",
		Images: []ImageSource{{Class: "rootfs", Path: img}}},
		CreateOptions{Signers: []*Signer{s}, TempDir: dir}); err != nil {
		b.Fatal(err)
	}
	return p, kr, fi.Size()
}

// BenchmarkExtract measures open, verify, decompress and both digests.
func BenchmarkExtract(b *testing.B) {
	p, kr, size := benchBundle(b)
	b.SetBytes(size)
	for b.Loop() {
		bd, err := Open(p, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bd.Verify(kr); err != nil {
			b.Fatal(err)
		}
		ir, err := bd.NextImage(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, ir); err != nil {
			b.Fatal(err)
		}
		bd.Close()
	}
}

// BenchmarkOpenVerify measures reading and verifying the metadata only:
// it must not depend on the bundle's size.
func BenchmarkOpenVerify(b *testing.B) {
	p, kr, _ := benchBundle(b)
	raw, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		bd, err := OpenReader(bytes.NewReader(raw), Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bd.Verify(kr); err != nil {
			b.Fatal(err)
		}
	}
}
