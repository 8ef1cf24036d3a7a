package poll_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
)

func TestClient_retries(t *testing.T) {
	checkPath := poll.APIPath + "/check"
	status := func(code int, n int, retryAfter string) []polltest.Fault {
		f := make([]polltest.Fault, n)
		for i := range f {
			f[i] = polltest.Fault{Status: code, RetryAfter: retryAfter}
		}
		return f
	}
	tests := []struct {
		name       string
		faults     []polltest.Fault
		retryMax   int
		wantErr    bool
		wantStatus int
		wantTempo  bool
		wantRetry  time.Duration
		wantHits   int
	}{
		{name: "a burst of 503 with Retry-After 0 is ridden out",
			faults: status(http.StatusServiceUnavailable, 3, "0"), wantHits: 4},
		{name: "a 429 is retried",
			faults: status(http.StatusTooManyRequests, 1, ""), wantHits: 2},
		{name: "a 408 is retried",
			faults: status(http.StatusRequestTimeout, 1, ""), wantHits: 2},
		{name: "a 502 is retried",
			faults: status(http.StatusBadGateway, 2, ""), wantHits: 3},
		{name: "a 404 is not retried",
			faults: status(http.StatusNotFound, 1, ""), wantHits: 1,
			wantErr: true, wantStatus: http.StatusNotFound},
		{name: "a 400 is not retried",
			faults: status(http.StatusBadRequest, 1, ""), wantHits: 1,
			wantErr: true, wantStatus: http.StatusBadRequest},
		{name: "a 501 is not retried",
			faults: status(http.StatusNotImplemented, 1, ""), wantHits: 1,
			wantErr: true, wantStatus: http.StatusNotImplemented},
		{name: "500s beyond RetryMax give a temporary error",
			faults: status(http.StatusInternalServerError, 5, ""), retryMax: 2,
			wantHits: 3, wantErr: true, wantStatus: http.StatusInternalServerError,
			wantTempo: true},
		{name: "a negative RetryMax turns retries off",
			faults: status(http.StatusServiceUnavailable, 1, "0"), retryMax: -1,
			wantHits: 1, wantErr: true, wantStatus: http.StatusServiceUnavailable,
			wantTempo: true},
		{name: "a Retry-After beyond MaxRetryAfter is handed to the caller",
			faults: status(http.StatusServiceUnavailable, 1, "120"), wantHits: 1,
			wantErr: true, wantStatus: http.StatusServiceUnavailable, wantTempo: true,
			wantRetry: 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			c, _ := admittedClient(t, srv, func(c *poll.Config) {
				c.RetryMax = tt.retryMax
				c.MaxRetryAfter = time.Second
			})
			_, err := c.Authenticate(t.Context())
			require.NoError(t, err)
			srv.Fault(checkPath, tt.faults...)

			_, err = c.Check(t.Context(), checkRequest)

			assert.Equal(t, tt.wantHits, srv.Hits(checkPath))
			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			e := requireErr(t, err, nil)
			assert.Equal(t, tt.wantStatus, e.StatusCode)
			assert.Equal(t, tt.wantTempo, e.Temporary())
			assert.Equal(t, tt.wantRetry, e.RetryAfter)
			require.NotNil(t, e.Problem, "problem document decoded")
			assert.Equal(t, "injected fault", e.Problem.Detail)
		})
	}
}

func TestClient_honoursRetryAfter(t *testing.T) {
	checkPath := poll.APIPath + "/check"
	tests := []struct {
		name       string
		retryAfter func() string
		atLeast    time.Duration
	}{
		{name: "in seconds",
			retryAfter: func() string { return "1" }, atLeast: time.Second},
		{name: "as an HTTP date",
			retryAfter: func() string {
				return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
			},
			// The date has whole seconds, so the wait is 1 to 2 s.
			atLeast: 900 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := polltest.NewServer(t)
			c, _ := admittedClient(t, srv)
			_, err := c.Authenticate(t.Context())
			require.NoError(t, err)
			srv.Fault(checkPath, polltest.Fault{Status: http.StatusTooManyRequests,
				RetryAfter: tt.retryAfter()})

			start := time.Now()
			_, err = c.Check(t.Context(), checkRequest)

			require.NoError(t, err)
			assert.GreaterOrEqual(t, time.Since(start), tt.atLeast)
			assert.Equal(t, 2, srv.Hits(checkPath))
		})
	}
}

func TestClient_cancellation(t *testing.T) {
	srv := polltest.NewServer(t)
	c, _ := admittedClient(t, srv)
	_, err := c.Authenticate(t.Context())
	require.NoError(t, err)
	srv.Fault(poll.APIPath+"/check", polltest.Fault{Status: http.StatusServiceUnavailable,
		RetryAfter: "30"})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)

	start := time.Now()
	_, err = c.Check(ctx, checkRequest)

	e := requireErr(t, err, context.Canceled)
	assert.False(t, e.Temporary())
	assert.Less(t, time.Since(start), 5*time.Second)
}
