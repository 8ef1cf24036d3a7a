package slot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// DefaultSystemdBootESP is the mount point of the EFI system partition used
// when SystemdBoot.ESP is empty.
const DefaultSystemdBootESP = "/efi"

// DefaultSystemdBootEntryPrefix is prepended to a bootname to form its entry
// name when NewSystemdBoot builds the mapping: bootname "A" is entry
// "rota-A", stored as loader/entries/rota-A.conf or rota-A+LEFT-DONE.conf.
const DefaultSystemdBootEntryPrefix = "rota-"

// DefaultSystemdBootPattern is the loader.conf "default" glob written when
// SystemdBoot.Pattern is empty. It must match the ID of every ROTA entry and
// nothing else.
const DefaultSystemdBootPattern = DefaultSystemdBootEntryPrefix + "*"

// MaxSystemdBootFileSize caps how much of loader.conf or an entry file is
// read.
const MaxSystemdBootFileSize = 64 << 10

// maxSystemdBootEntries caps how many files loader/entries may hold.
const maxSystemdBootEntries = 1024

// Sort keys given to ROTA entries: systemd-boot sorts entries with a sort key
// by plain string comparison, so the primary slot's key is the smaller one.
const (
	systemdBootSortPrimary = "rota-1"
	systemdBootSortOther   = "rota-2"
)

// SystemdBoot drives systemd-boot through Boot Loader Specification Type #1
// entries and their boot counters, on a mounted EFI system partition.
//
// Every slot has one entry file in ESP/loader/entries, named after its entry
// name (see Entries): NAME.conf when the entry is good, NAME+LEFT-DONE.conf
// (or NAME+LEFT.conf) while it is counted. At each boot systemd-boot renames
// the counted entry it boots to NAME+(LEFT-1)-(DONE+1).conf; an entry with
// LEFT at 0 is bad and sorted after every other entry.
//
// State maps a file name to a BootState: no counter is good (AttemptsLeft
// -1), LEFT above zero is on trial with LEFT attempts, LEFT of 0 is bad.
// Mark works like systemd-bless-boot and bootctl:
//
//   - MarkGood renames the entry to NAME.conf (no counter);
//   - MarkBad renames it to NAME+0-DONE.conf, keeping DONE;
//   - MarkActive renames it to NAME+N-0.conf (N = Mark.Attempts, or
//     DefaultAttempts) and makes it the first choice.
//
// The first choice is not pinned with a loader.conf "default" naming one
// entry: systemd-boot boots the entry a default pattern matches even when
// its tries are used up, and the device would never fall back. Instead every
// ROTA entry carries a "sort-key" line, the primary slot's sorting first,
// and loader.conf says "default PATTERN" (see Pattern), a glob matching all
// ROTA entries. systemd-boot then boots the first ROTA entry in its order,
// and an entry whose tries ran out sorts last, so the other slot boots. MarkActive
// rewrites the sort-key lines and the default line, each file replaced
// atomically (temporary file, fsync, rename, directory fsync) with its other
// lines kept. Renames are followed by a directory fsync.
//
// The EFI variables LoaderEntryDefault and LoaderEntryOneShot (set by
// "bootctl set-default" and "bootctl set-oneshot") override loader.conf and
// must stay unset on a ROTA device; "default @saved" must not be used.
// Primary and SimulateBoot do not read EFI variables.
//
// A SystemdBoot must not be copied after first use.
type SystemdBoot struct {
	// ESP is the mount point of the EFI system partition. Empty means
	// DefaultSystemdBootESP.
	ESP string

	// Entries maps each bootname to its entry name: the entry's file name
	// without boot counter and ".conf". Entry names use ASCII letters,
	// digits, '.', '_' and '-' only, and must match Pattern.
	Entries map[string]string

	// Pattern is the glob written as loader.conf's "default". Empty means
	// DefaultSystemdBootPattern when all entry names start with
	// DefaultSystemdBootEntryPrefix, and otherwise the entry names' longest
	// common prefix followed by "*" ("*" alone when they share none, which
	// lets other operating systems' entries compete by sort order).
	Pattern string

	mu sync.Mutex
}

