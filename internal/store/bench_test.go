package store

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkListDevices pages through 100,000 devices with each filter;
// run it with -bench ListDevices -benchtime 20x.
func BenchmarkListDevices(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	s := openTestB(b)
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
	insertDevices(b, s, devs)

	filters := []struct {
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
	for _, f := range filters {
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
