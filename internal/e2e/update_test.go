package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
)

// TestGoodUpdate boots slot A, deploys a good release from a real server,
// and follows it through the boot chain: the agent installs it into slot
// B and reboots, GRUB tries B once, the agent there verifies and commits,
// the server records success, and a power cycle later the machine still
// boots B. The data partition is untouched throughout. It also measures
// the update's downtime: from the reboot until the server shows success.
func TestGoodUpdate(t *testing.T) {
	t.Parallel()
	fx := setup(t)
	start := time.Now()
	srv := startServer(t, fx)
	m := newMachine(t, fx, srv)

	first := m.bootFactory()
	id := srv.release(fx, good)
	reboot := m.expect(`rota-e2e: rebooting`, installTimeout)
	grub := m.expect(`rota: grub loaded`, bootTimeout)
	m.expect(`rota: booting slot B `, bootTimeout)
	kernel := m.expect(`Linux version`, bootTimeout)
	booted := m.expectBoot("B", good.Version)
	agent := m.expect(agentLine("rota-client started", ""), bootTimeout)
	_, success := srv.waitState(id, poll.ReportSuccess, installTimeout)
	m.expect(agentLine("deployment finished", `outcome=success`), pollTimeout)
	assert.Equal(t, []poll.ReportState{poll.ReportDownloading, poll.ReportInstalling,
		poll.ReportRebooting, poll.ReportVerifying, poll.ReportSuccess}, srv.reportStates())

	writeDowntime(t, downtime{
		firstBoot: first.Time.Sub(start),
		grub:      grub.Time.Sub(reboot.Time),
		kernel:    kernel.Time.Sub(reboot.Time),
		init:      booted.Time.Sub(reboot.Time),
		agent:     agent.Time.Sub(reboot.Time),
		success:   success.Sub(reboot.Time),
	})

	// The commit made B the first good slot: the next boot stays there.
	m.powerCut()
	m.checkGrubEnv(map[string]string{"ORDER": "B A", "A_OK": "1", "B_OK": "1", "B_TRY": "0",
		"ROTA_B_TRIAL": ""})
	m.powerOn()
	m.expectBoot("B", good.Version)
	m.expect(agentLine("confirmed the running system", `slot=rootfs\.1`), pollTimeout)
	m.powerCut()

	m.checkGrubEnv(map[string]string{"ORDER": "B A", "B_OK": "1", "B_TRY": "0"})
	m.checkOutcome(good.Version, poll.ReportSuccess)
	m.checkData(fx, "slot=A version=1.0.0", "slot=B version=2.0.0", "slot=B version=2.0.0")
	t.Logf("scenario took %v", time.Since(start).Round(time.Second))
}

// TestBadHealthCheck deploys a release that boots but whose health check
// fails: the agent in slot B marks it bad and reboots, GRUB falls back
// to A, the agent there reports the rollback, and the server shows the
// machine as rolled back with the failing check's output.
func TestBadHealthCheck(t *testing.T) {
	t.Parallel()
	fx := setup(t)
	start := time.Now()
	srv := startServer(t, fx)
	m := newMachine(t, fx, srv)

	m.bootFactory()
	id := srv.release(fx, badHealth)
	m.expect(`rota-e2e: rebooting`, installTimeout)
	m.expect(`rota: booting slot B `, bootTimeout)
	m.expectBoot("B", badHealth.Version)
	m.expect(agentLine("health check failed; rolling back", `does not start`), pollTimeout)
	m.expect(`rota-e2e: rebooting`, pollTimeout)
	m.expect(`rota: booting slot A `, bootTimeout)
	m.expectBoot("A", factory.Version)
	d, _ := srv.waitState(id, poll.ReportRolledBack, installTimeout)
	assert.Contains(t, d.Message, "the application of this release does not start")
	m.expect(agentLine("deployment finished", `outcome=rolled-back`), pollTimeout)
	m.expect(agentLine("confirmed the running system", `slot=rootfs\.0`), pollTimeout)
	assert.Equal(t, []poll.ReportState{poll.ReportDownloading, poll.ReportInstalling,
		poll.ReportRebooting, poll.ReportVerifying, poll.ReportRolledBack}, srv.reportStates())
	m.powerCut()

	// B is marked bad, so GRUB never boots it again; A is good.
	m.checkGrubEnv(map[string]string{"A_OK": "1", "A_TRY": "0", "B_OK": "0",
		"ROTA_B_TRIAL": ""})
	m.checkOutcome(badHealth.Version, poll.ReportRolledBack)
	m.checkData(fx, "slot=A version=1.0.0", "slot=B version=3.0.0", "slot=A version=1.0.0")
	t.Logf("scenario took %v", time.Since(start).Round(time.Second))
}

