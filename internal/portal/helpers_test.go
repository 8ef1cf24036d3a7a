package portal_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/bundlestore"
	"github.com/rotaupdate/rota/internal/portal"
	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/poll"
)

// password is every test user's password.
const password = "correct horse battery"

// testKey is the release signing key the test APIs and servers trust.
type testKey struct {
	signer  *bundle.Signer
	keyring *bundle.Keyring
	pubPEM  []byte
}

// signingKey returns the test key, made once.
var signingKey = sync.OnceValue(func() testKey {
	priv, pubPEM, err := bundle.GenerateKey(bundle.Ed25519, nil)
	if err != nil {
		panic(err)
	}
	s, err := bundle.LoadSigner(priv, nil)
	if err != nil {
		panic(err)
	}
	pub, err := bundle.NewPublicKey(s.Public())
	if err != nil {
		panic(err)
	}
	return testKey{signer: s, keyring: bundle.NewKeyring(pub), pubPEM: pubPEM}
})

// env is a management API on a SQLite store with the portal in front,
// as rota-server serves them: the API at /api/v1, the portal at /.
type env struct {
	t     testing.TB
	store store.Store
	srv   *httptest.Server
}

// newEnv starts a management API and the portal, with the users admin,
// operator and viewer.
func newEnv(t testing.TB, cfg portal.Config) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "rota.db"))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	bundles, err := bundlestore.OpenLayout(filepath.Join(dir, "bundles"))
	require.NoError(t, err)
	uploads := filepath.Join(dir, "uploads")
	require.NoError(t, os.Mkdir(uploads, 0o700))
	api, err := server.NewManagementAPI(server.ManagementAPIConfig{Store: st,
		Bundles: bundles, Keyring: signingKey().keyring, TempDir: uploads})
	require.NoError(t, err)
	for _, role := range []store.Role{store.RoleAdmin, store.RoleOperator, store.RoleViewer} {
		hash, err := server.HashPassword(password)
		require.NoError(t, err)
		_, err = st.CreateUser(store.WithAudit(ctx, store.AuditEntry{Actor: "system:test",
			Action: "user.create", Object: "user:" + string(role)}),
			store.User{Name: string(role), Role: role, PasswordHash: hash})
		require.NoError(t, err)
	}
	cfg.Transport = portal.InProcessTransport(api)
	p, err := portal.New(cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(server.ManagementAPIPath+"/", api)
	mux.Handle("/", p)
	e := &env{t: t, store: st, srv: httptest.NewServer(mux)}
	t.Cleanup(e.srv.Close)
	return e
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, as a browser seen one request at a time.
type browser struct {
	t    testing.TB
	base string
	c    *http.Client
}

func (e *env) browser() *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(e.t, err)
	return &browser{t: e.t, base: e.srv.URL, c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}}
}

// signIn returns a browser signed in as the user of role.
func (e *env) signIn(role string) *browser {
	b := e.browser()
	page := b.get("/login")
	resp := b.post("/login", url.Values{"csrf": {hiddenCSRF(e.t, page.body)},
		"name": {role}, "password": {password}, "next": {"/"}})
	require.Equal(e.t, http.StatusSeeOther, resp.code, resp.body)
	return b
}

// response is an answer as the tests read it.
type response struct {
	code   int
	header http.Header
	body   string
}

func (b *browser) do(req *http.Request) response {
	b.t.Helper()
	resp, err := b.c.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	return response{code: resp.StatusCode, header: resp.Header, body: string(raw)}
}

func (b *browser) get(path string) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.base+path, nil)
	require.NoError(b.t, err)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.base+path,
		strings.NewReader(form.Encode()))
	require.NoError(b.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// csrf returns the CSRF token of the browser's session, read from a
// page's forms.
func (b *browser) csrf() string {
	b.t.Helper()
	return hiddenCSRF(b.t, b.get("/account").body)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// hiddenCSRF returns the value of the first csrf field of an HTML page.
func hiddenCSRF(t testing.TB, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	require.NotNil(t, m, "no csrf field in page:\n%s", body)
	return m[1]
}

// addDevice creates a device with the given identity and inventory and
// returns its ID.
func (e *env) addDevice(status store.AdmissionStatus, identity,
	inventory map[string]string) string {
	e.t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(e.t, err)
	pemKey, err := poll.PublicKeyPEM(pub)
	require.NoError(e.t, err)
	ctx := store.WithAudit(context.Background(), store.AuditEntry{Actor: "system:test",
		Action: "device.preauthorize", Object: "device:test"})
	d, err := e.store.CreateDevice(ctx, store.Device{KeyID: poll.KeyID(pub),
		PublicKeyPEM: pemKey, Identity: identity, Status: status})
	require.NoError(e.t, err)
	if inventory != nil {
		require.NoError(e.t, e.store.SetInventory(context.Background(), d.ID, inventory))
	}
	return d.ID
}

// bundleFile builds a signed bundle of version and returns its bytes.
func bundleFile(t testing.TB, version string) []byte {
	t.Helper()
	signer := signingKey().signer
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.img")
	require.NoError(t, os.WriteFile(img, bytes.Repeat([]byte("rootfs "+version+"\n"), 4096),
		0o644))
	var buf bytes.Buffer
	_, err := bundle.Create(context.Background(), &buf, bundle.Spec{
		Compatible: "rota-test", Version: version,
		Images: []bundle.ImageSource{{Class: "rootfs", Path: img}},
	}, bundle.CreateOptions{Signers: []*bundle.Signer{signer}, TempDir: dir})
	require.NoError(t, err)
	return buf.Bytes()
}

// uploadRaw posts a bundle as the portal's script does and returns the
// answer.
func (b *browser) uploadRaw(raw []byte, token string) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.base+"/releases/upload",
		bytes.NewReader(raw))
	require.NoError(b.t, err)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-CSRF-Token", token)
	return b.do(req)
}

// release uploads a bundle of version through the portal and returns
// the new release's ID.
func (b *browser) release(version string) string {
	b.t.Helper()
	resp := b.uploadRaw(bundleFile(b.t, version), b.csrf())
	require.Equal(b.t, http.StatusCreated, resp.code, resp.body)
	var out struct{ Location string }
	require.NoError(b.t, json.Unmarshal([]byte(resp.body), &out))
	id, ok := strings.CutPrefix(out.Location, "/releases/")
	require.True(b.t, ok, out.Location)
	return id
}

// mustCompile compiles a regular expression of a test.
func mustCompile(re string) *regexp.Regexp { return regexp.MustCompile(re) }

// uploadMultipart posts a bundle as a browser without script does: a
// multipart form whose csrf field comes first, unless fileFirst.
func (b *browser) uploadMultipart(token, name string, raw []byte, fileFirst bool) response {
	b.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	writeToken := func() { require.NoError(b.t, mw.WriteField("csrf", token)) }
	if !fileFirst {
		writeToken()
	}
	fw, err := mw.CreateFormFile("bundle", name)
	require.NoError(b.t, err)
	_, err = fw.Write(raw)
	require.NoError(b.t, err)
	if fileFirst {
		writeToken()
	}
	require.NoError(b.t, mw.Close())
	req, err := http.NewRequest(http.MethodPost, b.base+"/releases/upload", &body)
	require.NoError(b.t, err)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return b.do(req)
}
