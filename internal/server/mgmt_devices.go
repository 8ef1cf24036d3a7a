package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// Limits of device labels and filters.
const (
	// maxLabels is the most tags, or groups, a device may have.
	maxLabels = 64

	// maxInventoryFilters is the most inventory attributes one filter
	// may match, each costing the query a join.
	maxInventoryFilters = 8

	// maxHistory is the most deployments a device's detail shows, the
	// most recent first.
	maxHistory = 50

	// inventoryParam prefixes the query parameters that filter devices
	// by inventory attribute.
	inventoryParam = "inventory."
)

type deviceJSON struct {
	ID               string                `json:"id"`
	KeyID            string                `json:"keyId"`
	PublicKey        string                `json:"publicKey"`
	Identity         map[string]string     `json:"identity"`
	Status           store.AdmissionStatus `json:"status"`
	Tags             []string              `json:"tags"`
	Groups           []string              `json:"groups"`
	Inventory        map[string]string     `json:"inventory"`
	LastCheck        time.Time             `json:"lastCheck,omitzero"`
	InstalledVersion string                `json:"installedVersion,omitempty"`
	InstalledDigest  string                `json:"installedDigest,omitempty"`
	Slots            json.RawMessage       `json:"slots,omitempty"`
	Created          time.Time             `json:"created"`
	Updated          time.Time             `json:"updated"`
}

func toDeviceJSON(d store.Device) deviceJSON {
	return deviceJSON{ID: d.ID, KeyID: d.KeyID, PublicKey: d.PublicKeyPEM,
		Identity: orEmpty(d.Identity), Status: d.Status, Tags: orNone(d.Tags),
		Groups: orNone(d.Groups), Inventory: orEmpty(d.Inventory),
		LastCheck: d.LastCheck, InstalledVersion: d.InstalledVersion,
		InstalledDigest: d.InstalledDigest, Slots: d.Slots, Created: d.Created,
		Updated: d.Updated}
}

// orNone returns s, or an empty slice for nil, which encodes as [].
func orNone(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// orEmpty returns m, or an empty map for nil, which encodes as {}.
func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// deviceFilter returns the filter that the query asks for.
func deviceFilter(q url.Values) (store.DeviceFilter, error) {
	f := store.DeviceFilter{Status: store.AdmissionStatus(q.Get("status")),
		Version: q.Get("version"), Group: q.Get("group"), Tag: q.Get("tag")}
	for k := range q {
		if attr, ok := strings.CutPrefix(k, inventoryParam); ok {
			if f.Inventory == nil {
				f.Inventory = map[string]string{}
			}
			f.Inventory[attr] = q.Get(k)
		}
	}
	return f, checkFilter(f)
}

// checkFilter returns an error saying what is wrong with f, if anything.
func checkFilter(f store.DeviceFilter) error {
	switch f.Status {
	case "", store.StatusPending, store.StatusAccepted, store.StatusRejected,
		store.StatusDecommissioned:
	default:
		return fmt.Errorf("status %.40q is not pending, accepted, rejected or decommissioned",
			f.Status)
	}
	switch {
	case !validText(f.Version):
		return fmt.Errorf("version is over %d bytes or not text", poll.MaxFieldSize)
	case f.Group != "" && !validLabel(f.Group):
		return fmt.Errorf("group %.80q is not a valid group name", f.Group)
	case f.Tag != "" && !validLabel(f.Tag):
		return fmt.Errorf("tag %.80q is not a valid tag", f.Tag)
	case len(f.Inventory) > maxInventoryFilters:
		return fmt.Errorf("%d inventory attributes, more than %d", len(f.Inventory),
			maxInventoryFilters)
	}
	if err := poll.ValidateAttributes(f.Inventory); err != nil {
		return fmt.Errorf("inventory filter: %w", err)
	}
	return nil
}

func (a *mgmtAPI) listDevices(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "status", "version", "group", "tag", inventoryParam, "after", "limit")
	if !ok {
		return
	}
	page, ok := readPage(w, q)
	if !ok {
		return
	}
	f, err := deviceFilter(q)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	devs, next, err := a.cfg.Store.ListDevices(r.Context(), f, page)
	if err != nil {
		a.storeError(w, r, "devices", err)
		return
	}
	total, err := a.cfg.Store.CountDevices(r.Context(), f)
	if err != nil {
		a.storeError(w, r, "devices", err)
		return
	}
	out := newPage(devs, next, toDeviceJSON)
	out.Total = &total
	writeJSON(w, http.StatusOK, out)
}

// deviceDetail is a device with its update history.
type deviceDetail struct {
	deviceJSON
	History []historyJSON `json:"history"`
}

