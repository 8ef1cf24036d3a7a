package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

//go:embed migrations/*/*.sql
var migrationFiles embed.FS

// dialect is what differs between the databases the store runs on. The
// queries are written once, in the SQL that SQLite and PostgreSQL share,
// with ? placeholders.
type dialect struct {
	// migrations is the directory of migrationFiles with the dialect's
	// versioned schema files.
	migrations string

	// numbered means placeholders are written $1, $2, … rather than ?.
	numbered bool

	// lock ends a SELECT of rows that the transaction goes on to change,
	// locking them until it ends so that writers in other processes
	// queue behind it; empty where write transactions already run one
	// at a time.
	lock string

	// lockSchema, run first in the migration transaction, makes
	// processes that start together migrate one after the other; empty
	// where the write transaction alone does that.
	lockSchema string

	// lockAudit, run before an audit entry is inserted, makes the
	// transactions that append to the audit log commit in the order of
	// their entries' IDs, so that a reader who saw one entry never sees
	// a lower ID appear later; empty where write transactions already
	// run one at a time.
	lockAudit string

	// cursorBothSides makes a page of devices filtered through a joined
	// table bound by the cursor both the joined table's device ID and
	// the devices' own. PostgreSQL carries an equality across a join but
	// not a range, and would otherwise merge the join from the first
	// device on; SQLite probes the devices from the joined table's index
	// and plans worse with the bound repeated.
	cursorBothSides bool

	// writeTx are the options of write transactions, and readTx of reads
	// that must see a single snapshot; nil means the driver's default.
	writeTx, readTx *sql.TxOptions

	// isUnique and isForeignKey recognise the violation of a unique or
	// primary key and of a foreign key.
	isUnique, isForeignKey func(error) bool
}