// NewSystemdBoot returns a SystemdBoot for the ESP mounted at esp whose
// bootnames map to entry names DefaultSystemdBootEntryPrefix+bootname.
func NewSystemdBoot(esp string, bootnames ...string) *SystemdBoot {
	entries := make(map[string]string, len(bootnames))
	for _, b := range bootnames {
		entries[b] = DefaultSystemdBootEntryPrefix + b
	}
	return &SystemdBoot{ESP: esp, Entries: entries}
}

// sdEntry is one Type #1 entry file as systemd-boot sees it.
type sdEntry struct {
	file      string // file name in loader/entries
	name      string // file name without counter and ".conf"
	id        string // lowercased name + ".conf", what "default" matches
	counted   bool   // the file name carries a boot counter
	left      int    // tries left, when counted
	done      int    // tries done, when counted
	sortKey   string
	hasSort   bool
	machineID string
	version   string
	bumps     bool   // systemd-boot counts boots for this kind of entry
	bootname  string // ROTA bootname, or "" for another entry
}

// bad reports whether systemd-boot considers the entry's tries used up.
func (e *sdEntry) bad() bool { return e.counted && e.left == 0 }

// Primary returns the bootname of the entry systemd-boot will boot next, or
// "" when that entry is bad or is not a ROTA entry.
func (b *SystemdBoot) Primary(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	entries, err := b.scan()
	if err != nil {
		return "", err
	}
	pattern, err := b.loaderDefault()
	if err != nil {
		return "", err
	}
	e := selectSystemdBootEntry(entries, pattern)
	if e == nil || e.bad() {
		return "", nil
	}
	return e.bootname, nil
}

// State returns what bootname's entry file name records.
func (b *SystemdBoot) State(ctx context.Context, bootname string) (BootState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	e, _, err := b.entryFor(bootname)
	if err != nil {
		return BootState{}, err
	}
	switch {
	case !e.counted:
		return BootState{Good: true, AttemptsLeft: -1}, nil
	case e.left == 0:
		return BootState{Bad: true}, nil
	default:
		return BootState{AttemptsLeft: e.left}, nil
	}
}

// Mark renames bootname's entry to record m; MarkActive also makes it the
// first choice (see SystemdBoot).
func (b *SystemdBoot) Mark(ctx context.Context, bootname string, m Mark) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()

	e, entries, err := b.entryFor(bootname)
	if err != nil {
		return err
	}

	var target string
	switch m.Kind {
	case MarkGood:
		target = e.name + ".conf"
	case MarkBad:
		target = fmt.Sprintf("%s+0-%d.conf", e.name, e.done)
	case MarkActive:
		n := m.Attempts
		if n <= 0 {
			n = DefaultAttempts
		}
		if n > math.MaxInt32 {
			// systemd-boot would read a larger counter as part of the name.
			return fmt.Errorf("mark %q active: %d attempts exceed the boot counter's range", bootname, n)
		}
		target = fmt.Sprintf("%s+%d-0.conf", e.name, n)
	default:
		return fmt.Errorf("mark %q: unknown mark kind %d", bootname, m.Kind)
	}

	if target != e.file {
		if err := renameDurably(b.entryPath(e.file), b.entryPath(target)); err != nil {
			return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
		}
		e.file = target
	}
	if m.Kind != MarkActive {
		return nil
	}
	if err := b.makeFirst(e, entries); err != nil {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
	}
	return nil
}

