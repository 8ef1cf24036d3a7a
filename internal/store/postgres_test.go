package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/rotaupdate/rota/poll"
)

// openReplicas opens n Postgres stores on one new database, standing for
// n servers behind a load balancer.
func openReplicas(t *testing.T, n int) []*sqlStore {
	t.Helper()
	url := testutil.StartPostgres(t)
	stores := make([]*sqlStore, n)
	for i := range stores {
		s, err := OpenPostgres(context.Background(), url, WithClock(testClock()))
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		stores[i] = &s.sqlStore
	}
	return stores
}

func TestPostgres_StartDevicesAcrossReplicas(t *testing.T) {
	const (
		devices       = 60
		maxConcurrent = 4
		workers       = 3 // per replica
	)
	ctx := context.Background()
	replicas := openReplicas(t, 2)
	d, ids := rollout(t, replicas[0], devices, Strategy{MaxConcurrent: maxConcurrent})

	// Workers on both replicas start devices and finish the ones they
	// started, until every device is done; a monitor checks every
	// committed state it sees.
	var (
		wg       sync.WaitGroup
		done     atomic.Int64
		mu       sync.Mutex
		starts   = map[string]int{}
		stop     = make(chan struct{})
		overshot atomic.Int64
	)
	monitor := make(chan struct{})
	go func() {
		defer close(monitor)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := replicas[1].DeploymentCounts(ctx, d.ID)
			if err == nil && c.InProgress > maxConcurrent {
				overshot.Store(int64(c.InProgress))
			}
		}
	}()
	for w := range 2 * workers {
		s := replicas[w%2]
		wg.Go(func() {
			for done.Load() < devices {
				started, err := s.StartDevices(ctx, d.ID, 0, 2)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				for _, id := range started {
					starts[id]++
				}
				mu.Unlock()
				for _, id := range started {
					_, err := s.RecordReport(ctx, d.ID, id, report("ok", poll.ReportSuccess))
					if !assert.NoError(t, err) {
						return
					}
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-monitor

	assert.Zero(t, overshot.Load(), "devices in progress beyond MaxConcurrent")
	assert.Len(t, starts, devices, "every device was started")
	for _, id := range ids {
		assert.Equal(t, 1, starts[id], "device %s started once", id)
	}
	c := checkCounts(t, replicas[0], d.ID)
	assert.Equal(t, Counts{"success": devices}, c.All)
}

func TestPostgres_StartDevicesAtOnce(t *testing.T) {
	const (
		maxConcurrent = 5
		callers       = 8
		rounds        = 10
	)
	ctx := context.Background()
	replicas := openReplicas(t, 2)
	for round := range rounds {
		d, _ := rollout(t, replicas[0], 20, Strategy{MaxConcurrent: maxConcurrent})

		// Every caller asks for as many as the limit at the same moment;
		// together they may start no more than the limit.
		var (
			wg    sync.WaitGroup
			total atomic.Int64
			ready = make(chan struct{})
		)
		for i := range callers {
			s := replicas[i%2]
			wg.Go(func() {
				<-ready
				started, err := s.StartDevices(ctx, d.ID, 0, maxConcurrent)
				assert.NoError(t, err)
				total.Add(int64(len(started)))
			})
		}
		close(ready)
		wg.Wait()
		assert.Equal(t, int64(maxConcurrent), total.Load(), "round %d", round)
	}
}

func TestPostgres_AddDeviceToTwoDeploymentsAtOnce(t *testing.T) {
	const rounds = 15
	ctx := context.Background()
	replicas := openReplicas(t, 2)
	r := testRelease(t, replicas[0])

	tests := []struct {
		name string
		// lists returns the devices each replica adds.
		lists func(a, b string) [2][]string
	}{
		{"one device", func(a, _ string) [2][]string {
			return [2][]string{{a}, {a}}
		}},
		{"two devices in opposite orders", func(a, b string) [2][]string {
			return [2][]string{{a, b}, {b, a}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for round := range rounds {
				var devs []string
				for i := range 2 {
					d := testDevice(i)
					d.ID = fmt.Sprintf("%s-%d-%d", t.Name(), round, i)
					d.KeyID = d.ID
					_, err := replicas[0].CreateDevice(ctx, d)
					require.NoError(t, err)
					devs = append(devs, d.ID)
				}
				var deps [2]Deployment
				for i := range deps {
					var err error
					deps[i], err = replicas[0].CreateDeployment(ctx, Deployment{
						ReleaseID: r.ID, Target: Target{Group: "g"}})
					require.NoError(t, err)
				}

				lists := tt.lists(devs[0], devs[1])
				var (
					wg    sync.WaitGroup
					errs  [2]error
					ready = make(chan struct{})
				)
				for i := range 2 {
					wg.Go(func() {
						<-ready
						errs[i] = replicas[i].AddDeploymentDevices(ctx, deps[i].ID, 0, lists[i])
					})
				}
				close(ready)
				wg.Wait()

				won := -1
				for i, err := range errs {
					if err == nil {
						require.Equal(t, -1, won, "round %d: both replicas added", round)
						won = i
						continue
					}
					require.ErrorIs(t, err, ErrDeviceBusy, "round %d, replica %d", round, i)
				}
				require.NotEqual(t, -1, won, "round %d: neither replica added", round)
				for _, dev := range lists[0] {
					active, err := replicas[1].ActiveDeviceDeployment(ctx, dev)
					require.NoError(t, err)
					assert.Equal(t, deps[won].ID, active.DeploymentID)
					list, _, err := replicas[1].ListDeviceDeployments(ctx,
						DeviceDeploymentFilter{DeviceID: dev}, Page{})
					require.NoError(t, err)
					assert.Len(t, list, 1, "device %s is in one deployment", dev)
				}
			}
		})
	}
}

func TestPostgres_ReportsAndAbortKeepCounts(t *testing.T) {
	const devices = 40
	ctx := context.Background()
	replicas := openReplicas(t, 2)
	d, ids := rollout(t, replicas[0], devices, Strategy{Phases: []Phase{{Percent: 50}, {}}})

	// Every device reports through both replicas at once, some the same
	// report twice, while a third caller aborts the deployment halfway.
	states := []poll.ReportState{poll.ReportDownloading, poll.ReportInstalling,
		poll.ReportSuccess}
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for i, id := range ids {
		for _, s := range replicas {
			wg.Go(func() {
				<-ready
				for _, st := range states[:1+i%len(states)] {
					_, err := s.RecordReport(ctx, d.ID, id, report(string(st), st))
					assert.NoError(t, err)
				}
			})
		}
	}
	wg.Go(func() {
		<-ready
		_, err := replicas[1].SetDeploymentStatus(ctx, d.ID, DeploymentAborted)
		assert.NoError(t, err)
	})
	close(ready)
	wg.Wait()

	c := checkCounts(t, replicas[0], d.ID)
	assert.Equal(t, devices, c.All.Total())
	for i, id := range ids {
		reports, err := replicas[0].Reports(ctx, d.ID, id)
		require.NoError(t, err)
		assert.Len(t, reports, 1+i%len(states), "device %s: each report stored once", id)
	}
}

func TestPostgres_ListDevicesPlan(t *testing.T) {
	// A page must cost the same at any depth: no step of the plan may
	// read the rows before the cursor. PostgreSQL plans from statistics,
	// so the devices are many and analyzed, and the cursor is deep: a
	// plan that read from the first row would read three quarters of
	// them.
	const n = 8000
	ctx := context.Background()
	s := openTest(t, postgresBackend)
	insertFleet(t, s, n)
	cursor := testDevice(n * 3 / 4).ID

	for _, tt := range fleetFilters {
		t.Run(tt.name, func(t *testing.T) {
			w, err := deviceWhere(tt.f)
			require.NoError(t, err)
			w.after(cursor, postgresDialect.cursorBothSides)
			var plan string
			err = s.reader().QueryRowContext(ctx, `EXPLAIN (ANALYZE, FORMAT JSON)
				SELECT d.id FROM devices d`+w.String()+` ORDER BY `+w.key+` LIMIT 100`,
				w.all()...).Scan(&plan)
			require.NoError(t, err)
			var nodes []planNode
			require.NoError(t, json.Unmarshal([]byte(plan), &nodes))
			for _, node := range nodes {
				assert.LessOrEqual(t, node.Plan.mostRows(), n/4, "plan %s", plan)
			}
		})
	}
}

// planNode is a step of a plan as EXPLAIN (FORMAT JSON) shows it.
type planNode struct {
	Plan       *planNode  `json:"Plan"`
	ActualRows int        `json:"Actual Rows"`
	Plans      []planNode `json:"Plans"`
}

// mostRows returns the most rows any step under p produced.
func (p *planNode) mostRows() int {
	most := p.ActualRows
	for i := range p.Plans {
		most = max(most, p.Plans[i].mostRows())
	}
	return most
}
