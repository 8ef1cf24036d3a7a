package portal_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/portal"
	"github.com/rotaupdate/rota/internal/store"
)

// chunk is the size of each half of a streamed upload.
const chunk = 1 << 20

// streamAPI is a management API that takes uploads, counting the bytes
// as they arrive.
type streamAPI struct {
	received atomic.Int64
	ctype    atomic.Value
}

func (a *streamAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/api/v1/me":
		fmt.Fprint(w, `{"name":"op","role":"operator","kind":"user","csrfToken":"tok"}`)
	case r.URL.Path == "/api/v1/releases" && r.Method == http.MethodPost:
		if c, err := r.Cookie(portal.SessionCookie); err != nil || c.Value != "s" ||
			r.Header.Get("X-CSRF-Token") != "tok" {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"detail":"no session"}`)
			return
		}
		a.ctype.Store(r.Header.Get("Content-Type"))
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			a.received.Add(int64(n))
			if err == io.EOF {
				break
			}
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"r1","version":"1.0.0"}`)
	default:
		http.NotFound(w, r)
	}
}

// waitFor waits until cond holds, or fails the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestUploadStreamsThrough(t *testing.T) {
	for _, transport := range []string{"in-process", "network"} {
		for _, form := range []string{"raw", "multipart"} {
			t.Run(transport+" "+form, func(t *testing.T) {
				api := &streamAPI{}
				cfg := portal.Config{}
				if transport == "network" {
					srv := httptest.NewServer(api)
					defer srv.Close()
					cfg.Server = srv.URL
				} else {
					cfg.Transport = portal.InProcessTransport(api)
				}
				p, err := portal.New(cfg)
				require.NoError(t, err)
				front := httptest.NewServer(p)
				defer front.Close()

				pr, pw := io.Pipe()
				req, err := http.NewRequest(http.MethodPost, front.URL+"/releases/upload", pr)
				require.NoError(t, err)
				req.AddCookie(&http.Cookie{Name: portal.SessionCookie, Value: "s"})
				var file io.Writer = pw
				var mw *multipart.Writer
				if form == "raw" {
					req.Header.Set("Content-Type", "application/octet-stream")
					req.Header.Set("Accept", "application/json")
					req.Header.Set("X-CSRF-Token", "tok")
				} else {
					mw = multipart.NewWriter(pw)
					req.Header.Set("Content-Type", mw.FormDataContentType())
				}
				answered := make(chan *http.Response, 1)
				go func() {
					client := &http.Client{CheckRedirect: func(*http.Request,
						[]*http.Request) error {
						return http.ErrUseLastResponse
					}}
					resp, err := client.Do(req)
					if err != nil {
						pr.CloseWithError(err)
						close(answered)
						return
					}
					answered <- resp
				}()
				if mw != nil {
					require.NoError(t, mw.WriteField("csrf", "tok"))
					file, err = mw.CreateFormFile("bundle", "big.rota")
					require.NoError(t, err)
				}

				// The API sees the first half before the second is sent:
				// nothing waits for the whole file.
				_, err = file.Write(bytes.Repeat([]byte("a"), chunk))
				require.NoError(t, err)
				waitFor(t, 10*time.Second, "the first half to reach the API", func() bool {
					return api.received.Load() >= chunk/2
				})
				_, err = file.Write(bytes.Repeat([]byte("b"), chunk))
				require.NoError(t, err)
				if mw != nil {
					require.NoError(t, mw.Close())
				}
				require.NoError(t, pw.Close())

				resp := <-answered
				require.NotNil(t, resp)
				defer resp.Body.Close()
				assert.EqualValues(t, 2*chunk, api.received.Load())
				assert.Equal(t, "application/vnd.rota.bundle", api.ctype.Load())
				if form == "raw" {
					require.Equal(t, http.StatusCreated, resp.StatusCode)
					var out map[string]string
					require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
					assert.Equal(t, "/releases/r1", out["location"])
				} else {
					require.Equal(t, http.StatusSeeOther, resp.StatusCode)
					assert.Equal(t, "/releases/r1", resp.Header.Get("Location"))
				}
			})
		}
	}
}

func TestUploadAndRelease(t *testing.T) {
	e := newEnv(t, portal.Config{})
	b := e.signIn("operator")
	token := b.csrf()
	raw := bundleFile(t, "3.1.0")

	resp := b.uploadMultipart(token, "acme-3.1.0.rota", raw, false)
	require.Equal(t, http.StatusSeeOther, resp.code, resp.body)
	path := resp.header.Get("Location")
	require.True(t, strings.HasPrefix(path, "/releases/"), path)
	page := b.get(path)
	require.Equal(t, http.StatusOK, page.code)
	for _, want := range []string{"Release 3.1.0 uploaded.", "Release 3.1.0", "rota-test",
		"Rollback index", "rootfs", "trusted", "Deploy this release"} {
		assert.Contains(t, page.body, want)
	}
	assert.Contains(t, b.get("/releases").body, "3.1.0")

	for _, tc := range []struct {
		name string
		send func() response
		code int
		says string
	}{
		{"the same bundle again", func() response { return b.uploadRaw(raw, token) },
			http.StatusConflict, "already holds this bundle"},
		{"not a bundle", func() response {
			return b.uploadRaw([]byte("not a bundle at all"), token)
		}, http.StatusUnprocessableEntity, "not a valid bundle"},
		{"an empty body", func() response { return b.uploadRaw(nil, token) },
			http.StatusUnprocessableEntity, "The file is empty."},
		{"no file chosen", func() response {
			return b.uploadMultipart(token, "", nil, false)
		}, http.StatusUnprocessableEntity, "Choose a .rota file"},
		{"the token after the file", func() response {
			return b.uploadMultipart(token, "x.rota", raw, true)
		}, http.StatusForbidden, "security token"},
		{"not a bundle, without script", func() response {
			return b.uploadMultipart(token, "x.rota", []byte("junk"), false)
		}, http.StatusUnprocessableEntity, "not a valid bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := tc.send()
			assert.Equal(t, tc.code, resp.code)
			assert.Contains(t, html.UnescapeString(resp.body), tc.says)
		})
	}

	t.Run("delete", func(t *testing.T) {
		resp := b.post(path+"/delete", url.Values{"csrf": {token}})
		require.Equal(t, http.StatusOK, resp.code, "asks first")
		e.addDevice(store.StatusAccepted, nil, nil)
		id := strings.TrimPrefix(path, "/releases/")
		resp = b.post("/deployments", url.Values{"csrf": {token}, "release": {id},
			"target": {"all"}})
		require.Equal(t, http.StatusSeeOther, resp.code, resp.body)
		resp = b.post(path+"/delete", url.Values{"csrf": {token}, "confirm": {"yes"}})
		require.Equal(t, http.StatusSeeOther, resp.code)
		assert.Contains(t, b.get(path).body, "used by a deployment", "kept while in use")

		other := b.release("3.2.0")
		resp = b.post("/releases/"+other+"/delete", url.Values{"csrf": {token},
			"confirm": {"yes"}})
		require.Equal(t, http.StatusSeeOther, resp.code)
		assert.Equal(t, "/releases", resp.header.Get("Location"))
		assert.Equal(t, http.StatusNotFound, b.get("/releases/"+other).code)
	})
}
