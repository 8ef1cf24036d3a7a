package portal

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// deploymentStatuses are the statuses a deployment may have.
var deploymentStatuses = []string{"active", "paused", "finished", "aborted"}

// liveRefresh is how often, in seconds, a deployment's page reloads in a
// browser without JavaScript while the deployment runs; the script
// polls every two seconds instead.
const liveRefresh = 5

type deploymentRow struct {
	D   deployment
	Bar progressBar
}

type deploymentsData struct {
	Rows     []deploymentRow
	Pager    *pager
	Status   string
	Statuses []string
}

// deployments lists deployments with their progress, newest first
// within a page.
func (p *portal) deployments(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	pg := newPager("/deployments", q, "after")
	api := url.Values{"limit": {strconv.Itoa(pageSize(q))}}
	status := q.Get("status")
	if slices.Contains(deploymentStatuses, status) {
		api.Set("status", status)
	} else {
		status = ""
	}
	if c := pg.Cursor(); c != "" {
		api.Set("after", c)
	}
	var list page[deployment]
	if err := p.api.call(r.Context(), s, http.MethodGet, "/deployments?"+api.Encode(), nil,
		&list); err != nil {
		p.fail(w, r, s, err)
		return
	}
	pg.Next = list.Next
	d := deploymentsData{Pager: pg, Status: status, Statuses: deploymentStatuses}
	for _, dep := range list.Items {
		var full deployment
		if err := p.api.call(r.Context(), s, http.MethodGet, "/deployments/"+
			url.PathEscape(dep.ID), nil, &full); err != nil {
			p.fail(w, r, s, err)
			return
		}
		bar, _ := deploymentBars(full)
		d.Rows = append(d.Rows, deploymentRow{D: full, Bar: bar})
	}
	slices.SortStableFunc(d.Rows, func(a, b deploymentRow) int {
		return b.D.Created.Compare(a.D.Created)
	})
	p.render(w, r, s, http.StatusOK, "deployments", view{Title: "Deployments",
		Section: "deployments", Data: d})
}

type newDeploymentData struct {
	Form     *form
	Releases []release
	Groups   []group
	Windows  []int
	Days     []int
	Zones    []string
}

// commonZones are offered for time zone fields; any IANA name works.
var commonZones = []string{"UTC", "Europe/London", "Europe/Berlin", "Europe/Helsinki",
	"America/New_York", "America/Chicago", "America/Los_Angeles", "America/Sao_Paulo",
	"Asia/Kolkata", "Asia/Shanghai", "Asia/Tokyo", "Australia/Sydney"}

// newDeployment shows the form of a new deployment, with the release
// of ?release= picked.
func (p *portal) newDeployment(w http.ResponseWriter, r *http.Request, s *session) {
	f := newForm(url.Values{"target": {"all"}, "release": {r.URL.Query().Get("release")},
		"phases": {""}, "start_zone": {"UTC"}})
	p.renderNewDeployment(w, r, s, http.StatusOK, f)
}

func (p *portal) renderNewDeployment(w http.ResponseWriter, r *http.Request, s *session,
	status int, f *form) {
	d := newDeploymentData{Form: f, Zones: commonZones, Days: []int{1, 2, 3, 4, 5, 6, 0}}
	for i := range numWindows {
		d.Windows = append(d.Windows, i)
	}
	var rels page[release]
	if err := p.api.call(r.Context(), s, http.MethodGet, "/releases?limit=1000", nil,
		&rels); err != nil {
		p.fail(w, r, s, err)
		return
	}
	slices.SortStableFunc(rels.Items, func(a, b release) int {
		return b.Created.Compare(a.Created)
	})
	d.Releases = rels.Items
	if err := p.api.call(r.Context(), s, http.MethodGet, "/groups", nil, &d.Groups); err != nil {
		p.fail(w, r, s, err)
		return
	}
	p.render(w, r, s, status, "deployment_new", view{Title: "New deployment",
		Section: "deployments", Data: d})
}

// createDeployment creates a deployment from the form, converting its
// human inputs to the API's strategy.
func (p *portal) createDeployment(w http.ResponseWriter, r *http.Request, s *session) {
	f := newForm(r.PostForm)
	req := parseDeployment(f)
	if !f.ok() {
		p.renderNewDeployment(w, r, s, http.StatusUnprocessableEntity, f)
		return
	}
	var dep deployment
	err := p.api.call(r.Context(), s, http.MethodPost, "/deployments", req, &dep)
	if err == nil {
		p.setFlash(w, r, "Deployment created.")
		http.Redirect(w, r, "/deployments/"+url.PathEscape(dep.ID), http.StatusSeeOther)
		return
	}
	status, detail := statusOf(err), detailOf(err)
	switch {
	case status == http.StatusBadRequest && strings.Contains(detail, "window"):
		f.fail("w0_start", detail)
	case status == http.StatusBadRequest && strings.Contains(detail, "phase"):
		f.fail("phases", detail)
	case status == http.StatusBadRequest && strings.Contains(detail, "failureThreshold"):
		f.fail("failure", detail)
	case status == http.StatusUnprocessableEntity && strings.Contains(detail, "release"):
		f.fail("release", detail)
	case status == http.StatusUnprocessableEntity:
		f.fail("target", detail)
	case status == http.StatusBadRequest, status == http.StatusConflict:
		f.Error = detail
	default:
		p.fail(w, r, s, err)
		return
	}
	p.renderNewDeployment(w, r, s, status, f)
}