// SimulateBoot does what systemd-boot does at power-on, without EFI
// variables: it sorts the entries, picks the first one loader.conf's default
// pattern matches (or the first entry when none matches), and renames a
// counted entry to its next counter values. It returns the booted entry's
// bootname, or "" when systemd-boot booted an entry that is not a ROTA slot.
// It returns ErrNoBootableSlot when there is no entry at all.
//
// A bad entry matched by the default pattern is booted too, as systemd-boot
// does; its DONE counter grows and LEFT stays 0.
func (b *SystemdBoot) SimulateBoot(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("simulate systemd-boot: %w", err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()

	entries, err := b.scan()
	if err != nil {
		return "", err
	}
	pattern, err := b.loaderDefault()
	if err != nil {
		return "", err
	}
	e := selectSystemdBootEntry(entries, pattern)
	if e == nil {
		return "", fmt.Errorf("simulate systemd-boot in %s: %w", b.entriesDir(), ErrNoBootableSlot)
	}

	if e.counted && e.bumps {
		next := fmt.Sprintf("%s+%d-%d.conf", e.name, max(e.left-1, 0), e.done+1)
		if err := renameDurably(b.entryPath(e.file), b.entryPath(next)); err != nil {
			return "", fmt.Errorf("simulate systemd-boot: %w", err)
		}
	}
	return e.bootname, nil
}

// makeFirst gives e the primary sort key and every other ROTA entry the
// secondary one, then points loader.conf's default at the ROTA entries.
func (b *SystemdBoot) makeFirst(e *sdEntry, entries []*sdEntry) error {
	// Promote first, then demote: a power cut in between leaves two
	// primaries, which systemd-boot orders by version, both bootable.
	if err := b.setSortKey(e, systemdBootSortPrimary); err != nil {
		return err
	}
	for _, o := range entries {
		if o.bootname != "" && o.bootname != e.bootname {
			if err := b.setSortKey(o, systemdBootSortOther); err != nil {
				return err
			}
		}
	}
	return b.setLoaderDefault(b.pattern())
}

// setSortKey rewrites e's file so that it holds exactly one sort-key line
// with key, keeping every other line.
func (b *SystemdBoot) setSortKey(e *sdEntry, key string) error {
	if e.hasSort && e.sortKey == key {
		return nil
	}
	p := b.entryPath(e.file)
	data, err := readFileLimit(p, MaxSystemdBootFileSize)
	if err != nil {
		return fmt.Errorf("set sort key: %w", err)
	}
	out := replaceConfigKey(string(data), "sort-key", key)
	if err := atomicReplaceFile(p, []byte(out), 0o644); err != nil {
		return fmt.Errorf("set sort key of %s: %w", e.file, err)
	}
	e.sortKey, e.hasSort = key, true
	return nil
}

// setLoaderDefault makes loader.conf's default line say pattern, keeping
// every other line, and creates loader.conf when it is missing.
func (b *SystemdBoot) setLoaderDefault(pattern string) error {
	p := b.loaderConf()
	data, err := readFileLimit(p, MaxSystemdBootFileSize)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("set default entry: %w", err)
	}
	out := replaceConfigKey(string(data), "default", pattern)
	if out == string(data) {
		return nil
	}
	if err := atomicReplaceFile(p, []byte(out), 0o644); err != nil {
		return fmt.Errorf("set default entry: %w", err)
	}
	return nil
}

// replaceConfigKey returns conf with its first "key value" line set to value
// and any further lines for key removed; the line is appended when there is
// none. Other lines are kept byte for byte.
func replaceConfigKey(conf, key, value string) string {
	lines := strings.SplitAfter(conf, "\n")
	var out strings.Builder
	done := false
	for _, line := range lines {
		if line == "" {
			continue
		}
		if k, _ := splitConfigLine(line); k == key {
			if !done {
				out.WriteString(key + " " + value + "\n")
				done = true
			}
			continue
		}
		out.WriteString(line)
	}
	if !done {
		if s := out.String(); s != "" && !strings.HasSuffix(s, "\n") {
			out.WriteString("\n")
		}
		out.WriteString(key + " " + value + "\n")
	}
	return out.String()
}

// splitConfigLine splits a loader.conf or entry line into key and value the
// way systemd-boot does: blank and '#' lines have no key, the key ends at
// the first space or tab, and the value is the rest without surrounding
// blanks.
func splitConfigLine(line string) (key, value string) {
	line = strings.Trim(line, " \t\r\n")
	if line == "" || line[0] == '#' {
		return "", ""
	}
	i := strings.IndexAny(line, " \t")
	if i < 0 {
		return line, ""
	}
	return line[:i], strings.Trim(line[i:], " \t")
}

