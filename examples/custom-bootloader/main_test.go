package main

import (
	"context"
	"testing"

	"github.com/rotaupdate/rota/slot"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func Example() {
	if err := run(context.Background()); err != nil {
		panic(err)
	}
	// Output:
	// installed              primary=A A=good B=good
	// mark B active (2)      primary=B A=good B=trial(2)
	// boot                   primary=B A=good B=trial(1)
	// boot                   primary=A A=good B=bad
	// boot (tries used up)   primary=A A=good B=bad
	// mark B active again    primary=B A=good B=trial(1)
	// boot                   primary=A A=good B=bad
	// mark B good            primary=B A=good B=good
}

func TestVendorBootloader_Errors(t *testing.T) {
	ctx := context.Background()
	bl, err := newVendorBootloader(t.TempDir(), "A", "B")
	require.NoError(t, err)

	tests := []struct {
		name string
		err  error
	}{
		{"state of an unknown slot", func() error { _, err := bl.State(ctx, "C"); return err }()},
		{"mark of an unknown slot", bl.Mark(ctx, "C", slot.Mark{Kind: slot.MarkGood})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.ErrorIs(t, tc.err, slot.ErrUnknownBootname)
		})
	}
}
