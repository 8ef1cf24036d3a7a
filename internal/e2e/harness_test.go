package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/slot"
)

// Timeouts of the scenarios. Under TCG on two busy cores a boot from
// reset to init takes about 30 s and an install about 40 s; the limits
// leave room for a machine several times slower.
const (
	bootTimeout    = 4 * time.Minute
	installTimeout = 8 * time.Minute
	pollTimeout    = 2 * time.Minute
)

// enrollmentToken admits the test machines at once; it is in the
// machines' client.toml.
const enrollmentToken = "rota-e2e-enrollment"

// serverProc is a rota-server process on a loopback port, reached by the
// machine through a Proxy.
type serverProc struct {
	*testutil.Server
	t     *testing.T
	proxy *Proxy
}

// startServer starts rota-server with its data in a temporary directory,
// trusting the fixture's signing key, and a proxy in front of it.
func startServer(t *testing.T, fx *fixture) *serverProc {
	t.Helper()
	s := &serverProc{t: t, Server: testutil.StartServer(t, fx.server, "--keyring", fx.pubKey,
		"--poll-interval", "5s", "--schedule-interval", "500ms",
		"--enrollment-token", enrollmentToken, "--log-level", "debug")}
	var err error
	s.proxy, err = NewProxy(s.URL())
	require.NoError(t, err)
	t.Cleanup(func() { s.proxy.Close() })
	return s
}

// guestURL is the server's address as the machine sees it: QEMU's user
// network maps 10.0.2.2 to the host's loopback interface.
func (s *serverProc) guestURL() string {
	return fmt.Sprintf("http://10.0.2.2:%d", s.proxy.Port())
}

// upload uploads a bundle file as a release and returns its ID.
func (s *serverProc) upload(path string) string {
	s.t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(s.t, err)
	var rel struct {
		ID string `json:"id"`
	}
	require.Equal(s.t, http.StatusCreated, s.API("POST", "/releases", raw, &rel))
	return rel.ID
}

// deploy deploys a release to every accepted device at once, without
// retries, and returns the deployment's ID.
func (s *serverProc) deploy(releaseID string) string {
	s.t.Helper()
	var d struct {
		ID string `json:"id"`
	}
	require.Equal(s.t, http.StatusCreated, s.API("POST", "/deployments", map[string]any{
		"name":      "e2e " + releaseID,
		"releaseId": releaseID,
		"target":    map[string]any{"filter": map[string]any{"status": "accepted"}},
	}, &d))
	return d.ID
}

// waitAccepted waits until the machine's agent has been admitted.
func (s *serverProc) waitAccepted(timeout time.Duration) {
	s.t.Helper()
	eventually(s.t, timeout, "the machine to be admitted", func() bool {
		var page struct {
			Total int `json:"total"`
		}
		s.API("GET", "/devices?status=accepted&limit=1", nil, &page)
		return page.Total == 1
	})
}

// targetDevice is the machine's entry in a deployment.
type targetDevice struct {
	State    poll.ReportState `json:"state"`
	Attempts int              `json:"attempts"`
	Message  string           `json:"message"`
}

// device returns the machine's entry in deployment id.
func (s *serverProc) device(id string) targetDevice {
	s.t.Helper()
	var page struct {
		Items []targetDevice `json:"items"`
	}
	require.Equal(s.t, http.StatusOK,
		s.API("GET", "/deployments/"+id+"/devices", nil, &page))
	require.Len(s.t, page.Items, 1, "one machine in deployment %s", id)
	return page.Items[0]
}

// waitState waits until the machine's state in deployment id is want,
// failing early on another final state, and returns the entry and when
// it saw it.
func (s *serverProc) waitState(id string, want poll.ReportState,
	timeout time.Duration) (targetDevice, time.Time) {
	s.t.Helper()
	final := map[poll.ReportState]bool{poll.ReportSuccess: true, poll.ReportFailure: true,
		poll.ReportRolledBack: true, poll.ReportAlreadyInstalled: true}
	var d targetDevice
	eventually(s.t, timeout, "deployment state "+string(want), func() bool {
		d = s.device(id)
		if d.State != want && final[d.State] {
			s.t.Fatalf("deployment %s ended %s (%s), want %s", id, d.State, d.Message, want)
		}
		return d.State == want
	})
	return d, time.Now()
}

