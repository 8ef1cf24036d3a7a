package portal

import (
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// maxReference is the longest registry reference the API takes.
const maxReference = 1024

type releasesData struct {
	Releases []release
	Pager    *pager
}

// releases lists the releases, newest first within a page.
func (p *portal) releases(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	pg := newPager("/releases", q, "after")
	api := url.Values{"limit": {strconv.Itoa(pageSize(q))}}
	if c := pg.Cursor(); c != "" {
		api.Set("after", c)
	}
	var list page[release]
	if err := p.api.call(r.Context(), s, http.MethodGet, "/releases?"+api.Encode(), nil,
		&list); err != nil {
		p.fail(w, r, s, err)
		return
	}
	// The API lists by ID; people look for the newest.
	slices.SortStableFunc(list.Items, func(a, b release) int {
		return b.Created.Compare(a.Created)
	})
	pg.Next = list.Next
	p.render(w, r, s, http.StatusOK, "releases", view{Title: "Releases", Section: "releases",
		Data: releasesData{Releases: list.Items, Pager: pg}})
}

type newReleaseData struct {
	Upload, Register *form
}

// newRelease shows the forms to upload a bundle and to register one
// from a registry.
func (p *portal) newRelease(w http.ResponseWriter, r *http.Request, s *session) {
	p.renderNewRelease(w, r, s, http.StatusOK, newForm(nil), newForm(nil))
}

func (p *portal) renderNewRelease(w http.ResponseWriter, r *http.Request, s *session,
	status int, upload, register *form) {
	p.render(w, r, s, status, "release_new", view{Title: "Add a release",
		Section: "releases", Data: newReleaseData{Upload: upload, Register: register}})
}

// upload streams a .rota file to the API as a new release. The portal's
// script posts the file itself as the body, with the CSRF token in a
// header, and gets JSON back; a browser without script posts a
// multipart form whose CSRF field comes before the file. Neither is
// held in memory or on disk here.
func (p *portal) upload(w http.ResponseWriter, r *http.Request, s *session) {
	body, size, ok := p.uploadBody(w, r, s)
	if !ok {
		return
	}
	rel, err := p.api.upload(r.Context(), s, body, size)
	if err == nil {
		loc := "/releases/" + url.PathEscape(rel.ID)
		p.setFlash(w, r, fmt.Sprintf("Release %s uploaded.", rel.Version))
		if wantsJSON(r) {
			writeJSON(w, http.StatusCreated, map[string]string{"location": loc})
			return
		}
		http.Redirect(w, r, loc, http.StatusSeeOther)
		return
	}
	// Read what is left of a refused upload, so that the browser sees
	// the answer rather than a connection cut mid-send.
	io.CopyN(io.Discard, r.Body, maxUploadDrain)
	status := statusOf(err)
	var ae *apiError
	msg := detailOf(err)
	switch {
	case status == http.StatusUnauthorized:
		p.fail(w, r, s, err)
		return
	case status == http.StatusForbidden:
		msg = "Your role may not add releases: " + msg
	case status == http.StatusConflict && asAPIError(err, &ae) && ae.ReleaseID != "":
		msg = fmt.Sprintf("Release %s already holds this bundle.", ae.ReleaseID)
	case status == 0 || status >= 500:
		p.fail(w, r, s, err)
		return
	}
	if wantsJSON(r) {
		writeJSON(w, status, map[string]string{"error": msg})
		return
	}
	f := newForm(nil)
	f.fail("bundle", msg)
	p.renderNewRelease(w, r, s, status, f, newForm(nil))
}

// uploadBody checks the upload's CSRF token and returns the file's
// content and size, -1 if unknown; or it answers and returns false.
func (p *portal) uploadBody(w http.ResponseWriter, r *http.Request, s *session) (io.Reader,
	int64, bool) {
	refuse := func(status int, msg string) (io.Reader, int64, bool) {
		if status == http.StatusForbidden {
			p.errorPage(w, r, s, status, msg)
			return nil, 0, false
		}
		if wantsJSON(r) {
			writeJSON(w, status, map[string]string{"error": msg})
			return nil, 0, false
		}
		f := newForm(nil)
		f.fail("bundle", msg)
		p.renderNewRelease(w, r, s, status, f, newForm(nil))
		return nil, 0, false
	}
	const badToken = "The form's security token is missing or out of date. " +
		"Reload the page and try again."
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		if !s.validToken(r.Header.Get(csrfHeader)) {
			return refuse(http.StatusForbidden, badToken)
		}
		if r.ContentLength == 0 {
			return refuse(http.StatusUnprocessableEntity, "The file is empty.")
		}
		return r.Body, r.ContentLength, true
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return refuse(http.StatusBadRequest, "The form could not be read.")
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != csrfField {
		return refuse(http.StatusForbidden, badToken)
	}
	tok, err := io.ReadAll(io.LimitReader(part, maxSessionID))
	if err != nil || !s.validToken(string(tok)) {
		return refuse(http.StatusForbidden, badToken)
	}
	part, err = mr.NextPart()
	if err != nil || part.FormName() != "bundle" || part.FileName() == "" {
		return refuse(http.StatusUnprocessableEntity, "Choose a .rota file to upload.")
	}
	return part, -1, true
}

// register creates a release from a bundle in an OCI registry.
func (p *portal) register(w http.ResponseWriter, r *http.Request, s *session) {
	f := newForm(r.PostForm)
	ref := strings.TrimSpace(f.Get("reference"))
	switch {
	case ref == "":
		f.fail("reference", "Enter a registry reference, such as "+
			"registry.example.com/fleet/acme:1.2.3.")
	case len(ref) > maxReference || strings.ContainsAny(ref, " \t\r\n"):
		f.fail("reference", fmt.Sprintf("A reference has no spaces and at most %d "+
			"characters.", maxReference))
	}
	if !f.ok() {
		p.renderNewRelease(w, r, s, http.StatusUnprocessableEntity, newForm(nil), f)
		return
	}
	var rel release
	err := p.api.call(r.Context(), s, http.MethodPost, "/releases/register",
		map[string]string{"reference": ref}, &rel)
	var ae *apiError
	switch status := statusOf(err); {
	case err == nil:
		p.setFlash(w, r, fmt.Sprintf("Release %s registered from %s.", rel.Version, ref))
		http.Redirect(w, r, "/releases/"+url.PathEscape(rel.ID), http.StatusSeeOther)
		return
	case status == http.StatusConflict && asAPIError(err, &ae) && ae.ReleaseID != "":
		f.fail("reference", fmt.Sprintf("Release %s already holds this bundle.", ae.ReleaseID))
	case status == http.StatusBadRequest, status == http.StatusUnprocessableEntity,
		status == http.StatusBadGateway, status == http.StatusRequestEntityTooLarge:
		f.fail("reference", detailOf(err))
	default:
		p.fail(w, r, s, err)
		return
	}
	p.renderNewRelease(w, r, s, statusOf(err), newForm(nil), f)
}

// release shows a release with what its bundle says of itself.
func (p *portal) release(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !validID(id) {
		p.notFound(w, r)
		return
	}
	var rel release
	if err := p.api.call(r.Context(), s, http.MethodGet, "/releases/"+url.PathEscape(id), nil,
		&rel); err != nil {
		p.fail(w, r, s, err)
		return
	}
	p.render(w, r, s, http.StatusOK, "release", view{Title: "Release " + rel.Version,
		Section: "releases", Data: rel})
}

// deleteRelease deletes a release no deployment uses, once confirmed.
func (p *portal) deleteRelease(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !validID(id) {
		p.notFound(w, r)
		return
	}
	back := "/releases/" + url.PathEscape(id)
	if r.PostForm.Get("confirm") != "yes" {
		p.confirm(w, r, s, confirmation{Title: "Delete release " + shortID(id),
			Message: "The release and its bundle are deleted for good.",
			Action:  r.URL.Path, Button: "Delete release", Back: back, Danger: true})
		return
	}
	err := p.api.call(r.Context(), s, http.MethodDelete, "/releases/"+url.PathEscape(id), nil,
		nil)
	switch statusOf(err) {
	case 0:
		if err != nil {
			p.fail(w, r, s, err)
			return
		}
		p.setFlash(w, r, fmt.Sprintf("Release %s deleted.", shortID(id)))
		http.Redirect(w, r, "/releases", http.StatusSeeOther)
	case http.StatusConflict:
		p.setFlash(w, r, detailOf(err))
		http.Redirect(w, r, back, http.StatusSeeOther)
	default:
		p.fail(w, r, s, err)
	}
}
