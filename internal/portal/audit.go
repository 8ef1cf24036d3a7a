package portal

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// maxAuditObject is the longest object filter of the audit log.
const maxAuditObject = 256

type auditRow struct {
	E auditEntry

	// Href links the entry's object, when the portal has a page for it.
	Href string
}

type auditData struct {
	Form  *form
	Rows  []auditRow
	Pager *pager
}

// audit lists the audit log, newest first, optionally of one object.
func (p *portal) audit(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	f := newForm(q)
	pg := newPager("/audit", q, "before")
	api := url.Values{"limit": {strconv.Itoa(pageSize(q))}}
	if obj := strings.TrimSpace(q.Get("object")); obj != "" {
		if !validText(obj) {
			f.fail("object", fmt.Sprintf("Use at most %d characters of text.", maxAuditObject))
		}
		api.Set("object", obj)
	}
	if c := pg.Cursor(); c != "" {
		if n, err := strconv.ParseInt(c, 10, 64); err != nil || n <= 0 {
			f.Error = "This page's link is not valid any more; start from the newest entries."
		}
		api.Set("before", c)
	}
	d := auditData{Form: f, Pager: pg}
	if f.ok() {
		var list page[auditEntry]
		err := p.api.call(r.Context(), s, http.MethodGet, "/audit?"+api.Encode(), nil, &list)
		switch statusOf(err) {
		case 0:
			if err != nil {
				p.fail(w, r, s, err)
				return
			}
		case http.StatusBadRequest:
			f.Error = detailOf(err)
		default:
			p.fail(w, r, s, err)
			return
		}
		pg.Next = list.Next
		for _, e := range list.Items {
			d.Rows = append(d.Rows, auditRow{E: e, Href: objectLink(e.Object)})
		}
	}
	status := http.StatusOK
	if !f.ok() {
		status = http.StatusBadRequest
	}
	p.render(w, r, s, status, "audit", view{Title: "Audit log", Section: "audit", Data: d})
}

// objectLink returns the portal's page of an audit log object such as
// "device:42", or "" when it has none.
func objectLink(obj string) string {
	kind, id, ok := strings.Cut(obj, ":")
	if !ok {
		return ""
	}
	switch kind {
	case "device", "release", "deployment":
		if validID(id) {
			return "/" + kind + "s/" + url.PathEscape(id)
		}
	}
	return ""
}
