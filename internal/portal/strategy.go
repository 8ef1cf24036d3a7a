package portal

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits of the deployment form, as the API sets them.
const (
	// numWindows is how many maintenance windows the form offers.
	numWindows = 2

	maxPhases         = 100
	maxRetries        = 100
	maxSoak           = 365 * 24 * time.Hour
	maxWindowDuration = 7 * 24 * time.Hour
	maxZone           = 64

	// startLayout is the format of a datetime-local input.
	startLayout = "2006-01-02T15:04"
)

// parseDuration parses a duration as people write it: Go's form, such
// as "90m" or "1h30m", or whole days such as "2d".
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 3650 {
			return 0, fmt.Errorf("parse duration %q: not a number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("parse duration %q: %w", s, err)
	}
	return d, nil
}

// parsePhases parses phase sizes written as "2, 10%, 50%, rest": a
// number of devices, a percentage of them, or "rest" for every device
// left, last. It returns what is wrong, or "".
func parsePhases(s string) ([]phase, string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, ""
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxPhases {
		return nil, fmt.Sprintf("Give at most %d phases.", maxPhases)
	}
	var phases []phase
	sum := 0
	for i, part := range parts {
		part = strings.TrimSpace(part)
		last := i == len(parts)-1
		switch {
		case part == "":
			return nil, "A phase between two commas is empty."
		case strings.EqualFold(part, "rest"):
			if !last {
				return nil, "Only the last phase may be “rest”."
			}
			phases = append(phases, phase{})
		case strings.HasSuffix(part, "%"):
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(part, "%")))
			if err != nil || n < 1 || n > 100 {
				return nil, fmt.Sprintf("%.20q is not a percentage from 1%% to 100%%.", part)
			}
			sum += n
			phases = append(phases, phase{Percent: n})
		default:
			n, err := strconv.Atoi(part)
			if err != nil || n < 1 {
				return nil, fmt.Sprintf("%.20q is not a number of devices or a percentage "+
					"such as 10%%.", part)
			}
			phases = append(phases, phase{Count: n})
		}
	}
	if sum > 100 {
		return nil, fmt.Sprintf("The percentages add up to %d%%, over 100%%.", sum)
	}
	return phases, ""
}

// parseThreshold parses a failure threshold: a number of devices or a
// percentage of a phase; empty means none.
func parseThreshold(s string) (threshold, string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return threshold{}, ""
	}
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(pct))
		if err != nil || n < 0 || n > 100 {
			return threshold{}, "Give a percentage from 0% to 100%."
		}
		return threshold{Percent: n}, ""
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return threshold{}, "Give a number of devices, or a percentage such as 10%."
	}
	return threshold{Count: n}, ""
}

// intField parses the whole number in field name of f, from lo to hi;
// empty means 0.
func intField(f *form, name string, lo, hi int) int {
	s := strings.TrimSpace(f.Get(name))
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		f.fail(name, fmt.Sprintf("Give a whole number from %d to %d.", lo, hi))
		return 0
	}
	return n
}

// zoneField parses the time zone in field name of f; empty means UTC.
func zoneField(f *form, name string) (*time.Location, string) {
	z := strings.TrimSpace(f.Get(name))
	if z == "" || z == "UTC" {
		return time.UTC, ""
	}
	loc, err := time.LoadLocation(z)
	if err != nil || z == "Local" || len(z) > maxZone {
		f.fail(name, "Give a time zone name such as Europe/Berlin, or UTC.")
		return time.UTC, ""
	}
	return loc, z
}

