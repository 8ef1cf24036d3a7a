package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
	"github.com/rotaupdate/rota/slot"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// commandTimeout bounds each in-process run of rota-client in the tests.
const commandTimeout = 20 * time.Second

// newSigner returns a bundle signer and the path of a keyring file that
// trusts it.
func newSigner(t *testing.T) (*bundle.Signer, string) {
	t.Helper()
	priv, pub, err := bundle.GenerateKey(bundle.Ed25519, nil)
	require.NoError(t, err)
	s, err := bundle.LoadSigner(priv, nil)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "release.pub")
	require.NoError(t, os.WriteFile(p, pub, 0o644))
	return s, p
}

// clientDevice is a simulated device provisioned as rota-client simulate
// does, with a client.toml next to its system.toml.
type clientDevice struct {
	dir    string
	config string
}

// newClientDevice provisions a device for server whose client.toml
// trusts keyring and reboots by touching the file "rebooted"; extra holds
// more top-level keys.
func newClientDevice(t *testing.T, server, keyring, extra string) *clientDevice {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, provision(dir, "acme-board"))
	conf := fmt.Sprintf(`server = %q
system-config = "system.toml"
keyring = %q
enrollment-token = "enroll"
reboot-command = ["touch", %q]
log-level = "debug"
%s
[identity]
serial = "SN-1"
`, server, keyring, filepath.Join(dir, "rebooted"), extra)
	p := filepath.Join(dir, "client.toml")
	require.NoError(t, os.WriteFile(p, []byte(conf), 0o644))
	return &clientDevice{dir: dir, config: p}
}

// run runs rota-client with args and the device's configuration.
func (d *clientDevice) run(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return d.runContext(ctx, t, args...)
}

// runContext is run with a context of the caller's.
func (d *clientDevice) runContext(ctx context.Context, t *testing.T,
	args ...string) (stdout string, err error) {
	t.Helper()
	var out, log bytes.Buffer
	err = run(ctx, append(args, "--config", d.config), &out, &log)
	t.Logf("rota-client %v:\n%s", args, log.String())
	return out.String(), err
}

// journal returns the device's agent journal.
func (d *clientDevice) journal(t *testing.T) *rota.Journal {
	t.Helper()
	j, err := loadAgentJournal(filepath.Join(d.dir, "data"))
	require.NoError(t, err)
	return j
}

// rebooted reports whether the reboot command ran, and forgets it.
func (d *clientDevice) rebooted() bool {
	err := os.Remove(filepath.Join(d.dir, "rebooted"))
	return err == nil
}

// boot performs the reboot the agent asked for: the simulated boot loader
// picks a slot. It returns the bootname.
func (d *clientDevice) boot(t *testing.T) string {
	t.Helper()
	cfg, err := slot.LoadConfig(filepath.Join(d.dir, "system.toml"))
	require.NoError(t, err)
	sys, err := slot.Open(cfg)
	require.NoError(t, err)
	name, err := sys.Bootloader().(*slot.FileBootloader).SimulateBoot(context.Background())
	require.NoError(t, err)
	return name
}

// primary returns the bootname the boot loader tries next.
func (d *clientDevice) primary(t *testing.T) string {
	t.Helper()
	cfg, err := slot.LoadConfig(filepath.Join(d.dir, "system.toml"))
	require.NoError(t, err)
	sys, err := slot.Open(cfg)
	require.NoError(t, err)
	p, err := sys.Bootloader().Primary(context.Background())
	require.NoError(t, err)
	return p
}

// keyID returns the ID the server knows the device by.
func (d *clientDevice) keyID(t *testing.T) string {
	t.Helper()
	key, err := poll.LoadOrCreateKey(filepath.Join(d.dir, "data", "device.key"))
	require.NoError(t, err)
	return poll.KeyID(key.Public().(ed25519.PublicKey))
}

