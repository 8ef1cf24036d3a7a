package slot

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Defaults of the device configuration.
const (
	// DefaultConfigPath is where a device keeps its configuration.
	DefaultConfigPath = "/etc/rota/system.toml"

	// DefaultDataDir holds ROTA's persistent state (slot status, the
	// install lock). It must be on a partition that no slot covers.
	DefaultDataDir = "/var/lib/rota"

	// DefaultBootAttempts is the number of tries a newly activated slot
	// gets when the configuration does not set boot-attempts. It is
	// DefaultAttempts, one, because GRUB's scheme cannot count higher and
	// a single try falls back soonest when an update does not boot.
	DefaultBootAttempts = DefaultAttempts

	// DefaultKeyringPath is the file of trusted bundle signing keys that
	// "rota install" uses when neither its flags nor [install] say
	// otherwise.
	DefaultKeyringPath = "/etc/rota/keyring.pub"

	// DefaultFileBootloaderState is the state file of the file backend,
	// in the data directory, when [bootloader] does not name one.
	DefaultFileBootloaderState = "bootstate.json"

	// MaxConfigSize caps how much of a configuration file is read.
	MaxConfigSize = 1 << 20
)

// Slot classes with a meaning to this package. Other class names are
// allowed and treated alike.
const (
	// ClassRootfs is the class of root file system slots. Every slot of
	// this class needs a bootname.
	ClassRootfs = "rootfs"

	// ClassBoot is the usual class of boot partition slots, paired with a
	// rootfs slot through Parent.
	ClassBoot = "boot"
)

// Boot loader backend names accepted in BootloaderConfig.Backend.
const (
	BackendGRUB        = "grub"
	BackendUBoot       = "uboot"
	BackendSystemdBoot = "systemd-boot"
	BackendEFI         = "efi"
	BackendCustom      = "custom"
	BackendFile        = "file"
)

// ErrInvalidConfig is returned by LoadConfig, ParseConfig, Config.Validate
// and Open when a configuration is malformed or inconsistent. The message
// names the offending field.
var ErrInvalidConfig = errors.New("slot: invalid configuration")

// Config is a device's configuration, usually read from DefaultConfigPath
// by LoadConfig. A Config built in code must pass Validate; Open checks it.
type Config struct {
	// Compatible names the kind of device; a bundle installs only on a
	// device with the same compatible string. Required.
	Compatible string `toml:"compatible" json:"compatible"`

	// DataDir is the directory for ROTA's persistent state. It must not
	// be inside any slot. Empty means DefaultDataDir.
	DataDir string `toml:"data-dir" json:"data-dir"`

	// BootAttempts is the number of boot tries a slot marked active gets.
	// Zero means DefaultBootAttempts.
	BootAttempts int `toml:"boot-attempts" json:"boot-attempts"`

	// Bootloader selects and configures the boot loader backend.
	Bootloader BootloaderConfig `toml:"bootloader" json:"bootloader"`

	// Install holds defaults for "rota install".
	Install InstallConfig `toml:"install" json:"install"`

	// Slots lists the device's slots, in the order status shows them.
	Slots []SlotConfig `toml:"slot" json:"slots"`
}

