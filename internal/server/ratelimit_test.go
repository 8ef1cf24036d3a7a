package server

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestLimiter_Ready(t *testing.T) {
	tests := []struct {
		name     string
		spend    int           // requests spent at the start
		after    time.Duration // since the start, when asked
		wantOK   bool
		wantWait time.Duration
	}{
		{name: "a key that spent nothing is ready", wantOK: true},
		{name: "a key with a request left is ready", spend: 1, wantOK: true},
		{name: "a key that spent its burst waits", spend: 2, wantWait: 2 * time.Second},
		{name: "a key waits less as time passes", spend: 2, after: 1500 * time.Millisecond,
			wantWait: 500 * time.Millisecond},
		{name: "a key regains a request in time", spend: 2, after: 2 * time.Second,
			wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLimiter(0.5, 2)
			start := time.Now()
			for range tt.spend {
				l.allow("k", start)
			}

			now := start.Add(tt.after)
			for range 3 {
				ok, wait := l.ready("k", now)
				assert.Equal(t, tt.wantOK, ok)
				assert.Equal(t, tt.wantWait, wait)
			}
			ok, _ := l.allow("k", now)
			assert.Equal(t, tt.wantOK, ok, "ready spent nothing")
		})
	}
}

func TestLimiter_ReadyRemembersNoNewKey(t *testing.T) {
	l := newLimiter(1, 1)
	ok, _ := l.ready("unseen", time.Now())
	assert.True(t, ok)
	assert.Empty(t, l.buckets)
}
