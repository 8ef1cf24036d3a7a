package rota_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/slot"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// device is a simulated device: file slots A and B, a file boot loader,
// and no kernel command line, so the booted slot is what the simulated
// boot loader booted.
type device struct {
	t   *testing.T
	dir string
	cfg *slot.Config
	sys *slot.System
}

func newDevice(t *testing.T) *device { return newDeviceSized(t, 8<<20) }

func newDeviceSized(t *testing.T, slotSize int) *device {
	t.Helper()
	dir := t.TempDir()
	testutil.SimDevice(t, dir, "acme-board", slotSize)
	d := &device{t: t, dir: dir}
	d.open()
	return d
}

// open (re)opens the system, as the next process on the device would.
func (d *device) open() {
	cfg, err := slot.LoadConfig(filepath.Join(d.dir, "system.toml"))
	require.NoError(d.t, err)
	sys, err := slot.Open(cfg, slot.WithCmdline(filepath.Join(d.dir, "cmdline")))
	require.NoError(d.t, err)
	d.cfg, d.sys = cfg, sys
}

func (d *device) reboot() string {
	fb := d.sys.Bootloader().(*slot.FileBootloader)
	name, err := fb.SimulateBoot(context.Background())
	require.NoError(d.t, err)
	d.open()
	return name
}

func (d *device) read(name string) []byte {
	b, err := os.ReadFile(filepath.Join(d.dir, name))
	require.NoError(d.t, err)
	return b
}

// release builds a signed bundle whose rootfs image is fill repeated.
func release(t *testing.T, s *bundle.Signer, compatible, version string, rollback uint64,
	size int, fill byte) (*bundle.Bundle, []byte) {
	t.Helper()
	dir := t.TempDir()
	img := bytes.Repeat([]byte{fill}, size)
	p := filepath.Join(dir, "rootfs.img")
	require.NoError(t, os.WriteFile(p, img, 0o644))
	var buf bytes.Buffer
	_, err := bundle.Create(context.Background(), &buf, bundle.Spec{
		Compatible: compatible, Version: version, RollbackIndex: rollback, Created: time.Now(),
		Images: []bundle.ImageSource{{Class: "rootfs", Path: p}},
	}, bundle.CreateOptions{Signers: []*bundle.Signer{s}, TempDir: dir})
	require.NoError(t, err)
	b, err := bundle.OpenReader(bytes.NewReader(buf.Bytes()), bundle.Options{})
	require.NoError(t, err)
	return b, img
}

func newKey(t *testing.T) (*bundle.Signer, *bundle.Keyring) {
	t.Helper()
	priv, pub, err := bundle.GenerateKey(bundle.Ed25519, nil)
	require.NoError(t, err)
	s, err := bundle.LoadSigner(priv, nil)
	require.NoError(t, err)
	k, err := bundle.ParsePublicKey(pub)
	require.NoError(t, err)
	return s, bundle.NewKeyring(k)
}

func TestInstall_UpdateBootCommitAndBack(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t)
	s, kr := newKey(t)
	booted, err := d.sys.Booted(ctx)
	require.NoError(t, err)
	require.Equal(t, "rootfs.0", booted.Name())
	bootedBefore := d.read("rootfs-a.img")

	b, img := release(t, s, "acme-board", "2.0.0", 3, 5<<20+123, 0x42)
	res, err := rota.Install(ctx, d.sys, b, rota.InstallOptions{Keyring: kr, VerifyAfterWrite: true})
	require.NoError(t, err)
	assert.Equal(t, "rootfs.1", res.Active)
	assert.Equal(t, img, d.read("rootfs-b.img")[:len(img)], "the passive slot holds the image")
	assert.Equal(t, bootedBefore, d.read("rootfs-a.img"), "the booted slot is untouched")

	// The boot loader tries B once; the new system confirms itself.
	require.Equal(t, "B", d.reboot())
	nb, err := d.sys.Booted(ctx)
	require.NoError(t, err)
	require.Equal(t, "rootfs.1", nb.Name())
	require.NoError(t, d.sys.MarkGood(ctx, nb))
	require.Equal(t, "B", d.reboot(), "a committed slot keeps booting")
	idx, err := d.sys.RollbackIndex()
	require.NoError(t, err)
	assert.Equal(t, uint64(3), idx)

	// The next update goes to A; if it is not confirmed, B boots again.
	b2, _ := release(t, s, "acme-board", "3.0.0", 3, 1<<20, 0x43)
	res, err = rota.Install(ctx, d.sys, b2, rota.InstallOptions{Keyring: kr})
	require.NoError(t, err)
	assert.Equal(t, "rootfs.0", res.Active)
	require.Equal(t, "A", d.reboot(), "the new slot is tried once")
	require.Equal(t, "B", d.reboot(), "unconfirmed, the boot loader falls back")
}

