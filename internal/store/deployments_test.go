package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
)

func TestStore_ReleaseCRUD(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()

		r := testRelease(t, s)
		r2, err := s.CreateRelease(ctx, Release{
			Version: "2.0", Compatible: "acme-board", Digest: "sha256:2", Location: "reg/x:2",
			SignatureKeyIDs: []string{"k1", "k2"}, Images: json.RawMessage(`[{"class":"rootfs"}]`),
		})
		require.NoError(t, err)

		got, err := s.Release(ctx, r2.ID)
		require.NoError(t, err)
		assert.Equal(t, r2, got)
		got, err = s.ReleaseByDigest(ctx, r.Digest)
		require.NoError(t, err)
		assert.Equal(t, r, got)

		list, next, err := s.ListReleases(ctx, Page{Limit: 1})
		require.NoError(t, err)
		require.Len(t, list, 1)
		rest, last, err := s.ListReleases(ctx, Page{After: next})
		require.NoError(t, err)
		assert.Len(t, rest, 1)
		assert.Empty(t, last)

		_, err = s.CreateDeployment(ctx, Deployment{ReleaseID: r.ID, Target: Target{Group: "g"}})
		require.NoError(t, err)

		runErrCases(t, []errCase{
			{"a known digest is refused", func() error {
				_, err := s.CreateRelease(ctx, Release{Version: "1", Compatible: "c",
					Digest: r.Digest, Location: "l"})
				return err
			}, ErrExists},
			{"a release without version is refused", func() error {
				_, err := s.CreateRelease(ctx, Release{Compatible: "c", Digest: "d", Location: "l"})
				return err
			}, ErrInvalid},
			{"a release in use is kept", func() error {
				return s.DeleteRelease(ctx, r.ID)
			}, ErrInUse},
			{"an unused release is deleted", func() error {
				return s.DeleteRelease(ctx, r2.ID)
			}, nil},
			{"a deleted release is not found", func() error {
				_, err := s.Release(ctx, r2.ID)
				return err
			}, ErrNotFound},
		})
	})
}

func TestStore_DeploymentCRUD(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		r := testRelease(t, s)

		d := Deployment{
			Name:      "spring rollout",
			ReleaseID: r.ID,
			Target: Target{Filter: &DeviceFilter{
				Tag: "lab", Inventory: map[string]string{"a": "b"},
			}},
			Strategy: Strategy{
				Phases: []Phase{
					{Count: 5, StartAt: time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)},
					{Percent: 50, AfterSuccessPercent: 90, Soak: time.Hour},
					{},
				},
				FailureThreshold: Threshold{Percent: 10},
				MaxConcurrent:    100,
				Windows: []MaintenanceWindow{{Days: []time.Weekday{time.Saturday},
					Start: "02:00", Duration: 3 * time.Hour, TimeZone: "Europe/Berlin"}},
				Retries: 2,
			},
		}
		created, err := s.CreateDeployment(ctx, d)
		require.NoError(t, err)
		assert.Equal(t, DeploymentActive, created.Status)
		got, err := s.Deployment(ctx, created.ID)
		require.NoError(t, err)
		assert.Equal(t, created, got)

		other, err := s.CreateDeployment(ctx, Deployment{ReleaseID: r.ID,
			Target: Target{Group: "g"},
			Status: DeploymentPaused})
		require.NoError(t, err)
		paused, _, err := s.ListDeployments(ctx, DeploymentFilter{Status: DeploymentPaused}, Page{})
		require.NoError(t, err)
		require.Len(t, paused, 1)
		assert.Equal(t, other.ID, paused[0].ID)

		tests := []struct {
			name string
			d    Deployment
			want error
		}{
			{"no release", Deployment{Target: Target{Group: "g"}}, ErrInvalid},
			{"an unknown release", Deployment{ReleaseID: "nope", Target: Target{Group: "g"}},
				ErrNotFound},
			{"no target", Deployment{ReleaseID: r.ID}, ErrInvalid},
			{"two targets", Deployment{ReleaseID: r.ID,
				Target: Target{Group: "g", Filter: &DeviceFilter{}}}, ErrInvalid},
			{"an unknown status", Deployment{ReleaseID: r.ID, Target: Target{Group: "g"},
				Status: "gone"}, ErrInvalid},
			{"a taken ID", Deployment{ID: created.ID, ReleaseID: r.ID, Target: Target{Group: "g"}},
				ErrExists},
		}
		for _, tt := range tests {
			t.Run("refuses "+tt.name, func(t *testing.T) {
				_, err := s.CreateDeployment(ctx, tt.d)
				assert.ErrorIs(t, err, tt.want)
			})
		}
	})
}

