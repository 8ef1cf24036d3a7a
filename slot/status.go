package slot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Limits and names of the slot status file.
const (
	// StatusFileName is the slot status file in the data directory.
	StatusFileName = "slots.json"

	// MaxStatusSize caps how much of the status file is read.
	MaxStatusSize = 1 << 20

	// statusFormat is the version of the status file's layout.
	statusFormat = 1

	// maxRecordedError caps the failure message kept per slot.
	maxRecordedError = 1024
)

// ErrCorruptStatus is returned when the slot status file cannot be parsed.
// ROTA never replaces such a file by itself, because it holds the rollback
// index that guards against downgrades. To recover, move the file aside:
// the next install starts a new one, with every slot's history unknown
// and the rollback index zero until an install is committed. Copy the
// rollback-index value over from the old file if it is still legible.
var ErrCorruptStatus = errors.New("slot: corrupt status file")

// ErrNoInstall is returned by CommitInstall and FailInstall for a slot
// that BeginInstall was not called for.
var ErrNoInstall = errors.New("slot: no install in progress")

// InstallState is the state of a slot's last install.
type InstallState string

// The states of an install.
const (
	// StateInstalling means writing began and has not been committed: the
	// slot's content is unknown and it is marked bad.
	StateInstalling InstallState = "installing"

	// StateInstalled means every byte was written and verified.
	StateInstalled InstallState = "installed"

	// StateFailed means the install stopped with an error; the slot stays
	// marked bad.
	StateFailed InstallState = "failed"
)

// BundleInfo describes the bundle an install comes from.
type BundleInfo struct {
	// Version is the bundle's version string.
	Version string `json:"version,omitempty"`

	// Digest is the bundle's manifest digest, such as "sha256:…".
	Digest string `json:"digest,omitempty"`

	// Compatible is the bundle's compatible string.
	Compatible string `json:"compatible,omitempty"`

	// RollbackIndex is the bundle's rollback index; zero means none.
	RollbackIndex uint64 `json:"rollback-index,omitempty"`
}

// SlotRecord is what the status file keeps about one slot's installs.
type SlotRecord struct {
	BundleInfo

	// State is the state of the last install.
	State InstallState `json:"state"`

	// StartedAt is when the last install began.
	StartedAt time.Time `json:"started-at"`

	// InstalledAt is when the last successful install was committed; zero
	// when none was.
	InstalledAt time.Time `json:"installed-at,omitzero"`

	// Count is the number of successful installs into the slot.
	Count int `json:"install-count"`

	// ImageSHA256 and ImageSize describe what the last successful install
	// wrote, in hex; empty and zero before one.
	ImageSHA256 string `json:"image-sha256,omitempty"`
	ImageSize   int64  `json:"image-size,omitempty"`

	// Error is the failure of the last install when State is failed.
	Error string `json:"error,omitempty"`

	// Committed is true once the slot was marked good after this install.
	Committed bool `json:"committed"`
}

// statusFile is the layout of the status file.
type statusFile struct {
	Format        int                   `json:"format"`
	RollbackIndex uint64                `json:"rollback-index"`
	Slots         map[string]SlotRecord `json:"slots"`
}

func (sys *System) statusPath() string {
	return filepath.Join(sys.cfg.DataDir, StatusFileName)
}

// loadStatus reads the status file; a missing file is an empty status.
func (sys *System) loadStatus() (*statusFile, error) {
	path := sys.statusPath()
	data, err := readCapped(path, MaxStatusSize)
	if errors.Is(err, fs.ErrNotExist) {
		return &statusFile{Format: statusFormat, Slots: map[string]SlotRecord{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrCorruptStatus, path, err)
	}

	var st statusFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrCorruptStatus, path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w %s: data after the JSON object", ErrCorruptStatus, path)
	}
	if st.Format != statusFormat {
		return nil, fmt.Errorf("%w %s: format %d, want %d",
			ErrCorruptStatus, path, st.Format, statusFormat)
	}
	if st.Slots == nil {
		st.Slots = map[string]SlotRecord{}
	}
	return &st, nil
}

