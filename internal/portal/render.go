package portal

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// assets serves the embedded static files, each at /static/NAME; a URL
// made by path carries the file's hash, so that it may be cached for good.
type assets struct {
	files map[string][]byte
	hash  map[string]string
}

func loadAssets() (*assets, error) {
	a := &assets{files: map[string][]byte{}, hash: map[string]string{}}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		sum := sha256.Sum256(b)
		a.files[name], a.hash[name] = b, hex.EncodeToString(sum[:6])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load static files: %w", err)
	}
	return a, nil
}

// path returns the URL of the static file name.
func (a *assets) path(name string) string {
	return "/static/" + name + "?v=" + a.hash[name]
}

func (a *assets) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/static/")
	b, ok := a.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	etag := `"` + a.hash[name] + `"`
	w.Header().Set("ETag", etag)
	if r.URL.Query().Get("v") == a.hash[name] {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	w.Write(b)
}

// view is what every page's template gets.
type view struct {
	// Title names the page in its heading and the window title.
	Title string

	// Section is the navigation entry to mark as current.
	Section string

	// S is the signed-in user; nil on the sign-in page.
	S *session

	// Flash is a message left by the previous request.
	Flash string

	// Refresh, when above zero, reloads the page after that many
	// seconds in browsers without JavaScript.
	Refresh int

	// Data is the page's own.
	Data any
}