// historyJSON is a device's part in one deployment.
type historyJSON struct {
	DeploymentID     string                 `json:"deploymentId"`
	DeploymentName   string                 `json:"deploymentName,omitempty"`
	DeploymentStatus store.DeploymentStatus `json:"deploymentStatus"`
	ReleaseID        string                 `json:"releaseId"`
	ReleaseVersion   string                 `json:"releaseVersion,omitempty"`
	Phase            int                    `json:"phase"`
	State            store.TargetState      `json:"state"`
	Started          time.Time              `json:"started,omitzero"`
	Attempts         int                    `json:"attempts"`
	LastReport       time.Time              `json:"lastReport,omitzero"`
	Message          string                 `json:"message,omitempty"`
	Log              []string               `json:"log"`
	Reports          []reportJSON           `json:"reports"`
	Finished         time.Time              `json:"finished,omitzero"`
	Created          time.Time              `json:"created"`
	Updated          time.Time              `json:"updated"`
}

// reportJSON is a report as the device sent it, and when it arrived.
type reportJSON struct {
	poll.Report
	Received time.Time `json:"received"`
}

func (a *mgmtAPI) getDevice(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	dev, err := a.cfg.Store.Device(r.Context(), id)
	if err != nil {
		a.storeError(w, r, "device "+id, err)
		return
	}
	history, err := a.history(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deviceDetail{deviceJSON: toDeviceJSON(dev), History: history})
}

// history returns the device's part in its maxHistory most recent
// deployments, with the reports it sent in each.
func (a *mgmtAPI) history(ctx context.Context, deviceID string) ([]historyJSON, error) {
	var all []store.DeviceDeployment
	page := store.Page{Limit: store.MaxPageLimit}
	for {
		dds, next, err := a.cfg.Store.ListDeviceDeployments(ctx,
			store.DeviceDeploymentFilter{DeviceID: deviceID}, page)
		if err != nil {
			return nil, err
		}
		all = append(all, dds...)
		if next == "" {
			break
		}
		page.After = next
	}
	slices.SortFunc(all, func(x, y store.DeviceDeployment) int {
		return y.Created.Compare(x.Created)
	})
	all = all[:min(len(all), maxHistory)]

	out := make([]historyJSON, 0, len(all))
	versions := map[string]string{}
	for _, dd := range all {
		h := historyJSON{DeploymentID: dd.DeploymentID, Phase: dd.Phase, State: dd.State,
			Started: dd.Started, Attempts: dd.Attempts, LastReport: dd.LastReport,
			Message: dd.Message, Log: orNone(dd.Log), Reports: []reportJSON{},
			Finished: dd.Finished, Created: dd.Created, Updated: dd.Updated}
		dep, err := a.cfg.Store.Deployment(ctx, dd.DeploymentID)
		if err != nil {
			return nil, err
		}
		h.DeploymentName, h.DeploymentStatus, h.ReleaseID = dep.Name, dep.Status, dep.ReleaseID
		if _, ok := versions[dep.ReleaseID]; !ok {
			rel, err := a.cfg.Store.Release(ctx, dep.ReleaseID)
			if err != nil {
				return nil, err
			}
			versions[dep.ReleaseID] = rel.Version
		}
		h.ReleaseVersion = versions[dep.ReleaseID]
		reports, err := a.cfg.Store.Reports(ctx, dd.DeploymentID, deviceID)
		if err != nil {
			return nil, err
		}
		for _, rep := range reports {
			h.Reports = append(h.Reports, reportJSON{Report: rep.Report, Received: rep.Received})
		}
		out = append(out, h)
	}
	return out, nil
}

// setDeviceStatus returns the handler that moves a device to status to;
// verb names the change in the audit log, as "device.<verb>".
func (a *mgmtAPI) setDeviceStatus(to store.AdmissionStatus, verb string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r, "id")
		if !ok {
			return
		}
		dev, err := a.cfg.Store.Device(r.Context(), id)
		if err != nil {
			a.storeError(w, r, "device "+id, err)
			return
		}
		if dev.Status != to && !dev.Status.CanBecome(to) {
			writeProblem(w, http.StatusConflict,
				fmt.Sprintf("device %s is %s and cannot become %s", id, dev.Status, to))
			return
		}
		ctx := a.audited(r, "device."+verb, "device:"+id,
			map[string]any{"from": dev.Status, "to": to})
		dev, err = a.cfg.Store.SetDeviceStatus(ctx, id, to)
		if err != nil {
			a.storeError(w, r, "device "+id, err)
			return
		}
		writeJSON(w, http.StatusOK, toDeviceJSON(dev))
	}
}