// updateStatus applies fn to the status file and replaces the file
// atomically (temporary file, fsync, rename, directory fsync). It holds a
// lock on the data directory meanwhile, so that processes do not lose
// each other's updates.
func (sys *System) updateStatus(fn func(st *statusFile) error) error {
	sys.statusMu.Lock()
	defer sys.statusMu.Unlock()

	dir := sys.cfg.DataDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open data dir: %w", err)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock data dir %s: %w", dir, err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)

	st, err := sys.loadStatus()
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	if err := atomicReplaceFile(sys.statusPath(), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

// BeginInstall prepares s to be written with an image from info's bundle:
// it records the install as started and then marks s's group bad in the
// boot loader, both durably, so that a write cut short leaves the slot
// inactive, marked bad and recorded as installing. It refuses the booted
// slot's group (ErrBootedSlot). Call it before the first byte is written.
func (sys *System) BeginInstall(ctx context.Context, s *Slot, info BundleInfo) error {
	if err := sys.checkWritable(ctx, s); err != nil {
		return fmt.Errorf("begin install to slot %s: %w", s.Name(), err)
	}

	err := sys.updateStatus(func(st *statusFile) error {
		prev := st.Slots[s.name]
		st.Slots[s.name] = SlotRecord{
			BundleInfo: info,
			State:      StateInstalling,
			StartedAt:  time.Now().UTC(),
			Count:      prev.Count,
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("begin install to slot %s: %w", s.name, err)
	}

	root := s.Root()
	if root.bootname == "" {
		sys.log.Debug("slot has no bootname to mark bad", "slot", s.name)
		return nil
	}
	if err := sys.boot.Mark(ctx, root.bootname, Mark{Kind: MarkBad}); err != nil {
		return fmt.Errorf("begin install to slot %s: mark %s bad: %w", s.name, root.name, err)
	}
	sys.log.Info("install started", "slot", s.name, "version", info.Version)
	return nil
}

// CommitInstall records that the image of the install BeginInstall
// started on s is written and verified; res is what WriteImage returned.
// It does not activate the slot: call MarkActive once every slot of the
// bundle is committed.
func (sys *System) CommitInstall(ctx context.Context, s *Slot, res WriteResult) error {
	if err := sys.check(s); err != nil {
		return fmt.Errorf("commit install to slot %s: %w", s.Name(), err)
	}
	err := sys.updateStatus(func(st *statusFile) error {
		rec, ok := st.Slots[s.name]
		if !ok || rec.State != StateInstalling {
			return ErrNoInstall
		}
		rec.State = StateInstalled
		rec.InstalledAt = time.Now().UTC()
		rec.Count++
		rec.ImageSHA256 = res.SHA256
		rec.ImageSize = res.Size
		st.Slots[s.name] = rec
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit install to slot %s: %w", s.name, err)
	}
	sys.log.Info("install committed", "slot", s.name, "sha256", res.SHA256)
	return nil
}

// FailInstall records that the install BeginInstall started on s stopped
// because of cause. The slot stays marked bad.
func (sys *System) FailInstall(ctx context.Context, s *Slot, cause error) error {
	if err := sys.check(s); err != nil {
		return fmt.Errorf("fail install to slot %s: %w", s.Name(), err)
	}
	msg := "unknown error"
	if cause != nil {
		msg = cause.Error()
	}
	if len(msg) > maxRecordedError {
		msg = msg[:maxRecordedError]
	}
	err := sys.updateStatus(func(st *statusFile) error {
		rec, ok := st.Slots[s.name]
		if !ok || rec.State != StateInstalling {
			return ErrNoInstall
		}
		rec.State = StateFailed
		rec.Error = msg
		st.Slots[s.name] = rec
		return nil
	})
	if err != nil {
		return fmt.Errorf("fail install to slot %s: %w", s.name, err)
	}
	return nil
}

// RollbackIndex returns the highest rollback index of an install that was
// committed (marked good after it booted). A bundle with a lower index
// must not be installed. It is zero before the first such install.
func (sys *System) RollbackIndex() (uint64, error) {
	st, err := sys.loadStatus()
	if err != nil {
		return 0, fmt.Errorf("read rollback index: %w", err)
	}
	return st.RollbackIndex, nil
}

// commitRollback marks the installed records of s's group committed and
// raises the rollback index to theirs.
func (sys *System) commitRollback(s *Slot) error {
	group := sys.group(s.Root())
	st, err := sys.loadStatus()
	if err != nil {
		return err
	}
	pending := false
	for _, g := range group {
		if rec, ok := st.Slots[g.name]; ok && rec.State == StateInstalled && !rec.Committed {
			pending = true
		}
	}
	if !pending {
		return nil
	}
	return sys.updateStatus(func(st *statusFile) error {
		for _, g := range group {
			rec, ok := st.Slots[g.name]
			if !ok || rec.State != StateInstalled {
				continue
			}
			rec.Committed = true
			st.Slots[g.name] = rec
			st.RollbackIndex = max(st.RollbackIndex, rec.RollbackIndex)
		}
		return nil
	})
}
