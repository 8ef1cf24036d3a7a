package server

import (
	"context"
	"sync"
	"time"
)

// seenInterval is how often the check times of devices that reported no
// change are written.
const seenInterval = time.Second

// seenBatch collects when devices checked without reporting a change, so
// that the times of a whole fleet's polls cost one transaction a second
// instead of one each. A crash loses at most the last second of check
// times, which the next poll of each device restores; everything a
// device reports (release, slots) is still written before the answer.
type seenBatch struct {
	mu       sync.Mutex // guards the fields below
	pending  map[string]time.Time
	last     time.Time // when the last flush started
	flushing bool
}

func newSeenBatch() *seenBatch {
	return &seenBatch{pending: map[string]time.Time{}}
}

// add notes that device id checked at, and returns the batch to write
// when one is due and no other write is in progress; nil otherwise.
func (b *seenBatch) add(id string, at time.Time) map[string]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pending[id] = at
	if b.flushing || at.Sub(b.last) < seenInterval {
		return nil
	}
	batch := b.pending
	b.pending = make(map[string]time.Time, len(batch))
	b.last, b.flushing = at, true
	return batch
}

// done ends the write that add started.
func (b *seenBatch) done() {
	b.mu.Lock()
	b.flushing = false
	b.mu.Unlock()
}

// flushSeen writes a batch of check times, apart from any request, and
// logs a failure: the times come back with the devices' next polls.
func (a *deviceAPI) flushSeen(batch map[string]time.Time) {
	defer a.seen.done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.cfg.Store.TouchDevices(ctx, batch); err != nil {
		a.log.Warn("record check times", "devices", len(batch), "err", err)
	}
}
