package portal_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/testutil"
)

// The browser test's fleet: devices admitted by the enrollment token,
// and devices that wait for an operator.
const (
	enrolledDevices = 4
	pendingDevices  = 2
	enrollmentToken = "portal-e2e-token"
	adminPassword   = testutil.AdminPassword
)

// binDir holds the commands built by commands, removed by TestMain.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// commands builds rota-server and rota-client once for the tests that
// run them.
var commands = sync.OnceValues(func() (string, error) {
	dir, err := testutil.BuildCommands(nil, "github.com/rotaupdate/rota/cmd/rota-server",
		"github.com/rotaupdate/rota/cmd/rota-client")
	binDir = dir
	return dir, err
})

// startServer starts rota-server with the release signing key of the
// tests and returns it with the public key's path.
func startServer(t *testing.T, bin string) (*testutil.Server, string) {
	t.Helper()
	data := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(data, "keys"), 0o700))
	pubPath := filepath.Join(data, "keys", "release.pub")
	require.NoError(t, os.WriteFile(pubPath, signingKey().pubPEM, 0o644))
	s := testutil.StartServer(t, filepath.Join(bin, "rota-server"), "--data", data,
		"--poll-interval", "1s", "--schedule-interval", "200ms",
		"--enrollment-token", enrollmentToken, "--log-level", "debug")
	return s, pubPath
}

// devices returns how many devices of s have status.
func devices(s *testutil.Server, status string) int {
	var page struct{ Total int }
	s.API(http.MethodGet, "/devices?limit=1&status="+status, nil, &page)
	return page.Total
}

// simulate runs rota-client simulate with n devices against s; without
// an enrollment token they wait to be accepted.
func simulate(t *testing.T, bin string, s *testutil.Server, keyring string, n int, prefix,
	token string) {
	t.Helper()
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "simulate.log"))
	require.NoError(t, err)
	args := []string{"simulate", "--server", s.URL(), "--devices", fmt.Sprint(n),
		"--dir", dir, "--keyring", keyring, "--serial-prefix", prefix, "--poll", "1s"}
	if token != "" {
		args = append(args, "--enrollment-token", token)
	}
	cmd := exec.Command(filepath.Join(bin, "rota-client"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logf.Close()
	})
}

// simBundle writes a signed bundle of version for the simulated devices
// and returns its path.
func simBundle(t *testing.T, version string) string {
	t.Helper()
	signer := signingKey().signer
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.img")
	require.NoError(t, os.WriteFile(img,
		bytes.Repeat([]byte("rootfs "+version+"\n"), 64<<10), 0o644))
	path := filepath.Join(dir, "sim-"+version+".rota")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	_, err = bundle.Create(context.Background(), f, bundle.Spec{Compatible: "rota-sim",
		Version: version, Images: []bundle.ImageSource{{Class: "rootfs", Path: img}}},
		bundle.CreateOptions{Signers: []*bundle.Signer{signer}, TempDir: dir})
	require.NoError(t, err)
	return path
}

// newBrowser starts a headless chromium with a fresh profile.
func newBrowser(t *testing.T, chromium string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	require.NoError(t, chromedp.Do(ctx), "start chromium")
	return ctx
}

// shooter saves full-page screenshots as test artifacts.
type shooter struct {
	t   *testing.T
	ctx context.Context
	dir string
}

func (s *shooter) shot(name string) {
	s.t.Helper()
	// The whole document, however long, as a PNG.
	png, err := chromedp.Run(s.ctx, chromedp.Screenshot(chromedp.CSS("html")))
	require.NoError(s.t, err, "screenshot %s", name)
	require.NoError(s.t, os.WriteFile(filepath.Join(s.dir, name+".png"), png, 0o644))
}

