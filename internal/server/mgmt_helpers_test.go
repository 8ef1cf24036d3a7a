package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/bundlestore"
	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/stretchr/testify/require"
)

// dirStore is a bundlestore.Store keeping each bundle in a directory as
// "<hex digest>.rota", rewritten through bundle.Write so that every blob
// is checked on Put.
type dirStore struct {
	dir string
}

var _ bundlestore.Store = (*dirStore)(nil)

// path returns where d keeps the bundle with digest; digests other than
// "sha256:" and 64 lowercase hex digits are refused, so that none names a
// file outside the directory.
func (d *dirStore) path(digest string) (string, error) {
	hexPart, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexPart) != 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return "", fmt.Errorf("bundle %.80q: %w", digest, bundlestore.ErrInvalidDigest)
	}
	return filepath.Join(d.dir, hexPart+".rota"), nil
}

func (d *dirStore) Put(ctx context.Context, path string) (bundlestore.Entry, error) {
	b, err := bundle.Open(path, bundle.Options{})
	if err != nil {
		return bundlestore.Entry{}, err
	}
	defer b.Close()
	tmp, err := os.CreateTemp(d.dir, ".put-*")
	if err != nil {
		return bundlestore.Entry{}, err
	}
	defer os.Remove(tmp.Name())
	info, err := b.Write(ctx, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return bundlestore.Entry{}, err
	}
	dst, err := d.path(info.Digest)
	if err != nil {
		return bundlestore.Entry{}, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return bundlestore.Entry{}, err
	}
	return bundlestore.Entry{Digest: info.Digest, Size: info.Size, Location: dst}, nil
}

func (d *dirStore) Open(ctx context.Context, digest string) (bundlestore.File, error) {
	p, err := d.path(digest)
	if err != nil {
		return nil, bundlestore.ErrNotFound
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open bundle %s: %w", digest, bundlestore.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &dirFile{File: f, fi: fi}, nil
}

func (d *dirStore) Delete(ctx context.Context, digest string) error {
	p, err := d.path(digest)
	if err != nil {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// files lists the bundles stored.
func (d *dirStore) files(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(d.dir, "*.rota"))
	require.NoError(t, err)
	return m
}

type dirFile struct {
	*os.File
	fi os.FileInfo
}

func (f *dirFile) Size() int64        { return f.fi.Size() }
func (f *dirFile) ModTime() time.Time { return f.fi.ModTime() }

// testKeys are the release signing key the management API trusts and
// another one it does not, made once for all tests.
var testKeys = sync.OnceValue(func() (keys struct {
	trusted, other *bundle.Signer
	keyring        *bundle.Keyring
}) {
	for _, s := range []**bundle.Signer{&keys.trusted, &keys.other} {
		priv, _, err := bundle.GenerateKey(bundle.Ed25519, nil)
		if err != nil {
			panic(err)
		}
		if *s, err = bundle.LoadSigner(priv, nil); err != nil {
			panic(err)
		}
	}
	pub, err := bundle.NewPublicKey(keys.trusted.Public())
	if err != nil {
		panic(err)
	}
	keys.keyring = bundle.NewKeyring(pub)
	return keys
})

// testImageSize is the size of the slot image of test bundles.
const testImageSize = 64 << 10

var (
	bundleCacheMu sync.Mutex
	bundleCache   = map[string][]byte{}
)

// makeBundle returns a .rota file of the given version for "acme-board",
// signed by signer (none if nil); equal arguments give the same bytes.
func makeBundle(t *testing.T, version string, signer *bundle.Signer) []byte {
	t.Helper()
	key := version
	if signer != nil {
		key += "/" + signer.KeyID()
	}
	bundleCacheMu.Lock()
	defer bundleCacheMu.Unlock()
	if raw, ok := bundleCache[key]; ok {
		return raw
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.img")
	// Random bytes do not compress, so that the image's layer is most of
	// the file.
	data := make([]byte, testImageSize)
	seed := sha256.Sum256([]byte(version))
	rand.NewChaCha8(seed).Read(data)
	require.NoError(t, os.WriteFile(img, data, 0o644))
	var signers []*bundle.Signer
	if signer != nil {
		signers = []*bundle.Signer{signer}
	}
	var buf bytes.Buffer
	_, err := bundle.Create(context.Background(), &buf, bundle.Spec{
		Compatible: "acme-board", Version: version, RollbackIndex: 3,
		Description: "release " + version,
		Created:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Images:      []bundle.ImageSource{{Class: "rootfs", Path: img}},
	}, bundle.CreateOptions{Signers: signers, TempDir: dir})
	require.NoError(t, err)
	bundleCache[key] = buf.Bytes()
	return buf.Bytes()
}

// mgmtEnv is a management API on a fresh SQLite store, with a fake
// clock and an API token of each role.
type mgmtEnv struct {
	st      *store.SQLite
	h       http.Handler
	clock   *testutil.Clock
	bundles *dirStore
	tmp     string
	tokens  map[store.Role]bearer
}

// newMgmtEnv returns a management API; opts may change its
// configuration before it is built.
func newMgmtEnv(t *testing.T, opts ...func(*server.ManagementAPIConfig)) *mgmtEnv {
	t.Helper()
	clock := testutil.NewClock(time.Now().UTC().Truncate(time.Second))
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "rota.db"),
		store.WithClock(clock.Now))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	e := &mgmtEnv{st: st, clock: clock, bundles: &dirStore{dir: t.TempDir()},
		tmp: t.TempDir(), tokens: map[store.Role]bearer{}}
	cfg := server.ManagementAPIConfig{Store: st, Bundles: e.bundles,
		Keyring: testKeys().keyring, TempDir: e.tmp, Now: clock.Now}
	for _, o := range opts {
		o(&cfg)
	}
	e.h, err = server.NewManagementAPI(cfg)
	require.NoError(t, err)
	for _, role := range []store.Role{store.RoleViewer, store.RoleOperator, store.RoleAdmin} {
		e.tokens[role] = e.token(t, role, time.Time{})
	}
	return e
}

// token stores an API token of role and returns its secret.
func (e *mgmtEnv) token(t *testing.T, role store.Role, expires time.Time) bearer {
	t.Helper()
	secret := server.TokenPrefix + strings.Repeat(string(role[0]), 8) + newID(t)
	sum := sha256.Sum256([]byte(secret))
	_, err := e.st.CreateToken(context.Background(), store.APIToken{Name: string(role),
		Role: role, Hash: sum[:], Expires: expires})
	require.NoError(t, err)
	return bearer(secret)
}

// tokenID returns the store ID of the token secret.
func (e *mgmtEnv) tokenID(t *testing.T, secret bearer) string {
	t.Helper()
	sum := sha256.Sum256([]byte(secret))
	tok, err := e.st.TokenByHash(context.Background(), sum[:], e.clock.Now())
	require.NoError(t, err)
	return tok.ID
}

var idCounter struct {
	sync.Mutex
	n int
}

// newID returns a string unique within the test binary.
func newID(t *testing.T) string {
	idCounter.Lock()
	defer idCounter.Unlock()
	idCounter.n++
	return fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), idCounter.n)
}

