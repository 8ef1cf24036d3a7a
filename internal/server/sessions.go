package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"
)

// tokenSize is the number of random bytes in a device token.
const tokenSize = 32

// sweepInterval is the least time between two sweeps of expired tokens,
// nonces or rate-limit buckets.
const sweepInterval = time.Minute

// session is what a device token stands for.
type session struct {
	deviceID string
	expires  time.Time
}

// sessions holds issued device tokens by the SHA-256 of the token, so
// that a memory dump reveals no usable token, and the nonces seen within
// the clock-skew span.
type sessions struct {
	mu     sync.Mutex // guards the fields below
	tokens map[[sha256.Size]byte]session
	nonces map[string]time.Time // forget after this time
	swept  time.Time
}

func newSessions() *sessions {
	return &sessions{
		tokens: map[[sha256.Size]byte]session{},
		nonces: map[string]time.Time{},
	}
}

// issue returns a new token for deviceID valid until expires.
func (s *sessions) issue(deviceID string, expires, now time.Time) (string, error) {
	raw := make([]byte, tokenSize)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(raw)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	s.tokens[sha256.Sum256([]byte(token))] = session{deviceID: deviceID, expires: expires}
	return token, nil
}

// lookup returns the device of a token valid at now.
func (s *sessions) lookup(token string, now time.Time) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.tokens[sha256.Sum256([]byte(token))]
	if !ok || !now.Before(sess.expires) {
		return "", false
	}
	return sess.deviceID, true
}

// revoke forgets a token.
func (s *sessions) revoke(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, sha256.Sum256([]byte(token)))
}

// useNonce records that key used nonce at now and reports whether it was
// fresh. A nonce is kept for twice the allowed clock skew, as long as
// any request carrying it could pass the timestamp check.
func (s *sessions) useNonce(key, nonce string, keep time.Duration, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	k := key + "\x00" + nonce
	if until, ok := s.nonces[k]; ok && now.Before(until) {
		return false
	}
	s.nonces[k] = now.Add(keep)
	return true
}

func (s *sessions) sweep(now time.Time) {
	if now.Sub(s.swept) < sweepInterval {
		return
	}
	s.swept = now
	for k, sess := range s.tokens {
		if !now.Before(sess.expires) {
			delete(s.tokens, k)
		}
	}
	for k, until := range s.nonces {
		if !now.Before(until) {
			delete(s.nonces, k)
		}
	}
}