// eventually calls cond every 250 ms until it returns true, failing the
// test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// machine is one test machine: its own copy of the disk and firmware
// variables, a console log kept as a test artifact, and the QEMU process
// while it runs.
type machine struct {
	t      *testing.T
	disk   *Disk
	vars   string
	server *serverProc
	log    *os.File
	vm     *VM
	boots  int

	// fatal matches console lines that end a scenario at once: by
	// default, a machine left without a bootable slot, an agent that
	// stopped, and a kernel panic.
	fatal *regexp.Regexp
}

// defaultFatal is machine.fatal unless a scenario expects one of them.
var defaultFatal = regexp.MustCompile(
	`rota: no bootable slot|rota-e2e: rota-client exited|Kernel panic`)

// newMachine gives a scenario a fresh machine made from the base disk.
func newMachine(t *testing.T, fx *fixture, srv *serverProc) *machine {
	t.Helper()
	dir := t.TempDir()
	disk, err := fx.base.Copy(filepath.Join(dir, "disk.img"))
	require.NoError(t, err)
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	require.NoError(t, CopyVars(vars))
	logPath := filepath.Join(t.ArtifactDir(), "console.log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	m := &machine{t: t, disk: disk, vars: vars, server: srv, log: logf, fatal: defaultFatal}
	t.Logf("serial console: %s", logPath)
	t.Cleanup(func() {
		if m.vm != nil {
			m.vm.Kill()
		}
		logf.Close()
		if t.Failed() {
			t.Logf("serial console %s, last lines:\n%s", logPath, tailFile(logPath, 60))
		}
	})
	return m
}

// powerOn starts QEMU.
func (m *machine) powerOn() {
	m.t.Helper()
	m.boots++
	fmt.Fprintf(m.log, "\n==== rota-e2e test: power on #%d at %s ====\n", m.boots,
		time.Now().UTC().Format(time.RFC3339))
	vm, err := StartVM(VMOptions{Disk: m.disk.Path, Vars: m.vars, Server: m.server.guestURL(),
		Log: m.log})
	require.NoError(m.t, err)
	m.vm = vm
}

// powerCut kills QEMU with SIGKILL.
func (m *machine) powerCut() {
	m.t.Helper()
	m.vm.Kill()
	fmt.Fprintf(m.log, "\n==== rota-e2e test: power cut at %s ====\n",
		time.Now().UTC().Format(time.RFC3339))
	m.vm = nil
}

// expect waits for a console line matching pattern and returns it.
func (m *machine) expect(pattern string, timeout time.Duration) Line {
	m.t.Helper()
	start := time.Now()
	l, err := m.vm.Expect(regexp.MustCompile(pattern), m.fatal, timeout)
	require.NoError(m.t, err)
	m.t.Logf("console after %5.1fs: %s", time.Since(start).Seconds(), l.Text)
	return l
}

// expectBoot waits for the test system's init to report that it booted
// slot with version.
func (m *machine) expectBoot(slot, version string) Line {
	m.t.Helper()
	return m.expect(`rota-e2e: booted slot=`+slot+` version=`+regexp.QuoteMeta(version)+` `,
		bootTimeout)
}

// grubenv reads the grubenv from the EFI system partition of the disk.
func (m *machine) grubenv() map[string]string {
	m.t.Helper()
	raw, err := m.disk.ReadESPFile(context.Background(), "EFI/BOOT/grubenv")
	require.NoError(m.t, err)
	p := filepath.Join(m.t.TempDir(), "grubenv")
	require.NoError(m.t, os.WriteFile(p, raw, 0o644))
	env, err := slot.ReadGrubEnv(p)
	require.NoError(m.t, err)
	vars := map[string]string{}
	for _, name := range []string{"ORDER", "A_OK", "A_TRY", "B_OK", "B_TRY",
		"ROTA_A_TRIAL", "ROTA_B_TRIAL"} {
		if v, ok := env.Get(name); ok {
			vars[name] = v
		}
	}
	return vars
}

// dataFile reads a file of the data partition from the disk.
func (m *machine) dataFile(name string) ([]byte, error) {
	return m.disk.ReadDataFile(context.Background(), m.t.TempDir(), name)
}

// journal reads the agent's journal from the data partition.
func (m *machine) journal() rota.Journal {
	m.t.Helper()
	raw, err := m.dataFile("rota/" + rota.JournalFile)
	require.NoError(m.t, err)
	var j rota.Journal
	require.NoError(m.t, json.Unmarshal(raw, &j), "journal %s", raw)
	return j
}

// checkOutcome checks, with the machine off, that the agent's journal is
// idle and records state as the outcome of the deployment of version.
func (m *machine) checkOutcome(version string, state poll.ReportState) {
	m.t.Helper()
	j := m.journal()
	assert.Equal(m.t, rota.StateIdle, j.State, "journal %+v", j)
	if assert.NotNil(m.t, j.Last, "journal %+v", j) {
		assert.Equal(m.t, version, j.Last.Version, "journal %+v", j.Last)
		assert.Equal(m.t, string(state), j.Last.State, "journal %+v", j.Last)
	}
}

// checkGrubEnv checks, with the machine off, the boot-once variables of
// the grubenv: want maps names to values, "" meaning absent.
func (m *machine) checkGrubEnv(want map[string]string) {
	m.t.Helper()
	env := m.grubenv()
	for name, v := range want {
		got, ok := env[name]
		if v == "" {
			assert.False(m.t, ok, "grubenv %s is absent; grubenv %v", name, env)
			continue
		}
		assert.Equal(m.t, v, got, "grubenv %s; grubenv %v", name, env)
	}
}

// checkData checks, with the machine off, that the data partition still
// holds the file written when the disk was made, unchanged, and that the
// machine booted exactly the slots and versions in boots, in order, each
// as "slot=NAME version=VERSION".
func (m *machine) checkData(fx *fixture, boots ...string) {
	m.t.Helper()
	keep, err := m.dataFile(KeepFile)
	require.NoError(m.t, err)
	assert.Equal(m.t, string(fx.keep), string(keep), "the data partition's %s is intact", KeepFile)
	log, err := m.dataFile(BootsFile)
	require.NoError(m.t, err)
	assert.Equal(m.t, strings.Join(boots, "\n")+"\n", string(log), "the boots recorded in %s",
		BootsFile)
}

// tailFile returns the last n lines of a file, without control
// sequences and control characters: firmware clears the screen and a
// reset leaves NUL bytes.
func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	text := controlRE.ReplaceAllString(string(b), "")
	text = strings.Map(func(r rune) rune {
		if r < ' ' && r != '\n' && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, text)
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// agentLine matches a line of the agent's log (log/slog's text format)
// with message msg, followed by attributes matching rest, a regular
// expression, unless rest is "".
func agentLine(msg, rest string) string {
	p := `msg="?` + regexp.QuoteMeta(msg) + `"?( |$)`
	if rest != "" {
		p += `.*` + rest
	}
	return p
}

// noPanicFatal is machine.fatal for a scenario whose kernel is meant to
// panic.
var noPanicFatal = regexp.MustCompile(`rota: no bootable slot|rota-e2e: rota-client exited`)

// bootFactory powers a new machine on and waits until it runs the
// factory release from slot A and the server has admitted it.
func (m *machine) bootFactory() Line {
	m.t.Helper()
	m.powerOn()
	l := m.expectBoot("A", factory.Version)
	m.server.waitAccepted(pollTimeout)
	return l
}

// release uploads the bundle of rel and deploys it to the machine,
// returning the deployment's ID.
func (s *serverProc) release(fx *fixture, rel Release) string {
	s.t.Helper()
	return s.deploy(s.upload(fx.bundles[rel.Version]))
}

// reportStates returns the states the machine reported through the
// proxy, in order, with repeats in a row (progress reports) folded.
func (s *serverProc) reportStates() []poll.ReportState {
	var states []poll.ReportState
	for _, r := range s.proxy.Reports() {
		if len(states) == 0 || states[len(states)-1] != r.State {
			states = append(states, r.State)
		}
	}
	return states
}
