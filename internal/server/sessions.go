package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"

	"github.com/rotaupdate/rota/poll"
)

// tokenKeySize is the size of the key that signs device tokens.
const tokenKeySize = 32

// tokenVersion starts every device token, naming its format.
const tokenVersion = "v1."

// sweepInterval is the least time between two sweeps of rate-limit
// buckets.
const sweepInterval = time.Minute

// sessions issues and checks device tokens.
//
// A token is stateless: the device ID and the expiry, signed with
// HMAC-SHA256 under a key that every replica of the server shares, so a
// token issued by one replica is good at all of them and survives their
// restarts. Withdrawing a device's admission takes effect at its next
// request anyway, since each request reads the device.
type sessions struct {
	key []byte
}

func newSessions(key []byte) *sessions {
	return &sessions{key: key}
}

// issue returns a token for deviceID valid until expires.
func (s *sessions) issue(deviceID string, expires time.Time) string {
	payload := binary.BigEndian.AppendUint64(nil, uint64(expires.Unix()))
	payload = append(payload, deviceID...)
	return tokenVersion + base64.RawURLEncoding.EncodeToString(payload) + "." +
		base64.RawURLEncoding.EncodeToString(s.mac(payload))
}

func (s *sessions) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(tokenVersion))
	m.Write(payload)
	return m.Sum(nil)
}

// lookup returns the device of a token valid at now.
func (s *sessions) lookup(token string, now time.Time) (string, bool) {
	rest, ok := strings.CutPrefix(token, tokenVersion)
	if !ok || len(rest) > 2*poll.MaxFieldSize {
		return "", false
	}
	p64, m64, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	mac, err2 := base64.RawURLEncoding.DecodeString(m64)
	if err1 != nil || err2 != nil || len(payload) <= 8 || !hmac.Equal(mac, s.mac(payload)) {
		return "", false
	}
	expires := time.Unix(int64(binary.BigEndian.Uint64(payload)), 0)
	if !now.Before(expires) {
		return "", false
	}
	return string(payload[8:]), true
}
