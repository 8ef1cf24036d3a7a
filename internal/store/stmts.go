package store

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStatements bounds a stmtCache: queries built from filters
// vary, and only the fixed ones of the hot paths need caching.
const maxCachedStatements = 256

// stmtCache keeps prepared statements of a database by their text, so
// that a query parsed once runs many times. It pays off with SQLite,
// where parsing and planning cost as much as running a point query;
// pgx caches statements on its own.
type stmtCache struct {
	db *sql.DB

	mu    sync.RWMutex // guards stmts
	stmts map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}}
}

// get returns the prepared statement of query, preparing it if needed;
// nil when the cache is full or preparing failed, and the caller then
// runs the query unprepared, which reports any error.
func (c *stmtCache) get(ctx context.Context, query string) *sql.Stmt {
	c.mu.RLock()
	st := c.stmts[query]
	c.mu.RUnlock()
	if st != nil {
		return st
	}
	// Prepare without holding the lock: preparing waits for a connection,
	// and a reader holding one may be about to look up a statement.
	c.mu.RLock()
	full := len(c.stmts) >= maxCachedStatements
	c.mu.RUnlock()
	if full {
		return nil
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.stmts[query]; old != nil || c.stmts == nil {
		st.Close() // another reader won the race, or the cache closed
		return old
	}
	c.stmts[query] = st
	return st
}

// close closes the statements; the cache must not be used afterwards.
func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.stmts {
		st.Close()
	}
	c.stmts = nil
}

// stmt returns the cached statement for query on c; nil when c caches
// nothing.
func (c conn) stmt(ctx context.Context, query string) *sql.Stmt {
	if c.stmts == nil {
		return nil
	}
	return c.stmts.get(ctx, query)
}
