package rollout

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

const (
	success    = poll.ReportSuccess
	failure    = poll.ReportFailure
	rolledBack = poll.ReportRolledBack
	installing = poll.ReportInstalling
)

// report has n started devices of a phase report a state.
type report struct {
	phase, n int
	state    poll.ReportState
}

// step moves the clock, has devices report, ticks and checks the result.
type step struct {
	advance time.Duration
	reports []report
	offered []int                  // devices offered the update, per phase
	offers  int                    // offers made in all; zero means unchecked
	status  store.DeploymentStatus // empty means active
}

func TestScheduler_Tick(t *testing.T) {
	tests := []struct {
		name     string
		strategy store.Strategy
		devices  int
		steps    []step
	}{
		{
			name:    "all at once starts every device, and a second tick no one extra",
			devices: 5,
			steps:   []step{{offered: []int{5}}, {offered: []int{5}}},
		},
		{
			name: "phases by percent start in order as each succeeds",
			strategy: store.Strategy{Phases: []store.Phase{
				{Percent: 10}, {Percent: 40}, {},
			}},
			devices: 10,
			steps: []step{
				{offered: []int{1, 0, 0}},
				{offered: []int{1, 0, 0}},
				{reports: []report{{0, 1, success}}, offered: []int{1, 4, 0}},
				{reports: []report{{1, 3, success}}, offered: []int{1, 4, 0}},
				{reports: []report{{1, 1, success}}, offered: []int{1, 4, 5}},
			},
		},
		{
			name: "phases by count start in order, leftover devices in the last",
			strategy: store.Strategy{Phases: []store.Phase{
				{Count: 2}, {Count: 3},
			}},
			devices: 6,
			steps: []step{
				{offered: []int{2, 0}},
				{reports: []report{{0, 1, success}}, offered: []int{2, 0}},
				{reports: []report{{0, 1, success}}, offered: []int{2, 4}},
			},
		},
		{
			name: "a phase waits for its start time",
			strategy: store.Strategy{Phases: []store.Phase{
				{Count: 1, StartAt: testStart.Add(time.Hour)},
				{StartAt: testStart.Add(2 * time.Hour)},
			}},
			devices: 3,
			steps: []step{
				{offered: []int{0, 0}},
				{advance: 59 * time.Minute, offered: []int{0, 0}},
				{advance: time.Minute, offered: []int{1, 0}},
				{advance: 59 * time.Minute, offered: []int{1, 0}},
				{advance: time.Minute, offered: []int{1, 2}},
			},
		},
		{
			name: "the next phase waits for the success threshold and the soak",
			strategy: store.Strategy{Phases: []store.Phase{
				{Count: 4, Soak: 30 * time.Minute}, {AfterSuccessPercent: 50},
			}},
			devices: 8,
			steps: []step{
				{offered: []int{4, 0}},
				{reports: []report{{0, 1, success}}, offered: []int{4, 0}},
				{advance: time.Hour, offered: []int{4, 0}},
				{reports: []report{{0, 1, success}}, offered: []int{4, 0}},
				{advance: 29 * time.Minute, offered: []int{4, 0}},
				{advance: time.Minute, offered: []int{4, 4}},
			},
		},
		{
			name: "failures over a count threshold pause, and later phases never start",
			strategy: store.Strategy{
				Phases:           []store.Phase{{Count: 4}, {}},
				FailureThreshold: store.Threshold{Count: 1},
			},
			devices: 8,
			steps: []step{
				{offered: []int{4, 0}},
				{reports: []report{{0, 1, failure}}, offered: []int{4, 0}},
				{reports: []report{{0, 1, rolledBack}}, offered: []int{4, 0},
					status: store.DeploymentPaused},
				{reports: []report{{0, 2, success}}, offered: []int{4, 0},
					status: store.DeploymentPaused},
			},
		},
		{
			name: "failures over a percent threshold pause the deployment",
			strategy: store.Strategy{
				Phases:           []store.Phase{{Count: 4}, {}},
				FailureThreshold: store.Threshold{Percent: 25},
			},
			devices: 8,
			steps: []step{
				{offered: []int{4, 0}},
				{reports: []report{{0, 1, failure}}, offered: []int{4, 0}},
				{reports: []report{{0, 1, failure}}, offered: []int{4, 0},
					status: store.DeploymentPaused},
			},
		},
		{
			name:     "max concurrent holds as devices finish",
			strategy: store.Strategy{MaxConcurrent: 2},
			devices:  5,
			steps: []step{
				{offered: []int{2}},
				{reports: []report{{0, 2, installing}}, offered: []int{2}},
				{reports: []report{{0, 1, success}}, offered: []int{3}},
				{reports: []report{{0, 2, failure}}, offered: []int{5}},
				{reports: []report{{0, 1, success}}, offered: []int{5}},
			},
		},
		{
			name: "a maintenance window in New York starts devices only inside it",
			strategy: store.Strategy{Windows: []store.MaintenanceWindow{{
				Days:     []time.Weekday{time.Monday},
				Start:    "22:00",
				Duration: 4 * time.Hour,
				TimeZone: "America/New_York",
			}}, MaxConcurrent: 1},
			devices: 3,
			steps: []step{
				{offered: []int{0}},
				{advance: time.Hour, offered: []int{1}},
				{advance: 3 * time.Hour, reports: []report{{0, 1, success}},
					offered: []int{2}},
				{advance: time.Hour, reports: []report{{0, 1, success}},
					offered: []int{2}},
				{advance: 6 * 24 * time.Hour, offered: []int{2}},
				{advance: 19 * time.Hour, offered: []int{2}},
				{advance: time.Hour, offered: []int{3}},
			},
		},
		{
			name:     "a failed device is retried up to the limit, then the deployment finishes",
			strategy: store.Strategy{Retries: 1},
			devices:  1,
			steps: []step{
				{offered: []int{1}},
				{reports: []report{{0, 1, failure}}, offered: []int{1}, offers: 2},
				{offered: []int{1}, offers: 2},
				{reports: []report{{0, 1, rolledBack}}, offered: []int{1}, offers: 2,
					status: store.DeploymentFinished},
			},
		},
		{
			name:    "a deployment whose devices are all final finishes",
			devices: 3,
			steps: []step{
				{offered: []int{3}},
				{reports: []report{{0, 2, success}}, offered: []int{3}},
				{reports: []report{{0, 1, failure}}, offered: []int{3},
					status: store.DeploymentFinished},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.strategy, tt.devices)
			for i, s := range tt.steps {
				e.clock.Advance(s.advance)
				for _, r := range s.reports {
					e.finish(r.phase, r.n, r.state)
				}
				e.tick()
				want := s.status
				if want == "" {
					want = store.DeploymentActive
				}
				require.Equal(t, s.offered, e.offered(), "step %d: offered", i)
				require.Equal(t, want, e.status(), "step %d: status", i)
				if s.offers > 0 {
					require.Equal(t, s.offers, e.offers(), "step %d: offers", i)
				}
				if m := tt.strategy.MaxConcurrent; m > 0 {
					require.LessOrEqual(t, e.inProgress(), m, "step %d: in progress", i)
				}
			}
		})
	}
}

