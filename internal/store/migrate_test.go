package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOpenSQLite_Migrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rota.db")
	ms, err := loadMigrations()
	require.NoError(t, err)
	latest := ms[len(ms)-1].version

	versions := func(s *SQLite) []int {
		rows, err := s.r.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
		require.NoError(t, err)
		defer rows.Close()
		var vs []int
		for rows.Next() {
			var v int
			require.NoError(t, rows.Scan(&v))
			vs = append(vs, v)
		}
		return vs
	}

	s, err := OpenSQLite(ctx, path)
	require.NoError(t, err)
	first := versions(s)
	require.Len(t, first, len(ms))
	_, err = s.CreateDevice(ctx, testDevice(1))
	require.NoError(t, err)
	var mode string
	require.NoError(t, s.r.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode))
	assert.Equal(t, "wal", mode)
	var sync, fk int
	require.NoError(t, s.w.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync))
	require.NoError(t, s.w.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk))
	assert.Equal(t, 2, sync, "synchronous is FULL")
	assert.Equal(t, 1, fk)
	require.NoError(t, s.Close())

	t.Run("reopening applies nothing twice and keeps the data", func(t *testing.T) {
		s, err := OpenSQLite(ctx, path)
		require.NoError(t, err)
		defer s.Close()
		assert.Equal(t, first, versions(s))
		_, err = s.Device(ctx, testDevice(1).ID)
		assert.NoError(t, err)
	})

	t.Run("a newer schema is refused", func(t *testing.T) {
		s, err := OpenSQLite(ctx, path)
		require.NoError(t, err)
		_, err = s.w.ExecContext(ctx,
			`INSERT INTO schema_migrations (version, applied) VALUES (?, 0)`, latest+1)
		require.NoError(t, err)
		require.NoError(t, s.Close())

		_, err = OpenSQLite(ctx, path)
		assert.ErrorIs(t, err, ErrSchemaTooNew)
	})
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
