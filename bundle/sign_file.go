package bundle

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// AddSignature signs the bundle manifest with s and attaches the signature
// to the opened bundle; Write then includes it. A bundle already signed by
// the same key is refused. Signing does not verify existing signatures.
func (b *Bundle) AddSignature(s *Signer, now time.Time) error {
	if err := b.meta.addSignature(s, now); err != nil {
		return err
	}
	return nil
}

// Write writes the bundle as a .rota file to w, checking every layer's
// size and digest on the way. It consumes the bundle's layers, so it must
// come before any NextImage call; it does not require Verify.
func (b *Bundle) Write(ctx context.Context, w io.Writer) (*Info, error) {
	if b.next != 0 {
		return nil, fmt.Errorf("write bundle %s: images were already read", b.Digest())
	}
	b.next = len(b.meta.manifest.Layers)
	cw := &countingWriter{w: w}
	if err := writeLayout(ctx, cw, b.meta, b.src.layer, b.progress); err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", b.Digest(), err)
	}
	if err := b.src.finish(); err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", b.Digest(), err)
	}
	return &Info{
		Digest:     b.Digest(),
		Config:     b.meta.config,
		Signatures: b.meta.signatures(),
		Size:       cw.n,
	}, nil
}

// SignFile adds signatures by each signer to the .rota file at path. The
// file is rewritten next to itself and renamed over the original only when
// complete, so a failure leaves the original untouched.
func SignFile(ctx context.Context, path string, signers ...*Signer) (*Info, error) {
	b, err := Open(path, Options{})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	now := time.Now()
	for _, s := range signers {
		if err := b.AddSignature(s, now); err != nil {
			return nil, err
		}
	}
	var info *Info
	err = WriteFileAtomic(path, func(w io.Writer) error {
		var err error
		info, err = b.Write(ctx, w)
		return err
	})
	if err != nil {
		return nil, err
	}
	return info, nil
}

// WriteFileAtomic creates path by writing a temporary file in the same
// directory with write, syncing it, and renaming it into place; the
// directory is synced too. On error the temporary file is removed and path
// is unchanged.
func WriteFileAtomic(path string, write func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
