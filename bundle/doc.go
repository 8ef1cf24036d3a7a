// Package bundle reads and writes .rota update bundles.
//
// A bundle is an OCI image-spec 1.1 artifact: a manifest whose artifactType
// is [ArtifactType], a small JSON config ([Config]) describing the release
// and each slot image, one zstd-compressed layer per slot image, and one or
// more signatures attached as OCI referrers. As a single file it is an
// uncompressed tar that is also a valid OCI image layout, written in a fixed
// order so that a device can check everything small before the first large
// byte arrives and install while streaming.
//
// [Create] builds a bundle from slot images on disk; [Open], [OpenReader]
// and [OpenRemote] read one from a file, a stream or a registry; [Push] and
// [Pull] move bundles between files and registries; [Assemble] gives the
// .rota file of a bundle whose blobs are kept elsewhere, without copying.
//
// The one rule: slot image bytes are only handed out by a [Bundle] that
// passed [Bundle.Verify], and an image reader returns io.EOF only after the
// image's compressed and uncompressed digests and sizes all matched. A
// caller that activates a slot only after reading its image to io.EOF never
// activates unverified bytes.
//
// The normative description of the format is docs/bundle-format.md.
package bundle
