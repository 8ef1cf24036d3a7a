package store

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStore_Users(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()

		u, err := s.CreateUser(ctx, User{Name: "alice", Role: RoleOperator,
			PasswordHash: "$argon2id$x"})
		require.NoError(t, err)
		got, err := s.User(ctx, "alice")
		require.NoError(t, err)
		assert.Equal(t, u, got)

		u.Role = RoleViewer
		updated, err := s.UpdateUser(ctx, u, nil)
		require.NoError(t, err)
		assert.Equal(t, RoleViewer, updated.Role)
		assert.True(t, updated.Updated.After(u.Created))

		_, err = s.CreateUser(ctx, User{Name: "bob", Role: RoleOperator, PasswordHash: "h"})
		require.NoError(t, err)
		users, err := s.ListUsers(ctx)
		require.NoError(t, err)
		require.Len(t, users, 2)
		assert.Equal(t, "bob", users[1].Name)

		runErrCases(t, []errCase{
			{"a taken name is refused", func() error {
				_, err := s.CreateUser(ctx, User{Name: "alice", Role: RoleAdmin, PasswordHash: "h"})
				return err
			}, ErrExists},
			{"an unknown role is refused", func() error {
				_, err := s.CreateUser(ctx, User{Name: "carol", Role: "root", PasswordHash: "h"})
				return err
			}, ErrInvalid},
			{"a user without password hash is refused", func() error {
				_, err := s.CreateUser(ctx, User{Name: "carol", Role: RoleAdmin})
				return err
			}, ErrInvalid},
			{"updating an unknown user is not found", func() error {
				_, err := s.UpdateUser(ctx, User{Name: "carol", Role: RoleAdmin, PasswordHash: "h"}, nil)
				return err
			}, ErrNotFound},
			{"a user is deleted", func() error { return s.DeleteUser(ctx, "bob") }, nil},
			{"a deleted user is not found", func() error {
				_, err := s.User(ctx, "bob")
				return err
			}, ErrNotFound},
			{"deleting an unknown user is not found", func() error {
				return s.DeleteUser(ctx, "bob")
			}, ErrNotFound},
		})
	})
}

func TestStore_Tokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

		forever, err := s.CreateToken(ctx, APIToken{Name: "ci", Role: RoleOperator,
			Hash: []byte("hash-1")})
		require.NoError(t, err)
		_, err = s.CreateToken(ctx, APIToken{Name: "old", Role: RoleViewer,
			Hash: []byte("hash-2"), Expires: now.Add(-time.Second)})
		require.NoError(t, err)

		tests := []struct {
			name string
			hash string
			want error
		}{
			{"a token without expiry is found", "hash-1", nil},
			{"an expired token is not found", "hash-2", ErrNotFound},
			{"an unknown hash is not found", "hash-3", ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := s.TokenByHash(ctx, []byte(tt.hash), now)
				if tt.want != nil {
					assert.ErrorIs(t, err, tt.want)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, forever, got)
			})
		}

		_, err = s.CreateToken(ctx, APIToken{Role: RoleViewer, Hash: []byte("hash-1")})
		assert.ErrorIs(t, err, ErrExists)
		_, err = s.CreateToken(ctx, APIToken{Role: RoleViewer})
		assert.ErrorIs(t, err, ErrInvalid)

		tokens, err := s.ListTokens(ctx)
		require.NoError(t, err)
		assert.Len(t, tokens, 2)
		require.NoError(t, s.DeleteToken(ctx, forever.ID))
		assert.ErrorIs(t, s.DeleteToken(ctx, forever.ID), ErrNotFound)
	})
}

func TestStore_Sessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
		_, err := s.CreateUser(ctx, User{Name: "alice", Role: RoleAdmin, PasswordHash: "h"})
		require.NoError(t, err)

		live, err := s.CreateSession(ctx, Session{IDHash: []byte("s1"), UserName: "alice",
			CSRF: "c1", Expires: now.Add(time.Hour)})
		require.NoError(t, err)
		_, err = s.CreateSession(ctx, Session{IDHash: []byte("s2"), UserName: "alice",
			CSRF: "c2", Expires: now.Add(-time.Hour)})
		require.NoError(t, err)

		got, err := s.Session(ctx, []byte("s1"), now)
		require.NoError(t, err)
		assert.Equal(t, live, got)
		_, err = s.Session(ctx, []byte("s2"), now)
		assert.ErrorIs(t, err, ErrNotFound, "an expired session is not found")
		_, err = s.CreateSession(ctx, Session{IDHash: []byte("s3"), UserName: "nobody",
			CSRF: "c", Expires: now})
		assert.ErrorIs(t, err, ErrNotFound, "a session needs a known user")

		n, err := s.DeleteExpiredSessions(ctx, now)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		require.NoError(t, s.DeleteSession(ctx, []byte("s1")))
		require.NoError(t, s.DeleteSession(ctx, []byte("s1")), "deleting twice succeeds")
		_, err = s.Session(ctx, []byte("s1"), now)
		assert.ErrorIs(t, err, ErrNotFound)
	})
}

