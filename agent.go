package rota

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/rotaupdate/rota/internal/atomicfile"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/slot"
)

// Server is the device API as the agent uses it. PollServer adapts a
// *poll.Client to it; tests and simulations may provide their own.
type Server interface {
	// Check reports the device's state and returns what to do.
	Check(ctx context.Context, req poll.CheckRequest) (*poll.CheckResponse, error)

	// Download returns the bundle at url from byte offset on. The reader
	// may resume by itself after network errors.
	Download(ctx context.Context, url string, offset int64) (io.ReadCloser, error)

	// Report records a state change of a deployment. Reports with the
	// same ID count once.
	Report(ctx context.Context, deploymentID string, r poll.Report) error
}

// Rebooter restarts the device. On a real device Reboot asks the init
// system to reboot and the agent is stopped; a simulation boots the
// simulated boot loader and starts a new agent.
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// ErrRebooting is returned by Agent.Run and Agent.Step after the agent
// asked the Rebooter to restart the device: the caller must stop.
var ErrRebooting = errors.New("rota: device is rebooting")

// Agent defaults.
const (
	// DefaultRetryWait is how long the agent waits after a failed
	// check, download or report before trying again.
	DefaultRetryWait = 30 * time.Second

	// DefaultMaxInstallAttempts is how many times a deployment's install
	// is tried after transient errors before it is reported as failed.
	DefaultMaxInstallAttempts = 5

	// DefaultApprovalWait is how often a waiting agent looks for approval.
	DefaultApprovalWait = 5 * time.Second

	// ApprovalFile, created in the data directory, approves the reboot
	// into an update installed with RequireApproval.
	ApprovalFile = "approve-reboot"

	// agentIDFile, in the data directory, holds a random name for this
	// installation of the agent, created on its first start.
	agentIDFile = "agent-id"

	// maxAgentIDSize caps the agent ID read back.
	maxAgentIDSize = 64
)

