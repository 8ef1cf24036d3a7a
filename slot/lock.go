package slot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// LockFileName is the install lock file in the data directory.
const LockFileName = "lock"

// ErrLocked is returned by Lock when another process, or another Lock in
// this one, holds the install lock: another install is running.
var ErrLocked = errors.New("slot: another install is running")

// InstallLock is the exclusive right to change slots, held from
// System.Lock until Close. The kernel releases it when the holding
// process exits, however it ends.
type InstallLock struct {
	f *os.File
}

// Lock takes the install lock, an exclusive flock on the file
// LockFileName in the data directory, without waiting. When it is held
// elsewhere the error wraps ErrLocked and names the holder's process id
// if it is known. The data directory is created if missing.
func (sys *System) Lock() (*InstallLock, error) {
	dir := sys.cfg.DataDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("take install lock: %w", err)
	}
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("take install lock: %w", err)
	}

	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		holder := lockHolder(f)
		f.Close()
		return nil, fmt.Errorf("take install lock %s: %w%s", path, ErrLocked, holder)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("take install lock %s: %w", path, err)
	}

	// The process id is only a hint for the message above; the lock is
	// the flock, so failing to record it is no reason to give up.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &InstallLock{f: f}, nil
}

// lockHolder returns " (pid N)" from the lock file, or "".
func lockHolder(f *os.File) string {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(string(bytes.TrimSpace(buf[:n])))
	if err != nil || pid <= 0 {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", pid)
}

// Close releases the lock. Closing a released lock does nothing.
func (l *InstallLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	// Closing the only descriptor drops the flock.
	if err := f.Close(); err != nil {
		return fmt.Errorf("release install lock: %w", err)
	}
	return nil
}