// publish offers a release for compatible on srv as deployment dep and
// returns its image.
func publish(t *testing.T, srv *polltest.Server, s *bundle.Signer, compatible, dep string) []byte {
	t.Helper()
	dir := t.TempDir()
	img := make([]byte, 600<<10)
	rnd := rand.New(rand.NewPCG(5, 5))
	for i := range img {
		img[i] = byte(rnd.Uint32())
	}
	p := filepath.Join(dir, "rootfs.img")
	require.NoError(t, os.WriteFile(p, img, 0o644))
	var buf bytes.Buffer
	info, err := bundle.Create(context.Background(), &buf, bundle.Spec{Compatible: compatible,
		Version: "2.0.0", Images: []bundle.ImageSource{{Class: "rootfs", Path: p}}},
		bundle.CreateOptions{Signers: []*bundle.Signer{s}, TempDir: dir, ChunkSize: 128 << 10})
	require.NoError(t, err)
	srv.AddFile("/bundles/2.0.0.rota", buf.Bytes(), true)
	srv.SetUpdate(&poll.Update{DeploymentID: dep, Version: "2.0.0",
		BundleURL: "/bundles/2.0.0.rota", Digest: info.Digest, Size: int64(buf.Len())})
	return img
}

func reportStates(srv *polltest.Server, dep string) []poll.ReportState {
	var out []poll.ReportState
	for _, r := range srv.Reports(dep) {
		out = append(out, r.State)
	}
	return out
}

func TestRun_Commands(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr error
	}{
		{name: "help lists the commands", args: []string{"help"}, want: "run|status|approve"},
		{name: "an unknown command is a usage error", args: []string{"frobnicate"},
			wantErr: errUsage},
		{name: "an unknown flag is a usage error", args: []string{"status", "--jsn"},
			wantErr: errUsage},
		{name: "a stray argument is a usage error", args: []string{"approve", "now"},
			wantErr: errUsage},
		{name: "simulate without a server is a usage error", args: []string{"simulate"},
			wantErr: errUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, log bytes.Buffer
			err := run(t.Context(), tt.args, &out, &log)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Contains(t, out.String(), tt.want)
		})
	}
}

func TestRun_Status(t *testing.T) {
	_, keyring := newSigner(t)
	d := newClientDevice(t, "https://rota.invalid", keyring, "")

	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, out string)
	}{
		{
			name: "text shows the agent state and the slots, booted one marked",
			args: []string{"status"},
			check: func(t *testing.T, out string) {
				assert.Contains(t, out, "agent state: idle\n")
				assert.Regexp(t, `(?m)^\* rootfs\.0 +rootfs +good +-$`, out)
				assert.Regexp(t, `(?m)^  rootfs\.1 +rootfs +good +-$`, out)
				assert.NotContains(t, out, "deployment:")
			},
		},
		{
			name: "json has the journal and the slot status",
			args: []string{"status", "--json"},
			check: func(t *testing.T, out string) {
				var st struct {
					Agent rota.Journal `json:"agent"`
					Slots slot.Status  `json:"slots"`
				}
				require.NoError(t, json.Unmarshal([]byte(out), &st), out)
				assert.Equal(t, rota.StateIdle, st.Agent.State)
				assert.Equal(t, "acme-board", st.Slots.Compatible)
				assert.Equal(t, "file", st.Slots.Backend)
				assert.Equal(t, "rootfs.0", st.Slots.Booted)
				assert.Equal(t, "A", st.Slots.Primary)
				require.Len(t, st.Slots.Slots, 2)
				assert.True(t, st.Slots.Slots[0].Booted)
				assert.Equal(t, filepath.Join(d.dir, "rootfs-b.img"), st.Slots.Slots[1].Device)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := d.run(t, tt.args...)
			require.NoError(t, err)
			tt.check(t, out)
		})
	}
}

