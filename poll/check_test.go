package poll_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
)

var sampleUpdate = &poll.Update{
	DeploymentID: "dep-1",
	Version:      "1.1.0",
	BundleURL:    "/bundles/1.1.0.rota",
	Digest:       "sha256:" + strings.Repeat("ab", 32),
	Size:         4096,
}

func TestClient_Check(t *testing.T) {
	tests := []struct {
		name            string
		before          func(*polltest.Server) // before the first check
		between         func(*polltest.Server) // between first and second
		wantUpdate      *poll.Update
		wantNotModified bool
		wantInterval    time.Duration
	}{
		{name: "no update, then the same answer is not modified",
			wantNotModified: true},
		{name: "a pending update is returned, then not modified",
			before:     func(s *polltest.Server) { s.SetUpdate(sampleUpdate) },
			wantUpdate: sampleUpdate, wantNotModified: true},
		{name: "a new update after the first check changes the answer",
			between:    func(s *polltest.Server) { s.SetUpdate(sampleUpdate) },
			wantUpdate: sampleUpdate},
		{name: "the server's poll interval comes through",
			before:          func(s *polltest.Server) { s.SetPollInterval(90) },
			wantNotModified: true, wantInterval: 90 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			c, _ := admittedClient(t, srv)
			if tt.before != nil {
				tt.before(srv)
			}
			first, err := c.Check(t.Context(), checkRequest)
			require.NoError(t, err)
			require.False(t, first.NotModified)
			if tt.between != nil {
				tt.between(srv)
			}

			second, err := c.Check(t.Context(), checkRequest)

			require.NoError(t, err)
			assert.Equal(t, tt.wantNotModified, second.NotModified)
			assert.Equal(t, tt.wantUpdate, second.Update)
			assert.Equal(t, tt.wantInterval, second.Interval())
			assert.Equal(t, []poll.CheckRequest{checkRequest, checkRequest}, srv.Checks())
		})
	}
}

func TestClient_Check_cacheIsACopy(t *testing.T) {
	srv := polltest.NewServer(t)
	srv.SetUpdate(sampleUpdate)
	c, _ := admittedClient(t, srv)
	first, err := c.Check(t.Context(), checkRequest)
	require.NoError(t, err)
	first.Update.Version = "changed by caller"

	second, err := c.Check(t.Context(), checkRequest)

	require.NoError(t, err)
	require.True(t, second.NotModified)
	assert.Equal(t, sampleUpdate.Version, second.Update.Version)
}

func TestClient_Check_refusals(t *testing.T) {
	checkPath := poll.APIPath + "/check"
	bad := *sampleUpdate
	bad.Digest = "md5:abc"
	tests := []struct {
		name      string
		req       poll.CheckRequest
		prepare   func(*polltest.Server)
		maxSize   int64
		wantErr   error
		wantHits  int
		wantTempo bool
	}{
		{name: "an invalid request is refused before sending",
			req: poll.CheckRequest{}, wantErr: poll.ErrInvalid},
		{name: "an update with a malformed digest is refused",
			req:      checkRequest,
			prepare:  func(s *polltest.Server) { s.SetUpdate(&bad) },
			wantErr:  poll.ErrInvalid,
			wantHits: 1},
		{name: "an oversized answer gives ErrTooLarge without reading it all",
			req: checkRequest,
			prepare: func(s *polltest.Server) {
				s.Fault(checkPath, polltest.Fault{Oversize: 64 << 20})
			},
			maxSize: 1 << 20, wantErr: poll.ErrTooLarge, wantHits: 1},
		{name: "an answer just over a small limit gives ErrTooLarge",
			req: checkRequest,
			prepare: func(s *polltest.Server) {
				s.Fault(checkPath, polltest.Fault{Oversize: 101})
			},
			maxSize: 100, wantErr: poll.ErrTooLarge, wantHits: 1},
		{name: "a 403 means the device was rejected",
			req: checkRequest,
			prepare: func(s *polltest.Server) {
				s.Fault(checkPath, polltest.Fault{Status: http.StatusForbidden})
			},
			wantErr: poll.ErrRejected, wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			c, _ := admittedClient(t, srv, func(c *poll.Config) {
				c.MaxResponseSize = tt.maxSize
			})
			if tt.prepare != nil {
				tt.prepare(srv)
			}

			_, err := c.Check(t.Context(), tt.req)

			e := requireErr(t, err, tt.wantErr)
			assert.Equal(t, tt.wantTempo, e.Temporary())
			assert.Equal(t, tt.wantHits, srv.Hits(checkPath))
		})
	}
}

func TestNextPoll(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		min, max time.Duration
	}{
		{name: "no interval means the default with jitter",
			interval: 0,
			min:      time.Duration(float64(poll.DefaultPollInterval) * (1 - poll.DefaultJitter)),
			max:      time.Duration(float64(poll.DefaultPollInterval) * (1 + poll.DefaultJitter))},
		{name: "an hour varies by a fifth either way",
			interval: time.Hour, min: 48 * time.Minute, max: 72 * time.Minute},
		{name: "a tiny interval is raised to the minimum",
			interval: time.Second, min: poll.MinPollInterval,
			max: time.Duration(float64(poll.MinPollInterval) * (1 + poll.DefaultJitter))},
		{name: "a huge interval is capped at the maximum",
			interval: 30 * 24 * time.Hour,
			min:      time.Duration(float64(poll.MaxPollInterval) * (1 - poll.DefaultJitter)),
			max:      poll.MaxPollInterval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 1000 {
				d := poll.NextPoll(tt.interval)
				require.GreaterOrEqual(t, d, tt.min)
				require.LessOrEqual(t, d, tt.max)
				seen[d] = true
			}
			assert.Greater(t, len(seen), 900, "intervals vary")
		})
	}
}

func TestJitter(t *testing.T) {
	tests := []struct {
		name     string
		fraction float64
		min, max time.Duration
	}{
		{name: "no fraction leaves the duration", fraction: 0, min: time.Minute, max: time.Minute},
		{name: "a half varies by half", fraction: 0.5, min: 30 * time.Second, max: 90 * time.Second},
		{name: "a fraction over one counts as one", fraction: 3, min: 0, max: 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 1000 {
				d := poll.Jitter(time.Minute, tt.fraction)
				require.GreaterOrEqual(t, d, tt.min)
				require.LessOrEqual(t, d, tt.max)
			}
		})
	}
}

func TestUpdate_UntilWindow(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return now.Add(time.Duration(h) * time.Hour) }
	tests := []struct {
		name     string
		windows  []poll.Window
		wantWait time.Duration
		wantOK   bool
	}{
		{name: "no windows means now", wantOK: true},
		{name: "an open window means now",
			windows: []poll.Window{{Start: at(-1), End: at(1)}}, wantOK: true},
		{name: "the nearest future window counts",
			windows:  []poll.Window{{Start: at(5), End: at(6)}, {Start: at(2), End: at(3)}},
			wantWait: 2 * time.Hour, wantOK: true},
		{name: "a window that just closed does not count",
			windows: []poll.Window{{Start: at(-1), End: at(0)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := poll.Update{MaintenanceWindows: tt.windows}
			wait, ok := u.UntilWindow(now)
			assert.Equal(t, tt.wantWait, wait)
			assert.Equal(t, tt.wantOK, ok)
		})
	}
}
