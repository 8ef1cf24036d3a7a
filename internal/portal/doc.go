// Package portal is ROTA's web portal: server-rendered pages for people
// to manage devices, releases, deployments, users and API tokens, and to
// read the audit log.
//
// The portal holds no state and no database of its own. It is a client
// of the management API (docs/management-api.yaml): each page is built
// from API answers, and each form becomes an API call made with the
// signed-in user's session, so the API decides what a role may do. New
// returns the portal as an http.Handler; rota-server mounts it at "/"
// and reaches its own API through InProcessTransport, while rota-portal
// serves it alone against a remote server over HTTP.
//
// The one rule for callers: the portal must be served at the root of its
// origin, since its links and cookies use absolute paths.
package portal
