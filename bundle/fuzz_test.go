package bundle

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fuzzSeed returns a small valid bundle and the keyring that trusts it.
// The key is fixed so that the seed corpus is stable between runs.
func fuzzSeed(f *testing.F) ([]byte, *Keyring) {
	priv, err := os.ReadFile(filepath.Join("testdata", "fuzz.key"))
	if err != nil {
		f.Fatal(err)
	}
	s, err := LoadSigner(priv, nil)
	if err != nil {
		f.Fatal(err)
	}
	k, err := NewPublicKey(s.Public())
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	raw := buildBundle(f, s,
		ImageSource{Class: "rootfs", Path: writeImage(f, dir, "a", 8<<10, 1)},
		ImageSource{Class: "boot", Path: writeImage(f, dir, "b", 2<<10, 2)})
	return raw, NewKeyring(k)
}

// FuzzOpen feeds arbitrary bytes to the stream reader, the verifier and
// the image readers. Whatever the input, they must return an error or
// valid data, never panic, and never hand out more than the declared size.
func FuzzOpen(f *testing.F) {
	raw, kr := fuzzSeed(f)
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add(raw[:3072])
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := OpenReader(bytes.NewReader(data), Options{})
		if err != nil {
			return
		}
		defer b.Close()
		if _, err := b.Verify(kr); err != nil {
			return
		}
		for {
			ir, err := b.NextImage(context.Background())
			if err != nil {
				return
			}
			n, err := io.Copy(io.Discard, ir)
			if n > ir.Info.Size {
				t.Fatalf("image %s: %d bytes handed out, %d declared", ir.Info.Class, n, ir.Info.Size)
			}
			if err != nil {
				return
			}
		}
	})
}

// FuzzVerify mutates the signature manifest and payload of a valid bundle:
// verification must fail cleanly unless the signature still holds.
func FuzzVerify(f *testing.F) {
	raw, kr := fuzzSeed(f)
	b, err := OpenReader(bytes.NewReader(raw), Options{})
	if err != nil {
		f.Fatal(err)
	}
	sig := b.meta.sigs[0]
	pl := b.meta.blobs[sig.manifest.Layers[0].Digest]
	f.Add(sig.raw, pl)
	f.Add([]byte("{}"), []byte("{}"))
	f.Fuzz(func(t *testing.T, sigRaw, payload []byte) {
		m := *b.meta
		sm, err := parseSigManifest(sigRaw, m.manifestDigest)
		if err != nil {
			return
		}
		m.sigs = []*sigManifest{{raw: sigRaw, digest: digestOf(sigRaw), manifest: sm}}
		m.blobs = map[v1.Hash][]byte{sm.Layers[0].Digest: payload}
		good, err := m.verify(kr)
		if err == nil && (len(good) != 1 || !bytes.Equal(payload, pl)) {
			t.Fatalf("a changed payload verified")
		}
		if err != nil && !errors.Is(err, ErrUntrusted) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}

// FuzzConfig parses arbitrary config blobs against a fixed manifest.
func FuzzConfig(f *testing.F) {
	raw, _ := fuzzSeed(f)
	b, err := OpenReader(bytes.NewReader(raw), Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b.meta.configRaw)
	f.Add([]byte(`{"formatVersion":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig(data, &b.meta.manifest)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parseConfig accepted a config that does not validate: %v", err)
		}
	})
}
