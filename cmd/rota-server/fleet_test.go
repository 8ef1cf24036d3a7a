package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/testutil"
)

// fleetSize is the number of simulated devices in the fleet tests.
const fleetSize = 10

// backends are the storage set-ups the fleet tests run on: SQLite and
// bundles in the data directory; a fresh database on a real PostgreSQL
// server; and bundles in a real registry (Debian's docker-registry), which
// devices download from directly in the last set-up.
var backends = []struct {
	name  string
	flags func(t *testing.T) []string
}{
	{"sqlite", func(*testing.T) []string { return nil }},
	{"postgres", func(t *testing.T) []string {
		return []string{"--database", testutil.StartPostgres(t)}
	}},
	{"registry", func(t *testing.T) []string {
		return []string{"--registry", testutil.StartRegistry(t) + "/rota/bundles",
			"--registry-plain-http"}
	}},
	{"registry-redirect", func(t *testing.T) []string {
		return []string{"--registry", testutil.StartRegistry(t) + "/rota/bundles",
			"--registry-plain-http", "--registry-redirect"}
	}},
}

// release is the part of a release the tests read.
type release struct {
	ID      string `json:"id"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
	Size    int64  `json:"size"`
}

// deployment is the part of a deployment's detail the tests read.
type deployment struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Counts struct {
		Total      int            `json:"total"`
		All        map[string]int `json:"states"`
		InProgress int            `json:"inProgress"`
		Phases     []struct {
			Total  int            `json:"total"`
			States map[string]int `json:"states"`
		} `json:"phases"`
	} `json:"counts"`
}

func (s *serverProc) upload(raw []byte) release {
	s.t.Helper()
	var r release
	require.Equal(s.t, http.StatusCreated, s.API("POST", "/releases", raw, &r))
	return r
}

// metric returns the value of an unlabelled metric of the server.
func (s *serverProc) metric(name string) float64 {
	s.t.Helper()
	resp, err := s.Client.Get(s.URL() + "/metrics")
	require.NoError(s.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(s.t, err)
			return f
		}
	}
	s.t.Fatalf("no metric %s", name)
	return 0
}

func (s *serverProc) deployment(id string) deployment {
	s.t.Helper()
	var d deployment
	require.Equal(s.t, http.StatusOK, s.API("GET", "/deployments/"+id, nil, &d))
	return d
}

// acceptedDevices waits until n devices are accepted.
func (s *serverProc) acceptedDevices(n int) {
	s.t.Helper()
	testutil.Eventually(s.t, 60*time.Second, fmt.Sprintf("%d accepted devices", n), func() bool {
		var page struct {
			Total int `json:"total"`
		}
		s.API("GET", "/devices?status=accepted&limit=1", nil, &page)
		return page.Total == n
	})
}

// phased is the strategy of the fleet tests: a canary phase of two
// devices, then half of the rest, then the rest, pausing as soon as one
// device fails.
var phased = map[string]any{
	"phases": []map[string]any{
		{"count": 2},
		{"percent": 50},
		{},
	},
	"failureThreshold": map[string]any{"percent": 10},
}

func (s *serverProc) deploy(releaseID string) string {
	s.t.Helper()
	var d deployment
	code := s.API("POST", "/deployments", map[string]any{
		"name":      "e2e " + releaseID,
		"releaseId": releaseID,
		"target":    map[string]any{"filter": map[string]any{"status": "accepted"}},
		"strategy":  phased,
	}, &d)
	require.Equal(s.t, http.StatusCreated, code)
	return d.ID
}

// TestFleet runs the whole flow on a real server process with real
// agents: a good release reaches every device phase by phase, and a
// release that fails its health check fails the canary phase, pauses the
// deployment by itself, and its later phases never start.
func TestFleet(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			srv := startServer(t, b.flags(t)...)
			signer, pub := fleetKey(t, srv.Data)
			srv.Stop()
			srv.Start() // the server loads keys at start

			good := srv.upload(buildRelease(t, signer, "2.0.0"))
			bad := srv.upload(buildRelease(t, signer, "3.0.0"))
			simulate(t, srv, pub, fleetSize, "3.0.0")
			srv.acceptedDevices(fleetSize)

			id := srv.deploy(good.ID)
			testutil.Eventually(t, 3*time.Minute, "the good deployment to finish", func() bool {
				return srv.deployment(id).Status == "finished"
			})
			d := srv.deployment(id)
			assert.Equal(t, fleetSize, d.Counts.All["success"], "counts: %+v", d.Counts)
			served := srv.metric("rota_bundle_bytes_served_total")
			if b.name == "registry-redirect" {
				assert.Less(t, served, float64(good.Size), "devices download from the registry")
			} else {
				assert.GreaterOrEqual(t, served, float64(fleetSize*good.Size))
			}

			id = srv.deploy(bad.ID)
			testutil.Eventually(t, 2*time.Minute, "the bad deployment to pause", func() bool {
				return srv.deployment(id).Status == "paused"
			})
			time.Sleep(3 * time.Second) // long enough for a wrong start to show
			d = srv.deployment(id)
			require.Len(t, d.Counts.Phases, 3)
			canary := d.Counts.Phases[0].States
			assert.Positive(t, canary["rolled-back"]+canary["failure"],
				"the canary phase failed: %+v", d.Counts)
			assert.Zero(t, canary["success"], "no device runs the bad release")
			for _, p := range d.Counts.Phases[1:] {
				assert.Equal(t, p.Total, p.States["pending"],
					"later phases never start: %+v", d.Counts)
			}
			require.NoError(t, srv.Stop(), "graceful shutdown")
		})
	}
}

// TestCrash kills the server with SIGKILL 20 times during an active
// deployment; after each restart the deployment goes on, and at the end
// every device has succeeded and the counts agree with the device states.
func TestCrash(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			srv := startServer(t, b.flags(t)...)
			signer, pub := fleetKey(t, srv.Data)
			srv.Stop()
			srv.Start()

			rel := srv.upload(buildRelease(t, signer, "2.0.0"))
			simulate(t, srv, pub, fleetSize, "")
			srv.acceptedDevices(fleetSize)
			id := srv.deploy(rel.ID)

			for range 20 {
				time.Sleep(time.Duration(100+mathrand.IntN(600)) * time.Millisecond)
				srv.Kill()
				srv.Start()
			}
			testutil.Eventually(t, 3*time.Minute, "the deployment to finish", func() bool {
				return srv.deployment(id).Status == "finished"
			})
			d := srv.deployment(id)
			assert.Equal(t, map[string]int{"success": fleetSize}, d.Counts.All)
			assert.Zero(t, d.Counts.InProgress)

			var devices struct {
				Items []struct {
					State string `json:"state"`
				} `json:"items"`
			}
			require.Equal(t, http.StatusOK,
				srv.API("GET", "/deployments/"+id+"/devices?limit=1000", nil, &devices))
			require.Len(t, devices.Items, fleetSize)
			for _, dd := range devices.Items {
				assert.Equal(t, "success", dd.State)
			}
		})
	}
}

// TestTLS serves both APIs over HTTPS from --tls-cert and --tls-key, and
// refuses plain HTTP on the same port.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	srv := startServer(t, "--tls-cert", certFile, "--tls-key", keyFile)

	var me struct{ Role string }
	require.Equal(t, http.StatusOK, srv.API("GET", "/me", nil, &me))
	assert.Equal(t, "admin", me.Role)
	resp, err := srv.Client.Get(srv.URL() + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	resp, err = http.Get("http://" + srv.Addr + "/readyz")
	if err == nil {
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "plain HTTP to a TLS port")
	}
	require.NoError(t, srv.Stop())
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "rota-server test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(keyFile,
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}
