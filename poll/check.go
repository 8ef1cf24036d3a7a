package poll

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Poll interval bounds and defaults.
const (
	// DefaultPollInterval is the time between checks when the server
	// sets none.
	DefaultPollInterval = 10 * time.Minute

	// MinPollInterval is the shortest time between checks, whatever the
	// server says.
	MinPollInterval = 5 * time.Second

	// MaxPollInterval is the longest time between checks.
	MaxPollInterval = 24 * time.Hour

	// DefaultJitter is the fraction by which NextPoll varies an interval
	// either way, so that a fleet's checks never fall into step.
	DefaultJitter = 0.2
)

// Check tells the server what the device runs and returns the update it
// should install, if any. When the server answers 304 Not Modified to the
// ETag of the previous answer, Check returns a copy of that answer with
// NotModified set.
func (c *Client) Check(ctx context.Context, req CheckRequest) (*CheckResponse, error) {
	const op = "check"
	if err := req.Validate(); err != nil {
		return nil, &Error{Op: op, URL: c.endpoint("/check"), Err: err}
	}

	c.mu.Lock()
	etag, last := c.etag, c.last
	c.mu.Unlock()
	header := http.Header{}
	if etag != "" && last != nil {
		header.Set("If-None-Match", etag)
	}

	rep, u, err := c.call(ctx, op, http.MethodPost, "/check", req, header)
	if err != nil {
		return nil, err
	}
	switch {
	case rep.status == http.StatusNotModified && last != nil:
		resp := cloneCheck(last)
		resp.NotModified = true
		return resp, nil
	case rep.status != http.StatusOK:
		return nil, statusError(op, u, rep.status, rep.header, rep.body)
	}

	var resp CheckResponse
	if err := decode(op, u, rep, &resp); err != nil {
		return nil, err
	}
	if err := resp.Validate(); err != nil {
		return nil, &Error{Op: op, URL: u, StatusCode: rep.status, Err: err}
	}
	c.mu.Lock()
	c.etag, c.last = rep.header.Get("ETag"), cloneCheck(&resp)
	c.mu.Unlock()
	return &resp, nil
}

// cloneCheck copies r deeply enough that callers cannot change the cache.
func cloneCheck(r *CheckResponse) *CheckResponse {
	out := *r
	if r.Update != nil {
		u := *r.Update
		u.MaintenanceWindows = append([]Window(nil), u.MaintenanceWindows...)
		out.Update = &u
	}
	return &out
}

// NextPoll returns how long to wait before the next check given the
// server's interval: DefaultPollInterval if interval is zero or negative,
// bounded by MinPollInterval and MaxPollInterval, and varied by
// DefaultJitter either way. Near a bound the variation is reflected back
// inside it, so that the fleet stays spread out there too.
func NextPoll(interval time.Duration) time.Duration {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	interval = min(max(interval, MinPollInterval), MaxPollInterval)
	d := Jitter(interval, DefaultJitter)
	switch {
	case d < MinPollInterval:
		d = 2*MinPollInterval - d
	case d > MaxPollInterval:
		d = 2*MaxPollInterval - d
	}
	return d
}

// Jitter returns d varied uniformly by up to fraction of d either way;
// a fraction of zero or less returns d, and one above 1 counts as 1.
func Jitter(d time.Duration, fraction float64) time.Duration {
	if d <= 0 || fraction <= 0 {
		return d
	}
	fraction = min(fraction, 1)
	spread := float64(d) * fraction
	return d + time.Duration((rand.Float64()*2-1)*spread)
}

// Report sends a report on a deployment. It keeps the last MaxLogLines
// log lines, cuts lines and the message to their limits, and fills in an
// empty ID and Time, so that a retried report is counted once.
func (c *Client) Report(ctx context.Context, deploymentID string, r Report) error {
	const op = "report"
	path := "/deployments/" + url.PathEscape(deploymentID) + "/reports"
	r = fitReport(r)
	if r.ID == "" {
		id, err := newReportID()
		if err != nil {
			return &Error{Op: op, URL: c.endpoint(path), Err: err}
		}
		r.ID = id
	}
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}

	err := r.Validate()
	if err == nil && deploymentID == "" {
		err = fmt.Errorf("report: %w", invalid("deployment id is empty"))
	}
	if err != nil {
		return &Error{Op: op, URL: c.endpoint(path), Err: err}
	}
	return c.expectNoContent(ctx, op, http.MethodPost, path, r)
}

// Inventory replaces the device's inventory on the server with attrs.
func (c *Client) Inventory(ctx context.Context, attrs map[string]string) error {
	const op = "inventory"
	req := InventoryRequest{Attributes: attrs}
	if err := req.Validate(); err != nil {
		return &Error{Op: op, URL: c.endpoint("/inventory"), Err: err}
	}
	return c.expectNoContent(ctx, op, http.MethodPut, "/inventory", req)
}

func (c *Client) expectNoContent(ctx context.Context, op, method, path string, in any) error {
	rep, u, err := c.call(ctx, op, method, path, in, nil)
	if err != nil {
		return err
	}
	if rep.status != http.StatusNoContent && rep.status != http.StatusOK {
		return statusError(op, u, rep.status, rep.header, rep.body)
	}
	return nil
}

// fitReport cuts a report's message and log to the limits of the API,
// keeping the newest log lines, which tell most about a failure.
func fitReport(r Report) Report {
	r.Message = cutUTF8(r.Message, MaxMessageSize)
	if len(r.Log) > MaxLogLines {
		r.Log = r.Log[len(r.Log)-MaxLogLines:]
	}
	lines := make([]string, len(r.Log))
	for i, l := range r.Log {
		lines[i] = cutUTF8(l, MaxLogLineSize)
	}
	if r.Log != nil {
		r.Log = lines
	}
	return r
}

// cutUTF8 shortens s to at most n bytes of valid UTF-8, replacing
// invalid bytes and never splitting a character.
func cutUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 {
		r, size := utf8.DecodeLastRuneInString(s)
		if r != utf8.RuneError || size > 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

func newReportID() (string, error) {
	b := make([]byte, 16)
	if _, err := cryptorand.Read(b); err != nil {
		return "", fmt.Errorf("make report id: %w", err)
	}
	return hex.EncodeToString(b), nil
}
