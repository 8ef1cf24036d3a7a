package portal

import (
	"cmp"
	"net/url"
	"strconv"
	"strings"
)

// Page sizes of the listings.
const (
	// defaultPageSize is the number of rows a listing shows unless the
	// user picks another of pageSizes.
	defaultPageSize = 50

	// maxTrail is the number of earlier pages whose cursors a listing's
	// links keep, for "Previous"; "First" always works.
	maxTrail = 50

	// maxCursor bounds a cursor taken from a link.
	maxCursor = 512

	// firstPage stands for the first page in a trail; no cursor of the
	// API is one character long.
	firstPage = "_"
)

// pageSizes are the page sizes a user may pick.
var pageSizes = []int{25, 50, 100}

// pager carries keyset pagination across a listing's pages. The API
// pages only forward, by the cursor of the next page; the portal's
// links carry the cursors of the pages before too, as "trail", so that
// "Previous" needs no request of its own.
type pager struct {
	path  string
	query url.Values // the listing's other parameters
	param string     // the cursor's parameter: "after", or "before" for the audit log
	cur   string
	trail []string

	// Next is the API's cursor of the next page; empty on the last.
	Next string
}

// newPager reads the pagination parameters of q for the listing at
// path; a malformed trail is dropped, and a malformed cursor left to the
// API to refuse.
func newPager(path string, q url.Values, param string) *pager {
	p := &pager{path: path, param: param, cur: q.Get(param), query: url.Values{}}
	for k, vs := range q {
		if k != param && k != "trail" {
			p.query[k] = vs
		}
	}
	if t := q.Get("trail"); t != "" {
		p.trail = strings.Split(t, ".")
		for _, c := range p.trail {
			if !validCursor(c) {
				p.trail = nil
				break
			}
		}
	}
	if len(p.trail) > maxTrail {
		p.trail = p.trail[len(p.trail)-maxTrail:]
	}
	return p
}

// validCursor accepts what the API's cursors are made of: base64url
// text, or decimal IDs for the audit log.
func validCursor(c string) bool {
	if c == "" || len(c) > maxCursor {
		return false
	}
	for _, b := range []byte(c) {
		if !isAlnum(b) && b != '-' && b != '_' {
			return false
		}
	}
	return true
}

// Cursor returns the cursor of this page; empty for the first.
func (p *pager) Cursor() string { return p.cur }

// First reports whether this is the first page.
func (p *pager) First() bool { return p.cur == "" }

// NextURL returns the link to the next page, or "" on the last.
func (p *pager) NextURL() string {
	if p.Next == "" {
		return ""
	}
	trail := append(append([]string{}, p.trail...), cmp.Or(p.cur, firstPage))
	if len(trail) > maxTrail {
		trail = trail[len(trail)-maxTrail:]
	}
	return p.link(p.Next, trail)
}

// PrevURL returns the link to the previous page, or "" on the first.
func (p *pager) PrevURL() string {
	switch {
	case p.cur == "":
		return ""
	case len(p.trail) == 0:
		return p.link("", nil)
	}
	prev := p.trail[len(p.trail)-1]
	if prev == firstPage {
		prev = ""
	}
	return p.link(prev, p.trail[:len(p.trail)-1])
}

// FirstURL returns the link to the first page.
func (p *pager) FirstURL() string { return p.link("", nil) }

// Number returns the page's number, counted from 1 over the trail.
func (p *pager) Number() int {
	if p.cur == "" {
		return 1
	}
	return len(p.trail) + 1
}

func (p *pager) link(cursor string, trail []string) string {
	q := url.Values{}
	for k, vs := range p.query {
		q[k] = vs
	}
	if cursor != "" {
		q.Set(p.param, cursor)
		if len(trail) > 0 {
			q.Set("trail", strings.Join(trail, "."))
		}
	}
	if len(q) == 0 {
		return p.path
	}
	return p.path + "?" + q.Encode()
}

// pageSize returns the page size the query asks for, if it is one of
// pageSizes, and defaultPageSize otherwise.
func pageSize(q url.Values) int {
	n, err := strconv.Atoi(q.Get("limit"))
	if err != nil {
		return defaultPageSize
	}
	for _, s := range pageSizes {
		if n == s {
			return n
		}
	}
	return defaultPageSize
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
