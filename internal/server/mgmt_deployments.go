package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rotaupdate/rota/internal/rollout"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// Limits of a deployment's strategy.
const (
	// maxPhases is the most phases a strategy may have.
	maxPhases = 100

	// maxRetries is the most retries a strategy may give a device.
	maxRetries = 100

	// maxWindowDuration is the longest a maintenance window may stay
	// open: a week, after which it would overlap its next opening.
	maxWindowDuration = 7 * 24 * time.Hour

	// maxZoneName is the longest time zone name accepted.
	maxZoneName = 64

	// maxBusyListed is the most busy devices a refused deployment names.
	maxBusyListed = 20
)

// targetStates are the states a device may have in a deployment.
var targetStates = []store.TargetState{store.StatePending, store.StateSkipped,
	store.TargetState(poll.ReportDownloading), store.TargetState(poll.ReportInstalling),
	store.TargetState(poll.ReportRebooting), store.TargetState(poll.ReportVerifying),
	store.TargetState(poll.ReportSuccess), store.TargetState(poll.ReportFailure),
	store.TargetState(poll.ReportRolledBack), store.TargetState(poll.ReportAlreadyInstalled)}

type targetJSON struct {
	Group  string              `json:"group,omitempty"`
	Filter *store.DeviceFilter `json:"filter,omitempty"`
}

type deploymentJSON struct {
	ID        string                 `json:"id"`
	Name      string                 `json:"name"`
	ReleaseID string                 `json:"releaseId"`
	Target    targetJSON             `json:"target"`
	Strategy  store.Strategy         `json:"strategy"`
	Status    store.DeploymentStatus `json:"status"`
	Created   time.Time              `json:"created"`
	Updated   time.Time              `json:"updated"`
}

func toDeploymentJSON(d store.Deployment) deploymentJSON {
	return deploymentJSON{ID: d.ID, Name: d.Name, ReleaseID: d.ReleaseID,
		Target:   targetJSON{Group: d.Target.Group, Filter: d.Target.Filter},
		Strategy: d.Strategy, Status: d.Status, Created: d.Created, Updated: d.Updated}
}

func (a *mgmtAPI) listDeployments(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "status", "after", "limit")
	if !ok {
		return
	}
	page, ok := readPage(w, q)
	if !ok {
		return
	}
	f := store.DeploymentFilter{Status: store.DeploymentStatus(q.Get("status"))}
	switch f.Status {
	case "", store.DeploymentActive, store.DeploymentPaused, store.DeploymentAborted,
		store.DeploymentFinished:
	default:
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf(
			"status %.40q is not active, paused, aborted or finished", f.Status))
		return
	}
	deps, next, err := a.cfg.Store.ListDeployments(r.Context(), f, page)
	if err != nil {
		a.storeError(w, r, "deployments", err)
		return
	}
	writeJSON(w, http.StatusOK, newPage(deps, next, toDeploymentJSON))
}

type deploymentRequest struct {
	Name      string         `json:"name"`
	ReleaseID string         `json:"releaseId"`
	Target    targetJSON     `json:"target"`
	Strategy  store.Strategy `json:"strategy"`
}

// check returns an error saying what is wrong with the request, if
// anything; whether its release exists is left to the caller.
func (req *deploymentRequest) check() error {
	switch {
	case !validText(req.Name):
		return fmt.Errorf("name is over %d bytes or not text", poll.MaxFieldSize)
	case !validID(req.ReleaseID):
		return fmt.Errorf("releaseId %.80q is not a release ID", req.ReleaseID)
	case (req.Target.Group == "") == (req.Target.Filter == nil):
		return errors.New(`target must be {"group": NAME} or {"filter": {...}}`)
	case req.Target.Group != "" && !validLabel(req.Target.Group):
		return fmt.Errorf("target group %.80q is not a valid group name", req.Target.Group)
	}
	if req.Target.Filter != nil {
		if err := checkFilter(*req.Target.Filter); err != nil {
			return fmt.Errorf("target filter: %w", err)
		}
	}
	if err := checkStrategy(req.Strategy); err != nil {
		return fmt.Errorf("strategy: %w", err)
	}
	return nil
}