func TestStore_SetDeploymentStatus(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		tests := []struct {
			name     string
			from, to DeploymentStatus
			want     error
		}{
			{"active is paused", DeploymentActive, DeploymentPaused, nil},
			{"paused is resumed", DeploymentPaused, DeploymentActive, nil},
			{"active is aborted", DeploymentActive, DeploymentAborted, nil},
			{"paused is aborted", DeploymentPaused, DeploymentAborted, nil},
			{"active finishes", DeploymentActive, DeploymentFinished, nil},
			{"pausing twice changes nothing", DeploymentPaused, DeploymentPaused, nil},
			{"paused cannot finish", DeploymentPaused, DeploymentFinished, ErrInvalidTransition},
			{"aborted cannot resume", DeploymentAborted, DeploymentActive, ErrInvalidTransition},
			{"finished cannot be paused", DeploymentFinished, DeploymentPaused,
				ErrInvalidTransition},
			{"an unknown status is invalid", DeploymentActive, "gone", ErrInvalid},
		}
		ctx := context.Background()
		r := testRelease(t, s)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				d, err := s.CreateDeployment(ctx, Deployment{ReleaseID: r.ID,
					Target: Target{Group: "g"}, Status: tt.from})
				require.NoError(t, err)

				got, err := s.SetDeploymentStatus(ctx, d.ID, tt.to)
				stored, gerr := s.Deployment(ctx, d.ID)
				require.NoError(t, gerr)
				if tt.want != nil {
					assert.ErrorIs(t, err, tt.want)
					assert.Equal(t, tt.from, stored.Status)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, tt.to, got.Status)
				assert.Equal(t, tt.to, stored.Status)
			})
		}
	})
}

// rollout makes a release, n accepted devices and a deployment with the
// strategy, every device in phase i%phases.
func rollout(t *testing.T, s *sqlStore, n int, st Strategy) (Deployment, []string) {
	t.Helper()
	ctx := context.Background()
	r := testRelease(t, s)
	devs := make([]Device, n)
	ids := make([]string, n)
	for i := range devs {
		devs[i] = testDevice(i)
		devs[i].ID = fmt.Sprintf("%s-%03d", r.ID[:6], i)
		devs[i].KeyID = devs[i].ID
		devs[i].Status = StatusAccepted
		ids[i] = devs[i].ID
	}
	insertDevices(t, s, devs)
	d, err := s.CreateDeployment(ctx, Deployment{ReleaseID: r.ID, Target: Target{Group: "g"},
		Strategy: st})
	require.NoError(t, err)
	phases := max(1, len(st.Phases))
	for p := range phases {
		var in []string
		for i, id := range ids {
			if i%phases == p {
				in = append(in, id)
			}
		}
		require.NoError(t, s.AddDeploymentDevices(ctx, d.ID, p, in))
	}
	return d, ids
}

