package portal

import (
	"cmp"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
)

// Limits of what the dashboard looks at, so that it stays quick on a
// large fleet: it reads counts and short pages, never every device.
const (
	// versionSample is how many accepted devices are read to find the
	// versions the fleet runs, besides the releases' versions.
	versionSample = 100

	// maxVersions is the most versions counted; maxVersionBars the most
	// drawn, the rest summed up as "other".
	maxVersions    = 30
	maxVersionBars = 10

	// maxLiveDeployments is the most active and paused deployments
	// shown.
	maxLiveDeployments = 10

	// failureDeployments is how many of the newest deployments are
	// searched for failed devices, and maxFailures the most shown.
	failureDeployments = 5
	maxFailures        = 10
)

// admissionStates are the devices' admission states, in display order.
var admissionStates = []string{"accepted", "pending", "rejected", "decommissioned"}

type statusCount struct {
	Status string
	Count  int
}

type liveDeployment struct {
	D   deployment
	Bar progressBar
}

type failedDevice struct {
	DeviceID       string
	State          string
	Message        string
	When           string
	DeploymentID   string
	DeploymentName string
}

type dashboardData struct {
	Statuses    []statusCount
	Total       int
	Versions    barChart
	Deployments []liveDeployment
	Failures    []failedDevice
	Errors      []string
}

// dashboard shows the fleet at a glance: devices by admission state,
// the versions accepted devices run, active deployments and recent
// failures. A part that fails to load says so and the rest still shows.
func (p *portal) dashboard(w http.ResponseWriter, r *http.Request, s *session) {
	var d dashboardData
	ctx := r.Context()
	note := func(err error) {
		if statusOf(err) == http.StatusUnauthorized {
			return
		}
		d.Errors = append(d.Errors, detailOf(err))
	}
	accepted := 0
	for _, st := range admissionStates {
		n, err := p.countDevices(ctx, s, url.Values{"status": {st}})
		if err != nil {
			p.fail(w, r, s, err)
			return
		}
		d.Statuses = append(d.Statuses, statusCount{st, n})
		d.Total += n
		if st == "accepted" {
			accepted = n
		}
	}
	var err error
	if d.Versions, err = p.versionChart(ctx, s, accepted); err != nil {
		note(err)
	}
	if d.Deployments, err = p.liveDeployments(ctx, s); err != nil {
		note(err)
	}
	if d.Failures, err = p.recentFailures(ctx, s); err != nil {
		note(err)
	}
	p.render(w, r, s, http.StatusOK, "dashboard", view{Title: "Dashboard",
		Section: "dashboard", Data: d})
}

// countDevices returns how many devices match the filter q.
func (p *portal) countDevices(ctx context.Context, s *session, q url.Values) (int, error) {
	q.Set("limit", "1")
	var pg page[device]
	err := p.api.call(ctx, s, http.MethodGet, "/devices?"+q.Encode(), nil, &pg)
	return pg.Total, err
}

// versionChart counts accepted devices by the version they run. The API
// counts devices of one version at a time, so the candidates are the
// versions of the releases and of a sample of devices; what they do not
// cover is shown as "other".
func (p *portal) versionChart(ctx context.Context, s *session, accepted int) (barChart,
	error) {
	var sample page[device]
	q := url.Values{"status": {"accepted"}, "limit": {strconv.Itoa(versionSample)}}
	if err := p.api.call(ctx, s, http.MethodGet, "/devices?"+q.Encode(), nil,
		&sample); err != nil {
		return barChart{}, err
	}
	var rels page[release]
	if err := p.api.call(ctx, s, http.MethodGet, "/releases?limit=100", nil,
		&rels); err != nil {
		return barChart{}, err
	}
	slices.SortFunc(rels.Items, func(a, b release) int { return b.Created.Compare(a.Created) })
	var versions []string
	for _, d := range sample.Items {
		versions = append(versions, d.InstalledVersion)
	}
	for _, rel := range rels.Items {
		versions = append(versions, rel.Version)
	}
	seen := map[string]bool{"": true}
	var rows []chartRow
	counted := 0
	for _, v := range versions {
		if seen[v] || len(seen) > maxVersions {
			continue
		}
		seen[v] = true
		n, err := p.countDevices(ctx, s, url.Values{"status": {"accepted"}, "version": {v}})
		if err != nil {
			return barChart{}, err
		}
		if n > 0 {
			rows = append(rows, chartRow{Label: v, Count: n, Href: "/devices?" +
				url.Values{"status": {"accepted"}, "version": {v}}.Encode()})
			counted += n
		}
	}
	slices.SortStableFunc(rows, func(a, b chartRow) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Label, b.Label))
	})
	if len(rows) > maxVersionBars {
		for _, r := range rows[maxVersionBars:] {
			counted -= r.Count
		}
		rows = rows[:maxVersionBars]
	}
	if rest := accepted - counted; rest > 0 {
		rows = append(rows, chartRow{Label: "other or none", Count: rest, Muted: true})
	}
	return newBarChart(rows), nil
}