func TestInstall_RefusedBeforeAnySlotIsTouched(t *testing.T) {
	ctx := context.Background()
	s, kr := newKey(t)
	stranger, _ := newKey(t)

	tests := []struct {
		name    string
		prepare func(d *device)
		bundle  func(t *testing.T) *bundle.Bundle
		want    error
	}{
		{
			name: "a bundle for another device",
			bundle: func(t *testing.T) *bundle.Bundle {
				b, _ := release(t, s, "other-board", "2.0.0", 0, 4096, 1)
				return b
			},
			want: rota.ErrIncompatible,
		},
		{
			name: "a bundle signed by an unknown key",
			bundle: func(t *testing.T) *bundle.Bundle {
				b, _ := release(t, stranger, "acme-board", "2.0.0", 0, 4096, 1)
				return b
			},
			want: bundle.ErrUntrusted,
		},
		{
			name: "a lower rollback index",
			prepare: func(d *device) {
				b, _ := release(t, s, "acme-board", "2.0.0", 5, 4096, 1)
				_, err := rota.Install(ctx, d.sys, b, rota.InstallOptions{Keyring: kr})
				require.NoError(t, err)
				d.reboot()
				booted, err := d.sys.Booted(ctx)
				require.NoError(t, err)
				require.NoError(t, d.sys.MarkGood(ctx, booted))
			},
			bundle: func(t *testing.T) *bundle.Bundle {
				b, _ := release(t, s, "acme-board", "1.0.0", 4, 4096, 1)
				return b
			},
			want: rota.ErrRollback,
		},
		{
			name: "an image larger than its slot",
			bundle: func(t *testing.T) *bundle.Bundle {
				b, _ := release(t, s, "acme-board", "2.0.0", 0, 8<<20+1, 1)
				return b
			},
			want: slot.ErrTooLarge,
		},
		{
			name: "a second install while one runs",
			prepare: func(d *device) {
				l, err := d.sys.Lock()
				require.NoError(t, err)
				t.Cleanup(func() { l.Close() })
			},
			bundle: func(t *testing.T) *bundle.Bundle {
				b, _ := release(t, s, "acme-board", "2.0.0", 0, 4096, 1)
				return b
			},
			want: slot.ErrLocked,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDevice(t)
			if tt.prepare != nil {
				tt.prepare(d)
			}
			a, b := d.read("rootfs-a.img"), d.read("rootfs-b.img")
			primary, err := d.sys.Bootloader().Primary(ctx)
			require.NoError(t, err)

			_, err = rota.Install(ctx, d.sys, tt.bundle(t), rota.InstallOptions{Keyring: kr})
			require.ErrorIs(t, err, tt.want)
			assert.Equal(t, a, d.read("rootfs-a.img"))
			assert.Equal(t, b, d.read("rootfs-b.img"))
			after, err := d.sys.Bootloader().Primary(ctx)
			require.NoError(t, err)
			assert.Equal(t, primary, after, "the boot loader is untouched")
		})
	}
}

