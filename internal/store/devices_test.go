package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStore_DeviceCRUD(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()

		d := testDevice(1)
		d.Tags = []string{"lab", "eu", "lab", ""}
		d.Groups = []string{"canary"}
		d.Inventory = map[string]string{"kernel": "6.12"}
		created, err := s.CreateDevice(ctx, d)
		require.NoError(t, err)
		assert.Equal(t, StatusPending, created.Status)
		assert.Equal(t, []string{"eu", "lab"}, created.Tags)
		assert.False(t, created.Created.IsZero())

		got, err := s.Device(ctx, d.ID)
		require.NoError(t, err)
		assert.Equal(t, created, got)
		byKey, err := s.DeviceByKey(ctx, d.KeyID)
		require.NoError(t, err)
		assert.Equal(t, created, byKey)

		slots := json.RawMessage(`[{"name":"rootfs.0","class":"rootfs","booted":true}]`)
		at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
		require.NoError(t, s.RecordCheck(ctx, d.ID, CheckInfo{
			At: at, Version: "1.0", Digest: "sha256:ab", Slots: slots,
		}))
		require.NoError(t, s.RecordCheck(ctx, d.ID, CheckInfo{At: at, Version: "1.1"}))
		require.NoError(t, s.SetInventory(ctx, d.ID, map[string]string{"kernel": "6.13"}))
		require.NoError(t, s.SetTags(ctx, d.ID, nil))
		require.NoError(t, s.SetGroups(ctx, d.ID, []string{"fleet", "canary"}))

		got, err = s.Device(ctx, d.ID)
		require.NoError(t, err)
		assert.Equal(t, at, got.LastCheck)
		assert.Equal(t, "1.1", got.InstalledVersion)
		assert.JSONEq(t, string(slots), string(got.Slots), "nil slots keep the old ones")
		assert.Equal(t, map[string]string{"kernel": "6.13"}, got.Inventory)
		assert.Nil(t, got.Tags)
		assert.Equal(t, []string{"canary", "fleet"}, got.Groups)

		groups, err := s.Groups(ctx)
		require.NoError(t, err)
		assert.Equal(t, []string{"canary", "fleet"}, groups)

		require.NoError(t, s.DeleteDevice(ctx, d.ID))
		_, err = s.Device(ctx, d.ID)
		assert.ErrorIs(t, err, ErrNotFound)
		groups, err = s.Groups(ctx)
		require.NoError(t, err)
		assert.Empty(t, groups)
	})
}

func TestStore_DeviceErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		_, err := s.CreateDevice(ctx, testDevice(1))
		require.NoError(t, err)

		sameKey := testDevice(2)
		sameKey.KeyID = testDevice(1).KeyID
		noKey := testDevice(3)
		noKey.KeyID = ""
		badStatus := testDevice(4)
		badStatus.Status = "sleeping"

		runErrCases(t, []errCase{
			{"a taken ID is refused", func() error {
				_, err := s.CreateDevice(ctx, testDevice(1))
				return err
			}, ErrExists},
			{"a taken key ID is refused", func() error {
				_, err := s.CreateDevice(ctx, sameKey)
				return err
			}, ErrExists},
			{"a device without key is refused", func() error {
				_, err := s.CreateDevice(ctx, noKey)
				return err
			}, ErrInvalid},
			{"an unknown status is refused", func() error {
				_, err := s.CreateDevice(ctx, badStatus)
				return err
			}, ErrInvalid},
			{"an unknown device is not found", func() error {
				_, err := s.Device(ctx, "nope")
				return err
			}, ErrNotFound},
			{"a check of an unknown device is not found", func() error {
				return s.RecordCheck(ctx, "nope", CheckInfo{})
			}, ErrNotFound},
			{"tags of an unknown device are not found", func() error {
				return s.SetTags(ctx, "nope", []string{"x"})
			}, ErrNotFound},
			{"deleting an unknown device is not found", func() error {
				return s.DeleteDevice(ctx, "nope")
			}, ErrNotFound},
			{"a negative page limit is refused", func() error {
				_, _, err := s.ListDevices(ctx, DeviceFilter{}, Page{Limit: -1})
				return err
			}, ErrInvalid},
		})
	})
}

