package rota_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/slot"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeServer is an in-memory device API: one offered update, reports
// deduplicated by ID.
type fakeServer struct {
	mu      sync.Mutex
	raw     []byte
	update  *poll.Update
	reports []poll.Report
	ids     map[string]bool
	// failAfter, when > 0, makes each download fail after that many bytes.
	failAfter int
	// offsets records where each download started.
	offsets []int64
}

func (s *fakeServer) Check(ctx context.Context, req poll.CheckRequest) (*poll.CheckResponse,
	error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &poll.CheckResponse{Update: s.update, PollInterval: 60}, nil
}

func (s *fakeServer) Download(ctx context.Context, url string, offset int64) (io.ReadCloser,
	error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offsets = append(s.offsets, offset)
	var r io.Reader = bytes.NewReader(s.raw[offset:])
	if s.failAfter > 0 {
		r = io.MultiReader(io.LimitReader(r, int64(s.failAfter)),
			errReader{errors.New("connection reset by peer")})
	}
	return io.NopCloser(r), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func (s *fakeServer) Report(ctx context.Context, id string, r poll.Report) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]bool{}
	}
	if !s.ids[r.ID] {
		s.ids[r.ID] = true
		s.reports = append(s.reports, r)
	}
	return nil
}

func (s *fakeServer) states() []poll.ReportState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []poll.ReportState
	for _, r := range s.reports {
		out = append(out, r.State)
	}
	return out
}

// simRebooter marks that a reboot was asked for; the test performs it.
type simRebooter struct{ asked int }

func (r *simRebooter) Reboot(context.Context) error { r.asked++; return nil }

// agentDevice is a simulated device with an agent.
type agentDevice struct {
	*device
	srv    *fakeServer
	kr     *bundle.Keyring
	reboot *simRebooter
	health string
}

func newAgentDevice(t *testing.T, size int) (*agentDevice, *bundle.Signer) {
	d := newDeviceSized(t, size)
	s, kr := newKey(t)
	return &agentDevice{device: d, srv: &fakeServer{}, kr: kr, reboot: &simRebooter{},
		health: filepath.Join(d.dir, "health")}, s
}

func (d *agentDevice) offer(t *testing.T, s *bundle.Signer, version string, fill byte) []byte {
	return d.offerSized(t, s, version, fill, 5<<20+77)
}

func (d *agentDevice) offerSized(t *testing.T, s *bundle.Signer, version string, fill byte,
	size int) []byte {
	dir := t.TempDir()
	img := bytes.Repeat([]byte{fill}, size)
	if fill == 0 {
		// Incompressible: the download is as large as the image.
		rnd := rand.New(rand.NewPCG(1, 2))
		for i := range img {
			img[i] = byte(rnd.Uint32())
		}
	}
	p := filepath.Join(dir, "rootfs.img")
	require.NoError(t, os.WriteFile(p, img, 0o644))
	var buf bytes.Buffer
	info, err := bundle.Create(context.Background(), &buf, bundle.Spec{Compatible: "acme-board",
		Version: version, Images: []bundle.ImageSource{{Class: "rootfs", Path: p}}},
		bundle.CreateOptions{Signers: []*bundle.Signer{s}, TempDir: dir})
	require.NoError(t, err)
	d.srv.mu.Lock()
	d.srv.raw = buf.Bytes()
	d.srv.update = &poll.Update{DeploymentID: "dep-" + version, Version: version,
		BundleURL: "/bundles/" + version, Digest: info.Digest, Size: int64(buf.Len())}
	d.srv.mu.Unlock()
	return img
}

// agent starts a new agent process on the device.
func (d *agentDevice) agent(t *testing.T) *rota.Agent {
	d.open()
	a, err := rota.NewAgent(rota.AgentOptions{
		System:        d.sys,
		Server:        d.srv,
		Keyring:       d.kr,
		Rebooter:      d.reboot,
		HealthDir:     d.health,
		HealthTimeout: 5 * time.Second,
		RetryWait:     time.Millisecond,
		SyncInterval:  1 << 20,
	})
	require.NoError(t, err)
	return a
}

// runUntilReboot steps a fresh agent until it asks for a reboot or goes
// idle with nothing to do.
func (d *agentDevice) runUntilReboot(t *testing.T) error {
	a := d.agent(t)
	for range 50 {
		_, err := a.Step(context.Background())
		if errors.Is(err, rota.ErrRebooting) {
			return err
		}
		j, jerr := a.Journal()
		require.NoError(t, jerr)
		if j.State == rota.StateIdle && j.Last != nil {
			return err
		}
	}
	t.Fatal("agent did not settle")
	return nil
}