// TestKernelDoesNotBoot deploys a release whose system dies in early
// boot: its kernel panics and resets the machine before the agent runs,
// GRUB finds B's one try spent and boots A, and the agent there notices
// the fallback and reports the rollback.
func TestKernelDoesNotBoot(t *testing.T) {
	t.Parallel()
	fx := setup(t)
	start := time.Now()
	srv := startServer(t, fx)
	m := newMachine(t, fx, srv)
	m.fatal = noPanicFatal

	m.bootFactory()
	id := srv.release(fx, badBoot)
	m.expect(`rota-e2e: rebooting`, installTimeout)
	m.expect(`rota: booting slot B `, bootTimeout)
	m.expect(`rota-e2e: this release's early boot fails`, bootTimeout)
	m.expect(`Kernel panic`, bootTimeout)
	m.expect(`rota: booting slot A `, bootTimeout)
	m.expectBoot("A", factory.Version)
	d, _ := srv.waitState(id, poll.ReportRolledBack, installTimeout)
	assert.Contains(t, d.Message, "did not boot")
	m.expect(agentLine("deployment finished", `outcome=rolled-back`), pollTimeout)
	m.expect(agentLine("confirmed the running system", `slot=rootfs\.0`), pollTimeout)
	assert.Equal(t, []poll.ReportState{poll.ReportDownloading, poll.ReportInstalling,
		poll.ReportRebooting, poll.ReportRolledBack}, srv.reportStates())
	m.powerCut()

	m.checkGrubEnv(map[string]string{"A_OK": "1", "A_TRY": "0", "B_OK": "0",
		"ROTA_B_TRIAL": ""})
	m.checkOutcome(badBoot.Version, poll.ReportRolledBack)
	// B never reached init, so only A's boots are recorded.
	m.checkData(fx, "slot=A version=1.0.0", "slot=A version=1.0.0")
	t.Logf("scenario took %v", time.Since(start).Round(time.Second))
}

// downtime is how long an update kept the machine from its work, from
// the moment it rebooted into the new slot.
type downtime struct {
	firstBoot                          time.Duration // power on to init, before the update
	grub, kernel, init, agent, success time.Duration
}

// writeDowntime logs d and keeps it as the artifact downtime.txt.
func writeDowntime(t *testing.T, d downtime) {
	t.Helper()
	report := fmt.Sprintf("update downtime (reboot to success on the server): %.1f s\n"+
		"  reboot -> GRUB loaded:           %5.1f s\n"+
		"  reboot -> kernel started:        %5.1f s\n"+
		"  reboot -> init of the new slot:  %5.1f s\n"+
		"  reboot -> agent started:         %5.1f s\n"+
		"  reboot -> success on the server: %5.1f s\n"+
		"first boot (power on -> init): %.1f s\n",
		d.success.Seconds(), d.grub.Seconds(), d.kernel.Seconds(), d.init.Seconds(),
		d.agent.Seconds(), d.success.Seconds(), d.firstBoot.Seconds())
	t.Log(report)
	require.NoError(t, os.WriteFile(filepath.Join(t.ArtifactDir(), "downtime.txt"),
		[]byte(report), 0o644))
}
