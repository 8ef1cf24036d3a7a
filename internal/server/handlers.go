package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/rotaupdate/rota/internal/bundlestore"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// auth admits devices: it verifies the signed payload, refuses replays,
// registers unknown keys as pending and gives accepted devices a token.
// Failed requests are limited by client address, since until a
// signature is verified there is no key to count them by; valid ones
// are limited by key.
func (a *deviceAPI) auth(w http.ResponseWriter, r *http.Request) {
	client := clientKey(clientAddr(r, a.cfg.TrustedProxies))
	if a.blocked(w, client) {
		return
	}
	var req poll.AuthRequest
	if !readJSON(w, r, &req) {
		a.failed(client)
		return
	}
	now := a.cfg.Now()
	p, pub, err := req.Verify(now)
	if err != nil {
		a.failed(client)
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	keyID := poll.KeyID(pub)
	if a.rateLimited(w, "key:"+keyID) {
		return
	}
	// The store keeps the nonce for every replica, as long as a request
	// carrying it could pass the timestamp check.
	fresh, err := a.cfg.Store.UseNonce(r.Context(), keyID+" "+p.Nonce,
		now.Add(2*poll.MaxClockSkew), now)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !fresh {
		a.failed(client)
		writeProblem(w, http.StatusBadRequest, "nonce already used: request replayed")
		return
	}

	dev, err := a.admit(r.Context(), keyID, p)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	switch dev.Status {
	case store.StatusAccepted:
		expires := now.Add(a.cfg.TokenLifetime).UTC().Truncate(0)
		token := a.sessions.issue(dev.ID, expires)
		writeJSON(w, http.StatusOK, poll.AuthResponse{Status: poll.AuthAccepted,
			Token: token, ExpiresAt: expires})
	case store.StatusPending:
		writeJSON(w, http.StatusAccepted, poll.AuthResponse{Status: poll.AuthPending,
			RetryAfter: a.pollSeconds()})
	default:
		// Rejected and decommissioned devices look the same to a device.
		a.failed(client)
		writeJSON(w, http.StatusForbidden, poll.AuthResponse{Status: poll.AuthRejected})
	}
}

// admit returns the device with keyID, registering it as pending if it
// is new and accepting it if it is pending and shows the enrollment token.
func (a *deviceAPI) admit(ctx context.Context, keyID string,
	p *poll.AuthPayload) (store.Device, error) {
	dev, err := a.cfg.Store.DeviceByKey(ctx, keyID)
	if errors.Is(err, store.ErrNotFound) {
		dev, err = a.cfg.Store.CreateDevice(ctx, store.Device{KeyID: keyID,
			PublicKeyPEM: p.PublicKey, Identity: p.Identity.Attributes})
		if errors.Is(err, store.ErrExists) {
			// Another request of the same device registered it first.
			dev, err = a.cfg.Store.DeviceByKey(ctx, keyID)
		} else if err == nil {
			a.log.InfoContext(ctx, "device registered", "device", dev.ID, "key", keyID)
		}
	}
	if err != nil {
		return store.Device{}, err
	}
	if dev.Status != store.StatusPending || !a.enrolls(p.EnrollmentToken) {
		return dev, nil
	}
	dev, err = a.cfg.Store.SetDeviceStatus(ctx, dev.ID, store.StatusAccepted)
	if err != nil {
		return store.Device{}, err
	}
	a.log.InfoContext(ctx, "device accepted by enrollment token", "device", dev.ID)
	return dev, nil
}

func (a *deviceAPI) enrolls(token string) bool {
	want := a.cfg.EnrollmentToken
	return want != "" && subtle.ConstantTimeCompare([]byte(token), []byte(want)) == 1
}

// device returns the accepted device whose token the request carries, or
// answers 401, 403 or 429 and returns false.
func (a *deviceAPI) device(w http.ResponseWriter, r *http.Request) (store.Device, bool) {
	id, ok := a.authenticate(w, r)
	if !ok {
		return store.Device{}, false
	}
	dev, err := a.cfg.Store.Device(r.Context(), id)
	if !a.admitted(w, r, dev, err) {
		return store.Device{}, false
	}
	return dev, true
}

// checkState is device for the update check: it returns the accepted
// device's check state, read in one query, or answers 401, 403 or 429
// and returns false.
func (a *deviceAPI) checkState(w http.ResponseWriter, r *http.Request) (store.CheckState, bool) {
	id, ok := a.authenticate(w, r)
	if !ok {
		return store.CheckState{}, false
	}
	st, err := a.cfg.Store.CheckState(r.Context(), id)
	if !a.admitted(w, r, st.Device, err) {
		return store.CheckState{}, false
	}
	return st, true
}

// authenticate returns the ID of the device whose token the request
// carries, or answers 401 or 429 and returns false.
func (a *deviceAPI) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	token, ok := bearerToken(r)
	var id string
	if ok {
		id, ok = a.sessions.lookup(token, a.cfg.Now())
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rota"`)
		writeProblem(w, http.StatusUnauthorized, "missing, unknown or expired token")
		return "", false
	}
	if a.rateLimited(w, "device:"+id) {
		return "", false
	}
	return id, true
}

