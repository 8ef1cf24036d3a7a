package slot

import (
	"fmt"
	"os"
	"path/filepath"
)

// NewBootloader returns the backend cfg names, set up for the slots with
// the given bootnames (in configuration order; the file backend uses it
// as the initial boot order). Settings left empty take each backend's
// documented default. A bootname without an EFI boot number is looked up
// as the load option whose description is the bootname.
func NewBootloader(cfg BootloaderConfig, bootnames []string) (Bootloader, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new boot loader: %w: %w", ErrInvalidConfig, err)
	}
	switch cfg.Backend {
	case BackendGRUB:
		b, err := NewGRUB(cfg.GRUBEnv, bootnames)
		if err != nil {
			return nil, fmt.Errorf("new boot loader grub: %w", err)
		}
		return b, nil

	case BackendUBoot:
		// The backend's own default tries for good slots is kept: the
		// configured boot-attempts is for slots marked active.
		b, err := NewUBoot(UBootOptions{FWEnvConfig: cfg.UBootConfig, Bootnames: bootnames})
		if err != nil {
			return nil, fmt.Errorf("new boot loader uboot: %w", err)
		}
		return b, nil

	case BackendSystemdBoot:
		b := NewSystemdBoot(cfg.ESP, bootnames...)
		for bootname, entry := range cfg.Entries {
			b.Entries[bootname] = entry
		}
		return b, nil

	case BackendEFI:
		b := &EFI{Dir: cfg.EFIVars}
		if len(cfg.BootNumbers) > 0 {
			b.Numbers = make(map[string]uint16, len(cfg.BootNumbers))
			for bootname, n := range cfg.BootNumbers {
				b.Numbers[bootname] = uint16(n) // validate checked the range
			}
		}
		// Without a number, a slot's load option is the one whose
		// description is its bootname, as "efibootmgr -L A" creates it.
		b.Descriptions = make(map[string]string, len(bootnames))
		for _, bootname := range bootnames {
			if _, ok := b.Numbers[bootname]; !ok {
				b.Descriptions[bootname] = bootname
			}
		}
		return b, nil

	case BackendCustom:
		return &Custom{Program: cfg.Program}, nil

	case BackendFile:
		if cfg.StateFile == "" {
			return nil, fmt.Errorf("new boot loader file: %w: bootloader.state: missing",
				ErrInvalidConfig)
		}
		// The default state file is in the data directory, which a new
		// device may not have yet.
		if err := os.MkdirAll(filepath.Dir(cfg.StateFile), 0o755); err != nil {
			return nil, fmt.Errorf("new boot loader file: %w", err)
		}
		b, err := NewFileBootloader(cfg.StateFile, bootnames...)
		if err != nil {
			return nil, fmt.Errorf("new boot loader file: %w", err)
		}
		return b, nil

	default:
		// validate accepts only the names above.
		return nil, fmt.Errorf("new boot loader: %w: unknown backend %q",
			ErrInvalidConfig, cfg.Backend)
	}
}