func report(id string, state poll.ReportState, log ...string) poll.Report {
	return poll.Report{ID: id, State: state, Log: log,
		Time: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
}

func TestStore_RecordReport(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		d, ids := rollout(t, s, 4, Strategy{Phases: []Phase{{Percent: 50}, {}}})
		dev := ids[0]

		tests := []struct {
			name      string
			device    string
			r         poll.Report
			recorded  bool
			wantState TargetState
			want      error
		}{
			{"a first report moves the state", dev, report("r1", poll.ReportDownloading, "a"),
				true, "downloading", nil},
			{"the same report again counts once", dev, report("r1", poll.ReportDownloading, "a"),
				false, "downloading", nil},
			{"a new state moves on", dev, report("r2", poll.ReportInstalling, "b"),
				true, "installing", nil},
			{"the same ID in another state is a new report", dev,
				report("r2", poll.ReportSuccess, "c"), true, "success", nil},
			{"a late retry does not undo success", dev, report("r3", poll.ReportVerifying),
				true, "success", nil},
			{"a malformed report is refused", dev, report("bad id!", poll.ReportFailure),
				false, "success", ErrInvalid},
			{"an unknown state is refused", dev, report("r4", "exploded"),
				false, "success", ErrInvalid},
			{"a device outside the deployment is not found", "stranger",
				report("r1", poll.ReportSuccess), false, "", ErrNotFound},
			{"another device fails", ids[1], report("x1", poll.ReportFailure, "boom"),
				true, "failure", nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				recorded, err := s.RecordReport(ctx, d.ID, tt.device, tt.r)
				if tt.want != nil {
					assert.ErrorIs(t, err, tt.want)
				} else {
					require.NoError(t, err)
				}
				assert.Equal(t, tt.recorded, recorded)
				if tt.wantState != "" {
					dd, err := s.DeviceDeployment(ctx, d.ID, tt.device)
					require.NoError(t, err)
					assert.Equal(t, tt.wantState, dd.State)
				}
				checkCounts(t, s, d.ID)
			})
		}

		dd, err := s.DeviceDeployment(ctx, d.ID, dev)
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "b", "c"}, dd.Log)
		assert.False(t, dd.Started.IsZero(), "a report marks the device started")
		reports, err := s.Reports(ctx, d.ID, dev)
		require.NoError(t, err)
		assert.Len(t, reports, 4)

		c := checkCounts(t, s, d.ID)
		assert.Equal(t, Counts{"success": 1, "pending": 1}, c.Phases[0])
		assert.Equal(t, Counts{"failure": 1, "pending": 1}, c.Phases[1])
		assert.Equal(t, 0, c.InProgress)
	})
}

func TestStore_RecordReport_LogIsBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		d, ids := rollout(t, s, 1, Strategy{})
		lines := make([]string, poll.MaxLogLines)
		for i := range 3 {
			for j := range lines {
				lines[j] = fmt.Sprintf("%d.%d", i, j)
			}
			_, err := s.RecordReport(ctx, d.ID, ids[0],
				report(fmt.Sprint("r", i), poll.ReportDownloading, lines...))
			require.NoError(t, err)
		}
		dd, err := s.DeviceDeployment(ctx, d.ID, ids[0])
		require.NoError(t, err)
		require.Len(t, dd.Log, MaxDeviceLog)
		assert.Equal(t, "1.0", dd.Log[0])
		assert.Equal(t, fmt.Sprintf("2.%d", poll.MaxLogLines-1), dd.Log[MaxDeviceLog-1])
	})
}

func TestStore_StartDevices(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		d, ids := rollout(t, s, 10, Strategy{Phases: []Phase{{Count: 5}, {}}, MaxConcurrent: 3})
		phase0 := []string{ids[0], ids[2], ids[4], ids[6], ids[8]}

		started, err := s.StartDevices(ctx, d.ID, 0, 10)
		require.NoError(t, err)
		assert.Equal(t, phase0[:3], started, "max concurrent caps the first batch")

		started, err = s.StartDevices(ctx, d.ID, 0, 10)
		require.NoError(t, err)
		assert.Empty(t, started, "no room while three are in progress")

		_, err = s.RecordReport(ctx, d.ID, phase0[0], report("a", poll.ReportSuccess))
		require.NoError(t, err)
		_, err = s.RecordReport(ctx, d.ID, phase0[1], report("a", poll.ReportDownloading))
		require.NoError(t, err)
		started, err = s.StartDevices(ctx, d.ID, 0, 10)
		require.NoError(t, err)
		assert.Equal(t, phase0[3:4], started, "a final device frees one place")

		_, err = s.SetDeploymentStatus(ctx, d.ID, DeploymentPaused)
		require.NoError(t, err)
		_, err = s.RecordReport(ctx, d.ID, phase0[2], report("a", poll.ReportFailure))
		require.NoError(t, err)
		started, err = s.StartDevices(ctx, d.ID, 0, 10)
		require.NoError(t, err)
		assert.Empty(t, started, "a paused deployment starts nobody")

		_, err = s.SetDeploymentStatus(ctx, d.ID, DeploymentActive)
		require.NoError(t, err)
		retried, err := s.RetryDevice(ctx, d.ID, phase0[2])
		require.NoError(t, err)
		assert.False(t, retried, "no retries in the strategy")

		c := checkCounts(t, s, d.ID)
		assert.Equal(t, 2, c.InProgress)

		_, err = s.SetDeploymentStatus(ctx, d.ID, DeploymentAborted)
		require.NoError(t, err)
		c = checkCounts(t, s, d.ID)
		assert.Equal(t, Counts{"success": 1, "downloading": 1, "failure": 1, "pending": 1,
			"skipped": 1}, c.Phases[0], "the started device stays pending, the other is skipped")
		assert.Equal(t, Counts{"skipped": 5}, c.Phases[1])
	})
}

