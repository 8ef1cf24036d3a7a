package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// releaseOut is a release as the API shows it.
type releaseOut struct {
	ID, Version, Compatible, Digest, Location string
	Size                                      int64
	SignatureKeyIDs                           []string
	Images                                    []struct {
		Class, SHA256, Filesystem string
		Size                      int64
	}
	BundleAvailable bool
	RollbackIndex   *uint64
	Description     string
	Signatures      []struct {
		KeyID, Digest string
		Trusted       bool
	}
}

func TestManagementAPI_UploadRelease(t *testing.T) {
	e := newMgmtEnv(t)
	raw := makeBundle(t, "1.0.0", testKeys().trusted)
	w := e.as(t, store.RoleOperator, "POST", "/releases", raw,
		"Content-Type", server.BundleMediaType)
	rel := ok[releaseOut](t, w, http.StatusCreated)
	assert.Equal(t, "/api/v1/releases/"+rel.ID, w.Header().Get("Location"))
	assert.Equal(t, "1.0.0", rel.Version)
	assert.Equal(t, "acme-board", rel.Compatible)
	assert.Equal(t, int64(len(raw)), rel.Size)
	assert.Equal(t, []string{testKeys().trusted.KeyID()}, rel.SignatureKeyIDs)
	require.Len(t, rel.Images, 1)
	assert.Equal(t, "rootfs", rel.Images[0].Class)
	assert.Equal(t, int64(testImageSize), rel.Images[0].Size)
	assert.Len(t, rel.Images[0].SHA256, 64)

	stored, err := e.st.Release(context.Background(), rel.ID)
	require.NoError(t, err)
	assert.Equal(t, rel.Digest, stored.Digest)
	require.Len(t, e.bundles.files(t), 1)
	assert.Equal(t, e.bundles.files(t)[0], stored.Location)
	assertEmptyDir(t, e.tmp)

	detail := ok[releaseOut](t, e.as(t, store.RoleViewer, "GET", "/releases/"+rel.ID, nil),
		http.StatusOK)
	assert.True(t, detail.BundleAvailable)
	require.NotNil(t, detail.RollbackIndex)
	assert.Equal(t, uint64(3), *detail.RollbackIndex)
	assert.Equal(t, "release 1.0.0", detail.Description)
	require.Len(t, detail.Signatures, 1)
	assert.Equal(t, testKeys().trusted.KeyID(), detail.Signatures[0].KeyID)
	assert.True(t, detail.Signatures[0].Trusted)

	list := ok[struct {
		Items []releaseOut
		Next  string
	}](t, e.as(t, store.RoleViewer, "GET", "/releases", nil), http.StatusOK)
	require.Len(t, list.Items, 1)
	assert.Equal(t, rel.ID, list.Items[0].ID)
	assert.Empty(t, list.Next)

	entry := e.audit(t)[0]
	assert.Equal(t, "release.create", entry.Action)
	assert.Equal(t, "release:"+rel.ID, entry.Object)
	assert.Equal(t, "token:"+e.tokenID(t, e.tokens[store.RoleOperator]), entry.Actor)
	var details map[string]any
	require.NoError(t, json.Unmarshal(entry.Details, &details))
	assert.Equal(t, "upload", details["source"])
	assert.Equal(t, rel.Digest, details["digest"])

	t.Run("the same bundle again is refused", func(t *testing.T) {
		w := e.as(t, store.RoleOperator, "POST", "/releases", raw,
			"Content-Type", "application/octet-stream")
		requireProblem(t, w, http.StatusConflict, "already holds bundle")
		var p struct{ ReleaseID string }
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
		assert.Equal(t, rel.ID, p.ReleaseID)
		assert.Len(t, e.bundles.files(t), 1)
		assertEmptyDir(t, e.tmp)
	})
}

