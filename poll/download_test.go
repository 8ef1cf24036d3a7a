package poll_test

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
)

const bundlePath = "/bundles/1.1.0.rota"

// bundleData returns n reproducible pseudo-random bytes.
func bundleData(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(r.UintN(256))
	}
	return data
}

func TestClient_Download(t *testing.T) {
	data := bundleData(256 << 10)
	size := int64(len(data))
	cut := func(after int64) polltest.Fault { return polltest.Fault{Cut: true, After: after} }
	unavailable := polltest.Fault{Status: http.StatusServiceUnavailable, RetryAfter: "0"}

	tests := []struct {
		name     string
		offset   int64
		faults   []polltest.Fault
		watchdog bool
		wantHits int
	}{
		{name: "a whole file in one request", wantHits: 1},
		{name: "resumes after a reset at the first byte",
			faults: []polltest.Fault{cut(0)}, wantHits: 2},
		{name: "resumes after a reset in the middle",
			faults: []polltest.Fault{cut(100_000)}, wantHits: 2},
		{name: "resumes after a reset before the last byte",
			faults: []polltest.Fault{cut(size - 1)}, wantHits: 2},
		{name: "resumes after several resets in a row",
			faults:   []polltest.Fault{cut(1000), cut(1000), cut(5000), cut(40_000)},
			wantHits: 5},
		{name: "resumes after a stall caught by the watchdog",
			faults:   []polltest.Fault{{Stall: 10 * time.Second, After: 50_000}},
			watchdog: true, wantHits: 2},
		{name: "rides out a burst of 503 before the first byte",
			faults:   []polltest.Fault{unavailable, unavailable, unavailable},
			wantHits: 4},
		{name: "rides out a burst of 503 while resuming",
			faults:   []polltest.Fault{cut(70_000), unavailable, unavailable},
			wantHits: 4},
		{name: "starts at an offset, as after an agent restart",
			offset: 123_456, wantHits: 1},
		{name: "starts at an offset and resumes after a reset",
			offset: 10, faults: []polltest.Fault{cut(20_000)}, wantHits: 2},
		{name: "starts at the end of a complete file",
			offset: size, wantHits: 1},
		{name: "skips the prefix when the server ignores the range",
			offset: 2000, faults: []polltest.Fault{{IgnoreRange: true}}, wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			srv.AddFile(bundlePath, data, true)
			srv.Fault(bundlePath, tt.faults...)
			c, _ := admittedClient(t, srv, func(c *poll.Config) {
				if tt.watchdog {
					c.MinThroughput = 64 << 10
					c.ThroughputWindow = 100 * time.Millisecond
				}
			})

			d, err := c.Download(t.Context(), bundlePath, tt.offset)
			require.NoError(t, err)
			defer d.Close()
			got, err := io.ReadAll(d)

			require.NoError(t, err)
			assert.Equal(t, len(data[tt.offset:]), len(got))
			assert.True(t, string(data[tt.offset:]) == string(got), "content matches")
			assert.Equal(t, size, d.Offset())
			assert.Equal(t, size, d.Size())
			assert.Equal(t, tt.wantHits, srv.Hits(bundlePath))
		})
	}
}

func TestClient_Download_failures(t *testing.T) {
	data := bundleData(64 << 10)
	size := int64(len(data))
	cut := polltest.Fault{Cut: true, After: 100}

	tests := []struct {
		name      string
		path      string
		offset    int64
		faults    []polltest.Fault
		change    bool // replace the file after the first bytes
		cancel    bool // cancel the context after the first bytes
		wantErr   error
		wantTempo bool
		wantAt    int64 // offset when the error came
	}{
		{name: "a wrong Content-Range on the first request",
			offset: 10, faults: []polltest.Fault{{RangeShift: 7}},
			wantErr: poll.ErrBadRange},
		{name: "a wrong Content-Range on a resume",
			faults: []polltest.Fault{cut, {RangeShift: -50}}, wantErr: poll.ErrBadRange,
			wantAt: 100},
		{name: "an offset past the end gives ErrRangeNotSatisfiable",
			offset: size + 1, wantErr: poll.ErrRangeNotSatisfiable},
		{name: "a file that changed while resuming gives ErrChanged",
			faults: []polltest.Fault{{Cut: true, After: 1000}}, change: true,
			wantErr: poll.ErrChanged, wantAt: 1000},
		{name: "too many resets without progress give a temporary error",
			faults:    []polltest.Fault{cut, {Cut: true}, {Cut: true}, {Cut: true}, {Cut: true}},
			wantTempo: true, wantAt: 100},
		{name: "a missing file is not retried",
			path: "/bundles/missing.rota"},
		{name: "cancellation ends the download",
			faults: []polltest.Fault{{Stall: 10 * time.Second, After: 100}}, cancel: true,
			wantErr: context.Canceled, wantAt: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			srv.AddFile(bundlePath, data, false)
			srv.Fault(bundlePath, tt.faults...)
			c, _ := admittedClient(t, srv, func(c *poll.Config) { c.RetryMax = 2 })
			path := bundlePath
			if tt.path != "" {
				path = tt.path
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()

			d, err := c.Download(ctx, path, tt.offset)
			if err == nil {
				defer d.Close()
				buf := make([]byte, 10)
				_, err = io.ReadFull(d, buf)
				require.NoError(t, err)
				if tt.change {
					srv.AddFile(bundlePath, bundleData(len(data) + 1)[1:], false)
				}
				if tt.cancel {
					time.AfterFunc(20*time.Millisecond, cancel)
				}
				_, err = io.Copy(io.Discard, d)
				assert.Equal(t, tt.wantAt, d.Offset())
			}

			e := requireErr(t, err, tt.wantErr)
			assert.Equal(t, tt.wantTempo, e.Temporary(), "temporary: %v", err)
		})
	}
}

func TestClient_Download_tokenOnlyToOwnOrigin(t *testing.T) {
	data := bundleData(1000)
	var sawToken atomic.Bool
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			sawToken.Store(true)
		}
		http.ServeContent(w, r, "", time.Time{}, bytesReader(data))
	}))
	t.Cleanup(cdn.Close)
	srv := polltest.NewServer(t)
	srv.AddFile(bundlePath, data, true)

	tests := []struct {
		name      string
		ref       string
		wantToken bool
	}{
		{name: "a relative URL is on the server and gets the token", ref: bundlePath},
		{name: "an absolute URL on the server gets the token", ref: srv.URL + bundlePath},
		{name: "a URL on another origin gets no token", ref: cdn.URL + "/x.rota"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sawToken.Store(false)
			c, _ := admittedClient(t, srv)

			d, err := c.Download(t.Context(), tt.ref, 0)
			require.NoError(t, err)
			got, err := io.ReadAll(d)
			require.NoError(t, err)
			require.NoError(t, d.Close())

			assert.Equal(t, data, got)
			assert.False(t, sawToken.Load(), "the CDN never sees a token")
		})
	}
}

func TestClient_Download_overTLS(t *testing.T) {
	data := bundleData(128 << 10)
	srv := polltest.NewTLSServer(t)
	srv.AddFile(bundlePath, data, true)
	srv.Fault(bundlePath, polltest.Fault{Cut: true, After: 30_000})
	c, _ := admittedClient(t, srv)

	d, err := c.Download(t.Context(), bundlePath, 0)
	require.NoError(t, err)
	got, err := io.ReadAll(d)

	require.NoError(t, err)
	assert.True(t, string(data) == string(got), "content matches")
	assert.Equal(t, 2, srv.Hits(bundlePath))
}
