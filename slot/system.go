package slot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Defaults of the files a System reads to find out about the running
// system. Each can be replaced by an Option, which tests do.
const (
	// DefaultCmdlinePath is the kernel command line.
	DefaultCmdlinePath = "/proc/cmdline"

	// DefaultMountinfoPath is the mounts table of the calling process.
	DefaultMountinfoPath = "/proc/self/mountinfo"

	// DefaultDevRoot is the directory of device nodes, holding the
	// disk/by-partlabel (and by-partuuid, by-uuid, by-label) links.
	DefaultDevRoot = "/dev"
)

// Errors of a System's lookups and marks.
var (
	// ErrUnknownSlot is returned when a slot name matches no slot.
	ErrUnknownSlot = errors.New("slot: unknown slot")

	// ErrBootedUnknown is returned when neither the kernel command line
	// nor the boot loader tells which slot is running.
	ErrBootedUnknown = errors.New("slot: cannot tell the booted slot")

	// ErrNoPassive is returned by Passive when every slot of the class
	// belongs to the booted slot.
	ErrNoPassive = errors.New("slot: no passive slot")

	// ErrNoBootname is returned when a slot is marked whose group has no
	// bootname, so the boot loader cannot be told about it.
	ErrNoBootname = errors.New("slot: slot has no bootname")

	// ErrIncomplete is returned by MarkActive and MarkGood for a slot
	// whose last install did not complete: its bytes were not all
	// written and verified.
	ErrIncomplete = errors.New("slot: slot install incomplete")
)

// Option configures Open.
type Option func(*options) error

type options struct {
	log       *slog.Logger
	cmdline   string
	mountinfo string
	devRoot   string
	boot      Bootloader
}

// WithLogger makes the System log state changes (Info) and detail (Debug)
// to log. By default nothing is logged.
func WithLogger(log *slog.Logger) Option {
	return func(o *options) error {
		o.log = log
		return nil
	}
}

// WithCmdline reads the kernel command line from path instead of
// DefaultCmdlinePath.
func WithCmdline(path string) Option {
	return func(o *options) error {
		if path == "" {
			return errors.New("kernel command line path is empty")
		}
		o.cmdline = path
		return nil
	}
}

// WithMountinfo reads the mounts table, in the format of
// /proc/self/mountinfo, from path instead of DefaultMountinfoPath.
func WithMountinfo(path string) Option {
	return func(o *options) error {
		if path == "" {
			return errors.New("mountinfo path is empty")
		}
		o.mountinfo = path
		return nil
	}
}

// WithDevRoot looks up devices under dir instead of DefaultDevRoot: a
// slot device "/dev/sda2" becomes dir/sda2 and "PARTLABEL=a" becomes
// dir/disk/by-partlabel/a.
func WithDevRoot(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("device root is empty")
		}
		o.devRoot = dir
		return nil
	}
}

// WithBootloader uses b as the boot loader. By default Open builds the
// backend the configuration names with NewBootloader.
func WithBootloader(b Bootloader) Option {
	return func(o *options) error {
		if b == nil {
			return errors.New("bootloader is nil")
		}
		o.boot = b
		return nil
	}
}

// System is one device's set of slots and its boot loader. Its methods
// are safe for concurrent use; the install methods expect the caller to
// hold the System's Lock.
type System struct {
	cfg       Config
	slots     []*Slot
	byName    map[string]*Slot
	boot      Bootloader
	log       *slog.Logger
	cmdline   string
	mountinfo string
	devRoot   string

	mu     sync.Mutex // guards booted
	booted *Slot

	statusMu sync.Mutex // serialises status file updates
}

// Slot is one slot of a System. Its fields come from the configuration
// and do not change.
type Slot struct {
	name     string
	class    string
	device   string
	bootname string
	size     int64
	parent   *Slot
}

// Name returns the slot's name, such as "rootfs.0".
func (s *Slot) Name() string { return s.name }

// Class returns the kind of image the slot holds, such as "rootfs".
func (s *Slot) Class() string { return s.class }

