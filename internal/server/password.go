package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/rotaupdate/rota/internal/store"
)

// Password policy.
const (
	// MinPasswordLength is the fewest characters a password may have.
	MinPasswordLength = 10

	// MaxPasswordLength is the most bytes a password may have; longer
	// ones add no strength and only cost hashing time.
	MaxPasswordLength = 1024
)

// The first user.
const (
	// AdminName is the name of the user EnsureAdmin creates.
	AdminName = "admin"

	// SetupActor is the audit actor of the user EnsureAdmin creates.
	SetupActor = "system:setup"
)

// The argon2id parameters of new hashes: the first recommendation of
// the OWASP password storage cheat sheet, 19 MiB and two passes, which
// takes some tens of milliseconds. Stored hashes carry their own
// parameters, so these may grow without invalidating old passwords.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonSaltLen = 16
	argonKeyLen  = 32
)

// Bounds on the parameters of a stored hash, so that a corrupted or
// hostile hash cannot make CheckPassword exhaust memory or time.
const (
	maxArgonTime    = 16
	maxArgonMemory  = 1 << 20 // KiB, 1 GiB
	maxArgonThreads = 64
)

// maxConcurrentHashes bounds the argon2 computations running at once,
// and so their memory, whatever the number of login requests.
const maxConcurrentHashes = 4

var hashSlots = make(chan struct{}, maxConcurrentHashes)

// Errors of the password functions.
var (
	// ErrWeakPassword is returned by HashPassword and EnsureAdmin for a
	// password shorter than MinPasswordLength characters, longer than
	// MaxPasswordLength bytes or not UTF-8.
	ErrWeakPassword = errors.New("server: password too short, too long or not UTF-8")

	// ErrBadHash is returned by CheckPassword for an encoded hash that is
	// not an argon2id PHC string this package can check.
	ErrBadHash = errors.New("server: malformed password hash")
)

// checkPasswordPolicy returns an error wrapping ErrWeakPassword unless
// password meets the policy.
func checkPasswordPolicy(password string) error {
	switch {
	case !utf8.ValidString(password):
		return fmt.Errorf("check password: not UTF-8: %w", ErrWeakPassword)
	case utf8.RuneCountInString(password) < MinPasswordLength:
		return fmt.Errorf("check password: fewer than %d characters: %w",
			MinPasswordLength, ErrWeakPassword)
	case len(password) > MaxPasswordLength:
		return fmt.Errorf("check password: over %d bytes: %w", MaxPasswordLength,
			ErrWeakPassword)
	}
	return nil
}

// HashPassword returns the argon2id hash of password with a random salt,
// as a PHC string such as "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>".
// It refuses, with ErrWeakPassword, a password that breaks the policy.
func HashPassword(password string) (string, error) {
	if err := checkPasswordPolicy(password); err != nil {
		return "", err
	}
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: read salt: %w", err)
	}
	key := idKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		argonMemory, argonTime, argonThreads, b64.EncodeToString(salt),
		b64.EncodeToString(key)), nil
}

// CheckPassword reports whether password matches the PHC string encoded
// that HashPassword returned, comparing in constant time. It returns an
// error wrapping ErrBadHash if encoded cannot be checked.
func CheckPassword(encoded, password string) (bool, error) {
	p, err := parseHash(encoded)
	if err != nil {
		return false, err
	}
	key := idKey([]byte(password), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(key, p.key) == 1, nil
}

// idKey is argon2.IDKey, run in one of the hash slots.
func idKey(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	return argon2.IDKey(password, salt, time, memory, threads, keyLen)
}

// argonHash is a parsed PHC string.
type argonHash struct {
	time, memory uint32
	threads      uint8
	salt, key    []byte
}

func parseHash(encoded string) (argonHash, error) {
	bad := func(why string) (argonHash, error) {
		return argonHash{}, fmt.Errorf("parse password hash: %s: %w", why, ErrBadHash)
	}
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return bad("not an argon2id PHC string")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("unsupported version " + parts[2])
	}
	var h argonHash
	var m, t, p int
	n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p)
	if err != nil || n != 3 || fmt.Sprintf("m=%d,t=%d,p=%d", m, t, p) != parts[3] {
		return bad("malformed parameters")
	}
	if m < 8 || m > maxArgonMemory || t < 1 || t > maxArgonTime ||
		p < 1 || p > maxArgonThreads {
		return bad("parameters out of range")
	}
	h.memory, h.time, h.threads = uint32(m), uint32(t), uint8(p)
	b64 := base64.RawStdEncoding.Strict()
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return bad("malformed salt")
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil || len(h.key) < 16 ||
		len(h.key) > 64 {
		return bad("malformed hash")
	}
	return h, nil
}

// EnsureAdmin creates the first user when st has none: AdminName, with
// the admin role and password. An empty password means a random one,
// which EnsureAdmin returns so that the caller shows it once; it is
// stored only hashed. When any user exists, EnsureAdmin changes nothing
// and returns "". The creation is recorded in the audit log as done by
// SetupActor.
func EnsureAdmin(ctx context.Context, st store.Store, password string) (oneTime string,
	err error) {
	users, err := st.ListUsers(ctx)
	if err != nil {
		return "", fmt.Errorf("ensure admin: %w", err)
	}
	if len(users) > 0 {
		return "", nil
	}
	if password == "" {
		password = rand.Text()
		oneTime = password
	}
	hash, err := HashPassword(password)
	if err != nil {
		return "", fmt.Errorf("ensure admin: %w", err)
	}
	ctx = store.WithAudit(ctx, store.AuditEntry{
		Actor:   SetupActor,
		Action:  "user.create",
		Object:  "user:" + AdminName,
		Details: detailsJSON(map[string]any{"role": store.RoleAdmin, "initial": true}),
	})
	_, err = st.CreateUser(ctx, store.User{Name: AdminName, Role: store.RoleAdmin,
		PasswordHash: hash})
	if errors.Is(err, store.ErrExists) {
		// Another process created it between the listing and now.
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("ensure admin: %w", err)
	}
	return oneTime, nil
}
