package portal

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits the API sets on names and filters.
const (
	maxLabel            = 64
	maxLabels           = 64
	maxIDLength         = 128
	maxText             = 256
	maxAttrName         = 64
	maxAttrValue        = 1024
	maxInventoryFilters = 8
)

// validID accepts 1 to maxIDLength bytes of [A-Za-z0-9._:-], the IDs of
// the API.
func validID(id string) bool {
	if id == "" || len(id) > maxIDLength {
		return false
	}
	for _, c := range []byte(id) {
		if !isAlnum(c) && !strings.ContainsRune("._:-", rune(c)) {
			return false
		}
	}
	return true
}

// validLabel accepts tag, group and user names: 1 to maxLabel bytes of
// [A-Za-z0-9._@-], starting with a letter or digit.
func validLabel(s string) bool {
	if s == "" || len(s) > maxLabel || !isAlnum(s[0]) {
		return false
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && !strings.ContainsRune("._@-", rune(c)) {
			return false
		}
	}
	return true
}

// validAttrName accepts identity and inventory attribute names.
func validAttrName(s string) bool {
	if s == "" || len(s) > maxAttrName {
		return false
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && !strings.ContainsRune("._:/-", rune(c)) {
			return false
		}
	}
	return true
}

// validText accepts short free text: at most maxText bytes of UTF-8
// without control characters.
func validText(s string) bool {
	if len(s) > maxText || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

const labelHelp = "letters, digits and . _ @ -, starting with a letter or digit"

// splitLabels splits a list of tags or groups typed with spaces or
// commas between them, sorted and without repeats.
func splitLabels(s string) []string {
	labels := strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' ||
			r == '\t' || r == '\n' || r == '\r'
	})
	slices.Sort(labels)
	return slices.Compact(labels)
}

// checkLabels returns what is wrong with a list of labels, or "".
func checkLabels(labels []string) string {
	if len(labels) > maxLabels {
		return fmt.Sprintf("Give at most %d names.", maxLabels)
	}
	for _, l := range labels {
		if !validLabel(l) {
			return fmt.Sprintf("%.40q is not a valid name: use up to %d %s.", l, maxLabel,
				labelHelp)
		}
	}
	return ""
}

// parseAttr parses an inventory filter "name=value".
func parseAttr(s string) (name, value string, msg string) {
	name, value, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	switch {
	case !ok:
		return "", "", "Write name=value, such as hw=rev2."
	case !validAttrName(name):
		return "", "", fmt.Sprintf("%.40q is not an attribute name: use letters, digits "+
			"and . _ : / -.", name)
	case len(value) > maxAttrValue || !utf8.ValidString(value):
		return "", "", fmt.Sprintf("The value is over %d bytes.", maxAttrValue)
	}
	return name, value, ""
}

// deviceStatuses are the admission states a filter may name.
var deviceStatuses = []string{"pending", "accepted", "rejected", "decommissioned"}

type devicesData struct {
	Form      *form
	Devices   []device
	Total     int
	Pager     *pager
	Groups    []group
	Statuses  []string
	Inventory []string // the inventory filters, and one empty field
	Sizes     []int
	Size      int
	Self      string // this page's URL, to come back to after a change
	Filtered  bool
}

// devices lists the devices a filter matches, a page at a time.
func (p *portal) devices(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	f := newForm(q)
	if id := strings.TrimSpace(q.Get("id")); id != "" {
		if p.findDevice(w, r, s, f, id) {
			return
		}
	}
	api := url.Values{}
	status := q.Get("status")
	switch {
	case status == "":
	case slices.Contains(deviceStatuses, status):
		api.Set("status", status)
	default:
		f.fail("status", "Pick a status from the list.")
	}
	if v := strings.TrimSpace(q.Get("version")); v != "" {
		if !validText(v) {
			f.fail("version", fmt.Sprintf("Use at most %d characters of text.", maxText))
		}
		api.Set("version", v)
	}
	for _, name := range []string{"group", "tag"} {
		if v := strings.TrimSpace(q.Get(name)); v != "" {
			if !validLabel(v) {
				f.fail(name, fmt.Sprintf("Not a valid %s name: use %s.", name, labelHelp))
			}
			api.Set(name, v)
		}
	}
	var inv []string
	for _, a := range q["inv"] {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		inv = append(inv, a)
		name, value, msg := parseAttr(a)
		if msg != "" {
			f.fail("inv", msg)
			continue
		}
		api.Set("inventory."+name, value)
	}
	if len(inv) > maxInventoryFilters {
		f.fail("inv", fmt.Sprintf("Give at most %d inventory filters.", maxInventoryFilters))
	}
	filtered := len(api) > 0
	size := pageSize(q)
	pg := newPager("/devices", q, "after")
	d := devicesData{Form: f, Pager: pg, Statuses: deviceStatuses, Sizes: pageSizes,
		Size: size, Self: r.URL.RequestURI(), Filtered: filtered,
		Inventory: append(inv, "")}
	if err := p.api.call(r.Context(), s, http.MethodGet, "/groups", nil,
		&d.Groups); err != nil {
		p.fail(w, r, s, err)
		return
	}
	if f.ok() {
		api.Set("limit", strconv.Itoa(size))
		if c := pg.Cursor(); c != "" {
			api.Set("after", c)
		}
		var list page[device]
		err := p.api.call(r.Context(), s, http.MethodGet, "/devices?"+api.Encode(), nil, &list)
		switch statusOf(err) {
		case 0:
			if err != nil {
				p.fail(w, r, s, err)
				return
			}
			d.Devices, d.Total, pg.Next = list.Items, list.Total, list.Next
		case http.StatusBadRequest:
			f.Error = detailOf(err)
		default:
			p.fail(w, r, s, err)
			return
		}
	}
	code := http.StatusOK
	if !f.ok() {
		code = http.StatusBadRequest
	}
	p.render(w, r, s, code, "devices", view{Title: "Devices", Section: "devices", Data: d})
}