// labelKind is tags or groups, which are set alike.
type labelKind struct {
	field string // the body's field and the audit action's verb
	set   func(s store.Store, ctx context.Context, id string, labels []string) error
}

var (
	labelTags   = labelKind{"tags", store.Store.SetTags}
	labelGroups = labelKind{"groups", store.Store.SetGroups}
)

type labelsRequest struct {
	Tags   *[]string `json:"tags"`
	Groups *[]string `json:"groups"`
}

// setLabels returns the handler that replaces a device's tags or groups.
func (a *mgmtAPI) setLabels(kind labelKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r, "id")
		if !ok {
			return
		}
		var req labelsRequest
		if !readStrictJSON(w, r, &req) {
			return
		}
		labels, other := req.Tags, req.Groups
		if kind.field == "groups" {
			labels, other = req.Groups, req.Tags
		}
		if labels == nil || other != nil {
			writeProblem(w, http.StatusBadRequest,
				fmt.Sprintf(`body must be {"%s": [...]}`, kind.field))
			return
		}
		if err := checkLabels(*labels); err != nil {
			writeProblem(w, http.StatusBadRequest, kind.field+": "+err.Error())
			return
		}
		list := slices.Compact(slices.Sorted(slices.Values(*labels)))
		ctx := a.audited(r, "device."+kind.field, "device:"+id,
			map[string]any{kind.field: list})
		if err := kind.set(a.cfg.Store, ctx, id, list); err != nil {
			a.storeError(w, r, "device "+id, err)
			return
		}
		dev, err := a.cfg.Store.Device(r.Context(), id)
		if err != nil {
			a.storeError(w, r, "device "+id, err)
			return
		}
		writeJSON(w, http.StatusOK, toDeviceJSON(dev))
	}
}

func checkLabels(labels []string) error {
	if len(labels) > maxLabels {
		return fmt.Errorf("%d names, more than %d", len(labels), maxLabels)
	}
	for _, l := range labels {
		if !validLabel(l) {
			return fmt.Errorf("%.80q is not 1 to %d letters, digits or '._-@' starting "+
				"with a letter or digit", l, MaxLabelLength)
		}
	}
	return nil
}

type preauthRequest struct {
	PublicKey string            `json:"publicKey"`
	Identity  map[string]string `json:"identity"`
}

// preauthorize registers a device by its public key, already accepted,
// so that its first signed auth request gets a token.
func (a *mgmtAPI) preauthorize(w http.ResponseWriter, r *http.Request) {
	var req preauthRequest
	if !readStrictJSON(w, r, &req) {
		return
	}
	pub, err := poll.ParsePublicKeyPEM(req.PublicKey)
	if err == nil {
		err = poll.ValidateAttributes(req.Identity)
	}
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	pemKey, err := poll.PublicKeyPEM(pub)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	keyID := poll.KeyID(pub)
	dev := store.Device{ID: newID(), KeyID: keyID, PublicKeyPEM: pemKey,
		Identity: req.Identity, Status: store.StatusAccepted}
	ctx := a.audited(r, "device.preauthorize", "device:"+dev.ID,
		map[string]any{"keyId": keyID, "identity": orEmpty(req.Identity)})
	dev, err = a.cfg.Store.CreateDevice(ctx, dev)
	if errors.Is(err, store.ErrExists) {
		old, err := a.cfg.Store.DeviceByKey(r.Context(), keyID)
		if err != nil {
			a.storeError(w, r, "device with key "+keyID, err)
			return
		}
		writeProblemWith(w, http.StatusConflict, fmt.Sprintf(
			"device %s already has this key and is %s", old.ID, old.Status),
			map[string]any{"deviceId": old.ID})
		return
	}
	if err != nil {
		a.storeError(w, r, "device", err)
		return
	}
	w.Header().Set("Location", ManagementAPIPath+"/devices/"+dev.ID)
	writeJSON(w, http.StatusCreated, toDeviceJSON(dev))
}

type groupJSON struct {
	Name    string `json:"name"`
	Devices int    `json:"devices"`
}

// listGroups lists every group with its number of devices.
func (a *mgmtAPI) listGroups(w http.ResponseWriter, r *http.Request) {
	if _, ok := query(w, r); !ok {
		return
	}
	groups, err := a.cfg.Store.Groups(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]groupJSON, 0, len(groups))
	for _, g := range groups {
		n, err := a.cfg.Store.CountDevices(r.Context(), store.DeviceFilter{Group: g})
		if err != nil {
			a.fail(w, r, err)
			return
		}
		out = append(out, groupJSON{Name: g, Devices: n})
	}
	writeJSON(w, http.StatusOK, out)
}
