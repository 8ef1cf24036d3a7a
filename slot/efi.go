package slot

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
)

// DefaultEFIVarDir is where efivarfs is mounted when EFI.Dir is empty.
const DefaultEFIVarDir = "/sys/firmware/efi/efivars"

// EFIGlobalVariableGUID is the vendor GUID of the UEFI boot manager's
// variables (BootOrder, BootNext, BootCurrent, Boot####); efivarfs appends
// it to each variable's file name.
const EFIGlobalVariableGUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// MaxEFIVarSize caps how much of one EFI variable is read. Firmware limits
// variables to a few kilobytes.
const MaxEFIVarSize = 64 << 10

// maxEFIVarFiles caps how many files are listed when Boot#### variables are
// searched by description.
const maxEFIVarFiles = 4096

// EFI variable attributes (UEFI specification, GetVariable).
const (
	efiVarNonVolatile  = 0x1
	efiVarBootService  = 0x2
	efiVarRuntime      = 0x4
	efiVarBootAttrs    = efiVarNonVolatile | efiVarBootService | efiVarRuntime
	efiVarCurrentAttrs = efiVarBootService | efiVarRuntime
)

// EFI drives the UEFI firmware's own boot manager through efivarfs: each slot
// is a Boot#### load option, BootOrder lists the options the firmware tries
// and BootNext names one option to boot once, before BootOrder.
//
// The mapping to slot states:
//
//   - Primary is the slot BootNext names, when set; otherwise the first
//     entry of BootOrder that is a slot; "" when BootNext names another
//     option or no slot is in BootOrder.
//   - State is good (AttemptsLeft -1) for a slot in BootOrder, on trial with
//     one attempt for a slot only BootNext names, and bad (AttemptsLeft 0)
//     for a slot in neither.
//   - MarkActive sets BootNext to the slot: the firmware boots it once and
//     falls back to BootOrder afterwards.
//   - MarkGood moves the slot to the front of BootOrder.
//   - MarkBad removes the slot from BootOrder (its Boot#### option stays)
//     and clears BootNext if it names the slot.
//
// Booted reads BootCurrent, which the firmware sets at every boot.
//
// Variables are written as efivarfs requires: the 4-byte attributes and the
// data in a single write. efivarfs marks most variables immutable; EFI clears
// that flag before writing or deleting a variable, and ignores file systems
// that do not support it (as in tests on an ordinary directory).
//
// BUG: UEFI boots BootNext exactly once, so Mark.Attempts above one cannot be
// honoured; EFI ignores it.
//
// An EFI must not be copied after first use.
type EFI struct {
	// Dir is the efivarfs mount point. Empty means DefaultEFIVarDir.
	Dir string

	// Numbers maps bootnames to fixed Boot#### option numbers.
	Numbers map[string]uint16

	// Descriptions maps bootnames to the description of their load option,
	// for bootnames not in Numbers: the option is found by searching the
	// Boot#### variables for exactly that description, which must be unique.
	Descriptions map[string]string

	mu sync.Mutex
}

// efiLoadOption is a parsed EFI_LOAD_OPTION, the content of a Boot####
// variable.
type efiLoadOption struct {
	Attributes   uint32
	Description  string
	FilePathList []byte
	OptionalData []byte
}

// Primary returns the slot the firmware boots next (see EFI).
func (e *EFI) Primary(ctx context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()

	next, ok, err := e.readUint16("BootNext")
	if err != nil {
		return "", err
	}
	if ok {
		return e.bootnameOf(next)
	}

	order, err := e.bootOrder()
	if err != nil {
		return "", err
	}
	for _, n := range order {
		name, err := e.bootnameOf(n)
		if err != nil {
			return "", err
		}
		if name != "" {
			return name, nil
		}
	}
	return "", nil
}

// State returns bootname's state as BootOrder and BootNext record it.
func (e *EFI) State(ctx context.Context, bootname string) (BootState, error) {
	e.mu.Lock()
	defer e.mu.Unlock()

	n, err := e.resolve(bootname)
	if err != nil {
		return BootState{}, err
	}
	order, err := e.bootOrder()
	if err != nil {
		return BootState{}, err
	}
	next, hasNext, err := e.readUint16("BootNext")
	if err != nil {
		return BootState{}, err
	}

	switch {
	case slices.Contains(order, n):
		return BootState{Good: true, AttemptsLeft: -1}, nil
	case hasNext && next == n:
		return BootState{AttemptsLeft: 1}, nil
	default:
		return BootState{Bad: true}, nil
	}
}