// BootloaderConfig is the [bootloader] table: the backend name and the
// settings of that backend. Settings of other backends must be left
// empty. Relative paths are resolved against the configuration file's
// directory.
type BootloaderConfig struct {
	// Backend is one of grub, uboot, systemd-boot, efi, custom, file.
	// Required.
	Backend string `toml:"backend" json:"backend"`

	// GRUBEnv is the grubenv file (grub). Empty means the backend's
	// default.
	GRUBEnv string `toml:"grub-env" json:"grub-env,omitempty"`

	// UBootConfig is the fw_env.config file that locates the U-Boot
	// environment (uboot). Empty means the backend's default.
	UBootConfig string `toml:"uboot-config" json:"uboot-config,omitempty"`

	// ESP is the mount point of the EFI system partition (systemd-boot).
	// Empty means the backend's default.
	ESP string `toml:"esp" json:"esp,omitempty"`

	// Entries maps bootnames to boot loader entry names (systemd-boot).
	// Nil means the backend derives entry names from bootnames.
	Entries map[string]string `toml:"entries" json:"entries,omitempty"`

	// EFIVars is the efivarfs mount point (efi). Empty means the
	// backend's default.
	EFIVars string `toml:"efivarfs" json:"efivarfs,omitempty"`

	// BootNumbers maps bootnames to EFI Boot#### numbers (efi), written
	// in TOML as integers such as 0x0001. Nil means the backend finds the
	// entries by their descriptions.
	BootNumbers map[string]int `toml:"boot-numbers" json:"boot-numbers,omitempty"`

	// Program is the executable that implements the boot loader
	// operations (custom). Required for that backend.
	Program string `toml:"program" json:"program,omitempty"`

	// StateFile is the file that holds the boot state (file). Empty means
	// DefaultFileBootloaderState in the data directory.
	StateFile string `toml:"state" json:"state,omitempty"`
}

// SlotConfig is one [[slot]] table.
type SlotConfig struct {
	// Name identifies the slot, such as "rootfs.0". Required; letters,
	// digits, '.', '_' and '-' only, and neither "booted" nor "other",
	// which the CLI reserves.
	Name string `toml:"name" json:"name"`

	// Class is the kind of image the slot holds, such as "rootfs" or
	// "boot"; a bundle image goes to the passive slot of its class.
	// Required.
	Class string `toml:"class" json:"class"`

	// Device is where the slot lives: an absolute path to a block device
	// or a regular file, or one of PARTLABEL=, PARTUUID=, UUID=, LABEL=,
	// which are looked up under /dev/disk. Paths under /dev are taken
	// relative to the System's device root (see WithDevRoot). Required.
	Device string `toml:"device" json:"device"`

	// Bootname is the name the boot loader knows the slot by, such as "A".
	// Required for rootfs slots; a slot with a Parent usually has none.
	Bootname string `toml:"bootname" json:"bootname,omitempty"`

	// Parent names the slot this one belongs to: a boot slot with parent
	// rootfs.0 is booted, marked and chosen as passive together with
	// rootfs.0. Empty means the slot stands alone.
	Parent string `toml:"parent" json:"parent,omitempty"`

	// Size caps the bytes an image for this slot may have. Zero means
	// the device's own size for a block device, and no limit for a
	// regular file; for a block device a larger Size has no effect.
	Size int64 `toml:"size" json:"size,omitempty"`
}

// InstallConfig is the [install] table: defaults for "rota install".
type InstallConfig struct {
	// Keyring is the file of trusted signing keys. Empty means
	// DefaultKeyringPath.
	Keyring string `toml:"keyring" json:"keyring"`

	// VerifyAfterWrite makes the installer read every slot back and
	// check its sha256 before activating it. LoadConfig and ParseConfig
	// set it to true when the file does not mention it; in a Config
	// built in code, false means the check is skipped.
	VerifyAfterWrite bool `toml:"verify-after-write" json:"verify-after-write"`
}

// LoadConfig reads, checks and completes the configuration at path.
// Relative paths in it are taken relative to path's directory.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	defer f.Close()

	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("load config %s: %w: larger than %d bytes",
			path, ErrInvalidConfig, MaxConfigSize)
	}

	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	cfg, err := ParseConfig(data, dir)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses a configuration in TOML, fills in defaults and
// validates it. Relative paths are resolved against dir; an empty dir
// leaves them relative to the working directory. Unknown keys are errors.
func ParseConfig(data []byte, dir string) (*Config, error) {
	var cfg Config
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%w: unknown key %s", ErrInvalidConfig,
			strings.Join(keys, ", "))
	}

	if !md.IsDefined("install", "verify-after-write") {
		cfg.Install.VerifyAfterWrite = true
	}
	if md.IsDefined("boot-attempts") && cfg.BootAttempts < 1 {
		return nil, fmt.Errorf("%w: boot-attempts: %d is less than 1",
			ErrInvalidConfig, cfg.BootAttempts)
	}
	cfg.setDefaults()
	if dir != "" {
		cfg.resolvePaths(dir)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// setDefaults replaces zero values that have a named default.
func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.BootAttempts == 0 {
		c.BootAttempts = DefaultBootAttempts
	}
	if c.Install.Keyring == "" {
		c.Install.Keyring = DefaultKeyringPath
	}
	if c.Bootloader.Backend == BackendFile && c.Bootloader.StateFile == "" {
		c.Bootloader.StateFile = filepath.Join(c.DataDir, DefaultFileBootloaderState)
	}
}

