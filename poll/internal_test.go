package poll

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		value  string
		want   time.Duration
		wantOK bool
	}{
		{name: "seconds", value: "120", want: 2 * time.Minute, wantOK: true},
		{name: "zero seconds", value: "0", want: 0, wantOK: true},
		{name: "negative seconds are ignored", value: "-5"},
		{name: "empty is ignored", value: ""},
		{name: "garbage is ignored", value: "soon"},
		{name: "a future date", value: now.Add(90 * time.Second).Format(http.TimeFormat),
			want: 90 * time.Second, wantOK: true},
		{name: "a past date means now", value: now.Add(-time.Hour).Format(http.TimeFormat),
			want: 0, wantOK: true},
		{name: "an RFC 850 date", value: "Friday, 02-Jan-26 03:05:05 GMT",
			want: time.Minute, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseRetryAfter(tt.value, now)
			assert.Equal(t, tt.wantOK, ok)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name    string
		attempt int
		ceiling time.Duration
	}{
		{name: "the first retry waits up to the minimum", attempt: 0, ceiling: time.Second},
		{name: "the ceiling doubles per attempt", attempt: 3, ceiling: 8 * time.Second},
		{name: "the ceiling stops at the maximum", attempt: 10, ceiling: 30 * time.Second},
		{name: "huge attempts do not overflow", attempt: 200, ceiling: 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var most time.Duration
			for range 2000 {
				d := backoff(time.Second, 30*time.Second, tt.attempt, nil)
				require.GreaterOrEqual(t, d, time.Duration(0))
				require.LessOrEqual(t, d, tt.ceiling)
				most = max(most, d)
			}
			assert.Greater(t, most, tt.ceiling/2, "waits spread over the whole range")
		})
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		value              string
		first, last, total int64
		wantErr            bool
	}{
		{value: "bytes 0-99/100", first: 0, last: 99, total: 100},
		{value: "bytes 10-19/*", first: 10, last: 19, total: -1},
		{value: "bytes 10-100/100", wantErr: true},
		{value: "bytes 20-10/100", wantErr: true},
		{value: "bytes */100", wantErr: true},
		{value: "items 0-1/2", wantErr: true},
		{value: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			first, last, total, err := parseContentRange(tt.value)
			if tt.wantErr {
				require.ErrorIs(t, err, ErrBadRange)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, []int64{tt.first, tt.last, tt.total}, []int64{first, last, total})
		})
	}
}

func TestCutUTF8(t *testing.T) {
	tests := []struct {
		name string
		in   string
		n    int
		want string
	}{
		{name: "short strings stay", in: "abc", n: 5, want: "abc"},
		{name: "long strings are cut", in: "abcdef", n: 3, want: "abc"},
		{name: "a character is never split", in: "aé", n: 2, want: "a"},
		{name: "invalid bytes are replaced", in: "a\xffb", n: 10, want: "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := cutUTF8(tt.in, tt.n)
			assert.Equal(t, tt.want, got)
			assert.True(t, utf8.ValidString(got))
		})
	}
}

// trickle yields one byte per read, each after a delay.
type trickle struct {
	delay time.Duration
	left  int
	ctx   context.Context
}

func (r *trickle) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	select {
	case <-r.ctx.Done():
		return 0, r.ctx.Err()
	case <-time.After(r.delay):
	}
	r.left--
	p[0] = 'x'
	return 1, nil
}

func (r *trickle) Close() error { return nil }

func TestWatchdog(t *testing.T) {
	tests := []struct {
		name      string
		delay     time.Duration
		bytes     int
		pause     time.Duration // caller's time between reads
		wantStall bool
	}{
		{name: "a fast body passes", delay: 0, bytes: 1000},
		{name: "a trickle below the minimum stalls", delay: 10 * time.Millisecond,
			bytes: 100, wantStall: true},
		{name: "a blocked read stalls", delay: 10 * time.Second, bytes: 1, wantStall: true},
		{name: "a slow consumer is not taken for a stall", delay: 0, bytes: 10,
			pause: 30 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			body := &trickle{delay: tt.delay, left: tt.bytes, ctx: ctx}
			// 1000 bytes per second over 50 ms: 50 bytes per window.
			w := watch(body, cancel, 1000, 50*time.Millisecond)
			defer w.Close()

			var err error
			buf := make([]byte, 1)
			for err == nil {
				_, err = w.Read(buf)
				time.Sleep(tt.pause)
			}

			if tt.wantStall {
				assert.ErrorIs(t, err, ErrStalled)
			} else {
				assert.True(t, errors.Is(err, io.EOF), "got %v", err)
			}
		})
	}
}

func TestError_Temporary(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want bool
	}{
		{name: "a network failure", err: &Error{Err: io.ErrUnexpectedEOF}, want: true},
		{name: "a 503", err: &Error{StatusCode: 503, Err: errors.New("x")}, want: true},
		{name: "a 404", err: &Error{StatusCode: 404, Err: errors.New("x")}},
		{name: "cancellation", err: &Error{Err: context.Canceled}},
		{name: "pending admission", err: &Error{StatusCode: 202, Err: ErrPending}, want: true},
		{name: "rejection", err: &Error{StatusCode: 403, Err: ErrRejected}},
		{name: "an oversized answer", err: &Error{StatusCode: 200, Err: ErrTooLarge}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.err.Temporary())
			assert.False(t, strings.HasSuffix(tt.err.Error(), " "))
		})
	}
}
