package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"github.com/rotaupdate/rota/internal/testutil"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/slot"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// agentTimeout bounds each run of the agent in the end-to-end test.
const agentTimeout = 15 * time.Second

// slotSize is the size of each simulated slot, in bytes.
const slotSize = 4 << 20

// simDevice is a simulated device whose agent talks to a device API.
type simDevice struct {
	t      *testing.T
	dir    string
	sys    *slot.System
	key    ed25519.PrivateKey
	url    string
	kr     *bundle.Keyring
	reboot rebooter
}

// rebooter records that a reboot was asked for; the test performs it.
type rebooter struct{ asked int }

func (r *rebooter) Reboot(context.Context) error { r.asked++; return nil }

func newSimDevice(t *testing.T, url string, kr *bundle.Keyring) *simDevice {
	t.Helper()
	dir := t.TempDir()
	testutil.SimDevice(t, dir, "acme-board", slotSize)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	d := &simDevice{t: t, dir: dir, key: key, url: url, kr: kr}
	d.open()
	return d
}

// open (re)opens the system, as the next process on the device would.
func (d *simDevice) open() {
	cfg, err := slot.LoadConfig(filepath.Join(d.dir, "system.toml"))
	require.NoError(d.t, err)
	d.sys, err = slot.Open(cfg, slot.WithCmdline(filepath.Join(d.dir, "cmdline")))
	require.NoError(d.t, err)
}

// boot simulates a reboot and returns the boot name of the booted slot.
func (d *simDevice) boot() string {
	name, err := d.sys.Bootloader().(*slot.FileBootloader).SimulateBoot(
		context.Background())
	require.NoError(d.t, err)
	d.open()
	return name
}

// agent starts a new agent process with its own client.
func (d *simDevice) agent() *rota.Agent {
	client, err := poll.New(poll.Config{
		ServerURL:       d.url,
		Key:             d.key,
		Identity:        map[string]string{"serial": "sim-1"},
		EnrollmentToken: testEnrollment,
		RetryWaitMin:    time.Millisecond,
		RetryWaitMax:    5 * time.Millisecond,
	})
	require.NoError(d.t, err)
	a, err := rota.NewAgent(rota.AgentOptions{
		System:       d.sys,
		Server:       rota.PollServer{Client: client},
		Keyring:      d.kr,
		Rebooter:     &d.reboot,
		HealthDir:    filepath.Join(d.dir, "health"),
		RetryWait:    time.Millisecond,
		SyncInterval: 1 << 20,
	})
	require.NoError(d.t, err)
	return a
}

// settle steps a fresh agent until it asks for a reboot (ErrRebooting)
// or has finished deployment dep (nil), shortening the waits it asks for.
func (d *simDevice) settle(dep string) error {
	ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
	defer cancel()
	a := d.agent()
	for {
		wait, err := a.Step(ctx)
		if errors.Is(err, rota.ErrRebooting) {
			return err
		}
		require.NoError(d.t, ctx.Err(), "the agent did not settle; last error: %v", err)
		j, jerr := a.Journal()
		require.NoError(d.t, jerr)
		if j.State == rota.StateIdle && j.Last != nil && j.Last.Deployment == dep {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(wait, 10*time.Millisecond)):
		}
	}
}

// signedRelease builds a signed bundle of a 1 MiB image and returns the
// .rota bytes, their digest and a keyring trusting the signer.
func signedRelease(t *testing.T) ([]byte, string, *bundle.Keyring) {
	t.Helper()
	priv, pub, err := bundle.GenerateKey(bundle.Ed25519, nil)
	require.NoError(t, err)
	signer, err := bundle.LoadSigner(priv, nil)
	require.NoError(t, err)
	k, err := bundle.ParsePublicKey(pub)
	require.NoError(t, err)

	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.img")
	require.NoError(t, os.WriteFile(img, bytes.Repeat([]byte{0x5a}, 1<<20), 0o644))
	var buf bytes.Buffer
	info, err := bundle.Create(context.Background(), &buf, bundle.Spec{
		Compatible: "acme-board", Version: "2.0.0",
		Images: []bundle.ImageSource{{Class: "rootfs", Path: img}},
	}, bundle.CreateOptions{Signers: []*bundle.Signer{signer}, TempDir: dir})
	require.NoError(t, err)
	return buf.Bytes(), info.Digest, bundle.NewKeyring(k)
}

func TestDeviceAPI_AgentInstallsDeployedRelease(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.DeviceAPIConfig{EnrollmentToken: testEnrollment})
	srv := httptest.NewServer(e.h)
	t.Cleanup(srv.Close)
	raw, digest, kr := signedRelease(t)
	d := newSimDevice(t, srv.URL, kr)

	// A first run admits the device by its enrollment token; with no
	// deployment it settles on nothing to do.
	_, err := d.agent().Step(ctx)
	require.NoError(t, err)
	dev, err := e.st.DeviceByKey(ctx, poll.KeyID(d.key.Public().(ed25519.PublicKey)))
	require.NoError(t, err)
	require.Equal(t, store.StatusAccepted, dev.Status)

	dep := e.deploy(t, digest, raw, dev.ID)
	require.ErrorIs(t, d.settle(dep), rota.ErrRebooting)
	require.Equal(t, 1, d.reboot.asked)
	require.Equal(t, "B", d.boot())
	require.NoError(t, d.settle(dep))
	require.Equal(t, "B", d.boot(), "the committed slot keeps booting")

	counts, err := e.st.DeploymentCounts(ctx, dep)
	require.NoError(t, err)
	assert.Equal(t, store.Counts{store.TargetState(poll.ReportSuccess): 1},
		nonZero(counts.All))
	reports, err := e.st.Reports(ctx, dep, dev.ID)
	require.NoError(t, err)
	var states []poll.ReportState
	for _, r := range reports {
		states = append(states, r.State)
	}
	assert.Equal(t, []poll.ReportState{poll.ReportDownloading, poll.ReportInstalling,
		poll.ReportRebooting, poll.ReportVerifying, poll.ReportSuccess}, states)

	// The next check tells the server what runs now, and is offered nothing.
	_, err = d.agent().Step(ctx)
	require.NoError(t, err)
	dev, err = e.st.Device(ctx, dev.ID)
	require.NoError(t, err)
	assert.Equal(t, digest, dev.InstalledDigest)
	j, err := d.agent().Journal()
	require.NoError(t, err)
	assert.Equal(t, rota.StateIdle, j.State)
}

// nonZero returns the counts that are not zero.
func nonZero(c store.Counts) store.Counts {
	out := store.Counts{}
	for k, v := range c {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
