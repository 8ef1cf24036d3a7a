// Command custom-bootloader shows how a firmware team plugs its own boot
// loader into ROTA by implementing slot.Bootloader in Go.
//
// The vendor boot loader here keeps its settings in a key/value store (on a
// real board an SPI-flash partition or a secure element; here a directory
// with one file per key):
//
//	boot.primary      bootname the loader tries first
//	slot.NAME.state   "good", "bad" or "trial"
//	slot.NAME.tries   boots left while on trial
//
// The program marks slot B active, plays the boot loader for a few boots and
// prints what the backend reports after each step.
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rotaupdate/rota/slot"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if err := run(ctx); err != nil {
		slog.Error("custom-bootloader failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "vendor-kv-")
	if err != nil {
		return fmt.Errorf("create key/value store: %w", err)
	}
	defer os.RemoveAll(dir)

	bl, err := newVendorBootloader(dir, "A", "B")
	if err != nil {
		return err
	}
	report := func(step string) error {
		primary, err := bl.Primary(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("%-22s primary=%s", step, primary)
		for _, name := range bl.slots {
			st, err := bl.State(ctx, name)
			if err != nil {
				return err
			}
			fmt.Printf(" %s=%s", name, describe(st))
		}
		fmt.Println()
		return nil
	}

	steps := []struct {
		name string
		do   func() error
	}{
		{"installed", func() error { return nil }},
		{"mark B active (2)", func() error {
			return bl.Mark(ctx, "B", slot.Mark{Kind: slot.MarkActive, Attempts: 2})
		}},
		{"boot", bl.boot},
		{"boot", bl.boot},
		{"boot (tries used up)", bl.boot},
		{"mark B active again", func() error {
			return bl.Mark(ctx, "B", slot.Mark{Kind: slot.MarkActive})
		}},
		{"boot", bl.boot},
		{"mark B good", func() error { return bl.Mark(ctx, "B", slot.Mark{Kind: slot.MarkGood}) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if err := report(s.name); err != nil {
			return err
		}
	}
	return nil
}

// describe renders a BootState in a few characters.
func describe(st slot.BootState) string {
	switch {
	case st.Good:
		return "good"
	case st.Bad:
		return "bad"
	default:
		return "trial(" + strconv.Itoa(st.AttemptsLeft) + ")"
	}
}

// vendorBootloader implements slot.Bootloader on the vendor's key/value
// store. Its boot method plays the vendor's boot loader.
type vendorBootloader struct {
	kv    kvStore
	slots []string
}

var _ slot.Bootloader = (*vendorBootloader)(nil)

// newVendorBootloader opens the store in dir, initialising it with every
// slot good and the first one primary if it is empty.
func newVendorBootloader(dir string, slots ...string) (*vendorBootloader, error) {
	b := &vendorBootloader{kv: kvStore{dir: dir}, slots: slots}
	if _, err := b.kv.get("boot.primary"); !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	for _, name := range slots {
		if err := b.kv.set("slot."+name+".state", "good"); err != nil {
			return nil, err
		}
	}
	// The primary is written last: its presence marks the store complete.
	return b, b.kv.set("boot.primary", slots[0])
}

// Primary returns the slot the loader boots next: the primary if it is
// bootable, else the first good slot.
func (b *vendorBootloader) Primary(ctx context.Context) (string, error) {
	primary, err := b.kv.get("boot.primary")
	if err != nil {
		return "", err
	}
	candidates := append([]string{primary}, b.slots...)
	for _, name := range candidates {
		st, err := b.State(ctx, name)
		if err != nil {
			return "", err
		}
		if st.Good || st.AttemptsLeft > 0 {
			return name, nil
		}
	}
	return "", nil
}

// State reads one slot's keys.
func (b *vendorBootloader) State(ctx context.Context, bootname string) (slot.BootState, error) {
	if err := b.known(bootname); err != nil {
		return slot.BootState{}, err
	}
	state, err := b.kv.get("slot." + bootname + ".state")
	if err != nil {
		return slot.BootState{}, err
	}
	switch state {
	case "good":
		return slot.BootState{Good: true, AttemptsLeft: -1}, nil
	case "bad":
		return slot.BootState{Bad: true}, nil
	case "trial":
		tries, err := b.kv.get("slot." + bootname + ".tries")
		if err != nil {
			return slot.BootState{}, err
		}
		n, err := strconv.Atoi(tries)
		if err != nil || n < 0 {
			return slot.BootState{}, fmt.Errorf("slot %s tries %q: %w", bootname, tries, slot.ErrCorruptEnv)
		}
		return slot.BootState{Bad: n == 0, AttemptsLeft: n}, nil
	default:
		return slot.BootState{}, fmt.Errorf("slot %s state %q: %w", bootname, state, slot.ErrCorruptEnv)
	}
}

// Mark writes one slot's keys. For MarkActive the tries are written before
// the state and the primary, so a power cut never leaves a trial without
// tries.
func (b *vendorBootloader) Mark(ctx context.Context, bootname string, m slot.Mark) error {
	if err := b.known(bootname); err != nil {
		return err
	}
	key := "slot." + bootname + ".state"
	switch m.Kind {
	case slot.MarkGood, slot.MarkBad:
		return b.kv.set(key, m.Kind.String())
	case slot.MarkActive:
		n := m.Attempts
		if n <= 0 {
			n = slot.DefaultAttempts
		}
		if err := b.kv.set("slot."+bootname+".tries", strconv.Itoa(n)); err != nil {
			return err
		}
		if err := b.kv.set(key, "trial"); err != nil {
			return err
		}
		return b.kv.set("boot.primary", bootname)
	default:
		return fmt.Errorf("mark %s: unknown mark kind %d", bootname, m.Kind)
	}
}

// boot does what the vendor's boot loader does at power-on: boot the
// primary slot, spending a try when it is on trial.
func (b *vendorBootloader) boot() error {
	ctx := context.Background()
	name, err := b.Primary(ctx)
	if err != nil || name == "" {
		return errors.Join(err, errors.New("boot: no bootable slot"))
	}
	st, err := b.State(ctx, name)
	if err != nil || st.Good {
		return err
	}
	return b.kv.set("slot."+name+".tries", strconv.Itoa(st.AttemptsLeft-1))
}

func (b *vendorBootloader) known(bootname string) error {
	for _, s := range b.slots {
		if s == bootname {
			return nil
		}
	}
	return fmt.Errorf("vendor slot %q: %w", bootname, slot.ErrUnknownBootname)
}

// kvStore is the vendor's key/value store: one small file per key, each
// replaced atomically.
type kvStore struct{ dir string }

// maxValueSize caps a stored value.
const maxValueSize = 256

func (s kvStore) get(key string) (string, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, key))
	if err != nil {
		return "", fmt.Errorf("get %s: %w", key, err)
	}
	if len(data) > maxValueSize {
		return "", fmt.Errorf("get %s: value over %d bytes: %w", key, maxValueSize, slot.ErrCorruptEnv)
	}
	return strings.TrimSpace(string(data)), nil
}

func (s kvStore) set(key, value string) error {
	tmp, err := os.CreateTemp(s.dir, "."+key+"-*")
	if err != nil {
		return fmt.Errorf("set %s: %w", key, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(value + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(s.dir, key))
	}
	if err != nil {
		return fmt.Errorf("set %s: %w", key, err)
	}
	return nil
}
