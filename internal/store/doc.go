// Package store keeps the state of a ROTA server: devices and their
// admission, releases, deployments with their per-device progress and
// reports, the audit log, users, API tokens and portal sessions.
//
// [Store] is the model: one interface, grouped by entity, that the server
// programs against. [SQLite] implements it on an embedded, pure-Go SQLite
// database file for a single server; [Postgres] on a PostgreSQL database
// that several replicas of the server may share. Both run the same
// queries through database/sql and differ only in a small dialect:
// placeholders, error codes, row locks and each one's schema migrations,
// which OpenSQLite and OpenPostgres apply on open.
//
// The one rule: every state change of a device or deployment is a single
// transaction, committed durably before the method returns. A method that
// returned nil has written something that survives the process being
// killed or the machine losing power; a method that failed changed nothing.
//
// Replicas on one PostgreSQL database coordinate through the database
// alone. A transaction locks the rows it is about to change, always in the
// same order: deployment, device, a device's row in a deployment, counts.
// So starting devices never overshoots a deployment's MaxConcurrent, and
// a device added to two deployments at once lands in one; see [Postgres].
package store
