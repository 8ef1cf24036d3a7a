package rota_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// settleTimeout bounds each phase of an agent test that goes over HTTP:
// a hung download or retry loop fails the test long before go test's own
// timeout would.
const settleTimeout = 20 * time.Second

// Paths of the device API on a polltest server.
var (
	checkPath = poll.APIPath + "/check"
)

func reportPath(deployment string) string {
	return poll.APIPath + "/deployments/" + deployment + "/reports"
}

// netDevice is a simulated device whose agent talks to a polltest server
// through the real poll client, as rota-client does.
type netDevice struct {
	*device
	srv      *polltest.Server
	kr       *bundle.Keyring
	key      ed25519.PrivateKey
	rebooter *simRebooter
	hooksDir string // the agent's HooksDir; "" means none

	mu     sync.Mutex // guards ranges
	ranges []string   // Range header of each bundle request, "" for none
}

// newNetDevice returns a device with slots of slotSize bytes, admitted by
// srv, trusting the keys of kr.
func newNetDevice(t *testing.T, srv *polltest.Server, kr *bundle.Keyring,
	slotSize int) *netDevice {
	t.Helper()
	_, key, err := ed25519.GenerateKey(cryptorand.Reader)
	require.NoError(t, err)
	srv.SetAdmission(poll.KeyID(key.Public().(ed25519.PublicKey)), poll.AuthAccepted)
	return &netDevice{device: newDeviceSized(t, slotSize), srv: srv, kr: kr, key: key,
		rebooter: &simRebooter{}}
}

// RoundTrip records the Range header of bundle requests and passes every
// request on to the server's transport.
func (d *netDevice) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasPrefix(req.URL.Path, "/bundles/") {
		d.mu.Lock()
		d.ranges = append(d.ranges, req.Header.Get("Range"))
		d.mu.Unlock()
	}
	return d.srv.Client().Transport.RoundTrip(req)
}

// bundleRanges returns the Range headers of the bundle requests so far.
func (d *netDevice) bundleRanges() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.ranges...)
}

// agent starts a new agent process on the device, with its own client:
// short waits everywhere and a stall watchdog that fires within a tenth
// of a second.
func (d *netDevice) agent(t *testing.T) *rota.Agent {
	t.Helper()
	d.open()
	client, err := poll.New(poll.Config{
		ServerURL:        d.srv.URL,
		Key:              d.key,
		Identity:         map[string]string{"serial": "net-1"},
		HTTPClient:       &http.Client{Transport: d},
		RetryWaitMin:     time.Millisecond,
		RetryWaitMax:     5 * time.Millisecond,
		MaxRetryAfter:    2 * time.Second,
		RequestTimeout:   5 * time.Second,
		MinThroughput:    256 << 10,
		ThroughputWindow: 100 * time.Millisecond,
	})
	require.NoError(t, err)
	a, err := rota.NewAgent(rota.AgentOptions{
		System:       d.sys,
		Server:       rota.PollServer{Client: client},
		Keyring:      d.kr,
		Rebooter:     d.rebooter,
		HooksDir:     d.hooksDir,
		RetryWait:    time.Millisecond,
		SyncInterval: 256 << 10,
	})
	require.NoError(t, err)
	return a
}

