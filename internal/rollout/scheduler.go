package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// Defaults of the scheduler.
const (
	// DefaultInterval is how often Run ticks when given no interval.
	DefaultInterval = 5 * time.Second

	// Actor is the audit actor of the changes the scheduler makes.
	Actor = "system:rollout"
)

// Scheduler applies the strategies of active deployments. The zero value
// is not usable: Store is required.
type Scheduler struct {
	// Store holds the deployments; required.
	Store store.Store

	// Now returns the current time; nil means time.Now. The store should
	// use the same clock, since soak times are measured from the times it
	// stamps on devices.
	Now func() time.Time

	// Logger receives state changes at Info and detail at Debug; nil
	// means no logging.
	Logger *slog.Logger
}

// Run calls Tick every interval, DefaultInterval if zero or less, until
// ctx is done, and then returns ctx's error. A failed tick is logged at
// Warn and tried again on the next one.
func (s *Scheduler) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.logger().Warn("rollout tick failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Tick applies the strategy of every active deployment once; paused,
// aborted and finished deployments are left alone. For each deployment,
// in this order:
//
//  1. A deployment with no devices yet is left alone.
//  2. If the failures of a phase exceed Strategy.FailureThreshold, the
//     deployment is paused and an audit entry written; nothing else
//     happens to it. Failures are devices in the failure or rolled-back
//     state with no retries left; the threshold is exceeded when they
//     are more than its Count, or more than its Percent of the phase's
//     devices.
//  3. Every failed device with retries left (attempts so far at most
//     Strategy.Retries) is returned to pending by the store.
//  4. If every device is final, the deployment is marked finished and an
//     audit entry written.
//  5. Outside the maintenance windows nothing else happens.
//  6. Every open phase, in order, starts its pending devices that were
//     never offered the update, as many as MaxConcurrent leaves room for.
//
// Phase 0 is open once its StartAt has passed (at once if zero). Each
// later phase opens only after the previous one: at its StartAt if set;
// otherwise once the previous phase's successes (success or
// already-installed) reach its AfterSuccessPercent (100 if zero) of the
// previous phase's devices, and the previous phase's Soak has passed
// since the success that reached it. Successes stay final, so a phase
// once open stays open.
//
// Tick keeps no state: two ticks in a row start nobody extra, and a tick
// after a restart carries on where the last one stopped. Errors of one
// deployment do not stop the others; Tick returns them joined.
func (s *Scheduler) Tick(ctx context.Context) error {
	var errs []error
	page := store.Page{}
	for {
		deps, next, err := s.Store.ListDeployments(ctx,
			store.DeploymentFilter{Status: store.DeploymentActive}, page)
		if err != nil {
			return fmt.Errorf("list active deployments: %w", err)
		}
		for _, d := range deps {
			if err := s.schedule(ctx, d); err != nil {
				errs = append(errs, fmt.Errorf("schedule deployment %s: %w", d.ID, err))
			}
		}
		if next == "" {
			return errors.Join(errs...)
		}
		page.After = next
	}
}

// schedule applies the strategy of one active deployment once.
func (s *Scheduler) schedule(ctx context.Context, d store.Deployment) error {
	c, err := s.Store.DeploymentCounts(ctx, d.ID)
	if err != nil || c.All.Total() == 0 {
		return err
	}

	retry, paused, err := s.checkFailures(ctx, d, c)
	if err != nil || paused {
		return err
	}

	if len(retry) > 0 {
		for _, dev := range retry {
			if _, err := s.Store.RetryDevice(ctx, d.ID, dev); err != nil {
				return err
			}
		}
		s.logger().Info("retrying devices", "deployment", d.ID, "devices", len(retry))
		if c, err = s.Store.DeploymentCounts(ctx, d.ID); err != nil {
			return err
		}
	}

	if allFinal(c.All) {
		return s.setStatus(ctx, d, store.DeploymentFinished, nil)
	}

	open, err := InWindows(d.Strategy.Windows, s.now())
	if err != nil || !open {
		return err
	}
	return s.startPhases(ctx, d, c)
}

// checkFailures pauses d if a phase has more failures than allowed, and
// otherwise returns the failed devices that have retries left.
func (s *Scheduler) checkFailures(ctx context.Context, d store.Deployment,
	c store.DeploymentCounts) (retry []string, paused bool, err error) {
	failures := map[int]int{}
	if d.Strategy.Retries == 0 {
		for phase, pc := range c.Phases {
			failures[phase] = failed(pc)
		}
	} else {
		failedDevs, err := s.failedDevices(ctx, d.ID)
		if err != nil {
			return nil, false, err
		}
		for _, dd := range failedDevs {
			if dd.Attempts > d.Strategy.Retries {
				failures[dd.Phase]++
			} else {
				retry = append(retry, dd.DeviceID)
			}
		}
	}

	th := d.Strategy.FailureThreshold
	for phase := range phaseCount(d.Strategy) {
		n, size := failures[phase], c.Phases[phase].Total()
		if exceeds(th, n, size) {
			details := map[string]int{"phase": phase, "failures": n, "devices": size}
			return nil, true, s.setStatus(ctx, d, store.DeploymentPaused, details)
		}
	}
	return retry, false, nil
}

// exceeds reports whether n failures among size devices exceed th.
func exceeds(th store.Threshold, n, size int) bool {
	return (th.Count > 0 && n > th.Count) || (th.Percent > 0 && n*100 > th.Percent*size)
}

// failedDevices lists the devices of a deployment in a failed state.
func (s *Scheduler) failedDevices(ctx context.Context,
	deploymentID string) ([]store.DeviceDeployment, error) {
	var all []store.DeviceDeployment
	for _, st := range []poll.ReportState{poll.ReportFailure, poll.ReportRolledBack} {
		list, err := s.list(ctx, store.DeviceDeploymentFilter{
			DeploymentID: deploymentID, State: store.TargetState(st),
		})
		if err != nil {
			return nil, err
		}
		all = append(all, list...)
	}
	return all, nil
}

// list returns every per-device state matching f, page by page.
func (s *Scheduler) list(ctx context.Context,
	f store.DeviceDeploymentFilter) ([]store.DeviceDeployment, error) {
	var all []store.DeviceDeployment
	page := store.Page{Limit: store.MaxPageLimit}
	for {
		list, next, err := s.Store.ListDeviceDeployments(ctx, f, page)
		if err != nil {
			return nil, err
		}
		all = append(all, list...)
		if next == "" {
			return all, nil
		}
		page.After = next
	}
}

// startPhases starts the pending devices of every open phase, in order.
func (s *Scheduler) startPhases(ctx context.Context, d store.Deployment,
	c store.DeploymentCounts) error {
	for phase := range phaseCount(d.Strategy) {
		open, err := s.phaseOpen(ctx, d, c, phase)
		if err != nil || !open {
			return err
		}
		pending := c.Phases[phase][store.StatePending]
		if pending == 0 {
			continue
		}
		started, err := s.Store.StartDevices(ctx, d.ID, phase, pending)
		if err != nil {
			return err
		}
		if len(started) > 0 {
			s.logger().Info("started devices", "deployment", d.ID, "phase", phase,
				"devices", len(started))
		}
	}
	return nil
}

// phaseOpen reports whether a phase may start devices, given that every
// phase before it is open.
func (s *Scheduler) phaseOpen(ctx context.Context, d store.Deployment,
	c store.DeploymentCounts, phase int) (bool, error) {
	now := s.now()
	if len(d.Strategy.Phases) == 0 {
		return true, nil
	}
	p := d.Strategy.Phases[phase]
	if !p.StartAt.IsZero() || phase == 0 {
		return !now.Before(p.StartAt), nil
	}

	// A phase some of whose devices reported has begun, and stays open
	// even if a late report moves the time its predecessor succeeded.
	if c.Phases[phase].Total() > c.Phases[phase][store.StatePending] {
		return true, nil
	}
	prev := d.Strategy.Phases[phase-1]
	percent := p.AfterSuccessPercent
	if percent <= 0 {
		percent = 100
	}
	need := (percent*c.Phases[phase-1].Total() + 99) / 100
	if succeeded(c.Phases[phase-1]) < need {
		return false, nil
	}
	if prev.Soak <= 0 || need == 0 {
		return true, nil
	}
	reached, err := s.reachedAt(ctx, d.ID, phase-1, need)
	if err != nil {
		return false, err
	}
	return !now.Before(reached.Add(prev.Soak)), nil
}

// reachedAt returns when a phase reached need successes: the time the
// need-th device to succeed finished.
func (s *Scheduler) reachedAt(ctx context.Context, deploymentID string, phase,
	need int) (time.Time, error) {
	var times []time.Time
	for _, st := range []poll.ReportState{poll.ReportSuccess, poll.ReportAlreadyInstalled} {
		list, err := s.list(ctx, store.DeviceDeploymentFilter{
			DeploymentID: deploymentID, Phase: &phase, State: store.TargetState(st),
		})
		if err != nil {
			return time.Time{}, err
		}
		for _, dd := range list {
			times = append(times, dd.Finished)
		}
	}
	if len(times) < need {
		// Counts and rows disagree only if devices moved in between.
		return time.Time{}, fmt.Errorf("phase %d has %d successes, want %d",
			phase, len(times), need)
	}
	slices.SortFunc(times, time.Time.Compare)
	return times[need-1], nil
}

// setStatus moves d to status to and records it in the audit log, in
// one transaction.
func (s *Scheduler) setStatus(ctx context.Context, d store.Deployment,
	to store.DeploymentStatus, details any) error {
	var raw json.RawMessage
	if details != nil {
		var err error
		if raw, err = json.Marshal(details); err != nil {
			return fmt.Errorf("audit deployment %s %s: %w", d.ID, to, err)
		}
	}
	ctx = store.WithAudit(ctx, store.AuditEntry{
		Actor:   Actor,
		Action:  "deployment." + auditVerb[to],
		Object:  "deployment:" + d.ID,
		At:      s.now(),
		Details: raw,
	})
	if _, err := s.Store.SetDeploymentStatus(ctx, d.ID, to); err != nil {
		return err
	}
	s.logger().Info("deployment status changed", "deployment", d.ID, "status", to,
		"details", details)
	return nil
}

// auditVerb names the audit action of each status the scheduler sets.
var auditVerb = map[store.DeploymentStatus]string{
	store.DeploymentPaused:   "pause",
	store.DeploymentFinished: "finish",
}

func phaseCount(s store.Strategy) int {
	return max(1, len(s.Phases))
}

func failed(c store.Counts) int {
	return c[store.TargetState(poll.ReportFailure)] + c[store.TargetState(poll.ReportRolledBack)]
}

func succeeded(c store.Counts) int {
	return c[store.TargetState(poll.ReportSuccess)] +
		c[store.TargetState(poll.ReportAlreadyInstalled)]
}

func allFinal(c store.Counts) bool {
	for st, n := range c {
		if n > 0 && !st.Final() {
			return false
		}
	}
	return true
}

func (s *Scheduler) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Scheduler) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}
