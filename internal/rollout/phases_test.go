package rollout

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/rotaupdate/rota/internal/store"
)

func TestPhaseSizes(t *testing.T) {
	tests := []struct {
		name   string
		phases []store.Phase
		total  int
		want   []int
	}{
		{"no phases is one phase of all", nil, 7, []int{7}},
		{"percentages round up", []store.Phase{{Percent: 10}, {Percent: 90}}, 5,
			[]int{1, 4}},
		{"counts take that many, the rest join the last", []store.Phase{{Count: 2},
			{Count: 3}}, 10, []int{2, 8}},
		{"an empty phase takes what is left", []store.Phase{{Count: 1}, {}, {Count: 5}},
			4, []int{1, 3, 0}},
		{"no phase takes more than is left", []store.Phase{{Count: 5}, {Percent: 50}},
			3, []int{3, 0}},
		{"no devices means empty phases", []store.Phase{{Percent: 10}, {}}, 0,
			[]int{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PhaseSizes(store.Strategy{Phases: tt.phases}, tt.total)
			assert.Equal(t, tt.want, got)
		})
	}
}
