// The race detector slows the pure-Go SQLite twentyfold, which makes
// importing the fleet take minutes; this file builds without it.

//go:build !race

package portal_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/portal"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// largeFleet is the number of devices of BenchmarkLargeFleet.
const largeFleet = 100_000

// BenchmarkLargeFleet reads the pages of a fleet of 100,000 devices that
// list or count devices, each followed by its next page where it has
// one: each asks the API for one page of devices and for counts, so
// their cost must not grow with the fleet. make bench runs it.
func BenchmarkLargeFleet(b *testing.B) {
	e := newEnv(b, portal.Config{})
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(b, err)
	pemKey, err := poll.PublicKeyPEM(pub)
	require.NoError(b, err)
	versions := []string{"1.0.0", "1.1.0", "2.0.0"}
	ds := make([]store.Device, 0, largeFleet)
	for i := range largeFleet {
		ds = append(ds, store.Device{KeyID: fmt.Sprintf("sha256:%064d", i),
			PublicKeyPEM: pemKey, Status: store.StatusAccepted,
			Identity:         map[string]string{"serial": fmt.Sprintf("sim-%06d", i)},
			InstalledVersion: versions[i%len(versions)]})
	}
	ctx := store.WithAudit(context.Background(), store.AuditEntry{Actor: "system:test",
		Action: "device.import", Object: "devices"})
	require.NoError(b, e.store.ImportDevices(ctx, ds))
	br := e.signIn("viewer")
	require.Contains(b, br.get("/devices").body, "100,000 devices.")

	for _, path := range []string{"/devices", "/devices?status=accepted&version=2.0.0",
		"/devices?limit=100", "/"} {
		b.Run(path, func(b *testing.B) {
			br := e.signIn("viewer")
			for b.Loop() {
				page := br.get(path)
				require.Equal(b, http.StatusOK, page.code)
				if next := pagerLink(b, page.body, "next"); next != "" {
					require.Equal(b, http.StatusOK, br.get(next).code)
				}
			}
		})
	}
}
