// Package polltest provides an in-process fake of ROTA's device API for
// tests of package poll and of agents built on it.
//
// A [Server], started by [NewServer] or [NewTLSServer] and closed when
// the test ends, admits devices by the rules set on it, issues tokens,
// answers checks with the update set by [Server.SetUpdate], serves files
// with Range support, and records reports and inventories for the test to
// inspect. Queued [Fault] values make the next requests to a path fail in
// the ways real networks and servers do.
//
// The server keeps everything in memory and is safe for concurrent use;
// it is not a reference implementation of the server side.
package polltest
