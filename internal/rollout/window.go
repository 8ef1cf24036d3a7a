package rollout

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rotaupdate/rota/internal/store"
)

// ErrInvalidWindow is returned when a maintenance window has an unknown
// time zone or a start that is not a "15:04" time of day.
var ErrInvalidWindow = errors.New("rollout: invalid maintenance window")

// InWindows reports whether t falls inside any of the windows; no
// windows means always. An invalid window returns ErrInvalidWindow.
func InWindows(windows []store.MaintenanceWindow, t time.Time) (bool, error) {
	if len(windows) == 0 {
		return true, nil
	}
	for _, w := range windows {
		in, err := InWindow(w, t)
		if in || err != nil {
			return in, err
		}
	}
	return false, nil
}

// InWindow reports whether t falls inside the weekly window w. The
// window opens at w.Start, wall-clock time in w.TimeZone (UTC if empty),
// on each of w.Days (every day if nil), and stays open for w.Duration,
// which may run past midnight into the next days; the opening instant
// is inside, the closing one is not. A window with no duration is never
// open. On days when the clock changes, wall-clock times that do not
// exist or repeat are resolved as [time.Date] does.
func InWindow(w store.MaintenanceWindow, t time.Time) (bool, error) {
	loc, err := time.LoadLocation(w.TimeZone)
	if err != nil {
		return false, fmt.Errorf("%w: time zone %q: %w", ErrInvalidWindow, w.TimeZone, err)
	}
	start, err := time.Parse("15:04", w.Start)
	if err != nil {
		return false, fmt.Errorf("%w: start %q: %w", ErrInvalidWindow, w.Start, err)
	}
	if w.Duration <= 0 {
		return false, nil
	}
	local := t.In(loc)
	// A window that opened on one of the last few days may still be open.
	back := int(w.Duration / (24 * time.Hour))
	for k := 0; k <= back+1; k++ {
		open := time.Date(local.Year(), local.Month(), local.Day()-k,
			start.Hour(), start.Minute(), 0, 0, loc)
		if len(w.Days) > 0 && !slices.Contains(w.Days, open.Weekday()) {
			continue
		}
		if !t.Before(open) && t.Before(open.Add(w.Duration)) {
			return true, nil
		}
	}
	return false, nil
}