// entryFor returns bootname's entry together with all entries.
func (b *SystemdBoot) entryFor(bootname string) (*sdEntry, []*sdEntry, error) {
	if _, ok := b.Entries[bootname]; !ok {
		return nil, nil, fmt.Errorf("systemd-boot entry for %q: %w", bootname, ErrUnknownBootname)
	}
	entries, err := b.scan()
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		if e.bootname == bootname {
			return e, entries, nil
		}
	}
	return nil, nil, fmt.Errorf("systemd-boot entry %s for %q in %s: %w",
		b.Entries[bootname], bootname, b.entriesDir(), ErrUnknownBootname)
}

// scan reads every Type #1 entry systemd-boot would load from
// loader/entries and links ROTA entries to their bootnames.
func (b *SystemdBoot) scan() ([]*sdEntry, error) {
	byName, err := b.entryNames()
	if err != nil {
		return nil, err
	}

	dir := b.entriesDir()
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("read systemd-boot entries: %w", err)
	}
	defer d.Close()
	list, err := d.ReadDir(maxSystemdBootEntries + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read systemd-boot entries %s: %w", dir, err)
	}
	if len(list) > maxSystemdBootEntries {
		return nil, fmt.Errorf("read systemd-boot entries %s: more than %d files: %w",
			dir, maxSystemdBootEntries, ErrCorruptEnv)
	}

	var entries []*sdEntry
	for _, de := range list {
		e, err := b.loadEntry(de)
		if err != nil {
			return nil, err
		}
		if e == nil {
			continue
		}
		if bootname, ok := byName[strings.ToLower(e.name)]; ok {
			for _, o := range entries {
				if o.bootname == bootname {
					return nil, fmt.Errorf("systemd-boot entry %s: both %s and %s exist: %w",
						e.name, o.file, e.file, ErrCorruptEnv)
				}
			}
			e.bootname = bootname
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// entryNames checks the configured entry names and returns them lowercased
// (systemd-boot compares IDs case-insensitively), mapped to bootnames.
func (b *SystemdBoot) entryNames() (map[string]string, error) {
	pattern := strings.ToLower(b.pattern())
	byName := make(map[string]string, len(b.Entries))
	for bootname, name := range b.Entries {
		if !safeBootname(name) {
			return nil, fmt.Errorf("systemd-boot entry name %q for %q: invalid", name, bootname)
		}
		id := strings.ToLower(name) + ".conf"
		if ok, _ := path.Match(pattern, id); !ok {
			return nil, fmt.Errorf("systemd-boot entry name %q for %q: not matched by pattern %q",
				name, bootname, b.pattern())
		}
		if other, dup := byName[strings.ToLower(name)]; dup {
			return nil, fmt.Errorf("systemd-boot entry name %q: used by %q and %q", name, other, bootname)
		}
		byName[strings.ToLower(name)] = bootname
	}
	return byName, nil
}

// loadEntry parses one directory entry, returning nil for files
// systemd-boot ignores.
func (b *SystemdBoot) loadEntry(de fs.DirEntry) (*sdEntry, error) {
	file := de.Name()
	if de.IsDir() || strings.HasPrefix(file, ".") || strings.HasPrefix(file, "auto-") ||
		len(file) <= len(".conf") || !strings.EqualFold(file[len(file)-len(".conf"):], ".conf") {
		return nil, nil
	}
	e := parseSystemdBootFileName(file)

	data, err := readFileLimit(b.entryPath(file), MaxSystemdBootFileSize)
	if err != nil {
		return nil, fmt.Errorf("read systemd-boot entry: %w", err)
	}
	kind := ""
	for _, line := range strings.Split(string(data), "\n") {
		k, v := splitConfigLine(line)
		switch k {
		case "sort-key":
			e.sortKey, e.hasSort = v, true
		case "machine-id":
			e.machineID = v
		case "version":
			e.version = v
		case "linux", "efi", "uki":
			if kind != "" && kind != k {
				return nil, nil // systemd-boot drops an entry naming two kinds
			}
			kind = k
		}
	}
	if kind == "" {
		return nil, nil
	}
	// systemd-boot counts boots only for what it starts as Linux.
	e.bumps = kind != "efi"
	return e, nil
}

// parseSystemdBootFileName splits NAME[+LEFT[-DONE]].conf. A malformed
// counter is part of the name, as in systemd-boot.
func parseSystemdBootFileName(file string) *sdEntry {
	stem, suffix := file[:len(file)-len(".conf")], ".conf"
	e := &sdEntry{file: file, name: stem}

	plus := strings.LastIndexByte(stem, '+')
	if plus >= 0 {
		left, rest, ok := parseCounter(stem[plus+1:])
		done := 0
		if ok && strings.HasPrefix(rest, "-") {
			done, rest, ok = parseCounter(rest[1:])
		}
		if ok && rest == "" {
			e.name, e.counted, e.left, e.done = stem[:plus], true, left, done
		}
	}
	e.id = strings.ToLower(e.name + suffix)
	return e
}

// parseCounter parses the leading decimal digits of s, at most
// math.MaxInt32 as systemd-boot allows.
func parseCounter(s string) (n int, rest string, ok bool) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, s, false
	}
	v, err := strconv.ParseInt(s[:i], 10, 32)
	if err != nil {
		return 0, s, false
	}
	return int(v), s[i:], true
}