// TestBrowser drives the portal of a real rota-server with real
// simulated devices in headless chromium: sign in, accept devices,
// upload a release with a progress bar, create a phased deployment
// through the form and watch it finish live, abort another, and see
// that a viewer gets no controls. It saves a screenshot of each page
// as a test artifact (go test -artifacts).
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server, devices and a browser")
	}
	chromium := testutil.RequireTool(t, "chromium")
	bin, err := commands()
	require.NoError(t, err)
	srv, keyring := startServer(t, bin)
	simulate(t, bin, srv, keyring, enrolledDevices, "sim-", enrollmentToken)
	simulate(t, bin, srv, keyring, pendingDevices, "new-", "")
	require.Equal(t, http.StatusCreated, srv.API(http.MethodPost, "/users",
		map[string]string{"name": "vera", "role": "viewer", "password": adminPassword}, nil))
	testutil.Eventually(t, 60*time.Second, "the devices to register", func() bool {
		return devices(srv, "accepted") == enrolledDevices &&
			devices(srv, "pending") == pendingDevices
	})

	ctx := newBrowser(t, chromium)
	shots := &shooter{t: t, ctx: ctx, dir: t.ArtifactDir()}
	t.Logf("screenshots in %s", shots.dir)
	run := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(ctx, steps...))
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	// until evaluates expr until it is true; pages loading meanwhile
	// make the evaluation fail, which is retried.
	until := func(expr string, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		var last error
		for time.Now().Before(deadline) {
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
			if err == nil && ok {
				return
			}
			last = err
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, expr, last)
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(css(sel)))
		require.NoError(t, err)
		return strings.TrimSpace(s)
	}

	// Sign in: the portal sends the browser to sign in and back.
	run(chromedp.Navigate(srv.URL()+"/devices"), chromedp.WaitVisible(css("#f-name")))
	shots.shot("01-sign-in")
	run(chromedp.SendKeys(css("#f-name"), "admin"),
		chromedp.SendKeys(css("#f-password"), adminPassword),
		chromedp.Click(css("form[action='/login'] button")))
	until(`location.pathname === '/devices' && !!document.querySelector('table.devices')`,
		20*time.Second)

	// Accept the pending devices together.
	run(chromedp.Navigate(srv.URL()+"/devices?status=pending"),
		chromedp.WaitVisible(css("[data-select-all]")))
	shots.shot("02-devices-pending")
	run(chromedp.Click(css("[data-select-all]")),
		chromedp.Click(css(".bulk button[value='accept']")))
	until(`(document.querySelector('.flash')||{}).textContent === 'Accepted 2 devices.'`,
		20*time.Second)
	run(chromedp.Navigate(srv.URL()+"/devices"), chromedp.WaitVisible(css("table.devices")))
	shots.shot("03-devices")
	testutil.Eventually(t, 30*time.Second, "every device accepted", func() bool {
		return devices(srv, "accepted") == enrolledDevices+pendingDevices
	})
	run(chromedp.Click(css("table.devices tbody a.mono")), chromedp.WaitVisible(css("#h-slots")))
	shots.shot("04-device")

	// Upload a release; the progress bar reaches 100 %.
	run(chromedp.Navigate(srv.URL()+"/releases/new"), chromedp.WaitVisible(css("#f-bundle")),
		chromedp.SetUploadFiles(css("#f-bundle"), []string{simBundle(t, "2.0.0")}))
	shots.shot("05-release-new")
	run(chromedp.Click(css("#upload-form button[type=submit]")))
	until(`document.getElementById('upload-bar') !== null &&
		document.getElementById('upload-bar').value === 100`, 30*time.Second)
	until(`location.pathname.startsWith('/releases/') && location.pathname !== '/releases/new'`,
		30*time.Second)
	run(chromedp.WaitVisible(css("#h-images")))
	assert.Equal(t, "Release 2.0.0 uploaded.", text(".flash"))
	shots.shot("06-release")
	releasePath, err := chromedp.Run(ctx, chromedp.Evaluate[string]("location.pathname"))
	require.NoError(t, err)
	releaseID := strings.TrimPrefix(releasePath, "/releases/")

	// A phased deployment through the form, watched live to 100 %.
	run(chromedp.Click(css(`a[href^="/deployments/new"]`)),
		chromedp.WaitVisible(css("#f-phases")),
		chromedp.SendKeys(css("#f-name"), "Wave 1"),
		chromedp.SendKeys(css("#f-phases"), "2, 50%, rest"),
		chromedp.SendKeys(css("#f-failure"), "20%"),
		chromedp.SendKeys(css("#f-concurrent"), "3"))
	shots.shot("07-deployment-new")
	run(chromedp.Click(css("#deployment-form button[type=submit]")))
	until(`!!document.querySelector('[data-monitor]')`, 20*time.Second)
	shots.shot("08-deployment-running")
	until(`(document.querySelector('[data-bar="all"] [data-percent]')||{}).textContent === '100%'`,
		3*time.Minute)
	until(`(document.querySelector('[data-status]')||{}).textContent === 'finished'`,
		30*time.Second)
	shots.shot("09-deployment-finished")
	assert.Contains(t, text(`[data-bar="all"] [data-text]`), "6 of 6 devices finished")
	run(chromedp.Click(css("section[aria-labelledby=h-devs] tbody a.mono")),
		chromedp.WaitVisible(css("#h-history")))
	assert.Contains(t, text("#h-history + .history .history-head"), "success")
	shots.shot("10-device-history")

	// Another deployment, set to start much later, then aborted.
	run(chromedp.Navigate(srv.URL()+"/deployments/new?release="+releaseID),
		chromedp.WaitVisible(css("#f-start")),
		chromedp.SendKeys(css("#f-name"), "Later wave"),
		chromedp.SetValue(css("#f-start"), "2099-01-01T02:00"),
		chromedp.SetValue(css("#f-start_zone"), "UTC"),
		chromedp.Click(css("#deployment-form button[type=submit]")))
	until(`(document.querySelector('[data-status]')||{}).textContent === 'active'`,
		20*time.Second)
	abortPath, err := chromedp.Run(ctx, chromedp.Evaluate[string]("location.pathname"))
	require.NoError(t, err)
	run(chromedp.Navigate(srv.URL()+"/"), chromedp.WaitVisible(css(".live-list")))
	shots.shot("11-dashboard-active")
	run(chromedp.Navigate(srv.URL()+abortPath), chromedp.WaitVisible(css("[data-status]")))
	run(chromedp.Click(css(`form[action$="/abort"] button`)),
		chromedp.WaitReady(css(`input[name=confirm]`)))
	shots.shot("12-abort-confirm")
	run(chromedp.Click(css("form.actions button[type=submit]")))
	until(`(document.querySelector('[data-status]')||{}).textContent === 'aborted'`,
		20*time.Second)
	assert.Equal(t, "Deployment aborted.", text(".flash"))
	shots.shot("13-deployment-aborted")

	// The other pages, once each.
	for _, pg := range []struct{ name, path, ready string }{
		{"14-dashboard", "/", "#h-versions"},
		{"15-deployments", "/deployments", "table"},
		{"16-releases", "/releases", "table"},
		{"17-audit", "/audit", "table"},
		{"18-users", "/users", "#h-new"},
		{"19-account", "/account", "#h-pw"},
	} {
		run(chromedp.Navigate(srv.URL()+pg.path), chromedp.WaitVisible(css(pg.ready)))
		shots.shot(pg.name)
	}
	run(chromedp.Navigate(srv.URL()+"/tokens"), chromedp.WaitVisible(css("#f-name")),
		chromedp.SendKeys(css("#f-name"), "CI pipeline"),
		chromedp.Click(css("form[action='/tokens'] button[type=submit]")),
		chromedp.WaitVisible(css("#token-secret")))
	secret, err := chromedp.Run(ctx, chromedp.Value(css("#token-secret")))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(secret, "rota_"), secret)
	shots.shot("20-token-created")

	// The same pages on a phone.
	run(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	for _, pg := range []struct{ name, path, ready string }{
		{"21-phone-dashboard", "/", "#h-versions"},
		{"22-phone-devices", "/devices", "table.devices"},
		{"23-phone-deployments", "/deployments", "table"},
	} {
		run(chromedp.Navigate(srv.URL()+pg.path), chromedp.WaitVisible(css(pg.ready)))
		shots.shot(pg.name)
	}
	run(chromedp.EmulateViewport(1280, 900))

	// Sign out, and in as a viewer: no control changes anything.
	run(chromedp.Click(css("form[action='/logout'] button")), chromedp.WaitVisible(css("#f-name")),
		chromedp.SendKeys(css("#f-name"), "vera"),
		chromedp.SendKeys(css("#f-password"), adminPassword),
		chromedp.Click(css("form[action='/login'] button")))
	until(`location.pathname === '/' && !!document.querySelector('#h-versions')`,
		20*time.Second)
	for _, path := range []string{"/", "/devices", "/devices?status=accepted", releasePath,
		"/deployments", "/releases"} {
		run(chromedp.Navigate(srv.URL()+path), chromedp.WaitVisible(css("main h1")))
		forms, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
			`Array.from(document.querySelectorAll('form[method=post]')).map(f => f.getAttribute('action'))`))
		require.NoError(t, err)
		assert.Equal(t, []string{"/logout"}, forms, "forms on %s", path)
		buttons, err := chromedp.Run(ctx, chromedp.Evaluate[string](
			`Array.from(document.querySelectorAll('main button')).map(b => b.textContent.trim()).join('|')`))
		require.NoError(t, err)
		for _, b := range []string{"Accept", "Reject", "Upload", "Pause", "Abort", "Delete"} {
			assert.NotContains(t, buttons, b, "buttons on %s", path)
		}
	}
	shots.shot("24-viewer-releases")
	run(chromedp.Navigate(srv.URL()+"/devices"), chromedp.WaitVisible(css("table.devices")))
	shots.shot("25-viewer-devices")
}
