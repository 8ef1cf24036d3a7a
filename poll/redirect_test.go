package poll_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
)

// storage stands for a registry or a storage service that a server
// redirects downloads to. It records the requests it gets, and cuts its
// answers short as often as cuts says.
type storage struct {
	srv  *httptest.Server
	data []byte

	mu       sync.Mutex
	cuts     int    // answers still to cut short
	cutAfter int64  // body bytes sent before a cut
	status   int    // if set, the answer to every request
	auth     []bool // whether each request carried an Authorization header
	ranges   []string
}

func newStorage(t *testing.T, data []byte) *storage {
	st := &storage{data: data}
	st.srv = httptest.NewServer(http.HandlerFunc(st.serve))
	t.Cleanup(st.srv.Close)
	return st
}

func (st *storage) serve(w http.ResponseWriter, r *http.Request) {
	st.mu.Lock()
	st.auth = append(st.auth, r.Header.Get("Authorization") != "")
	st.ranges = append(st.ranges, r.Header.Get("Range"))
	status, cut := st.status, st.cuts > 0
	if cut {
		st.cuts--
	}
	st.mu.Unlock()
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	w.Header().Set("ETag", `"storage-etag"`)
	if !cut {
		http.ServeContent(w, r, "", time.Time{}, bytesReader(st.data))
		return
	}
	http.ServeContent(&cutWriter{ResponseWriter: w, left: st.cutAfter}, r, "", time.Time{},
		bytesReader(st.data))
	panic(http.ErrAbortHandler)
}

// requests returns the Authorization flags and Range headers seen.
func (st *storage) requests() ([]bool, []string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]bool(nil), st.auth...), append([]string(nil), st.ranges...)
}

// cutWriter passes on left body bytes and drops the rest.
type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.left {
		p = p[:w.left]
	}
	n, err := w.ResponseWriter.Write(p)
	w.left -= int64(n)
	if w.left == 0 {
		w.ResponseWriter.(http.Flusher).Flush()
		return n, io.ErrShortWrite
	}
	return n, err
}

func TestClient_Download_followsRedirects(t *testing.T) {
	data := bundleData(200 << 10)
	size := int64(len(data))
	tests := []struct {
		name      string
		localhost bool  // redirect to "localhost" rather than 127.0.0.1
		offset    int64 // where the download starts
		cuts      int   // storage answers cut short
		wantRange []string
	}{
		{name: "to another port of the same host, without the token",
			wantRange: []string{""}},
		{name: "to another host name, without the token", localhost: true,
			wantRange: []string{""}},
		{name: "from an offset, with the Range header", offset: 150_000,
			wantRange: []string{"bytes=150000-"}},
		{name: "resumed through the server after a cut", cuts: 1,
			wantRange: []string{"", "bytes=64000-"}},
		{name: "from an offset and resumed after a cut", offset: 1000, cuts: 1,
			wantRange: []string{"bytes=1000-", "bytes=65000-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStorage(t, data)
			st.cuts, st.cutAfter = tt.cuts, 64_000
			target := st.srv.URL + "/v2/fleet/blobs/sha256:abc"
			if tt.localhost {
				target = strings.Replace(target, "127.0.0.1", "localhost", 1)
			}
			srv := polltest.NewServer(t)
			srv.Redirect(bundlePath, target, true)
			c, _ := admittedClient(t, srv)

			d, err := c.Download(t.Context(), bundlePath, tt.offset)
			require.NoError(t, err)
			defer d.Close()
			got, err := io.ReadAll(d)
			require.NoError(t, err)

			assert.True(t, string(data[tt.offset:]) == string(got), "content matches")
			assert.Equal(t, size, d.Size())
			assert.Equal(t, 1+tt.cuts, srv.Hits(bundlePath), "each request asks the server")
			auth, ranges := st.requests()
			assert.Equal(t, tt.wantRange, ranges)
			assert.NotContains(t, auth, true, "the storage never sees the token")
		})
	}
}

func TestClient_Download_etagsOfEachPlace(t *testing.T) {
	// The server serves the first bytes itself, then redirects the
	// resumed request: the two places tag the file differently.
	data := bundleData(100 << 10)
	st := newStorage(t, data)
	srv := polltest.NewServer(t)
	srv.AddFile(bundlePath, data, true)
	srv.Fault(bundlePath, polltest.Fault{Cut: true, After: 30_000})
	c, _ := admittedClient(t, srv)

	d, err := c.Download(t.Context(), bundlePath, 0)
	require.NoError(t, err)
	defer d.Close()
	first := make([]byte, 10)
	_, err = io.ReadFull(d, first)
	require.NoError(t, err)
	srv.Redirect(bundlePath, st.srv.URL+"/blob", true)
	rest, err := io.ReadAll(d)
	require.NoError(t, err)

	assert.True(t, string(data) == string(first)+string(rest), "content matches")
	_, ranges := st.requests()
	assert.Equal(t, []string{"bytes=30000-"}, ranges)
}

func TestClient_Download_refusedWhereRedirected(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			st := newStorage(t, bundleData(1000))
			st.status = status
			srv := polltest.NewServer(t)
			srv.Redirect(bundlePath, st.srv.URL+"/blob", true)
			c, _ := admittedClient(t, srv)

			_, err := c.Download(t.Context(), bundlePath, 0)
			e := requireErr(t, err, nil)
			assert.Equal(t, status, e.StatusCode)
			assert.NotErrorIs(t, err, poll.ErrUnauthorized, "the server did not refuse the token")
			assert.NotErrorIs(t, err, poll.ErrRejected, "the server did not reject the device")
			assert.Contains(t, err.Error(), "redirected to "+st.srv.URL+"/blob")
			assert.False(t, e.Temporary())
			assert.Equal(t, 1, srv.Hits(bundlePath), "the token is not renewed for it")
		})
	}
}
