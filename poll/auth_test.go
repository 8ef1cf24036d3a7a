package poll_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/poll/polltest"
)

func TestClient_Authenticate(t *testing.T) {
	tests := []struct {
		name       string
		admission  poll.AuthState
		serverTok  string
		deviceTok  string
		retry      int
		wantState  poll.AuthState
		wantErr    error
		wantRetry  time.Duration
		wantTempor bool
	}{
		{name: "an accepted device gets a token",
			admission: poll.AuthAccepted, wantState: poll.AuthAccepted},
		{name: "a pending device learns when to ask again",
			admission: poll.AuthPending, retry: 30, wantState: poll.AuthPending,
			wantErr: poll.ErrPending, wantRetry: 30 * time.Second, wantTempor: true},
		{name: "a rejected device gets ErrRejected",
			admission: poll.AuthRejected, wantState: poll.AuthRejected,
			wantErr: poll.ErrRejected},
		{name: "an enrollment token admits a new device at once",
			admission: poll.AuthPending, serverTok: "s3cret", deviceTok: "s3cret",
			wantState: poll.AuthAccepted},
		{name: "a wrong enrollment token leaves the device pending",
			admission: poll.AuthPending, serverTok: "s3cret", deviceTok: "guess",
			wantState: poll.AuthPending, wantErr: poll.ErrPending, wantTempor: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			srv.SetDefaultAdmission(tt.admission)
			srv.SetEnrollmentToken(tt.serverTok)
			srv.SetPendingRetry(tt.retry)
			cfg := fastConfig(t, srv)
			cfg.EnrollmentToken = tt.deviceTok
			c, id := newClient(t, cfg)

			st, err := c.Authenticate(t.Context())

			assert.Equal(t, tt.wantState, st.State)
			assert.Equal(t, cfg.Identity, srv.Identity(id), "identity seen by the server")
			if tt.wantErr == nil {
				require.NoError(t, err)
				assert.WithinDuration(t, time.Now().Add(polltest.DefaultTokenLifetime),
					st.ExpiresAt, 5*time.Second)
				return
			}
			e := requireErr(t, err, tt.wantErr)
			assert.Equal(t, tt.wantRetry, e.RetryAfter)
			assert.Equal(t, tt.wantRetry, st.RetryAfter)
			assert.Equal(t, tt.wantTempor, e.Temporary())
		})
	}
}

func TestClient_tokenRenewal(t *testing.T) {
	authPath := poll.APIPath + "/auth"
	checkPath := poll.APIPath + "/check"
	tests := []struct {
		name      string
		lifetime  time.Duration
		prepare   func(*polltest.Server)
		wantAuths int
		wantErr   error
	}{
		{name: "a valid token is reused",
			lifetime: time.Hour, wantAuths: 1},
		{name: "a token within the refresh margin of expiry is renewed before use",
			lifetime: 30 * time.Second, wantAuths: 2},
		{name: "a token the server forgot is renewed once after a 401",
			lifetime: time.Hour, prepare: (*polltest.Server).RevokeTokens, wantAuths: 2},
		{name: "a 401 right after renewal gives ErrUnauthorized",
			lifetime: time.Hour,
			prepare: func(s *polltest.Server) {
				s.Fault(checkPath, polltest.Fault{Status: http.StatusUnauthorized},
					polltest.Fault{Status: http.StatusUnauthorized})
			},
			wantAuths: 2, wantErr: poll.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := polltest.NewServer(t)
			srv.SetTokenLifetime(tt.lifetime)
			c, _ := admittedClient(t, srv)
			_, err := c.Check(t.Context(), checkRequest)
			require.NoError(t, err)
			if tt.prepare != nil {
				tt.prepare(srv)
			}

			_, err = c.Check(t.Context(), checkRequest)

			if tt.wantErr != nil {
				e := requireErr(t, err, tt.wantErr)
				assert.False(t, e.Temporary())
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.wantAuths, srv.Hits(authPath))
		})
	}
}

func TestClient_checkWhilePending(t *testing.T) {
	srv := polltest.NewServer(t)
	srv.SetPendingRetry(60)
	c, _ := newClient(t, fastConfig(t, srv))

	_, err := c.Check(t.Context(), checkRequest)

	e := requireErr(t, err, poll.ErrPending)
	assert.True(t, e.Temporary())
	assert.Equal(t, time.Minute, e.RetryAfter)
	assert.Zero(t, srv.Hits(poll.APIPath+"/check"), "no check without a token")
}