func TestStore_SetDeviceStatus(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		tests := []struct {
			name     string
			from, to AdmissionStatus
			want     error
		}{
			{"pending is accepted", StatusPending, StatusAccepted, nil},
			{"pending is rejected", StatusPending, StatusRejected, nil},
			{"pending is decommissioned", StatusPending, StatusDecommissioned, nil},
			{"accepted is rejected", StatusAccepted, StatusRejected, nil},
			{"accepted is decommissioned", StatusAccepted, StatusDecommissioned, nil},
			{"rejected is accepted", StatusRejected, StatusAccepted, nil},
			{"accepting twice changes nothing", StatusAccepted, StatusAccepted, nil},
			{"accepted cannot go back to pending", StatusAccepted, StatusPending,
				ErrInvalidTransition},
			{"rejected cannot go back to pending", StatusRejected, StatusPending,
				ErrInvalidTransition},
			{"decommissioned cannot be accepted", StatusDecommissioned, StatusAccepted,
				ErrInvalidTransition},
			{"decommissioned cannot be rejected", StatusDecommissioned, StatusRejected,
				ErrInvalidTransition},
			{"an unknown status is invalid", StatusPending, "sleeping", ErrInvalid},
		}
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				d := testDevice(i)
				d.Status = tt.from
				_, err := s.CreateDevice(ctx, d)
				require.NoError(t, err)

				got, err := s.SetDeviceStatus(ctx, d.ID, tt.to)
				stored, gerr := s.Device(ctx, d.ID)
				require.NoError(t, gerr)
				if tt.want != nil {
					assert.ErrorIs(t, err, tt.want)
					assert.Equal(t, tt.from, stored.Status, "a refused change writes nothing")
					return
				}
				require.NoError(t, err)
				assert.Equal(t, tt.to, got.Status)
				assert.Equal(t, tt.to, stored.Status)
			})
		}
		t.Run("an unknown device is not found", func(t *testing.T) {
			_, err := s.SetDeviceStatus(ctx, "nope", StatusAccepted)
			assert.ErrorIs(t, err, ErrNotFound)
		})
	})
}

func TestStore_ListDevices(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		const n = 2000
		ctx := context.Background()

		// Device i: accepted when even; version 1.<i%3>; group "g<i%5>";
		// tag "odd" when odd; inventory arch arm64 when i%4 == 0.
		devs := make([]Device, n)
		for i := range devs {
			d := testDevice(i)
			if i%2 == 0 {
				d.Status = StatusAccepted
			}
			d.InstalledVersion = fmt.Sprintf("1.%d", i%3)
			d.Groups = []string{fmt.Sprintf("g%d", i%5)}
			if i%2 == 1 {
				d.Tags = []string{"odd"}
			}
			arch := "amd64"
			if i%4 == 0 {
				arch = "arm64"
			}
			d.Inventory = map[string]string{"arch": arch, "board": "b1"}
			devs[i] = d
		}
		insertDevices(t, s, devs)

		tests := []struct {
			name   string
			filter DeviceFilter
			match  func(i int) bool
		}{
			{"every device", DeviceFilter{}, func(int) bool { return true }},
			{"by status", DeviceFilter{Status: StatusAccepted},
				func(i int) bool { return i%2 == 0 }},
			{"by version", DeviceFilter{Version: "1.2"}, func(i int) bool { return i%3 == 2 }},
			{"by group", DeviceFilter{Group: "g3"}, func(i int) bool { return i%5 == 3 }},
			{"by tag", DeviceFilter{Tag: "odd"}, func(i int) bool { return i%2 == 1 }},
			{"by inventory attribute",
				DeviceFilter{Inventory: map[string]string{"arch": "arm64", "board": "b1"}},
				func(i int) bool { return i%4 == 0 }},
			{"by everything at once",
				DeviceFilter{Status: StatusAccepted, Version: "1.0", Group: "g0",
					Inventory: map[string]string{"arch": "amd64"}},
				func(i int) bool { return i%2 == 0 && i%3 == 0 && i%5 == 0 && i%4 != 0 }},
			{"nothing", DeviceFilter{Group: "none"}, func(int) bool { return false }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var want []string
				for i := range n {
					if tt.match(i) {
						want = append(want, devs[i].ID)
					}
				}

				var got []string
				p := Page{Limit: 97}
				for pages := 0; ; pages++ {
					require.Less(t, pages, n, "pagination does not end")
					list, next, err := s.ListDevices(ctx, tt.filter, p)
					require.NoError(t, err)
					require.LessOrEqual(t, len(list), p.Limit)
					for _, d := range list {
						got = append(got, d.ID)
					}
					if next == "" {
						break
					}
					p.After = next
				}
				assert.Equal(t, want, got)

				count, err := s.CountDevices(ctx, tt.filter)
				require.NoError(t, err)
				assert.Equal(t, len(want), count)
			})
		}

		t.Run("a page stays stable when devices are added before it", func(t *testing.T) {
			first, next, err := s.ListDevices(ctx, DeviceFilter{}, Page{Limit: 10})
			require.NoError(t, err)
			_, err = s.CreateDevice(ctx, Device{ID: "aaa", KeyID: "k-aaa", PublicKeyPEM: "x"})
			require.NoError(t, err)
			second, _, err := s.ListDevices(ctx, DeviceFilter{}, Page{After: next, Limit: 10})
			require.NoError(t, err)
			assert.Equal(t, devs[10].ID, second[0].ID)
			assert.Equal(t, devs[9].ID, first[9].ID)
		})
	})
}

