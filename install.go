package rota

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/slot"
)

// Version is the version of this SDK and of the agent built from it.
// Bundles whose minimum agent version is higher are refused.
const Version = "0.1.0"

// Errors returned by Install before any slot is touched. Test them with
// errors.Is.
var (
	// ErrIncompatible is returned for a bundle whose compatible string
	// differs from the device's.
	ErrIncompatible = errors.New("rota: bundle is for another kind of device")

	// ErrRollback is returned for a bundle whose rollback index is lower
	// than the device's.
	ErrRollback = errors.New("rota: rollback index lower than installed")

	// ErrAgentTooOld is returned for a bundle that needs a newer agent.
	ErrAgentTooOld = errors.New("rota: bundle needs a newer agent")

	// ErrUnsupportedImage is returned for a bundle image that cannot be
	// written to a slot, such as a file tree.
	ErrUnsupportedImage = errors.New("rota: image kind cannot be installed to a slot")
)

// InstallOptions tunes Install. The zero value needs at least Keyring.
type InstallOptions struct {
	// Keyring holds the keys trusted to sign bundles; required unless the
	// bundle was already verified.
	Keyring *bundle.Keyring

	// Attempts is the number of boot tries the new slot gets; zero means
	// the device configuration's boot-attempts.
	Attempts int

	// NoActivate leaves the new slot written and verified but not active,
	// for installs that wait for approval before the reboot.
	NoActivate bool

	// VerifyAfterWrite reads every slot back and checks its sha256 before
	// the slot is committed.
	VerifyAfterWrite bool

	// Progress, when set, is called as each image is written with the
	// image's class, the bytes written so far and the image size.
	Progress func(class string, written, total int64)

	// Logger receives state changes; nil discards them.
	Logger *slog.Logger

	// SyncInterval is the number of bytes written between flushes to the
	// slot, and so between resume points; zero means
	// slot.DefaultSyncInterval.
	SyncInterval int64

	// Resume continues an install that was interrupted after the given
	// checkpoint; nil means a fresh install.
	Resume *Resume

	// Checkpoint, if not nil, is called with each resume point whose
	// bytes are durably in their slot. An agent persists the last one to
	// resume after a restart.
	Checkpoint func(*bundle.Checkpoint)
}

// Resume says where an interrupted install continues.
type Resume struct {
	// Checkpoint is the last durable resume point, from
	// InstallOptions.Checkpoint.
	Checkpoint *bundle.Checkpoint

	// Rest yields the .rota file from byte Checkpoint.FileOffset +
	// Checkpoint.Compressed on, such as the body of an HTTP Range
	// response.
	Rest io.Reader
}

// InstallResult describes a completed install.
type InstallResult struct {
	// Digest and Version identify the installed bundle.
	Digest  string
	Version string

	// Slots maps each image class to the slot it was written to.
	Slots map[string]string

	// Active is the slot (the rootfs of the group) the boot loader will
	// try on the next boot; empty with NoActivate.
	Active string
}

// target pairs a bundle image with the slot it goes to.
type target struct {
	image bundle.ImageInfo
	slot  *slot.Slot
}

// Install writes bundle b into the passive slots of sys and marks them
// active for one try (or Attempts tries). It verifies b against the
// keyring and refuses, before any slot is touched, a bundle for another
// compatible string, with a lower rollback index, needing a newer agent,
// or with an image larger than its slot. It takes the device's install
// lock, so a second concurrent Install fails with slot.ErrLocked. The
// booted slot is never written. If anything fails after writing began,
// the written slots stay marked bad and inactive.
func Install(ctx context.Context, sys *slot.System, b *bundle.Bundle,
	opts InstallOptions) (*InstallResult, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lock, err := sys.Lock()
	if err != nil {
		return nil, fmt.Errorf("install bundle %s: %w", b.Digest(), err)
	}
	defer lock.Close()

	targets, err := plan(ctx, sys, b, opts)
	if err != nil {
		return nil, fmt.Errorf("install bundle %s: %w", b.Digest(), err)
	}
	if r := opts.Resume; r != nil && (r.Checkpoint == nil || r.Checkpoint.Image >= len(targets)) {
		return nil, fmt.Errorf("install bundle %s: resume point names no image", b.Digest())
	}
	cfg := b.Config()
	info := slot.BundleInfo{Version: cfg.Version, Digest: b.Digest(),
		Compatible: cfg.Compatible, RollbackIndex: cfg.RollbackIndex}
	// A resumed install begins again only from the interrupted image; the
	// images before it are committed.
	start := 0
	if opts.Resume != nil {
		start = opts.Resume.Checkpoint.Image
	}
	begun := start
	res := &InstallResult{Digest: b.Digest(), Version: cfg.Version, Slots: map[string]string{}}
	// fail records err on every target whose install began and was not
	// committed; those slots stay marked bad.
	fail := func(err error) error {
		for _, t := range targets[start:begun] {
			if _, done := res.Slots[t.image.Class]; done {
				continue
			}
			if ferr := sys.FailInstall(ctx, t.slot, err); ferr != nil {
				log.Warn("record failed install", "slot", t.slot.Name(), "err", ferr)
			}
		}
		return fmt.Errorf("install bundle %s: %w", b.Digest(), err)
	}
	for _, t := range targets[start:] {
		if err := sys.BeginInstall(ctx, t.slot, info); err != nil {
			return nil, fail(err)
		}
		begun++
	}
	log.Info("installing bundle", "digest", b.Digest(), "version", cfg.Version)

	if err := writeAll(ctx, sys, b, targets, opts, res); err != nil {
		return nil, fail(err)
	}
	if opts.NoActivate {
		return res, nil
	}
	root := targets[0].slot.Root()
	if err := sys.MarkActive(ctx, root, opts.Attempts); err != nil {
		return nil, fmt.Errorf("install bundle %s: %w", b.Digest(), err)
	}
	res.Active = root.Name()
	log.Info("bundle installed", "digest", b.Digest(), "active", root.Name())
	return res, nil
}

