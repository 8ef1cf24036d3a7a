// Package server implements rota-server's HTTP handlers on top of a
// [store.Store].
//
// [NewDeviceAPI] builds the device side, the API of docs/device-api.yaml
// under poll.APIPath: admission by signed request, short-lived bearer
// tokens, update checks, bundle downloads, reports and inventory. The
// handler keeps the state that needs no durability in memory: issued
// tokens (by their SHA-256 only), recently seen nonces and rate-limit
// buckets. A restart therefore drops every token; devices answer the
// resulting 401 by authenticating again, which the poll client does by
// itself.
//
// [NewManagementAPI] builds the side of people and their tools, the API
// of docs/management-api.yaml under [ManagementAPIPath]: users, API
// tokens and portal sessions, releases, devices, deployments and the
// audit log. Its callers hold a role (viewer, operator or admin), and
// every change it makes is written to the audit log in the same store
// transaction. Passwords are kept as argon2id hashes ([HashPassword]);
// tokens and sessions by their SHA-256 only.
//
// The one rule: the handlers never trust a request. Every body is capped
// and validated, and malformed input gets a 4xx problem document, never
// a 500.
package server