// TestRun_Once runs the agent once to install an update and ask for the
// reboot, performs the reboot, and runs it once more to commit.
func TestRun_Once(t *testing.T) {
	const dep = "dep-once"
	srv := polltest.NewServer(t)
	srv.SetEnrollmentToken("enroll")
	s, keyring := newSigner(t)
	img := publish(t, srv, s, "acme-board", dep)
	d := newClientDevice(t, srv.URL, keyring, "")
	factory, err := os.ReadFile(filepath.Join(d.dir, "rootfs-a.img"))
	require.NoError(t, err)

	_, err = d.run(t, "--once")
	require.NoError(t, err)
	assert.True(t, d.rebooted(), "the reboot command ran")
	j := d.journal(t)
	assert.Equal(t, rota.StateReboot, j.State)
	assert.Equal(t, "rootfs.1", j.Target)
	b, err := os.ReadFile(filepath.Join(d.dir, "rootfs-b.img"))
	require.NoError(t, err)
	assert.Equal(t, img, b[:len(img)])
	assert.Equal(t, []poll.ReportState{poll.ReportDownloading, poll.ReportInstalling,
		poll.ReportRebooting}, reportStates(srv, dep))
	assert.Equal(t, map[string]string{"serial": "SN-1"}, srv.Identity(d.keyID(t)))
	assert.NotEmpty(t, srv.Inventory(d.keyID(t)), "the inventory was sent")

	out, err := d.run(t, "status")
	require.NoError(t, err)
	assert.Contains(t, out, "agent state: reboot\n")
	assert.Contains(t, out, "deployment:  dep-once (version 2.0.0, target rootfs.1)\n")

	require.Equal(t, "B", d.boot(t))
	_, err = d.run(t, "--once")
	require.NoError(t, err)
	assert.False(t, d.rebooted())
	j = d.journal(t)
	assert.Equal(t, rota.StateIdle, j.State)
	require.NotNil(t, j.Last)
	assert.Equal(t, "success", j.Last.State)
	assert.Contains(t, reportStates(srv, dep), poll.ReportSuccess)
	a, err := os.ReadFile(filepath.Join(d.dir, "rootfs-a.img"))
	require.NoError(t, err)
	assert.Equal(t, factory, a, "the old slot was never written")
	assert.Equal(t, "B", d.boot(t), "the committed slot keeps booting")

	out, err = d.run(t, "status")
	require.NoError(t, err)
	assert.Contains(t, out, "last:        dep-once 2.0.0: success")
	assert.Regexp(t, `(?m)^\* rootfs\.1 +rootfs +good +2\.0\.0$`, out)
}

// TestRun_Approve installs an update held for approval, checks that
// rota-client --once neither activates it nor reboots until
// rota-client approve, and that it does both after.
func TestRun_Approve(t *testing.T) {
	const dep = "dep-approve"
	srv := polltest.NewServer(t)
	srv.SetEnrollmentToken("enroll")
	s, keyring := newSigner(t)
	publish(t, srv, s, "acme-board", dep)
	d := newClientDevice(t, srv.URL, keyring, "require-approval = true\n")
	approval := filepath.Join(d.dir, "data", rota.ApprovalFile)

	_, err := d.run(t, "approve")
	require.ErrorContains(t, err, "no update waits for approval (agent state idle)")
	assert.NoFileExists(t, approval, "nothing is approved ahead of time")

	_, err = d.run(t, "--once")
	require.NoError(t, err)
	assert.Equal(t, rota.StateApproval, d.journal(t).State)
	assert.False(t, d.rebooted())
	assert.Equal(t, "A", d.primary(t), "the held update is not active")

	_, err = d.run(t, "--once")
	require.NoError(t, err)
	assert.Equal(t, rota.StateApproval, d.journal(t).State, "still waiting")
	assert.False(t, d.rebooted())

	out, err := d.run(t, "approve")
	require.NoError(t, err)
	assert.Contains(t, out, "approved")
	assert.FileExists(t, approval)

	_, err = d.run(t, "--once")
	require.NoError(t, err)
	assert.True(t, d.rebooted(), "the reboot command ran")
	assert.Equal(t, rota.StateReboot, d.journal(t).State)
	assert.Equal(t, "B", d.primary(t))
	assert.NoFileExists(t, approval, "an approval counts once")
	assert.Equal(t, "B", d.boot(t))
}

// TestRun_StopsWhenCancelled stops the daemon, as systemctl stop does,
// in the states where it waits, and expects a clean exit each time.
func TestRun_StopsWhenCancelled(t *testing.T) {
	_, keyring := newSigner(t)
	tests := []struct {
		name string
		// setup prepares the server; waiting reports whether the daemon
		// has reached the state under test.
		setup   func(srv *polltest.Server)
		waiting func(srv *polltest.Server) bool
	}{
		{
			name:  "while the device waits for admission",
			setup: func(srv *polltest.Server) {},
			waiting: func(srv *polltest.Server) bool {
				return srv.Hits(poll.APIPath+"/auth") > 0
			},
		},
		{
			name:  "while the agent waits between polls",
			setup: func(srv *polltest.Server) { srv.SetEnrollmentToken("enroll") },
			waiting: func(srv *polltest.Server) bool {
				return len(srv.Checks()) > 0
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			tt.setup(srv)
			d := newClientDevice(t, srv.URL, keyring, "")
			ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := d.runContext(ctx, t)
				done <- err
			}()
			require.Eventually(t, func() bool { return tt.waiting(srv) }, commandTimeout/2,
				10*time.Millisecond)
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(commandTimeout / 2):
				t.Fatal("rota-client did not stop")
			}
		})
	}
}