// resolvePaths makes every relative path absolute against dir.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.DataDir)
	abs(&c.Install.Keyring)
	b := &c.Bootloader
	for _, p := range []*string{&b.GRUBEnv, &b.UBootConfig, &b.ESP, &b.EFIVars,
		&b.Program, &b.StateFile} {
		abs(p)
	}
	for i := range c.Slots {
		if !isTagForm(c.Slots[i].Device) {
			abs(&c.Slots[i].Device)
		}
	}
}

var slotNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// reservedNames are slot arguments with a meaning of their own in the CLI.
var reservedNames = map[string]bool{"booted": true, "other": true}

// Validate reports the first problem in c, naming the field, wrapped in
// ErrInvalidConfig. Zero values with a default (DataDir, BootAttempts,
// Install.Keyring) are accepted.
func (c *Config) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

func (c *Config) validate() error {
	if c.Compatible == "" {
		return errors.New("compatible: missing")
	}
	if c.BootAttempts < 0 {
		return fmt.Errorf("boot-attempts: %d is less than 1", c.BootAttempts)
	}
	if c.DataDir != "" && !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("data-dir: %q is not an absolute path", c.DataDir)
	}
	if err := c.Bootloader.validate(); err != nil {
		return err
	}
	if len(c.Slots) == 0 {
		return errors.New("slot: no [[slot]] tables")
	}
	if err := validateSlots(c.Slots); err != nil {
		return err
	}
	return checkEntries(c)
}

// backendFields lists, per backend, the settings it accepts; every other
// setting must be empty.
var backendFields = map[string][]string{
	BackendGRUB:        {"grub-env"},
	BackendUBoot:       {"uboot-config"},
	BackendSystemdBoot: {"esp", "entries"},
	BackendEFI:         {"efivarfs", "boot-numbers"},
	BackendCustom:      {"program"},
	BackendFile:        {"state"},
}

func (b *BootloaderConfig) validate() error {
	allowed, ok := backendFields[b.Backend]
	if !ok {
		if b.Backend == "" {
			return errors.New("bootloader.backend: missing")
		}
		return fmt.Errorf("bootloader.backend: unknown backend %q (want one of %s)",
			b.Backend, strings.Join(backendNames(), ", "))
	}
	set := map[string]bool{
		"grub-env":     b.GRUBEnv != "",
		"uboot-config": b.UBootConfig != "",
		"esp":          b.ESP != "",
		"entries":      b.Entries != nil,
		"efivarfs":     b.EFIVars != "",
		"boot-numbers": b.BootNumbers != nil,
		"program":      b.Program != "",
		"state":        b.StateFile != "",
	}
	for _, a := range allowed {
		delete(set, a)
	}
	for _, key := range slices.Sorted(maps.Keys(set)) {
		if set[key] {
			return fmt.Errorf("bootloader.%s: not a setting of backend %s", key, b.Backend)
		}
	}
	if b.Backend == BackendCustom && b.Program == "" {
		return errors.New("bootloader.program: missing (required by backend custom)")
	}
	for name, n := range b.BootNumbers {
		if n < 0 || n > 0xFFFF {
			return fmt.Errorf("bootloader.boot-numbers.%s: %d is not a Boot#### number",
				name, n)
		}
	}
	return nil
}

func backendNames() []string {
	return slices.Sorted(maps.Keys(backendFields))
}