// liveDeployments returns the active and paused deployments with their
// progress.
func (p *portal) liveDeployments(ctx context.Context, s *session) ([]liveDeployment, error) {
	var out []liveDeployment
	for _, st := range []string{"active", "paused"} {
		var pg page[deployment]
		if err := p.api.call(ctx, s, http.MethodGet, "/deployments?status="+st+"&limit="+
			strconv.Itoa(maxLiveDeployments), nil, &pg); err != nil {
			return out, err
		}
		for _, dep := range pg.Items {
			if len(out) == maxLiveDeployments {
				break
			}
			var d deployment
			if err := p.api.call(ctx, s, http.MethodGet, "/deployments/"+
				url.PathEscape(dep.ID), nil, &d); err != nil {
				return out, err
			}
			bar, _ := deploymentBars(d)
			out = append(out, liveDeployment{D: d, Bar: bar})
		}
	}
	slices.SortFunc(out, func(a, b liveDeployment) int {
		return b.D.Created.Compare(a.D.Created)
	})
	return out, nil
}

// recentFailures returns devices whose part in one of the newest
// deployments failed or rolled back, and whose latest deployment that
// still is.
func (p *portal) recentFailures(ctx context.Context, s *session) ([]failedDevice, error) {
	var deps page[deployment]
	if err := p.api.call(ctx, s, http.MethodGet, "/deployments?limit=1000", nil,
		&deps); err != nil {
		return nil, err
	}
	slices.SortFunc(deps.Items, func(a, b deployment) int { return b.Created.Compare(a.Created) })
	deps.Items = deps.Items[:min(len(deps.Items), failureDeployments)]

	var out []failedDevice
	seen := map[string]bool{}
	for _, dep := range deps.Items {
		var found []targetDevice
		for _, st := range failedStates {
			var pg page[targetDevice]
			if err := p.api.call(ctx, s, http.MethodGet, "/deployments/"+url.PathEscape(dep.ID)+
				"/devices?state="+st+"&limit="+strconv.Itoa(maxFailures), nil,
				&pg); err != nil {
				return out, err
			}
			found = append(found, pg.Items...)
		}
		slices.SortFunc(found, func(a, b targetDevice) int { return b.Updated.Compare(a.Updated) })
		for _, td := range found {
			if seen[td.DeviceID] || len(out) == maxFailures {
				continue
			}
			seen[td.DeviceID] = true
			// A device may have updated since, in a newer deployment.
			var dev device
			if err := p.api.call(ctx, s, http.MethodGet, "/devices/"+
				url.PathEscape(td.DeviceID), nil, &dev); err != nil {
				if statusOf(err) == http.StatusNotFound {
					continue
				}
				return out, err
			}
			if len(dev.History) == 0 || dev.History[0].DeploymentID != dep.ID {
				continue
			}
			out = append(out, failedDevice{DeviceID: td.DeviceID, State: td.State,
				Message: td.Message, When: ago(cmpTime(td.LastReport, td.Updated)),
				DeploymentID: dep.ID, DeploymentName: cmp.Or(dep.Name, shortID(dep.ID))})
		}
	}
	return out, nil
}
