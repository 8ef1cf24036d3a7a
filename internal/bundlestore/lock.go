package bundlestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// lockPollInterval is how often a writer waiting for the lock held by
// another process tries again.
const lockPollInterval = 20 * time.Millisecond

// dirLock serialises the writers of a layout directory: the goroutines of
// this process through a channel, and processes, such as server replicas
// sharing the directory, through flock(2) on a lock file in it.
type dirLock struct {
	path string
	sem  chan struct{}
}

func newDirLock(path string) *dirLock {
	return &dirLock{path: path, sem: make(chan struct{}, 1)}
}

// lock waits for the lock until ctx is done and returns its release.
func (l *dirLock) lock(ctx context.Context) (unlock func(), err error) {
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("lock %s: %w", l.path, ctx.Err())
	}
	f, err := l.flock(ctx)
	if err != nil {
		<-l.sem
		return nil, err
	}
	return func() {
		// Closing the only descriptor of the file drops the flock.
		f.Close()
		<-l.sem
	}, nil
}

func (l *dirLock) flock(ctx context.Context) (*os.File, error) {
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", l.path, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", l.path, err)
		}
		select {
		case <-time.After(lockPollInterval):
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", l.path, ctx.Err())
		}
	}
}