// credentials make a request authenticated.
type credentials interface {
	apply(r *http.Request)
}

// bearer is an API token secret.
type bearer string

func (b bearer) apply(r *http.Request) {
	if b != "" {
		r.Header.Set("Authorization", "Bearer "+string(b))
	}
}

// session is a portal session: its cookie and CSRF token.
type session struct {
	cookie *http.Cookie
	csrf   string
}

func (s session) apply(r *http.Request) {
	r.AddCookie(s.cookie)
	if s.csrf != "" {
		r.Header.Set(server.CSRFHeader, s.csrf)
	}
}

// call sends a request with body (nil for none, a string or []byte sent
// as is, or a value sent as JSON) to the handler, as who; header holds
// name-value pairs that override the defaults.
func (e *mgmtEnv) call(t *testing.T, method, path string, who credentials, body any,
	header ...string) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader = http.NoBody
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		require.NoError(t, err)
		r = bytes.NewReader(data)
	}
	req := httptest.NewRequest(method, server.ManagementAPIPath+path, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if who != nil {
		who.apply(req)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	return w
}

// as calls with the API token of role.
func (e *mgmtEnv) as(t *testing.T, role store.Role, method, path string, body any,
	header ...string) *httptest.ResponseRecorder {
	t.Helper()
	return e.call(t, method, path, e.tokens[role], body, header...)
}

// ok requires an answer of status want and decodes its JSON body into
// a T.
func ok[T any](t *testing.T, w *httptest.ResponseRecorder, want int) T {
	t.Helper()
	require.Equal(t, want, w.Code, w.Body.String())
	var v T
	if want != http.StatusNoContent {
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &v), w.Body.String())
	}
	return v
}

// user stores a user with a password and returns it.
func (e *mgmtEnv) user(t *testing.T, name string, role store.Role) string {
	t.Helper()
	password := "pw-" + name + "-0123456789"
	hash, err := server.HashPassword(password)
	require.NoError(t, err)
	_, err = e.st.CreateUser(context.Background(), store.User{Name: name, Role: role,
		PasswordHash: hash})
	require.NoError(t, err)
	return password
}

// login logs a user in and returns the session.
func (e *mgmtEnv) login(t *testing.T, name, password string) session {
	t.Helper()
	w := e.call(t, "POST", "/login", nil, map[string]string{"name": name,
		"password": password})
	resp := ok[struct{ CSRFToken string }](t, w, http.StatusOK)
	var cookie *http.Cookie
	for _, c := range w.Result().Cookies() {
		if c.Name == server.SessionCookie {
			cookie = c
		}
	}
	require.NotNil(t, cookie, "no session cookie")
	require.NotEmpty(t, resp.CSRFToken)
	return session{cookie: cookie, csrf: resp.CSRFToken}
}

// device stores a device as d says, with a unique key, and returns its
// ID.
func (e *mgmtEnv) device(t *testing.T, d store.Device) string {
	t.Helper()
	d.KeyID = "key-" + newID(t)
	d.PublicKeyPEM = "not a real key"
	d, err := e.st.CreateDevice(context.Background(), d)
	require.NoError(t, err)
	return d.ID
}

// release uploads a signed bundle of version and returns the release ID.
func (e *mgmtEnv) release(t *testing.T, version string) string {
	t.Helper()
	w := e.as(t, store.RoleOperator, "POST", "/releases",
		makeBundle(t, version, testKeys().trusted), "Content-Type", server.BundleMediaType)
	return ok[struct{ ID string }](t, w, http.StatusCreated).ID
}

// audit returns the newest audit entries, newest first.
func (e *mgmtEnv) audit(t *testing.T) []store.AuditEntry {
	t.Helper()
	entries, err := e.st.ListAudit(context.Background(), store.AuditFilter{Limit: 1000})
	require.NoError(t, err)
	return entries
}

// requireProblem requires a problem document of status whose detail
// contains detail.
func requireProblem(t *testing.T, w *httptest.ResponseRecorder, status int, detail string) {
	t.Helper()
	require.Equal(t, status, w.Code, w.Body.String())
	p := problem(t, w)
	require.Equal(t, status, p.Status)
	require.Contains(t, p.Detail, detail)
}
