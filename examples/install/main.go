// Command install shows how firmware embeds ROTA's installer: it verifies
// a .rota bundle and streams it into the device's passive slots, the same
// way "rota install" does, in a few lines of Go.
//
//	go run ./examples/install -config /etc/rota/system.toml -keyring release.pub update.rota
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/slot"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "install:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	config := fs.String("config", slot.DefaultConfigPath, "device configuration")
	keyring := fs.String("keyring", slot.DefaultKeyringPath, "trusted public keys")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("want one bundle file")
	}

	cfg, err := slot.LoadConfig(*config)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	sys, err := slot.Open(cfg, slot.WithLogger(log))
	if err != nil {
		return err
	}
	kr, err := bundle.LoadKeyring(*keyring)
	if err != nil {
		return err
	}
	b, err := bundle.Open(fs.Arg(0), bundle.Options{})
	if err != nil {
		return err
	}
	defer b.Close()

	res, err := rota.Install(ctx, sys, b, rota.InstallOptions{
		Keyring:          kr,
		VerifyAfterWrite: cfg.Install.VerifyAfterWrite,
		Logger:           log,
	})
	if err != nil {
		return err
	}
	fmt.Printf("installed %s; reboot to try slot %s\n", res.Version, res.Active)
	return nil
}
