package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/slot"
)

// httpTimeout bounds connecting and waiting for response headers of an
// https bundle download; the body itself may take as long as it needs.
const httpTimeout = 60 * time.Second

func init() {
	register("install", command{
		usage: "[--config PATH] [--keyring PUB] [--attempts N] [--no-activate] " +
			"[--insecure] SOURCE",
		short: "verify a bundle (a .rota file, an https URL or an OCI reference) and " +
			"stream it into the passive slots",
		run: runInstall,
	})
	register("slot simulate-reboot", command{
		usage: "[--config PATH]",
		short: "reboot a simulated device: the file boot loader picks the slot to boot",
		run:   runSimulateReboot,
	})
}

func runInstall(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "install", commands["install"].usage)
	configPath := fs.String("config", "", "device configuration `file`")
	var keyring listFlag
	fs.Var(&keyring, "keyring", "trusted public key `FILE`s (default from the configuration)")
	attempts := fs.Int("attempts", 0, "boot tries for the new slot (default from the configuration)")
	noActivate := fs.Bool("no-activate", false, "write and verify, but do not activate the new slot")
	insecure := fs.Bool("insecure", false, "allow plain HTTP registries")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("want one SOURCE")
	}
	sys, cfg, err := openSystem(env, *configPath)
	if err != nil {
		return err
	}
	if len(keyring) == 0 {
		keyring = listFlag{cfg.Install.Keyring}
	}
	kr, err := bundle.LoadKeyring(keyring...)
	if err != nil {
		return err
	}
	b, closeSrc, err := openSource(ctx, pos[0], *insecure)
	if err != nil {
		return err
	}
	defer closeSrc()
	defer b.Close()

	var bar *progress
	var barClass string
	res, err := rota.Install(ctx, sys, b, rota.InstallOptions{
		Keyring:          kr,
		Attempts:         *attempts,
		NoActivate:       *noActivate,
		VerifyAfterWrite: cfg.Install.VerifyAfterWrite,
		Progress: func(class string, written, total int64) {
			if class != barClass {
				if bar != nil {
					bar.Done()
				}
				bar, barClass = newProgress(env, "install "+class, total), class
				bar.Add(written)
				return
			}
			bar.SetTo(written)
		},
	})
	if bar != nil {
		bar.Done()
	}
	if err != nil {
		return err
	}
	for class, s := range res.Slots {
		fmt.Fprintf(env.stdout, "wrote %s image to slot %s\n", class, s)
	}
	if res.Active == "" {
		fmt.Fprintf(env.stdout, "installed %s (%s); not activated\n", res.Version, res.Digest)
		return nil
	}
	fmt.Fprintf(env.stdout, "installed %s (%s); slot %s is active for the next boot\n",
		res.Version, res.Digest, res.Active)
	return nil
}

// openSource opens a bundle from a file, an http(s) URL (streamed, no
// temporary copy) or a registry reference.
func openSource(ctx context.Context, src string, insecure bool) (*bundle.Bundle, func(), error) {
	noop := func() {}
	switch {
	case strings.HasPrefix(src, "https://") || strings.HasPrefix(src, "http://"):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, noop, fmt.Errorf("download %s: %w", src, err)
		}
		client := &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			TLSHandshakeTimeout:   httpTimeout,
			ResponseHeaderTimeout: httpTimeout,
		}}
		resp, err := client.Do(req)
		if err != nil {
			return nil, noop, fmt.Errorf("download %s: %w", src, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, noop, fmt.Errorf("download %s: %s", src, resp.Status)
		}
		b, err := bundle.OpenReader(resp.Body, bundle.Options{})
		if err != nil {
			resp.Body.Close()
			return nil, noop, fmt.Errorf("download %s: %w", src, err)
		}
		return b, func() { io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16)); resp.Body.Close() }, nil
	default:
		if _, err := os.Stat(src); err == nil || strings.HasSuffix(src, ".rota") {
			b, err := bundle.Open(src, bundle.Options{})
			return b, noop, err
		}
		b, err := bundle.OpenRemote(ctx, src, bundle.RemoteOptions{Insecure: insecure})
		return b, noop, err
	}
}

func runSimulateReboot(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "slot simulate-reboot", commands["slot simulate-reboot"].usage)
	configPath := fs.String("config", "", "device configuration `file`")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageErr("no arguments are taken")
	}
	sys, _, err := openSystem(env, *configPath)
	if err != nil {
		return err
	}
	fb, ok := sys.Bootloader().(*slot.FileBootloader)
	if !ok {
		return fmt.Errorf("simulate reboot: the boot loader is not the file backend")
	}
	name, err := fb.SimulateBoot(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "booted %s\n", name)
	return nil
}
