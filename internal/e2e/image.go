package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/rotaupdate/rota/bundle"
)

// guestFiles are the scripts and configuration files installed into the
// test systems; see the comments at their top.
//
//go:embed guest
var guestFiles embed.FS

// Compatible is the compatible string of the test systems.
const Compatible = "rota-e2e-x86"

// Sizes of the test disk's parts, in bytes.
const (
	// ESPSize is the EFI system partition: FAT16 holding GRUB, its script
	// and the grubenv.
	ESPSize = 32 << 20

	// SlotSize is each root file system partition.
	SlotSize = 64 << 20

	// RootfsSize is each root file system image, the image a bundle
	// carries. It is larger than slot.DefaultSyncInterval, so that an
	// install records a resume point before it ends.
	RootfsSize = 48 << 20

	// DataSize is the data partition, ext4, holding the agent's data
	// directory and the files updates must keep.
	DataSize = 32 << 20
)

// Partition numbers on the test disk; the kernel names them /dev/vdaN.
const (
	PartESP   = 1
	PartSlotA = 2
	PartSlotB = 3
	PartData  = 4
)

// KeepFile is the file on the data partition, written when the disk is
// made, that no update may change.
const KeepFile = "keep.txt"

// BootsFile is the file on the data partition to which every boot of a
// test system appends a line "slot=NAME version=VERSION".
const BootsFile = "boots.log"

// Release is one version of the test system's root file system.
type Release struct {
	// Version is the release's version, shown at boot and put in the
	// bundle.
	Version string

	// FailHealth adds a health check that always fails: the system boots,
	// but the agent rolls the update back.
	FailHealth bool

	// FailBoot gives the release an initramfs whose init exits, so the
	// kernel panics before the root file system is mounted.
	FailBoot bool
}

// Builder builds the images of the test systems: root file systems, the
// EFI system partition, the data partition, the whole disk and bundles.
// The zero value is not usable: every field is required.
type Builder struct {
	// Dir holds intermediate files.
	Dir string

	// Kernel is the kernel every release boots.
	Kernel *Kernel

	// Busybox is the path of a statically linked busybox.
	Busybox string

	// Client is the path of a statically linked rota-client.
	Client string

	// Keyring is the public key file content the agents trust.
	Keyring []byte

	// GrubScript is docs/bootloaders/grub.cfg.
	GrubScript []byte
}

// Initramfs returns a gzip-compressed initramfs holding busybox, the
// BootModules and their dependencies, and an init that mounts root= and
// switches to it; with failBoot its init exits at once instead.
func (b *Builder) Initramfs(failBoot bool) ([]byte, error) {
	bb, err := os.ReadFile(b.Busybox)
	if err != nil {
		return nil, fmt.Errorf("build initramfs: %w", err)
	}
	initName := "guest/initramfs-init"
	if failBoot {
		initName = "guest/panic-init"
	}
	initScript, err := guestFiles.ReadFile(initName)
	if err != nil {
		return nil, fmt.Errorf("build initramfs: %w", err)
	}
	entries := []cpioEntry{
		{Name: "bin", Mode: fs.ModeDir | 0o755},
		{Name: "dev", Mode: fs.ModeDir | 0o755},
		{Name: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Name: "proc", Mode: fs.ModeDir | 0o755},
		{Name: "sys", Mode: fs.ModeDir | 0o755},
		{Name: "newroot", Mode: fs.ModeDir | 0o755},
		{Name: "lib", Mode: fs.ModeDir | 0o755},
		{Name: "lib/modules", Mode: fs.ModeDir | 0o755},
		{Name: "bin/busybox", Mode: 0o755, Data: bb},
		{Name: "bin/sh", Mode: fs.ModeSymlink | 0o777, Data: []byte("busybox")},
		{Name: "init", Mode: 0o755, Data: initScript},
	}
	if !failBoot {
		mods, err := b.Kernel.ModuleLoadOrder(BootModules)
		if err != nil {
			return nil, fmt.Errorf("build initramfs: %w", err)
		}
		var list strings.Builder
		for _, rel := range mods {
			data, err := os.ReadFile(filepath.Join(b.Kernel.ModuleDir, rel))
			if err != nil {
				return nil, fmt.Errorf("build initramfs: %w", err)
			}
			name := path.Base(rel)
			entries = append(entries, cpioEntry{Name: "lib/modules/" + name, Mode: 0o644, Data: data})
			list.WriteString(name + "\n")
		}
		entries = append(entries, cpioEntry{Name: "lib/modules/load.list", Mode: 0o644,
			Data: []byte(list.String())})
	}

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, fmt.Errorf("build initramfs: %w", err)
	}
	if err := writeCPIO(zw, entries); err != nil {
		return nil, fmt.Errorf("build initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("build initramfs: %w", err)
	}
	return buf.Bytes(), nil
}