func validateSlots(slots []SlotConfig) error {
	names := map[string]int{}
	bootnames := map[string]string{}
	devices := map[string]string{}
	for i, s := range slots {
		where := fmt.Sprintf("slot[%d]", i)
		if s.Name != "" {
			where = fmt.Sprintf("slot %s", s.Name)
		}
		switch {
		case s.Name == "":
			return fmt.Errorf("%s.name: missing", where)
		case !slotNameRE.MatchString(s.Name):
			return fmt.Errorf("%s.name: %q has characters other than "+
				"letters, digits, '.', '_' and '-'", where, s.Name)
		case reservedNames[s.Name]:
			return fmt.Errorf("%s.name: %q is reserved", where, s.Name)
		case s.Class == "":
			return fmt.Errorf("%s.class: missing", where)
		case s.Device == "":
			return fmt.Errorf("%s.device: missing", where)
		case s.Class == ClassRootfs && s.Bootname == "" && s.Parent == "":
			return fmt.Errorf("%s.bootname: missing (required for class rootfs)", where)
		case s.Size < 0:
			return fmt.Errorf("%s.size: %d is negative", where, s.Size)
		case s.Parent == s.Name:
			return fmt.Errorf("%s.parent: a slot cannot be its own parent", where)
		}
		if err := checkDevice(s.Device); err != nil {
			return fmt.Errorf("%s.device: %w", where, err)
		}
		if _, dup := names[s.Name]; dup {
			return fmt.Errorf("%s.name: duplicate slot name", where)
		}
		names[s.Name] = i
		if s.Bootname != "" {
			if other, dup := bootnames[s.Bootname]; dup {
				return fmt.Errorf("%s.bootname: %q is also the bootname of slot %s",
					where, s.Bootname, other)
			}
			bootnames[s.Bootname] = s.Name
		}
		if other, dup := devices[s.Device]; dup {
			return fmt.Errorf("%s.device: %q is also the device of slot %s",
				where, s.Device, other)
		}
		devices[s.Device] = s.Name
	}
	return checkParents(slots, names)
}

// checkDevice accepts an absolute path or a known TAG=value form.
func checkDevice(dev string) error {
	if isTagForm(dev) {
		tag, value, _ := strings.Cut(dev, "=")
		if _, known := deviceTags[tag]; !known {
			return fmt.Errorf("%q: unknown tag %s (want PARTLABEL, PARTUUID, UUID or LABEL)",
				dev, tag)
		}
		if value == "" || strings.Contains(value, "/") {
			return fmt.Errorf("%q: bad %s value", dev, tag)
		}
		return nil
	}
	if !filepath.IsAbs(dev) {
		return fmt.Errorf("%q: not an absolute path", dev)
	}
	return nil
}

// checkParents rejects unknown parents and cycles.
func checkParents(slots []SlotConfig, index map[string]int) error {
	for _, s := range slots {
		if s.Parent == "" {
			continue
		}
		if _, ok := index[s.Parent]; !ok {
			return fmt.Errorf("slot %s.parent: unknown slot %q", s.Name, s.Parent)
		}
		seen := map[string]bool{s.Name: true}
		for p := s.Parent; p != ""; p = slots[index[p]].Parent {
			if seen[p] {
				return fmt.Errorf("slot %s.parent: cycle through slot %s", s.Name, p)
			}
			seen[p] = true
		}
	}
	return nil
}

// checkEntries makes the per-bootname maps of the boot loader settings
// name only bootnames that slots use.
func checkEntries(c *Config) error {
	bootnames := map[string]bool{}
	for _, s := range c.Slots {
		if s.Bootname != "" {
			bootnames[s.Bootname] = true
		}
	}
	for _, key := range slices.Sorted(maps.Keys(c.Bootloader.Entries)) {
		if !bootnames[key] {
			return fmt.Errorf("bootloader.entries.%s: no slot has this bootname", key)
		}
	}
	for _, key := range slices.Sorted(maps.Keys(c.Bootloader.BootNumbers)) {
		if !bootnames[key] {
			return fmt.Errorf("bootloader.boot-numbers.%s: no slot has this bootname", key)
		}
	}
	return nil
}