// parsePages parses each page's template with the layout and the
// shared partial templates.
func parsePages(a *assets) (map[string]*template.Template, error) {
	base, err := template.New("").Funcs(templateFuncs(a)).ParseFS(templateFS,
		"templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, fmt.Errorf("parse templates: %w", err)
	}
	files, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("parse templates: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".html")
		if name == "layout" || name == "partials" {
			continue
		}
		t, err := base.Clone()
		if err == nil {
			t, err = t.ParseFS(templateFS, f)
		}
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// render answers with the page name drawn from v.
func (p *portal) render(w http.ResponseWriter, r *http.Request, s *session, status int,
	name string, v view) {
	v.S = s
	if v.Flash == "" {
		v.Flash = p.takeFlash(w, r)
	}
	t, ok := p.pages[name]
	var buf bytes.Buffer
	var err error
	if !ok {
		err = fmt.Errorf("no template %s", name)
	} else {
		err = t.ExecuteTemplate(&buf, "layout", v)
	}
	if err != nil {
		p.log.ErrorContext(r.Context(), "render page", "page", name, "err", err)
		http.Error(w, "The page could not be drawn.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// errorPage answers with a page saying msg.
func (p *portal) errorPage(w http.ResponseWriter, r *http.Request, s *session, status int,
	msg string) {
	if wantsJSON(r) {
		writeJSON(w, status, map[string]string{"error": msg})
		return
	}
	title := http.StatusText(status)
	switch status {
	case http.StatusNotFound:
		title = "Not found"
	case http.StatusForbidden:
		title = "Not allowed"
	case http.StatusBadGateway:
		title = "Server unavailable"
	}
	p.render(w, r, s, status, "error", view{Title: title, Data: msg})
}

// fail answers for an error of the API: signed-out users go to sign in,
// what the API refused is shown with its reason, and failures of the
// server or the network are logged and shown as 502.
func (p *portal) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	status := statusOf(err)
	switch {
	case status == http.StatusUnauthorized:
		p.clearCookie(w, r, SessionCookie, "/")
		p.toLogin(w, r)
	case status == http.StatusForbidden:
		p.errorPage(w, r, s, status, "Your role may not do this: "+detailOf(err))
	case status == http.StatusNotFound:
		p.errorPage(w, r, s, status, "It does not exist (any more): "+detailOf(err))
	case status >= 400 && status < 500:
		p.errorPage(w, r, s, status, detailOf(err))
	default:
		if !errors.Is(err, r.Context().Err()) || r.Context().Err() == nil {
			p.log.ErrorContext(r.Context(), "portal request failed", "method", r.Method,
				"path", r.URL.Path, "err", err)
		}
		p.errorPage(w, r, s, http.StatusBadGateway,
			"The server could not be reached or failed. Try again in a moment.")
	}
}

// templateFuncs are the functions the templates use.
func templateFuncs(a *assets) template.FuncMap {
	return template.FuncMap{
		"asset":    a.path,
		"when":     formatTime,
		"ago":      ago,
		"bytes":    formatBytes,
		"short":    shortID,
		"join":     strings.Join,
		"title":    titleCase,
		"state":    stateClass,
		"json":     compactJSON,
		"value":    formatValue,
		"add":      func(a, b int) int { return a + b },
		"dict":     dict,
		"pct":      percent,
		"plural":   plural,
		"num":      formatInt,
		"dur":      formatDuration,
		"depname":  deploymentTitle,
		"idsum":    identitySummary,
		"shortobj": shortObject,
		"weekday": func(d int) string {
			if d < 0 || d > 6 {
				return "?"
			}
			return time.Weekday(d).String()[:3]
		},
	}
}

// formatTime shows t in UTC to the minute, or "—" for no time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// ago says how long before now t was, roughly.
func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return plural(int(d/time.Minute), "minute") + " ago"
	case d < 48*time.Hour:
		return plural(int(d/time.Hour), "hour") + " ago"
	}
	return plural(int(d/(24*time.Hour)), "day") + " ago"
}

// plural returns n and noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return formatInt(n) + " " + noun + "s"
}

// formatInt writes n with commas between thousands, as in 100,000.
func formatInt(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// formatBytes shows a size in bytes with a binary unit.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatDuration shows a duration without trailing zero units.
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// shortID returns the first 12 characters of an ID.
func shortID(id string) string {
	if len(id) <= 12 {
		return id
	}
	return id[:12]
}

// titleCase capitalises the first letter of s.
func titleCase(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// stateClass returns the badge class of a device, deployment or target
// state.
func stateClass(state string) string {
	switch state {
	case "accepted", "success", "already-installed", "finished", "active":
		return "badge ok"
	case "failure", "rolled-back", "rejected", "aborted":
		return "badge bad"
	case "pending", "paused":
		return "badge warn"
	case "downloading", "installing", "rebooting", "verifying":
		return "badge busy"
	}
	return "badge"
}

// compactJSON shows raw JSON on one line.
func compactJSON(raw json.RawMessage) string {
	var buf bytes.Buffer
	if len(raw) == 0 || json.Compact(&buf, raw) != nil {
		return ""
	}
	return buf.String()
}

// formatValue shows a value decoded from JSON: strings as they are,
// the rest as JSON.
func formatValue(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// dict builds a map from key and value pairs, for passing several
// values to a template.
func dict(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, errors.New("dict: odd number of arguments")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

// percent returns n as a whole percentage of total, rounded down.
func percent(n, total int) int {
	if total <= 0 {
		return 0
	}
	return n * 100 / total
}

// confirmation is a page asking to confirm a change that cannot be
// undone, posting the same form again with confirm=yes.
type confirmation struct {
	Title, Message string

	// Action is where the form posts; Button names its button.
	Action, Button string

	// Back is where "Cancel" leads.
	Back string

	// Danger draws the button as destructive.
	Danger bool
}

// confirm answers with the confirmation page c.
func (p *portal) confirm(w http.ResponseWriter, r *http.Request, s *session, c confirmation) {
	p.render(w, r, s, http.StatusOK, "confirm", view{Title: c.Title, Data: c})
}

// identitySummary picks the identity attribute that best names a device,
// such as its serial number, as "name: value".
func identitySummary(id map[string]string) string {
	for _, k := range []string{"serial", "serial_number", "serialno", "hostname", "mac"} {
		if v, ok := id[k]; ok && v != "" {
			return k + ": " + v
		}
	}
	if attrs := sortedAttrs(id); len(attrs) > 0 {
		return attrs[0].Name + ": " + attrs[0].Value
	}
	return ""
}

// shortObject shortens the ID of an audit log object or actor, such as
// "device:9f86d081884c7d65…", to its first 12 characters.
func shortObject(obj string) string {
	kind, id, ok := strings.Cut(obj, ":")
	if !ok || len(id) <= 16 {
		return obj
	}
	return kind + ":" + id[:12] + "…"
}
