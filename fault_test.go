package rota_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
	"github.com/stretchr/testify/require"
)

// Exit codes of the fault child (internal/faultchild).
const (
	childDone   = 0
	childReboot = 3
)

type noopReboot struct{}

func (noopReboot) Reboot(context.Context) error { return nil }

// buildFaultChild builds internal/faultchild, the agent the fault test
// kills, without the race detector: it starts hundreds of times, and the
// agent's code is race-tested in process by the other tests.
func buildFaultChild(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "faultchild")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/rotaupdate/rota/internal/faultchild")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "build faultchild: %s", out)
	return bin
}

// TestAgent_SurvivesSIGKILL kills the agent with SIGKILL at every state
// transition and at random moments of the download and install, often
// with a power cut (a reboot) on top, and checks after each deployment
// that the device ends on the new version committed or on the old one
// with the failure reported, that the booted slot was never written, and
// that success was reported at most once.
func TestAgent_SurvivesSIGKILL(t *testing.T) {
	runs := 200
	if testing.Short() {
		runs = 20
	}
	srv := polltest.NewServer(t)
	srv.SetEnrollmentToken("enroll")
	srv.SetPollInterval(5)

	work := t.TempDir()
	s, _ := newKey(t)
	pub, err := os.ReadFile(writeKeyring(t, work, s))
	require.NoError(t, err)
	keyring := filepath.Join(work, "keyring.pub")
	require.NoError(t, os.WriteFile(keyring, pub, 0o644))

	// The release: 3 MiB of noise in 256 KiB frames, so installs have
	// many resume points.
	img := make([]byte, 3<<20)
	rnd := rand.New(rand.NewPCG(7, 7))
	for i := range img {
		img[i] = byte(rnd.Uint32())
	}
	imgPath := filepath.Join(work, "v2.img")
	require.NoError(t, os.WriteFile(imgPath, img, 0o644))
	var buf bytes.Buffer
	info, err := bundle.Create(context.Background(), &buf, bundle.Spec{Compatible: "acme-board",
		Version: "2.0.0", Images: []bundle.ImageSource{{Class: "rootfs", Path: imgPath}}},
		bundle.CreateOptions{Signers: []*bundle.Signer{s}, TempDir: work, ChunkSize: 256 << 10})
	require.NoError(t, err)
	srv.AddFile("/bundles/v2.rota", buf.Bytes(), false)

	child := buildFaultChild(t)
	transitions := []string{"state=install", "state=reboot", "state=verify", "state=idle",
		"install.enter", "rebooting", "marked slot", "install started", "install committed"}
	rnd = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))

	var kills, powerCuts, successes int
	var lastOutcome *rota.Outcome
	for run := range runs {
		dep := fmt.Sprintf("dep-%03d", run)
		srv.SetUpdate(&poll.Update{DeploymentID: dep, Version: "2.0.0",
			BundleURL: "/bundles/v2.rota", Digest: info.Digest, Size: int64(buf.Len())})
		d := newDeviceSized(t, 4<<20)
		aBefore := sha256.Sum256(d.read("rootfs-a.img"))

		// Odd runs kill at a transition, even runs after a random delay.
		killAt := transitions[run%len(transitions)]
		delay := time.Duration(rnd.Int64N(int64(60 * time.Millisecond)))
		done := false
		for start := 0; start < 40 && !done; start++ {
			cmd := exec.Command(child)
			cmd.Env = append(os.Environ(), "ROTA_FAULT_DIR="+d.dir,
				"ROTA_FAULT_SERVER="+srv.URL, "ROTA_FAULT_KEYRING="+keyring)
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			require.NoError(t, cmd.Start())
			killed := make(chan bool, 1)
			armed := start < 3 // kill the first starts; let later ones finish
			go watch(cmd, out, armed && run%2 == 1, killAt, killed)
			var timer *time.Timer
			if armed && run%2 == 0 {
				timer = time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
			}
			err = cmd.Wait()
			if timer != nil {
				timer.Stop()
			}
			wasKilled := <-killed
			var ee *exec.ExitError
			switch {
			case err == nil:
				done = true
			case errors.As(err, &ee) && ee.ExitCode() == childReboot:
				d.reboot()
			case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled():
				kills++
				_ = wasKilled
				if rnd.IntN(3) == 0 {
					// A power cut: the board reboots as well.
					powerCuts++
					d.reboot()
				}
			default:
				t.Fatalf("run %d: child failed: %v\n%s", run, err, stderr.String())
			}
			require.Equal(t, aBefore, sha256.Sum256(d.read("rootfs-a.img")),
				"run %d: the booted slot was written", run)
		}
		require.True(t, done, "run %d did not finish", run)

		d.open()
		a, err := rota.NewAgent(rota.AgentOptions{System: d.sys, Server: &fakeServer{},
			Keyring: bundle.NewKeyring(mustPublic(t, s)), Rebooter: noopReboot{}})
		require.NoError(t, err)
		j, err := a.Journal()
		require.NoError(t, err)
		booted, err := d.sys.Booted(context.Background())
		require.NoError(t, err)
		reports := srv.Reports(dep)
		var success, failure int
		for _, r := range reports {
			switch r.State {
			case poll.ReportSuccess:
				success++
			case poll.ReportFailure, poll.ReportRolledBack:
				failure++
			}
		}
		require.LessOrEqual(t, success, 1, "run %d: success reported twice", run)
		lastOutcome = j.Last
		switch j.Last.State {
		case "success":
			successes++
			require.Equal(t, "rootfs.1", booted.Name(), "run %d", run)
			require.Equal(t, img, d.read("rootfs-b.img")[:len(img)], "run %d", run)
			require.Equal(t, 1, success, "run %d: success not reported", run)
			require.Zero(t, failure, "run %d", run)
		default:
			t.Logf("run %d ended on the old version: %s: %s", run, j.Last.State, j.Last.Message)
			require.Equal(t, "rootfs.0", booted.Name(), "run %d: %+v", run, j.Last)
			require.Zero(t, success, "run %d", run)
			require.NotZero(t, failure, "run %d: failure not reported", run)
		}
	}
	t.Logf("%d runs, %d kills, %d power cuts, %d successes", runs, kills, powerCuts, successes)
	t.Logf("last outcome: %+v", lastOutcome)
	require.GreaterOrEqual(t, kills, runs*3/4, "the test must actually kill the agent")
}

// watch copies the child's log and, when armed, kills the child as soon
// as a line contains killAt. It reports whether it killed.
func watch(cmd *exec.Cmd, out io.Reader, armed bool, killAt string, killed chan<- bool) {
	sc := bufio.NewScanner(out)
	k := false
	for sc.Scan() {
		if armed && !k && strings.Contains(sc.Text(), killAt) {
			cmd.Process.Signal(syscall.SIGKILL)
			k = true
		}
	}
	killed <- k
}

func writeKeyring(t *testing.T, dir string, s *bundle.Signer) string {
	t.Helper()
	pem, err := publicPEM(s)
	require.NoError(t, err)
	p := filepath.Join(dir, "signer.pub")
	require.NoError(t, os.WriteFile(p, pem, 0o644))
	return p
}

func mustPublic(t *testing.T, s *bundle.Signer) *bundle.PublicKey {
	k, err := bundle.NewPublicKey(s.Public())
	require.NoError(t, err)
	return k
}