func TestManagementAPI_UploadRelease_RefusesBadBundles(t *testing.T) {
	good := makeBundle(t, "1.0.0", testKeys().trusted)
	tests := []struct {
		name        string
		body        []byte
		contentType string
		maxSize     int64
		code        int
		detail      string
	}{
		{"an unsigned bundle", makeBundle(t, "1.0.0", nil), server.BundleMediaType, 0,
			http.StatusUnprocessableEntity, "no signature"},
		{"a bundle signed by an untrusted key", makeBundle(t, "1.0.0", testKeys().other),
			server.BundleMediaType, 0, http.StatusUnprocessableEntity,
			"no signature from a trusted key"},
		{"a bundle cut in its image", good[:len(good)-2048], server.BundleMediaType, 0,
			http.StatusUnprocessableEntity, "truncated"},
		{"a bundle cut in its metadata", good[:700], server.BundleMediaType, 0,
			http.StatusUnprocessableEntity, "not a valid bundle"},
		{"a corrupted image", corrupt(good, len(good)-4096), server.BundleMediaType, 0,
			http.StatusUnprocessableEntity, "digest mismatch"},
		{"garbage", []byte("this is not a bundle at all"), server.BundleMediaType, 0,
			http.StatusUnprocessableEntity, "not a valid bundle"},
		{"an empty body", nil, server.BundleMediaType, 0, http.StatusUnprocessableEntity,
			"not a valid bundle"},
		{"a bundle over the size limit", good, server.BundleMediaType, 4096,
			http.StatusRequestEntityTooLarge, "over 4096 bytes"},
		{"a bundle sent as JSON", good, "application/json", 0,
			http.StatusUnsupportedMediaType, server.BundleMediaType},
		{"a bundle sent with no media type", good, "", 0, http.StatusUnsupportedMediaType,
			server.BundleMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMgmtEnv(t, func(c *server.ManagementAPIConfig) {
				c.MaxUploadSize = tt.maxSize
			})
			w := e.as(t, store.RoleOperator, "POST", "/releases", tt.body,
				"Content-Type", tt.contentType)
			requireProblem(t, w, tt.code, tt.detail)
			rels, _, err := e.st.ListReleases(context.Background(), store.Page{})
			require.NoError(t, err)
			assert.Empty(t, rels)
			assert.Empty(t, e.bundles.files(t))
			assertEmptyDir(t, e.tmp)
			for _, entry := range e.audit(t) {
				assert.NotEqual(t, "release.create", entry.Action)
			}
		})
	}
}

func TestManagementAPI_UploadRelease_WithoutTrustedKeys(t *testing.T) {
	for _, kr := range []*bundle.Keyring{nil, bundle.NewKeyring()} {
		e := newMgmtEnv(t, func(c *server.ManagementAPIConfig) { c.Keyring = kr })
		w := e.as(t, store.RoleOperator, "POST", "/releases",
			makeBundle(t, "1.0.0", testKeys().trusted), "Content-Type", server.BundleMediaType)
		requireProblem(t, w, http.StatusUnprocessableEntity, "trusts no release signing key")
		w = e.as(t, store.RoleOperator, "POST", "/releases/register",
			map[string]string{"reference": "localhost/x:1"})
		requireProblem(t, w, http.StatusUnprocessableEntity, "trusts no release signing key")
		assert.Empty(t, e.bundles.files(t))
		assertEmptyDir(t, e.tmp)
	}
}

// corrupt returns a copy of b with the byte at i changed.
func corrupt(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0xff
	return c
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "files left in %s", dir)
}