func TestClient_caFile(t *testing.T) {
	srv := polltest.NewTLSServer(t)
	srv.SetDefaultAdmission(poll.AuthAccepted)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE",
		Bytes: srv.Certificate().Raw})
	require.NoError(t, os.WriteFile(caFile, pemData, 0o644))

	tests := []struct {
		name    string
		caFile  string
		wantErr bool
	}{
		{name: "the server's CA is trusted", caFile: caFile},
		{name: "the system roots do not know the test CA", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fastConfig(t, srv)
			cfg.HTTPClient = nil
			cfg.CAFile = tt.caFile
			c, _ := newClient(t, cfg)

			_, err := c.Authenticate(t.Context())

			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			e := requireErr(t, err, nil)
			assert.Zero(t, e.StatusCode)
		})
	}
}

func TestAuthRequest_Verify(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	_, other, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	pubPEM, err := poll.PublicKeyPEM(key.Public().(ed25519.PublicKey))
	require.NoError(t, err)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	payload := func() poll.AuthPayload {
		return poll.AuthPayload{
			Identity:  poll.Identity{Attributes: map[string]string{"serial": "1"}},
			PublicKey: pubPEM,
			Timestamp: now,
			Nonce:     "n-1",
		}
	}
	sign := func(k ed25519.PrivateKey, p poll.AuthPayload) *poll.AuthRequest {
		r, err := poll.SignAuth(k, p)
		require.NoError(t, err)
		return r
	}

	tests := []struct {
		name    string
		req     func() *poll.AuthRequest
		wantErr string
	}{
		{name: "a request signed by the enclosed key verifies",
			req: func() *poll.AuthRequest { return sign(key, payload()) }},
		{name: "a timestamp just within the skew verifies",
			req: func() *poll.AuthRequest {
				p := payload()
				p.Timestamp = now.Add(-poll.MaxClockSkew)
				return sign(key, p)
			}},
		{name: "a request signed by another key fails",
			req:     func() *poll.AuthRequest { return sign(other, payload()) },
			wantErr: "bad signature"},
		{name: "a payload changed after signing fails",
			req: func() *poll.AuthRequest {
				r := sign(key, payload())
				raw, _ := base64.StdEncoding.DecodeString(r.Payload)
				raw = bytes.Replace(raw, []byte(`"1"`), []byte(`"2"`), 1)
				r.Payload = base64.StdEncoding.EncodeToString(raw)
				return r
			},
			wantErr: "bad signature"},
		{name: "an old timestamp fails",
			req: func() *poll.AuthRequest {
				p := payload()
				p.Timestamp = now.Add(-poll.MaxClockSkew - time.Second)
				return sign(key, p)
			},
			wantErr: "timestamp"},
		{name: "a future timestamp fails",
			req: func() *poll.AuthRequest {
				p := payload()
				p.Timestamp = now.Add(time.Hour)
				return sign(key, p)
			},
			wantErr: "timestamp"},
		{name: "an empty nonce fails",
			req: func() *poll.AuthRequest {
				p := payload()
				p.Nonce = ""
				return sign(key, p)
			},
			wantErr: "nonce"},
		{name: "a payload that is not base64 fails",
			req: func() *poll.AuthRequest {
				r := sign(key, payload())
				r.Payload = "%%%"
				return r
			},
			wantErr: "payload"},
		{name: "an oversized payload fails before decoding",
			req: func() *poll.AuthRequest {
				return &poll.AuthRequest{Payload: strings.Repeat("A", 2*poll.MaxAuthPayloadSize)}
			},
			wantErr: "over"},
		{name: "a truncated signature fails",
			req: func() *poll.AuthRequest {
				r := sign(key, payload())
				r.Signature = r.Signature[:20]
				return r
			},
			wantErr: "signature"},
		{name: "an invalid identity attribute fails",
			req: func() *poll.AuthRequest {
				p := payload()
				p.Identity.Attributes["bad key"] = "x"
				return sign(key, p)
			},
			wantErr: "attribute name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, pub, err := tt.req().Verify(now)

			if tt.wantErr != "" {
				require.ErrorIs(t, err, poll.ErrInvalid)
				assert.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, key.Public(), pub)
			assert.Equal(t, "n-1", p.Nonce)
		})
	}
}

func TestServer_refusesReplayedNonce(t *testing.T) {
	srv := polltest.NewServer(t)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	pubPEM, err := poll.PublicKeyPEM(key.Public().(ed25519.PublicKey))
	require.NoError(t, err)
	req, err := poll.SignAuth(key, poll.AuthPayload{PublicKey: pubPEM,
		Timestamp: time.Now(), Nonce: "once"})
	require.NoError(t, err)
	body, err := json.Marshal(req)
	require.NoError(t, err)

	post := func() int {
		r, err := http.NewRequestWithContext(context.Background(), http.MethodPost,
			srv.URL+poll.APIPath+"/auth", bytes.NewReader(body))
		require.NoError(t, err)
		resp, err := srv.Client().Do(r)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusAccepted, post(), "first use")
	assert.Equal(t, http.StatusBadRequest, post(), "replay")
}
