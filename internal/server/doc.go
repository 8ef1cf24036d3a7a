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
// The one rule: the handler never trusts a request. Every body is capped
// and validated, and malformed input gets a 4xx problem document, never
// a 500.
package server
