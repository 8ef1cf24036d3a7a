// Package pollbench measures the device API's update check, the request
// every device makes every poll interval, against a bare net/http handler
// in the same run. Run it with make bench, or:
//
//	go test -run '^$' -bench Poll -benchtime 20000x ./internal/benchtool/pollbench
//
// ROTA_BENCH_POSTGRES=1 adds the PostgreSQL store (a real server started
// by internal/testutil); ROTA_BENCH_LARGE=0 leaves out 100,000 devices.
package pollbench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotaupdate/rota/internal/bundlestore"
	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/rotaupdate/rota/poll"
)

// parallelism is the number of concurrent clients per GOMAXPROCS.
const parallelism = 16

// fleet is a server with registered, authenticated devices.
type fleet struct {
	url     string
	tokens  []string
	body    []byte
	perDev  float64 // Go heap bytes per device
	cleanup func()
}

var (
	fleetsMu sync.Mutex
	fleets   = map[string]*fleet{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range fleets {
		f.cleanup()
	}
	testutil.StopPostgres()
	os.Exit(code)
}

func BenchmarkPoll(b *testing.B) {
	sizes := []int{10_000, 100_000}
	if os.Getenv("ROTA_BENCH_LARGE") == "0" {
		sizes = sizes[:1]
	}
	backends := []string{"sqlite"}
	if os.Getenv("ROTA_BENCH_POSTGRES") == "1" {
		backends = append(backends, "postgres")
	}
	b.Run("handler=bare", func(b *testing.B) {
		srv := httptest.NewServer(http.HandlerFunc(bare))
		defer srv.Close()
		f := &fleet{url: srv.URL, tokens: []string{"t"}, body: checkBody(b)}
		load(b, f)
	})
	for _, backend := range backends {
		for _, n := range sizes {
			b.Run(fmt.Sprintf("handler=rota/store=%s/devices=%d", backend, n),
				func(b *testing.B) {
					f := getFleet(b, backend, n)
					load(b, f)
					b.ReportMetric(f.perDev, "heap-B/device")
				})
		}
	}
}

// bare is the baseline: a handler that reads the request and answers a
// fixed check response, as a server with no state would.
func bare(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
	w.Write([]byte(`{"pollInterval":300}`))
}

func checkBody(b *testing.B) []byte {
	body, err := json.Marshal(poll.CheckRequest{
		Compatible: "acme-board",
		Installed:  poll.Installed{Version: "1.0.0"},
		Slots: []poll.SlotInfo{{Name: "rootfs.0", Class: "rootfs", Booted: true},
			{Name: "rootfs.1", Class: "rootfs"}},
	})
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// load makes b.N checks from parallel clients, each as a device of f in
// turn, and reports throughput and latency percentiles.
func load(b *testing.B, f *fleet) {
	tr := &http.Transport{MaxIdleConnsPerHost: parallelism * runtime.GOMAXPROCS(0)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64

	b.SetParallelism(parallelism)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			tok := f.tokens[int(next.Add(1))%len(f.tokens)]
			t0 := time.Now()
			if err := check(client, f.url, tok, f.body); err != nil {
				if failed.Add(1) == 1 {
					b.Error(err)
				}
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
	b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
}

func check(c *http.Client, url, token string, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, url+poll.APIPath+"/check",
		bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("check: %s", resp.Status)
	}
	return nil
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// getFleet returns the fleet of n devices on backend, built once per run.
func getFleet(b *testing.B, backend string, n int) *fleet {
	key := fmt.Sprintf("%s/%d", backend, n)
	fleetsMu.Lock()
	defer fleetsMu.Unlock()
	if f := fleets[key]; f != nil {
		return f
	}
	f, err := newFleet(b, backend, n)
	if err != nil {
		b.Fatal(err)
	}
	fleets[key] = f
	return f
}

func newFleet(b *testing.B, backend string, n int) (*fleet, error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pollbench-")
	if err != nil {
		return nil, err
	}
	// A fleet serves every run of the process: its database must not go
	// with the benchmark that made it.
	owner := &laterTB{TB: b}
	var st store.Store
	switch backend {
	case "sqlite":
		st, err = store.OpenSQLite(ctx, filepath.Join(dir, "rota.db"))
	case "postgres":
		st, err = store.OpenPostgres(ctx, testutil.StartPostgres(owner))
	}
	if err != nil {
		return nil, err
	}
	bundles, err := bundlestore.OpenLayout(filepath.Join(dir, "bundles"))
	if err != nil {
		return nil, err
	}

	keys := make([]ed25519.PrivateKey, n)
	devs := make([]store.Device, n)
	for i := range keys {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		pemKey, err := poll.PublicKeyPEM(pub)
		if err != nil {
			return nil, err
		}
		keys[i] = priv
		devs[i] = store.Device{KeyID: poll.KeyID(pub), PublicKeyPEM: pemKey,
			Status:   store.StatusAccepted,
			Identity: map[string]string{"serial": fmt.Sprintf("SN%06d", i)}}
	}
	if err := st.ImportDevices(ctx, devs); err != nil {
		return nil, err
	}

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// Failures are logged: a benchmark that fails says why.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	api, err := server.NewDeviceAPI(server.DeviceAPIConfig{Store: st, Bundles: bundles,
		Logger: log})
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(api)
	f := &fleet{url: srv.URL, body: checkBody(b), tokens: make([]string, n)}
	f.cleanup = func() {
		srv.Close()
		st.Close()
		owner.cleanup()
		os.RemoveAll(dir)
	}
	if err := authenticate(srv.URL, keys, f.tokens); err != nil {
		f.cleanup()
		return nil, err
	}
	// Every device polls once, as a running fleet has, before measuring.
	for _, tok := range f.tokens {
		if err := check(http.DefaultClient, f.url, tok, f.body); err != nil {
			f.cleanup()
			return nil, err
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	f.perDev = float64(after.HeapAlloc-min(after.HeapAlloc, before.HeapAlloc)) / float64(n)
	return f, nil
}

// authenticate gets a token for every device, from several clients.
func authenticate(url string, keys []ed25519.PrivateKey, tokens []string) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(keys) {
					return
				}
				tok, err := auth(url, keys[i])
				if err != nil {
					errs <- err
					return
				}
				tokens[i] = tok
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func auth(url string, key ed25519.PrivateKey) (string, error) {
	pemKey, err := poll.PublicKeyPEM(key.Public().(ed25519.PublicKey))
	if err != nil {
		return "", err
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	req, err := poll.SignAuth(key, poll.AuthPayload{PublicKey: pemKey,
		Timestamp: time.Now(), Nonce: fmt.Sprintf("%x", nonce)})
	if err != nil {
		return "", err
	}
	body, _ := json.Marshal(req)
	resp, err := http.Post(url+poll.APIPath+"/auth", "application/json",
		bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var ar poll.AuthResponse
	if err := json.NewDecoder(resp.Body).Decode(&ar); err != nil {
		return "", err
	}
	if ar.Token == "" {
		return "", fmt.Errorf("auth: %s, status %q", resp.Status, ar.Status)
	}
	return ar.Token, nil
}

// laterTB is a testing.TB whose cleanups run when its cleanup method is
// called rather than when the benchmark ends.
type laterTB struct {
	testing.TB
	cleanups []func()
}

func (l *laterTB) Cleanup(f func()) { l.cleanups = append(l.cleanups, f) }

func (l *laterTB) cleanup() {
	for _, f := range slices.Backward(l.cleanups) {
		f()
	}
}