func TestScheduler_TickAudits(t *testing.T) {
	tests := []struct {
		name     string
		strategy store.Strategy
		state    poll.ReportState
		action   string
	}{
		{"a pause is audited", store.Strategy{FailureThreshold: store.Threshold{Count: 1}},
			failure, "deployment.pause"},
		{"a finish is audited", store.Strategy{}, success, "deployment.finish"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.strategy, 2)
			e.tick()
			e.finish(0, 2, tt.state)
			e.tick()
			e.tick()

			got, err := e.store.ListAudit(e.ctx,
				store.AuditFilter{Object: "deployment:" + e.dep.ID})
			require.NoError(t, err)
			require.Len(t, got, 1)
			assert.Equal(t, Actor, got[0].Actor)
			assert.Equal(t, tt.action, got[0].Action)
		})
	}
}

func TestScheduler_TickInvalidWindow(t *testing.T) {
	e := newEnv(t, store.Strategy{Windows: []store.MaintenanceWindow{
		{Start: "25:00", Duration: time.Hour},
	}}, 1)
	err := e.sched.Tick(e.ctx)
	require.ErrorIs(t, err, ErrInvalidWindow)
	assert.Equal(t, []int{0}, e.offered())
}

// TestScheduler_SoakCountsFromSuccess checks that a late report of a
// device that already succeeded does not restart its phase's soak.
func TestScheduler_SoakCountsFromSuccess(t *testing.T) {
	e := newEnv(t, store.Strategy{Phases: []store.Phase{
		{Count: 2, Soak: 30 * time.Minute}, {},
	}}, 4)
	e.tick()
	e.finish(0, 2, poll.ReportSuccess)
	e.tick()
	require.Equal(t, []int{2, 0}, e.offered())

	e.clock.Advance(20 * time.Minute)
	recorded, err := e.store.RecordReport(e.ctx, e.dep.ID, "dev-000",
		poll.Report{ID: "late", State: poll.ReportDownloading})
	require.NoError(t, err)
	require.True(t, recorded)
	dd := e.devices()[0]
	require.Equal(t, store.TargetState(poll.ReportSuccess), dd.State, "the outcome stays")
	require.Equal(t, testStart, dd.Finished.UTC())

	e.clock.Advance(10 * time.Minute)
	e.tick()
	require.Equal(t, []int{2, 2}, e.offered(), "the soak ended 30 minutes after the successes")
}