// parseStrategy turns the strategy fields of the deployment form into
// the API's strategy, recording in f what is wrong with them.
func parseStrategy(f *form) strategy {
	var st strategy
	phases, msg := parsePhases(f.Get("phases"))
	if msg != "" {
		f.fail("phases", msg)
	}
	after := intField(f, "after", 1, 100)
	var soak time.Duration
	if s := strings.TrimSpace(f.Get("soak")); s != "" {
		d, err := parseDuration(s)
		if err != nil || d < 0 || d > maxSoak {
			f.fail("soak", "Give a duration such as 30m, 4h or 2d.")
		}
		soak = d
	}
	for i := range phases {
		if i > 0 {
			phases[i].AfterSuccessPercent = after
		}
		if i < len(phases)-1 {
			phases[i].Soak = soak
		}
	}
	if s := strings.TrimSpace(f.Get("start")); s != "" {
		loc, _ := zoneField(f, "start_zone")
		t, err := time.ParseInLocation(startLayout, s, loc)
		if err != nil {
			f.fail("start", "Give a date and time such as 2026-05-04T02:00.")
		}
		if len(phases) == 0 {
			phases = []phase{{}}
		}
		phases[0].StartAt = t.UTC()
	}
	st.Phases = phases
	th, msg := parseThreshold(f.Get("failure"))
	if msg != "" {
		f.fail("failure", msg)
	}
	st.FailureThreshold = th
	st.MaxConcurrent = intField(f, "concurrent", 0, 1_000_000)
	st.Retries = intField(f, "retries", 0, maxRetries)
	for i := range numWindows {
		if w, ok := parseWindow(f, fmt.Sprintf("w%d_", i)); ok {
			st.Windows = append(st.Windows, w)
		}
	}
	return st
}

// parseWindow parses the maintenance window whose fields start with
// prefix; false when it is left empty or wrong.
func parseWindow(f *form, prefix string) (window, bool) {
	start := strings.TrimSpace(f.Get(prefix + "start"))
	dur := strings.TrimSpace(f.Get(prefix + "duration"))
	days := f.Values[prefix+"days"]
	if start == "" && dur == "" && len(days) == 0 {
		return window{}, false
	}
	var w window
	ok := true
	if t, err := time.Parse("15:04", start); err != nil || t.Format("15:04") != start {
		f.fail(prefix+"start", "Give the opening time as hours and minutes, such as 02:00.")
		ok = false
	}
	w.Start = start
	d, err := parseDuration(dur)
	if err != nil || d <= 0 || d > maxWindowDuration {
		f.fail(prefix+"duration", "Give how long it stays open, such as 4h, at most 7d.")
		ok = false
	}
	w.Duration = d
	for _, s := range days {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 6 {
			f.fail(prefix+"days", "Pick days from the list.")
			return window{}, false
		}
		if !slices.Contains(w.Days, n) {
			w.Days = append(w.Days, n)
		}
	}
	slices.Sort(w.Days)
	if len(w.Days) == 7 {
		w.Days = nil
	}
	_, w.TimeZone = zoneField(f, prefix+"zone")
	return w, ok && f.Err(prefix+"zone") == ""
}

// parseTarget turns the target fields of the deployment form into the
// API's target.
func parseTarget(f *form) target {
	switch f.Get("target") {
	case "", "all":
		return target{Filter: &deviceFilter{}}
	case "group":
		g := strings.TrimSpace(f.Get("group"))
		if !validLabel(g) {
			f.fail("group", "Pick a group.")
		}
		return target{Group: g}
	case "filter":
		df := &deviceFilter{Version: strings.TrimSpace(f.Get("filter_version")),
			Tag: strings.TrimSpace(f.Get("filter_tag"))}
		if !validText(df.Version) {
			f.fail("filter_version", fmt.Sprintf("Use at most %d characters of text.", maxText))
		}
		if df.Tag != "" && !validLabel(df.Tag) {
			f.fail("filter_tag", "Not a valid tag: use "+labelHelp+".")
		}
		if a := strings.TrimSpace(f.Get("filter_inv")); a != "" {
			name, value, msg := parseAttr(a)
			if msg != "" {
				f.fail("filter_inv", msg)
			} else {
				df.Inventory = map[string]string{name: value}
			}
		}
		return target{Filter: df}
	}
	f.fail("target", "Pick which devices to update.")
	return target{}
}

