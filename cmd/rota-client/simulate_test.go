package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// simulateDeadline bounds the simulated fleet's update. The devices poll
// at least every poll.MinPollInterval, so a device that misses the
// offer on its first check catches it a few seconds later.
const simulateDeadline = 60 * time.Second

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRun_Simulate runs a simulated fleet against a polltest server that
// offers an update, and waits until every device has reported success.
func TestRun_Simulate(t *testing.T) {
	const (
		dep     = "dep-fleet"
		devices = 5
	)
	srv := polltest.NewServer(t)
	srv.SetEnrollmentToken("enroll")
	srv.SetPollInterval(int(poll.MinPollInterval / time.Second))
	s, keyring := newSigner(t)
	publish(t, srv, s, "rota-sim", dep)
	dir := t.TempDir()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, log lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"simulate", "--server", srv.URL, "--dir", dir,
			"--devices", strconv.Itoa(devices), "--keyring", keyring,
			"--enrollment-token", "enroll", "--log-level", "warn"}, &out, &log)
	}()

	successes := func() int { return count(reportStates(srv, dep), poll.ReportSuccess) }
	deadline := time.After(simulateDeadline)
wait:
	for successes() < devices {
		select {
		case err := <-done:
			t.Fatalf("simulate ended early: %v\n%s", err, log.String())
		case <-deadline:
			break wait
		case <-time.After(100 * time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "simulate ends cleanly when cancelled")
	case <-time.After(10 * time.Second):
		t.Fatal("simulate did not stop after its context was cancelled")
	}
	require.Equal(t, devices, successes(), "every device reported success; log:\n%s",
		log.String())

	for i := range devices {
		dev := &clientDevice{dir: filepath.Join(dir, fmt.Sprintf("sim-%05d", i))}
		j := dev.journal(t)
		require.NotNil(t, j.Last, "device %d", i)
		assert.Equal(t, "success", j.Last.State, "device %d: %s", i, j.Last.Message)
		assert.Equal(t, "B", dev.boot(t), "device %d runs the committed slot", i)
	}
}

func count[T comparable](s []T, v T) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}