// Rootfs builds the root file system of rel as an ext4 image of
// RootfsSize bytes at out, with mkfs.ext4 -d from a staging directory.
func (b *Builder) Rootfs(ctx context.Context, rel Release, out string) error {
	stage, err := os.MkdirTemp(b.Dir, "rootfs-")
	if err != nil {
		return fmt.Errorf("build rootfs %s: %w", rel.Version, err)
	}
	defer os.RemoveAll(stage)
	if err := b.stageRootfs(ctx, rel, stage); err != nil {
		return fmt.Errorf("build rootfs %s: %w", rel.Version, err)
	}
	os.Remove(out)
	return mkfsExt4(ctx, out, "rootfs", stage, RootfsSize)
}

// stageRootfs fills dir with the files of rel's root file system.
func (b *Builder) stageRootfs(ctx context.Context, rel Release, dir string) error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run",
		"tmp", "data", "boot/efi", "etc/rota/health.d", "etc/rota-e2e", "root", "var"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(b.Busybox, filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		return err
	}
	list, err := output(ctx, b.Busybox, "--list-full")
	if err != nil {
		return err
	}
	for applet := range strings.FieldsSeq(string(list)) {
		if applet == "sbin/init" || applet == "linuxrc" || applet == "bin/busybox" {
			continue // init is the test system's own
		}
		link := filepath.Join(dir, applet)
		target, err := filepath.Rel(filepath.Dir(link), filepath.Join(dir, "bin/busybox"))
		if err != nil {
			return err
		}
		if err := os.Symlink(target, link); err != nil {
			return fmt.Errorf("link applet %s: %w", applet, err)
		}
	}
	if err := copyFile(b.Client, filepath.Join(dir, "usr/bin/rota-client"), 0o755); err != nil {
		return err
	}
	if err := copyFile(b.Kernel.Image, filepath.Join(dir, "boot/vmlinuz"), 0o644); err != nil {
		return err
	}
	initrd, err := b.Initramfs(rel.FailBoot)
	if err != nil {
		return err
	}

	files := []struct {
		name string
		mode fs.FileMode
		data []byte
	}{
		{"boot/initrd.img", 0o644, initrd},
		{"sbin/init", 0o755, guestFile("init")},
		{"usr/sbin/rota-e2e-reboot", 0o755, guestFile("reboot")},
		{"etc/rota/system.toml", 0o644, guestFile("system.toml")},
		{"etc/rota/client.toml.in", 0o644, guestFile("client.toml.in")},
		{"etc/rota/keyring.pub", 0o644, b.Keyring},
		{"etc/rota/health.d/10-data", 0o755, guestFile("health-data")},
		{"etc/rota-e2e/version", 0o644, []byte(rel.Version + "\n")},
		{"etc/hostname", 0o644, []byte("rota-e2e\n")},
		{"etc/machine-id", 0o444, []byte("8d3c1f0e5b6a4e2f9c7d0a1b2c3d4e5f\n")},
		{"etc/os-release", 0o644, []byte(fmt.Sprintf(
			"NAME=\"ROTA end-to-end test system\"\nID=rota-e2e\nVERSION_ID=%s\n", rel.Version))},
	}
	if rel.FailHealth {
		files = append(files, struct {
			name string
			mode fs.FileMode
			data []byte
		}{"etc/rota/health.d/20-app", 0o755, guestFile("health-fail")})
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
		// WriteFile applies the umask; scripts must stay executable.
		if err := os.Chmod(filepath.Join(dir, f.name), f.mode); err != nil {
			return err
		}
	}
	return nil
}

// guestFile returns an embedded guest file; the names are fixed, so a
// missing one is a bug in this package.
func guestFile(name string) []byte {
	b, err := guestFiles.ReadFile("guest/" + name)
	if err != nil {
		panic(fmt.Sprintf("e2e: embedded guest file %s: %v", name, err))
	}
	return b
}

