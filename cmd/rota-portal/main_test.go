package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/internal/cli"
	"github.com/rotaupdate/rota/internal/testutil"
)

func parseConfig(t *testing.T, args []string, env map[string]string) (*config, error) {
	t.Helper()
	var c config
	fs := flag.NewFlagSet("rota-portal", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.flags(fs)
	if err := cli.ParseFlags(fs, args, func(k string) string { return env[k] }); err != nil {
		return nil, err
	}
	return &c, c.check()
}

func TestConfig(t *testing.T) {
	c, err := parseConfig(t, []string{"--server", "https://rota.example.com"}, nil)
	require.NoError(t, err)
	assert.Equal(t, ":8081", c.listen)
	assert.False(t, c.secureCookies)
	assert.Equal(t, 30*time.Second, c.apiTimeout)

	c, err = parseConfig(t, []string{"--listen", ":9000"}, map[string]string{
		"ROTA_SERVER": "http://127.0.0.1:8080", "ROTA_LISTEN": ":7000",
		"ROTA_SECURE_COOKIES": "true", "ROTA_LOG_FORMAT": "json"})
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:8080", c.server)
	assert.Equal(t, ":9000", c.listen, "a flag wins over its variable")
	assert.True(t, c.secureCookies)
	assert.Equal(t, "json", c.logFormat)
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no server", nil, nil, "--server is required"},
		{"server without scheme", []string{"--server", "rota.example.com"}, nil,
			"is not an http:// or https:// URL"},
		{"server of another scheme", []string{"--server", "ftp://rota.example.com"}, nil,
			"is not an http:// or https:// URL"},
		{"cert without key", []string{"--server", "https://r", "--tls-cert", "c.pem"}, nil,
			"--tls-cert and --tls-key go together"},
		{"bad variable", []string{"--server", "https://r"},
			map[string]string{"ROTA_API_TIMEOUT": "soon"}, `ROTA_API_TIMEOUT="soon"`},
		{"stray argument", []string{"--server", "https://r", "extra"}, nil,
			`unexpected argument "extra"`},
		{"bad log format", []string{"--server", "https://r", "--log-format", "xml"}, nil,
			"want text or json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(t, tc.args, tc.env)
			require.Error(t, err)
			assert.ErrorIs(t, err, cli.ErrUsage)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// adminPassword is the first admin's password in the test server.
const adminPassword = testutil.AdminPassword

// rotaServer builds rota-server once.
var rotaServer = sync.OnceValues(func() (string, error) {
	dir, err := testutil.BuildCommands(nil, "github.com/rotaupdate/rota/cmd/rota-server")
	if err != nil {
		return "", err
	}
	binDir = dir
	return filepath.Join(dir, "rota-server"), nil
})

// binDir holds what rotaServer built, removed by TestMain.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// startServer runs rota-server on a loopback port with extra flags and
// returns its base URL.
func startServer(t *testing.T, extra ...string) string {
	t.Helper()
	bin, err := rotaServer()
	require.NoError(t, err)
	return testutil.StartServer(t, bin, extra...).URL()
}

// waitReady waits until url answers 200.
func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer in 30s", url)
}

// startPortal runs rota-portal against server with extra flags and
// returns its base URL.
func startPortal(t *testing.T, server string, extra ...string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out bytes.Buffer
	args := append([]string{"--server", server, "--listen", addr, "--log-level", "debug"},
		extra...)
	go func() { done <- run(ctx, args, io.Discard, &syncWriter{w: &out}, os.Getenv) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done, "rota-portal stops cleanly")
	})
	base := "http://" + addr
	waitReady(t, base+"/static/portal.css")
	return base
}

// syncWriter serialises writes, for a log read after the run.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn signs in as admin through the portal at base and returns the
// client and the session cookie the portal set.
func signIn(t *testing.T, base string) (*http.Client, *http.Cookie) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := c.Get(base + "/login")
	require.NoError(t, err)
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	m := csrfRE.FindSubmatch(page)
	require.NotNil(t, m)
	resp, err = c.PostForm(base+"/login", url.Values{"csrf": {string(m[1])},
		"name": {"admin"}, "password": {adminPassword}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	for _, ck := range resp.Cookies() {
		if ck.Name == "rota_session" {
			return c, ck
		}
	}
	t.Fatal("no session cookie")
	return nil, nil
}

func TestStandalonePortal(t *testing.T) {
	server := startServer(t, "--no-portal")
	t.Run("rota-server --no-portal serves no portal", func(t *testing.T) {
		resp, err := http.Get(server + "/login")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	})

	for _, tc := range []struct {
		name   string
		flags  []string
		secure bool
	}{{"plain", nil, false}, {"secure cookies", []string{"--secure-cookies"}, true}} {
		t.Run(tc.name, func(t *testing.T) {
			portal := startPortal(t, server, tc.flags...)
			c, session := signIn(t, portal)
			assert.True(t, session.HttpOnly)
			assert.Equal(t, http.SameSiteStrictMode, session.SameSite)
			assert.Equal(t, tc.secure, session.Secure)

			resp, err := c.Get(portal + "/devices")
			require.NoError(t, err)
			page, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Contains(t, string(page), "<h1>Devices</h1>")

			// The cookie is the server's session: it works at its API.
			req, err := http.NewRequest(http.MethodGet, server+"/api/v1/me", nil)
			require.NoError(t, err)
			req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
			resp, err = http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
		})
	}
}

func TestEmbeddedPortal(t *testing.T) {
	server := startServer(t)
	resp, err := http.Get(server + "/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "/login", resp.Request.URL.Path, "the portal at / sends to sign in")
	c, _ := signIn(t, server)
	resp, err = c.Get(server + "/")
	require.NoError(t, err)
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(page), "<h1>Dashboard</h1>")
}
