package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"time"
)

// AppendAudit implements Store.
func (s *sqlStore) AppendAudit(ctx context.Context, e AuditEntry) (int64, error) {
	var id int64
	// The entry is written here, not by update, even if ctx carries one.
	ctx = context.WithValue(ctx, auditKey{}, nil)
	err := s.update(ctx, "append audit entry "+e.Action, func(tx conn) error {
		var err error
		id, err = s.insertAudit(ctx, tx, e)
		return err
	})
	return id, err
}

func (s *sqlStore) insertAudit(ctx context.Context, tx conn, e AuditEntry) (int64, error) {
	if e.Actor == "" || e.Action == "" {
		return 0, fmt.Errorf("%w: audit entry needs an actor and an action", ErrInvalid)
	}
	if e.At.IsZero() {
		e.At = s.stamp()
	}
	if tx.d.lockAudit != "" {
		// The lock is taken last in the transaction and held only to
		// its commit, which waits for nothing else.
		if _, err := tx.ExecContext(ctx, tx.d.lockAudit); err != nil {
			return 0, err
		}
	}
	var id int64
	err := tx.QueryRowContext(ctx, `INSERT INTO audit_log (actor, action, object, at, details)
		VALUES (?, ?, ?, ?, ?) RETURNING id`,
		e.Actor, e.Action, e.Object, micro(e.At), rawJSON(e.Details)).Scan(&id)
	return id, err
}