// TestStore_PasswordChangeEndsSessions checks that a new password signs
// out everyone who signed in with the old one, but the session kept.
func TestStore_PasswordChangeEndsSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
		for _, name := range []string{"alice", "bob"} {
			_, err := s.CreateUser(ctx, User{Name: name, Role: RoleAdmin, PasswordHash: "h"})
			require.NoError(t, err)
		}
		for _, id := range []string{"alice-1", "alice-2", "alice-3", "bob-1"} {
			name, _, _ := strings.Cut(id, "-")
			_, err := s.CreateSession(ctx, Session{IDHash: []byte(id), UserName: name,
				CSRF: "c", Expires: now.Add(time.Hour)})
			require.NoError(t, err)
		}
		live := func() []string {
			var ids []string
			for _, id := range []string{"alice-1", "alice-2", "alice-3", "bob-1"} {
				if _, err := s.Session(ctx, []byte(id), now); err == nil {
					ids = append(ids, id)
				}
			}
			return ids
		}

		_, err := s.UpdateUser(ctx, User{Name: "alice", Role: RoleOperator, PasswordHash: "h"}, nil)
		require.NoError(t, err)
		assert.Equal(t, []string{"alice-1", "alice-2", "alice-3", "bob-1"}, live(),
			"a new role keeps the sessions")

		_, err = s.UpdateUser(ctx, User{Name: "alice", Role: RoleOperator, PasswordHash: "h2"},
			[]byte("alice-2"))
		require.NoError(t, err)
		assert.Equal(t, []string{"alice-2", "bob-1"}, live(), "only the kept session stays")

		_, err = s.UpdateUser(ctx, User{Name: "alice", Role: RoleOperator, PasswordHash: "h3"}, nil)
		require.NoError(t, err)
		assert.Equal(t, []string{"bob-1"}, live(), "no session kept")
	})
}

func TestStore_Audit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		for _, obj := range []string{"device:1", "device:2", "device:1"} {
			_, err := s.AppendAudit(ctx, AuditEntry{Actor: "user:alice", Action: "device.accept",
				Object: obj, Details: json.RawMessage(`{"from":"pending"}`)})
			require.NoError(t, err)
		}
		_, err := s.AppendAudit(ctx, AuditEntry{Action: "x"})
		assert.ErrorIs(t, err, ErrInvalid)

		tests := []struct {
			name    string
			filter  AuditFilter
			wantIDs []int64
		}{
			{"everything, newest first", AuditFilter{}, []int64{3, 2, 1}},
			{"one object", AuditFilter{Object: "device:1"}, []int64{3, 1}},
			{"a page", AuditFilter{Limit: 2}, []int64{3, 2}},
			{"the next page", AuditFilter{Before: 2}, []int64{1}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				entries, err := s.ListAudit(ctx, tt.filter)
				require.NoError(t, err)
				var ids []int64
				for _, e := range entries {
					ids = append(ids, e.ID)
					assert.JSONEq(t, `{"from":"pending"}`, string(e.Details))
					assert.False(t, e.At.IsZero())
				}
				assert.Equal(t, tt.wantIDs, ids)
			})
		}
	})
}

func TestStore_AuditWithMutation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		dev, err := s.CreateDevice(ctx, testDevice(1))
		require.NoError(t, err)

		entry := AuditEntry{Actor: "user:alice", Action: "device.accept",
			Object: "device:" + dev.ID}
		_, err = s.SetDeviceStatus(WithAudit(ctx, entry), dev.ID, StatusAccepted)
		require.NoError(t, err)

		// A refused mutation writes no entry.
		bad := AuditEntry{Actor: "user:alice", Action: "device.pending", Object: "device:" + dev.ID}
		_, err = s.SetDeviceStatus(WithAudit(ctx, bad), dev.ID, StatusPending)
		require.ErrorIs(t, err, ErrInvalidTransition)

		// An entry without an actor fails the mutation, which changes nothing.
		_, err = s.SetDeviceStatus(WithAudit(ctx, AuditEntry{Action: "device.reject"}),
			dev.ID, StatusRejected)
		require.ErrorIs(t, err, ErrInvalid)
		got, err := s.Device(ctx, dev.ID)
		require.NoError(t, err)
		assert.Equal(t, StatusAccepted, got.Status)

		entries, err := s.ListAudit(ctx, AuditFilter{})
		require.NoError(t, err)
		require.Len(t, entries, 1)
		assert.Equal(t, "device.accept", entries[0].Action)
		assert.Equal(t, "user:alice", entries[0].Actor)
	})
}

func TestStore_Secret(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		got, err := s.Secret(ctx, "token-key", []byte("first"))
		require.NoError(t, err)
		assert.Equal(t, []byte("first"), got)
		got, err = s.Secret(ctx, "token-key", []byte("second"))
		require.NoError(t, err)
		assert.Equal(t, []byte("first"), got, "the first value stays")
		_, err = s.Secret(ctx, "", []byte("x"))
		require.ErrorIs(t, err, ErrInvalid)
		_, err = s.Secret(ctx, "empty", nil)
		require.ErrorIs(t, err, ErrInvalid)
	})
}

