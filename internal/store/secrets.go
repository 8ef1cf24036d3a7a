package store

import (
	"context"
	"fmt"
)

// Secret implements Store.
func (s *sqlStore) Secret(ctx context.Context, name string, value []byte) ([]byte, error) {
	if name == "" || len(value) == 0 {
		return nil, fmt.Errorf("%w: a secret needs a name and a value", ErrInvalid)
	}
	var stored []byte
	err := s.update(ctx, "get secret "+name, func(tx conn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO server_secrets (name, value, created)
			VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`, name, value, micro(s.stamp()))
		if err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM server_secrets WHERE name = ?`,
			name).Scan(&stored)
	})
	return stored, err
}
