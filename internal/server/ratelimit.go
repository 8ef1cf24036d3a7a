package server

import (
	"math"
	"sync"
	"time"
)

// limiter is a token bucket per key: each key may spend burst requests at
// once and regains rate of them per second.
type limiter struct {
	rate  float64
	burst float64

	mu      sync.Mutex // guards the fields below
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// allow spends one request of key at now. When none is left it returns
// false and how long until one is.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)

	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, l.wait(b)
}

// ready reports whether key has a request left at now, without spending
// it; when none is left it also returns how long until one is. A key
// that spent nothing yet has its whole burst and is not remembered, so
// that asking costs no memory.
func (l *limiter) ready(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return true, 0
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		return true, 0
	}
	return false, l.wait(b)
}

// refund gives back a request that key spent, as when the attempt it
// was spent on turned out to be one that is not to be limited.
func (l *limiter) refund(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.buckets[key]; ok {
		b.tokens = min(l.burst, b.tokens+1)
	}
}

// refill adds to b the requests regained since it was last used.
func (l *limiter) refill(b *bucket, now time.Time) {
	elapsed := max(now.Sub(b.at).Seconds(), 0)
	b.tokens = min(l.burst, b.tokens+elapsed*l.rate)
	b.at = now
}

// wait returns how long until b holds one request.
func (l *limiter) wait(b *bucket) time.Duration {
	secs := (1 - b.tokens) / l.rate
	return time.Duration(math.Ceil(secs * float64(time.Second)))
}

// sweep forgets, at most once per sweepInterval, the buckets that have
// refilled: they behave exactly like new ones.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.swept) < sweepInterval {
		return
	}
	l.swept = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.at) > full {
			delete(l.buckets, k)
		}
	}
}
