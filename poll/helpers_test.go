package poll_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
)

// fastConfig returns a client configuration for srv with waits short
// enough for tests and the stall watchdog off.
func fastConfig(t *testing.T, srv *polltest.Server) poll.Config {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return poll.Config{
		ServerURL:      srv.URL,
		Key:            key,
		Identity:       map[string]string{"serial": "SN-1", "mac": "02:00:00:00:00:01"},
		HTTPClient:     srv.Client(),
		RetryWaitMin:   time.Millisecond,
		RetryWaitMax:   5 * time.Millisecond,
		RequestTimeout: 5 * time.Second,
		MinThroughput:  -1,
	}
}

// newClient returns a client for cfg and the key ID the server knows it
// by.
func newClient(t *testing.T, cfg poll.Config) (*poll.Client, string) {
	t.Helper()
	c, err := poll.New(cfg)
	require.NoError(t, err)
	return c, poll.KeyID(cfg.Key.Public().(ed25519.PublicKey))
}

// admittedClient returns a client already admitted by srv.
func admittedClient(t *testing.T, srv *polltest.Server,
	edit ...func(*poll.Config)) (*poll.Client, string) {
	t.Helper()
	cfg := fastConfig(t, srv)
	for _, e := range edit {
		e(&cfg)
	}
	c, id := newClient(t, cfg)
	srv.SetAdmission(id, poll.AuthAccepted)
	return c, id
}

// checkRequest is a valid check request.
var checkRequest = poll.CheckRequest{
	Compatible:   "acme-board-v2",
	AgentVersion: "0.1.0",
	Installed:    poll.Installed{Version: "1.0.0", RollbackIndex: 1},
	Slots: []poll.SlotInfo{
		{Name: "rootfs.0", Class: "rootfs", Bootname: "A", Booted: true, Primary: true},
		{Name: "rootfs.1", Class: "rootfs", Bootname: "B"},
	},
	State: "idle",
}

// requireErr checks that err is an *poll.Error wrapping target, and
// returns it.
func requireErr(t *testing.T, err error, target error) *poll.Error {
	t.Helper()
	require.Error(t, err)
	if target != nil {
		require.ErrorIs(t, err, target)
	}
	var e *poll.Error
	require.ErrorAs(t, err, &e)
	return e
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
