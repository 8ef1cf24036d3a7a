package slot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseConfig_Full(t *testing.T) {
	const text = `
compatible = "acme-gadget"
data-dir = "/data/rota"
boot-attempts = 3

[bootloader]
backend = "efi"
efivarfs = "efivars"
boot-numbers = { A = 0x0001, B = 0x0002 }

[install]
keyring = "/etc/rota/acme.pub"
verify-after-write = false

[[slot]]
name = "rootfs.0"
class = "rootfs"
device = "PARTLABEL=rootfs-a"
bootname = "A"

[[slot]]
name = "rootfs.1"
class = "rootfs"
device = "/dev/mmcblk0p3"
bootname = "B"

[[slot]]
name = "boot.1"
class = "boot"
device = "images/boot.1.img"
parent = "rootfs.1"
size = 1048576
`
	cfg, err := ParseConfig([]byte(text), "/etc/rota")
	require.NoError(t, err)

	assert.Equal(t, "acme-gadget", cfg.Compatible)
	assert.Equal(t, "/data/rota", cfg.DataDir)
	assert.Equal(t, 3, cfg.BootAttempts)
	assert.Equal(t, BootloaderConfig{
		Backend:     BackendEFI,
		EFIVars:     "/etc/rota/efivars",
		BootNumbers: map[string]int{"A": 1, "B": 2},
	}, cfg.Bootloader)
	assert.Equal(t, InstallConfig{Keyring: "/etc/rota/acme.pub"}, cfg.Install)
	require.Len(t, cfg.Slots, 3)
	assert.Equal(t, SlotConfig{
		Name:   "boot.1",
		Class:  "boot",
		Device: "/etc/rota/images/boot.1.img",
		Parent: "rootfs.1",
		Size:   1 << 20,
	}, cfg.Slots[2])
	assert.Equal(t, "PARTLABEL=rootfs-a", cfg.Slots[0].Device)
}

func TestParseConfig_Defaults(t *testing.T) {
	const text = `
compatible = "x"
[bootloader]
backend = "file"
[[slot]]
name = "rootfs.0"
class = "rootfs"
device = "/dev/sda2"
bootname = "A"
`
	cfg, err := ParseConfig([]byte(text), "")
	require.NoError(t, err)

	assert.Equal(t, DefaultDataDir, cfg.DataDir)
	assert.Equal(t, DefaultBootAttempts, cfg.BootAttempts)
	assert.Equal(t, DefaultKeyringPath, cfg.Install.Keyring)
	assert.True(t, cfg.Install.VerifyAfterWrite, "verify-after-write defaults to true")
	assert.Equal(t, filepath.Join(DefaultDataDir, DefaultFileBootloaderState),
		cfg.Bootloader.StateFile)
}