type deploymentData struct {
	D         deployment
	Overall   progressBar
	Phases    []progressBar
	States    []statusCount
	Devices   []targetDevice
	Pager     *pager
	State     string
	AllStates []string
	Live      bool
	Target    string
	Strategy  []string
}

// deployment shows a deployment and its progress, live while it runs.
func (p *portal) deployment(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !validID(id) {
		p.notFound(w, r)
		return
	}
	var dep deployment
	path := "/deployments/" + url.PathEscape(id)
	if err := p.api.call(r.Context(), s, http.MethodGet, path, nil, &dep); err != nil {
		p.fail(w, r, s, err)
		return
	}
	q := r.URL.Query()
	pg := newPager(path, q, "after")
	api := url.Values{"limit": {strconv.Itoa(pageSize(q))}}
	state := q.Get("state")
	if slices.Contains(targetStates, state) {
		api.Set("state", state)
	} else {
		state = ""
	}
	if c := pg.Cursor(); c != "" {
		api.Set("after", c)
	}
	var devs page[targetDevice]
	if err := p.api.call(r.Context(), s, http.MethodGet, path+"/devices?"+api.Encode(), nil,
		&devs); err != nil {
		p.fail(w, r, s, err)
		return
	}
	pg.Next = devs.Next
	d := deploymentData{D: dep, Devices: devs.Items, Pager: pg, State: state,
		AllStates: targetStates, Live: dep.Status == "active" || dep.Status == "paused",
		Target: describeTarget(dep.Target), Strategy: describeStrategy(dep.Strategy)}
	d.Overall, d.Phases = deploymentBars(dep)
	for _, st := range targetStates {
		if n := dep.Counts.States[st]; n > 0 {
			d.States = append(d.States, statusCount{st, n})
		}
	}
	v := view{Title: cmp.Or(dep.Name, "Deployment "+shortID(dep.ID)), Section: "deployments",
		Data: d}
	if d.Live {
		v.Refresh = liveRefresh
	}
	p.render(w, r, s, http.StatusOK, "deployment", v)
}

// progressJSON is what the live monitor polls.
type progressJSON struct {
	Status  string        `json:"status"`
	Overall progressBar   `json:"overall"`
	Phases  []progressBar `json:"phases"`
	States  []stateJSON   `json:"states"`
}

// stateJSON is the number of devices in a state, with the badge class to
// draw it with.
type stateJSON struct {
	State string `json:"state"`
	Count int    `json:"count"`
	Class string `json:"class"`
}

// progress answers a deployment's progress as JSON for the live
// monitor.
func (p *portal) progress(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !validID(id) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such deployment"})
		return
	}
	var dep deployment
	err := p.api.call(r.Context(), s, http.MethodGet, "/deployments/"+url.PathEscape(id), nil,
		&dep)
	if err != nil {
		status := statusOf(err)
		if status == 0 || status >= 500 {
			p.log.ErrorContext(r.Context(), "read deployment progress", "deployment", id,
				"err", err)
			status = http.StatusBadGateway
		}
		writeJSON(w, status, map[string]string{"error": detailOf(err)})
		return
	}
	out := progressJSON{Status: dep.Status, States: []stateJSON{}}
	out.Overall, out.Phases = deploymentBars(dep)
	for _, st := range targetStates {
		if n := dep.Counts.States[st]; n > 0 {
			out.States = append(out.States, stateJSON{st, n, stateClass(st)})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// deploymentVerbs are the changes of status the portal offers, and
// what they are called once done.
var deploymentVerbs = map[string]string{"pause": "paused", "resume": "resumed",
	"abort": "aborted"}

// setDeploymentStatus pauses, resumes or aborts a deployment; aborting,
// which is final, asks for confirmation first.
func (p *portal) setDeploymentStatus(w http.ResponseWriter, r *http.Request, s *session) {
	id, verb := r.PathValue("id"), r.PathValue("verb")
	done, ok := deploymentVerbs[verb]
	if !ok || !validID(id) {
		p.notFound(w, r)
		return
	}
	back := "/deployments/" + url.PathEscape(id)
	if verb == "abort" && r.PostForm.Get("confirm") != "yes" {
		p.confirm(w, r, s, confirmation{Title: "Abort deployment " + shortID(id),
			Message: "Devices that have not started are skipped for good; devices " +
				"updating now finish. An aborted deployment cannot be resumed.",
			Action: r.URL.Path, Button: "Abort deployment", Back: back, Danger: true})
		return
	}
	err := p.api.call(r.Context(), s, http.MethodPost, back+"/"+verb, nil, nil)
	var ae *apiError
	switch {
	case err == nil:
		p.setFlash(w, r, "Deployment "+done+".")
	case errors.As(err, &ae) && ae.Status == http.StatusConflict:
		p.setFlash(w, r, ae.Detail)
	default:
		p.fail(w, r, s, err)
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// deploymentTitle names a deployment for lists.
func deploymentTitle(d deployment) string {
	if d.Name != "" {
		return d.Name
	}
	return fmt.Sprintf("Deployment %s", shortID(d.ID))
}
