package slot

import (
	"context"
	"fmt"
	"path/filepath"
)

// Booted returns the slot the running system was booted from. It looks,
// in order, at:
//
//   - the kernel command line parameter rota.slot=NAME, where NAME is a
//     slot name or a bootname;
//   - the kernel command line parameter root= (a /dev path, PARTUUID=,
//     PARTLABEL=, UUID= or LABEL=), matched against the slots' devices
//     with symbolic links followed;
//   - the boot loader, when its backend implements BootedReporter.
//
// The answer is remembered for the life of the System. When no source
// names a slot, the error wraps ErrBootedUnknown.
func (sys *System) Booted(ctx context.Context) (*Slot, error) {
	sys.mu.Lock()
	defer sys.mu.Unlock()
	if sys.booted != nil {
		return sys.booted, nil
	}
	s, err := sys.detectBooted(ctx)
	if err != nil {
		return nil, fmt.Errorf("find booted slot: %w", err)
	}
	sys.booted = s
	sys.log.Debug("found booted slot", "slot", s.name)
	return s, nil
}

func (sys *System) detectBooted(ctx context.Context) (*Slot, error) {
	data, err := readCapped(sys.cmdline, maxProcFileSize)
	if err != nil {
		return nil, fmt.Errorf("read kernel command line: %w", err)
	}
	params := splitCmdline(string(data))

	if name, ok := cmdlineValue(params, "rota.slot"); ok {
		if s := sys.byName[name]; s != nil {
			return s, nil
		}
		if s := sys.slotByBootname(name); s != nil {
			return s, nil
		}
		return nil, fmt.Errorf("%w: rota.slot=%s names no slot or bootname",
			ErrBootedUnknown, name)
	}

	root, hasRoot := cmdlineValue(params, "root")
	if hasRoot {
		if s := sys.matchRoot(root); s != nil {
			return s, nil
		}
		sys.log.Debug("root= matches no slot", "root", root)
	}

	if r, ok := sys.boot.(BootedReporter); ok {
		bootname, err := r.Booted(ctx)
		if err != nil {
			return nil, fmt.Errorf("ask boot loader: %w", err)
		}
		if s := sys.slotByBootname(bootname); s != nil {
			return s, nil
		}
		return nil, fmt.Errorf("%w: boot loader reports bootname %q, which no slot has",
			ErrBootedUnknown, bootname)
	}

	if hasRoot {
		return nil, fmt.Errorf("%w: root=%s matches no slot device and backend %s "+
			"cannot report the booted slot", ErrBootedUnknown, root, sys.cfg.Bootloader.Backend)
	}
	return nil, fmt.Errorf("%w: kernel command line has neither rota.slot= nor root= "+
		"and backend %s cannot report the booted slot", ErrBootedUnknown,
		sys.cfg.Bootloader.Backend)
}

// matchRoot returns the slot whose device is the root= device, first by
// comparing the two as written, then by following links on the disk.
func (sys *System) matchRoot(root string) *Slot {
	for _, s := range sys.slots {
		if sameDeviceSpec(root, s.device) {
			return s
		}
	}
	p, err := devicePath(sys.devRoot, root)
	if err != nil {
		return nil
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil
	}
	for _, s := range sys.slots {
		if dev, err := resolveDevice(sys.devRoot, s.device); err == nil && dev == real {
			return s
		}
	}
	return nil
}