func TestStore_RetryDevice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		d, ids := rollout(t, s, 1, Strategy{Retries: 1})
		dev := ids[0]

		for attempt := 1; attempt <= 2; attempt++ {
			started, err := s.StartDevices(ctx, d.ID, 0, 1)
			require.NoError(t, err)
			require.Equal(t, []string{dev}, started)
			_, err = s.RecordReport(ctx, d.ID, dev,
				report(fmt.Sprint("f", attempt), poll.ReportFailure))
			require.NoError(t, err)

			retried, err := s.RetryDevice(ctx, d.ID, dev)
			require.NoError(t, err)
			assert.Equal(t, attempt == 1, retried, "attempt %d", attempt)
			checkCounts(t, s, d.ID)
		}
		dd, err := s.DeviceDeployment(ctx, d.ID, dev)
		require.NoError(t, err)
		assert.Equal(t, 2, dd.Attempts)
		assert.Equal(t, TargetState("failure"), dd.State)
	})

	t.Run("a device that joined another deployment stays there", func(t *testing.T) {
		forEachBackend(t, func(t *testing.T, s *sqlStore) {
			ctx := context.Background()
			d, ids := rollout(t, s, 1, Strategy{Retries: 3})
			dev := ids[0]
			_, err := s.StartDevices(ctx, d.ID, 0, 1)
			require.NoError(t, err)
			_, err = s.RecordReport(ctx, d.ID, dev, report("f", poll.ReportFailure))
			require.NoError(t, err)

			other, err := s.CreateDeployment(ctx, Deployment{ReleaseID: d.ReleaseID,
				Target: Target{Group: "g"}})
			require.NoError(t, err)
			require.NoError(t, s.AddDeploymentDevices(ctx, other.ID, 0, []string{dev}))
			retried, err := s.RetryDevice(ctx, d.ID, dev)
			require.NoError(t, err)
			assert.False(t, retried)
			dd, err := s.DeviceDeployment(ctx, d.ID, dev)
			require.NoError(t, err)
			assert.Equal(t, TargetState("failure"), dd.State)

			// Once the other deployment is over, the retry goes ahead.
			_, err = s.SetDeploymentStatus(ctx, other.ID, DeploymentAborted)
			require.NoError(t, err)
			retried, err = s.RetryDevice(ctx, d.ID, dev)
			require.NoError(t, err)
			assert.True(t, retried)
			checkCounts(t, s, d.ID)
		})
	})
}

func TestStore_AddDeploymentDevices(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		d, ids := rollout(t, s, 3, Strategy{})
		r := testRelease(t, s)
		other, err := s.CreateDeployment(ctx, Deployment{ReleaseID: r.ID,
			Target: Target{Group: "g"}})
		require.NoError(t, err)

		active, err := s.ActiveDeviceDeployment(ctx, ids[0])
		require.NoError(t, err)
		assert.Equal(t, d.ID, active.DeploymentID)

		tests := []struct {
			name    string
			deploy  string
			phase   int
			devices []string
			want    error
		}{
			{"a device busy elsewhere is refused", other.ID, 0, ids[:1], ErrDeviceBusy},
			{"an unknown device is not found", other.ID, 0, []string{"nope"}, ErrNotFound},
			{"an unknown deployment is not found", "nope", 0, ids[:1], ErrNotFound},
			{"a phase beyond the strategy is refused", other.ID, 1, ids[:1], ErrInvalid},
			{"a device twice is refused", d.ID, 0, ids[:1], ErrExists},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := s.AddDeploymentDevices(ctx, tt.deploy, tt.phase, tt.devices)
				assert.ErrorIs(t, err, tt.want)
			})
		}

		t.Run("a device is free once it finished", func(t *testing.T) {
			_, err := s.RecordReport(ctx, d.ID, ids[0], report("ok", poll.ReportSuccess))
			require.NoError(t, err)
			require.NoError(t, s.AddDeploymentDevices(ctx, other.ID, 0, ids[:1]))
			active, err := s.ActiveDeviceDeployment(ctx, ids[0])
			require.NoError(t, err)
			assert.Equal(t, other.ID, active.DeploymentID)
		})

		t.Run("history lists both deployments of the device", func(t *testing.T) {
			var got []string
			p := Page{Limit: 1}
			for {
				list, next, err := s.ListDeviceDeployments(ctx,
					DeviceDeploymentFilter{DeviceID: ids[0]}, p)
				require.NoError(t, err)
				for _, dd := range list {
					got = append(got, dd.DeploymentID)
				}
				if next == "" {
					break
				}
				p.After = next
			}
			assert.ElementsMatch(t, []string{d.ID, other.ID}, got)
		})

		t.Run("deleting a device takes it out of the counts", func(t *testing.T) {
			require.NoError(t, s.DeleteDevice(ctx, ids[1]))
			c := checkCounts(t, s, d.ID)
			assert.Equal(t, 2, c.All.Total())
		})
	})
}