func TestSQLite_ListDevicesPlan(t *testing.T) {
	// A page must cost the same at any depth of 100,000 devices: the
	// query walks an index from the cursor and needs no sort. SQLite
	// plans from the schema alone, so an empty database shows the plan;
	// PostgreSQL plans from statistics, and TestPostgres_ListDevicesPlan
	// checks it on analyzed devices.
	tests := []struct {
		name   string
		filter DeviceFilter
	}{
		{"no filter", DeviceFilter{}},
		{"status", DeviceFilter{Status: StatusAccepted}},
		{"version", DeviceFilter{Version: "1.0"}},
		{"group", DeviceFilter{Group: "g"}},
		{"tag and status", DeviceFilter{Tag: "t", Status: StatusPending}},
		{"inventory", DeviceFilter{Inventory: map[string]string{"a": "b", "c": "d"}}},
		{"everything", DeviceFilter{Status: StatusAccepted, Version: "1", Group: "g", Tag: "t",
			Inventory: map[string]string{"a": "b"}}},
	}
	ctx := context.Background()
	s := openTest(t, sqliteBackend)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := deviceWhere(tt.filter)
			require.NoError(t, err)
			w.after("dev-1", sqliteDialect.cursorBothSides)
			rows, err := s.r.QueryContext(ctx, `EXPLAIN QUERY PLAN SELECT d.id FROM devices d`+
				w.String()+` ORDER BY `+w.key+` LIMIT 10`, w.all()...)
			require.NoError(t, err)
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				require.NoError(t, rows.Scan(&id, &parent, &unused, &detail))
				plan = append(plan, detail)
			}
			require.NoError(t, rows.Err())
			for _, step := range plan {
				assert.NotContains(t, step, "TEMP B-TREE", "plan %q", plan)
				assert.False(t, strings.HasPrefix(step, "SCAN"), "plan %q", plan)
			}
		})
	}
}

func TestStore_ImportDevices(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		batch := []Device{testDevice(1), testDevice(2), testDevice(3)}
		batch[0].Status = StatusAccepted
		require.NoError(t, s.ImportDevices(ctx, batch))
		n, err := s.CountDevices(ctx, DeviceFilter{})
		require.NoError(t, err)
		assert.Equal(t, 3, n)
		got, err := s.Device(ctx, batch[0].ID)
		require.NoError(t, err)
		assert.Equal(t, StatusAccepted, got.Status)

		// One taken key refuses the whole batch.
		again := []Device{testDevice(4), testDevice(2)}
		require.ErrorIs(t, s.ImportDevices(ctx, again), ErrExists)
		_, err = s.Device(ctx, testDevice(4).ID)
		require.ErrorIs(t, err, ErrNotFound)

		bad := testDevice(5)
		bad.PublicKeyPEM = ""
		require.ErrorIs(t, s.ImportDevices(ctx, []Device{bad}), ErrInvalid)
		require.NoError(t, s.ImportDevices(ctx, nil))
	})
}

func TestStore_TouchDevices(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *sqlStore) {
		ctx := context.Background()
		insertDevices(t, s, []Device{testDevice(1), testDevice(2)})
		a, b := testDevice(1).ID, testDevice(2).ID
		t1 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
		t2 := t1.Add(time.Minute)
		require.NoError(t, s.RecordCheck(ctx, a, CheckInfo{At: t2, Version: "1.0"}))

		require.NoError(t, s.TouchDevices(ctx, map[string]time.Time{
			a: t1, b: t2, "no-such-device": t2}))
		da, err := s.Device(ctx, a)
		require.NoError(t, err)
		assert.Equal(t, t2, da.LastCheck.UTC(), "an older time does not go back")
		assert.Equal(t, "1.0", da.InstalledVersion, "only the time changes")
		db, err := s.Device(ctx, b)
		require.NoError(t, err)
		assert.Equal(t, t2, db.LastCheck.UTC())
		require.NoError(t, s.TouchDevices(ctx, nil))

		// More devices than one statement takes.
		var many []Device
		seen := map[string]time.Time{}
		for i := range 2*touchChunk + 3 {
			d := testDevice(100 + i)
			many = append(many, d)
			seen[d.ID] = t1.Add(time.Duration(i) * time.Second)
		}
		insertDevices(t, s, many)
		require.NoError(t, s.TouchDevices(ctx, seen))
		for _, i := range []int{0, touchChunk - 1, touchChunk, 2 * touchChunk, 2*touchChunk + 2} {
			d, err := s.Device(ctx, many[i].ID)
			require.NoError(t, err)
			assert.Equal(t, seen[d.ID], d.LastCheck.UTC(), d.ID)
		}
	})
}
