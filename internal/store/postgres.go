package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Postgres is a Store in a PostgreSQL database, through a pool of at most
// WithMaxConns connections. Several servers may share one database, such
// as replicas behind a load balancer.
//
// Replicas stay consistent through row locks, taken in one order in
// every transaction: a deployment, then a device, then a device's row in
// a deployment, then the counts. Write transactions run at READ
// COMMITTED, so a statement after a lock sees what the transaction that
// held it committed. StartDevices locks the deployment before it counts
// the devices in progress, so replicas starting devices take turns and
// never overshoot Strategy.MaxConcurrent; AddDeploymentDevices locks
// each device before it checks that the device is free, so a device
// added to two deployments at once ends up in one; RecordReport locks
// the device's row in the deployment, so two reports of one device apply
// in turn. Migrations run under an advisory lock, so replicas that start
// together migrate one after the other.
type Postgres struct {
	sqlStore
}

var _ Store = (*Postgres)(nil)

// schemaLockKey names the advisory lock held while migrating: "rota_mig"
// in ASCII.
const schemaLockKey = 0x726f74615f6d6967

// auditLockKey names the advisory lock held from taking an audit entry's
// ID to the commit: "rota_aud" in ASCII.
const auditLockKey = 0x726f74615f617564

// SQLSTATE codes of the errors the store maps.
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
)

// postgresDialect locks rows instead of running one writer at a time.
// Reads that must agree use one snapshot, REPEATABLE READ; writes run at
// READ COMMITTED whatever the server's default, since the locking above
// relies on a statement seeing what was committed while it waited.
var postgresDialect = dialect{
	migrations:      "migrations/postgres",
	numbered:        true,
	cursorBothSides: true,
	lock:            " FOR NO KEY UPDATE",
	lockSchema:      "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(schemaLockKey, 10) + ")",
	lockAudit:       "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(auditLockKey, 10) + ")",
	writeTx:         &sql.TxOptions{Isolation: sql.LevelReadCommitted},
	readTx:          &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
	isUnique:        func(err error) bool { return isPgCode(err, pgUniqueViolation) },
	isForeignKey:    func(err error) bool { return isPgCode(err, pgForeignKeyViolation) },
}

// OpenPostgres connects to the PostgreSQL database at url, such as
// "postgres://rota:secret@db.example.com:5432/rota?sslmode=verify-full",
// and brings its schema up to date; ErrSchemaTooNew if a newer program
// migrated it. The keyword/value form ("host=db dbname=rota") and the
// PG* environment variables work too, as for libpq.
//
// Unless url sets synchronous_commit, sessions run with it on, so that a
// method returns only once its commit is on disk.
func OpenPostgres(ctx context.Context, url string, opts ...Option) (*Postgres, error) {
	o := newOptions(opts)
	if url == "" {
		return nil, fmt.Errorf("open database: %w: empty connection URL", ErrInvalid)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// The parse error redacts the password of the URL it quotes.
		return nil, fmt.Errorf("open database: %w: %w", ErrInvalid, err)
	}
	name := fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.RuntimeParams["synchronous_commit"]; !ok {
		cfg.RuntimeParams["synchronous_commit"] = "on"
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "rota"
	}

	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(o.maxConns)
	db.SetMaxIdleConns(o.maxConns)
	s := &Postgres{sqlStore{w: db, r: db, d: &postgresDialect, log: o.logger, now: o.now}}
	// One check query out at a time: the next batch gathers while it
	// runs, and the server's backends stay free for the writes. More
	// queries at once measured slower (docs/benchmarks.md).
	s.checks = &checkBatcher{s: &s.sqlStore, maxQueries: 1, maxBatch: 256}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", name, err)
	}
	return s, nil
}

func isPgCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}
