package bundle_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/rotaupdate/rota/bundle"
)

// Build a signed bundle from a slot image and read it back.
func ExampleCreate() {
	dir, err := os.MkdirTemp("", "rota-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "rootfs.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("rota"), 1<<18), 0o644); err != nil {
		log.Fatal(err)
	}

	// A real release key lives in a file (rota key generate); here one is
	// made on the spot.
	privPEM, _, err := bundle.GenerateKey(bundle.Ed25519, nil)
	if err != nil {
		log.Fatal(err)
	}
	signer, err := bundle.LoadSigner(privPEM, nil)
	if err != nil {
		log.Fatal(err)
	}

	var out bytes.Buffer
	info, err := bundle.Create(context.Background(), &out, bundle.Spec{
		Compatible:    "acme-board",
		Version:       "1.0.0",
		RollbackIndex: 1,
		Created:       time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Images:        []bundle.ImageSource{{Class: "rootfs", Path: img}},
	}, bundle.CreateOptions{Signers: []*bundle.Signer{signer}, TempDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	im := info.Config.Images[0]
	fmt.Println(info.Config.Version, info.Config.Compatible, im.Class, im.Size, len(info.Signatures))
	// Output: 1.0.0 acme-board rootfs 1048576 1
}

// Verify a bundle stream against trusted keys, then stream its images.
// Image bytes are only handed out after Verify, and each image reader
// returns io.EOF only once the image matched its digests.
func ExampleBundle_Verify() {
	raw, pubPEM := exampleBundle()
	key, err := bundle.ParsePublicKey(pubPEM)
	if err != nil {
		log.Fatal(err)
	}
	b, err := bundle.OpenReader(bytes.NewReader(raw), bundle.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Verify(bundle.NewKeyring(key)); err != nil {
		log.Fatal(err)
	}
	for {
		ir, err := b.NextImage(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		n, err := io.Copy(io.Discard, ir) // a slot writer in real use
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ir.Info.Class, n, "bytes verified")
	}
	// Output: rootfs 65536 bytes verified
}

// exampleBundle returns a small signed bundle and its public key.
func exampleBundle() (raw, pubPEM []byte) {
	dir, err := os.MkdirTemp("", "rota-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "rootfs.img")
	if err := os.WriteFile(img, make([]byte, 65536), 0o644); err != nil {
		log.Fatal(err)
	}
	privPEM, pubPEM, err := bundle.GenerateKey(bundle.Ed25519, nil)
	if err != nil {
		log.Fatal(err)
	}
	signer, err := bundle.LoadSigner(privPEM, nil)
	if err != nil {
		log.Fatal(err)
	}
	var out bytes.Buffer
	_, err = bundle.Create(context.Background(), &out, bundle.Spec{
		Compatible: "acme-board", Version: "1.0.0",
		Images: []bundle.ImageSource{{Class: "rootfs", Path: img}},
	}, bundle.CreateOptions{Signers: []*bundle.Signer{signer}, TempDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	return out.Bytes(), pubPEM
}