// checkStrategy returns an error saying what is wrong with s, if
// anything.
func checkStrategy(s store.Strategy) error {
	if len(s.Phases) > maxPhases {
		return fmt.Errorf("%d phases, more than %d", len(s.Phases), maxPhases)
	}
	sum := 0
	for i, p := range s.Phases {
		if err := checkPhase(p, i == len(s.Phases)-1); err != nil {
			return fmt.Errorf("phase %d: %w", i, err)
		}
		sum += p.Percent
	}
	th := s.FailureThreshold
	switch {
	case sum > 100:
		return fmt.Errorf("phase percents add up to %d, over 100", sum)
	case th.Count < 0:
		return fmt.Errorf("failureThreshold: negative count %d", th.Count)
	case th.Percent < 0 || th.Percent > 100:
		return fmt.Errorf("failureThreshold: percent %d is not 0 to 100", th.Percent)
	case s.MaxConcurrent < 0:
		return fmt.Errorf("negative maxConcurrent %d", s.MaxConcurrent)
	case s.Retries < 0 || s.Retries > maxRetries:
		return fmt.Errorf("retries %d is not 0 to %d", s.Retries, maxRetries)
	case len(s.Windows) > poll.MaxWindows:
		return fmt.Errorf("%d windows, more than %d", len(s.Windows), poll.MaxWindows)
	}
	for i, w := range s.Windows {
		if err := checkWindow(w); err != nil {
			return fmt.Errorf("window %d: %w", i, err)
		}
	}
	return nil
}

func checkPhase(p store.Phase, last bool) error {
	switch {
	case p.Percent < 0 || p.Percent > 100:
		return fmt.Errorf("percent %d is not 0 to 100", p.Percent)
	case p.Count < 0:
		return fmt.Errorf("negative count %d", p.Count)
	case p.Percent > 0 && p.Count > 0:
		return errors.New("give percent or count, not both")
	case p.Percent == 0 && p.Count == 0 && !last:
		return errors.New("no percent or count, which takes every device left; " +
			"only the last phase may do that")
	case p.AfterSuccessPercent < 0 || p.AfterSuccessPercent > 100:
		return fmt.Errorf("afterSuccessPercent %d is not 0 to 100", p.AfterSuccessPercent)
	case p.Soak < 0:
		return fmt.Errorf("negative soak %v", p.Soak)
	}
	return nil
}

func checkWindow(w store.MaintenanceWindow) error {
	start, err := time.Parse("15:04", w.Start)
	switch {
	case err != nil || start.Format("15:04") != w.Start:
		return fmt.Errorf("start %.20q is not a time of day such as 02:30", w.Start)
	case w.Duration <= 0 || w.Duration > maxWindowDuration:
		return fmt.Errorf("duration %v is not above zero and at most %v", w.Duration,
			maxWindowDuration)
	case len(w.TimeZone) > maxZoneName || w.TimeZone == "Local":
		return fmt.Errorf("timeZone %.80q is not an IANA time zone name", w.TimeZone)
	}
	if _, err := time.LoadLocation(w.TimeZone); err != nil {
		return fmt.Errorf("timeZone %.80q is not an IANA time zone name", w.TimeZone)
	}
	for _, d := range w.Days {
		if d < time.Sunday || d > time.Saturday {
			return fmt.Errorf("day %d is not 0 (Sunday) to 6 (Saturday)", d)
		}
	}
	return nil
}

// createDeployment creates a deployment of a release to the accepted
// devices its target matches now, split into the strategy's phases.
func (a *mgmtAPI) createDeployment(w http.ResponseWriter, r *http.Request) {
	var req deploymentRequest
	if !readStrictJSON(w, r, &req) {
		return
	}
	if err := req.check(); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	if _, err := a.cfg.Store.Release(ctx, req.ReleaseID); errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusUnprocessableEntity,
			fmt.Sprintf("release %s does not exist", req.ReleaseID))
		return
	} else if err != nil {
		a.fail(w, r, err)
		return
	}
	target := store.Target{Group: req.Target.Group, Filter: req.Target.Filter}
	devices, err := a.targetDevices(ctx, target)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if len(devices) == 0 {
		writeProblem(w, http.StatusUnprocessableEntity,
			"the target matches no accepted device")
		return
	}
	if a.refuseBusy(w, r, devices) {
		return
	}

	dep := store.Deployment{ID: newID(), Name: req.Name, ReleaseID: req.ReleaseID,
		Target: target, Strategy: req.Strategy}
	details := map[string]any{"name": dep.Name, "releaseId": dep.ReleaseID,
		"target": req.Target, "devices": len(devices),
		"phases": rollout.PhaseSizes(dep.Strategy, len(devices))}
	dep, err = a.cfg.Store.CreateDeployment(
		a.audited(r, "deployment.create", "deployment:"+dep.ID, details), dep)
	if err != nil {
		a.storeError(w, r, "deployment", err)
		return
	}
	if err := rollout.AddDevices(ctx, a.cfg.Store, dep, devices); err != nil {
		a.abandon(w, r, dep, err)
		return
	}
	a.log.InfoContext(ctx, "deployment created", "deployment", dep.ID,
		"release", dep.ReleaseID, "devices", len(devices))
	w.Header().Set("Location", ManagementAPIPath+"/deployments/"+dep.ID)
	writeJSON(w, http.StatusCreated, toDeploymentJSON(dep))
}