// parseDeployment turns the deployment form into the API's request,
// recording in f what is wrong.
func parseDeployment(f *form) deploymentCreate {
	req := deploymentCreate{Name: strings.TrimSpace(f.Get("name")),
		ReleaseID: f.Get("release")}
	if !validText(req.Name) {
		f.fail("name", fmt.Sprintf("Use at most %d characters of text.", maxText))
	}
	if !validID(req.ReleaseID) {
		f.fail("release", "Pick the release to deploy.")
	}
	req.Target = parseTarget(f)
	req.Strategy = parseStrategy(f)
	return req
}

// describeTarget says in words which devices a target takes.
func describeTarget(t target) string {
	if t.Group != "" {
		return "the accepted devices of group " + t.Group
	}
	if t.Filter == nil {
		return "no devices"
	}
	var parts []string
	if t.Filter.Status != "" {
		parts = append(parts, "status "+t.Filter.Status)
	}
	if t.Filter.Version != "" {
		parts = append(parts, "version "+t.Filter.Version)
	}
	if t.Filter.Group != "" {
		parts = append(parts, "group "+t.Filter.Group)
	}
	if t.Filter.Tag != "" {
		parts = append(parts, "tag "+t.Filter.Tag)
	}
	for _, a := range sortedAttrs(t.Filter.Inventory) {
		parts = append(parts, a.Name+"="+a.Value)
	}
	if len(parts) == 0 {
		return "every accepted device"
	}
	return "accepted devices with " + strings.Join(parts, ", ")
}

// describeStrategy says in words how a deployment rolls out.
func describeStrategy(st strategy) []string {
	var out []string
	phases := st.Phases
	if len(phases) == 0 {
		phases = []phase{{}}
	}
	for i, ph := range phases {
		var size string
		switch {
		case ph.Percent > 0:
			size = fmt.Sprintf("%d%% of the devices", ph.Percent)
		case ph.Count > 0:
			size = plural(ph.Count, "device")
		case len(phases) == 1:
			size = "every device"
		default:
			size = "every device left"
		}
		var when string
		switch {
		case !ph.StartAt.IsZero():
			when = "starts at " + formatTime(ph.StartAt)
		case i == 0:
			when = "starts at once"
		default:
			when = fmt.Sprintf("starts when %d%% of phase %d succeeded", cmp.Or(
				ph.AfterSuccessPercent, 100), i)
			if soak := phases[i-1].Soak; soak > 0 {
				when += ", then " + formatDuration(soak) + " later"
			}
		}
		out = append(out, fmt.Sprintf("Phase %d: %s; %s.", i+1, size, when))
	}
	switch th := st.FailureThreshold; {
	case th.Percent > 0:
		out = append(out, fmt.Sprintf("Pauses when over %d%% of a phase failed.", th.Percent))
	case th.Count > 0:
		out = append(out, fmt.Sprintf("Pauses when over %s of a phase failed.",
			plural(th.Count, "device")))
	default:
		out = append(out, "Never pauses by itself on failures.")
	}
	if st.MaxConcurrent > 0 {
		out = append(out, fmt.Sprintf("At most %s update at once.",
			plural(st.MaxConcurrent, "device")))
	}
	if st.Retries > 0 {
		out = append(out, fmt.Sprintf("A failed device is offered the update %s more.",
			plural(st.Retries, "time")))
	}
	if len(st.Windows) == 0 {
		out = append(out, "Devices may start at any time.")
	}
	for _, w := range st.Windows {
		days := "every day"
		if len(w.Days) > 0 {
			var names []string
			for _, d := range w.Days {
				names = append(names, time.Weekday(d).String()[:3])
			}
			days = strings.Join(names, ", ")
		}
		out = append(out, fmt.Sprintf("Window: %s from %s for %s (%s).", days, w.Start,
			formatDuration(w.Duration), cmp.Or(w.TimeZone, "UTC")))
	}
	return out
}