func TestAgent_UpdateCommitted(t *testing.T) {
	d, s := newAgentDevice(t, 8<<20)
	img := d.offer(t, s, "2.0.0", 0x5a)

	require.ErrorIs(t, d.runUntilReboot(t), rota.ErrRebooting)
	assert.Equal(t, img, d.read("rootfs-b.img")[:len(img)])
	require.Equal(t, "B", d.device.reboot())

	require.NoError(t, d.runUntilReboot(t))
	j, err := d.agent(t).Journal()
	require.NoError(t, err)
	require.Equal(t, rota.StateIdle, j.State)
	assert.Equal(t, "success", j.Last.State)
	assert.Equal(t, []poll.ReportState{poll.ReportDownloading, poll.ReportInstalling,
		poll.ReportRebooting, poll.ReportVerifying, poll.ReportSuccess}, d.srv.states())
	require.Equal(t, "B", d.device.reboot(), "the committed slot keeps booting")
}

func TestAgent_FailedHealthCheckRollsBack(t *testing.T) {
	d, s := newAgentDevice(t, 8<<20)
	d.offer(t, s, "2.0.0", 0x5a)
	require.NoError(t, os.MkdirAll(d.health, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(d.health, "10-app"),
		[]byte("#!/bin/sh\necho app did not start >&2\nexit 3\n"), 0o755))
	bootedBefore := d.read("rootfs-a.img")

	require.ErrorIs(t, d.runUntilReboot(t), rota.ErrRebooting)
	require.Equal(t, "B", d.device.reboot())
	require.ErrorIs(t, d.runUntilReboot(t), rota.ErrRebooting, "rollback reboot")
	require.Equal(t, "A", d.device.reboot())
	require.NoError(t, d.runUntilReboot(t))

	j, err := d.agent(t).Journal()
	require.NoError(t, err)
	assert.Equal(t, "rolled-back", j.Last.State)
	assert.Contains(t, j.Last.Message, "app did not start")
	states := d.srv.states()
	assert.Equal(t, poll.ReportRolledBack, states[len(states)-1])
	assert.NotContains(t, states, poll.ReportSuccess)
	assert.Equal(t, bootedBefore, d.read("rootfs-a.img"))
	st, err := d.sys.Bootloader().State(context.Background(), "B")
	require.NoError(t, err)
	assert.True(t, st.Bad)
	require.Equal(t, "A", d.device.reboot())
}

func TestAgent_NewSlotThatDoesNotBootRollsBack(t *testing.T) {
	d, s := newAgentDevice(t, 8<<20)
	d.offer(t, s, "2.0.0", 0x5a)
	require.ErrorIs(t, d.runUntilReboot(t), rota.ErrRebooting)
	require.Equal(t, "B", d.device.reboot())
	// The new kernel hangs: the watchdog resets the board before the
	// agent ever runs, and the boot loader falls back.
	require.Equal(t, "A", d.device.reboot())
	require.NoError(t, d.runUntilReboot(t))
	j, err := d.agent(t).Journal()
	require.NoError(t, err)
	assert.Equal(t, "rolled-back", j.Last.State)
	assert.Contains(t, j.Last.Message, "did not boot")
}

func TestAgent_NewSlotThatDoesNotBootRollsBackWithGRUB(t *testing.T) {
	d, s := newAgentDevice(t, 8<<20)
	useGRUB(t, d)
	d.offer(t, s, "2.0.0", 0x5a)
	require.ErrorIs(t, d.runUntilReboot(t), rota.ErrRebooting)
	require.Equal(t, "B", d.grubReboot(t))
	// The new kernel panics before the agent runs. The script falls back
	// to A; with both tries spent, GRUB's choice for the next boot is B
	// again, which must not send the device back into the broken slot.
	require.Equal(t, "A", d.grubReboot(t))
	require.NoError(t, d.runUntilReboot(t), "no reboot into the slot that did not boot")
	j, err := d.agent(t).Journal()
	require.NoError(t, err)
	assert.Equal(t, "rolled-back", j.Last.State)
	assert.Contains(t, j.Last.Message, "did not boot")
	require.Equal(t, "A", d.grubReboot(t))
}

