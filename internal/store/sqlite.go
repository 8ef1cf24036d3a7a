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
	"net/url"
	"path"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Defaults of OpenSQLite.
const (
	// DefaultBusyTimeout is how long a connection waits for a lock held
	// by another connection, such as a second process, before failing.
	DefaultBusyTimeout = 5 * time.Second

	// DefaultMaxReaders is the most read connections when NumCPU is
	// larger.
	DefaultMaxReaders = 8
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// Option configures OpenSQLite.
type Option func(*options)

type options struct {
	logger      *slog.Logger
	busyTimeout time.Duration
	readers     int
	now         func() time.Time
}

// WithLogger makes the store log migrations to l; nil, the default,
// means no logging.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithBusyTimeout sets how long to wait for a lock held by another
// connection; zero or less means DefaultBusyTimeout.
func WithBusyTimeout(d time.Duration) Option {
	return func(o *options) { o.busyTimeout = d }
}

// WithReaders sets the most read connections; zero or less means
// runtime.NumCPU, at most DefaultMaxReaders.
func WithReaders(n int) Option {
	return func(o *options) { o.readers = n }
}

// WithClock sets the clock that stamps Created, Updated and similar
// times; nil, the default, means time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// SQLite is a Store in a SQLite database file. It writes through a single
// connection, since SQLite allows one writer at a time and queueing in Go
// is cheaper and fairer than retrying on SQLITE_BUSY, and reads through a
// pool of connections that WAL mode lets run beside the writer.
type SQLite struct {
	w, r *sql.DB
	log  *slog.Logger
	now  func() time.Time
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens or creates the database at path and brings its schema
// up to date; ErrSchemaTooNew if a newer program migrated it.
//
// Every connection runs in WAL mode with foreign keys enforced and
// synchronous=FULL: in WAL mode, NORMAL survives a killed process but may
// lose the last commits on a power cut, and a server must not lose a
// report or an admission it acknowledged, so each commit waits for fsync.
func OpenSQLite(ctx context.Context, path string, opts ...Option) (*SQLite, error) {
	o := options{busyTimeout: DefaultBusyTimeout, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.busyTimeout <= 0 {
		o.busyTimeout = DefaultBusyTimeout
	}
	if o.readers <= 0 {
		o.readers = min(runtime.NumCPU(), DefaultMaxReaders)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if path == "" || strings.ContainsRune(path, '?') || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("open database %q: %w: want a plain file path", path, ErrInvalid)
	}

	s := &SQLite{log: o.logger, now: o.now}
	var err error
	s.w, err = sql.Open("sqlite", dsn(path, o.busyTimeout, false))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)

	if err := s.migrate(ctx); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}

	// Readers open only after the writer has switched the file to WAL.
	s.r, err = sql.Open("sqlite", dsn(path, o.busyTimeout, true))
	if err != nil {
		s.w.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	s.r.SetMaxOpenConns(o.readers)
	s.r.SetMaxIdleConns(o.readers)
	return s, nil
}

func dsn(path string, busy time.Duration, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		// Take the write lock at BEGIN, so a transaction never fails
		// halfway when upgrading a read lock.
		q.Set("_txlock", "immediate")
	}
	return path + "?" + q.Encode()
}

// Close closes the database.
func (s *SQLite) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	const dir = "migrations/sqlite"
	entries, err := fs.ReadDir(sqliteMigrations, dir)
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
		b, err := fs.ReadFile(sqliteMigrations, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrate applies the missing migrations in one transaction.
func (s *SQLite) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	return s.update(ctx, "migrate schema", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY,
			applied INTEGER NOT NULL)`)
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
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
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

// update runs fn in a write transaction and commits it, together with
// the audit entry of WithAudit if ctx carries one.
func (s *SQLite) update(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", op, err)
	}
	err = fn(tx)
	if e, ok := auditFrom(ctx); ok && err == nil {
		_, err = s.insertAudit(ctx, tx, e)
	}
	if err != nil {
		tx.Rollback()
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", op, err)
	}
	return nil
}

// querier runs statements on a database or in a transaction.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
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

func (s *SQLite) stamp() time.Time {
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

func isConstraint(err error, code int) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == code
}

func isUnique(err error) bool {
	return isConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE) ||
		isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func isForeignKey(err error) bool {
	return isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY)
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
