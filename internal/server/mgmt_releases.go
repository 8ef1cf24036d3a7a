package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/bundlestore"
	"github.com/rotaupdate/rota/internal/store"
)

// BundleMediaType is the media type of a .rota file; an upload may also
// be sent as application/octet-stream.
const BundleMediaType = "application/vnd.rota.bundle"

// maxReference is the longest registry reference accepted.
const maxReference = 1024

type releaseJSON struct {
	ID              string          `json:"id"`
	Version         string          `json:"version"`
	Compatible      string          `json:"compatible"`
	Digest          string          `json:"digest"`
	Size            int64           `json:"size"`
	Location        string          `json:"location"`
	SignatureKeyIDs []string        `json:"signatureKeyIds"`
	Images          json.RawMessage `json:"images,omitempty"`
	Created         time.Time       `json:"created"`
}

func toReleaseJSON(r store.Release) releaseJSON {
	keys := r.SignatureKeyIDs
	if keys == nil {
		keys = []string{}
	}
	return releaseJSON{ID: r.ID, Version: r.Version, Compatible: r.Compatible,
		Digest: r.Digest, Size: r.Size, Location: r.Location, SignatureKeyIDs: keys,
		Images: r.Images, Created: r.Created}
}

// imageJSON describes a slot image of a release, as kept in
// store.Release.Images.
type imageJSON struct {
	Class      string `json:"class"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Filesystem string `json:"filesystem,omitempty"`
}

// releaseDetail is a release with what its bundle says of itself. The
// bundle fields are absent when the bundle store cannot provide it.
type releaseDetail struct {
	releaseJSON
	BundleAvailable bool            `json:"bundleAvailable"`
	RollbackIndex   *uint64         `json:"rollbackIndex,omitempty"`
	Description     string          `json:"description,omitempty"`
	MinAgentVersion string          `json:"minAgentVersion,omitempty"`
	BundleCreated   time.Time       `json:"bundleCreated,omitzero"`
	Signatures      []signatureJSON `json:"signatures"`
}

type signatureJSON struct {
	KeyID   string    `json:"keyId"`
	Digest  string    `json:"digest"`
	Created time.Time `json:"created,omitzero"`
	Trusted bool      `json:"trusted"`
}

func (a *mgmtAPI) listReleases(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, pageParams...)
	if !ok {
		return
	}
	page, ok := readPage(w, q)
	if !ok {
		return
	}
	rels, next, err := a.cfg.Store.ListReleases(r.Context(), page)
	if err != nil {
		a.storeError(w, r, "releases", err)
		return
	}
	writeJSON(w, http.StatusOK, newPage(rels, next, toReleaseJSON))
}

// uploadRelease stores the .rota file of the request body as a release.
func (a *mgmtAPI) uploadRelease(w http.ResponseWriter, r *http.Request) {
	if a.trustsNoKey(w) {
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != BundleMediaType && mt != "application/octet-stream" {
		writeProblem(w, http.StatusUnsupportedMediaType, "send the .rota file as "+
			BundleMediaType+" or application/octet-stream")
		return
	}
	if r.ContentLength > a.cfg.MaxUploadSize {
		a.tooLarge(w)
		return
	}
	body := &sourceReader{r: http.MaxBytesReader(w, r.Body, a.cfg.MaxUploadSize)}
	path, err := a.spool(func(f *os.File) error {
		_, err := io.Copy(f, body)
		return err
	})
	var tooBig *http.MaxBytesError
	var src *sourceError
	switch {
	case errors.As(err, &tooBig):
		a.tooLarge(w)
		return
	case errors.As(err, &src):
		writeProblem(w, http.StatusBadRequest, "read upload: "+src.Error())
		return
	case err != nil:
		a.fail(w, r, err)
		return
	}
	defer os.Remove(path)
	a.ingest(w, r, path, map[string]any{"source": "upload"})
}

type registerRequest struct {
	Reference string `json:"reference"`
}

// registerRelease pulls a bundle from a registry and stores it as a
// release, as if it had been uploaded.
func (a *mgmtAPI) registerRelease(w http.ResponseWriter, r *http.Request) {
	var req registerRequest
	if !readStrictJSON(w, r, &req) || a.trustsNoKey(w) {
		return
	}
	ref := req.Reference
	if ref == "" || len(ref) > maxReference || strings.IndexFunc(ref, notGraphic) >= 0 {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf(
			"reference must be a registry reference such as registry.example.com/fleet/"+
				"acme:1.2.3 or …@sha256:…, at most %d bytes", maxReference))
		return
	}
	path, err := a.spool(func(f *os.File) error {
		dst := &sinkWriter{w: f, left: a.cfg.MaxUploadSize}
		_, err := bundle.Pull(r.Context(), ref, dst, a.cfg.Remote)
		return err
	})
	if err != nil {
		a.pullFailed(w, r, err)
		return
	}
	defer os.Remove(path)
	a.ingest(w, r, path, map[string]any{"source": "registry", "reference": ref})
}

// trustsNoKey answers 422 and returns true when the keyring is empty, so
// that no bundle is transferred only to be refused.
func (a *mgmtAPI) trustsNoKey(w http.ResponseWriter) bool {
	if a.cfg.Keyring.Len() > 0 {
		return false
	}
	writeProblem(w, http.StatusUnprocessableEntity,
		"the server trusts no release signing key, so it accepts no bundle")
	return true
}

// pullFailed answers for a failed pull: 413 for a bundle over the limit,
// 400 for a malformed reference, 422 for what the registry refused or a
// malformed bundle, 502 for a registry that failed, and 500 for a failure
// to spool.
func (a *mgmtAPI) pullFailed(w http.ResponseWriter, r *http.Request, err error) {
	var sink *sinkError
	var terr *transport.Error
	switch {
	case errors.Is(err, errTooLarge):
		a.tooLarge(w)
	case errors.As(err, &sink):
		a.fail(w, r, sink)
	case name.IsErrBadName(err):
		writeProblem(w, http.StatusBadRequest, err.Error())
	case errors.As(err, &terr) && terr.StatusCode < 500, isBundleError(err):
		writeProblem(w, http.StatusUnprocessableEntity, "pull bundle: "+err.Error())
	default:
		writeProblem(w, http.StatusBadGateway, "pull bundle: "+err.Error())
	}
}

func notGraphic(r rune) bool { return !unicode.IsGraphic(r) || unicode.IsSpace(r) }

func (a *mgmtAPI) tooLarge(w http.ResponseWriter) {
	writeProblem(w, http.StatusRequestEntityTooLarge,
		fmt.Sprintf("bundle over %d bytes", a.cfg.MaxUploadSize))
}

// spool runs fill on a new file in TempDir and returns its path; on
// failure it removes the file.
func (a *mgmtAPI) spool(fill func(*os.File) error) (string, error) {
	f, err := os.CreateTemp(a.cfg.TempDir, "bundle-*.rota")
	if err != nil {
		return "", fmt.Errorf("spool bundle: %w", err)
	}
	err = fill(f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("spool bundle: %w", cerr)
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// sourceError marks an error of the client's side of a copy.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// sourceReader marks its reader's errors as sourceErrors.
type sourceReader struct{ r io.Reader }

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &sourceError{err}
	}
	return n, err
}

// errTooLarge is returned by a sinkWriter asked to write past its limit.
var errTooLarge = errors.New("bundle too large")

// sinkError marks an error of the server's side of a copy.
type sinkError struct{ err error }

func (e *sinkError) Error() string { return e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }

// sinkWriter writes at most left bytes to w and marks w's errors as
// sinkErrors.
type sinkWriter struct {
	w    io.Writer
	left int64
}

func (s *sinkWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > s.left {
		return 0, errTooLarge
	}
	n, err := s.w.Write(p)
	s.left -= int64(n)
	if err != nil {
		err = &sinkError{err}
	}
	return n, err
}

// isBundleError reports whether err says a bundle is malformed rather
// than that it could not be read.
func isBundleError(err error) bool {
	for _, e := range []error{bundle.ErrInvalidBundle, bundle.ErrTruncated,
		bundle.ErrDigestMismatch, bundle.ErrUnsupportedFormat} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// isFileError reports whether err is a failure to read or write a file
// of the server's own, rather than a fault of the file's content.
func isFileError(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe)
}

// ingest verifies the .rota file at path, a copy of the server's own,
// and stores it as a release: in the bundle store, then in the store.
// source describes where it came from, for the audit log. A bundle that
// is malformed, signed by no trusted key or already known is refused
// before anything is stored.
func (a *mgmtAPI) ingest(w http.ResponseWriter, r *http.Request, path string,
	source map[string]any) {
	ctx := r.Context()
	b, err := bundle.Open(path, bundle.Options{})
	if err != nil {
		a.contentError(w, r, "not a valid bundle", err)
		return
	}
	defer b.Close()
	if _, err := b.Verify(a.cfg.Keyring); err != nil {
		writeProblem(w, http.StatusUnprocessableEntity, fmt.Sprintf(
			"bundle %s is not signed by a trusted key: %v", b.Digest(), err))
		return
	}
	if a.knownBundle(w, r, b.Digest()) {
		return
	}
	// Check every layer against its digest here, so that what is wrong
	// with the upload is told apart from a failure of the bundle store.
	if _, err := b.Write(ctx, io.Discard); err != nil {
		a.contentError(w, r, "bundle content does not match its manifest", err)
		return
	}

	entry, err := a.cfg.Bundles.Put(ctx, path)
	if err != nil {
		a.fail(w, r, fmt.Errorf("store bundle %s: %w", b.Digest(), err))
		return
	}
	if entry.Digest != b.Digest() {
		a.fail(w, r, fmt.Errorf("store bundle %s: bundle store returned digest %s",
			b.Digest(), entry.Digest))
		return
	}
	rel, err := newRelease(b, entry)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	details := map[string]any{"version": rel.Version, "compatible": rel.Compatible,
		"digest": rel.Digest, "size": rel.Size}
	for k, v := range source {
		details[k] = v
	}
	rel, err = a.cfg.Store.CreateRelease(a.audited(r, "release.create", "release:"+rel.ID,
		details), rel)
	if errors.Is(err, store.ErrExists) {
		// Another request stored the same bundle since the check; the
		// bundle is that release's now.
		a.knownBundle(w, r, entry.Digest)
		return
	}
	if err != nil {
		a.dropBundle(ctx, entry.Digest)
		a.fail(w, r, err)
		return
	}
	a.log.InfoContext(ctx, "release created", "release", rel.ID, "version", rel.Version,
		"digest", rel.Digest)
	w.Header().Set("Location", ManagementAPIPath+"/releases/"+rel.ID)
	writeJSON(w, http.StatusCreated, toReleaseJSON(rel))
}

// contentError answers for an error reading a spooled bundle: 422 when
// the content is at fault, 500 when reading the file failed.
func (a *mgmtAPI) contentError(w http.ResponseWriter, r *http.Request, what string,
	err error) {
	if isFileError(err) {
		a.fail(w, r, err)
		return
	}
	writeProblem(w, http.StatusUnprocessableEntity, fmt.Sprintf("%s: %v", what, err))
}

// knownBundle answers 409 and returns true when a release holds the
// bundle with digest.
func (a *mgmtAPI) knownBundle(w http.ResponseWriter, r *http.Request, digest string) bool {
	rel, err := a.cfg.Store.ReleaseByDigest(r.Context(), digest)
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	if err != nil {
		a.fail(w, r, err)
		return true
	}
	writeProblemWith(w, http.StatusConflict,
		fmt.Sprintf("release %s already holds bundle %s", rel.ID, digest),
		map[string]any{"releaseId": rel.ID})
	return true
}

// dropBundle removes a bundle stored for a release that could not be
// created, unless a release holds it after all.
func (a *mgmtAPI) dropBundle(ctx context.Context, digest string) {
	if _, err := a.cfg.Store.ReleaseByDigest(ctx, digest); !errors.Is(err, store.ErrNotFound) {
		return
	}
	if err := a.cfg.Bundles.Delete(ctx, digest); err != nil {
		a.log.WarnContext(ctx, "remove bundle of failed release", "digest", digest, "err", err)
	}
}

// newRelease returns the release of a verified bundle stored as entry.
func newRelease(b *bundle.Bundle, entry bundlestore.Entry) (store.Release, error) {
	cfg := b.Config()
	images := make([]imageJSON, 0, len(cfg.Images))
	for _, im := range cfg.Images {
		images = append(images, imageJSON{Class: im.Class, Size: im.Size, SHA256: im.SHA256,
			Filesystem: im.Filesystem})
	}
	raw, err := json.Marshal(images)
	if err != nil {
		return store.Release{}, fmt.Errorf("encode images of bundle %s: %w", entry.Digest, err)
	}
	var keys []string
	for _, s := range b.Signatures() {
		if s.KeyID != "" {
			keys = append(keys, s.KeyID)
		}
	}
	return store.Release{ID: newID(), Version: cfg.Version, Compatible: cfg.Compatible,
		Digest: entry.Digest, Size: entry.Size, Location: entry.Location,
		SignatureKeyIDs: keys, Images: raw}, nil
}

// getRelease describes a release, with what its stored bundle says.
func (a *mgmtAPI) getRelease(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	rel, err := a.cfg.Store.Release(r.Context(), id)
	if err != nil {
		a.storeError(w, r, "release "+id, err)
		return
	}
	d := releaseDetail{releaseJSON: toReleaseJSON(rel), Signatures: []signatureJSON{}}
	if err := a.describeBundle(r.Context(), &d); err != nil {
		a.log.WarnContext(r.Context(), "read bundle of release", "release", id,
			"digest", rel.Digest, "err", err)
	}
	writeJSON(w, http.StatusOK, d)
}

// describeBundle fills in d what the metadata of its stored bundle says;
// a bundle not stored is no error.
func (a *mgmtAPI) describeBundle(ctx context.Context, d *releaseDetail) error {
	f, err := a.cfg.Bundles.Open(ctx, d.Digest)
	if errors.Is(err, bundlestore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := bundle.OpenReader(f, bundle.Options{})
	if err != nil {
		return err
	}
	defer b.Close()
	cfg := b.Config()
	d.BundleAvailable = true
	d.RollbackIndex = &cfg.RollbackIndex
	d.Description, d.MinAgentVersion, d.BundleCreated = cfg.Description,
		cfg.MinAgentVersion, cfg.Created
	trusted := map[string]bool{}
	good, _ := b.Verify(a.cfg.Keyring) // none trusted is a fine answer here
	for _, s := range good {
		trusted[s.Digest] = true
	}
	for _, s := range b.Signatures() {
		d.Signatures = append(d.Signatures, signatureJSON{KeyID: s.KeyID, Digest: s.Digest,
			Created: s.Created, Trusted: trusted[s.Digest]})
	}
	return nil
}

// deleteRelease removes a release no deployment uses, and its bundle.
func (a *mgmtAPI) deleteRelease(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	rel, err := a.cfg.Store.Release(r.Context(), id)
	if err != nil {
		a.storeError(w, r, "release "+id, err)
		return
	}
	ctx := a.audited(r, "release.delete", "release:"+id,
		map[string]any{"version": rel.Version, "digest": rel.Digest})
	err = a.cfg.Store.DeleteRelease(ctx, id)
	if errors.Is(err, store.ErrInUse) {
		writeProblem(w, http.StatusConflict, fmt.Sprintf(
			"release %s is used by a deployment and cannot be deleted", id))
		return
	}
	if err != nil {
		a.storeError(w, r, "release "+id, err)
		return
	}
	// The release is gone; a bundle left behind only takes space, which
	// the log tells about.
	err = a.cfg.Bundles.Delete(r.Context(), rel.Digest)
	switch {
	case errors.Is(err, bundlestore.ErrDeleteRefused):
		a.log.InfoContext(r.Context(), "bundle of deleted release stays in its registry",
			"release", id, "digest", rel.Digest, "err", err)
	case err != nil:
		a.log.ErrorContext(r.Context(), "remove bundle of deleted release", "release", id,
			"digest", rel.Digest, "err", err)
	}
	w.WriteHeader(http.StatusNoContent)
}
