package slot

import (
	"context"
	"fmt"
)

// Boot states as Status reports them.
const (
	// BootGood is a slot the boot loader boots without limit.
	BootGood = "good"

	// BootBad is a slot the boot loader will not boot.
	BootBad = "bad"

	// BootTrying is a slot on trial: active with tries left.
	BootTrying = "trying"
)

// Status is a report on a System: what runs, what boots next, and what
// each slot holds.
type Status struct {
	// Compatible is the device's compatible string.
	Compatible string `json:"compatible"`

	// Backend is the boot loader backend's name.
	Backend string `json:"backend"`

	// Booted is the name of the booted slot; empty when it cannot be
	// told, and BootedError says why.
	Booted      string `json:"booted,omitempty"`
	BootedError string `json:"booted-error,omitempty"`

	// Primary is the bootname the boot loader tries first; empty when no
	// slot is bootable.
	Primary string `json:"primary,omitempty"`

	// RollbackIndex is what System.RollbackIndex returns.
	RollbackIndex uint64 `json:"rollback-index"`

	// Slots has one entry per slot, in configuration order.
	Slots []SlotStatus `json:"slots"`
}

// SlotStatus is the state of one slot.
type SlotStatus struct {
	// Name, Class, Device, Bootname and Parent are as configured.
	Name     string `json:"name"`
	Class    string `json:"class"`
	Device   string `json:"device"`
	Bootname string `json:"bootname,omitempty"`
	Parent   string `json:"parent,omitempty"`

	// Booted is true for every slot of the booted group.
	Booted bool `json:"booted"`

	// Primary is true for every slot of the group the boot loader tries
	// first.
	Primary bool `json:"primary"`

	// Boot is BootGood, BootBad or BootTrying for the slot's group, as
	// the boot loader records it; empty for a group without a bootname.
	Boot string `json:"boot,omitempty"`

	// AttemptsLeft is the boot tries left while Boot is BootTrying; -1
	// when the backend does not count or Boot is not BootTrying.
	AttemptsLeft int `json:"attempts-left"`

	// Install is the slot's install record; nil when ROTA never wrote the
	// slot.
	Install *SlotRecord `json:"install,omitempty"`
}

// Status reports on every slot. A booted slot that cannot be told is not
// an error (see Status.BootedError); failing to read the boot loader or
// the status file is.
func (sys *System) Status(ctx context.Context) (*Status, error) {
	rep := &Status{
		Compatible: sys.cfg.Compatible,
		Backend:    sys.cfg.Bootloader.Backend,
	}
	var bootedRoot *Slot
	if b, err := sys.Booted(ctx); err != nil {
		rep.BootedError = err.Error()
	} else {
		rep.Booted = b.name
		bootedRoot = b.Root()
	}

	primary, err := sys.boot.Primary(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: read primary slot: %w", err)
	}
	rep.Primary = primary

	st, err := sys.loadStatus()
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	rep.RollbackIndex = st.RollbackIndex

	states := map[*Slot]BootState{}
	for _, s := range sys.slots {
		ss := SlotStatus{
			Name:         s.name,
			Class:        s.class,
			Device:       s.device,
			Bootname:     s.bootname,
			AttemptsLeft: -1,
		}
		if s.parent != nil {
			ss.Parent = s.parent.name
		}
		root := s.Root()
		ss.Booted = root == bootedRoot
		ss.Primary = root.bootname != "" && root.bootname == primary
		if root.bootname != "" {
			bs, ok := states[root]
			if !ok {
				bs, err = sys.boot.State(ctx, root.bootname)
				if err != nil {
					return nil, fmt.Errorf("status: read boot state of slot %s: %w",
						root.name, err)
				}
				states[root] = bs
			}
			ss.Boot = bootStateName(bs)
			if ss.Boot == BootTrying {
				ss.AttemptsLeft = bs.AttemptsLeft
			}
		}
		if rec, ok := st.Slots[s.name]; ok {
			ss.Install = &rec
		}
		rep.Slots = append(rep.Slots, ss)
	}
	return rep, nil
}

// bootStateName names a BootState as Status reports it.
func bootStateName(bs BootState) string {
	switch {
	case bs.Bad:
		return BootBad
	case bs.Good:
		return BootGood
	default:
		return BootTrying
	}
}
