package metrics_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/metrics"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "rota.db"))
	require.NoError(t, err)
	defer st.Close()
	for i, status := range []store.AdmissionStatus{store.StatusAccepted,
		store.StatusAccepted, store.StatusPending} {
		_, err := st.CreateDevice(ctx, store.Device{KeyID: string(rune('a' + i)),
			PublicKeyPEM: "pem", Status: status})
		require.NoError(t, err)
	}

	m := metrics.New(st, nil)
	api := m.Instrument("device", http.HandlerFunc(func(w http.ResponseWriter,
		r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, poll.APIPath+"/bundles/"):
			w.Write(make([]byte, 1000))
		case r.URL.Path == poll.APIPath+"/check":
			w.Write([]byte("{}"))
		default:
			http.NotFound(w, r)
		}
	}))
	for _, path := range []string{"/check", "/check", "/bundles/sha256:x", "/nope"} {
		api.ServeHTTP(httptest.NewRecorder(),
			httptest.NewRequest(http.MethodPost, poll.APIPath+path, nil))
	}

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`rota_device_polls_total 2`,
		`rota_bundle_bytes_served_total 1000`,
		`rota_http_requests_total{api="device",code="200"} 3`,
		`rota_http_requests_total{api="device",code="404"} 1`,
		`rota_devices{status="accepted"} 2`,
		`rota_devices{status="pending"} 1`,
		`rota_deployments{status="active"} 0`,
		`rota_store_scrape_error 0`,
		`rota_http_request_duration_seconds_count{api="device"} 3`,
	} {
		assert.Contains(t, text, want)
	}
}