func TestStore_CheckState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		d, ids := rollout(t, s, 3, Strategy{})
		require.NoError(t, s.RecordCheck(ctx, ids[0], CheckInfo{Version: "1.0.0",
			Digest: "sha256:aa", Slots: json.RawMessage(`[{"name":"rootfs.0"}]`)}))

		// checkState compares CheckState with the separate reads it
		// stands for.
		checkState := func(t *testing.T, id string) CheckState {
			t.Helper()
			st, err := s.CheckState(ctx, id)
			require.NoError(t, err)
			dev, err := s.Device(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, Device{ID: dev.ID, Status: dev.Status, LastCheck: dev.LastCheck,
				InstalledVersion: dev.InstalledVersion, InstalledDigest: dev.InstalledDigest,
				Slots: dev.Slots}, st.Device)
			dd, err := s.ActiveDeviceDeployment(ctx, id)
			if errors.Is(err, ErrNotFound) {
				assert.Nil(t, st.Deployment)
			} else {
				require.NoError(t, err)
				require.NotNil(t, st.Deployment)
				assert.Equal(t, dd, *st.Deployment)
			}
			return st
		}

		st := checkState(t, ids[0])
		assert.Equal(t, "1.0.0", st.Device.InstalledVersion)
		require.NotNil(t, st.Deployment)
		assert.Equal(t, d.ID, st.Deployment.DeploymentID)

		_, err := s.StartDevices(ctx, d.ID, 0, 3)
		require.NoError(t, err)
		_, err = s.RecordReport(ctx, d.ID, ids[1], report("r1", poll.ReportDownloading,
			"fetching"))
		require.NoError(t, err)
		st = checkState(t, ids[1])
		require.NotNil(t, st.Deployment)
		assert.False(t, st.Deployment.Started.IsZero())
		assert.Equal(t, []string{"fetching"}, st.Deployment.Log)

		t.Run("a finished device has no deployment", func(t *testing.T) {
			_, err := s.RecordReport(ctx, d.ID, ids[1], report("r2", poll.ReportSuccess))
			require.NoError(t, err)
			assert.Nil(t, checkState(t, ids[1]).Deployment)
		})
		t.Run("a paused deployment still counts", func(t *testing.T) {
			_, err := s.SetDeploymentStatus(ctx, d.ID, DeploymentPaused)
			require.NoError(t, err)
			assert.NotNil(t, checkState(t, ids[2]).Deployment)
		})
		t.Run("an aborted deployment does not", func(t *testing.T) {
			_, err := s.SetDeploymentStatus(ctx, d.ID, DeploymentAborted)
			require.NoError(t, err)
			assert.Nil(t, checkState(t, ids[2]).Deployment)
		})
		t.Run("an unknown device is not found", func(t *testing.T) {
			_, err := s.CheckState(ctx, "nope")
			assert.ErrorIs(t, err, ErrNotFound)
		})
	})
}