// TestStore_LastAdmin checks that no change leaves the server without an
// admin, even two changes at once, as from two replicas.
func TestStore_LastAdmin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		for _, name := range []string{"alice", "bob"} {
			_, err := s.CreateUser(ctx, User{Name: name, Role: RoleAdmin, PasswordHash: "h"})
			require.NoError(t, err)
		}
		_, err := s.CreateUser(ctx, User{Name: "carol", Role: RoleViewer, PasswordHash: "h"})
		require.NoError(t, err)

		for round := range 5 {
			// Two admins demoted at once: one change goes through.
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, name := range []string{"alice", "bob"} {
				wg.Go(func() {
					_, errs[i] = s.UpdateUser(ctx, User{Name: name, Role: RoleOperator,
						PasswordHash: "h"}, nil)
				})
			}
			wg.Wait()
			failed := 0
			for _, err := range errs {
				if err != nil {
					assert.ErrorIs(t, err, ErrLastAdmin)
					failed++
				}
			}
			require.Equal(t, 1, failed, "round %d: %v", round, errs)
			for _, name := range []string{"alice", "bob"} {
				_, err := s.UpdateUser(ctx, User{Name: name, Role: RoleAdmin, PasswordHash: "h"},
					nil)
				require.NoError(t, err)
			}
		}

		require.NoError(t, s.DeleteUser(ctx, "bob"))
		assert.ErrorIs(t, s.DeleteUser(ctx, "alice"), ErrLastAdmin)
		_, err = s.UpdateUser(ctx, User{Name: "alice", Role: RoleViewer, PasswordHash: "h"}, nil)
		assert.ErrorIs(t, err, ErrLastAdmin)
		require.NoError(t, s.DeleteUser(ctx, "carol"), "a viewer goes")
		_, err = s.User(ctx, "alice")
		require.NoError(t, err, "the refused deletion changed nothing")
	})
}

func TestStore_UseNonce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
		use := func(nonce string, at time.Time) bool {
			t.Helper()
			fresh, err := s.UseNonce(ctx, nonce, at.Add(10*time.Minute), at)
			require.NoError(t, err)
			return fresh
		}
		assert.True(t, use("key-a\x00n1", now))
		assert.False(t, use("key-a\x00n1", now.Add(time.Second)), "a replay is refused")
		assert.True(t, use("key-b\x00n1", now), "nonces are per key")
		assert.False(t, use("key-a\x00n1", now.Add(10*time.Minute-time.Microsecond)))
		assert.True(t, use("key-a\x00n1", now.Add(10*time.Minute)), "expired, it may come again")

		// Many replicas at once: one of them takes the nonce.
		var wg sync.WaitGroup
		var fresh atomic.Int32
		for range 16 {
			wg.Go(func() {
				ok, err := s.UseNonce(ctx, "key-c\x00n1", now.Add(time.Hour), now)
				assert.NoError(t, err)
				if ok {
					fresh.Add(1)
				}
			})
		}
		wg.Wait()
		assert.Equal(t, int32(1), fresh.Load())

		// Expired nonces are swept on a later use.
		assert.True(t, use("key-d\x00n1", now.Add(2*time.Hour)))
		var n int
		require.NoError(t, s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM used_nonces`).Scan(&n))
		assert.Equal(t, 1, n)
	})
}

// TestPostgres_AuditCommitsInOrder checks that an audit entry cannot
// commit while one with a lower ID is still open, so that a reader who
// saw an entry never sees a lower ID appear after it. SQLite runs one
// writer at a time, which gives the same by itself.
func TestPostgres_AuditCommitsInOrder(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, postgresBackend)
	tx, err := s.w.BeginTx(ctx, s.d.writeTx)
	require.NoError(t, err)
	defer tx.Rollback()
	first, err := s.insertAudit(ctx, conn{q: tx, d: s.d}, AuditEntry{Actor: "a", Action: "first"})
	require.NoError(t, err)

	type result struct {
		id  int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		id, err := s.AppendAudit(ctx, AuditEntry{Actor: "b", Action: "second"})
		done <- result{id, err}
	}()
	// The second append must wait for the first's commit: either it is
	// seen waiting for a lock, or it wrongly finishes first.
	waiting := false
	for deadline := time.Now().Add(30 * time.Second); !waiting && time.Now().Before(deadline); {
		select {
		case r := <-done:
			t.Fatalf("entry %d committed while entry %d was open (%v)", r.id, first, r.err)
		case <-time.After(10 * time.Millisecond):
		}
		var n int
		require.NoError(t, s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n))
		waiting = n > 0
	}
	require.True(t, waiting, "the second append neither waited nor finished")
	require.NoError(t, tx.Commit())
	r := <-done
	require.NoError(t, r.err)
	assert.Greater(t, r.id, first)
}
