package slot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
)

// MaxUBootEnvSize caps the size of a U-Boot environment this package reads
// or writes. Boards use 8 KiB to 256 KiB; anything larger is taken for a
// configuration error rather than read into memory.
const MaxUBootEnvSize = 1 << 20

// minUBootEnvSize is the smallest environment accepted: a redundant header
// and the two terminating NUL bytes of an empty environment, with room.
const minUBootEnvSize = 16

// DefaultFWEnvConfigPath is where fw_printenv and fw_setenv look for their
// configuration, and where NewUBoot reads it by default.
const DefaultFWEnvConfigPath = "/etc/fw_env.config"

// maxFWEnvConfigSize caps how much of an fw_env.config file is read.
const maxFWEnvConfigSize = 64 << 10

// ubootCRCSize is the size of the little-endian CRC-32 starting each copy.
const ubootCRCSize = 4

// UBootEnvLocation is where one copy of a U-Boot environment is stored: one
// line of fw_env.config.
type UBootEnvLocation struct {
	// Device is the regular file or block device holding the copy.
	// Character devices (MTD, UBI) are not supported.
	Device string

	// Offset is the copy's byte offset in Device.
	Offset int64

	// Size is the environment size (CONFIG_ENV_SIZE): CRC, flags byte in
	// the redundant layout, and data area.
	Size int64

	// SectorSize and Sectors are the flash erase geometry, kept from the
	// configuration file for completeness; zero when not given. They do not
	// matter for files and block devices.
	SectorSize int64
	Sectors    int64
}

// UBootEnvConfig says where a U-Boot environment is stored. With one copy
// the layout is single (CRC-32 then data); with two it is redundant (CRC-32,
// a flags byte, then data, in each copy), and the copy with a valid CRC
// and the newer flags counter is the current one.
type UBootEnvConfig struct {
	// Copies are the environment's locations: one or two, of equal Size.
	Copies []UBootEnvLocation
}

// Redundant reports whether c describes the redundant layout.
func (c UBootEnvConfig) Redundant() bool { return len(c.Copies) == 2 }

// Validate checks that c has one or two copies of equal, sane size that do
// not overlap.
func (c UBootEnvConfig) Validate() error {
	if n := len(c.Copies); n < 1 || n > 2 {
		return fmt.Errorf("u-boot environment has %d copies, want 1 or 2", n)
	}
	for i, l := range c.Copies {
		switch {
		case l.Device == "":
			return fmt.Errorf("u-boot environment copy %d has no device", i+1)
		case l.Offset < 0:
			return fmt.Errorf("u-boot environment copy %d: negative offset %d", i+1, l.Offset)
		case l.Size < minUBootEnvSize || l.Size > MaxUBootEnvSize:
			return fmt.Errorf("u-boot environment copy %d: size %#x outside %#x..%#x",
				i+1, l.Size, minUBootEnvSize, MaxUBootEnvSize)
		case l.SectorSize < 0 || l.Sectors < 0:
			return fmt.Errorf("u-boot environment copy %d: negative sector geometry", i+1)
		}
	}
	if !c.Redundant() {
		return nil
	}

	a, b := c.Copies[0], c.Copies[1]
	if a.Size != b.Size {
		return fmt.Errorf("u-boot environment copies differ in size: %#x and %#x", a.Size, b.Size)
	}
	if a.Device == b.Device && a.Offset < b.Offset+b.Size && b.Offset < a.Offset+a.Size {
		return fmt.Errorf("u-boot environment copies overlap in %s", a.Device)
	}
	return nil
}

// headerSize returns the bytes before the data area of each copy.
func (c UBootEnvConfig) headerSize() int {
	if c.Redundant() {
		return ubootCRCSize + 1
	}
	return ubootCRCSize
}