// targetDevices returns the IDs of the accepted devices that t matches
// now, in ID order.
func (a *mgmtAPI) targetDevices(ctx context.Context, t store.Target) ([]string, error) {
	f := store.DeviceFilter{Group: t.Group}
	if t.Filter != nil {
		f = *t.Filter
	}
	if f.Status != "" && f.Status != store.StatusAccepted {
		return nil, nil
	}
	f.Status = store.StatusAccepted
	var ids []string
	page := store.Page{Limit: store.MaxPageLimit}
	for {
		devs, next, err := a.cfg.Store.ListDevices(ctx, f, page)
		if err != nil {
			return nil, fmt.Errorf("resolve deployment target: %w", err)
		}
		for _, d := range devs {
			ids = append(ids, d.ID)
		}
		if next == "" {
			return ids, nil
		}
		page.After = next
	}
}

// refuseBusy answers 409 and returns true if any of devices takes part,
// unfinished, in an active or paused deployment.
func (a *mgmtAPI) refuseBusy(w http.ResponseWriter, r *http.Request, devices []string) bool {
	var busy []string
	n := 0
	for _, id := range devices {
		_, err := a.cfg.Store.ActiveDeviceDeployment(r.Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			a.fail(w, r, err)
			return true
		}
		n++
		if len(busy) < maxBusyListed {
			busy = append(busy, id)
		}
	}
	if n == 0 {
		return false
	}
	more := ""
	if n > len(busy) {
		more = fmt.Sprintf(" and %d more", n-len(busy))
	}
	writeProblemWith(w, http.StatusConflict, fmt.Sprintf(
		"%d target devices take part in another unfinished deployment: %s%s", n,
		strings.Join(busy, ", "), more), map[string]any{"devices": busy})
	return true
}

// abandon aborts a deployment whose devices could not all be added, and
// answers for the error.
func (a *mgmtAPI) abandon(w http.ResponseWriter, r *http.Request, dep store.Deployment,
	err error) {
	ctx := a.audited(r, "deployment.abort", "deployment:"+dep.ID,
		map[string]any{"reason": "adding its devices failed"})
	if _, aerr := a.cfg.Store.SetDeploymentStatus(ctx, dep.ID,
		store.DeploymentAborted); aerr != nil {
		a.log.ErrorContext(r.Context(), "abort deployment whose devices could not be added",
			"deployment", dep.ID, "err", aerr)
	}
	ext := map[string]any{"deploymentId": dep.ID}
	switch {
	case errors.Is(err, store.ErrDeviceBusy):
		writeProblemWith(w, http.StatusConflict, fmt.Sprintf("a target device joined "+
			"another deployment meanwhile, so deployment %s was aborted: %v", dep.ID, err),
			ext)
	case errors.Is(err, store.ErrNotFound):
		writeProblemWith(w, http.StatusConflict, fmt.Sprintf("a target device was "+
			"deleted meanwhile, so deployment %s was aborted: %v", dep.ID, err), ext)
	default:
		a.fail(w, r, err)
	}
}

type releaseSummary struct {
	ID         string `json:"id"`
	Version    string `json:"version"`
	Compatible string `json:"compatible"`
	Digest     string `json:"digest"`
	Size       int64  `json:"size"`
}

type countsJSON struct {
	Total      int               `json:"total"`
	States     store.Counts      `json:"states"`
	InProgress int               `json:"inProgress"`
	Phases     []phaseCountsJSON `json:"phases"`
}

type phaseCountsJSON struct {
	Phase  int          `json:"phase"`
	Total  int          `json:"total"`
	States store.Counts `json:"states"`
}

type deploymentDetail struct {
	deploymentJSON
	Release releaseSummary `json:"release"`
	Counts  countsJSON     `json:"counts"`
}