// ListAudit implements Store.
func (s *sqlStore) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	limit, err := Page{Limit: f.Limit}.limit()
	if err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	w := &where{}
	if f.Object != "" {
		w.add("object = ?", f.Object)
	}
	if f.Before > 0 {
		w.add("id < ?", f.Before)
	}
	rows, err := s.reader().QueryContext(ctx, `SELECT id, actor, action, object, at, details
		FROM audit_log`+w.String()+` ORDER BY id DESC LIMIT ?`, append(w.args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	defer rows.Close()
	var entries []AuditEntry
	for rows.Next() {
		var (
			e       AuditEntry
			at      sql.NullInt64
			details sql.NullString
		)
		if err := rows.Scan(&e.ID, &e.Actor, &e.Action, &e.Object, &at, &details); err != nil {
			return nil, fmt.Errorf("list audit log: %w", err)
		}
		e.At, e.Details = fromMicro(at), fromRawJSON(details)
		entries = append(entries, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	return entries, nil
}

// CreateUser implements Store.
func (s *sqlStore) CreateUser(ctx context.Context, u User) (User, error) {
	u.Created = s.stamp()
	u.Updated = u.Created
	err := s.update(ctx, "create user "+u.Name, func(tx conn) error {
		if err := u.validate(); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO users (name, role, password_hash, created,
			updated) VALUES (?, ?, ?, ?, ?)`,
			u.Name, u.Role, u.PasswordHash, micro(u.Created), micro(u.Updated))
		if s.d.isUnique(err) {
			return ErrExists
		}
		return err
	})
	return u, err
}

func (u *User) validate() error {
	switch {
	case u.Name == "" || u.PasswordHash == "":
		return fmt.Errorf("%w: name and password hash are required", ErrInvalid)
	case !u.Role.valid():
		return fmt.Errorf("%w: role %q", ErrInvalid, u.Role)
	}
	return nil
}

const userColumns = `name, role, password_hash, created, updated`

func scanUser(sc scanner) (User, error) {
	var (
		u                User
		created, updated sql.NullInt64
	)
	if err := sc.Scan(&u.Name, &u.Role, &u.PasswordHash, &created, &updated); err != nil {
		return User{}, err
	}
	u.Created, u.Updated = fromMicro(created), fromMicro(updated)
	return u, nil
}

// User implements Store.
func (s *sqlStore) User(ctx context.Context, name string) (User, error) {
	return userByName(ctx, s.reader(), name)
}

func userByName(ctx context.Context, q conn, name string) (User, error) {
	row := q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE name = ?`, name)
	u, err := scanUser(row)
	if err != nil {
		return User{}, fmt.Errorf("get user %s: %w", name, notFound(err))
	}
	return u, nil
}

// ListUsers implements Store.
func (s *sqlStore) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := s.reader().QueryContext(ctx, `SELECT `+userColumns+` FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var users []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

// UpdateUser implements Store.
func (s *sqlStore) UpdateUser(ctx context.Context, u User, keep []byte) (User, error) {
	err := s.update(ctx, "update user "+u.Name, func(tx conn) error {
		if err := u.validate(); err != nil {
			return err
		}
		if err := lockAdmins(ctx, tx); err != nil {
			return err
		}
		old, err := userByName(ctx, tx, u.Name)
		if err != nil {
			return err
		}
		u.Created, u.Updated = old.Created, s.stamp()
		_, err = tx.ExecContext(ctx,
			`UPDATE users SET role = ?, password_hash = ?, updated = ? WHERE name = ?`,
			u.Role, u.PasswordHash, micro(u.Updated), u.Name)
		if err == nil && old.Role == RoleAdmin && u.Role != RoleAdmin {
			err = checkAdminLeft(ctx, tx, u.Name)
		}
		if err != nil || u.PasswordHash == old.PasswordHash {
			return err
		}
		// Whoever knew the old password is signed out.
		if keep == nil {
			keep = []byte{} // compares unequal to every hash, unlike NULL
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_name = ? AND id_hash <> ?`,
			u.Name, keep)
		return err
	})
	return u, err
}

// DeleteUser implements Store.
func (s *sqlStore) DeleteUser(ctx context.Context, name string) error {
	return s.update(ctx, "delete user "+name, func(tx conn) error {
		if err := lockAdmins(ctx, tx); err != nil {
			return err
		}
		old, err := userByName(ctx, tx, name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM users WHERE name = ?`, name); err != nil {
			return err
		}
		if old.Role != RoleAdmin {
			return nil
		}
		return checkAdminLeft(ctx, tx, name)
	})
}

// lockAdmins locks the rows of the admins, so that changes of users that
// could remove the last admin run one after the other even on server
// replicas sharing a PostgreSQL database, and each sees the admins the
// one before left.
func lockAdmins(ctx context.Context, tx conn) error {
	return lockRows(ctx, tx, `SELECT name FROM users WHERE role = ? ORDER BY name`, RoleAdmin)
}

// checkAdminLeft returns ErrLastAdmin if no admin is left after a change
// of user name.
func checkAdminLeft(ctx context.Context, tx conn, name string) error {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE role = ?`, RoleAdmin).
		Scan(&n)
	if err == nil && n == 0 {
		err = fmt.Errorf("user %s: %w", name, ErrLastAdmin)
	}
	return err
}

const tokenColumns = `id, name, role, hash, expires, created`

func scanToken(sc scanner) (APIToken, error) {
	var (
		t                APIToken
		expires, created sql.NullInt64
	)
	if err := sc.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &expires, &created); err != nil {
		return APIToken{}, err
	}
	t.Expires, t.Created = fromMicro(expires), fromMicro(created)
	return t, nil
}

// CreateToken implements Store.
func (s *sqlStore) CreateToken(ctx context.Context, t APIToken) (APIToken, error) {
	if t.ID == "" {
		t.ID = newID()
	}
	t.Created = s.stamp()
	err := s.update(ctx, "create token "+t.ID, func(tx conn) error {
		switch {
		case len(t.Hash) == 0:
			return fmt.Errorf("%w: hash is required", ErrInvalid)
		case !t.Role.valid():
			return fmt.Errorf("%w: role %q", ErrInvalid, t.Role)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO api_tokens (`+tokenColumns+`)
			VALUES (?, ?, ?, ?, ?, ?)`,
			t.ID, t.Name, t.Role, t.Hash, micro(t.Expires), micro(t.Created))
		if s.d.isUnique(err) {
			return ErrExists
		}
		return err
	})
	return t, err
}

// TokenByHash implements Store.
func (s *sqlStore) TokenByHash(ctx context.Context, hash []byte, now time.Time) (APIToken, error) {
	row := s.reader().QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens
		WHERE hash = ? AND (expires IS NULL OR expires > ?)`, hash, now.UnixMicro())
	t, err := scanToken(row)
	if err != nil {
		return APIToken{}, fmt.Errorf("get token by hash: %w", notFound(err))
	}
	return t, nil
}

// ListTokens implements Store.
func (s *sqlStore) ListTokens(ctx context.Context) ([]APIToken, error) {
	rows, err := s.reader().QueryContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var tokens []APIToken
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		tokens = append(tokens, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return tokens, nil
}

// DeleteToken implements Store.
func (s *sqlStore) DeleteToken(ctx context.Context, id string) error {
	return s.update(ctx, "delete token "+id, func(tx conn) error {
		return mustAffect(tx.ExecContext(ctx, `DELETE FROM api_tokens WHERE id = ?`, id))
	})
}

// CreateSession implements Store.
func (s *sqlStore) CreateSession(ctx context.Context, ses Session) (Session, error) {
	ses.Created = s.stamp()
	err := s.update(ctx, "create session of user "+ses.UserName, func(tx conn) error {
		if len(ses.IDHash) == 0 || ses.CSRF == "" || ses.Expires.IsZero() {
			return fmt.Errorf("%w: ID hash, CSRF token and expiry are required", ErrInvalid)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sessions (id_hash, user_name, csrf, expires,
			created) VALUES (?, ?, ?, ?, ?)`,
			ses.IDHash, ses.UserName, ses.CSRF, micro(ses.Expires), micro(ses.Created))
		switch {
		case s.d.isUnique(err):
			return ErrExists
		case s.d.isForeignKey(err):
			return fmt.Errorf("user %s: %w", ses.UserName, ErrNotFound)
		}
		return err
	})
	return ses, err
}

// Session implements Store.
func (s *sqlStore) Session(ctx context.Context, idHash []byte, now time.Time) (Session, error) {
	var (
		ses              Session
		expires, created sql.NullInt64
	)
	err := s.reader().QueryRowContext(ctx, `SELECT id_hash, user_name, csrf, expires, created
		FROM sessions WHERE id_hash = ? AND expires > ?`, idHash, now.UnixMicro()).
		Scan(&ses.IDHash, &ses.UserName, &ses.CSRF, &expires, &created)
	if err != nil {
		return Session{}, fmt.Errorf("get session: %w", notFound(err))
	}
	ses.Expires, ses.Created = fromMicro(expires), fromMicro(created)
	return ses, nil
}

// DeleteSession implements Store.
func (s *sqlStore) DeleteSession(ctx context.Context, idHash []byte) error {
	return s.update(ctx, "delete session", func(tx conn) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE id_hash = ?`, idHash)
		return err
	})
}

// DeleteExpiredSessions implements Store.
func (s *sqlStore) DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error) {
	var n int64
	err := s.update(ctx, "delete expired sessions", func(tx conn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires <= ?`,
			now.UnixMicro())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}

// nonceSweep is the least time between two removals of expired nonces.
const nonceSweep = time.Minute

// UseNonce implements Store. The nonce is kept as its SHA-256: any
// string fits in the same few bytes. A nonce still listed but expired
// counts as unused, so the sweep may lag behind without refusing
// anything.
func (s *sqlStore) UseNonce(ctx context.Context, nonce string, expires,
	now time.Time) (bool, error) {
	fresh := false
	err := s.update(ctx, "use nonce", func(tx conn) error {
		if last := s.noncesSwept.Load(); now.UnixMicro()-last >= nonceSweep.Microseconds() &&
			s.noncesSwept.CompareAndSwap(last, now.UnixMicro()) {
			_, err := tx.ExecContext(ctx, `DELETE FROM used_nonces WHERE expires <= ?`,
				now.UnixMicro())
			if err != nil {
				return err
			}
		}
		sum := sha256.Sum256([]byte(nonce))
		res, err := tx.ExecContext(ctx, `INSERT INTO used_nonces (nonce_hash, expires)
			VALUES (?, ?)
			ON CONFLICT (nonce_hash) DO UPDATE SET expires = excluded.expires
			WHERE used_nonces.expires <= ?`,
			sum[:], expires.UnixMicro(), now.UnixMicro())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		fresh = n == 1
		return err
	})
	return fresh, err
}
