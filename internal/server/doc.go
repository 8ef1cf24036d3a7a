// Package server implements rota-server's HTTP handlers on top of a
// [store.Store].
//
// [NewDeviceAPI] builds the device side, the API of docs/device-api.yaml
// under poll.APIPath: admission by signed request, short-lived bearer
// tokens, update checks, bundle downloads, reports and inventory. Device
// tokens need no state: each is signed with a key that the store keeps
// for every replica, so a token is good at all of them and survives
// their restarts. The nonces of signed requests are kept in the store
// too, so that a replay is refused by every replica. Only rate-limit
// buckets live in memory, per replica.
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