func TestParseConfig_Invalid(t *testing.T) {
	const head = "compatible = \"x\"\n[bootloader]\nbackend = \"grub\"\n"
	const slotA = "[[slot]]\nname = \"rootfs.0\"\nclass = \"rootfs\"\n" +
		"device = \"/dev/sda2\"\nbootname = \"A\"\n"
	const slotB = "[[slot]]\nname = \"rootfs.1\"\nclass = \"rootfs\"\n" +
		"device = \"/dev/sda3\"\nbootname = \"B\"\n"

	tests := []struct {
		name string
		text string
		want string
	}{
		{
			name: "broken TOML is reported with its position",
			text: "compatible = \n",
			want: "line 1",
		},
		{
			name: "an unknown top-level key is named",
			text: "colour = \"red\"\n" + head + slotA,
			want: "unknown key colour",
		},
		{
			name: "an unknown key in a slot is named",
			text: head + slotA + "colour = \"red\"\n",
			want: "unknown key slot.colour",
		},
		{
			name: "an unknown key in bootloader is named",
			text: head + "colour = 1\n" + slotA,
			want: "unknown key bootloader.colour",
		},
		{
			name: "compatible is required",
			text: "[bootloader]\nbackend = \"grub\"\n" + slotA,
			want: "compatible: missing",
		},
		{
			name: "backend is required",
			text: "compatible = \"x\"\n" + slotA,
			want: "bootloader.backend: missing",
		},
		{
			name: "an unknown backend lists the known ones",
			text: "compatible = \"x\"\n[bootloader]\nbackend = \"lilo\"\n" + slotA,
			want: `unknown backend "lilo" (want one of custom, efi, file, grub`,
		},
		{
			name: "a setting of another backend is refused",
			text: head + "esp = \"/efi\"\n" + slotA,
			want: "bootloader.esp: not a setting of backend grub",
		},
		{
			name: "custom needs a program",
			text: "compatible = \"x\"\n[bootloader]\nbackend = \"custom\"\n" + slotA,
			want: "bootloader.program: missing",
		},
		{
			name: "EFI boot numbers have four hex digits",
			text: "compatible = \"x\"\n[bootloader]\nbackend = \"efi\"\n" +
				"boot-numbers = { A = 0x10000 }\n" + slotA,
			want: "bootloader.boot-numbers.A",
		},
		{
			name: "per-bootname settings name existing bootnames",
			text: "compatible = \"x\"\n[bootloader]\nbackend = \"systemd-boot\"\n" +
				"entries = { C = \"rota-c\" }\n" + slotA,
			want: "bootloader.entries.C: no slot has this bootname",
		},
		{
			name: "at least one slot is required",
			text: head,
			want: "no [[slot]] tables",
		},
		{
			name: "boot-attempts must be positive",
			text: "boot-attempts = 0\n" + head + slotA,
			want: "boot-attempts: 0 is less than 1",
		},
		{
			name: "slot names are unique",
			text: head + slotA + strings.ReplaceAll(
				strings.ReplaceAll(slotA, "sda2", "sda9"), "\"A\"", "\"Z\""),
			want: "slot rootfs.0.name: duplicate slot name",
		},
		{
			name: "bootnames are unique",
			text: head + slotA + strings.ReplaceAll(slotB, "\"B\"", "\"A\""),
			want: `slot rootfs.1.bootname: "A" is also the bootname of slot rootfs.0`,
		},
		{
			name: "devices are unique",
			text: head + slotA + strings.ReplaceAll(slotB, "sda3", "sda2"),
			want: `slot rootfs.1.device: "/dev/sda2" is also the device of slot rootfs.0`,
		},
		{
			name: "a rootfs slot needs a bootname",
			text: head + strings.ReplaceAll(slotA, "bootname = \"A\"\n", ""),
			want: "slot rootfs.0.bootname: missing (required for class rootfs)",
		},
		{
			name: "a slot needs a name",
			text: head + "[[slot]]\nclass = \"boot\"\ndevice = \"/dev/sda1\"\n",
			want: "slot[0].name: missing",
		},
		{
			name: "a slot name is a plain word",
			text: head + strings.ReplaceAll(slotA, "rootfs.0", "root fs"),
			want: "has characters other than",
		},
		{
			name: "the CLI's words are not slot names",
			text: head + strings.ReplaceAll(slotA, "rootfs.0", "other"),
			want: `slot other.name: "other" is reserved`,
		},
		{
			name: "a slot needs a class",
			text: head + "[[slot]]\nname = \"x\"\ndevice = \"/dev/sda1\"\n",
			want: "slot x.class: missing",
		},
		{
			name: "a slot needs a device",
			text: head + "[[slot]]\nname = \"x\"\nclass = \"boot\"\n",
			want: "slot x.device: missing",
		},
		{
			name: "a device tag must be known",
			text: head + strings.ReplaceAll(slotA, "/dev/sda2", "PARTNAME=a"),
			want: "unknown tag PARTNAME",
		},
		{
			name: "a device path must be absolute without a base directory",
			text: head + strings.ReplaceAll(slotA, "/dev/sda2", "sda2"),
			want: `slot rootfs.0.device: "sda2": not an absolute path`,
		},
		{
			name: "a size cannot be negative",
			text: head + slotA + "size = -1\n",
			want: "slot rootfs.0.size: -1 is negative",
		},
		{
			name: "a parent must exist",
			text: head + slotA + "[[slot]]\nname = \"boot.0\"\nclass = \"boot\"\n" +
				"device = \"/dev/sda1\"\nparent = \"rootfs.7\"\n",
			want: `slot boot.0.parent: unknown slot "rootfs.7"`,
		},
		{
			name: "a slot is not its own parent",
			text: head + slotA + "parent = \"rootfs.0\"\n",
			want: "slot rootfs.0.parent: a slot cannot be its own parent",
		},
		{
			name: "parents do not form a cycle",
			text: head +
				"[[slot]]\nname = \"x\"\nclass = \"boot\"\n" +
				"device = \"/dev/sda1\"\nparent = \"y\"\n" +
				"[[slot]]\nname = \"y\"\nclass = \"boot\"\n" +
				"device = \"/dev/sda4\"\nparent = \"x\"\n",
			want: "slot x.parent: cycle through slot",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.text), "")
			require.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
		return p
	}

	tests := []struct {
		name string
		path string
		want string
	}{
		{
			name: "a missing file names the path",
			path: filepath.Join(dir, "absent.toml"),
			want: "absent.toml: no such file",
		},
		{
			name: "an oversized file is refused unread",
			path: write("big.toml", "# "+strings.Repeat("x", MaxConfigSize)),
			want: "larger than 1048576 bytes",
		},
		{
			name: "errors name the file",
			path: write("bad.toml", "compatible = 1\n"),
			want: "bad.toml",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(tt.path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}

	t.Run("relative paths are taken from the file's directory", func(t *testing.T) {
		p := write("ok.toml", fixtureConfig)
		cfg, err := LoadConfig(p)
		require.NoError(t, err)
		assert.Equal(t, filepath.Join(dir, "data"), cfg.DataDir)
		assert.Equal(t, filepath.Join(dir, "bootstate.json"), cfg.Bootloader.StateFile)
		assert.Equal(t, "/dev/sda3", cfg.Slots[1].Device)
	})
}

func TestOpen_ValidatesConfig(t *testing.T) {
	cfg := &Config{
		Compatible: "x",
		Bootloader: BootloaderConfig{Backend: BackendFile, StateFile: "/nonexistent/state"},
		Slots: []SlotConfig{
			{Name: "rootfs.0", Class: ClassRootfs, Device: "/dev/sda2"},
		},
	}
	_, err := Open(cfg, WithBootloader(noReporter{}))
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "bootname: missing")
}

