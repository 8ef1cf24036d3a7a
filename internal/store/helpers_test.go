package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/testutil"
)

func TestMain(m *testing.M) {
	// The crash test re-executes this binary as the child it kills.
	if db := os.Getenv(crashChildEnv); db != "" {
		os.Exit(runCrashChild(os.Getenv(crashBackendEnv), db))
	}
	code := m.Run()
	testutil.StopPostgres()
	os.Exit(code)
}

// backend is a database the store runs on.
type backend struct {
	name string

	// newDB returns a new, empty database: a file path or a URL.
	newDB func(t testing.TB) string

	// open opens the store on a database newDB returned.
	open func(ctx context.Context, db string, opts ...Option) (*sqlStore, error)
}

var (
	sqliteBackend = backend{
		name:  "sqlite",
		newDB: func(t testing.TB) string { return filepath.Join(t.TempDir(), "rota.db") },
		open: func(ctx context.Context, db string, opts ...Option) (*sqlStore, error) {
			s, err := OpenSQLite(ctx, db, opts...)
			if err != nil {
				return nil, err
			}
			return &s.sqlStore, nil
		},
	}
	postgresBackend = backend{
		name:  "postgres",
		newDB: testutil.StartPostgres,
		open: func(ctx context.Context, db string, opts ...Option) (*sqlStore, error) {
			s, err := OpenPostgres(ctx, db, opts...)
			if err != nil {
				return nil, err
			}
			return &s.sqlStore, nil
		},
	}

	// backends lists the databases every store test runs on.
	backends = []backend{sqliteBackend, postgresBackend}
)

// backendNamed returns the backend called name.
func backendNamed(name string) (backend, error) {
	for _, b := range backends {
		if b.name == name {
			return b, nil
		}
	}
	return backend{}, fmt.Errorf("no backend %q", name)
}

// forEachBackend runs test once on each backend, as a subtest named
// after it, with a store on a new database.
func forEachBackend(t *testing.T, test func(t *testing.T, s *sqlStore)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, openTest(t, b)) })
	}
}

// testClock returns a clock that advances a millisecond per reading.
func testClock() func() time.Time {
	var mu atomic.Int64
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return func() time.Time {
		return start.Add(time.Duration(mu.Add(1)) * time.Millisecond)
	}
}

// openTest opens a store of backend b on a new database, with the test
// clock; it is closed when the test ends.
func openTest(t testing.TB, b backend) *sqlStore {
	t.Helper()
	s, err := b.open(context.Background(), b.newDB(t), WithClock(testClock()))
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
func insertDevices(t testing.TB, s *sqlStore, devs []Device) {
	t.Helper()
	require.NoError(t, s.ImportDevices(context.Background(), devs))
}

var releaseSeq atomic.Int64

func testRelease(t *testing.T, s *sqlStore) Release {
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
func checkCounts(t *testing.T, s *sqlStore, deploymentID string) DeploymentCounts {
	t.Helper()
	ctx := context.Background()
	got, err := s.DeploymentCounts(ctx, deploymentID)
	require.NoError(t, err)
	want := Counts{}
	rows, err := s.reader().QueryContext(ctx, `SELECT state, COUNT(*) FROM deployment_devices
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
