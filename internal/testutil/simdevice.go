package testutil

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// simDeviceConfig is the device configuration of a simulated device: two
// file slots of a fixed size and the file boot loader.
const simDeviceConfig = `compatible = %q
data-dir = "data"
boot-attempts = 1

[bootloader]
backend = "file"

[[slot]]
name = "rootfs.0"
class = "rootfs"
device = "rootfs-a.img"
bootname = "A"
size = %d

[[slot]]
name = "rootfs.1"
class = "rootfs"
device = "rootfs-b.img"
bootname = "B"
size = %d
`

// SimDevice lays out a simulated device in dir: system.toml for the
// given compatible string, slot files rootfs-a.img and rootfs-b.img of
// slotSize bytes (filled with 'a' and 'b'), and an empty kernel command
// line file "cmdline", so that the booted slot is what the simulated boot
// loader booted. Open it with slot.LoadConfig(dir/system.toml) and
// slot.WithCmdline(dir/cmdline).
func SimDevice(t testing.TB, dir, compatible string, slotSize int) {
	t.Helper()
	files := map[string][]byte{
		"rootfs-a.img": bytes.Repeat([]byte("a"), slotSize),
		"rootfs-b.img": bytes.Repeat([]byte("b"), slotSize),
		"cmdline":      nil,
		"system.toml":  fmt.Appendf(nil, simDeviceConfig, compatible, slotSize, slotSize),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatalf("lay out simulated device: %v", err)
		}
	}
}
