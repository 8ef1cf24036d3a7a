package slot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
)

// MaxFileBootloaderSize caps how much of a FileBootloader state file is read.
// A state file for a handful of slots is a few hundred bytes.
const MaxFileBootloaderSize = 64 << 10

// fileStateVersion is the only state file format version this code writes
// and reads.
const fileStateVersion = 1

// ErrNoBootableSlot is returned by SimulateBoot when every slot is bad, the
// point at which a real device would stop in its boot loader.
var ErrNoBootableSlot = errors.New("slot: no bootable slot")

// FileBootloader is a simulated boot-once boot loader whose whole state lives
// in one small JSON file. It stands in for real firmware in tests, demos and
// simulated devices, and behaves like one:
//
//   - the boot order lists every bootname; SimulateBoot boots the first slot
//     in that order that is good or still has tries left, spending one try
//     when the slot is on trial, and records it as booted;
//   - Mark with MarkActive moves the slot to the front of the order with
//     Mark.Attempts tries (DefaultAttempts when zero);
//   - MarkGood confirms a slot and MarkBad disables it; neither reorders;
//   - a slot on trial whose tries have run out is bad.
//
// State reports AttemptsLeft as -1 for a good slot (not counted), 0 for a bad
// one and the remaining tries for a slot on trial.
//
// Each call reads the file, and each change rewrites it atomically (temporary
// file, fsync, rename, directory fsync), so a FileBootloader holds no more
// than a path and a mutex: thousands fit in one process. Several
// FileBootloader values must not share one file.
type FileBootloader struct {
	path string
	mu   sync.Mutex
}

// fileState is the JSON document stored by FileBootloader.
type fileState struct {
	Version int                  `json:"version"`
	Order   []string             `json:"order"`
	Slots   map[string]*fileSlot `json:"slots"`
	Booted  string               `json:"booted"`
}

// fileSlot is one slot's record in a fileState.
type fileSlot struct {
	Good      bool `json:"good"`
	Bad       bool `json:"bad"`
	TriesLeft int  `json:"tries_left"`
}

// NewFileBootloader returns a FileBootloader keeping its state in path. When
// the file does not exist it is created with bootnames in that boot order,
// all good, the first one recorded as booted. An existing file is kept as it
// is (bootnames are then ignored) after checking that it parses.
func NewFileBootloader(path string, bootnames ...string) (*FileBootloader, error) {
	b := &FileBootloader{path: path}

	_, err := b.load()
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}

	if len(bootnames) == 0 {
		return nil, fmt.Errorf("create boot state %s: no bootnames given", path)
	}
	st := &fileState{
		Version: fileStateVersion,
		Order:   slices.Clone(bootnames),
		Slots:   make(map[string]*fileSlot, len(bootnames)),
		Booted:  bootnames[0],
	}
	for _, name := range bootnames {
		st.Slots[name] = &fileSlot{Good: true}
	}
	if err := st.validate(); err != nil {
		return nil, fmt.Errorf("create boot state %s: %w", path, err)
	}
	if err := b.store(st); err != nil {
		return nil, err
	}
	return b, nil
}

// Path returns the state file's path.
func (b *FileBootloader) Path() string { return b.path }

// Primary returns the first slot in the boot order that is good or has tries
// left, or "" when every slot is bad.
func (b *FileBootloader) Primary(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	st, err := b.load()
	if err != nil {
		return "", err
	}
	return st.next(), nil
}

// State returns the recorded state of bootname.
func (b *FileBootloader) State(ctx context.Context, bootname string) (BootState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	st, err := b.load()
	if err != nil {
		return BootState{}, err
	}
	s, ok := st.Slots[bootname]
	if !ok {
		return BootState{}, fmt.Errorf("state of %q in %s: %w", bootname, b.path, ErrUnknownBootname)
	}
	return s.bootState(), nil
}

// Mark records m for bootname and rewrites the state file atomically.
func (b *FileBootloader) Mark(ctx context.Context, bootname string, m Mark) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()

	st, err := b.load()
	if err != nil {
		return err
	}
	s, ok := st.Slots[bootname]
	if !ok {
		return fmt.Errorf("mark %q %s in %s: %w", bootname, m.Kind, b.path, ErrUnknownBootname)
	}

	switch m.Kind {
	case MarkGood:
		*s = fileSlot{Good: true}
	case MarkBad:
		*s = fileSlot{Bad: true}
	case MarkActive:
		tries := m.Attempts
		if tries <= 0 {
			tries = DefaultAttempts
		}
		*s = fileSlot{TriesLeft: tries}
		st.Order = append([]string{bootname}, slices.DeleteFunc(st.Order, func(n string) bool {
			return n == bootname
		})...)
	default:
		return fmt.Errorf("mark %q in %s: unknown mark kind %d", bootname, b.path, m.Kind)
	}
	return b.store(st)
}

