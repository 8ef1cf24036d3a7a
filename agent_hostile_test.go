package rota_test

import (
	"testing"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hostileSlot is the slot size of the devices in the hostile-server
// tests; their releases are a quarter of it.
const hostileSlot = 2 << 20

// TestAgent_RefusesHostileCheckAnswers sends check answers that the
// client must refuse, and checks that the agent stays idle, touches
// nothing, and installs the update offered by the next sane answer.
func TestAgent_RefusesHostileCheckAnswers(t *testing.T) {
	const dep = "dep-check"
	s, kr := newKey(t)
	rel := buildRelease(t, s, bundle.Spec{Compatible: "acme-board", Version: "2.0.0"},
		hostileSlot/4, 7)

	tests := []struct {
		name string
		// spoil makes the next check answer hostile.
		spoil func(srv *polltest.Server)
		want  error
	}{
		{
			name: "an answer larger than the client reads",
			spoil: func(srv *polltest.Server) {
				srv.Fault(checkPath, polltest.Fault{Oversize: 2 * poll.DefaultMaxResponseSize})
			},
			want: poll.ErrTooLarge,
		},
		{
			name: "an update whose digest is not a digest",
			spoil: func(srv *polltest.Server) {
				srv.SetUpdate(&poll.Update{DeploymentID: dep, Version: "2.0.0",
					BundleURL: "/bundles/v2.rota", Digest: "sha256:not-hex", Size: 1})
			},
			want: poll.ErrInvalid,
		},
		{
			name: "an update without a bundle URL",
			spoil: func(srv *polltest.Server) {
				srv.SetUpdate(&poll.Update{DeploymentID: dep, Version: "2.0.0",
					Digest: rel.digest, Size: int64(len(rel.raw))})
			},
			want: poll.ErrInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			d := newNetDevice(t, srv, kr, hostileSlot)
			a, b := d.slotSums()
			tt.spoil(srv)

			_, err := d.agent(t).Step(t.Context())
			require.ErrorIs(t, err, tt.want)
			j := d.journal(t)
			assert.Equal(t, rota.StateIdle, j.State)
			assert.Empty(t, j.Deployment)
			assert.Empty(t, srv.Reports(dep))
			assert.Empty(t, d.bundleRanges(), "nothing was downloaded")
			a2, b2 := d.slotSums()
			assert.True(t, a == a2 && b == b2, "the slots are untouched")

			offer(srv, dep, "2.0.0", "/bundles/v2.rota", rel)
			require.ErrorIs(t, d.settle(t, dep), rota.ErrRebooting,
				"the next sane answer is installed")
			assert.Equal(t, rel.img, d.read("rootfs-b.img")[:len(rel.img)])
		})
	}
}

// TestAgent_RefusesHostileBundles offers, through the real HTTP client,
// bundles that must never be installed, and checks that each is refused
// at the first attempt, reported to the server as a failure, with both
// slots byte-identical, the boot loader unchanged and no reboot.
func TestAgent_RefusesHostileBundles(t *testing.T) {
	const dep = "dep-hostile"
	s, kr := newKey(t)
	stranger, _ := newKey(t)
	spec := func(compatible, version string, rollback uint64) bundle.Spec {
		return bundle.Spec{Compatible: compatible, Version: version, RollbackIndex: rollback}
	}
	release := func(t *testing.T, signer *bundle.Signer, sp bundle.Spec) netRelease {
		return buildRelease(t, signer, sp, hostileSlot/4, 9)
	}

	tests := []struct {
		name string
		// prepare brings the device to the state the case needs.
		prepare func(t *testing.T, d *netDevice)
		// serve offers the hostile bundle as deployment dep.
		serve func(t *testing.T, srv *polltest.Server)
		want  string
	}{
		{
			name: "a bundle other than the announced one",
			serve: func(t *testing.T, srv *polltest.Server) {
				served := release(t, s, spec("acme-board", "2.0.0", 0))
				announced := buildRelease(t, s, spec("acme-board", "2.0.0", 0), 4096, 1)
				offer(srv, dep, "2.0.0", "/bundles/v2.rota", served)
				srv.SetUpdate(&poll.Update{DeploymentID: dep, Version: "2.0.0",
					BundleURL: "/bundles/v2.rota", Digest: announced.digest,
					Size: int64(len(served.raw))})
			},
			want: "another bundle than announced",
		},
		{
			name: "a bundle signed by an unknown key",
			serve: func(t *testing.T, srv *polltest.Server) {
				offer(srv, dep, "2.0.0", "/bundles/v2.rota",
					release(t, stranger, spec("acme-board", "2.0.0", 0)))
			},
			want: "no signature from a trusted key",
		},
		{
			name: "a bundle for another compatible string",
			serve: func(t *testing.T, srv *polltest.Server) {
				offer(srv, dep, "2.0.0", "/bundles/v2.rota",
					release(t, s, spec("other-board", "2.0.0", 0)))
			},
			want: `bundle is for "other-board"`,
		},
		{
			name: "a bundle with a lower rollback index than the committed one",
			prepare: func(t *testing.T, d *netDevice) {
				offer(d.srv, "dep-first", "2.0.0", "/bundles/v2.rota",
					release(t, s, spec("acme-board", "2.0.0", 5)))
				require.ErrorIs(t, d.settle(t, "dep-first"), rota.ErrRebooting)
				require.Equal(t, "B", d.device.reboot())
				require.NoError(t, d.settle(t, "dep-first"))
				require.Equal(t, "success", d.journal(t).Last.State)
				idx, err := d.sys.RollbackIndex()
				require.NoError(t, err)
				require.Equal(t, uint64(5), idx)
			},
			serve: func(t *testing.T, srv *polltest.Server) {
				offer(srv, dep, "1.9.0", "/bundles/v1.9.rota",
					release(t, s, spec("acme-board", "1.9.0", 4)))
			},
			want: "rollback index lower than installed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			d := newNetDevice(t, srv, kr, hostileSlot)
			if tt.prepare != nil {
				tt.prepare(t, d)
			}
			booted := d.device.reboot()
			a, b := d.slotSums()
			primary, err := d.sys.Bootloader().Primary(t.Context())
			require.NoError(t, err)
			asked := d.rebooter.asked
			tt.serve(t, srv)
			downloads := len(d.bundleRanges())

			require.NoError(t, d.settle(t, dep))
			j := d.journal(t)
			assert.Equal(t, rota.StateIdle, j.State)
			assert.Equal(t, "failure", j.Last.State)
			assert.Contains(t, j.Last.Message, tt.want)

			reports := srv.Reports(dep)
			require.NotEmpty(t, reports)
			last := reports[len(reports)-1]
			assert.Equal(t, poll.ReportFailure, last.State)
			assert.Contains(t, last.Message, tt.want)
			states := reportStates(srv, dep)
			assert.Equal(t, 1, count(states, poll.ReportFailure), "reports %v", states)
			assert.Zero(t, count(states, poll.ReportRebooting), "reports %v", states)
			assert.Equal(t, 1, len(d.bundleRanges())-downloads,
				"refused at the first attempt, not retried")

			a2, b2 := d.slotSums()
			assert.True(t, a == a2, "slot A is byte-identical")
			assert.True(t, b == b2, "slot B is byte-identical")
			after, err := d.sys.Bootloader().Primary(t.Context())
			require.NoError(t, err)
			assert.Equal(t, primary, after, "the boot loader is unchanged")
			assert.Equal(t, asked, d.rebooter.asked, "no reboot was asked for")
			require.Equal(t, booted, d.device.reboot())
		})
	}
}
