// Package bundlestore keeps the .rota bundles of a server's releases.
//
// A [Store] holds bundles by manifest digest and hands each back as a
// seekable .rota file for http.ServeContent, so devices can resume
// downloads with Range requests. Open never reads a stored copy of the
// file: it assembles it from the bundle's blobs with bundle.Assemble,
// byte for byte what bundle.Bundle.Write gives, reading only the ranges
// asked for.
//
// [Layout], the default, is an OCI image layout directory that OCI tools
// read as it is. Every blob goes through a synced temporary file renamed
// into place once its digest matched, before index.json, replaced
// atomically, names it: a crash never leaves the index naming a missing
// or partial blob. Writers take an flock in the directory, so server
// replicas may share it on a file system with working flock and rename.
// [Registry] keeps bundles in one repository of an OCI registry, which
// replicas share as they share the registry; optionally it also keeps
// each assembled file as one blob, which devices may then download from
// the registry itself ([Registry.DownloadURL]).
//
// The one rule: a store checks integrity, not trust. Put verifies blobs
// against their digests; the caller verifies signatures first.
package bundlestore