// bind rewrites the ? placeholders of query for the dialect. A ? inside
// a quoted literal or identifier is left alone.
func (d *dialect) bind(query string) string {
	if !d.numbered || !strings.Contains(query, "?") {
		return query
	}
	var (
		b     strings.Builder
		n     int
		quote byte
	)
	b.Grow(len(query) + 16)
	for i := range len(query) {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// sqlStore implements Store on database/sql. SQLite and Postgres embed
// it, each with its dialect.
type sqlStore struct {
	// w runs the write transactions and r the reads; they are the same
	// pool where the database needs no separate readers.
	w, r *sql.DB
	d    *dialect

	// rStmts caches prepared statements of r for reads outside
	// transactions; nil where the driver caches them itself. Nothing
	// else is cached: preparing on the pool from inside a transaction
	// could wait for the connection the transaction holds.
	rStmts *stmtCache

	// checks batches CheckState reads.
	checks *checkBatcher

	// noncesSwept is when UseNonce last removed expired nonces, in Unix
	// microseconds.
	noncesSwept atomic.Int64

	log *slog.Logger
	now func() time.Time
}

// Close closes the database.
func (s *sqlStore) Close() error {
	if s.rStmts != nil {
		s.rStmts.close()
	}
	if s.r == s.w {
		return s.w.Close()
	}
	return errors.Join(s.r.Close(), s.w.Close())
}

// querier runs statements on a database or in a transaction.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// conn runs statements written with ? placeholders, rewritten for its
// dialect, on a database or in a transaction.
type conn struct {
	q querier
	d *dialect

	// stmts caches prepared statements of q, a database; nil means none
	// are cached, as in transactions.
	stmts *stmtCache
}

func (c conn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	query = c.d.bind(query)
	if st := c.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return c.q.ExecContext(ctx, query, args...)
}

func (c conn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query = c.d.bind(query)
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return c.q.QueryContext(ctx, query, args...)
}

func (c conn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	query = c.d.bind(query)
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return c.q.QueryRowContext(ctx, query, args...)
}

// locking returns query, a SELECT, with the dialect's row lock appended
// when lock is true.
func (c conn) locking(query string, lock bool) string {
	if lock {
		return query + c.d.lock
	}
	return query
}

// lockRows locks the rows that query selects until the transaction ends.
// Where write transactions run one at a time it does nothing.
func lockRows(ctx context.Context, tx conn, query string, args ...any) error {
	if tx.d.lock == "" {
		return nil
	}
	rows, err := tx.QueryContext(ctx, query+tx.d.lock, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
	}
	return rows.Err()
}

// reader returns the connection pool for reads.
func (s *sqlStore) reader() conn {
	return conn{q: s.r, d: s.d, stmts: s.rStmts}
}

// update runs fn in a write transaction and commits it, together with
// the audit entry of WithAudit if ctx carries one.
func (s *sqlStore) update(ctx context.Context, op string, fn func(tx conn) error) error {
	sqlTx, err := s.w.BeginTx(ctx, s.d.writeTx)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", op, err)
	}
	tx := conn{q: sqlTx, d: s.d}
	err = fn(tx)
	if e, ok := auditFrom(ctx); ok && err == nil {
		_, err = s.insertAudit(ctx, tx, e)
	}
	if err != nil {
		sqlTx.Rollback()
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", op, err)
	}
	return nil
}

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the schema files of a dialect, ordered by
// version.
func loadMigrations(dir string) ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name does not start with a version", e.Name())
		}
		b, err := fs.ReadFile(migrationFiles, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("read migrations: none in %s", dir)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrate applies the missing migrations in one transaction.
func (s *sqlStore) migrate(ctx context.Context) error {
	ms, err := loadMigrations(s.d.migrations)
	if err != nil {
		return err
	}
	return s.update(ctx, "migrate schema", func(tx conn) error {
		if s.d.lockSchema != "" {
			if _, err := tx.ExecContext(ctx, s.d.lockSchema); err != nil {
				return fmt.Errorf("lock schema: %w", err)
			}
		}
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY,
			applied BIGINT NOT NULL)`)
		if err != nil {
			return err
		}
		var current int
		err = tx.QueryRowContext(ctx,
			`SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current)
		if err != nil {
			return err
		}
		latest := ms[len(ms)-1].version
		if current > latest {
			return fmt.Errorf("%w: version %d, this program knows up to %d",
				ErrSchemaTooNew, current, latest)
		}
		for _, m := range ms {
			if m.version <= current {
				continue
			}
			// The file runs as written, with no placeholders to bind.
			if _, err := tx.q.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			_, err := tx.ExecContext(ctx,
				`INSERT INTO schema_migrations (version, applied) VALUES (?, ?)`,
				m.version, micro(s.now()))
			if err != nil {
				return fmt.Errorf("record migration %s: %w", m.name, err)
			}
			s.log.Info("applied migration", "version", m.version, "name", m.name)
		}
		return nil
	})
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// micro stores t as Unix microseconds, the precision PostgreSQL keeps
// too; the zero time is stored as NULL.
func micro(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromMicro(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

func (s *sqlStore) stamp() time.Time {
	return s.now().UTC().Truncate(time.Microsecond)
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the package's own types are marshalled here, and none can
		// fail; a failure is a bug.
		panic(fmt.Sprintf("store: marshal %T: %v", v, err))
	}
	return string(b)
}

// rawJSON stores nil as NULL.
func rawJSON(m json.RawMessage) any {
	if m == nil {
		return nil
	}
	return string(m)
}

func fromRawJSON(v sql.NullString) json.RawMessage {
	if !v.Valid {
		return nil
	}
	return json.RawMessage(v.String)
}

// notFound turns sql.ErrNoRows into ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// mustAffect returns ErrNotFound when res changed no row.
func mustAffect(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

func (p Page) limit() (int, error) {
	switch {
	case p.Limit < 0:
		return 0, fmt.Errorf("%w: negative page limit %d", ErrInvalid, p.Limit)
	case p.Limit == 0:
		return DefaultPageLimit, nil
	}
	return min(p.Limit, MaxPageLimit), nil
}

// where collects the joins, conditions and arguments of a query.
type where struct {
	// key is the column that orders the rows: the ID column of the
	// first joined table, whose index yields rows in ID order.
	key      string
	joins    []string
	joinArgs []any
	conds    []string
	args     []any
}

func (w *where) join(alias, clause string, args ...any) {
	if len(w.joins) == 0 {
		w.key = alias + ".device_id"
	}
	w.joins = append(w.joins, clause)
	w.joinArgs = append(w.joinArgs, args...)
}

// all returns the arguments in the order String places them.
func (w *where) all() []any {
	return append(slices.Clip(w.joinArgs), w.args...)
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

// after keeps the devices whose ID is greater than cursor, bounding the
// ordering column and, with both, the devices' own ID too.
func (w *where) after(cursor string, both bool) {
	w.add(w.key+" > ?", cursor)
	if both && w.key != "d.id" {
		w.add("d.id > ?", cursor)
	}
}

func (w *where) String() string {
	var b strings.Builder
	for _, j := range w.joins {
		b.WriteString(" " + j)
	}
	if len(w.conds) > 0 {
		b.WriteString(" WHERE " + strings.Join(w.conds, " AND "))
	}
	return b.String()
}