// settle runs a fresh agent until it asks for a reboot (ErrRebooting) or
// has finished deployment dep (nil). It fails the test if that takes
// longer than settleTimeout. Waits the agent asks for are shortened, as a
// test has no time for poll intervals.
func (d *netDevice) settle(t *testing.T, dep string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	a := d.agent(t)
	for {
		wait, err := a.Step(ctx)
		if errors.Is(err, rota.ErrRebooting) {
			return err
		}
		require.NoError(t, ctx.Err(), "the agent did not settle; last error: %v", err)
		if err != nil {
			t.Logf("step: %v", err)
		}
		j, jerr := a.Journal()
		require.NoError(t, jerr)
		if j.State == rota.StateIdle && j.Last != nil && j.Last.Deployment == dep {
			return err
		}
		wait = min(wait, 10*time.Millisecond)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// journal returns the device's agent journal.
func (d *netDevice) journal(t *testing.T) *rota.Journal {
	t.Helper()
	j, err := d.agent(t).Journal()
	require.NoError(t, err)
	return j
}

// slotSums returns the sha256 of both slot files.
func (d *netDevice) slotSums() (a, b [32]byte) {
	return sha256.Sum256(d.read("rootfs-a.img")), sha256.Sum256(d.read("rootfs-b.img"))
}

// netRelease is a signed bundle as the server stores it.
type netRelease struct {
	raw    []byte
	digest string
	img    []byte
}

// buildRelease builds a bundle of an image of size bytes of noise, cut
// into 256 KiB frames so that installs have many resume points.
func buildRelease(t *testing.T, s *bundle.Signer, spec bundle.Spec, size int,
	seed uint64) netRelease {
	t.Helper()
	dir := t.TempDir()
	img := make([]byte, size)
	rnd := rand.New(rand.NewPCG(seed, seed))
	for i := range img {
		img[i] = byte(rnd.Uint32())
	}
	p := filepath.Join(dir, "rootfs.img")
	require.NoError(t, os.WriteFile(p, img, 0o644))
	spec.Images = []bundle.ImageSource{{Class: "rootfs", Path: p}}
	var buf bytes.Buffer
	info, err := bundle.Create(context.Background(), &buf, spec,
		bundle.CreateOptions{Signers: []*bundle.Signer{s}, TempDir: dir, ChunkSize: 256 << 10})
	require.NoError(t, err)
	return netRelease{raw: buf.Bytes(), digest: info.Digest, img: img}
}

// offer serves r at path and offers it as deployment dep.
func offer(srv *polltest.Server, dep, version, path string, r netRelease) {
	srv.AddFile(path, r.raw, true)
	srv.SetUpdate(&poll.Update{DeploymentID: dep, Version: version, BundleURL: path,
		Digest: r.digest, Size: int64(len(r.raw))})
}

// reportStates returns the states of the reports on deployment dep.
func reportStates(srv *polltest.Server, dep string) []poll.ReportState {
	var out []poll.ReportState
	for _, r := range srv.Reports(dep) {
		out = append(out, r.State)
	}
	return out
}

func count[T comparable](s []T, v T) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// rangeStart returns the first byte of a "bytes=N-" header; 0 for none.
func rangeStart(t *testing.T, h string) int64 {
	t.Helper()
	if h == "" {
		return 0
	}
	v, ok := strings.CutPrefix(h, "bytes=")
	require.True(t, ok, "range %q", h)
	n, err := strconv.ParseInt(strings.TrimSuffix(v, "-"), 10, 64)
	require.NoError(t, err, "range %q", h)
	return n
}

// TestAgent_InstallsThroughNetworkFaults installs a multi-frame bundle
// over HTTP while the network and the server misbehave in the ways
// devices in the field meet, and checks each time that the update is
// committed after the reboot, that the booted slot was never written,
// and that success is reported once.
func TestAgent_InstallsThroughNetworkFaults(t *testing.T) {
	const (
		dep        = "dep-net"
		bundlePath = "/bundles/v2.rota"
	)
	s, kr := newKey(t)
	rel := buildRelease(t, s, bundle.Spec{Compatible: "acme-board", Version: "2.0.0"},
		3<<20, 42)
	size := int64(len(rel.raw))

	cut := func(after int64) polltest.Fault { return polltest.Fault{Cut: true, After: after} }
	stall := func(after int64) polltest.Fault {
		// Far longer than the test: only the watchdog ends it.
		return polltest.Fault{Stall: time.Minute, After: after}
	}
	busy := polltest.Fault{Status: http.StatusServiceUnavailable, RetryAfter: "0"}
	repeat := func(n int, f polltest.Fault) []polltest.Fault {
		out := make([]polltest.Fault, n)
		for i := range out {
			out[i] = f
		}
		return out
	}

	tests := []struct {
		name string
		// before are queued by path before the first agent starts,
		// afterReboot before the agent of the new slot starts.
		before, afterReboot map[string][]polltest.Fault
		// minElapsed is the least time the first phase must take.
		minElapsed time.Duration
		// agentRetry means the client gives up on the download once and
		// the agent must resume from its own checkpoint.
		agentRetry bool
	}{
		{name: "a clean network installs in one go"},
		{
			name: "connections cut several times mid-body are resumed",
			before: map[string][]polltest.Fault{bundlePath: {
				cut(300_000), cut(700_000), cut(1), cut(1 << 20)}},
		},
		{
			// The end of the file is tar padding the agent never reads.
			name: "connections cut at the first byte and in the last frame are resumed",
			before: map[string][]polltest.Fault{bundlePath: {
				cut(0), cut(size - 100_000)}},
		},
		{
			name: "a burst of 503 with Retry-After before the first byte is ridden out",
			before: map[string][]polltest.Fault{bundlePath: {
				busy, busy, {Status: http.StatusTooManyRequests, RetryAfter: "0"}}},
		},
		{
			name: "a burst of 5xx while resuming is ridden out",
			before: map[string][]polltest.Fault{bundlePath: {
				cut(900_000), busy, {Status: http.StatusBadGateway}, busy}},
		},
		{
			name: "a Retry-After of one second is waited out",
			before: map[string][]polltest.Fault{bundlePath: {
				cut(500_000), {Status: http.StatusServiceUnavailable, RetryAfter: "1"}}},
			minElapsed: time.Second,
		},
		{
			name: "a server that stalls mid-body is caught by the watchdog",
			before: map[string][]polltest.Fault{bundlePath: {
				stall(1 << 20)}},
		},
		{
			name: "a server that stalls again after each resume is caught each time",
			before: map[string][]polltest.Fault{bundlePath: {
				stall(400_000), stall(300_000), stall(0)}},
		},
		{
			name: "more failures in a row than the client retries resume from the checkpoint",
			before: map[string][]polltest.Fault{bundlePath: append(
				[]polltest.Fault{cut(1536 << 10)}, repeat(poll.DefaultRetryMax, cut(0))...)},
			agentRetry: true,
		},
		{
			name: "a check cut off and answered 503 is retried",
			before: map[string][]polltest.Fault{checkPath: {
				cut(0), busy, {Status: http.StatusInternalServerError}}},
		},
		{
			name: "a check failing more often than the client retries is polled again",
			before: map[string][]polltest.Fault{checkPath: repeat(
				2*(poll.DefaultRetryMax+1)+1, busy)},
		},
		{
			name: "lost progress reports do not stop the install",
			before: map[string][]polltest.Fault{reportPath(dep): repeat(
				2*(poll.DefaultRetryMax+1), busy)},
		},
		{
			name: "a success report that fails is sent again",
			afterReboot: map[string][]polltest.Fault{reportPath(dep): repeat(
				2*(poll.DefaultRetryMax+1)+2, busy)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			offer(srv, dep, "2.0.0", bundlePath, rel)
			d := newNetDevice(t, srv, kr, 4<<20)
			bootedBefore, _ := d.slotSums()
			for path, faults := range tt.before {
				srv.Fault(path, faults...)
			}

			start := time.Now()
			require.ErrorIs(t, d.settle(t, dep), rota.ErrRebooting)
			assert.GreaterOrEqual(t, time.Since(start), tt.minElapsed)
			assert.Equal(t, rel.img, d.read("rootfs-b.img")[:len(rel.img)])
			if a, _ := d.slotSums(); a != bootedBefore {
				t.Fatal("the booted slot was written")
			}
			ranges := d.bundleRanges()
			if tt.agentRetry {
				assert.Equal(t, 2, count(ranges, ""),
					"the agent opened the bundle twice: %q", ranges)
				assert.Greater(t, rangeStart(t, ranges[len(ranges)-1]), int64(0),
					"the second attempt resumed from a checkpoint: %q", ranges)
			}

			require.Equal(t, "B", d.device.reboot())
			for path, faults := range tt.afterReboot {
				srv.Fault(path, faults...)
			}
			require.NoError(t, d.settle(t, dep))
			j := d.journal(t)
			assert.Equal(t, rota.StateIdle, j.State)
			assert.Equal(t, "success", j.Last.State, "%s", j.Last.Message)
			states := reportStates(srv, dep)
			assert.Equal(t, 1, count(states, poll.ReportSuccess), "reports %v", states)
			assert.Equal(t, poll.ReportSuccess, states[len(states)-1], "reports %v", states)
			assert.Zero(t, count(states, poll.ReportFailure), "reports %v", states)
			assert.Equal(t, 1, d.rebooter.asked)
			if a, _ := d.slotSums(); a != bootedBefore {
				t.Fatal("the old slot was written")
			}
			require.Equal(t, "B", d.device.reboot(), "the committed slot keeps booting")
			for _, faults := range []map[string][]polltest.Fault{tt.before, tt.afterReboot} {
				for path, f := range faults {
					assert.Greater(t, srv.Hits(path), len(f), "every fault on %s was served", path)
				}
			}
		})
	}
}

// TestAgent_ReportIDs checks that a report repeated by a restarted agent
// keeps its ID, so that the server counts it once, while the same report
// from another device of the deployment gets another ID, so that the
// server keeps both (it keeps one report per deployment, state and ID).
func TestAgent_ReportIDs(t *testing.T) {
	const dep = "dep-fleet"
	s, kr := newKey(t)
	rel := buildRelease(t, s, bundle.Spec{Compatible: "acme-board", Version: "2.0.0"},
		512<<10, 3)
	srv := polltest.NewServer(t)
	offer(srv, dep, "2.0.0", "/bundles/v2.rota", rel)

	first := newNetDevice(t, srv, kr, 1<<20)
	require.ErrorIs(t, first.settle(t, dep), rota.ErrRebooting)
	// The agent restarts before the device reboots: it asks again and
	// reports rebooting again.
	require.ErrorIs(t, first.settle(t, dep), rota.ErrRebooting)
	require.Equal(t, 2, first.rebooter.asked)
	second := newNetDevice(t, srv, kr, 1<<20)
	require.ErrorIs(t, second.settle(t, dep), rota.ErrRebooting)

	reports := srv.Reports(dep)
	ids := map[string]bool{}
	for _, r := range reports {
		ids[r.ID] = true
	}
	assert.Len(t, ids, len(reports), "every report kept has its own ID")
	states := reportStates(srv, dep)
	for _, st := range []poll.ReportState{poll.ReportDownloading, poll.ReportInstalling,
		poll.ReportRebooting} {
		assert.Equal(t, 2, count(states, st), "one %s report per device: %v", st, states)
	}
}

// TestAgent_RunsStateHooks installs an update over HTTP with a hook for
// every state change and checks the order they ran in, and the state
// each saw.
func TestAgent_RunsStateHooks(t *testing.T) {
	const dep = "dep-hooks"
	s, kr := newKey(t)
	rel := buildRelease(t, s, bundle.Spec{Compatible: "acme-board", Version: "2.0.0"},
		256<<10, 11)
	srv := polltest.NewServer(t)
	offer(srv, dep, "2.0.0", "/bundles/v2.rota", rel)
	d := newNetDevice(t, srv, kr, 1<<20)
	hooks := filepath.Join(d.dir, "hooks")
	log := filepath.Join(d.dir, "hooks.log")
	require.NoError(t, os.MkdirAll(hooks, 0o755))
	for _, st := range []string{"idle", "install", "approval", "reboot", "verify", "rollback"} {
		for _, ev := range []string{"enter", "leave", "error"} {
			name := st + "." + ev
			script := "#!/bin/sh\necho " + name + " $ROTA_STATE $ROTA_VERSION >> " + log + "\n"
			require.NoError(t, os.WriteFile(filepath.Join(hooks, name), []byte(script), 0o755))
		}
	}
	d.hooksDir = hooks

	require.ErrorIs(t, d.settle(t, dep), rota.ErrRebooting)
	require.Equal(t, "B", d.device.reboot())
	require.NoError(t, d.settle(t, dep))

	got, err := os.ReadFile(log)
	require.NoError(t, err)
	assert.Equal(t, []string{
		"install.enter install 2.0.0", // before the install, able to postpone it
		"idle.leave install 2.0.0",
		"install.leave reboot 2.0.0",
		"reboot.enter reboot 2.0.0", // before the reboot, able to postpone it
		"reboot.leave verify 2.0.0",
		"verify.enter verify 2.0.0",
		"verify.leave idle",
		"idle.enter idle",
	}, strings.Split(strings.TrimSuffix(string(got), "\n"), "\n"))
}

// TestAgent_PowerCutBetweenActivationAndJournal cuts the power after the
// install activated the new slot but before the journal left the install
// state. The device boots the new slot on trial; the agent must verify
// and commit it, and never write the slot the device would fall back to.
func TestAgent_PowerCutBetweenActivationAndJournal(t *testing.T) {
	const dep = "dep-cut"
	s, kr := newKey(t)
	rel := buildRelease(t, s, bundle.Spec{Compatible: "acme-board", Version: "2.0.0"},
		512<<10, 13)
	srv := polltest.NewServer(t)
	offer(srv, dep, "2.0.0", "/bundles/v2.rota", rel)
	d := newNetDevice(t, srv, kr, 1<<20)
	fallback, _ := d.slotSums()

	require.ErrorIs(t, d.settle(t, dep), rota.ErrRebooting)
	// Put the journal back as it was just before the reboot state was
	// saved.
	p := filepath.Join(d.dir, "data", rota.JournalFile)
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	var j map[string]any
	require.NoError(t, json.Unmarshal(raw, &j))
	require.Equal(t, "reboot", j["state"])
	j["state"] = "install"
	delete(j, "target")
	raw, err = json.Marshal(j)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, raw, 0o644))

	require.Equal(t, "B", d.device.reboot(), "the power cut boots the active new slot")
	require.NoError(t, d.settle(t, dep))
	assert.Equal(t, "success", d.journal(t).Last.State)
	if a, _ := d.slotSums(); a != fallback {
		t.Fatal("the fallback slot was written")
	}
	assert.Equal(t, 1, count(reportStates(srv, dep), poll.ReportSuccess))
	require.Equal(t, "B", d.device.reboot(), "the new slot is committed")
}
