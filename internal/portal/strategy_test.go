package portal

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseDeploymentMakesTheAPIsJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		form url.Values
		want string
	}{
		{"every device at once", url.Values{"release": {"r1"}, "target": {"all"}},
			`{"releaseId":"r1","target":{"filter":{}},"strategy":{}}`},
		{"phases with soak and threshold", url.Values{"release": {"r1"}, "target": {"group"},
			"group": {"lab"}, "name": {"wave"}, "phases": {" 2, 10% ,rest"}, "after": {"90"},
			"soak": {"1h30m"}, "failure": {"5%"}, "concurrent": {"4"}, "retries": {"2"}},
			`{"name":"wave","releaseId":"r1","target":{"group":"lab"},"strategy":{"phases":[` +
				`{"count":2,"soak":5400000000000},` +
				`{"percent":10,"afterSuccessPercent":90,"soak":5400000000000},` +
				`{"afterSuccessPercent":90}],"failureThreshold":{"percent":5},` +
				`"maxConcurrent":4,"retries":2}}`},
		{"a start time in a zone", url.Values{"release": {"r1"}, "target": {"all"},
			"start": {"2030-01-02T03:04"}, "start_zone": {"Europe/Berlin"}},
			`{"releaseId":"r1","target":{"filter":{}},"strategy":{"phases":[` +
				`{"startAt":"2030-01-02T02:04:00Z"}]}}`},
		{"windows", url.Values{"release": {"r1"}, "target": {"filter"},
			"filter_version": {"1.0"}, "filter_tag": {"beta"}, "filter_inv": {"hw=rev2"},
			"failure": {"3"},
			"w0_days": {"6", "0"}, "w0_start": {"22:30"}, "w0_duration": {"2d"},
			"w0_zone": {"America/New_York"},
			"w1_days": {"0", "1", "2", "3", "4", "5", "6"}, "w1_start": {"01:00"},
			"w1_duration": {"45m"}},
			`{"releaseId":"r1","target":{"filter":{"version":"1.0","tag":"beta",` +
				`"inventory":{"hw":"rev2"}}},"strategy":{"failureThreshold":{"count":3},` +
				`"windows":[{"days":[0,6],"start":"22:30","duration":172800000000000,` +
				`"timeZone":"America/New_York"},{"start":"01:00","duration":2700000000000}]}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newForm(tc.form)
			req := parseDeployment(f)
			require.True(t, f.ok(), "errors: %v %s", f.Errors, f.Error)
			got, err := json.Marshal(req)
			require.NoError(t, err)
			assert.JSONEq(t, tc.want, string(got))
		})
	}
}

func TestParsePhases(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []phase
		err  string
	}{
		{"", nil, ""},
		{"5", []phase{{Count: 5}}, ""},
		{"10%,90%", []phase{{Percent: 10}, {Percent: 90}}, ""},
		{"1, REST", []phase{{Count: 1}, {}}, ""},
		{"rest, 1", nil, "Only the last phase"},
		{"1,,2", nil, "empty"},
		{"0", nil, "not a number of devices"},
		{"101%", nil, "not a percentage"},
		{"50%, 51%", nil, "add up to 101%"},
		{"-3", nil, "not a number of devices"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, msg := parsePhases(tc.in)
			if tc.err != "" {
				assert.Contains(t, msg, tc.err)
				return
			}
			assert.Empty(t, msg)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "90m": 90 * time.Minute,
		"2d": 48 * time.Hour, " 1h30m ": 90 * time.Minute} {
		got, err := parseDuration(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "soon", "-1d", "1.5d"} {
		_, err := parseDuration(in)
		assert.Error(t, err, in)
	}
}

func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/devices?status=pending": "/devices?status=pending",
		"/":                       "/",
		"":                        "/",
		"devices":                 "/",
		"//evil.example":          "/",
		"/\\evil.example":         "/",
		"https://evil.example/":   "/",
		"/login?next=/x":          "/",
		"/a\r\nSet-Cookie: x":     "/",
		"/%2F%2Fevil":             "/%2F%2Fevil",
		"javascript:alert(1)":     "/",
	} {
		assert.Equal(t, want, localPath(in), in)
	}
}

func TestPager(t *testing.T) {
	q := url.Values{"status": {"accepted"}}
	p := newPager("/devices", q, "after")
	assert.True(t, p.First())
	assert.Empty(t, p.PrevURL())
	p.Next = "c1"
	assert.Equal(t, "/devices?after=c1&status=accepted&trail=_", p.NextURL())

	q2, _ := url.ParseQuery("after=c2&status=accepted&trail=_.c1")
	p2 := newPager("/devices", q2, "after")
	assert.Equal(t, 3, p2.Number())
	assert.Equal(t, "/devices?after=c1&status=accepted&trail=_", p2.PrevURL())
	assert.Equal(t, "/devices?status=accepted", p2.FirstURL())

	q3, _ := url.ParseQuery("after=c1&trail=_")
	assert.Equal(t, "/devices", newPager("/devices", q3, "after").PrevURL())

	bad, _ := url.ParseQuery("after=c2&trail=<x>")
	assert.Equal(t, "/devices", newPager("/devices", bad, "after").PrevURL(),
		"a malformed trail is dropped")
}

func TestProgressBar(t *testing.T) {
	b := newProgressBar("all", "All devices", 10, map[string]int{"success": 5,
		"failure": 1, "installing": 2, "skipped": 1})
	assert.Equal(t, 70, b.Percent)
	assert.Equal(t, 1, b.Pending)
	require.Len(t, b.Segments, 4)
	assert.InDelta(t, 50, b.Segments[0].W, 0.01)
	assert.InDelta(t, 60, b.Segments[2].X, 0.01)
	assert.Equal(t, "7 of 10 devices finished: 5 succeeded, 1 failed, 2 updating, "+
		"1 skipped, 1 waiting", b.Text)
	assert.Equal(t, 0, newProgressBar("x", "x", 0, nil).Percent)
}
