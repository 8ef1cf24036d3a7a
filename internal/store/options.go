package store

import (
	"log/slog"
	"time"
)

// Defaults of OpenSQLite and OpenPostgres.
const (
	// DefaultBusyTimeout is how long a SQLite connection waits for a
	// lock held by another connection, such as a second process, before
	// failing.
	DefaultBusyTimeout = 5 * time.Second

	// DefaultMaxReaders is the most SQLite read connections when NumCPU
	// is larger.
	DefaultMaxReaders = 8

	// DefaultMaxConns is the most connections a Postgres store opens to
	// the server. Each replica of a server has its own, so the sum over
	// the replicas must stay below the server's max_connections.
	DefaultMaxConns = 10
)

// Option configures OpenSQLite and OpenPostgres.
type Option func(*options)

type options struct {
	logger      *slog.Logger
	busyTimeout time.Duration
	readers     int
	maxConns    int
	now         func() time.Time
}

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.busyTimeout <= 0 {
		o.busyTimeout = DefaultBusyTimeout
	}
	if o.maxConns <= 0 {
		o.maxConns = DefaultMaxConns
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// WithLogger makes the store log migrations to l; nil, the default,
// means no logging.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithBusyTimeout sets how long a SQLite store waits for a lock held by
// another connection; zero or less means DefaultBusyTimeout. A Postgres
// store waits for row locks until the context of the call ends.
func WithBusyTimeout(d time.Duration) Option {
	return func(o *options) { o.busyTimeout = d }
}

// WithReaders sets the most read connections of a SQLite store; zero or
// less means runtime.NumCPU, at most DefaultMaxReaders. A Postgres store
// ignores it: see WithMaxConns.
func WithReaders(n int) Option {
	return func(o *options) { o.readers = n }
}

// WithMaxConns sets the most connections a Postgres store opens, for
// reads and writes together; zero or less means DefaultMaxConns. A
// SQLite store ignores it.
func WithMaxConns(n int) Option {
	return func(o *options) { o.maxConns = n }
}

// WithClock sets the clock that stamps Created, Updated and similar
// times; nil, the default, means time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}