// Mark changes BootNext or BootOrder for bootname (see EFI).
func (e *EFI) Mark(ctx context.Context, bootname string, m Mark) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
	}

	e.mu.Lock()
	defer e.mu.Unlock()

	n, err := e.resolve(bootname)
	if err != nil {
		return err
	}

	switch m.Kind {
	case MarkActive:
		return e.writeUint16s("BootNext", efiVarBootAttrs, []uint16{n})
	case MarkGood:
		order, err := e.bootOrder()
		if err != nil {
			return err
		}
		newOrder := append([]uint16{n}, slices.DeleteFunc(slices.Clone(order), func(v uint16) bool {
			return v == n
		})...)
		if slices.Equal(order, newOrder) {
			return nil
		}
		return e.writeUint16s("BootOrder", efiVarBootAttrs, newOrder)
	case MarkBad:
		return e.markBad(n)
	default:
		return fmt.Errorf("mark %q: unknown mark kind %d", bootname, m.Kind)
	}
}

// markBad takes option n out of BootOrder and BootNext.
func (e *EFI) markBad(n uint16) error {
	next, hasNext, err := e.readUint16("BootNext")
	if err != nil {
		return err
	}
	if hasNext && next == n {
		if err := e.deleteVar("BootNext"); err != nil {
			return err
		}
	}

	order, err := e.bootOrder()
	if err != nil {
		return err
	}
	newOrder := slices.DeleteFunc(slices.Clone(order), func(v uint16) bool { return v == n })
	if len(newOrder) == len(order) {
		return nil
	}
	return e.writeUint16s("BootOrder", efiVarBootAttrs, newOrder)
}

// Booted returns the slot named by BootCurrent.
func (e *EFI) Booted(ctx context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()

	n, ok, err := e.readUint16("BootCurrent")
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("read EFI variable BootCurrent in %s: %w", e.dir(), fs.ErrNotExist)
	}
	name, err := e.bootnameOf(n)
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", fmt.Errorf("booted option Boot%04X: %w", n, ErrUnknownBootname)
	}
	return name, nil
}

// SimulateBoot does what the firmware's boot manager does at power-on: it
// boots the option BootNext names and deletes BootNext, or else the first
// option in BootOrder, and records the option in BootCurrent. It returns the
// booted slot's bootname, or "" when the option is not a slot, and
// ErrNoBootableSlot when there is nothing to boot. Options that fail to load
// are not modelled.
func (e *EFI) SimulateBoot(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("simulate EFI boot: %w", err)
	}

	e.mu.Lock()
	defer e.mu.Unlock()

	n, ok, err := e.readUint16("BootNext")
	if err != nil {
		return "", err
	}
	if ok {
		if err := e.deleteVar("BootNext"); err != nil {
			return "", err
		}
	} else {
		order, err := e.bootOrder()
		if err != nil {
			return "", err
		}
		if len(order) == 0 {
			return "", fmt.Errorf("simulate EFI boot in %s: %w", e.dir(), ErrNoBootableSlot)
		}
		n = order[0]
	}

	if err := e.writeUint16s("BootCurrent", efiVarCurrentAttrs, []uint16{n}); err != nil {
		return "", err
	}
	return e.bootnameOf(n)
}

// resolve returns bootname's Boot#### number and checks that the option
// exists.
func (e *EFI) resolve(bootname string) (uint16, error) {
	if n, ok := e.Numbers[bootname]; ok {
		if _, err := e.loadOption(n); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return 0, fmt.Errorf("EFI load option Boot%04X for %q: %w", n, bootname, ErrUnknownBootname)
			}
			return 0, err
		}
		return n, nil
	}

	desc, ok := e.Descriptions[bootname]
	if !ok {
		return 0, fmt.Errorf("EFI load option for %q: %w", bootname, ErrUnknownBootname)
	}
	found, err := e.findByDescription(desc)
	if err != nil {
		return 0, err
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("EFI load option %q for %q in %s: %w",
			desc, bootname, e.dir(), ErrUnknownBootname)
	case 1:
		return found[0], nil
	default:
		return 0, fmt.Errorf("EFI load option %q for %q: %d options share it: %w",
			desc, bootname, len(found), ErrCorruptEnv)
	}
}

