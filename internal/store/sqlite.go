package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLite is a Store in a SQLite database file. It writes through a single
// connection, since SQLite allows one writer at a time and queueing in Go
// is cheaper and fairer than retrying on SQLITE_BUSY, and reads through a
// pool of connections that WAL mode lets run beside the writer.
type SQLite struct {
	sqlStore
}

var _ Store = (*SQLite)(nil)

// sqliteDialect runs every write transaction alone: the single writer
// connection queues them, and BEGIN IMMEDIATE takes the file's write
// lock, which also keeps a second process out. No row needs a lock.
var sqliteDialect = dialect{
	migrations:   "migrations/sqlite",
	isUnique:     isSQLiteUnique,
	isForeignKey: isSQLiteForeignKey,
}

// OpenSQLite opens or creates the database at path and brings its schema
// up to date; ErrSchemaTooNew if a newer program migrated it.
//
// Every connection runs in WAL mode with foreign keys enforced and
// synchronous=FULL: in WAL mode, NORMAL survives a killed process but may
// lose the last commits on a power cut, and a server must not lose a
// report or an admission it acknowledged, so each commit waits for fsync.
func OpenSQLite(ctx context.Context, path string, opts ...Option) (*SQLite, error) {
	o := newOptions(opts)
	if o.readers <= 0 {
		o.readers = min(runtime.NumCPU(), DefaultMaxReaders)
	}
	if path == "" || strings.ContainsRune(path, '?') || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("open database %q: %w: want a plain file path", path, ErrInvalid)
	}

	s := &SQLite{sqlStore{d: &sqliteDialect, log: o.logger, now: o.now}}
	// Check queries run in this process: two per reader connection keep
	// every reader busy while the next batches gather.
	s.checks = &checkBatcher{s: &s.sqlStore, maxQueries: 2 * o.readers, maxBatch: 64}
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
	s.rStmts = newStmtCache(s.r)
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

func isSQLiteConstraint(err error, code int) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == code
}

func isSQLiteUnique(err error) bool {
	return isSQLiteConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE) ||
		isSQLiteConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func isSQLiteForeignKey(err error) bool {
	return isSQLiteConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY)
}