// Booted returns the bootname SimulateBoot last booted (or the first
// bootname given to NewFileBootloader before any simulated boot).
func (b *FileBootloader) Booted(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	st, err := b.load()
	if err != nil {
		return "", err
	}
	if st.Booted == "" {
		return "", fmt.Errorf("booted slot in %s: %w", b.path, ErrNoBootableSlot)
	}
	return st.Booted, nil
}

// SimulateBoot does what the boot loader does at power-on: it picks the first
// slot in the boot order that is good or has tries left, spends one try if
// the slot is on trial, records the slot as booted and returns its
// bootname. When every slot is bad it records nothing as booted and returns
// ErrNoBootableSlot.
func (b *FileBootloader) SimulateBoot(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("simulate boot with %s: %w", b.path, err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()

	st, err := b.load()
	if err != nil {
		return "", err
	}
	name := st.next()
	st.Booted = name
	if name != "" {
		if s := st.Slots[name]; !s.Good {
			s.TriesLeft--
		}
	}
	if err := b.store(st); err != nil {
		return "", err
	}
	if name == "" {
		return "", fmt.Errorf("simulate boot with %s: %w", b.path, ErrNoBootableSlot)
	}
	return name, nil
}

// Reboot is SimulateBoot without its result, for callers that only need a
// device to restart.
func (b *FileBootloader) Reboot(ctx context.Context) error {
	_, err := b.SimulateBoot(ctx)
	return err
}

// load reads and checks the state file.
func (b *FileBootloader) load() (*fileState, error) {
	data, err := readFileLimit(b.path, MaxFileBootloaderSize)
	if err != nil {
		return nil, fmt.Errorf("load boot state: %w", err)
	}

	var st fileState
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("load boot state %s: %w: %w", b.path, ErrCorruptEnv, err)
	}
	if err := st.validate(); err != nil {
		return nil, fmt.Errorf("load boot state %s: %w", b.path, err)
	}
	return &st, nil
}

// store writes the state file atomically.
func (b *FileBootloader) store(st *fileState) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode boot state %s: %w", b.path, err)
	}
	if err := atomicReplaceFile(b.path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("store boot state: %w", err)
	}
	return nil
}

// validate checks the invariants every state file must hold; any violation
// is reported as ErrCorruptEnv.
func (st *fileState) validate() error {
	if st.Version != fileStateVersion {
		return fmt.Errorf("version %d: %w", st.Version, ErrCorruptEnv)
	}
	if len(st.Order) == 0 || len(st.Order) != len(st.Slots) {
		return fmt.Errorf("boot order %q does not list every slot once: %w", st.Order, ErrCorruptEnv)
	}
	for i, name := range st.Order {
		if !safeBootname(name) {
			return fmt.Errorf("bootname %q: %w", name, ErrCorruptEnv)
		}
		s, ok := st.Slots[name]
		if !ok || s == nil || slices.Contains(st.Order[:i], name) {
			return fmt.Errorf("boot order %q does not list every slot once: %w", st.Order, ErrCorruptEnv)
		}
		if s.TriesLeft < 0 || (s.Good && s.Bad) || (s.Good || s.Bad) && s.TriesLeft != 0 {
			return fmt.Errorf("slot %q: contradictory state: %w", name, ErrCorruptEnv)
		}
	}
	if _, ok := st.Slots[st.Booted]; st.Booted != "" && !ok {
		return fmt.Errorf("booted slot %q unknown: %w", st.Booted, ErrCorruptEnv)
	}
	return nil
}

// next returns the slot the boot loader would boot now, or "".
func (st *fileState) next() string {
	for _, name := range st.Order {
		if s := st.Slots[name]; s.Good || s.TriesLeft > 0 {
			return name
		}
	}
	return ""
}

// bootState converts a record to the Bootloader view.
func (s *fileSlot) bootState() BootState {
	switch {
	case s.Good:
		return BootState{Good: true, AttemptsLeft: -1}
	case s.Bad || s.TriesLeft == 0:
		return BootState{Bad: true}
	default:
		return BootState{AttemptsLeft: s.TriesLeft}
	}
}

// safeBootname reports whether name is usable as a bootname in a file name,
// a command argument or a state file: 1 to 64 bytes of ASCII letters,
// digits, '.', '_' and '-', not starting with '-' or '.'.
func safeBootname(name string) bool {
	if len(name) == 0 || len(name) > maxSafeBootnameLen || name[0] == '-' || name[0] == '.' {
		return false
	}
	for _, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// maxSafeBootnameLen bounds a bootname's length.
const maxSafeBootnameLen = 64