// Device returns the slot's device as configured: a path or TAG=value.
func (s *Slot) Device() string { return s.device }

// Bootname returns the name the boot loader knows the slot by, or "".
func (s *Slot) Bootname() string { return s.bootname }

// Size returns the configured size cap in bytes; zero means none.
func (s *Slot) Size() int64 { return s.size }

// Parent returns the slot this one belongs to, or nil.
func (s *Slot) Parent() *Slot { return s.parent }

// Root returns the topmost ancestor of s, or s when it has no parent. A
// root and its descendants form a group that is booted, marked and
// updated together.
func (s *Slot) Root() *Slot {
	for s.parent != nil {
		s = s.parent
	}
	return s
}

// String returns the slot's name.
func (s *Slot) String() string { return s.name }

// Open builds the System that cfg describes. Unless WithBootloader is
// given, the boot loader comes from NewBootloader. Open touches no slot.
func Open(cfg *Config, opts ...Option) (*System, error) {
	o := options{
		cmdline:   DefaultCmdlinePath,
		mountinfo: DefaultMountinfoPath,
		devRoot:   DefaultDevRoot,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("open system: %w", err)
		}
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}

	c := *cfg
	c.Slots = append([]SlotConfig(nil), cfg.Slots...)
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("open system: %w", err)
	}

	sys := &System{
		cfg:       c,
		byName:    make(map[string]*Slot, len(c.Slots)),
		log:       o.log,
		cmdline:   o.cmdline,
		mountinfo: o.mountinfo,
		devRoot:   o.devRoot,
		boot:      o.boot,
	}
	for _, sc := range c.Slots {
		s := &Slot{
			name:     sc.Name,
			class:    sc.Class,
			device:   sc.Device,
			bootname: sc.Bootname,
			size:     sc.Size,
		}
		sys.slots = append(sys.slots, s)
		sys.byName[s.name] = s
	}
	for i, sc := range c.Slots {
		if sc.Parent != "" {
			sys.slots[i].parent = sys.byName[sc.Parent]
		}
	}

	if sys.boot == nil {
		var bootnames []string
		for _, s := range sys.slots {
			if s.bootname != "" {
				bootnames = append(bootnames, s.bootname)
			}
		}
		b, err := NewBootloader(c.Bootloader, bootnames)
		if err != nil {
			return nil, fmt.Errorf("open system: %w", err)
		}
		sys.boot = b
	}
	return sys, nil
}

// Config returns a copy of the configuration the System was opened with,
// defaults filled in.
func (sys *System) Config() Config {
	c := sys.cfg
	c.Slots = append([]SlotConfig(nil), sys.cfg.Slots...)
	return c
}

// Bootloader returns the boot loader backend in use.
func (sys *System) Bootloader() Bootloader { return sys.boot }

// Slots returns all slots in configuration order.
func (sys *System) Slots() []*Slot {
	return append([]*Slot(nil), sys.slots...)
}

// Slot returns the slot called name, or an error wrapping ErrUnknownSlot.
func (sys *System) Slot(name string) (*Slot, error) {
	s, ok := sys.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownSlot, name)
	}
	return s, nil
}

// slotByBootname returns the slot with that bootname, or nil.
func (sys *System) slotByBootname(bootname string) *Slot {
	for _, s := range sys.slots {
		if s.bootname != "" && s.bootname == bootname {
			return s
		}
	}
	return nil
}

// group returns root and its descendants, in configuration order.
func (sys *System) group(root *Slot) []*Slot {
	var g []*Slot
	for _, s := range sys.slots {
		if s.Root() == root {
			g = append(g, s)
		}
	}
	return g
}

// Passive returns the slot of class that the next update should go to:
// the first slot of that class, in configuration order of the groups,
// that is outside the booted slot's group. With parent slots this is the
// boot slot whose parent is the passive rootfs slot.
func (sys *System) Passive(ctx context.Context, class string) (*Slot, error) {
	booted, err := sys.Booted(ctx)
	if err != nil {
		return nil, fmt.Errorf("find passive %s slot: %w", class, err)
	}
	bootedRoot := booted.Root()
	for _, root := range sys.slots {
		if root.parent != nil || root == bootedRoot {
			continue
		}
		for _, s := range sys.group(root) {
			if s.class == class {
				return s, nil
			}
		}
	}
	return nil, fmt.Errorf("%w of class %q", ErrNoPassive, class)
}