// plan verifies b and picks a slot for each image, checking everything
// that can be checked before a slot is touched.
func plan(ctx context.Context, sys *slot.System, b *bundle.Bundle,
	opts InstallOptions) ([]target, error) {
	if !b.Verified() {
		if _, err := b.Verify(opts.Keyring); err != nil {
			return nil, err
		}
	}
	cfg := b.Config()
	dev := sys.Config()
	if cfg.Compatible != dev.Compatible {
		return nil, fmt.Errorf("%w: bundle is for %q, this device is %q",
			ErrIncompatible, cfg.Compatible, dev.Compatible)
	}
	floor, err := sys.RollbackIndex()
	if err != nil {
		return nil, err
	}
	if cfg.RollbackIndex < floor {
		return nil, fmt.Errorf("%w: bundle has %d, device has %d",
			ErrRollback, cfg.RollbackIndex, floor)
	}
	if cfg.MinAgentVersion != "" && bundle.CompareVersions(Version, cfg.MinAgentVersion) < 0 {
		return nil, fmt.Errorf("%w: bundle needs %s, this is %s",
			ErrAgentTooOld, cfg.MinAgentVersion, Version)
	}
	var targets []target
	for i, im := range cfg.Images {
		if b.Layers()[i].MediaType != bundle.RawImageMediaType {
			return nil, fmt.Errorf("%w: image %s is a %s", ErrUnsupportedImage, im.Class,
				b.Layers()[i].MediaType)
		}
		s, err := sys.Passive(ctx, im.Class)
		if err != nil {
			return nil, err
		}
		if len(targets) > 0 && s.Root() != targets[0].slot.Root() {
			return nil, fmt.Errorf("images go to slots %s and %s of different groups",
				targets[0].slot.Name(), s.Name())
		}
		capacity, err := sys.Capacity(s)
		if err != nil {
			return nil, err
		}
		if capacity >= 0 && im.Size > capacity {
			return nil, fmt.Errorf("%w: image %s has %d bytes, slot %s %d",
				slot.ErrTooLarge, im.Class, im.Size, s.Name(), capacity)
		}
		targets = append(targets, target{image: im, slot: s})
	}
	return targets, nil
}

// writeAll streams every image into its slot and commits each once its
// digests matched.
func writeAll(ctx context.Context, sys *slot.System, b *bundle.Bundle, targets []target,
	opts InstallOptions, res *InstallResult) error {
	for i, t := range targets {
		var (
			ir     *bundle.ImageReader
			offset int64
			err    error
		)
		switch r := opts.Resume; {
		case r != nil && i < r.Checkpoint.Image:
			// Written and committed before the interruption.
			res.Slots[t.image.Class] = t.slot.Name()
			continue
		case r != nil && i == r.Checkpoint.Image:
			ir, err = b.ResumeImage(ctx, r.Checkpoint, r.Rest)
			offset = r.Checkpoint.Uncompressed
		default:
			ir, err = b.NextImage(ctx)
		}
		if err != nil {
			return err
		}
		if ir.Info.Class != t.image.Class {
			ir.Close()
			return fmt.Errorf("image %s arrived where %s was expected", ir.Info.Class, t.image.Class)
		}
		var progress func(int64)
		if opts.Progress != nil {
			class, total := t.image.Class, t.image.Size
			progress = func(n int64) { opts.Progress(class, n, total) }
		}
		var synced func(int64)
		if opts.Checkpoint != nil {
			synced = func(durable int64) {
				if cp := ir.Checkpoint(durable); cp != nil {
					opts.Checkpoint(cp)
				}
			}
		}
		wr, err := sys.WriteImage(ctx, t.slot, ir, t.image.Size, slot.WriteOptions{
			SHA256:         t.image.SHA256,
			StreamVerified: true, // the image reader checks every digest
			Verify:         opts.VerifyAfterWrite,
			Progress:       progress,
			Offset:         offset,
			Synced:         synced,
			SyncInterval:   opts.SyncInterval,
		})
		if err != nil {
			ir.Close()
			return err
		}
		// The image reader reports a digest mismatch only at its end;
		// reading it to io.EOF makes sure that verdict is seen even if the
		// writer stopped at the declared size.
		n, err := io.Copy(io.Discard, ir)
		ir.Close()
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("%w: image %s is longer than declared", bundle.ErrDigestMismatch,
				t.image.Class)
		}
		if err := sys.CommitInstall(ctx, t.slot, wr); err != nil {
			return err
		}
		res.Slots[t.image.Class] = t.slot.Name()
	}
	return nil
}
