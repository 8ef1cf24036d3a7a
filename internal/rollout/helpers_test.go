package rollout

import (
	"context"
	"fmt"
	"github.com/rotaupdate/rota/internal/testutil"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// testPEM is a placeholder public key; the store does not parse it.
const testPEM = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"

// testStart is a Monday, 21:00 in New York.
var testStart = time.Date(2026, 1, 6, 2, 0, 0, 0, time.UTC)

// env is a store with one deployment and the scheduler under test.
type env struct {
	t       *testing.T
	ctx     context.Context
	clock   *testutil.Clock
	store   *store.SQLite
	sched   *Scheduler
	dep     store.Deployment
	reports int
}

// newEnv creates n devices and a deployment of them with strategy s.
func newEnv(t *testing.T, s store.Strategy, n int) *env {
	t.Helper()
	ctx := context.Background()
	clock := testutil.NewClock(testStart)
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "rota.db"),
		store.WithClock(clock.Now))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })

	rel, err := st.CreateRelease(ctx, store.Release{Version: "1.2.0",
		Compatible: "acme-board", Digest: "sha256:1", Location: "oci-layout://bundles"})
	require.NoError(t, err)
	dep, err := st.CreateDeployment(ctx, store.Deployment{ReleaseID: rel.ID,
		Target: store.Target{Group: "fleet"}, Strategy: s})
	require.NoError(t, err)

	ids := make([]string, n)
	for i := range ids {
		d, err := st.CreateDevice(ctx, store.Device{
			ID:           fmt.Sprintf("dev-%03d", i),
			KeyID:        fmt.Sprintf("key-%03d", i),
			PublicKeyPEM: testPEM,
			Status:       store.StatusAccepted,
		})
		require.NoError(t, err)
		ids[i] = d.ID
	}
	require.NoError(t, AddDevices(ctx, st, dep, ids))

	sched := &Scheduler{Store: st, Now: clock.Now}
	return &env{t: t, ctx: ctx, clock: clock, store: st, sched: sched, dep: dep}
}

// tick runs one scheduler tick and requires it to succeed.
func (e *env) tick() {
	e.t.Helper()
	require.NoError(e.t, e.sched.Tick(e.ctx))
}

// devices returns the deployment's devices, ordered by device ID.
func (e *env) devices() []store.DeviceDeployment {
	e.t.Helper()
	list, _, err := e.store.ListDeviceDeployments(e.ctx,
		store.DeviceDeploymentFilter{DeploymentID: e.dep.ID}, store.Page{})
	require.NoError(e.t, err)
	return list
}

// offered counts, per phase, the devices offered the update at least once.
func (e *env) offered() []int {
	e.t.Helper()
	got := make([]int, phaseCount(e.dep.Strategy))
	for _, dd := range e.devices() {
		if dd.Attempts > 0 {
			got[dd.Phase]++
		}
	}
	return got
}

// finish has n started, unfinished devices of a phase report state.
func (e *env) finish(phase, n int, state poll.ReportState) {
	e.t.Helper()
	for _, dd := range e.devices() {
		if n == 0 {
			return
		}
		if dd.Phase != phase || dd.Started.IsZero() || dd.State.Final() {
			continue
		}
		e.reports++
		_, err := e.store.RecordReport(e.ctx, e.dep.ID, dd.DeviceID,
			poll.Report{ID: fmt.Sprintf("r%d", e.reports), State: state})
		require.NoError(e.t, err)
		n--
	}
	require.Zero(e.t, n, "too few started devices in phase %d", phase)
}

// status returns the deployment's status.
func (e *env) status() store.DeploymentStatus {
	e.t.Helper()
	d, err := e.store.Deployment(e.ctx, e.dep.ID)
	require.NoError(e.t, err)
	return d.Status
}

// inProgress returns how many devices are started and not final.
func (e *env) inProgress() int {
	e.t.Helper()
	c, err := e.store.DeploymentCounts(e.ctx, e.dep.ID)
	require.NoError(e.t, err)
	return c.InProgress
}

// offers sums how many times the update was offered to any device.
func (e *env) offers() int {
	e.t.Helper()
	n := 0
	for _, dd := range e.devices() {
		n += dd.Attempts
	}
	return n
}