// selectSystemdBootEntry orders entries as systemd-boot does and returns the
// first one pattern matches, or the first entry when none matches.
func selectSystemdBootEntry(entries []*sdEntry, pattern string) *sdEntry {
	if len(entries) == 0 {
		return nil
	}
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, compareSystemdBootEntries)

	pattern = strings.ToLower(pattern)
	if pattern != "" {
		for _, e := range sorted {
			if ok, _ := path.Match(pattern, e.id); ok {
				return e
			}
		}
	}
	return sorted[0]
}

// compareSystemdBootEntries is systemd-boot's menu order: entries with no
// tries left last; entries with a sort key first, by sort key, machine ID
// and then newest version; then newest ID; then more tries left and fewer
// tries done. File names break remaining ties so the result is stable.
func compareSystemdBootEntries(a, b *sdEntry) int {
	if r := cmpBool(a.bad(), b.bad()); r != 0 {
		return r
	}
	if r := cmpBool(!a.hasSort, !b.hasSort); r != 0 {
		return r
	}
	if a.hasSort && b.hasSort {
		if r := strings.Compare(a.sortKey, b.sortKey); r != 0 {
			return r
		}
		if r := strings.Compare(a.machineID, b.machineID); r != 0 {
			return r
		}
		if r := compareVersions(a.version, b.version); r != 0 {
			return -r
		}
	}
	if r := compareVersions(a.id, b.id); r != 0 {
		return -r
	}
	if a.counted && b.counted {
		if a.left != b.left {
			return b.left - a.left
		}
		if a.done != b.done {
			return a.done - b.done
		}
	}
	return strings.Compare(a.file, b.file)
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

// compareVersions compares two version strings following the rules of
// systemd's boot loader, returning -1, 0 or +1 when a is older than, equal to or newer
// than b. Strings are cut into numeric and alphabetic segments; numeric
// segments compare by value and beat alphabetic ones; a '~' segment is older
// than anything, '-' older than '^' and '.'; characters outside
// [A-Za-z0-9~^.-] only separate segments. An empty string is oldest.
func compareVersions(a, b string) int {
	if a == "" || b == "" {
		return cmpBool(a != "", b != "")
	}
	for {
		a, b = strings.TrimLeftFunc(a, notVersionChar), strings.TrimLeftFunc(b, notVersionChar)

		for _, sep := range []byte{'~', 0, '-', '^', '.'} {
			if sep == 0 {
				// Past '~': the string with more segments is newer.
				if a == "" || b == "" {
					return cmpBool(a != "", b != "")
				}
				continue
			}
			ha, hb := strings.HasPrefix(a, string(sep)), strings.HasPrefix(b, string(sep))
			if !ha && !hb {
				continue
			}
			if ha != hb {
				// A '~' makes its side older; so do '-', '^' and '.'
				// against a plain segment.
				return cmpBool(!ha, !hb)
			}
			a, b = a[1:], b[1:]
		}

		var r int
		if isDigit(first(a)) || isDigit(first(b)) {
			r, a, b = compareNumericSegment(a, b)
		} else {
			r, a, b = compareAlphaSegment(a, b)
		}
		if r != 0 {
			return r
		}
	}
}

// compareNumericSegment compares the leading digit runs of a and b by value
// (a missing run is older) and returns the rests.
func compareNumericSegment(a, b string) (int, string, string) {
	na, nb := leadingRun(a, isDigit), leadingRun(b, isDigit)
	if r := cmpBool(na != 0, nb != 0); r != 0 {
		return r, a, b
	}
	da := strings.TrimLeft(a[:na], "0")
	db := strings.TrimLeft(b[:nb], "0")
	if len(da) != len(db) {
		return cmpInt(len(da), len(db)), a, b
	}
	return strings.Compare(da, db), a[na:], b[nb:]
}

// compareAlphaSegment compares the leading letter runs of a and b; a longer
// run with an equal prefix is newer.
func compareAlphaSegment(a, b string) (int, string, string) {
	na, nb := leadingRun(a, isAlpha), leadingRun(b, isAlpha)
	n := min(na, nb)
	if r := strings.Compare(a[:n], b[:n]); r != 0 {
		return r, a, b
	}
	if na != nb {
		return cmpInt(na, nb), a, b
	}
	// With no letters on either side a separator comes next, which the
	// caller's next round consumes.
	return 0, a[na:], b[nb:]
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func leadingRun(s string, ok func(byte) bool) int {
	i := 0
	for i < len(s) && ok(s[i]) {
		i++
	}
	return i
}

func first(s string) byte {
	if s == "" {
		return 0
	}
	return s[0]
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func notVersionChar(r rune) bool {
	return r > 0x7f || !isDigit(byte(r)) && !isAlpha(byte(r)) && !strings.ContainsRune("~-^.", r)
}

// loaderDefault returns loader.conf's default pattern ("" without one). As
// in systemd-boot, the last default line wins and "@saved" names no entry
// here because the saved entry lives in an EFI variable.
func (b *SystemdBoot) loaderDefault() (string, error) {
	data, err := readFileLimit(b.loaderConf(), MaxSystemdBootFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read systemd-boot loader.conf: %w", err)
	}
	pattern := ""
	for _, line := range strings.Split(string(data), "\n") {
		if k, v := splitConfigLine(line); k == "default" {
			pattern = v
		}
	}
	if pattern == "@saved" {
		pattern = ""
	}
	return pattern, nil
}

// pattern returns Pattern, or when it is empty DefaultSystemdBootPattern if
// every entry name starts with DefaultSystemdBootEntryPrefix, else the entry
// names' longest common prefix followed by "*".
func (b *SystemdBoot) pattern() string {
	if b.Pattern != "" {
		return b.Pattern
	}
	prefix, first := "", true
	for _, name := range b.Entries {
		if first {
			prefix, first = name, false
			continue
		}
		for !strings.HasPrefix(strings.ToLower(name), strings.ToLower(prefix)) {
			prefix = prefix[:len(prefix)-1]
		}
	}
	if first || strings.HasPrefix(strings.ToLower(prefix), DefaultSystemdBootEntryPrefix) {
		return DefaultSystemdBootPattern
	}
	return prefix + "*"
}

func (b *SystemdBoot) esp() string {
	if b.ESP == "" {
		return DefaultSystemdBootESP
	}
	return b.ESP
}

func (b *SystemdBoot) entriesDir() string {
	return filepath.Join(b.esp(), "loader", "entries")
}

func (b *SystemdBoot) entryPath(file string) string {
	return filepath.Join(b.entriesDir(), file)
}

func (b *SystemdBoot) loaderConf() string {
	return filepath.Join(b.esp(), "loader", "loader.conf")
}