// getDeployment describes a deployment with its release and the counts
// of its devices by state, overall and per phase.
func (a *mgmtAPI) getDeployment(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	dep, err := a.cfg.Store.Deployment(r.Context(), id)
	if err != nil {
		a.storeError(w, r, "deployment "+id, err)
		return
	}
	rel, err := a.cfg.Store.Release(r.Context(), dep.ReleaseID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	c, err := a.cfg.Store.DeploymentCounts(r.Context(), id)
	if err != nil {
		a.storeError(w, r, "deployment "+id, err)
		return
	}
	counts := countsJSON{Total: c.All.Total(), States: orNoCounts(c.All),
		InProgress: c.InProgress}
	for phase := range max(1, len(dep.Strategy.Phases)) {
		pc := c.Phases[phase]
		counts.Phases = append(counts.Phases, phaseCountsJSON{Phase: phase,
			Total: pc.Total(), States: orNoCounts(pc)})
	}
	writeJSON(w, http.StatusOK, deploymentDetail{deploymentJSON: toDeploymentJSON(dep),
		Release: releaseSummary{ID: rel.ID, Version: rel.Version, Compatible: rel.Compatible,
			Digest: rel.Digest, Size: rel.Size},
		Counts: counts})
}

func orNoCounts(c store.Counts) store.Counts {
	if c == nil {
		return store.Counts{}
	}
	return c
}

type targetDeviceJSON struct {
	DeviceID   string            `json:"deviceId"`
	Phase      int               `json:"phase"`
	State      store.TargetState `json:"state"`
	Started    time.Time         `json:"started,omitzero"`
	Attempts   int               `json:"attempts"`
	LastReport time.Time         `json:"lastReport,omitzero"`
	Message    string            `json:"message,omitempty"`
	Finished   time.Time         `json:"finished,omitzero"`
	Updated    time.Time         `json:"updated"`
}

func toTargetDeviceJSON(dd store.DeviceDeployment) targetDeviceJSON {
	return targetDeviceJSON{DeviceID: dd.DeviceID, Phase: dd.Phase, State: dd.State,
		Started: dd.Started, Attempts: dd.Attempts, LastReport: dd.LastReport,
		Message: dd.Message, Finished: dd.Finished, Updated: dd.Updated}
}

// listDeploymentDevices lists the devices of a deployment with their
// states, optionally of one phase or state.
func (a *mgmtAPI) listDeploymentDevices(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	q, ok := query(w, r, "phase", "state", "after", "limit")
	if !ok {
		return
	}
	page, ok := readPage(w, q)
	if !ok {
		return
	}
	dep, err := a.cfg.Store.Deployment(r.Context(), id)
	if err != nil {
		a.storeError(w, r, "deployment "+id, err)
		return
	}
	f := store.DeviceDeploymentFilter{DeploymentID: id,
		State: store.TargetState(q.Get("state"))}
	if s := q.Get("phase"); s != "" {
		phase, err := strconv.Atoi(s)
		if err != nil || phase < 0 || phase >= max(1, len(dep.Strategy.Phases)) {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf(
				"phase %.20q is not a phase of deployment %s", s, id))
			return
		}
		f.Phase = &phase
	}
	if f.State != "" && !validTargetState(f.State) {
		writeProblem(w, http.StatusBadRequest,
			fmt.Sprintf("state %.40q is not a device state", f.State))
		return
	}
	dds, next, err := a.cfg.Store.ListDeviceDeployments(r.Context(), f, page)
	if err != nil {
		a.storeError(w, r, "devices of deployment "+id, err)
		return
	}
	writeJSON(w, http.StatusOK, newPage(dds, next, toTargetDeviceJSON))
}

func validTargetState(s store.TargetState) bool {
	for _, t := range targetStates {
		if s == t {
			return true
		}
	}
	return false
}

// setDeploymentStatus returns the handler that moves a deployment to
// status to; verb names the change in the audit log, as
// "deployment.<verb>".
func (a *mgmtAPI) setDeploymentStatus(to store.DeploymentStatus,
	verb string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r, "id")
		if !ok {
			return
		}
		dep, err := a.cfg.Store.Deployment(r.Context(), id)
		if err != nil {
			a.storeError(w, r, "deployment "+id, err)
			return
		}
		if dep.Status != to && !dep.Status.CanBecome(to) {
			writeProblem(w, http.StatusConflict,
				fmt.Sprintf("deployment %s is %s and cannot become %s", id, dep.Status, to))
			return
		}
		ctx := a.audited(r, "deployment."+verb, "deployment:"+id,
			map[string]any{"from": dep.Status, "to": to})
		dep, err = a.cfg.Store.SetDeploymentStatus(ctx, id, to)
		if err != nil {
			a.storeError(w, r, "deployment "+id, err)
			return
		}
		writeJSON(w, http.StatusOK, toDeploymentJSON(dep))
	}
}