func TestManagementAPI_RegisterRelease(t *testing.T) {
	registry := testutil.StartRegistry(t)
	e := newMgmtEnv(t)
	path := filepath.Join(t.TempDir(), "b.rota")
	require.NoError(t, os.WriteFile(path, makeBundle(t, "2.0.0", testKeys().trusted), 0o644))
	ref := registry + "/fleet/acme:2.0.0"
	_, err := bundle.Push(context.Background(), path, ref, bundle.RemoteOptions{})
	require.NoError(t, err)
	untrusted := filepath.Join(t.TempDir(), "u.rota")
	require.NoError(t, os.WriteFile(untrusted, makeBundle(t, "2.0.1", testKeys().other),
		0o644))
	_, err = bundle.Push(context.Background(), untrusted, registry+"/fleet/acme:2.0.1",
		bundle.RemoteOptions{})
	require.NoError(t, err)

	w := e.as(t, store.RoleOperator, "POST", "/releases/register",
		map[string]string{"reference": ref})
	rel := ok[releaseOut](t, w, http.StatusCreated)
	assert.Equal(t, "2.0.0", rel.Version)
	assert.Len(t, e.bundles.files(t), 1)
	assertEmptyDir(t, e.tmp)
	var details map[string]any
	require.NoError(t, json.Unmarshal(e.audit(t)[0].Details, &details))
	assert.Equal(t, "registry", details["source"])
	assert.Equal(t, ref, details["reference"])

	tests := []struct {
		name   string
		body   any
		code   int
		detail string
	}{
		{"the same bundle again", map[string]string{"reference": ref},
			http.StatusConflict, "already holds"},
		{"an untrusted bundle", map[string]string{"reference": registry +
			"/fleet/acme:2.0.1"}, http.StatusUnprocessableEntity, "trusted key"},
		{"an unknown tag", map[string]string{"reference": registry + "/fleet/acme:9.9.9"},
			http.StatusUnprocessableEntity, "pull bundle"},
		{"a malformed reference", map[string]string{"reference": "UPPER/CASE:::"},
			http.StatusBadRequest, "reference"},
		{"an empty reference", map[string]string{"reference": ""}, http.StatusBadRequest,
			"reference"},
		{"a reference with spaces", map[string]string{"reference": "a b"},
			http.StatusBadRequest, "reference"},
		{"an unknown field", map[string]string{"ref": ref}, http.StatusBadRequest,
			"unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.as(t, store.RoleOperator, "POST", "/releases/register", tt.body)
			requireProblem(t, w, tt.code, tt.detail)
			assert.Len(t, e.bundles.files(t), 1)
			assertEmptyDir(t, e.tmp)
		})
	}

	t.Run("a bundle over the size limit", func(t *testing.T) {
		small := newMgmtEnv(t, func(c *server.ManagementAPIConfig) { c.MaxUploadSize = 4096 })
		w := small.as(t, store.RoleOperator, "POST", "/releases/register",
			map[string]string{"reference": ref})
		requireProblem(t, w, http.StatusRequestEntityTooLarge, "over 4096 bytes")
		assert.Empty(t, small.bundles.files(t))
		assertEmptyDir(t, small.tmp)
	})
	t.Run("a registry that cannot be reached", func(t *testing.T) {
		w := e.as(t, store.RoleOperator, "POST", "/releases/register",
			map[string]string{"reference": "127.0.0.1:1/fleet/acme:1.0.0"})
		requireProblem(t, w, http.StatusBadGateway, "pull bundle")
	})
}

func TestManagementAPI_DeleteRelease(t *testing.T) {
	e := newMgmtEnv(t)
	used := e.release(t, "1.0.0")
	unused := e.release(t, "1.1.0")
	dev := e.device(t, store.Device{Status: store.StatusAccepted})
	w := e.as(t, store.RoleOperator, "POST", "/deployments", map[string]any{
		"releaseId": used, "target": map[string]any{"filter": map[string]any{}}})
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	_ = dev

	tests := []struct {
		name, id string
		code     int
		detail   string
		bundles  int
	}{
		{"a release a deployment uses is kept", used, http.StatusConflict, "used by a deployment",
			2},
		{"an unused release goes with its bundle", unused, http.StatusNoContent, "", 1},
		{"a release already deleted is not found", unused, http.StatusNotFound, "not found",
			1},
		{"a malformed ID is refused", "a%2Fb", http.StatusBadRequest, "not 1 to 128", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.as(t, store.RoleOperator, "DELETE", "/releases/"+tt.id, nil)
			if tt.detail != "" {
				requireProblem(t, w, tt.code, tt.detail)
			} else {
				require.Equal(t, tt.code, w.Code, w.Body.String())
			}
			assert.Len(t, e.bundles.files(t), tt.bundles)
		})
	}
	entry := e.audit(t)[0]
	assert.Equal(t, "release.delete", entry.Action)
	assert.Equal(t, "release:"+unused, entry.Object)
}

func TestManagementAPI_GetRelease_WithoutItsBundle(t *testing.T) {
	e := newMgmtEnv(t)
	id := e.release(t, "1.0.0")
	for _, f := range e.bundles.files(t) {
		require.NoError(t, os.Remove(f))
	}
	detail := ok[releaseOut](t, e.as(t, store.RoleViewer, "GET", "/releases/"+id, nil),
		http.StatusOK)
	assert.False(t, detail.BundleAvailable)
	assert.Nil(t, detail.RollbackIndex)
	assert.Equal(t, "1.0.0", detail.Version)
	assert.Empty(t, detail.Signatures)
}
