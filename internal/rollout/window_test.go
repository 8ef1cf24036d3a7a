package rollout

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/store"
)

func TestInWindow(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	at := func(y int, m time.Month, d, h, min int) time.Time {
		return time.Date(y, m, d, h, min, 0, 0, ny)
	}
	mondayNight := store.MaintenanceWindow{
		Days:     []time.Weekday{time.Monday},
		Start:    "22:00",
		Duration: 4 * time.Hour,
		TimeZone: "America/New_York",
	}
	daily := store.MaintenanceWindow{Start: "02:30", Duration: time.Hour}
	tests := []struct {
		name    string
		w       store.MaintenanceWindow
		t       time.Time
		want    bool
		wantErr error
	}{
		{"before the opening is outside", mondayNight, at(2026, 1, 5, 21, 59), false, nil},
		{"the opening instant is inside", mondayNight, at(2026, 1, 5, 22, 0), true, nil},
		{"past midnight into Tuesday is inside", mondayNight, at(2026, 1, 6, 1, 59), true, nil},
		{"the closing instant is outside", mondayNight, at(2026, 1, 6, 2, 0), false, nil},
		{"the same hours on Tuesday are outside", mondayNight, at(2026, 1, 6, 22, 30), false,
			nil},
		{"a Monday in summer time is inside", mondayNight, at(2026, 7, 6, 23, 0), true, nil},
		{"the zone is honoured, not UTC", mondayNight,
			time.Date(2026, 1, 6, 3, 30, 0, 0, time.UTC), true, nil},
		{"a window without days opens daily in UTC", daily,
			time.Date(2026, 3, 4, 3, 0, 0, 0, time.UTC), true, nil},
		{"a window without duration never opens",
			store.MaintenanceWindow{Start: "00:00"}, at(2026, 1, 5, 0, 0), false, nil},
		{"a window longer than a day spans days",
			store.MaintenanceWindow{Days: []time.Weekday{time.Saturday}, Start: "00:00",
				Duration: 48 * time.Hour}, time.Date(2026, 1, 4, 23, 0, 0, 0, time.UTC),
			true, nil},
		{"an unknown zone is invalid", store.MaintenanceWindow{Start: "01:00",
			Duration: time.Hour, TimeZone: "Mars/Olympus"}, at(2026, 1, 5, 1, 0), false,
			ErrInvalidWindow},
		{"a bad start is invalid", store.MaintenanceWindow{Start: "1am", Duration: time.Hour},
			at(2026, 1, 5, 1, 0), false, ErrInvalidWindow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := InWindow(tt.w, tt.t)
			if tt.wantErr != nil {
				assert.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestInWindows(t *testing.T) {
	now := time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC)
	noon := store.MaintenanceWindow{Start: "11:00", Duration: 2 * time.Hour}
	night := store.MaintenanceWindow{Start: "23:00", Duration: 2 * time.Hour}
	tests := []struct {
		name    string
		windows []store.MaintenanceWindow
		want    bool
	}{
		{"no windows means always", nil, true},
		{"inside one of several is inside", []store.MaintenanceWindow{night, noon}, true},
		{"outside all is outside", []store.MaintenanceWindow{night}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := InWindows(tt.windows, now)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