// ReadFWEnvConfig reads an fw_env.config file (DefaultFWEnvConfigPath when
// path is empty); see ParseFWEnvConfig.
func ReadFWEnvConfig(path string) (UBootEnvConfig, error) {
	if path == "" {
		path = DefaultFWEnvConfigPath
	}
	data, err := readFileLimit(path, maxFWEnvConfigSize)
	if err != nil {
		return UBootEnvConfig{}, fmt.Errorf("read fw_env config %s: %w", path, err)
	}
	cfg, err := ParseFWEnvConfig(data)
	if err != nil {
		return UBootEnvConfig{}, fmt.Errorf("read fw_env config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseFWEnvConfig parses the text of an fw_env.config file as
// fw_printenv does. Each non-blank line not starting with '#' describes one
// copy: device, offset, environment size, and optionally sector size and
// sector count, separated by blanks. A field starting with '#' ends the
// line; fields after the fifth are ignored. The offset is read like a C integer
// (0x for hexadecimal, a leading 0 for octal, else decimal); the sizes are
// always hexadecimal, with or without 0x, so "1000" means 4096 bytes. One
// line gives the single layout, two the redundant one.
//
// BUG(slot): the YAML configuration of newer libubootenv releases, negative
// (from the end) offsets and flash devices are not supported.
func ParseFWEnvConfig(data []byte) (UBootEnvConfig, error) {
	var cfg UBootEnvConfig
	for i, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if j := slices.IndexFunc(fields, func(f string) bool {
			return strings.HasPrefix(f, "#")
		}); j >= 0 {
			fields = fields[:j]
		}
		if len(fields) == 0 {
			continue
		}

		loc, err := parseFWEnvLine(fields)
		if err != nil {
			return UBootEnvConfig{}, fmt.Errorf("parse fw_env config line %d: %w", i+1, err)
		}
		if len(cfg.Copies) == 2 {
			return UBootEnvConfig{}, fmt.Errorf("parse fw_env config line %d: "+
				"more than two environment copies", i+1)
		}
		cfg.Copies = append(cfg.Copies, loc)
	}
	if err := cfg.Validate(); err != nil {
		return UBootEnvConfig{}, fmt.Errorf("parse fw_env config: %w", err)
	}
	return cfg, nil
}

// parseFWEnvLine decodes the fields of one configuration line.
func parseFWEnvLine(fields []string) (UBootEnvLocation, error) {
	if len(fields) < 3 {
		return UBootEnvLocation{}, errors.New("want device, offset and size")
	}

	loc := UBootEnvLocation{Device: fields[0]}
	var err error
	if loc.Offset, err = parseCInt(fields[1]); err != nil {
		return UBootEnvLocation{}, fmt.Errorf("offset %q: %w", fields[1], err)
	}
	hex := []*int64{&loc.Size, &loc.SectorSize, &loc.Sectors}
	names := []string{"size", "sector size", "sector count"}
	for k, f := range fields[2:min(len(fields), 5)] {
		if *hex[k], err = parseHexSize(f); err != nil {
			return UBootEnvLocation{}, fmt.Errorf("%s %q: %w", names[k], f, err)
		}
	}
	return loc, nil
}

// parseCInt parses a non-negative integer the way C's strtol does with
// base 0: 0x or 0X for hexadecimal, a leading 0 for octal, else decimal.
func parseCInt(s string) (int64, error) {
	base, digits := 10, s
	switch {
	case strings.HasPrefix(s, "0x"), strings.HasPrefix(s, "0X"):
		base, digits = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, digits = 8, s[1:]
	}
	if digits == "" || !isDigits(digits, base) {
		return 0, errors.New("not a non-negative integer")
	}
	return strconv.ParseInt(digits, base, 64)
}

// parseHexSize parses a hexadecimal number with an optional 0x prefix.
func parseHexSize(s string) (int64, error) {
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if digits == "" || !isDigits(digits, 16) {
		return 0, errors.New("not a hexadecimal number")
	}
	return strconv.ParseInt(digits, 16, 64)
}

// isDigits reports whether s holds only digits of base (8, 10 or 16), so
// that strconv never sees signs, underscores or prefixes.
func isDigits(s string, base int) bool {
	for _, c := range []byte(s) {
		d := base
		switch {
		case c >= '0' && c <= '9':
			d = int(c - '0')
		case c >= 'a' && c <= 'f':
			d = int(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = int(c-'A') + 10
		}
		if d >= base {
			return false
		}
	}
	return true
}

// UBootEnv is the set of variables of a U-Boot environment. Order is not
// kept: U-Boot and libubootenv store variables sorted by name, and so does
// MarshalImage. The zero value is an empty environment.
type UBootEnv struct {
	vars map[string]string
}

// NewUBootEnv returns an empty environment.
func NewUBootEnv() *UBootEnv { return &UBootEnv{} }

// Get returns the value of the variable name and whether it is set.
func (e *UBootEnv) Get(name string) (string, bool) {
	v, ok := e.vars[name]
	return v, ok
}

// Set sets the variable name to value. A name must be non-empty and hold no
// '=' or NUL byte; a value must hold no NUL byte. Whether the environment
// still fits is checked when it is encoded.
func (e *UBootEnv) Set(name, value string) error {
	switch {
	case name == "":
		return errors.New("set u-boot variable: empty name")
	case strings.ContainsAny(name, "=\x00"):
		return fmt.Errorf("set u-boot variable %q: name contains '=' or NUL", name)
	case strings.IndexByte(value, 0) >= 0:
		return fmt.Errorf("set u-boot variable %q: value contains NUL", name)
	}
	if e.vars == nil {
		e.vars = make(map[string]string)
	}
	e.vars[name] = value
	return nil
}

// Unset removes the variable name; it does nothing when name is not set.
func (e *UBootEnv) Unset(name string) { delete(e.vars, name) }

// Names returns the variable names, sorted.
func (e *UBootEnv) Names() []string {
	names := make([]string, 0, len(e.vars))
	for n := range e.vars {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// MarshalImage encodes e as one copy of an environment of size bytes:
// CRC-32 (IEEE, little-endian) of the data area, the flags byte when
// redundant, then "name=value" entries sorted by name, each ended by a NUL
// byte, one more NUL, and NUL padding. It returns ErrEnvFull when the
// variables do not fit.
func (e *UBootEnv) MarshalImage(size int, redundant bool, flags byte) ([]byte, error) {
	if size < minUBootEnvSize || size > MaxUBootEnvSize {
		return nil, fmt.Errorf("encode u-boot environment: size %#x outside %#x..%#x",
			size, minUBootEnvSize, MaxUBootEnvSize)
	}
	hdr := ubootCRCSize
	if redundant {
		hdr++
	}

	img := make([]byte, hdr, size)
	for _, name := range e.Names() {
		img = append(img, name...)
		img = append(img, '=')
		img = append(img, e.vars[name]...)
		img = append(img, 0)
		if len(img) >= size {
			break
		}
	}
	if need := len(img) + 1; need > size {
		return nil, fmt.Errorf("encode u-boot environment: needs at least %d bytes of %d: %w",
			need, size, ErrEnvFull)
	}
	img = img[:size]
	if redundant {
		img[ubootCRCSize] = flags
	}
	binary.LittleEndian.PutUint32(img, crc32.ChecksumIEEE(img[hdr:]))
	return img, nil
}

// ParseUBootEnvImage decodes one copy of an environment (the whole
// configured size) in the single or redundant layout and returns it with
// its flags byte (0 in the single layout). A CRC mismatch, an entry
// without '=' or with an empty name, a name set twice, or data that runs
// to the end without its NUL terminator is reported as ErrCorruptEnv.
func ParseUBootEnvImage(img []byte, redundant bool) (*UBootEnv, byte, error) {
	hdr := ubootCRCSize
	if redundant {
		hdr++
	}
	if len(img) < minUBootEnvSize || len(img) > MaxUBootEnvSize {
		return nil, 0, fmt.Errorf("%w: u-boot environment size %#x outside %#x..%#x",
			ErrCorruptEnv, len(img), minUBootEnvSize, MaxUBootEnvSize)
	}

	stored := binary.LittleEndian.Uint32(img)
	if sum := crc32.ChecksumIEEE(img[hdr:]); sum != stored {
		return nil, 0, fmt.Errorf("%w: u-boot environment crc %08x, want %08x",
			ErrCorruptEnv, stored, sum)
	}
	var flags byte
	if redundant {
		flags = img[ubootCRCSize]
	}

	env, err := parseUBootData(img[hdr:])
	if err != nil {
		return nil, 0, fmt.Errorf("%w: u-boot environment %w", ErrCorruptEnv, err)
	}
	return env, flags, nil
}

// parseUBootData decodes the data area: NUL-terminated name=value entries
// up to an empty entry or the end of the area.
func parseUBootData(data []byte) (*UBootEnv, error) {
	env := &UBootEnv{vars: make(map[string]string)}
	for off := 0; off < len(data) && data[off] != 0; {
		end := bytes.IndexByte(data[off:], 0)
		if end < 0 {
			return nil, fmt.Errorf("entry at offset %#x: no terminating NUL", off)
		}
		entry := data[off : off+end]
		name, value, ok := bytes.Cut(entry, []byte("="))
		switch {
		case !ok:
			return nil, fmt.Errorf("entry at offset %#x: no '='", off)
		case len(name) == 0:
			return nil, fmt.Errorf("entry at offset %#x: empty name", off)
		}
		if _, dup := env.vars[string(name)]; dup {
			return nil, fmt.Errorf("entry at offset %#x: variable %q set twice", off, name)
		}
		env.vars[string(name)] = string(value)
		off += end + 1
	}
	return env, nil
}

// ubootCopy is what was read from one location of an environment.
type ubootCopy struct {
	env   *UBootEnv
	flags byte
	err   error // why the copy is unusable; nil when it is valid
}

// ReadUBootEnv reads the current environment described by cfg. In the
// redundant layout the current copy is chosen as U-Boot and libubootenv
// choose it: the only copy with a valid CRC, or, when both are valid, the
// one with the newer flags counter (the larger value, except that 0 is
// newer than 255; the first copy when equal). When no copy is valid the
// error wraps ErrCorruptEnv and says what is wrong with each.
func ReadUBootEnv(cfg UBootEnvConfig) (*UBootEnv, error) {
	env, _, err := readUBootEnv(cfg)
	return env, err
}

// readUBootEnv is ReadUBootEnv that also returns the current copy's index
// and flags.
func readUBootEnv(cfg UBootEnvConfig) (*UBootEnv, int, error) {
	copies, err := readUBootCopies(cfg)
	if err != nil {
		return nil, 0, err
	}
	cur := currentUBootCopy(copies)
	if cur < 0 {
		return nil, 0, ubootCorruptError(cfg, copies)
	}
	return copies[cur].env, cur, nil
}

// readUBootCopies reads and decodes every copy. A copy that is short or
// fails to decode is returned with its error; I/O failures are returned.
func readUBootCopies(cfg UBootEnvConfig) ([]ubootCopy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("read u-boot environment: %w", err)
	}

	copies := make([]ubootCopy, len(cfg.Copies))
	for i, loc := range cfg.Copies {
		img, err := readUBootLocation(loc)
		if err != nil && !errors.Is(err, ErrCorruptEnv) {
			return nil, fmt.Errorf("read u-boot environment %s: %w", locationString(loc), err)
		}
		if err == nil {
			copies[i].env, copies[i].flags, err = ParseUBootEnvImage(img, cfg.Redundant())
		}
		copies[i].err = err
	}
	return copies, nil
}

// readUBootLocation reads exactly loc.Size bytes at loc.Offset. A device
// too short to hold them gives ErrCorruptEnv.
func readUBootLocation(loc UBootEnvLocation) ([]byte, error) {
	f, err := os.Open(loc.Device)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := checkUBootDevice(f); err != nil {
		return nil, err
	}

	img := make([]byte, loc.Size)
	n, err := f.ReadAt(img, loc.Offset)
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: device holds %d of %d bytes", ErrCorruptEnv, n, loc.Size)
	}
	if err != nil {
		return nil, err
	}
	return img, nil
}

// checkUBootDevice refuses character devices: MTD flash must be erased
// before it is written and UBI volumes need their own update calls, and
// neither is implemented.
func checkUBootDevice(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeCharDevice != 0 {
		return errors.New("character devices (mtd, ubi) are not supported")
	}
	return nil
}

// currentUBootCopy returns the index of the current copy, or -1.
func currentUBootCopy(copies []ubootCopy) int {
	if len(copies) == 1 || copies[1].err != nil {
		if copies[0].err != nil {
			return -1
		}
		return 0
	}
	if copies[0].err != nil {
		return 1
	}

	a, b := copies[0].flags, copies[1].flags
	switch {
	case a == 255 && b == 0:
		return 1
	case a == 0 && b == 255:
		return 0
	case b > a:
		return 1
	default:
		return 0
	}
}

// ubootCorruptError describes why no copy is usable.
func ubootCorruptError(cfg UBootEnvConfig, copies []ubootCopy) error {
	if len(copies) == 1 {
		return fmt.Errorf("read u-boot environment %s: %w",
			locationString(cfg.Copies[0]), copies[0].err)
	}
	return fmt.Errorf("read u-boot environment: both copies are unusable: %s: %w; %s: %w",
		locationString(cfg.Copies[0]), copies[0].err, locationString(cfg.Copies[1]), copies[1].err)
}

// locationString names a copy in errors: device@offset.
func locationString(loc UBootEnvLocation) string {
	return fmt.Sprintf("%s@%#x", loc.Device, loc.Offset)
}

// WriteUBootEnv encodes env and stores it durably as cfg describes.
//
// In the redundant layout it writes the copy that is not current, with the
// current copy's flags counter plus one (wrapping from 255 to 0), and syncs
// it; the current copy is never touched, so a power cut at any point
// leaves one valid environment, old or new. When neither copy is valid it
// writes the first copy with flags 1, as fw_setenv does.
//
// In the single layout there is only one copy to overwrite. When that copy
// is a whole regular file it is replaced through a temporary file, sync and
// rename; otherwise (a block device, or a region of a larger file) it is
// written in place and synced, and a power cut during that write can leave
// a copy with a bad CRC, which U-Boot replaces with its built-in default
// environment. Prefer the redundant layout.
//
// BUG(slot): WriteUBootEnv does not lock against a concurrent fw_setenv.
func WriteUBootEnv(cfg UBootEnvConfig, env *UBootEnv) error {
	copies, err := readUBootCopies(cfg)
	if err != nil {
		return fmt.Errorf("write u-boot environment: %w", err)
	}

	target, flags := 0, byte(0)
	if cfg.Redundant() {
		target, flags = 0, 1
		if cur := currentUBootCopy(copies); cur >= 0 {
			target, flags = 1-cur, copies[cur].flags+1
		}
	}

	loc := cfg.Copies[target]
	img, err := env.MarshalImage(int(loc.Size), cfg.Redundant(), flags)
	if err != nil {
		return fmt.Errorf("write u-boot environment %s: %w", locationString(loc), err)
	}
	if err := writeUBootLocation(loc, img); err != nil {
		return fmt.Errorf("write u-boot environment %s: %w", locationString(loc), err)
	}
	return nil
}

// writeUBootLocation stores img at loc and syncs it. A regular file that
// is exactly the environment is replaced atomically; anything else is
// written in place.
func writeUBootLocation(loc UBootEnvLocation, img []byte) error {
	fi, err := os.Stat(loc.Device)
	if err != nil {
		return err
	}
	if fi.Mode().IsRegular() && loc.Offset == 0 && fi.Size() == loc.Size {
		return atomicReplaceFile(loc.Device, img, fi.Mode().Perm())
	}

	f, err := os.OpenFile(loc.Device, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := checkUBootDevice(f); err != nil {
		return err
	}
	if _, err := f.WriteAt(img, loc.Offset); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return f.Close()
}
