package poll_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
)

func TestClient_Report(t *testing.T) {
	const dep = "dep-1"
	reportsPath := poll.APIPath + "/deployments/" + dep + "/reports"
	longLog := make([]string, 150)
	for i := range longLog {
		longLog[i] = strings.Repeat(string(rune('a'+i%26)), 2000)
	}

	tests := []struct {
		name     string
		reports  []poll.Report
		faults   []polltest.Fault
		wantN    int
		wantHits int
		check    func(t *testing.T, got []poll.Report)
	}{
		{name: "a report is stored with an id and a time",
			reports: []poll.Report{{State: poll.ReportDownloading,
				Progress: &poll.Progress{Done: 10, Total: 100}}},
			wantN: 1, wantHits: 1,
			check: func(t *testing.T, got []poll.Report) {
				assert.Len(t, got[0].ID, 32)
				assert.WithinDuration(t, time.Now(), got[0].Time, time.Minute)
				assert.Equal(t, &poll.Progress{Done: 10, Total: 100}, got[0].Progress)
			}},
		{name: "the same report sent twice counts once",
			reports: []poll.Report{{ID: "r1", State: poll.ReportInstalling},
				{ID: "r1", State: poll.ReportInstalling}},
			wantN: 1, wantHits: 2},
		{name: "one id in two states counts twice",
			reports: []poll.Report{{ID: "r1", State: poll.ReportInstalling},
				{ID: "r1", State: poll.ReportRebooting}},
			wantN: 2, wantHits: 2},
		{name: "a report retried after a 503 counts once",
			reports: []poll.Report{{State: poll.ReportSuccess}},
			faults: []polltest.Fault{{Status: http.StatusServiceUnavailable,
				RetryAfter: "0"}},
			wantN: 1, wantHits: 2},
		{name: "the log is cut to its last lines of bounded length",
			reports: []poll.Report{{State: poll.ReportFailure, Log: longLog,
				Message: strings.Repeat("é", poll.MaxMessageSize)}},
			wantN: 1, wantHits: 1,
			check: func(t *testing.T, got []poll.Report) {
				require.Len(t, got[0].Log, poll.MaxLogLines)
				assert.Equal(t, longLog[149][:poll.MaxLogLineSize], got[0].Log[99])
				assert.Equal(t, longLog[50][:poll.MaxLogLineSize], got[0].Log[0])
				assert.Len(t, got[0].Message, poll.MaxMessageSize)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			srv.Fault(reportsPath, tt.faults...)
			c, _ := admittedClient(t, srv)

			for _, r := range tt.reports {
				require.NoError(t, c.Report(t.Context(), dep, r))
			}

			got := srv.Reports(dep)
			assert.Len(t, got, tt.wantN)
			assert.Equal(t, tt.wantHits, srv.Hits(reportsPath))
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func TestClient_Report_invalid(t *testing.T) {
	tests := []struct {
		name string
		dep  string
		r    poll.Report
	}{
		{name: "an unknown state", dep: "d", r: poll.Report{State: "exploded"}},
		{name: "an id with spaces", dep: "d", r: poll.Report{ID: "a b", State: poll.ReportSuccess}},
		{name: "no deployment", r: poll.Report{State: poll.ReportSuccess}},
		{name: "negative progress", dep: "d",
			r: poll.Report{State: poll.ReportDownloading, Progress: &poll.Progress{Done: -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			c, _ := admittedClient(t, srv)

			err := c.Report(t.Context(), tt.dep, tt.r)

			e := requireErr(t, err, poll.ErrInvalid)
			assert.False(t, e.Temporary())
			assert.Zero(t, srv.Hits(poll.APIPath+"/auth"), "nothing sent")
		})
	}
}

func TestClient_Inventory(t *testing.T) {
	tooMany := map[string]string{}
	for i := range poll.MaxAttributes + 1 {
		tooMany["k"+strings.Repeat("x", i%50)+string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	tests := []struct {
		name    string
		attrs   map[string]string
		wantErr error
	}{
		{name: "attributes are stored", attrs: map[string]string{"os.id": "debian"}},
		{name: "no attributes clear the inventory", attrs: nil},
		{name: "too many attributes are refused", attrs: tooMany, wantErr: poll.ErrInvalid},
		{name: "a long value is refused",
			attrs:   map[string]string{"k": strings.Repeat("v", poll.MaxAttributeValueSize+1)},
			wantErr: poll.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			c, id := admittedClient(t, srv)

			err := c.Inventory(t.Context(), tt.attrs)

			if tt.wantErr != nil {
				requireErr(t, err, tt.wantErr)
				assert.Nil(t, srv.Inventory(id))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.attrs, srv.Inventory(id))
		})
	}
}
