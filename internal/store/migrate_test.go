package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/testutil"
)

// versions lists the migrations recorded in the store's database.
func versions(t *testing.T, s *sqlStore) []int {
	t.Helper()
	rows, err := s.reader().QueryContext(context.Background(),
		`SELECT version FROM schema_migrations ORDER BY version`)
	require.NoError(t, err)
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		require.NoError(t, rows.Scan(&v))
		vs = append(vs, v)
	}
	require.NoError(t, rows.Err())
	return vs
}

func TestStore_Migrations(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testMigrations(t, b) })
	}
}

func testMigrations(t *testing.T, b backend) {
	ctx := context.Background()
	db := b.newDB(t)
	s, err := b.open(ctx, db)
	require.NoError(t, err)
	ms, err := loadMigrations(s.d.migrations)
	require.NoError(t, err)
	latest := ms[len(ms)-1].version
	first := versions(t, s)
	require.Len(t, first, len(ms))
	_, err = s.CreateDevice(ctx, testDevice(1))
	require.NoError(t, err)
	require.NoError(t, s.Close())

	t.Run("reopening applies nothing twice and keeps the data", func(t *testing.T) {
		s, err := b.open(ctx, db)
		require.NoError(t, err)
		defer s.Close()
		assert.Equal(t, first, versions(t, s))
		_, err = s.Device(ctx, testDevice(1).ID)
		assert.NoError(t, err)
	})

	t.Run("a newer schema is refused", func(t *testing.T) {
		s, err := b.open(ctx, db)
		require.NoError(t, err)
		_, err = conn{q: s.w, d: s.d}.ExecContext(ctx,
			`INSERT INTO schema_migrations (version, applied) VALUES (?, 0)`, latest+1)
		require.NoError(t, err)
		require.NoError(t, s.Close())

		_, err = b.open(ctx, db)
		assert.ErrorIs(t, err, ErrSchemaTooNew)
	})
}

func TestOpenSQLite_Settings(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, sqliteBackend)
	var mode string
	require.NoError(t, s.r.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode))
	assert.Equal(t, "wal", mode)
	var sync, fk int
	require.NoError(t, s.w.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync))
	require.NoError(t, s.w.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk))
	assert.Equal(t, 2, sync, "synchronous is FULL")
	assert.Equal(t, 1, fk)
}

func TestOpenPostgres_Settings(t *testing.T) {
	ctx := context.Background()
	url := testutil.StartPostgres(t)
	tests := []struct {
		name, url, param, want string
	}{
		{"commits wait for the disk", url, "synchronous_commit", "on"},
		{"sessions are named", url, "application_name", "rota"},
		{"the URL's settings win", url + "&application_name=replica-2",
			"application_name", "replica-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenPostgres(ctx, tt.url)
			require.NoError(t, err)
			defer s.Close()
			var got string
			require.NoError(t, s.r.QueryRowContext(ctx, `SHOW `+tt.param).Scan(&got))
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestOpenPostgres_ReplicasMigrateOnce(t *testing.T) {
	const replicas = 4
	ctx := context.Background()
	url := testutil.StartPostgres(t)

	// Replicas that start together race to migrate the empty database;
	// the advisory lock lets one migrate and the others find it done.
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	stores := make([]*Postgres, replicas)
	for i := range replicas {
		wg.Go(func() { stores[i], errs[i] = OpenPostgres(ctx, url) })
	}
	wg.Wait()
	for i := range replicas {
		require.NoError(t, errs[i], "replica %d", i)
		defer stores[i].Close()
	}
	ms, err := loadMigrations(postgresDialect.migrations)
	require.NoError(t, err)
	assert.Len(t, versions(t, &stores[0].sqlStore), len(ms))
}

func TestOpenSQLite_Errors(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	tests := []struct {
		name string
		path string
		want error
	}{
		{"an empty path is refused", "", ErrInvalid},
		{"a path with a query is refused", filepath.Join(dir, "a.db?mode=ro"), ErrInvalid},
		{"a URI is refused", "file:" + filepath.Join(dir, "a.db"), ErrInvalid},
		{"a directory is not a database", filepath.Join(dir, "sub"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenSQLite(context.Background(), tt.path)
			require.Error(t, err)
			assert.Nil(t, s)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
		})
	}
}

func TestOpenPostgres_Errors(t *testing.T) {
	// Nothing listens on a port that was just free.
	closed := fmt.Sprintf("postgres://rota:secret@127.0.0.1:%d/rota?sslmode=disable",
		testutil.FreePort(t))
	tests := []struct {
		name string
		url  string
		want error
	}{
		{"an empty URL is refused", "", ErrInvalid},
		{"a malformed URL is refused", "postgres://rota:secret@db:port/rota", ErrInvalid},
		{"an unknown setting is refused", "postgres://db/rota?sslmode=sometimes", ErrInvalid},
		{"a server that does not answer fails", closed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenPostgres(context.Background(), tt.url)
			require.Error(t, err)
			assert.Nil(t, s)
			assert.NotContains(t, err.Error(), "secret", "the password is not shown")
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
		})
	}
}
