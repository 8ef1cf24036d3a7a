package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// GrubModules are the GRUB modules built into the EFI boot loader: the
// disk, partition table and file systems, the boot-once script's commands
// and the Linux loader.
var GrubModules = []string{
	"part_gpt", "fat", "ext2", // the EFI system partition and the slots
	"normal", "configfile", "echo", "test", "regexp", "eval", "loadenv", // the script
	"search", "search_label", "search_fs_uuid", // the sample entry's search
	"serial", "terminal", "linux", "reboot", "halt", "sleep",
}

// grubEntryStart opens the menu entry that docs/bootloaders/grub.cfg asks
// to adapt to the device.
const grubEntryStart = `menuentry "ROTA slot ${rota_slot}" --id rota {`

// grubEntry is the menu entry for the test disk. The slots' file systems
// are built once for both slots and so cannot be found by label, as the
// sample entry does: each bootname maps to its partition instead.
// panic=5 makes a system that dies in early boot reset, so that the boot
// loader falls back, as a watchdog would on a board.
const grubEntry = grubEntryStart + `
	# The test disk: EFI system partition 1, slot A on 2, slot B on 3.
	set rota_part=""
	if [ "${rota_slot}" = "A" ]; then set rota_part=2; fi
	if [ "${rota_slot}" = "B" ]; then set rota_part=3; fi
	set root="(hd0,gpt${rota_part})"
	echo "rota: booting slot ${rota_slot} from ${root}"
	linux /boot/vmlinuz root=/dev/vda${rota_part} ro rota.slot=${rota_slot} console=ttyS0 panic=5
	initrd /boot/initrd.img
}`

// grubEmbedded is the configuration inside the EFI binary: it sends
// GRUB's console to the serial port and hands over to grub.cfg next to
// the binary, so that the script's ${config_directory} (where it keeps
// grubenv) is the EFI system partition's EFI/BOOT.
const grubEmbedded = `serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set pager=0
echo "rota: grub loaded from ${cmdpath}"
configfile "${cmdpath}/grub.cfg"
`

// AdaptGrubScript returns the boot-once script of
// docs/bootloaders/grub.cfg with its device-specific menu entry replaced
// by the one for the test disk, as docs/operations.md tells installers to
// do. Everything else in the script, the slot choice and grubenv
// handling, is kept as it is.
func AdaptGrubScript(script []byte) ([]byte, error) {
	s := string(script)
	start := strings.Index(s, grubEntryStart)
	if start < 0 {
		return nil, fmt.Errorf("adapt grub script: no entry %q", grubEntryStart)
	}
	end := strings.Index(s[start:], "\n}")
	if end < 0 {
		return nil, fmt.Errorf("adapt grub script: entry %q is not closed", grubEntryStart)
	}
	end += start + len("\n}")
	return []byte(s[:start] + grubEntry + s[end:]), nil
}

// BuildGrub writes GRUB for x86_64 EFI, as one standalone binary holding
// GrubModules and the embedded configuration, to out.
func BuildGrub(ctx context.Context, out string) error {
	dir, err := os.MkdirTemp(filepath.Dir(out), "grub-")
	if err != nil {
		return fmt.Errorf("build grub: %w", err)
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "embedded.cfg")
	if err := os.WriteFile(cfg, []byte(grubEmbedded), 0o644); err != nil {
		return fmt.Errorf("build grub: %w", err)
	}
	mods := strings.Join(GrubModules, " ")
	return run(ctx, "grub-mkstandalone", "-O", "x86_64-efi", "-o", out,
		"--modules="+mods, "--install-modules="+mods,
		"--locales=", "--themes=", "--fonts=",
		"boot/grub/grub.cfg="+cfg)
}

// CreateGrubEnv creates the grubenv of a new device with grub-editenv, as
// docs/operations.md does: slot A good and first, slot B not bootable.
func CreateGrubEnv(ctx context.Context, path string) error {
	if err := run(ctx, "grub-editenv", path, "create"); err != nil {
		return err
	}
	return run(ctx, "grub-editenv", path, "set", "ORDER=A B",
		"A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0")
}

// run runs a tool and wraps its output into the error when it fails.
func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

// output runs a tool and returns its standard output.
func output(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := commandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("run %s %s: %w: %s", name, strings.Join(args, " "), err,
			bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}