func TestInstall_CorruptImageLeavesSlotInactive(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t)
	s, kr := newKey(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte("z"), 1<<20), 0o644))
	var buf bytes.Buffer
	_, err := bundle.Create(ctx, &buf, bundle.Spec{Compatible: "acme-board", Version: "2.0.0",
		Images: []bundle.ImageSource{{Class: "rootfs", Path: p}}},
		bundle.CreateOptions{Signers: []*bundle.Signer{s}, TempDir: dir})
	require.NoError(t, err)
	raw := buf.Bytes()
	raw[len(raw)-2048] ^= 0xff // inside the last (only) layer's zstd data

	b, err := bundle.OpenReader(bytes.NewReader(raw), bundle.Options{})
	require.NoError(t, err)
	bootedBefore := d.read("rootfs-a.img")
	_, err = rota.Install(ctx, d.sys, b, rota.InstallOptions{Keyring: kr})
	require.Error(t, err)
	require.True(t, errors.Is(err, bundle.ErrDigestMismatch) || errors.Is(err, bundle.ErrInvalidBundle) ||
		errors.Is(err, slot.ErrDigestMismatch), "got %v", err)
	assert.Equal(t, bootedBefore, d.read("rootfs-a.img"))
	require.Equal(t, "A", d.reboot(), "the half-written slot is never booted")
	st, err := d.sys.Status(ctx)
	require.NoError(t, err)
	for _, ss := range st.Slots {
		if ss.Name == "rootfs.1" {
			assert.Equal(t, slot.StateFailed, ss.Install.State)
		}
	}
}

func TestInstall_ResumesAfterInterruption(t *testing.T) {
	d := newDeviceSized(t, 32<<20)
	s, kr := newKey(t)
	dir := t.TempDir()
	img := make([]byte, 3*bundle.DefaultChunkSize+4096)
	for i := range img {
		img[i] = byte(i * 7 / 4096)
	}
	p := filepath.Join(dir, "rootfs.img")
	require.NoError(t, os.WriteFile(p, img, 0o644))
	var buf bytes.Buffer
	_, err := bundle.Create(context.Background(), &buf, bundle.Spec{Compatible: "acme-board",
		Version: "2.0.0", Images: []bundle.ImageSource{{Class: "rootfs", Path: p}}},
		bundle.CreateOptions{Signers: []*bundle.Signer{s}, TempDir: dir})
	require.NoError(t, err)
	raw := buf.Bytes()

	// The first attempt dies (its context is cancelled) once two frames
	// are durably in the slot.
	ctx, cancel := context.WithCancel(context.Background())
	var saved *bundle.Checkpoint
	b, err := bundle.OpenReader(bytes.NewReader(raw), bundle.Options{})
	require.NoError(t, err)
	_, err = rota.Install(ctx, d.sys, b, rota.InstallOptions{
		Keyring:      kr,
		SyncInterval: bundle.DefaultChunkSize,
		Checkpoint: func(cp *bundle.Checkpoint) {
			if cp.Frame >= 2 && saved == nil {
				saved = cp
				cancel()
			}
		},
	})
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, saved)

	// The next process resumes from the checkpoint, reading only the rest
	// of the file.
	d.open()
	b, err = bundle.OpenReader(bytes.NewReader(raw), bundle.Options{})
	require.NoError(t, err)
	rest := bytes.NewReader(raw[saved.FileOffset+saved.Compressed:])
	res, err := rota.Install(context.Background(), d.sys, b, rota.InstallOptions{
		Keyring:          kr,
		VerifyAfterWrite: true,
		Resume:           &rota.Resume{Checkpoint: saved, Rest: rest},
	})
	require.NoError(t, err)
	assert.Equal(t, "rootfs.1", res.Active)
	assert.Equal(t, img, d.read("rootfs-b.img")[:len(img)])
	require.Equal(t, "B", d.reboot())
}

func publicPEM(s *bundle.Signer) ([]byte, error) {
	return cryptoutils.MarshalPublicKeyToPEM(s.Public())
}