// findByDescription returns the numbers of all Boot#### options whose
// description is desc.
func (e *EFI) findByDescription(desc string) ([]uint16, error) {
	d, err := os.Open(e.dir())
	if err != nil {
		return nil, fmt.Errorf("list EFI variables: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(maxEFIVarFiles + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("list EFI variables in %s: %w", e.dir(), err)
	}
	if len(names) > maxEFIVarFiles {
		return nil, fmt.Errorf("list EFI variables in %s: more than %d", e.dir(), maxEFIVarFiles)
	}

	var found []uint16
	for _, name := range names {
		n, ok := parseBootOptionFileName(name)
		if !ok {
			continue
		}
		opt, err := e.loadOption(n)
		if err != nil {
			return nil, err
		}
		if opt.Description == desc {
			found = append(found, n)
		}
	}
	slices.Sort(found)
	return found, nil
}

// parseBootOptionFileName recognises "Boot####-<global GUID>" and returns
// ####.
func parseBootOptionFileName(name string) (uint16, bool) {
	hex, ok := strings.CutPrefix(name, "Boot")
	if !ok {
		return 0, false
	}
	hex, ok = strings.CutSuffix(hex, "-"+EFIGlobalVariableGUID)
	if !ok || len(hex) != 4 || strings.ToUpper(hex) != hex {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 16)
	if err != nil {
		return 0, false
	}
	return uint16(n), true
}

// bootnameOf returns the bootname of option n, or "" when n is no slot.
func (e *EFI) bootnameOf(n uint16) (string, error) {
	var byDesc []string
	for _, name := range sortedKeys(e.Numbers) {
		if e.Numbers[name] == n {
			return name, nil
		}
	}
	for _, name := range sortedKeys(e.Descriptions) {
		if _, fixed := e.Numbers[name]; !fixed {
			byDesc = append(byDesc, name)
		}
	}
	if len(byDesc) == 0 {
		return "", nil
	}

	opt, err := e.loadOption(n)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, name := range byDesc {
		if e.Descriptions[name] == opt.Description {
			return name, nil
		}
	}
	return "", nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// loadOption reads and parses Boot####.
func (e *EFI) loadOption(n uint16) (efiLoadOption, error) {
	name := fmt.Sprintf("Boot%04X", n)
	data, ok, err := e.readVar(name)
	if err != nil {
		return efiLoadOption{}, err
	}
	if !ok {
		return efiLoadOption{}, fmt.Errorf("read EFI variable %s: %w", e.varPath(name), fs.ErrNotExist)
	}
	opt, err := parseEFILoadOption(data)
	if err != nil {
		return efiLoadOption{}, fmt.Errorf("parse EFI variable %s: %w: %w",
			e.varPath(name), ErrCorruptEnv, err)
	}
	return opt, nil
}

// bootOrder reads BootOrder; a missing BootOrder is empty.
func (e *EFI) bootOrder() ([]uint16, error) {
	data, _, err := e.readVar("BootOrder")
	if err != nil {
		return nil, err
	}
	order, err := parseUint16s(data)
	if err != nil {
		return nil, fmt.Errorf("parse EFI variable %s: %w: %w",
			e.varPath("BootOrder"), ErrCorruptEnv, err)
	}
	return order, nil
}

// readUint16 reads a variable holding one uint16 (BootNext, BootCurrent).
func (e *EFI) readUint16(name string) (uint16, bool, error) {
	data, ok, err := e.readVar(name)
	if err != nil || !ok {
		return 0, false, err
	}
	if len(data) != 2 {
		return 0, false, fmt.Errorf("parse EFI variable %s: %w: %d data bytes, want 2",
			e.varPath(name), ErrCorruptEnv, len(data))
	}
	return binary.LittleEndian.Uint16(data), true, nil
}

// readVar returns a variable's data without its attributes; ok is false
// when the variable does not exist.
func (e *EFI) readVar(name string) (data []byte, ok bool, err error) {
	p := e.varPath(name)
	raw, err := readFileLimit(p, MaxEFIVarSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read EFI variable: %w", err)
	}
	_, data, err = parseEFIVariable(raw)
	if err != nil {
		return nil, false, fmt.Errorf("parse EFI variable %s: %w: %w", p, ErrCorruptEnv, err)
	}
	return data, true, nil
}

// writeUint16s writes values as a little-endian uint16 array.
func (e *EFI) writeUint16s(name string, attrs uint32, values []uint16) error {
	buf := make([]byte, 4+2*len(values))
	binary.LittleEndian.PutUint32(buf, attrs)
	for i, v := range values {
		binary.LittleEndian.PutUint16(buf[4+2*i:], v)
	}
	return e.writeVar(name, buf)
}

// writeVar writes attributes and data (already joined in buf) with a single
// write, which efivarfs turns into one SetVariable call. On efivarfs the
// file is not truncated (the kernel replaces the whole variable); on other
// file systems, used in tests, it is.
func (e *EFI) writeVar(name string, buf []byte) error {
	p := e.varPath(name)
	if err := efiClearImmutable(p); err != nil {
		return fmt.Errorf("write EFI variable %s: %w", p, err)
	}

	flags := os.O_WRONLY | os.O_CREATE
	efivarfs := onEFIVarFS(e.dir())
	if !efivarfs {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(p, flags, 0o644)
	if err != nil {
		return fmt.Errorf("write EFI variable: %w", err)
	}
	n, err := f.Write(buf)
	if err == nil && n != len(buf) {
		err = io.ErrShortWrite
	}
	if err == nil && !efivarfs {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write EFI variable %s: %w", p, err)
	}
	return nil
}

// deleteVar removes a variable; a missing one is not an error.
func (e *EFI) deleteVar(name string) error {
	p := e.varPath(name)
	if err := efiClearImmutable(p); err != nil {
		return fmt.Errorf("delete EFI variable %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete EFI variable: %w", err)
	}
	return nil
}

func (e *EFI) dir() string {
	if e.Dir == "" {
		return DefaultEFIVarDir
	}
	return e.Dir
}

func (e *EFI) varPath(name string) string {
	return filepath.Join(e.dir(), name+"-"+EFIGlobalVariableGUID)
}

// parseEFIVariable splits an efivarfs file into its attributes and data.
func parseEFIVariable(raw []byte) (attrs uint32, data []byte, err error) {
	if len(raw) < 4 {
		return 0, nil, fmt.Errorf("%d bytes, shorter than the 4-byte attributes", len(raw))
	}
	return binary.LittleEndian.Uint32(raw), raw[4:], nil
}

// parseUint16s decodes a little-endian uint16 array such as BootOrder.
func parseUint16s(data []byte) ([]uint16, error) {
	if len(data)%2 != 0 {
		return nil, fmt.Errorf("%d data bytes, not a uint16 array", len(data))
	}
	out := make([]uint16, len(data)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(data[2*i:])
	}
	return out, nil
}

// parseEFILoadOption decodes an EFI_LOAD_OPTION: attributes (uint32),
// FilePathListLength (uint16), a NUL-terminated UTF-16LE description, the
// device path list of FilePathListLength bytes and optional data.
func parseEFILoadOption(data []byte) (efiLoadOption, error) {
	const header = 4 + 2
	if len(data) < header+2 {
		return efiLoadOption{}, fmt.Errorf("load option of %d bytes is too short", len(data))
	}
	opt := efiLoadOption{Attributes: binary.LittleEndian.Uint32(data)}
	pathLen := int(binary.LittleEndian.Uint16(data[4:]))

	rest := data[header:]
	var units []uint16
	for {
		if len(rest) < 2 {
			return efiLoadOption{}, errors.New("load option description is not NUL-terminated")
		}
		u := binary.LittleEndian.Uint16(rest)
		rest = rest[2:]
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	desc, err := decodeUTF16Strict(units)
	if err != nil {
		return efiLoadOption{}, fmt.Errorf("load option description: %w", err)
	}
	opt.Description = desc

	if pathLen > len(rest) {
		return efiLoadOption{}, fmt.Errorf("load option file path list of %d bytes exceeds the %d left",
			pathLen, len(rest))
	}
	opt.FilePathList = rest[:pathLen]
	opt.OptionalData = rest[pathLen:]
	return opt, nil
}

// decodeUTF16Strict decodes UTF-16 and rejects unpaired surrogates instead of
// replacing them, so two different options never decode to one description.
func decodeUTF16Strict(units []uint16) (string, error) {
	for i := 0; i < len(units); i++ {
		u := units[i]
		switch {
		case u >= 0xd800 && u < 0xdc00:
			if i+1 >= len(units) || units[i+1] < 0xdc00 || units[i+1] >= 0xe000 {
				return "", fmt.Errorf("unpaired UTF-16 surrogate at unit %d", i)
			}
			i++
		case u >= 0xdc00 && u < 0xe000:
			return "", fmt.Errorf("unpaired UTF-16 surrogate at unit %d", i)
		}
	}
	return string(utf16.Decode(units)), nil
}
