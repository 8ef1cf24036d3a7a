// Package store keeps the state of a ROTA server: devices and their
// admission, releases, deployments with their per-device progress and
// reports, the audit log, users, API tokens and portal sessions.
//
// [Store] is the model: one interface, grouped by entity, that the server
// programs against. [SQLite] implements it on an embedded, pure-Go SQLite
// database; a PostgreSQL implementation can follow behind the same
// interface, so the contract names no SQL dialect.
//
// The one rule: every state change of a device or deployment is a single
// transaction, committed durably before the method returns. A method that
// returned nil has written something that survives the process being
// killed or the machine losing power; a method that failed changed nothing.
package store