// admitted reports whether dev, read with err, is an accepted device; if
// not, it answers 401, 403 or 500.
func (a *deviceAPI) admitted(w http.ResponseWriter, r *http.Request, dev store.Device,
	err error) bool {
	switch {
	case errors.Is(err, store.ErrNotFound):
		w.Header().Set("WWW-Authenticate", `Bearer realm="rota"`)
		writeProblem(w, http.StatusUnauthorized, "the token's device no longer exists")
		return false
	case err != nil:
		a.fail(w, r, err)
		return false
	case dev.Status != store.StatusAccepted:
		// An operator withdrew the admission since the token was issued.
		writeProblem(w, http.StatusForbidden, "device is "+string(dev.Status))
		return false
	}
	return true
}

func (a *deviceAPI) check(w http.ResponseWriter, r *http.Request) {
	st, ok := a.checkState(w, r)
	if !ok {
		return
	}
	dev := st.Device
	var req poll.CheckRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}

	info := store.CheckInfo{At: a.cfg.Now(), Version: req.Installed.Version,
		Digest: req.Installed.Digest}
	if req.Slots != nil {
		info.Slots, _ = json.Marshal(req.Slots) // plain strings and booleans
	}
	if unchanged(dev, info) {
		if batch := a.seen.add(dev.ID, info.At); batch != nil {
			go a.flushSeen(batch)
		}
	} else if err := a.cfg.Store.RecordCheck(r.Context(), dev.ID, info); err != nil {
		a.fail(w, r, err)
		return
	}
	update, err := a.offer(r.Context(), dev.ID, st.Deployment, req.Compatible)
	if err != nil {
		a.fail(w, r, err)
		return
	}

	body, _ := json.Marshal(poll.CheckResponse{Update: update, PollInterval: a.pollSeconds()})
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	w.Header().Set("ETag", etag)
	if etagMatch(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// unchanged reports whether a check tells nothing new of the device but
// the time: it checked before, and runs the release and has the slots
// stored.
func unchanged(dev store.Device, c store.CheckInfo) bool {
	return !dev.LastCheck.IsZero() && c.Version == dev.InstalledVersion &&
		c.Digest == dev.InstalledDigest && (c.Slots == nil || bytes.Equal(c.Slots, dev.Slots))
}

// offer returns the update the device should install now, given its
// part dd in its active or paused deployment; nil if none. A device that
// reports the offered digest installed is still offered it: its agent
// answers already-installed, which finishes the device's part in the
// deployment.
func (a *deviceAPI) offer(ctx context.Context, deviceID string, dd *store.DeviceDeployment,
	compatible string) (*poll.Update, error) {
	if dd == nil {
		return nil, nil
	}
	dep, err := a.cfg.Store.Deployment(ctx, dd.DeploymentID)
	if err != nil || !shouldOffer(dep, *dd) {
		return nil, err
	}
	rel, err := a.cfg.Store.Release(ctx, dep.ReleaseID)
	if err != nil {
		return nil, err
	}
	if rel.Compatible != compatible {
		a.log.WarnContext(ctx, "device not compatible with its deployment's release",
			"device", deviceID, "deployment", dep.ID, "compatible", compatible,
			"release", rel.Compatible)
		return nil, nil
	}
	return &poll.Update{
		DeploymentID: dep.ID,
		Version:      rel.Version,
		BundleURL:    bundlePath(rel.Digest),
		Digest:       rel.Digest,
		Size:         rel.Size,
	}, nil
}

// deployment returns the device's part in its active or paused
// deployment, the deployment and its release; ErrNotFound if none.
func (a *deviceAPI) deployment(ctx context.Context, deviceID string) (store.DeviceDeployment,
	store.Deployment, store.Release, error) {
	dd, err := a.cfg.Store.ActiveDeviceDeployment(ctx, deviceID)
	if err != nil {
		return dd, store.Deployment{}, store.Release{}, err
	}
	dep, err := a.cfg.Store.Deployment(ctx, dd.DeploymentID)
	if err != nil {
		return dd, dep, store.Release{}, err
	}
	rel, err := a.cfg.Store.Release(ctx, dep.ReleaseID)
	return dd, dep, rel, err
}

// shouldOffer reports whether the device should install the deployment's
// release now. A device already started goes on, even in a paused
// deployment, so that it finishes or rolls back as its agent decides. A
// device not started yet starts by itself only in an active deployment
// whose strategy sets no limit: in every other strategy the rollout
// scheduler starts it.
func shouldOffer(dep store.Deployment, dd store.DeviceDeployment) bool {
	if !dd.Started.IsZero() {
		return true
	}
	s := dep.Strategy
	return dep.Status == store.DeploymentActive && len(s.Phases) <= 1 &&
		s.MaxConcurrent == 0 && len(s.Windows) == 0
}

// bundlePath is where the device API serves the bundle with digest.
func bundlePath(digest string) string {
	return poll.APIPath + "/bundles/" + digest
}

// bundle serves the release of the device's active deployment, with
// single-range requests for resuming, or redirects the device to where
// BundleURL says it is.
func (a *deviceAPI) bundle(w http.ResponseWriter, r *http.Request) {
	dev, ok := a.device(w, r)
	if !ok {
		return
	}
	digest := r.PathValue("digest")
	_, _, rel, err := a.deployment(r.Context(), dev.ID)
	if errors.Is(err, store.ErrNotFound) || err == nil && rel.Digest != digest {
		writeProblem(w, http.StatusNotFound,
			fmt.Sprintf("bundle %.80q is not deployed to this device", digest))
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if u, ok := a.bundleURL(r.Context(), digest); ok {
		// The redirect is for this device only: no cache may keep it.
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Location", u)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}

	f, err := a.cfg.Bundles.Open(r.Context(), digest)
	if errors.Is(err, bundlestore.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("bundle %s is not stored", digest))
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("ETag", `"`+strings.TrimPrefix(digest, "sha256:")+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", f.ModTime(), f)
}

// bundleURL returns where BundleURL says the bundle with digest can be
// downloaded, and false if it gives no usable URL, so that the server
// serves the bundle itself.
func (a *deviceAPI) bundleURL(ctx context.Context, digest string) (string, bool) {
	if a.cfg.BundleURL == nil {
		return "", false
	}
	s, err := a.cfg.BundleURL(ctx, digest)
	if err == nil {
		u, perr := url.Parse(s)
		if perr != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			err = fmt.Errorf("bundle url %.200q is not an absolute http(s) URL", s)
		}
	}
	if err != nil {
		a.log.DebugContext(ctx, "serving bundle from the server", "digest", digest, "err", err)
		return "", false
	}
	return s, true
}

// report records a deployment state of the device.
func (a *deviceAPI) report(w http.ResponseWriter, r *http.Request) {
	dev, ok := a.device(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if len(id) > poll.MaxFieldSize {
		writeProblem(w, http.StatusBadRequest,
			fmt.Sprintf("deployment id over %d bytes", poll.MaxFieldSize))
		return
	}
	var rep poll.Report
	if !readJSON(w, r, &rep) {
		return
	}
	if err := rep.Validate(); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}

	_, err := a.cfg.Store.RecordReport(r.Context(), id, dev.ID, rep)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, http.StatusNotFound,
			fmt.Sprintf("device takes no part in deployment %.80q", id))
	case errors.Is(err, store.ErrInvalid):
		writeProblem(w, http.StatusBadRequest, err.Error())
	case err != nil:
		a.fail(w, r, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// inventory replaces the device's inventory.
func (a *deviceAPI) inventory(w http.ResponseWriter, r *http.Request) {
	dev, ok := a.device(w, r)
	if !ok {
		return
	}
	var req poll.InventoryRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := a.cfg.Store.SetInventory(r.Context(), dev.ID, req.Attributes); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