// ESP builds the EFI system partition image at out: FAT16 made with
// mkfs.vfat and filled with mtools, holding EFI/BOOT/BOOTX64.EFI (GRUB),
// EFI/BOOT/grub.cfg (the adapted boot-once script) and EFI/BOOT/grubenv.
func (b *Builder) ESP(ctx context.Context, out string) error {
	script, err := AdaptGrubScript(b.GrubScript)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(b.Dir, "esp-")
	if err != nil {
		return fmt.Errorf("build esp: %w", err)
	}
	defer os.RemoveAll(dir)
	efi := filepath.Join(dir, "BOOTX64.EFI")
	if err := BuildGrub(ctx, efi); err != nil {
		return err
	}
	cfg := filepath.Join(dir, "grub.cfg")
	if err := os.WriteFile(cfg, script, 0o644); err != nil {
		return fmt.Errorf("build esp: %w", err)
	}
	env := filepath.Join(dir, "grubenv")
	if err := CreateGrubEnv(ctx, env); err != nil {
		return err
	}

	os.Remove(out)
	if err := createFile(out, ESPSize); err != nil {
		return fmt.Errorf("build esp: %w", err)
	}
	if err := run(ctx, "mkfs.vfat", "-F", "16", "-n", "ESP", out); err != nil {
		return err
	}
	if err := run(ctx, "mmd", "-i", out, "::/EFI", "::/EFI/BOOT"); err != nil {
		return err
	}
	return run(ctx, "mcopy", "-i", out, efi, cfg, env, "::/EFI/BOOT/")
}

// Data builds the data partition image at out: ext4 holding KeepFile with
// keep as its content and an empty directory rota, the agent's data
// directory.
func (b *Builder) Data(ctx context.Context, out string, keep []byte) error {
	stage, err := os.MkdirTemp(b.Dir, "data-")
	if err != nil {
		return fmt.Errorf("build data partition: %w", err)
	}
	defer os.RemoveAll(stage)
	if err := os.Mkdir(filepath.Join(stage, "rota"), 0o755); err != nil {
		return fmt.Errorf("build data partition: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stage, KeepFile), keep, 0o644); err != nil {
		return fmt.Errorf("build data partition: %w", err)
	}
	os.Remove(out)
	return mkfsExt4(ctx, out, "data", stage, DataSize)
}

// Disk builds the test disk at out: a GPT with the EFI system partition,
// slot A holding the root file system image factory, an empty slot B and
// the data partition built from keep.
func (b *Builder) Disk(ctx context.Context, out, factory string, keep []byte) (*Disk, error) {
	esp := filepath.Join(b.Dir, "esp.img")
	if err := b.ESP(ctx, esp); err != nil {
		return nil, err
	}
	data := filepath.Join(b.Dir, "data.img")
	if err := b.Data(ctx, data, keep); err != nil {
		return nil, err
	}
	d, err := CreateDisk(ctx, out, []PartitionSpec{
		{Name: "esp", Type: GPTTypeESP, Size: ESPSize},
		{Name: "rootfs-a", Type: GPTTypeLinux, Size: SlotSize},
		{Name: "rootfs-b", Type: GPTTypeLinux, Size: SlotSize},
		{Name: "data", Type: GPTTypeLinux, Size: DataSize},
	})
	if err != nil {
		return nil, err
	}
	for _, p := range []struct {
		n   int
		img string
	}{{PartESP, esp}, {PartSlotA, factory}, {PartData, data}} {
		if err := d.WritePartition(p.n, p.img); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Bundle builds a .rota bundle of rel from its root file system image
// rootfs, signed by signer, at out.
func (b *Builder) Bundle(ctx context.Context, rel Release, rootfs string,
	signer *bundle.Signer, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("build bundle %s: %w", rel.Version, err)
	}
	_, err = bundle.Create(ctx, f, bundle.Spec{
		Compatible:  Compatible,
		Version:     rel.Version,
		Description: "ROTA end-to-end test system",
		Images:      []bundle.ImageSource{{Class: "rootfs", Path: rootfs}},
	}, bundle.CreateOptions{Signers: []*bundle.Signer{signer}, TempDir: b.Dir})
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("build bundle %s: %w", rel.Version, err)
	}
	return nil
}

// mkfsExt4 makes an ext4 file system of size bytes at out holding the
// files of dir.
func mkfsExt4(ctx context.Context, out, label, dir string, size int64) error {
	if err := createFile(out, size); err != nil {
		return fmt.Errorf("make ext4 %s: %w", out, err)
	}
	return run(ctx, "mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0",
		"-d", dir, out)
}

// createFile creates a sparse file of size bytes.
func createFile(name string, size int64) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// copyFile copies a regular file with mode perm.
func copyFile(src, dst string, perm fs.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, perm); err != nil {
		return err
	}
	return os.Chmod(dst, perm)
}
