// Package metrics exposes rota-server's Prometheus metrics: requests and
// their latency per API, device polls, bundle bytes served, and the
// device and deployment states read from the store at each scrape.
//
// The one rule: state gauges are never kept in memory. They are counted
// in the store when Prometheus scrapes, so several server replicas report
// the same fleet and a restart loses nothing.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// ScrapeTimeout bounds the store queries of one scrape.
const ScrapeTimeout = 5 * time.Second

// Metrics holds the server's metrics in a registry of its own.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	polls    prometheus.Counter
	served   prometheus.Counter
}

// New returns the server's metrics. When st is not nil, device and
// deployment states are counted in it at every scrape; failures to count
// go to log, or nowhere when log is nil.
func New(st store.Store, log *slog.Logger) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rota_http_requests_total",
			Help: "HTTP requests answered, by API and status code.",
		}, []string{"api", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rota_http_request_duration_seconds",
			Help: "Time to answer an HTTP request, by API; bundle downloads are not counted.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
				2.5, 5, 10},
		}, []string{"api"}),
		polls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rota_device_polls_total",
			Help: "Update checks made by devices.",
		}),
		served: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rota_bundle_bytes_served_total",
			Help: "Bytes of bundles sent to devices.",
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.polls, m.served,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if st != nil {
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		m.reg.MustRegister(&stateCollector{st: st, log: log})
	}
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Instrument counts the requests h answers under the label api. For the
// device API it also counts polls and the bundle bytes sent.
func (m *Metrics) Instrument(api string, h http.Handler) http.Handler {
	requests := m.requests.MustCurryWith(prometheus.Labels{"api": api})
	latency := m.latency.WithLabelValues(api)
	checkPath := poll.APIPath + "/check"
	bundlePrefix := poll.APIPath + "/bundles/"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)

		requests.WithLabelValues(strconv.Itoa(rec.code)).Inc()
		if strings.HasPrefix(r.URL.Path, bundlePrefix) {
			m.served.Add(float64(rec.bytes))
			return
		}
		latency.Observe(time.Since(start).Seconds())
		if r.URL.Path == checkPath && rec.code < 400 {
			m.polls.Inc()
		}
	})
}

// recorder notes the status code and body size of an answer.
type recorder struct {
	http.ResponseWriter
	code        int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

var (
	devicesDesc = prometheus.NewDesc("rota_devices",
		"Devices known to the server, by admission status.", []string{"status"}, nil)
	deploymentsDesc = prometheus.NewDesc("rota_deployments",
		"Deployments, by status.", []string{"status"}, nil)
	targetsDesc = prometheus.NewDesc("rota_deployment_devices",
		"Devices of active and paused deployments, by state in the deployment.",
		[]string{"state"}, nil)
	scrapeErrDesc = prometheus.NewDesc("rota_store_scrape_error",
		"1 if counting states in the store failed at this scrape.", nil, nil)
)

// stateCollector counts device and deployment states in the store.
type stateCollector struct {
	st  store.Store
	log *slog.Logger
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- devicesDesc
	ch <- deploymentsDesc
	ch <- targetsDesc
	ch <- scrapeErrDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	failed := 0.0
	if err := c.collect(ctx, ch); err != nil {
		c.log.Warn("count states for metrics", "err", err)
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrDesc, prometheus.GaugeValue, failed)
}

func (c *stateCollector) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	for _, s := range []store.AdmissionStatus{store.StatusPending, store.StatusAccepted,
		store.StatusRejected, store.StatusDecommissioned} {
		n, err := c.st.CountDevices(ctx, store.DeviceFilter{Status: s})
		if err != nil {
			return err
		}
		ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue,
			float64(n), string(s))
	}

	byStatus := map[store.DeploymentStatus]int{}
	targets := store.Counts{}
	page := store.Page{Limit: store.MaxPageLimit}
	for {
		deps, next, err := c.st.ListDeployments(ctx, store.DeploymentFilter{}, page)
		if err != nil {
			return err
		}
		for _, d := range deps {
			byStatus[d.Status]++
			if d.Status != store.DeploymentActive && d.Status != store.DeploymentPaused {
				continue
			}
			counts, err := c.st.DeploymentCounts(ctx, d.ID)
			if err != nil {
				return err
			}
			for s, n := range counts.All {
				targets[s] += n
			}
		}
		if next == "" {
			break
		}
		page.After = next
	}
	for _, s := range []store.DeploymentStatus{store.DeploymentActive,
		store.DeploymentPaused, store.DeploymentAborted, store.DeploymentFinished} {
		ch <- prometheus.MustNewConstMetric(deploymentsDesc, prometheus.GaugeValue,
			float64(byStatus[s]), string(s))
	}
	for s, n := range targets {
		ch <- prometheus.MustNewConstMetric(targetsDesc, prometheus.GaugeValue,
			float64(n), string(s))
	}
	return nil
}