func TestNewBootloader(t *testing.T) {
	dir := t.TempDir()
	fwEnv := filepath.Join(dir, "fw_env.config")
	require.NoError(t, os.WriteFile(fwEnv,
		[]byte(filepath.Join(dir, "uboot.env")+" 0 0x4000\n"), 0o644))
	tests := []struct {
		name    string
		cfg     BootloaderConfig
		wantErr error
	}{
		{name: "grub", cfg: BootloaderConfig{Backend: BackendGRUB,
			GRUBEnv: filepath.Join(dir, "grubenv")}},
		{name: "uboot", cfg: BootloaderConfig{Backend: BackendUBoot,
			UBootConfig: fwEnv}},
		{name: "systemd-boot", cfg: BootloaderConfig{Backend: BackendSystemdBoot,
			ESP: dir, Entries: map[string]string{"A": "rota-first"}}},
		{name: "efi", cfg: BootloaderConfig{Backend: BackendEFI, EFIVars: dir,
			BootNumbers: map[string]int{"A": 1}}},
		{name: "custom", cfg: BootloaderConfig{Backend: BackendCustom,
			Program: "/bin/true"}},
		{name: "file", cfg: BootloaderConfig{Backend: BackendFile,
			StateFile: filepath.Join(dir, "state.json")}},
		{name: "an unknown backend", cfg: BootloaderConfig{Backend: "lilo"},
			wantErr: ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := NewBootloader(tt.cfg, []string{"A", "B"})
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.NotNil(t, b)
		})
	}
}
