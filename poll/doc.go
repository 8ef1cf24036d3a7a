// Package poll is the device side of ROTA's device API: the wire types
// shared with the server and a retrying HTTPS client for them.
//
// The device opens no port. A [Client], built by [New], authenticates with
// the device's Ed25519 key ([LoadOrCreateKey]), asks whether an update is
// pending ([Client.Check]), downloads the bundle ([Client.Download]),
// reports each state change ([Client.Report]) and sends its inventory
// ([Client.Inventory]). Between checks the caller sleeps [NextPoll].
//
// The one rule: every failure is returned as an [*Error], and its
// Temporary method decides between trying again later and reporting.
// The normative description of the protocol is docs/device-api.yaml.
package poll