// MarkGood tells the boot loader that s (with its group) booted and is
// healthy; when s is the booted slot, it also records its rollback index
// as committed. Unless s is the
// booted slot, it refuses a slot whose last install is incomplete
// (ErrIncomplete).
func (sys *System) MarkGood(ctx context.Context, s *Slot) error {
	// Attempts stays zero: backends that count give a good slot their own
	// number of tries (U-Boot's Attempts), not the trial's boot-attempts.
	if err := sys.mark(ctx, s, Mark{Kind: MarkGood}); err != nil {
		return err
	}
	// Only a system that booted and confirmed itself commits its rollback
	// index; marking another slot good does not.
	if !sys.isBooted(ctx, s.Root()) {
		return nil
	}
	if err := sys.commitRollback(s); err != nil {
		return fmt.Errorf("mark slot %s good: %w", s.name, err)
	}
	return nil
}

// MarkBad tells the boot loader not to boot s (with its group).
func (sys *System) MarkBad(ctx context.Context, s *Slot) error {
	return sys.mark(ctx, s, Mark{Kind: MarkBad})
}

// MarkActive makes s (with its group) the boot loader's first choice for
// attempts tries; zero means the configured boot-attempts. It refuses a
// slot whose last install is incomplete (ErrIncomplete).
func (sys *System) MarkActive(ctx context.Context, s *Slot, attempts int) error {
	if attempts < 0 {
		return fmt.Errorf("mark slot %s active: negative attempts %d", s.name, attempts)
	}
	if attempts == 0 {
		attempts = sys.cfg.BootAttempts
	}
	return sys.mark(ctx, s, Mark{Kind: MarkActive, Attempts: attempts})
}

// mark applies m to the bootname of s's group.
func (sys *System) mark(ctx context.Context, s *Slot, m Mark) error {
	if err := sys.check(s); err != nil {
		return fmt.Errorf("mark slot %s %s: %w", s.name, m.Kind, err)
	}
	root := s.Root()
	if root.bootname == "" {
		return fmt.Errorf("mark slot %s %s: %w", s.name, m.Kind, ErrNoBootname)
	}
	if m.Kind != MarkBad && !(m.Kind == MarkGood && sys.isBooted(ctx, root)) {
		// A slot that is running has proved its content, whatever
		// the records say; any other must have a complete install.
		if err := sys.checkComplete(root); err != nil {
			return fmt.Errorf("mark slot %s %s: %w", s.name, m.Kind, err)
		}
	}
	if err := sys.boot.Mark(ctx, root.bootname, m); err != nil {
		return fmt.Errorf("mark slot %s %s: %w", s.name, m.Kind, err)
	}
	sys.log.Info("marked slot", "slot", root.name, "bootname", root.bootname,
		"mark", m.Kind.String(), "attempts", m.Attempts)
	return nil
}

// isBooted reports whether root's group is known to be running.
func (sys *System) isBooted(ctx context.Context, root *Slot) bool {
	booted, err := sys.Booted(ctx)
	return err == nil && booted.Root() == root
}

// check makes sure s belongs to this System.
func (sys *System) check(s *Slot) error {
	if s == nil || sys.byName[s.name] != s {
		return ErrUnknownSlot
	}
	return nil
}

// checkComplete fails when any slot of root's group has an install that
// was started but not committed.
func (sys *System) checkComplete(root *Slot) error {
	st, err := sys.loadStatus()
	if err != nil {
		return err
	}
	for _, s := range sys.group(root) {
		rec, ok := st.Slots[s.name]
		if ok && rec.State != StateInstalled {
			return fmt.Errorf("%w: slot %s is %s", ErrIncomplete, s.name, rec.State)
		}
	}
	return nil
}
