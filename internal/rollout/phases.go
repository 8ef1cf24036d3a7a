package rollout

import (
	"context"
	"fmt"

	"github.com/rotaupdate/rota/internal/store"
)

// PhaseSizes returns how many of total devices go into each phase of s,
// in phase order. A phase with a Percent takes that share of total,
// rounded up so that a small canary phase is never empty; a phase with
// a Count takes that many; a phase with neither takes every device left.
// No phase takes more than are left, and devices left after the last
// phase join the last phase. A strategy without phases has one phase.
func PhaseSizes(s store.Strategy, total int) []int {
	if len(s.Phases) == 0 {
		return []int{total}
	}
	sizes := make([]int, len(s.Phases))
	left := total
	for i, p := range s.Phases {
		n := left
		switch {
		case p.Percent > 0:
			n = (p.Percent*total + 99) / 100
		case p.Count > 0:
			n = p.Count
		}
		sizes[i] = min(n, left)
		left -= sizes[i]
	}
	sizes[len(sizes)-1] += left
	return sizes
}

// AddDevices adds devices to deployment d, split into its phases by
// [PhaseSizes] in the order given: the first devices go into phase 0.
// Each phase is added in one store transaction.
func AddDevices(ctx context.Context, st store.Store, d store.Deployment,
	deviceIDs []string) error {
	rest := deviceIDs
	for phase, n := range PhaseSizes(d.Strategy, len(deviceIDs)) {
		if n == 0 {
			continue
		}
		err := st.AddDeploymentDevices(ctx, d.ID, phase, rest[:n])
		if err != nil {
			return fmt.Errorf("add devices to deployment %s phase %d: %w", d.ID, phase, err)
		}
		rest = rest[n:]
	}
	return nil
}
