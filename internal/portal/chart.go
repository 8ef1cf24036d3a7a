package portal

import (
	"fmt"
	"math"
	"strings"
)

// The device states of a deployment, grouped as its progress bars show
// them.
var (
	doneStates    = []string{"success", "already-installed"}
	failedStates  = []string{"failure", "rolled-back"}
	activeStates  = []string{"downloading", "installing", "rebooting", "verifying"}
	skippedStates = []string{"skipped"}

	// targetStates are every state, in the order of a rollout.
	targetStates = []string{"pending", "downloading", "installing", "rebooting", "verifying",
		"success", "already-installed", "failure", "rolled-back", "skipped"}
)

// progressBar is a deployment's progress, overall or of one phase: how
// many of its devices finished, and a stacked bar drawn in SVG.
type progressBar struct {
	// Key names the bar for the live monitor's updates.
	Key string `json:"key"`

	// Label names the bar, such as "Phase 1".
	Label string `json:"label"`

	Total   int `json:"total"`
	Done    int `json:"done"`
	Failed  int `json:"failed"`
	Active  int `json:"active"`
	Skipped int `json:"skipped"`
	Pending int `json:"pending"`

	// Percent is the share of devices in a final state, rounded down,
	// so that 100 means every device finished.
	Percent int `json:"percent"`

	// Segments are the bar's parts, in the order done, failed, active,
	// skipped, on a scale of 0 to 100.
	Segments []segment `json:"segments"`

	// Text says the bar in words but for Percent, for screen readers
	// and the page.
	Text string `json:"text"`
}

// segment is one part of a stacked bar.
type segment struct {
	Class string  `json:"class"`
	X     float64 `json:"x"`
	W     float64 `json:"w"`
}

// newProgressBar returns the bar of total devices in the given states.
func newProgressBar(key, label string, total int, states map[string]int) progressBar {
	sum := func(names []string) int {
		n := 0
		for _, s := range names {
			n += states[s]
		}
		return n
	}
	b := progressBar{Key: key, Label: label, Total: total, Done: sum(doneStates),
		Failed: sum(failedStates), Active: sum(activeStates), Skipped: sum(skippedStates)}
	b.Pending = max(0, total-b.Done-b.Failed-b.Active-b.Skipped)
	finished := b.Done + b.Failed + b.Skipped
	b.Percent = percent(finished, total)
	x := 0.0
	for _, part := range []struct {
		class string
		n     int
	}{{"done", b.Done}, {"failed", b.Failed}, {"active", b.Active}, {"skipped", b.Skipped}} {
		w := 0.0
		if total > 0 {
			w = float64(part.n) * 100 / float64(total)
		}
		w = math.Round(w*100) / 100
		b.Segments = append(b.Segments, segment{Class: part.class, X: x, W: w})
		x += w
	}
	var parts []string
	for _, part := range []struct {
		n    int
		what string
	}{{b.Done, "succeeded"}, {b.Failed, "failed"}, {b.Active, "updating"},
		{b.Skipped, "skipped"}, {b.Pending, "waiting"}} {
		if part.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", part.n, part.what))
		}
	}
	b.Text = fmt.Sprintf("%d of %s finished", finished, plural(total, "device"))
	if len(parts) > 0 {
		b.Text += ": " + strings.Join(parts, ", ")
	}
	return b
}

// deploymentBars returns the overall bar of d and one per phase.
func deploymentBars(d deployment) (progressBar, []progressBar) {
	overall := newProgressBar("all", "All devices", d.Counts.Total, d.Counts.States)
	var phases []progressBar
	for _, ph := range d.Counts.Phases {
		phases = append(phases, newProgressBar(fmt.Sprintf("phase-%d", ph.Phase),
			fmt.Sprintf("Phase %d", ph.Phase+1), ph.Total, ph.States))
	}
	return overall, phases
}

// Geometry of the horizontal bar chart: rows in pixels; columns in
// percent of the chart's width, so that it fits any screen while its
// text keeps its size.
const (
	chartRowH   = 34
	chartBarH   = 22
	chartLabelX = 30 // where labels end
	chartBarX   = 32 // where bars start
	chartBarMax = 56 // the longest bar
	chartLabelN = 16 // characters of a label shown before it is cut
)

// barChart is a horizontal bar chart drawn in SVG, such as the devices
// by version.
type barChart struct {
	Rows   []chartRow
	Height int
}

// chartRow is one bar of a barChart.
type chartRow struct {
	// Label is shown, cut to chartLabelN characters; Full is the whole.
	Label, Full string

	// Href, if set, links the bar.
	Href string

	Count int

	// W is the bar's width and TextX where its count is written, in
	// percent; Y is the top of the bar and TextY the text's baseline,
	// in pixels.
	W, TextX, Y, TextY float64

	// Muted draws the bar in grey, for a remainder such as "other".
	Muted bool
}

// newBarChart lays out rows, given their Label, Href, Count and Muted,
// as a chart.
func newBarChart(rows []chartRow) barChart {
	most := 1
	for _, r := range rows {
		most = max(most, r.Count)
	}
	c := barChart{Height: max(1, len(rows))*chartRowH + 4}
	for i, r := range rows {
		r.Full = r.Label
		if n := []rune(r.Label); len(n) > chartLabelN {
			r.Label = string(n[:chartLabelN-1]) + "…"
		}
		r.W = math.Round(max(0.5, float64(r.Count)*chartBarMax/float64(most))*10) / 10
		r.TextX = chartBarX + r.W + 1
		r.Y = float64(i*chartRowH) + float64(chartRowH-chartBarH)/2
		r.TextY = r.Y + chartBarH/2 + 5
		c.Rows = append(c.Rows, r)
	}
	return c
}

// LabelX is where labels end, in percent, for the template.
func (barChart) LabelX() int { return chartLabelX }

// BarX is where bars start, in percent, for the template.
func (barChart) BarX() int { return chartBarX }

// BarH is the height of a bar in pixels, for the template.
func (barChart) BarH() int { return chartBarH }
