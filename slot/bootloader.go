package slot

import (
	"context"
	"errors"
)

// Bootloader is the seam between ROTA and a boot loader's persistent state.
// A backend knows slots only by their bootname (the name the boot loader
// uses, such as "A" or "B"), never by device path.
//
// Implementations must make each Mark durable before returning: a power cut
// after Mark returns leaves the new state in place, and a power cut during
// Mark leaves either the old or the new state, never a broken environment.
type Bootloader interface {
	// Primary returns the bootname the boot loader will try first on the
	// next boot, or "" when no slot is bootable.
	Primary(ctx context.Context) (string, error)

	// State returns what the boot loader currently records for bootname.
	State(ctx context.Context, bootname string) (BootState, error)

	// Mark changes the boot loader's state for bootname.
	Mark(ctx context.Context, bootname string, m Mark) error
}

// BootedReporter is implemented by backends that can tell which slot the
// running system was booted from (for example from an EFI variable or a
// custom program). It is consulted only when the kernel command line does
// not name the booted slot.
type BootedReporter interface {
	// Booted returns the bootname of the running slot.
	Booted(ctx context.Context) (string, error)
}

// MarkKind says what a Mark does to a slot.
type MarkKind int

const (
	// MarkGood records that the slot booted and proved healthy; the boot
	// loader keeps booting it.
	MarkGood MarkKind = iota + 1

	// MarkBad records that the slot must not be booted.
	MarkBad

	// MarkActive makes the slot the boot loader's first choice for a limited
	// number of tries (Mark.Attempts); if it is not marked good before they
	// run out, the boot loader falls back to the next good slot.
	MarkActive
)

// String returns the lowercase name used in the CLI and in status files.
func (k MarkKind) String() string {
	switch k {
	case MarkGood:
		return "good"
	case MarkBad:
		return "bad"
	case MarkActive:
		return "active"
	default:
		return "unknown"
	}
}

// Mark is a change to a slot's boot state.
type Mark struct {
	// Kind is what to do.
	Kind MarkKind

	// Attempts is the number of boots the boot loader tries a slot marked
	// active (and, for backends that count, the tries a good slot is given
	// back). Zero means DefaultAttempts. Backends whose scheme is strictly
	// boot-once (GRUB's ORDER/_OK/_TRY) ignore values above one.
	Attempts int
}

// DefaultAttempts is the number of boot tries a slot marked active gets when
// neither the mark nor the device configuration says otherwise.
const DefaultAttempts = 1

// BootState is what a boot loader records for one slot.
type BootState struct {
	// Good is true when the boot loader considers the slot bootable without
	// limit (confirmed), false when it is bad or still on trial.
	Good bool

	// Bad is true when the slot is marked unbootable or has used up its tries.
	Bad bool

	// AttemptsLeft is the number of boot tries left for a slot on trial;
	// -1 when the backend does not count.
	AttemptsLeft int
}

// ErrUnknownBootname is returned by backends asked about a bootname they
// do not know.
var ErrUnknownBootname = errors.New("slot: unknown bootname")

// ErrCorruptEnv is returned when a boot loader environment (grubenv, a
// U-Boot environment, a state file) cannot be parsed or fails its checksum.
// It is never silently replaced: see docs/operations.md for recovery.
var ErrCorruptEnv = errors.New("slot: corrupt boot loader environment")