// AgentOptions configures an Agent. System, Server, Keyring and Rebooter
// are required.
type AgentOptions struct {
	// System is the device's slots and boot loader.
	System *slot.System

	// Server is the device API.
	Server Server

	// Keyring holds the keys trusted to sign bundles.
	Keyring *bundle.Keyring

	// Rebooter restarts the device.
	Rebooter Rebooter

	// DataDir holds the journal; "" means the System's data directory.
	DataDir string

	// HealthDir holds executables that must all exit 0 for a new slot to
	// be committed; "" or a missing directory means no checks.
	HealthDir string

	// HealthTimeout bounds each health check; zero means
	// DefaultHealthTimeout.
	HealthTimeout time.Duration

	// HealthCheck, if not nil, runs after the executables of HealthDir,
	// in process, with the new release's version; an error rolls back.
	// Simulated devices use it.
	HealthCheck func(ctx context.Context, version string) error

	// HooksDir holds executables run on state changes, named
	// STATE.enter, STATE.leave and STATE.error (with optional suffixes
	// ".NAME"). A failing install.enter or reboot.enter hook postpones
	// that step, which lets applications finish critical work first.
	// "" means no hooks.
	HooksDir string

	// HookTimeout bounds each hook; zero means DefaultHookTimeout.
	HookTimeout time.Duration

	// RequireApproval installs updates without activating them and waits
	// for ApprovalFile in the data directory before the reboot.
	RequireApproval bool

	// DownloadOnly installs updates into the passive slot and stops
	// there: they are activated only when approved as with
	// RequireApproval.
	DownloadOnly bool

	// RetryWait is the wait after transient errors; zero means
	// DefaultRetryWait.
	RetryWait time.Duration

	// MaxInstallAttempts bounds install attempts per deployment; zero
	// means DefaultMaxInstallAttempts.
	MaxInstallAttempts int

	// DecodeConcurrency is the number of bundle frames decompressed at
	// once, each holding up to 4 MiB; zero means 1, to keep the agent's
	// memory small.
	DecodeConcurrency int

	// SyncInterval is the number of bytes between slot flushes and so
	// between resume points; zero means slot.DefaultSyncInterval.
	SyncInterval int64

	// Logger receives the agent's log; nil discards it. The last lines
	// also go into reports.
	Logger *slog.Logger

	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Agent is the update agent: a state machine persisted in the data
// directory that polls the server, installs updates into the passive
// slots, reboots into them once, and commits or rolls back.
type Agent struct {
	o    AgentOptions
	dir  string
	id   string // salts report IDs; see report
	log  *slog.Logger
	tail *logTail
}

// NewAgent checks opts and returns an agent. It does not start anything.
func NewAgent(opts AgentOptions) (*Agent, error) {
	switch {
	case opts.System == nil:
		return nil, errors.New("new agent: no slot system")
	case opts.Server == nil:
		return nil, errors.New("new agent: no server")
	case opts.Keyring.Len() == 0:
		return nil, errors.New("new agent: empty keyring")
	case opts.Rebooter == nil:
		return nil, errors.New("new agent: no rebooter")
	}
	if opts.DataDir == "" {
		opts.DataDir = opts.System.Config().DataDir
	}
	if opts.HealthTimeout <= 0 {
		opts.HealthTimeout = DefaultHealthTimeout
	}
	if opts.HookTimeout <= 0 {
		opts.HookTimeout = DefaultHookTimeout
	}
	if opts.RetryWait <= 0 {
		opts.RetryWait = DefaultRetryWait
	}
	if opts.MaxInstallAttempts <= 0 {
		opts.MaxInstallAttempts = DefaultMaxInstallAttempts
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DecodeConcurrency <= 0 {
		opts.DecodeConcurrency = 1
	}
	if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	id, err := loadOrCreateAgentID(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	tail := newLogTail(poll.MaxLogLines)
	base := opts.Logger
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	log := slog.New(tail.wrap(base.Handler()))
	return &Agent{o: opts, dir: opts.DataDir, id: id, log: log, tail: tail}, nil
}

// loadOrCreateAgentID returns the agent ID kept in dir, creating it the
// first time. A file that cannot be an ID is replaced.
func loadOrCreateAgentID(dir string) (string, error) {
	p := filepath.Join(dir, agentIDFile)
	f, err := os.Open(p)
	if err == nil {
		b, rerr := io.ReadAll(io.LimitReader(f, maxAgentIDSize+1))
		f.Close()
		id := strings.TrimSpace(string(b))
		if rerr == nil && id != "" && len(b) <= maxAgentIDSize {
			return id, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read agent id %s: %w", p, err)
	}
	id := rand.Text()
	err = atomicfile.Write(p, 0o644, func(w io.Writer) error {
		_, err := io.WriteString(w, id+"\n")
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create agent id: %w", err)
	}
	return id, nil
}

// Journal returns the agent's persisted state.
func (a *Agent) Journal() (*Journal, error) { return loadJournal(a.dir) }

// Run steps the agent until ctx ends or the device reboots (ErrRebooting).
func (a *Agent) Run(ctx context.Context) error {
	for {
		wait, err := a.Step(ctx)
		if errors.Is(err, ErrRebooting) || ctx.Err() != nil {
			return err
		}
		if err != nil {
			a.log.Warn("agent step failed; will retry", "err", err, "wait", wait)
		}
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Step does the work of the current state once and returns how long to
// wait before the next step. Errors are transient unless they are
// ErrRebooting or the context's; the state machine stays consistent.
func (a *Agent) Step(ctx context.Context) (time.Duration, error) {
	j, err := loadJournal(a.dir)
	if err != nil {
		return a.o.RetryWait, err
	}
	switch j.State {
	case StateIdle:
		return a.poll(ctx, j)
	case StateInstall:
		return a.install(ctx, j)
	case StateApproval:
		return a.approval(ctx, j)
	case StateReboot:
		return a.afterActivate(ctx, j)
	case StateVerify:
		return a.verify(ctx, j)
	case StateRollback:
		return a.afterRollback(ctx, j)
	}
	return a.o.RetryWait, fmt.Errorf("%w: unknown state %q", ErrCorruptJournal, j.State)
}

// gatedEnter lists the states whose enter hooks run right before the
// state's work, where a failing hook postpones it (see poll and reboot),
// rather than on the transition.
var gatedEnter = map[AgentState]bool{StateInstall: true, StateReboot: true, StateRollback: true}

// transition runs the leave hooks of the old state, persists next, then
// runs the enter hooks of the new one unless they are gated.
func (a *Agent) transition(ctx context.Context, from AgentState, next *Journal) error {
	if from != next.State {
		a.hook(ctx, string(from)+".leave", next)
	}
	if err := saveJournal(a.dir, next); err != nil {
		return err
	}
	a.log.Info("agent state", "state", string(next.State), "deployment", next.Deployment,
		"version", next.Version)
	if from != next.State && !gatedEnter[next.State] {
		a.hook(ctx, string(next.State)+".enter", next)
	}
	return nil
}

// hook runs the hooks named name and returns their error.
func (a *Agent) hook(ctx context.Context, name string, j *Journal) error {
	err := runDir(ctx, a.o.HooksDir, name, a.o.HookTimeout, []string{
		"ROTA_STATE=" + string(j.State),
		"ROTA_DEPLOYMENT=" + j.Deployment,
		"ROTA_VERSION=" + j.Version,
	})
	if err != nil {
		a.log.Warn("hook failed", "hook", name, "err", err)
	}
	return err
}

// report sends a report whose ID depends only on the agent ID, the
// deployment, state and attempt, so a report repeated after a restart
// counts once, while the same report from another device, which the
// server must keep too, has another ID.
func (a *Agent) report(ctx context.Context, j *Journal, state poll.ReportState, msg string,
	progress *poll.Progress) error {
	if j.Deployment == "" {
		return nil
	}
	key := fmt.Sprintf("%s\x00%s\x00%s\x00%d", a.id, j.Deployment, state, j.Attempt)
	if progress != nil {
		// Each progress step is a report of its own.
		key += fmt.Sprintf("\x00%d", progress.Done)
	}
	sum := sha256.Sum256([]byte(key))
	r := poll.Report{
		ID:       hex.EncodeToString(sum[:16]),
		State:    state,
		Message:  msg,
		Progress: progress,
		Time:     a.o.Now().UTC(),
	}
	if state == poll.ReportFailure || state == poll.ReportRolledBack {
		r.Log = a.tail.lines()
	}
	if err := a.o.Server.Report(ctx, j.Deployment, r); err != nil {
		return fmt.Errorf("report %s for deployment %s: %w", state, j.Deployment, err)
	}
	return nil
}

// checkRequest describes the device for the server.
func (a *Agent) checkRequest(ctx context.Context, state AgentState) (poll.CheckRequest,
	*slot.SlotStatus, error) {
	st, err := a.o.System.Status(ctx)
	if err != nil {
		return poll.CheckRequest{}, nil, err
	}
	req := poll.CheckRequest{
		Compatible:   a.o.System.Config().Compatible,
		AgentVersion: Version,
		State:        string(state),
	}
	var booted *slot.SlotStatus
	for i, s := range st.Slots {
		info := poll.SlotInfo{Name: s.Name, Class: s.Class, Bootname: s.Bootname,
			Booted: s.Booted, Primary: s.Primary}
		if s.Install != nil {
			info.State = string(s.Install.State)
			info.Version, info.Digest = s.Install.Version, s.Install.Digest
		}
		req.Slots = append(req.Slots, info)
		if s.Booted && s.Parent == "" {
			booted = &st.Slots[i]
		}
	}
	if booted != nil && booted.Install != nil {
		req.Installed = poll.Installed{Version: booted.Install.Version,
			Digest: booted.Install.Digest}
	}
	req.Installed.RollbackIndex, _ = a.o.System.RollbackIndex()
	return req, booted, nil
}

// poll asks the server for work and starts an install when there is one.
func (a *Agent) poll(ctx context.Context, j *Journal) (time.Duration, error) {
	req, booted, err := a.checkRequest(ctx, StateIdle)
	if err != nil {
		return a.o.RetryWait, err
	}
	if booted != nil && booted.Boot != slot.BootGood {
		if wait, err := a.confirmBoot(ctx, booted); err != nil {
			return wait, err
		}
	}
	resp, err := a.o.Server.Check(ctx, req)
	if err != nil {
		return a.o.RetryWait, err
	}
	wait := poll.NextPoll(resp.Interval())
	u := resp.Update
	if u == nil {
		return wait, nil
	}
	next := &Journal{State: StateInstall, Deployment: u.DeploymentID, Version: u.Version,
		Digest: u.Digest, BundleURL: u.BundleURL, Size: u.Size, Attempt: 1, Last: j.Last}
	if booted != nil {
		next.From = booted.Name
	}
	if u.Digest != "" && u.Digest == req.Installed.Digest {
		a.log.Info("update already installed", "deployment", u.DeploymentID, "version", u.Version)
		return wait, a.report(ctx, next, poll.ReportAlreadyInstalled, "", nil)
	}
	if until, ok := u.UntilWindow(a.o.Now()); !ok {
		a.log.Info("update outside every maintenance window", "deployment", u.DeploymentID)
		return wait, nil
	} else if until > 0 {
		a.log.Info("waiting for the maintenance window", "deployment", u.DeploymentID,
			"in", until)
		return min(until, wait), nil
	}
	if err := a.hook(ctx, "install.enter", next); err != nil {
		return a.o.RetryWait, nil // postponed by the application
	}
	if err := a.transition(ctx, StateIdle, next); err != nil {
		return a.o.RetryWait, err
	}
	return 0, nil
}

// confirmBoot runs when the agent is idle on a slot the boot loader does
// not count as good: boot schemes such as GRUB's and U-Boot's spend a try
// on every boot, so a system that booted must confirm itself, or a few
// plain reboots later the boot loader would fall back. The health checks
// decide, as after an update: pass, and the slot is marked good; fail,
// and it is marked bad and the device reboots into the other slot.
func (a *Agent) confirmBoot(ctx context.Context, booted *slot.SlotStatus) (time.Duration, error) {
	s, err := a.o.System.Slot(booted.Name)
	if err != nil {
		return a.o.RetryWait, err
	}
	version := ""
	if booted.Install != nil {
		version = booted.Install.Version
	}
	err = runDir(ctx, a.o.HealthDir, "", a.o.HealthTimeout, []string{"ROTA_VERSION=" + version})
	if err == nil && a.o.HealthCheck != nil {
		err = a.o.HealthCheck(ctx, version)
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if err != nil {
		a.log.Error("the running system failed its health check; falling back", "slot",
			booted.Name, "err", err)
		if merr := a.o.System.MarkBad(ctx, s); merr != nil {
			return a.o.RetryWait, merr
		}
		if rerr := a.o.Rebooter.Reboot(ctx); rerr != nil {
			return a.o.RetryWait, fmt.Errorf("reboot: %w", rerr)
		}
		return 0, ErrRebooting
	}
	if err := a.o.System.MarkGood(ctx, s); err != nil {
		return a.o.RetryWait, err
	}
	a.log.Info("confirmed the running system", "slot", booted.Name)
	return 0, nil
}

// install downloads and streams the update into the passive slots,
// resuming at the journal's checkpoint.
func (a *Agent) install(ctx context.Context, j *Journal) (time.Duration, error) {
	if moved, wait, err := a.bootedElsewhere(ctx, j); moved {
		return wait, err
	}
	if err := a.report(ctx, j, poll.ReportDownloading, "", nil); err != nil {
		a.log.Warn("report", "err", err)
	}
	before := j.Checkpoint
	res, err := a.installOnce(ctx, j)
	if err == nil {
		return a.installed(ctx, j, res)
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if permanent(err) || j.Attempt >= a.o.MaxInstallAttempts {
		a.log.Error("install failed", "deployment", j.Deployment, "err", err)
		a.hook(ctx, "install.error", j)
		return a.finish(ctx, j, poll.ReportFailure, err.Error())
	}
	a.log.Warn("install interrupted; will resume", "deployment", j.Deployment,
		"attempt", j.Attempt, "err", err)
	// An attempt that moved the install forward does not count against
	// the limit: a slow, flaky network still gets the update through.
	next := *j
	if progressed(before, j.Checkpoint) {
		a.log.Info("install made progress; resuming", "deployment", j.Deployment)
	} else {
		next.Attempt++
	}
	if serr := saveJournal(a.dir, &next); serr != nil {
		return a.o.RetryWait, serr
	}
	return a.o.RetryWait, err
}

// progressed reports whether checkpoint after lies beyond before.
func progressed(before, after *bundle.Checkpoint) bool {
	switch {
	case after == nil:
		return false
	case before == nil:
		return true
	}
	return after.Image > before.Image ||
		after.Image == before.Image && after.Uncompressed > before.Uncompressed
}

// bootedElsewhere handles an install whose device no longer runs the slot
// the install began on. That happens when the power fails after Install
// activated the new slot and before the journal recorded it: the boot
// loader tries the new slot, which is complete, so it is verified as
// after a planned reboot. Installing now would write the slot the device
// falls back to. It reports whether it moved the agent on.
func (a *Agent) bootedElsewhere(ctx context.Context, j *Journal) (bool, time.Duration, error) {
	if j.From == "" {
		return false, 0, nil
	}
	st, err := a.o.System.Status(ctx)
	if err != nil {
		return true, a.o.RetryWait, err
	}
	for _, s := range st.Slots {
		if !s.Booted || s.Parent != "" || s.Name == j.From {
			continue
		}
		if in := s.Install; in != nil && in.State == slot.StateInstalled && in.Digest == j.Digest {
			next := *j
			next.State, next.Target, next.Checkpoint = StateVerify, s.Name, nil
			if err := a.transition(ctx, j.State, &next); err != nil {
				return true, a.o.RetryWait, err
			}
			return true, 0, nil
		}
		wait, err := a.finish(ctx, j, poll.ReportFailure,
			fmt.Sprintf("the device left slot %s for %s during the install", j.From, s.Name))
		return true, wait, err
	}
	return false, 0, nil
}

// permanent reports whether an install error will not go away by trying
// again: the bundle itself is wrong or refused.
func permanent(err error) bool {
	for _, e := range []error{
		bundle.ErrInvalidBundle, bundle.ErrUnsupportedFormat, bundle.ErrDigestMismatch,
		bundle.ErrUnsigned, bundle.ErrUntrusted, bundle.ErrNoImage,
		ErrIncompatible, ErrRollback, ErrAgentTooOld, ErrUnsupportedImage, errWrongBundle,
		slot.ErrTooLarge, slot.ErrNoPassive, slot.ErrBootedSlot,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	var pe *poll.Error
	return errors.As(err, &pe) && !pe.Temporary()
}

// errWrongBundle is returned when the server serves another bundle than
// it announced.
var errWrongBundle = errors.New("rota: server sent another bundle than announced")

func (a *Agent) installOnce(ctx context.Context, j *Journal) (*InstallResult, error) {
	body, err := a.o.Server.Download(ctx, j.BundleURL, 0)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	// One frame decoded at a time keeps the agent's memory small; the
	// decoder still outruns most storage.
	b, err := bundle.OpenReader(body, bundle.Options{Concurrency: a.o.DecodeConcurrency})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if j.Digest != "" && b.Digest() != j.Digest {
		return nil, fmt.Errorf("%w: got %s, announced %s", errWrongBundle, b.Digest(), j.Digest)
	}
	if _, err := b.Verify(a.o.Keyring); err != nil {
		return nil, err
	}

	opts := InstallOptions{
		Keyring:          a.o.Keyring,
		NoActivate:       a.o.RequireApproval || a.o.DownloadOnly,
		VerifyAfterWrite: a.o.System.Config().Install.VerifyAfterWrite,
		SyncInterval:     a.o.SyncInterval,
		Logger:           a.log,
		Checkpoint: func(cp *bundle.Checkpoint) {
			next := *j
			next.Checkpoint = cp
			if err := saveJournal(a.dir, &next); err != nil {
				a.log.Warn("save checkpoint", "err", err)
				return
			}
			*j = next
		},
	}
	if cp := j.Checkpoint; cp != nil {
		// Only the metadata was needed from the start of the file; the
		// rest comes from the checkpoint on.
		body.Close()
		rest, err := a.o.Server.Download(ctx, j.BundleURL, cp.FileOffset+cp.Compressed)
		if err != nil {
			return nil, err
		}
		defer rest.Close()
		a.log.Info("resuming install", "deployment", j.Deployment, "image", cp.Image,
			"offset", cp.Uncompressed)
		opts.Resume = &Resume{Checkpoint: cp, Rest: rest}
	}
	if err := a.report(ctx, j, poll.ReportInstalling, "", nil); err != nil {
		a.log.Warn("report", "err", err)
	}
	stop := a.reportProgress(ctx, j, b, &opts)
	res, err := Install(ctx, a.o.System, b, opts)
	stop()
	if err != nil && opts.Resume != nil && errors.Is(err, bundle.ErrInvalidBundle) {
		// A checkpoint that no longer fits: start this image again.
		next := *j
		next.Checkpoint = nil
		saveJournal(a.dir, &next)
	}
	return res, err
}

// DefaultProgressInterval is how often the agent reports how far an
// install has come.
const DefaultProgressInterval = 10 * time.Second

// reportProgress reports the install's progress every
// DefaultProgressInterval from its own goroutine, so that a slow server
// never slows the install, until the returned stop is called.
func (a *Agent) reportProgress(ctx context.Context, j *Journal, b *bundle.Bundle,
	opts *InstallOptions) (stop func()) {
	cfg := b.Config()
	var total int64
	for _, im := range cfg.Images {
		total += im.Size
	}
	// The install rewrites *j as it goes; the reporter keeps its own copy.
	jc := *j
	var done atomic.Int64
	var before int64 // bytes of images finished earlier
	var lastClass string
	opts.Progress = func(class string, written, size int64) {
		if class != lastClass {
			if lastClass != "" {
				before += cfg.Image(lastClass).Size
			}
			lastClass = class
		}
		done.Store(before + written)
	}
	ctx, cancel := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(DefaultProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p := &poll.Progress{Done: done.Load(), Total: total}
				if err := a.report(ctx, &jc, poll.ReportInstalling, "", p); err != nil {
					a.log.Debug("report progress", "err", err)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-finished
	}
}

// installed moves on after a successful install: to approval, or to the
// reboot into the new slot.
func (a *Agent) installed(ctx context.Context, j *Journal, res *InstallResult) (time.Duration,
	error) {
	next := *j
	next.Checkpoint = nil
	if res.Active == "" {
		for _, s := range res.Slots {
			if sl, err := a.o.System.Slot(s); err == nil {
				next.Target = sl.Root().Name()
			}
		}
		next.State = StateApproval
		if err := a.transition(ctx, j.State, &next); err != nil {
			return a.o.RetryWait, err
		}
		return 0, nil
	}
	next.Target = res.Active
	next.State = StateReboot
	if err := a.transition(ctx, j.State, &next); err != nil {
		return a.o.RetryWait, err
	}
	return 0, nil
}

// approval waits for local approval, then activates the new slot.
func (a *Agent) approval(ctx context.Context, j *Journal) (time.Duration, error) {
	p := filepath.Join(a.dir, ApprovalFile)
	if _, err := os.Stat(p); err != nil {
		return DefaultApprovalWait, nil
	}
	target, err := a.o.System.Slot(j.Target)
	if err != nil {
		return a.finish(ctx, j, poll.ReportFailure, err.Error())
	}
	if err := a.o.System.MarkActive(ctx, target, 0); err != nil {
		return a.o.RetryWait, err
	}
	os.Remove(p)
	next := *j
	next.State = StateReboot
	if err := a.transition(ctx, j.State, &next); err != nil {
		return a.o.RetryWait, err
	}
	return 0, nil
}

// afterActivate runs in the reboot state: before the reboot (reboot now)
// or after it (verify the new slot, or notice the boot loader fell back).
func (a *Agent) afterActivate(ctx context.Context, j *Journal) (time.Duration, error) {
	booted, err := a.o.System.Booted(ctx)
	if err != nil {
		return a.o.RetryWait, err
	}
	if booted.Root().Name() == j.Target {
		next := *j
		next.State = StateVerify
		if err := a.transition(ctx, j.State, &next); err != nil {
			return a.o.RetryWait, err
		}
		return 0, nil
	}
	target, err := a.o.System.Slot(j.Target)
	if err != nil {
		return a.finish(ctx, j, poll.ReportFailure, err.Error())
	}
	bl := a.o.System.Bootloader()
	primary, err := bl.Primary(ctx)
	if err != nil {
		return a.o.RetryWait, err
	}
	state, err := bl.State(ctx, target.Root().Bootname())
	if err != nil {
		return a.o.RetryWait, err
	}
	// A boot loader that falls back once every slot's try is spent, as
	// GRUB's boot-once script does, names the new slot primary again
	// after its failed try; that the try is spent (Bad) tells the two
	// apart. Before the reboot the new slot is on trial, never Bad.
	if primary != target.Root().Bootname() || state.Bad {
		// The device rebooted, the boot loader tried the new slot and
		// came back: the new system did not start.
		a.o.System.MarkBad(ctx, target)
		return a.finish(ctx, j, poll.ReportRolledBack,
			fmt.Sprintf("slot %s did not boot; the boot loader fell back to %s",
				j.Target, booted.Root().Name()))
	}
	return a.reboot(ctx, j, "reboot.enter")
}

// reboot reports and asks the device to reboot, unless a reboot.enter
// hook postpones it.
func (a *Agent) reboot(ctx context.Context, j *Journal, hook string) (time.Duration, error) {
	if err := a.hook(ctx, hook, j); err != nil {
		return a.o.RetryWait, nil
	}
	if j.State == StateReboot {
		if err := a.report(ctx, j, poll.ReportRebooting, "", nil); err != nil {
			a.log.Warn("report", "err", err)
		}
	}
	a.log.Info("rebooting", "state", string(j.State), "target", j.Target)
	if err := a.o.Rebooter.Reboot(ctx); err != nil {
		return a.o.RetryWait, fmt.Errorf("reboot: %w", err)
	}
	return 0, ErrRebooting
}

// verify runs the health checks in the new slot and commits or rolls back.
func (a *Agent) verify(ctx context.Context, j *Journal) (time.Duration, error) {
	booted, err := a.o.System.Booted(ctx)
	if err != nil {
		return a.o.RetryWait, err
	}
	if booted.Root().Name() != j.Target {
		return a.finish(ctx, j, poll.ReportRolledBack,
			fmt.Sprintf("the device runs %s, not the new slot %s", booted.Root().Name(), j.Target))
	}
	if err := a.report(ctx, j, poll.ReportVerifying, "", nil); err != nil {
		a.log.Warn("report", "err", err)
	}
	err = runDir(ctx, a.o.HealthDir, "", a.o.HealthTimeout, []string{
		"ROTA_DEPLOYMENT=" + j.Deployment, "ROTA_VERSION=" + j.Version,
	})
	if err == nil && a.o.HealthCheck != nil {
		err = a.o.HealthCheck(ctx, j.Version)
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if err != nil {
		a.log.Error("health check failed; rolling back", "err", err)
		a.hook(ctx, "verify.error", j)
		next := *j
		next.State, next.Reason = StateRollback, err.Error()
		if err := a.transition(ctx, j.State, &next); err != nil {
			return a.o.RetryWait, err
		}
		return 0, nil
	}
	if err := a.o.System.MarkGood(ctx, booted.Root()); err != nil {
		return a.o.RetryWait, err
	}
	return a.finish(ctx, j, poll.ReportSuccess, "")
}

// afterRollback marks the new slot bad and reboots into the old one; after
// that reboot it reports the rollback.
func (a *Agent) afterRollback(ctx context.Context, j *Journal) (time.Duration, error) {
	booted, err := a.o.System.Booted(ctx)
	if err != nil {
		return a.o.RetryWait, err
	}
	target, err := a.o.System.Slot(j.Target)
	if err != nil {
		return a.finish(ctx, j, poll.ReportRolledBack, j.Reason)
	}
	if booted.Root() != target.Root() {
		return a.finish(ctx, j, poll.ReportRolledBack, j.Reason)
	}
	if err := a.o.System.MarkBad(ctx, target); err != nil {
		return a.o.RetryWait, err
	}
	return a.reboot(ctx, j, "rollback.enter")
}

// finish reports the outcome of a deployment and returns to idle.
func (a *Agent) finish(ctx context.Context, j *Journal, state poll.ReportState,
	msg string) (time.Duration, error) {
	next := &Journal{State: StateIdle, Last: &Outcome{Deployment: j.Deployment,
		Version: j.Version, State: string(state), Message: msg, Time: a.o.Now().UTC()}}
	// The report goes out before the journal forgets the deployment; if
	// the agent dies in between, it is sent again with the same ID.
	rerr := a.report(ctx, j, state, msg, nil)
	if rerr != nil && ctx.Err() == nil {
		a.log.Warn("report outcome; will retry", "err", rerr)
		return a.o.RetryWait, rerr
	}
	if err := a.transition(ctx, j.State, next); err != nil {
		return a.o.RetryWait, err
	}
	a.log.Info("deployment finished", "deployment", j.Deployment, "outcome", string(state))
	return 0, nil
}
