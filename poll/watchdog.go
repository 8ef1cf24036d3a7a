package poll

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// watchdog aborts a download body that delivers fewer than need bytes in
// a window of time spent waiting in Read. Time the caller spends between
// reads does not count, so a slow consumer is never taken for a stall.
type watchdog struct {
	body   io.ReadCloser
	abort  context.CancelFunc
	window time.Duration
	need   int64

	mu      sync.Mutex // guards the fields below
	gen     int        // tells a stale timer from the current one
	reading time.Time  // when the current wait began; zero between reads
	busy    time.Duration
	got     int64
	stalled bool
	timer   *time.Timer
}

// watch returns body guarded by a watchdog for perSecond bytes per second
// averaged over window; abort must make a blocked Read return.
func watch(body io.ReadCloser, abort context.CancelFunc, perSecond int64,
	window time.Duration) *watchdog {
	need := max(int64(float64(perSecond)*window.Seconds()), 1)
	return &watchdog{body: body, abort: abort, window: window, need: need}
}

func (w *watchdog) Read(p []byte) (int, error) {
	w.begin()
	n, err := w.body.Read(p)
	if w.end(n) {
		return n, fmt.Errorf("%w: under %d bytes in %v", ErrStalled, w.need, w.window)
	}
	return n, err
}

func (w *watchdog) Close() error {
	w.mu.Lock()
	w.gen++
	if w.timer != nil {
		w.timer.Stop()
	}
	w.mu.Unlock()
	return w.body.Close()
}

func (w *watchdog) begin() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gen++
	w.reading = time.Now()
	w.arm(w.window - w.busy)
}

func (w *watchdog) arm(d time.Duration) {
	gen := w.gen
	w.timer = time.AfterFunc(d, func() { w.expire(gen) })
}

// expire runs when a window fills up while a Read is blocked.
func (w *watchdog) expire(gen int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen != w.gen || w.reading.IsZero() {
		return
	}
	if w.got < w.need {
		w.stalled = true
		w.abort()
		return
	}
	w.busy, w.got = 0, 0
	w.reading = time.Now()
	w.arm(w.window)
}

// end accounts for a finished Read and reports whether the body stalled.
func (w *watchdog) end(n int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer.Stop()
	w.busy += time.Since(w.reading)
	w.reading = time.Time{}
	w.got += int64(n)
	if w.stalled {
		return true
	}
	if w.busy >= w.window {
		if w.got < w.need {
			w.stalled = true
			w.abort()
			return true
		}
		w.busy, w.got = 0, 0
	}
	return false
}
