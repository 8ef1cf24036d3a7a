package poll

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// nonceSize is the number of random bytes in an auth nonce.
const nonceSize = 16

// AuthStatus is the outcome of an authentication.
type AuthStatus struct {
	// State is the device's admission state.
	State AuthState

	// ExpiresAt is when the token expires; zero unless accepted.
	ExpiresAt time.Time

	// RetryAfter is how long a pending device should wait before asking
	// again; zero means the server did not say.
	RetryAfter time.Duration
}

// SignAuth returns an auth request carrying p signed with key.
func SignAuth(key ed25519.PrivateKey, p AuthPayload) (*AuthRequest, error) {
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("sign auth request: %w", err)
	}
	return &AuthRequest{
		Payload:   base64.StdEncoding.EncodeToString(payload),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, payload)),
	}, nil
}

// Validate checks the request's encoding and size, not its signature.
func (r *AuthRequest) Validate() error {
	_, _, err := r.decode()
	if err != nil {
		return fmt.Errorf("auth request: %w", err)
	}
	return nil
}

func (r *AuthRequest) decode() (payload, sig []byte, err error) {
	if base64.StdEncoding.DecodedLen(len(r.Payload)) > MaxAuthPayloadSize {
		return nil, nil, invalid("payload over %d bytes", MaxAuthPayloadSize)
	}
	payload, err = base64.StdEncoding.DecodeString(r.Payload)
	if err != nil {
		return nil, nil, invalid("payload: %v", err)
	}
	if len(r.Signature) > 2*ed25519.SignatureSize {
		return nil, nil, invalid("signature too long")
	}
	sig, err = base64.StdEncoding.DecodeString(r.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, nil, invalid("signature is not a base64 Ed25519 signature")
	}
	return payload, sig, nil
}

// Verify checks the request as a server does: the encoding, the signature
// by the enclosed public key, the identity attributes, and a timestamp no
// further than MaxClockSkew from now. Refusing a replayed nonce is left to
// the server, which keeps the nonces it saw within that span.
func (r *AuthRequest) Verify(now time.Time) (*AuthPayload, ed25519.PublicKey, error) {
	payload, sig, err := r.decode()
	if err != nil {
		return nil, nil, fmt.Errorf("verify auth request: %w", err)
	}
	var p AuthPayload
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, nil, fmt.Errorf("verify auth request: %w", invalid("payload: %v", err))
	}
	pub, err := ParsePublicKeyPEM(p.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("verify auth request: %w", err)
	}

	switch {
	case !ed25519.Verify(pub, payload, sig):
		err = invalid("bad signature")
	case p.Nonce == "" || len(p.Nonce) > MaxFieldSize:
		err = invalid("nonce is empty or over %d bytes", MaxFieldSize)
	case len(p.EnrollmentToken) > MaxFieldSize:
		err = invalid("enrollment token over %d bytes", MaxFieldSize)
	case p.Timestamp.Before(now.Add(-MaxClockSkew)) || p.Timestamp.After(now.Add(MaxClockSkew)):
		err = invalid("timestamp %s is more than %v from the server's clock %s",
			p.Timestamp.Format(time.RFC3339), MaxClockSkew, now.UTC().Format(time.RFC3339))
	default:
		err = ValidateAttributes(p.Identity.Attributes)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("verify auth request: %w", err)
	}
	return &p, pub, nil
}

// Authenticate asks the server to admit the device and, if it does, keeps
// the token for later requests. Other methods call it when needed, so
// calling it first is optional. A pending device gets its status and an
// *Error wrapping ErrPending whose RetryAfter says when to ask again; a
// rejected one gets an *Error wrapping ErrRejected.
func (c *Client) Authenticate(ctx context.Context) (AuthStatus, error) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	return c.authenticate(ctx)
}

func (c *Client) authenticate(ctx context.Context) (AuthStatus, error) {
	const op = "authenticate"
	u := c.endpoint("/auth")

	// Each attempt signs afresh, with a new nonce and timestamp, so that
	// a retry is never refused as a replay.
	body := func() (io.Reader, error) {
		req, err := c.authRequest()
		if err != nil {
			return nil, err
		}
		data, err := json.Marshal(req)
		return bytes.NewReader(data), err
	}
	rep, err := c.send(ctx, op, http.MethodPost, u, body, nil)
	if err != nil {
		return AuthStatus{}, err
	}

	switch rep.status {
	case http.StatusOK, http.StatusAccepted:
	case http.StatusForbidden:
		return AuthStatus{State: AuthRejected},
			&Error{Op: op, URL: u, StatusCode: rep.status, Err: ErrRejected}
	default:
		return AuthStatus{}, statusError(op, u, rep.status, rep.header, rep.body)
	}

	var ar AuthResponse
	if err := decode(op, u, rep, &ar); err != nil {
		return AuthStatus{}, err
	}
	return c.admit(op, u, rep.status, &ar)
}

// admit records the token of an accepted device, or turns a pending or
// rejected state into the matching error.
func (c *Client) admit(op, u string, status int, ar *AuthResponse) (AuthStatus, error) {
	st := AuthStatus{State: ar.Status}
	switch ar.Status {
	case AuthAccepted:
		if ar.Token == "" || ar.ExpiresAt.IsZero() {
			return AuthStatus{}, &Error{Op: op, URL: u, StatusCode: status,
				Err: invalid("accepted without a token or its expiry")}
		}
		st.ExpiresAt = ar.ExpiresAt
		c.mu.Lock()
		c.token, c.expires = ar.Token, ar.ExpiresAt
		c.mu.Unlock()
		c.log.Debug("authenticated", "expires", ar.ExpiresAt)
		return st, nil
	case AuthPending:
		st.RetryAfter = time.Duration(max(ar.RetryAfter, 0)) * time.Second
		return st, &Error{Op: op, URL: u, StatusCode: status, RetryAfter: st.RetryAfter,
			Err: ErrPending}
	case AuthRejected:
		return st, &Error{Op: op, URL: u, StatusCode: status, Err: ErrRejected}
	}
	return AuthStatus{}, &Error{Op: op, URL: u, StatusCode: status,
		Err: invalid("unknown admission state %q", ar.Status)}
}

func (c *Client) authRequest() (*AuthRequest, error) {
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("make nonce: %w", err)
	}
	return SignAuth(c.cfg.Key, AuthPayload{
		Identity:        Identity{Attributes: c.cfg.Identity},
		PublicKey:       c.pubPEM,
		Timestamp:       time.Now().UTC().Truncate(time.Second),
		Nonce:           base64.RawURLEncoding.EncodeToString(nonce),
		EnrollmentToken: c.cfg.EnrollmentToken,
	})
}

// bearer returns a token valid for at least TokenRefreshMargin,
// authenticating if there is none.
func (c *Client) bearer(ctx context.Context) (string, error) {
	if tok := c.validToken(); tok != "" {
		return tok, nil
	}
	c.authMu.Lock()
	defer c.authMu.Unlock()
	// Another goroutine may have authenticated while this one waited.
	if tok := c.validToken(); tok != "" {
		return tok, nil
	}
	if _, err := c.authenticate(ctx); err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token, nil
}

func (c *Client) validToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == "" || time.Until(c.expires) < c.cfg.TokenRefreshMargin {
		return ""
	}
	return c.token
}

// dropToken forgets token after the server refused it, unless another
// goroutine already replaced it.
func (c *Client) dropToken(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == token {
		c.token = ""
	}
}