// useGRUB switches the device to the GRUB backend, with its grubenv as
// docs/operations.md provisions it, booted from slot A.
func useGRUB(t *testing.T, d *agentDevice) {
	env := slot.NewGrubEnv()
	for _, kv := range [][2]string{{"ORDER", "A B"}, {"A_OK", "1"}, {"A_TRY", "0"},
		{"B_OK", "0"}, {"B_TRY", "0"}} {
		require.NoError(t, env.Set(kv[0], kv[1]))
	}
	require.NoError(t, slot.WriteGrubEnv(filepath.Join(d.dir, "grubenv"), env))
	p := filepath.Join(d.dir, "system.toml")
	cfg := d.read("system.toml")
	cfg = bytes.Replace(cfg, []byte(`backend = "file"`),
		[]byte("backend = \"grub\"\ngrub-env = \"grubenv\""), 1)
	require.NoError(t, os.WriteFile(p, cfg, 0o644))
	require.Equal(t, "A", d.grubReboot(t))
}

// grubReboot boots the device as GRUB's script would and returns the
// bootname booted.
func (d *agentDevice) grubReboot(t *testing.T) string {
	g, err := slot.NewGRUB(filepath.Join(d.dir, "grubenv"), []string{"A", "B"})
	require.NoError(t, err)
	name, err := g.SimulateBoot(context.Background())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(d.dir, "cmdline"),
		[]byte("rota.slot="+name+"\n"), 0o644))
	d.open()
	return name
}

func TestAgent_HostileAnswersAreRefused(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(d *agentDevice, s, stranger *bundle.Signer, t *testing.T)
		want   string
	}{
		{"a bundle signed by an unknown key", func(d *agentDevice, _, stranger *bundle.Signer,
			t *testing.T) {
			d.offer(t, stranger, "2.0.0", 1)
		}, "no signature from a trusted key"},
		{"a bundle other than the announced one", func(d *agentDevice, s, _ *bundle.Signer,
			t *testing.T) {
			d.offer(t, s, "2.0.0", 1)
			d.srv.update.Digest = "sha256:" + string(bytes.Repeat([]byte("0"), 64))
		}, "another bundle than announced"},
		{"a corrupt download", func(d *agentDevice, s, _ *bundle.Signer, t *testing.T) {
			d.offer(t, s, "2.0.0", 1)
			d.srv.raw = bytes.Clone(d.srv.raw)
			b, err := bundle.OpenReader(bytes.NewReader(d.srv.raw), bundle.Options{})
			require.NoError(t, err)
			// The only layer is last, before its padding and the two
			// end-of-archive blocks: flip a byte in its middle.
			n := b.Layers()[0].Size
			d.srv.raw[int64(len(d.srv.raw))-2*512-(-n&511)-n/2] ^= 0xff
		}, "bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, s := newAgentDevice(t, 8<<20)
			stranger, _ := newKey(t)
			tt.tamper(d, s, stranger, t)
			a, b := d.read("rootfs-a.img"), d.read("rootfs-b.img")
			require.NoError(t, d.runUntilReboot(t))
			j, err := d.agent(t).Journal()
			require.NoError(t, err)
			assert.Equal(t, "failure", j.Last.State)
			assert.Contains(t, j.Last.Message, tt.want)
			assert.Equal(t, a, d.read("rootfs-a.img"), "the booted slot is untouched")
			if tt.name != "a corrupt download" {
				assert.Equal(t, b, d.read("rootfs-b.img"), "refused before any slot is touched")
			}
			assert.Equal(t, 0, d.reboot.asked)
			require.Equal(t, "A", d.device.reboot())
		})
	}
}

func TestAgent_ResumesInterruptedDownload(t *testing.T) {
	d, s := newAgentDevice(t, 16<<20)
	img := d.offerSized(t, s, "2.0.0", 0, 10<<20+77)
	d.srv.failAfter = 6 << 20 // every connection breaks after 6 MiB

	a := d.agent(t)
	var err error
	for range 20 {
		_, err = a.Step(context.Background())
		if errors.Is(err, rota.ErrRebooting) {
			break
		}
	}
	j, _ := a.Journal()
	require.ErrorIs(t, err, rota.ErrRebooting, "each attempt resumes further on: offsets %v, "+
		"journal %+v", d.srv.offsets, j)
	assert.Equal(t, img, d.read("rootfs-b.img")[:len(img)])
	var resumed int
	for _, off := range d.srv.offsets {
		if off > 0 {
			resumed++
		}
	}
	assert.GreaterOrEqual(t, resumed, 1, "downloads resumed from a checkpoint: %v", d.srv.offsets)
}

var _ slot.Bootloader = (*slot.FileBootloader)(nil)
