package bundle

import (
	"context"
	"fmt"
	"github.com/rotaupdate/rota/internal/atomicfile"
	"io"
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
	err = atomicfile.Write(path, 0o644, func(w io.Writer) error {
		var err error
		info, err = b.Write(ctx, w)
		return err
	})
	if err != nil {
		return nil, err
	}
	return info, nil
}