// TestStore_CheckStateConcurrent makes many CheckState calls at once, so
// that they go in batches: each must get its own device's state.
func TestStore_CheckStateConcurrent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		d, ids := rollout(t, s, 150, Strategy{})
		for i, id := range ids[:100] {
			require.NoError(t, s.RecordCheck(ctx, id, CheckInfo{Version: fmt.Sprint("1.0.", i)}))
		}
		_, err := s.RecordReport(ctx, d.ID, ids[7], report("r", poll.ReportSuccess))
		require.NoError(t, err)

		var wg sync.WaitGroup
		for round := range 4 {
			for i := range 200 {
				wg.Go(func() {
					id := fmt.Sprintf("missing-%d-%d", round, i)
					if i < len(ids) {
						id = ids[i]
					}
					st, err := s.CheckState(ctx, id)
					if i >= len(ids) {
						assert.ErrorIs(t, err, ErrNotFound, id)
						return
					}
					if !assert.NoError(t, err, id) {
						return
					}
					assert.Equal(t, id, st.Device.ID)
					if i < 100 {
						assert.Equal(t, fmt.Sprint("1.0.", i), st.Device.InstalledVersion, id)
					}
					if i == 7 {
						assert.Nil(t, st.Deployment, "finished")
					} else if assert.NotNil(t, st.Deployment, id) {
						assert.Equal(t, id, st.Deployment.DeviceID)
					}
				})
			}
		}
		wg.Wait()
	})
}

// TestStore_DeviceFinished follows the time a device reached its outcome:
// set by the report that finishes it and by skipping, kept through late
// reports, cleared by a retry.
func TestStore_DeviceFinished(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		d, ids := rollout(t, s, 3, Strategy{Retries: 1})
		get := func(id string) DeviceDeployment {
			t.Helper()
			dd, err := s.DeviceDeployment(ctx, d.ID, id)
			require.NoError(t, err)
			return dd
		}
		started, err := s.StartDevices(ctx, d.ID, 0, 2)
		require.NoError(t, err)
		require.Equal(t, ids[:2], started)

		_, err = s.RecordReport(ctx, d.ID, ids[0], report("dl", poll.ReportDownloading))
		require.NoError(t, err)
		assert.True(t, get(ids[0]).Finished.IsZero(), "not final yet")
		_, err = s.RecordReport(ctx, d.ID, ids[0], report("ok", poll.ReportSuccess))
		require.NoError(t, err)
		done := get(ids[0])
		require.False(t, done.Finished.IsZero())
		assert.Equal(t, done.Updated, done.Finished)

		_, err = s.RecordReport(ctx, d.ID, ids[0], report("late", poll.ReportInstalling))
		require.NoError(t, err)
		late := get(ids[0])
		assert.True(t, late.Updated.After(done.Updated), "the late report is recorded")
		assert.Equal(t, done.Finished, late.Finished, "but does not move the outcome's time")

		_, err = s.RecordReport(ctx, d.ID, ids[1], report("bad", poll.ReportFailure))
		require.NoError(t, err)
		assert.False(t, get(ids[1]).Finished.IsZero())
		retried, err := s.RetryDevice(ctx, d.ID, ids[1])
		require.NoError(t, err)
		require.True(t, retried)
		assert.True(t, get(ids[1]).Finished.IsZero(), "a retry has no outcome yet")

		_, err = s.SetDeploymentStatus(ctx, d.ID, DeploymentAborted)
		require.NoError(t, err)
		skipped := get(ids[2])
		assert.Equal(t, StateSkipped, skipped.State)
		assert.False(t, skipped.Finished.IsZero())
	})
}

// TestStore_InProgressUsesItsIndex checks that counting a deployment's
// devices in progress reads the partial index of exactly those rows, whose
// condition must match the query's for the planner to use it.
func TestStore_InProgressUsesItsIndex(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		explain := "EXPLAIN QUERY PLAN "
		if s.d == &postgresDialect {
			explain = "EXPLAIN "
		}
		c := conn{q: s.r, d: s.d}
		rows, err := c.QueryContext(context.Background(), explain+`SELECT COUNT(*)
			FROM deployment_devices WHERE deployment_id = ? AND started IS NOT NULL
			AND state NOT IN `+finalStates, "d")
		require.NoError(t, err)
		defer rows.Close()
		cols, err := rows.Columns()
		require.NoError(t, err)
		var plan strings.Builder
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			require.NoError(t, rows.Scan(ptrs...))
			fmt.Fprintln(&plan, vals...)
		}
		require.NoError(t, rows.Err())
		assert.Contains(t, plan.String(), "deployment_devices_in_progress")
	})
}