// findDevice sends the browser to the device with id and returns true,
// or records in f that there is none and returns false.
func (p *portal) findDevice(w http.ResponseWriter, r *http.Request, s *session, f *form,
	id string) bool {
	if !validID(id) {
		f.fail("id", "Device IDs are letters, digits and . _ : -.")
		return false
	}
	err := p.api.call(r.Context(), s, http.MethodGet, "/devices/"+url.PathEscape(id), nil, nil)
	switch statusOf(err) {
	case 0:
		if err != nil {
			p.fail(w, r, s, err)
			return true
		}
		http.Redirect(w, r, "/devices/"+url.PathEscape(id), http.StatusSeeOther)
		return true
	case http.StatusNotFound:
		f.fail("id", "No device has this ID.")
		return false
	}
	p.fail(w, r, s, err)
	return true
}

// admissionVerbs are the changes of admission the portal offers, and
// what they are called once done.
var admissionVerbs = map[string]string{"accept": "accepted", "reject": "rejected",
	"decommission": "decommissioned"}

// admitSelected accepts or rejects the devices selected in the list.
func (p *portal) admitSelected(w http.ResponseWriter, r *http.Request, s *session) {
	back := localPath(r.PostForm.Get("back"))
	verb := r.PostForm.Get("action")
	ids := r.PostForm["id"]
	if verb != "accept" && verb != "reject" {
		p.errorPage(w, r, s, http.StatusBadRequest, "Choose accept or reject.")
		return
	}
	if len(ids) == 0 {
		p.setFlash(w, r, "Select devices first, with the boxes in the first column.")
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	if len(ids) > slices.Max(pageSizes) {
		p.errorPage(w, r, s, http.StatusBadRequest, "Too many devices selected at once.")
		return
	}
	done := 0
	var failed []string
	for _, id := range ids {
		if !validID(id) {
			failed = append(failed, fmt.Sprintf("%.40q is not a device ID", id))
			continue
		}
		err := p.api.call(r.Context(), s, http.MethodPost, "/devices/"+url.PathEscape(id)+
			"/"+verb, nil, nil)
		switch statusOf(err) {
		case 0:
			if err != nil {
				p.fail(w, r, s, err)
				return
			}
			done++
		case http.StatusUnauthorized, http.StatusForbidden:
			p.fail(w, r, s, err)
			return
		default:
			failed = append(failed, detailOf(err))
		}
	}
	msg := fmt.Sprintf("%s %s.", titleCase(admissionVerbs[verb]), plural(done, "device"))
	if len(failed) > 0 {
		msg += fmt.Sprintf(" %d failed: %s", len(failed), strings.Join(failed, "; "))
	}
	p.setFlash(w, r, msg)
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// admitOne changes the admission of one device; decommissioning, which
// is final, asks for confirmation first.
func (p *portal) admitOne(w http.ResponseWriter, r *http.Request, s *session) {
	id, verb := r.PathValue("id"), r.PathValue("verb")
	done, ok := admissionVerbs[verb]
	if !ok || !validID(id) {
		p.notFound(w, r)
		return
	}
	back := localPath(cmp.Or(r.PostForm.Get("back"), "/devices/"+url.PathEscape(id)))
	if verb == "decommission" && r.PostForm.Get("confirm") != "yes" {
		p.confirm(w, r, s, confirmation{Title: "Decommission device " + shortID(id),
			Message: "A decommissioned device can never be accepted again. " +
				"It loses its access at its next request.",
			Action: r.URL.Path, Button: "Decommission device", Back: back, Danger: true})
		return
	}
	err := p.api.call(r.Context(), s, http.MethodPost, "/devices/"+url.PathEscape(id)+"/"+verb,
		nil, nil)
	switch statusOf(err) {
	case 0:
		if err != nil {
			p.fail(w, r, s, err)
			return
		}
		p.setFlash(w, r, fmt.Sprintf("Device %s %s.", shortID(id), done))
	case http.StatusConflict:
		p.setFlash(w, r, detailOf(err))
	default:
		p.fail(w, r, s, err)
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// attr is one attribute of a device, for display.
type attr struct{ Name, Value string }

// sortedAttrs returns m's attributes sorted by name.
func sortedAttrs(m map[string]string) []attr {
	out := make([]attr, 0, len(m))
	for k, v := range m {
		out = append(out, attr{k, v})
	}
	slices.SortFunc(out, func(a, b attr) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// table is a table of values, such as a device's slots.
type table struct {
	Cols []string
	Rows [][]any
}

// slotTable lays out slots, objects of the device API's SlotInfo, as a
// table with the fields every slot has first.
func slotTable(slots []map[string]any) table {
	var t table
	order := []string{"name", "class", "bootname", "state", "booted", "primary", "version",
		"size", "status"}
	seen := map[string]bool{}
	for _, k := range order {
		for _, sl := range slots {
			if _, ok := sl[k]; ok && !seen[k] {
				seen[k] = true
				t.Cols = append(t.Cols, k)
			}
		}
	}
	var extra []string
	for _, sl := range slots {
		for k := range sl {
			if !seen[k] {
				seen[k] = true
				extra = append(extra, k)
			}
		}
	}
	slices.Sort(extra)
	t.Cols = append(t.Cols, extra...)
	for _, sl := range slots {
		row := make([]any, len(t.Cols))
		for i, c := range t.Cols {
			if v, ok := sl[c]; ok {
				row[i] = v
			} else {
				row[i] = ""
			}
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

type deviceData struct {
	D         device
	Identity  []attr
	Inventory []attr
	Slots     table
	Labels    *form
	Back      string
}

// device shows a device: identity, slots, inventory, labels and its
// update history with logs.
func (p *portal) device(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !validID(id) {
		p.notFound(w, r)
		return
	}
	p.renderDevice(w, r, s, id, http.StatusOK, nil)
}

func (p *portal) renderDevice(w http.ResponseWriter, r *http.Request, s *session, id string,
	status int, labels *form) {
	var d device
	if err := p.api.call(r.Context(), s, http.MethodGet, "/devices/"+url.PathEscape(id), nil,
		&d); err != nil {
		p.fail(w, r, s, err)
		return
	}
	if labels == nil {
		labels = newForm(url.Values{"tags": {strings.Join(d.Tags, " ")},
			"groups": {strings.Join(d.Groups, " ")}})
	}
	data := deviceData{D: d, Identity: sortedAttrs(d.Identity),
		Inventory: sortedAttrs(d.Inventory), Slots: slotTable(d.Slots), Labels: labels,
		Back: "/devices/" + url.PathEscape(id)}
	p.render(w, r, s, status, "device", view{Title: "Device " + shortID(d.ID),
		Section: "devices", Data: data})
}

// setLabels replaces a device's tags and groups.
func (p *portal) setLabels(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !validID(id) {
		p.notFound(w, r)
		return
	}
	f := newForm(r.PostForm)
	tags, groups := splitLabels(f.Get("tags")), splitLabels(f.Get("groups"))
	if msg := checkLabels(tags); msg != "" {
		f.fail("tags", msg)
	}
	if msg := checkLabels(groups); msg != "" {
		f.fail("groups", msg)
	}
	if !f.ok() {
		p.renderDevice(w, r, s, id, http.StatusUnprocessableEntity, f)
		return
	}
	path := "/devices/" + url.PathEscape(id)
	for _, set := range []struct {
		field  string
		labels []string
	}{{"tags", tags}, {"groups", groups}} {
		err := p.api.call(r.Context(), s, http.MethodPut, path+"/"+set.field,
			map[string][]string{set.field: set.labels}, nil)
		if statusOf(err) == http.StatusBadRequest {
			f.fail(set.field, detailOf(err))
			p.renderDevice(w, r, s, id, http.StatusUnprocessableEntity, f)
			return
		}
		if err != nil {
			p.fail(w, r, s, err)
			return
		}
	}
	p.setFlash(w, r, "Tags and groups saved.")
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// cmpTime returns a, or b when a is zero.
func cmpTime(a, b time.Time) time.Time {
	if !a.IsZero() {
		return a
	}
	return b
}
