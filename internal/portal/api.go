package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Names of the management API's authentication scheme.
const (
	// apiPath is the base path of the management API on its server.
	apiPath = "/api/v1"

	// SessionCookie is the name of the cookie holding a session of the
	// management API. The portal's own session cookie has the same
	// name and value, so that an embedded portal and its API share it.
	SessionCookie = "rota_session"

	// csrfHeader carries the session's CSRF token on changes.
	csrfHeader = "X-CSRF-Token"

	// bundleType is the media type of an uploaded .rota file.
	bundleType = "application/vnd.rota.bundle"
)

// apiClient makes requests to the management API.
type apiClient struct {
	base    string // the API's base URL, ending in apiPath
	client  *http.Client
	timeout time.Duration
}

// apiError is an answer of the API other than 2xx.
type apiError struct {
	Method, Path string
	problem
}

// problem is an RFC 9457 problem document of the API, with the
// extension members the portal uses.
type problem struct {
	Status       int      `json:"status"`
	Title        string   `json:"title"`
	Detail       string   `json:"detail"`
	ReleaseID    string   `json:"releaseId"`
	DeploymentID string   `json:"deploymentId"`
	Devices      []string `json:"devices"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("management api %s %s: %d %s", e.Method, e.Path, e.Status, e.Detail)
}

// statusOf returns the status of an API error, or 0 for another error.
func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// detailOf returns what an API error says was wrong, or a general
// message for another error.
func detailOf(err error) string {
	var ae *apiError
	if errors.As(err, &ae) && ae.Detail != "" {
		return ae.Detail
	}
	return "The server could not be reached or failed; try again."
}

// call makes a request of the API as the session s and decodes a
// successful JSON answer into out, unless out is nil. path is relative
// to the API base, query included; body, unless nil, is sent as JSON.
func (c *apiClient) call(ctx context.Context, s *session, method, path string, body,
	out any) error {
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("management api %s %s: encode request: %w", method, path, err)
		}
		r = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := c.request(ctx, s, method, path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	return c.read(resp, method, path, out)
}

// upload sends body, a .rota file of size bytes (-1 when unknown), to
// POST /releases as the session s and returns the release created. It
// streams the body and sets no timeout but ctx's.
func (c *apiClient) upload(ctx context.Context, s *session, body io.Reader,
	size int64) (release, error) {
	var rel release
	req, err := c.request(ctx, s, http.MethodPost, "/releases", io.NopCloser(body))
	if err != nil {
		return rel, err
	}
	req.Header.Set("Content-Type", bundleType)
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	resp, err := c.do(req)
	if err != nil {
		return rel, err
	}
	return rel, c.read(resp, http.MethodPost, "/releases", &rel)
}

// request returns a request of the API carrying the session s, if not
// nil, and its CSRF token on changes.
func (c *apiClient) request(ctx context.Context, s *session, method, path string,
	body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("management api %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if s != nil {
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: s.id})
		if method != http.MethodGet && method != http.MethodHead {
			req.Header.Set(csrfHeader, s.CSRF)
		}
	}
	return req, nil
}

func (c *apiClient) do(req *http.Request) (*http.Response, error) {
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("management api %s %s: %w", req.Method, req.URL.Path, err)
	}
	return resp, nil
}

// read decodes resp into out on success, and returns an *apiError
// otherwise.
func (c *apiClient) read(resp *http.Response, method, path string, out any) error {
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIAnswer))
	if err != nil {
		return fmt.Errorf("management api %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &apiError{Method: method, Path: path}
		if json.Unmarshal(raw, &e.problem) != nil || e.Detail == "" {
			e.Detail = strings.TrimSpace(string(raw[:min(len(raw), 200)]))
		}
		e.Status = resp.StatusCode
		return e
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("management api %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// The API's objects, as far as the portal reads them.
type (
	me struct {
		Name      string `json:"name"`
		Role      string `json:"role"`
		Kind      string `json:"kind"`
		CSRFToken string `json:"csrfToken"`
	}

	user struct {
		Name    string    `json:"name"`
		Role    string    `json:"role"`
		Created time.Time `json:"created"`
		Updated time.Time `json:"updated"`
	}

	token struct {
		ID        string    `json:"id"`
		Name      string    `json:"name"`
		Role      string    `json:"role"`
		ExpiresAt time.Time `json:"expiresAt"`
		Created   time.Time `json:"created"`
		Secret    string    `json:"secret"`
	}

	image struct {
		Class      string `json:"class"`
		Size       int64  `json:"size"`
		SHA256     string `json:"sha256"`
		Filesystem string `json:"filesystem"`
	}

	signature struct {
		KeyID   string    `json:"keyId"`
		Digest  string    `json:"digest"`
		Created time.Time `json:"created"`
		Trusted bool      `json:"trusted"`
	}

	release struct {
		ID              string      `json:"id"`
		Version         string      `json:"version"`
		Compatible      string      `json:"compatible"`
		Digest          string      `json:"digest"`
		Size            int64       `json:"size"`
		Location        string      `json:"location"`
		SignatureKeyIDs []string    `json:"signatureKeyIds"`
		Images          []image     `json:"images"`
		Created         time.Time   `json:"created"`
		BundleAvailable bool        `json:"bundleAvailable"`
		RollbackIndex   *uint64     `json:"rollbackIndex"`
		Description     string      `json:"description"`
		MinAgentVersion string      `json:"minAgentVersion"`
		BundleCreated   time.Time   `json:"bundleCreated"`
		Signatures      []signature `json:"signatures"`
	}

	device struct {
		ID               string            `json:"id"`
		KeyID            string            `json:"keyId"`
		PublicKey        string            `json:"publicKey"`
		Identity         map[string]string `json:"identity"`
		Status           string            `json:"status"`
		Tags             []string          `json:"tags"`
		Groups           []string          `json:"groups"`
		Inventory        map[string]string `json:"inventory"`
		LastCheck        time.Time         `json:"lastCheck"`
		InstalledVersion string            `json:"installedVersion"`
		InstalledDigest  string            `json:"installedDigest"`
		Slots            []map[string]any  `json:"slots"`
		Created          time.Time         `json:"created"`
		Updated          time.Time         `json:"updated"`
		History          []historyEntry    `json:"history"`
	}

	historyEntry struct {
		DeploymentID     string    `json:"deploymentId"`
		DeploymentName   string    `json:"deploymentName"`
		DeploymentStatus string    `json:"deploymentStatus"`
		ReleaseID        string    `json:"releaseId"`
		ReleaseVersion   string    `json:"releaseVersion"`
		Phase            int       `json:"phase"`
		State            string    `json:"state"`
		Started          time.Time `json:"started"`
		Attempts         int       `json:"attempts"`
		LastReport       time.Time `json:"lastReport"`
		Message          string    `json:"message"`
		Log              []string  `json:"log"`
		Reports          []report  `json:"reports"`
	}

	report struct {
		State    string `json:"state"`
		Progress *struct {
			Done  int64 `json:"done"`
			Total int64 `json:"total"`
		} `json:"progress"`
		Message  string    `json:"message"`
		Received time.Time `json:"received"`
	}

	group struct {
		Name    string `json:"name"`
		Devices int    `json:"devices"`
	}

	deviceFilter struct {
		Status    string            `json:"status,omitempty"`
		Version   string            `json:"version,omitempty"`
		Group     string            `json:"group,omitempty"`
		Tag       string            `json:"tag,omitempty"`
		Inventory map[string]string `json:"inventory,omitempty"`
	}

	target struct {
		Group  string        `json:"group,omitempty"`
		Filter *deviceFilter `json:"filter,omitempty"`
	}

	phase struct {
		Percent             int           `json:"percent,omitempty"`
		Count               int           `json:"count,omitempty"`
		StartAt             time.Time     `json:"startAt,omitzero"`
		AfterSuccessPercent int           `json:"afterSuccessPercent,omitempty"`
		Soak                time.Duration `json:"soak,omitempty"`
	}

	threshold struct {
		Count   int `json:"count,omitempty"`
		Percent int `json:"percent,omitempty"`
	}

	window struct {
		Days     []int         `json:"days,omitempty"`
		Start    string        `json:"start"`
		Duration time.Duration `json:"duration"`
		TimeZone string        `json:"timeZone,omitempty"`
	}

	strategy struct {
		Phases           []phase   `json:"phases,omitempty"`
		FailureThreshold threshold `json:"failureThreshold,omitzero"`
		MaxConcurrent    int       `json:"maxConcurrent,omitempty"`
		Windows          []window  `json:"windows,omitempty"`
		Retries          int       `json:"retries,omitempty"`
	}

	deployment struct {
		ID        string    `json:"id"`
		Name      string    `json:"name"`
		ReleaseID string    `json:"releaseId"`
		Target    target    `json:"target"`
		Strategy  strategy  `json:"strategy"`
		Status    string    `json:"status"`
		Created   time.Time `json:"created"`
		Updated   time.Time `json:"updated"`
		Release   release   `json:"release"`
		Counts    counts    `json:"counts"`
	}

	counts struct {
		Total      int            `json:"total"`
		States     map[string]int `json:"states"`
		InProgress int            `json:"inProgress"`
		Phases     []struct {
			Phase  int            `json:"phase"`
			Total  int            `json:"total"`
			States map[string]int `json:"states"`
		} `json:"phases"`
	}

	deploymentCreate struct {
		Name      string   `json:"name,omitempty"`
		ReleaseID string   `json:"releaseId"`
		Target    target   `json:"target"`
		Strategy  strategy `json:"strategy"`
	}

	targetDevice struct {
		DeviceID   string    `json:"deviceId"`
		Phase      int       `json:"phase"`
		State      string    `json:"state"`
		Started    time.Time `json:"started"`
		Attempts   int       `json:"attempts"`
		LastReport time.Time `json:"lastReport"`
		Message    string    `json:"message"`
		Updated    time.Time `json:"updated"`
	}

	auditEntry struct {
		ID      int64           `json:"id"`
		Actor   string          `json:"actor"`
		Action  string          `json:"action"`
		Object  string          `json:"object"`
		At      time.Time       `json:"at"`
		Details json.RawMessage `json:"details"`
	}
)

// page is a page of a listing of the API.
type page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next"`
	Total int    `json:"total"`
}

// asAPIError reports whether err is an *apiError, setting target to it.
func asAPIError(err error, target **apiError) bool { return errors.As(err, target) }
