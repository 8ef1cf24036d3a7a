package store

import (
	"context"
	"database/sql"
	"fmt"
	"github.com/stretchr/testify/assert"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	// The crash test re-executes this binary as the child it kills.
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(runCrashChild(dir))
	}
	os.Exit(m.Run())
}

// testClock returns a clock that advances a millisecond per reading.
func testClock() func() time.Time {
	var mu atomic.Int64
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return func() time.Time {
		return start.Add(time.Duration(mu.Add(1)) * time.Millisecond)
	}
}

func openTest(t *testing.T) *SQLite {
	return openTestB(t)
}

func openTestB(t testing.TB) *SQLite {
	t.Helper()
	s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "rota.db"),
		WithClock(testClock()))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func testDevice(i int) Device {
	return Device{
		ID:           fmt.Sprintf("dev-%05d", i),
		KeyID:        fmt.Sprintf("key-%05d", i),
		PublicKeyPEM: "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
		Identity:     map[string]string{"serial": fmt.Sprintf("SN%05d", i)},
	}
}

// insertDevices adds devices in one transaction, which is much faster
// than a transaction each.
func insertDevices(t testing.TB, s *SQLite, devs []Device) {
	t.Helper()
	ctx := context.Background()
	err := s.update(ctx, "insert test devices", func(tx *sql.Tx) error {
		for _, d := range devs {
			if _, err := s.insertDevice(ctx, tx, d); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
}

var releaseSeq atomic.Int64

func testRelease(t *testing.T, s *SQLite) Release {
	t.Helper()
	r, err := s.CreateRelease(context.Background(), Release{
		Version:    "1.2.0",
		Compatible: "acme-board",
		Digest:     fmt.Sprintf("sha256:%064x", releaseSeq.Add(1)),
		Size:       1 << 20,
		Location:   "oci-layout://rota-data/bundles",
	})
	require.NoError(t, err)
	return r
}

// checkCounts compares the kept counts with a count of the rows.
func checkCounts(t *testing.T, s *SQLite, deploymentID string) DeploymentCounts {
	t.Helper()
	ctx := context.Background()
	got, err := s.DeploymentCounts(ctx, deploymentID)
	require.NoError(t, err)
	want := Counts{}
	rows, err := s.r.QueryContext(ctx, `SELECT state, COUNT(*) FROM deployment_devices
		WHERE deployment_id = ? GROUP BY state`, deploymentID)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var (
			st TargetState
			n  int
		)
		require.NoError(t, rows.Scan(&st, &n))
		want[st] = n
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want, got.All, "counts of deployment %s", deploymentID)
	return got
}

// errCase is a named operation and the error it must end with; a nil want
// means it must succeed.
type errCase struct {
	name string
	run  func() error
	want error
}

// runErrCases runs each case as a subtest.
func runErrCases(t *testing.T, cases []errCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if tt.want == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, tt.want)
		})
	}
}
