package e2e

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/slot"
)

// cutRate is the bundle download rate of the power-cut scenarios, in
// bytes per second. It stretches the install over several of the agent's
// progress reports, so that a cut keyed to one lands while the slot is
// being written.
const cutRate = 1 << 20

// TestPowerCut cuts the machine's power at the three moments of an update
// where losing it is most likely to do harm, then powers it on again and
// checks that it boots a working slot, that the agent picks the update up
// where its journal says and takes it to success, and that the data
// partition is untouched.
func TestPowerCut(t *testing.T) {
	t.Parallel()
	fx := setup(t)
	tests := []struct {
		name string

		// arm sets the proxy up to signal the moment of the cut, before
		// the update is deployed, and returns the signal.
		arm func(p *Proxy) <-chan struct{}

		// afterCut checks the disk right after the cut; it returns where
		// the agent must resume the download, -1 meaning no download.
		afterCut func(t *testing.T, m *machine, id string) int64

		// boots are the boots the data partition records.
		boots []string
	}{
		{
			name: "during the download",
			// The download stalls right after the bytes that complete the
			// first slot.DefaultSyncInterval bytes of the image, as on a
			// network that went away, and the power goes once the agent
			// reports them written, and so checkpointed.
			arm: func(p *Proxy) <-chan struct{} {
				p.HoldBundle(fx.resumeAt)
				return p.HoldReportIf(func(r poll.Report) bool {
					return r.State == poll.ReportInstalling && r.Progress != nil &&
						r.Progress.Done >= slot.DefaultSyncInterval
				})
			},
			afterCut: func(t *testing.T, m *machine, id string) int64 {
				resume := checkInstallInterrupted(t, m, id)
				assert.Equal(t, fx.resumeAt, resume, "the journal's resume point")
				return resume
			},
			boots: []string{"slot=A version=1.0.0", "slot=A version=1.0.0", "slot=B version=2.0.0"},
		},
		{
			name: "during the slot write",
			// Bytes flow and the agent writes them to slot B: it has
			// just reported that some are written.
			arm: func(p *Proxy) <-chan struct{} {
				p.SetBundleRate(cutRate)
				return p.HoldReportIf(func(r poll.Report) bool {
					return r.State == poll.ReportInstalling && r.Progress != nil &&
						r.Progress.Done > 0 && r.Progress.Done < r.Progress.Total
				})
			},
			afterCut: checkInstallInterrupted,
			boots:    []string{"slot=A version=1.0.0", "slot=A version=1.0.0", "slot=B version=2.0.0"},
		},
		{
			name: "after mark-active before the reboot",
			// Slot B is written, verified and marked active; the agent
			// reports that it reboots, and the power goes first.
			arm: func(p *Proxy) <-chan struct{} {
				return p.HoldReport(poll.ReportRebooting)
			},
			afterCut: checkActivated,
			boots:    []string{"slot=A version=1.0.0", "slot=B version=2.0.0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			srv := startServer(t, fx)
			m := newMachine(t, fx, srv)
			moment := tt.arm(srv.proxy)

			m.bootFactory()
			id := srv.release(fx, good)
			m.waitFor(moment, installTimeout, "the moment of the cut")
			m.powerCut()
			logProgress(t, srv.proxy)
			before := len(srv.proxy.Downloads())
			srv.proxy.SetBundleRate(0)
			srv.proxy.Release()
			resume := tt.afterCut(t, m, id)

			m.powerOn()
			srv.waitState(id, poll.ReportSuccess, installTimeout)
			m.expect(agentLine("deployment finished", `outcome=success`), pollTimeout)
			if resume > 0 {
				assert.True(t, consoleHas(m, `msg="resuming install"`),
					"the agent resumed the install")
			}
			after := srv.proxy.Downloads()[before:]
			switch {
			case resume < 0:
				assert.Empty(t, after, "no download after the cut")
			case resume == 0:
				assert.Equal(t, []int64{0}, after, "the download began again")
			default:
				// The agent reads the bundle's head again to verify it,
				// then the rest from its resume point.
				assert.Equal(t, []int64{0, resume}, after, "the download resumed")
			}
			states := srv.reportStates()
			assert.Equal(t, poll.ReportSuccess, states[len(states)-1], "reports %v", states)
			assert.NotContains(t, states, poll.ReportFailure, "reports %v", states)
			m.powerCut()

			m.checkGrubEnv(map[string]string{"ORDER": "B A", "A_OK": "1", "B_OK": "1",
				"B_TRY": "0", "ROTA_B_TRIAL": ""})
			m.checkOutcome(good.Version, poll.ReportSuccess)
			m.checkData(fx, tt.boots...)
			t.Logf("scenario took %v", time.Since(start).Round(time.Second))
		})
	}
}

// logProgress logs how far the install had come by the last progress
// report.
func logProgress(t *testing.T, p *Proxy) {
	t.Helper()
	for _, r := range slices.Backward(p.Reports()) {
		if r.Progress != nil && r.State == poll.ReportInstalling {
			t.Logf("power cut after the agent reported %d of %d image bytes written",
				r.Progress.Done, r.Progress.Total)
			return
		}
	}
	t.Log("no install progress was reported before the power cut")
}

// checkInstallInterrupted checks a machine whose power went during the
// install: the journal is still installing the deployment, and GRUB
// still boots A, the slot B being written is not bootable. It returns
// where the download must resume: at the journal's checkpoint, or at the
// start of the file when there is none yet.
func checkInstallInterrupted(t *testing.T, m *machine, id string) int64 {
	t.Helper()
	j := m.journal()
	assert.Equal(t, rota.StateInstall, j.State, "journal %+v", j)
	assert.Equal(t, id, j.Deployment, "journal %+v", j)
	m.checkGrubEnv(map[string]string{"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "0"})
	if cp := j.Checkpoint; cp != nil {
		t.Logf("the journal holds a checkpoint: image %d, %d bytes written", cp.Image,
			cp.Uncompressed)
		return cp.FileOffset + cp.Compressed
	}
	t.Log("the journal holds no checkpoint: the install starts again")
	return 0
}

// checkActivated checks a machine whose power went after slot B was
// marked active and before the reboot: the journal is in its reboot
// state, and GRUB will try B once. No download is needed.
func checkActivated(t *testing.T, m *machine, id string) int64 {
	t.Helper()
	j := m.journal()
	assert.Equal(t, rota.StateReboot, j.State, "journal %+v", j)
	assert.Equal(t, id, j.Deployment, "journal %+v", j)
	assert.Equal(t, "rootfs.1", j.Target, "journal %+v", j)
	m.checkGrubEnv(map[string]string{"ORDER": "B A", "B_OK": "1", "B_TRY": "0",
		"ROTA_B_TRIAL": "1"})
	return -1
}

// waitFor waits up to timeout for ch to close, failing the test if the
// machine stops first or the time runs out.
func (m *machine) waitFor(ch <-chan struct{}, timeout time.Duration, what string) {
	m.t.Helper()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-m.vm.Exited():
		m.t.Fatalf("the machine stopped while waiting for %s", what)
	case <-t.C:
		m.t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// consoleHas reports whether any console line so far matches the
// regular expression pattern.
func consoleHas(m *machine, pattern string) bool {
	re := regexp.MustCompile(pattern)
	return slices.ContainsFunc(m.vm.Lines(), func(l Line) bool { return re.MatchString(l.Text) })
}
