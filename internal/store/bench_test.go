package store

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkListDevices pages through 100,000 devices with each filter,
// on each backend; run it with -bench ListDevices -benchtime 20x.
func BenchmarkListDevices(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) { benchmarkListDevices(b, be) })
	}
}

// fleet returns n devices: every other one accepted, ten versions, a
// hundred groups, a tag on one in a thousand and seven architectures.
func fleet(n int) []Device {
	devs := make([]Device, n)
	for i := range devs {
		d := testDevice(i)
		if i%2 == 0 {
			d.Status = StatusAccepted
		}
		d.InstalledVersion = fmt.Sprintf("1.%d", i%10)
		d.Groups = []string{fmt.Sprintf("g%d", i%100)}
		if i%1000 == 0 {
			d.Tags = []string{"rare"}
		}
		d.Inventory = map[string]string{"arch": fmt.Sprintf("a%d", i%7)}
		devs[i] = d
	}
	return devs
}

// fleetFilters select parts of a fleet, from all of it to one device in
// a thousand.
var fleetFilters = []struct {
	name string
	f    DeviceFilter
}{
	{"all", DeviceFilter{}},
	{"status", DeviceFilter{Status: StatusAccepted}},
	{"version", DeviceFilter{Version: "1.3"}},
	{"group", DeviceFilter{Group: "g42"}},
	{"rare tag", DeviceFilter{Tag: "rare"}},
	{"inventory", DeviceFilter{Inventory: map[string]string{"arch": "a3"}}},
	{"group and inventory", DeviceFilter{Group: "g42",
		Inventory: map[string]string{"arch": "a3"}}},
}

// insertFleet stores a fleet of n devices and, on PostgreSQL, gathers
// the statistics its planner uses, as autovacuum would on a server in
// use; SQLite plans from the schema alone.
func insertFleet(t testing.TB, s *sqlStore, n int) {
	t.Helper()
	insertDevices(t, s, fleet(n))
	if s.d == &postgresDialect {
		if _, err := s.w.ExecContext(context.Background(), `ANALYZE`); err != nil {
			t.Fatalf("analyze: %v", err)
		}
	}
}

func benchmarkListDevices(b *testing.B, be backend) {
	const n = 100_000
	ctx := context.Background()
	s := openTest(b, be)
	insertFleet(b, s, n)

	for _, f := range fleetFilters {
		b.Run(f.name, func(b *testing.B) {
			// Each iteration reads a page from the middle of the list.
			for b.Loop() {
				_, _, err := s.ListDevices(ctx, f.f, Page{After: "dev-50000", Limit: 100})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
