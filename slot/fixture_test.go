package slot

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// deviceFixture is a simulated device in a temporary directory: a /dev
// tree whose "partitions" are regular files, udev-style links to them, a
// kernel command line, a mounts table, a data directory and a file boot
// loader.
type deviceFixture struct {
	root      string
	devRoot   string
	cmdline   string
	mountinfo string
	dataDir   string
	bootState string
	config    string // path of system.toml
}

// fixtureConfig is the slot layout of deviceFixture: two rootfs slots,
// each with a boot slot as child, and a stand-alone appfs pair.
const fixtureConfig = `
compatible = "acme-gadget"
data-dir = "data"

[bootloader]
backend = "file"
state = "bootstate.json"

[[slot]]
name = "rootfs.0"
class = "rootfs"
device = "PARTLABEL=rootfs-a"
bootname = "A"

[[slot]]
name = "rootfs.1"
class = "rootfs"
device = "/dev/sda3"
bootname = "B"

[[slot]]
name = "boot.0"
class = "boot"
device = "PARTUUID=0000aaaa-01"
parent = "rootfs.0"

[[slot]]
name = "boot.1"
class = "boot"
device = "UUID=b00b-0001"
parent = "rootfs.1"
`

// fixtureParts maps the fixture's device files to the names that link to
// them under dev/disk.
var fixtureParts = map[string][]string{
	"sda2": {"by-partlabel/rootfs-a", "by-partuuid/0000aaaa-02", "by-label/root-a"},
	"sda3": {"by-partlabel/rootfs-b", "by-partuuid/0000aaaa-03", "by-uuid/cafe-0003"},
	"sda1": {"by-partlabel/boot-a", "by-partuuid/0000aaaa-01"},
	"sdb1": {"by-partlabel/boot-b", "by-uuid/b00b-0001"},
}

// newDeviceFixture lays out a device with cmdline as its kernel command
// line, fixtureConfig (or config, when not empty) as its configuration,
// and every partition filled with a distinct byte.
func newDeviceFixture(t *testing.T, cmdline, config string) *deviceFixture {
	t.Helper()
	root := t.TempDir()
	fx := &deviceFixture{
		root:      root,
		devRoot:   filepath.Join(root, "dev"),
		cmdline:   filepath.Join(root, "cmdline"),
		mountinfo: filepath.Join(root, "mountinfo"),
		dataDir:   filepath.Join(root, "data"),
		bootState: filepath.Join(root, "bootstate.json"),
		config:    filepath.Join(root, "system.toml"),
	}
	fill := byte('a')
	for part, links := range fixtureParts {
		p := filepath.Join(fx.devRoot, part)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(strings.Repeat(string(fill), 4096)), 0o644))
		fill++
		for _, l := range links {
			lp := filepath.Join(fx.devRoot, "disk", l)
			require.NoError(t, os.MkdirAll(filepath.Dir(lp), 0o755))
			require.NoError(t, os.Symlink(filepath.Join("..", "..", part), lp))
		}
	}
	require.NoError(t, os.WriteFile(fx.cmdline, []byte(cmdline+"\n"), 0o644))
	fx.setMounts(t, "")
	if config == "" {
		config = fixtureConfig
	}
	require.NoError(t, os.WriteFile(fx.config, []byte(config), 0o644))
	return fx
}

// setMounts writes the mounts table: a root mount plus extra lines.
func (fx *deviceFixture) setMounts(t *testing.T, extra string) {
	t.Helper()
	table := "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/root rw\n" +
		"23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n" + extra
	require.NoError(t, os.WriteFile(fx.mountinfo, []byte(table), 0o644))
}

// options returns the Open options that point a System at the fixture.
func (fx *deviceFixture) options() []Option {
	return []Option{
		WithCmdline(fx.cmdline),
		WithMountinfo(fx.mountinfo),
		WithDevRoot(fx.devRoot),
	}
}

// open loads the fixture's configuration and opens its System.
func (fx *deviceFixture) open(t *testing.T, opts ...Option) *System {
	t.Helper()
	cfg, err := LoadConfig(fx.config)
	require.NoError(t, err)
	sys, err := Open(cfg, append(fx.options(), opts...)...)
	require.NoError(t, err)
	return sys
}

// slot returns the named slot of sys.
func mustSlot(t *testing.T, sys *System, name string) *Slot {
	t.Helper()
	s, err := sys.Slot(name)
	require.NoError(t, err)
	return s
}

// readPart returns the content of a fixture partition.
func (fx *deviceFixture) readPart(t *testing.T, part string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fx.devRoot, part))
	require.NoError(t, err)
	return data
}

// noReporter hides a backend's BootedReporter.
type noReporter struct{ Bootloader }

// bootState returns what the fixture's boot loader records for bootname.
func bootStateOf(t *testing.T, sys *System, bootname string) BootState {
	t.Helper()
	st, err := sys.Bootloader().State(context.Background(), bootname)
	require.NoError(t, err)
	return st
}
