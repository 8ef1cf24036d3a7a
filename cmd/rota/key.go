package main

import (
	"context"
	"fmt"
	"os"

	"github.com/rotaupdate/rota/bundle"
)

func init() {
	register("key generate", command{
		usage: "--out NAME [--algorithm ed25519|ecdsa-p256]",
		short: "create a signing key pair NAME.key and NAME.pub " +
			"(ROTA_KEY_PASSWORD encrypts the private key)",
		run: keyGenerate,
	})
}

func keyGenerate(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "key generate", commands["key generate"].usage)
	out := fs.String("out", "", "file name prefix: writes `NAME`.key and NAME.pub")
	alg := fs.String("algorithm", string(bundle.DefaultAlgorithm), "ed25519 or ecdsa-p256")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *out == "" || len(pos) != 0 {
		return usageErr("--out NAME is required and no arguments are taken")
	}
	priv, pub, err := bundle.GenerateKey(bundle.Algorithm(*alg), []byte(env.getenv("ROTA_KEY_PASSWORD")))
	if err != nil {
		return err
	}
	for _, f := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{{*out + ".key", priv, 0o600}, {*out + ".pub", pub, 0o644}} {
		// O_EXCL: never overwrite an existing key by accident.
		fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.perm)
		if err != nil {
			return fmt.Errorf("write key: %w", err)
		}
		if _, err := fh.Write(f.data); err != nil {
			fh.Close()
			return fmt.Errorf("write key %s: %w", f.path, err)
		}
		if err := fh.Close(); err != nil {
			return fmt.Errorf("write key %s: %w", f.path, err)
		}
	}
	s, err := bundle.LoadSigner(priv, []byte(env.getenv("ROTA_KEY_PASSWORD")))
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "wrote %s.key and %s.pub (key id %s)\n", *out, *out, s.KeyID())
	return nil
}

// loadSigners loads private keys; ROTA_KEY_PASSWORD decrypts encrypted ones.
func loadSigners(env *cliEnv, paths []string) ([]*bundle.Signer, error) {
	var out []*bundle.Signer
	for _, p := range paths {
		s, err := bundle.LoadSignerFile(p, []byte(env.getenv("ROTA_KEY_PASSWORD")))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}
