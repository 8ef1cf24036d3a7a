package store

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
)

const (
	// crashChildEnv holds the database, a file path or a URL, when this
	// test binary runs as the child that the crash test kills.
	crashChildEnv = "ROTA_STORE_CRASH_CHILD"

	// crashBackendEnv names the child's backend.
	crashBackendEnv = "ROTA_STORE_CRASH_BACKEND"

	// crashRunEnv numbers the child's run, so its IDs are new.
	crashRunEnv = "ROTA_STORE_CRASH_RUN"

	crashDeployment = "crash-deployment"
	crashKills      = 20

	// crashChildLimit ends a child that nobody killed.
	crashChildLimit = 20 * time.Second
)

// runCrashChild writes to the store as fast as it can and prints one line
// per committed change: "device ID", "member ID", "report ID STATE" or
// "audit N". The parent kills it at a random moment.
func runCrashChild(backendName, db string) int {
	ctx, cancel := context.WithTimeout(context.Background(), crashChildLimit)
	defer cancel()
	b, err := backendNamed(backendName)
	if err == nil {
		err = crashChild(ctx, b, db, os.Getenv(crashRunEnv), os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func crashChild(ctx context.Context, b backend, db, run string, ack io.Writer) error {
	s, err := b.open(ctx, db)
	if err != nil {
		return err
	}
	defer s.Close()
	for i := 0; ctx.Err() == nil; i++ {
		id := fmt.Sprintf("run%s-dev%04d", run, i)
		d := Device{ID: id, KeyID: id, PublicKeyPEM: "pem", Status: StatusAccepted,
			Groups: []string{"crash"}, Inventory: map[string]string{"run": run}}
		if _, err := s.CreateDevice(ctx, d); err != nil {
			return err
		}
		fmt.Fprintln(ack, "device", id)
		if err := s.AddDeploymentDevices(ctx, crashDeployment, 0, []string{id}); err != nil {
			return err
		}
		fmt.Fprintln(ack, "member", id)
		for _, st := range []poll.ReportState{poll.ReportDownloading, poll.ReportSuccess} {
			r := poll.Report{ID: "r" + run, State: st, Log: []string{string(st)}}
			if _, err := s.RecordReport(ctx, crashDeployment, id, r); err != nil {
				return err
			}
			fmt.Fprintln(ack, "report", id, st)
		}
		n, err := s.AppendAudit(ctx, AuditEntry{Actor: "crash", Action: "device.add",
			Object: id})
		if err != nil {
			return err
		}
		fmt.Fprintln(ack, "audit", n)
	}
	return nil
}

// TestStore_SurvivesKill kills a writer at random moments and checks
// that every change it acknowledged is there. On PostgreSQL the server
// outlives the killed client, so this checks that a change is
// acknowledged only once committed and that a connection dropped halfway
// through a transaction leaves nothing of it.
func TestStore_SurvivesKill(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testSurvivesKill(t, b) })
	}
}

func testSurvivesKill(t *testing.T, b backend) {
	ctx := context.Background()
	db := b.newDB(t)
	s, err := b.open(ctx, db)
	require.NoError(t, err)
	r := testRelease(t, s)
	_, err = s.CreateDeployment(ctx, Deployment{ID: crashDeployment, ReleaseID: r.ID,
		Target: Target{Group: "crash"}})
	require.NoError(t, err)
	require.NoError(t, s.Close())

	exe, err := os.Executable()
	require.NoError(t, err)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	var acked []string
	for run := range crashKills {
		after := time.Duration(rng.Int64N(int64(80 * time.Millisecond)))
		lines := killChild(t, exe, b, db, run, after)
		acked = append(acked, lines...)
		checkAcked(t, b, db, acked)
	}
}

// killChild starts a child, lets it write for a while after its first
// acknowledgement, kills it with SIGKILL and returns the lines it printed
// in full.
func killChild(t *testing.T, exe string, b backend, db string, run int,
	after time.Duration) []string {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+db, crashBackendEnv+"="+b.name,
		fmt.Sprintf("%s=%d", crashRunEnv, run))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	br := bufio.NewReader(out)
	var lines []string
	first, err := br.ReadString('\n')
	require.NoError(t, err, "child wrote nothing: %s", stderr.String())
	lines = append(lines, strings.TrimSuffix(first, "\n"))

	time.Sleep(after)
	require.NoError(t, cmd.Process.Kill())
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			break // a line cut by the kill was never fully acknowledged
		}
		lines = append(lines, strings.TrimSuffix(line, "\n"))
	}
	err = cmd.Wait()
	require.Error(t, err, "child ended by itself: %s", stderr.String())
	require.Empty(t, stderr.String(), "child failed")
	t.Logf("run %d: killed after %v and %d acknowledgements", run, after, len(lines))
	return lines
}

// checkAcked reopens the database and checks that every acknowledged
// change is there and that the state is consistent.
func checkAcked(t *testing.T, b backend, db string, acked []string) {
	t.Helper()
	ctx := context.Background()
	s, err := b.open(ctx, db)
	require.NoError(t, err)
	defer s.Close()

	if b.name == sqliteBackend.name {
		// PostgreSQL checks its pages and foreign keys itself.
		var integrity string
		require.NoError(t, s.r.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&integrity))
		require.Equal(t, "ok", integrity)
		rows, err := s.r.QueryContext(ctx, `PRAGMA foreign_key_check`)
		require.NoError(t, err)
		assert.False(t, rows.Next(), "foreign keys are consistent")
		rows.Close()
	}
	checkCounts(t, s, crashDeployment)

	for _, line := range acked {
		f := strings.Fields(line)
		require.GreaterOrEqual(t, len(f), 2, "line %q", line)
		switch f[0] {
		case "device":
			_, err := s.Device(ctx, f[1])
			assert.NoError(t, err, line)
		case "member":
			_, err := s.DeviceDeployment(ctx, crashDeployment, f[1])
			assert.NoError(t, err, line)
		case "report":
			dd, err := s.DeviceDeployment(ctx, crashDeployment, f[1])
			require.NoError(t, err, line)
			if f[2] == string(poll.ReportSuccess) {
				assert.Equal(t, TargetState(poll.ReportSuccess), dd.State, line)
			}
			reports, err := s.Reports(ctx, crashDeployment, f[1])
			require.NoError(t, err)
			found := false
			for _, r := range reports {
				found = found || string(r.State) == f[2]
			}
			assert.True(t, found, line)
		case "audit":
			id, err := strconv.ParseInt(f[1], 10, 64)
			require.NoError(t, err, line)
			var n int
			require.NoError(t, s.reader().QueryRowContext(ctx,
				`SELECT COUNT(*) FROM audit_log WHERE id = ?`, id).Scan(&n))
			assert.Equal(t, 1, n, line)
		default:
			t.Fatalf("unknown acknowledgement %q", line)
		}
	}
}
