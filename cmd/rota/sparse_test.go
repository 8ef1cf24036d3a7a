package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSparseWriter_SameBytes(t *testing.T) {
	data := make([]byte, 5*sparseBlock+1234)
	copy(data[10:], "head")
	copy(data[2*sparseBlock+7:], bytes.Repeat([]byte{9}, sparseBlock))
	tests := []struct {
		name  string
		data  []byte
		write int // bytes per Write call
	}{
		{"mixed blocks in one write", data, len(data)},
		{"mixed blocks in odd writes", data, 4097},
		{"trailing zeros only", make([]byte, 3*sparseBlock+5), 1000},
		{"no zeros", bytes.Repeat([]byte{1}, sparseBlock+3), 777},
		{"empty", nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "out"))
			require.NoError(t, err)
			defer f.Close()
			sw := &sparseWriter{f: f}
			for p := tt.data; len(p) > 0; {
				k := min(len(p), tt.write)
				n, err := sw.Write(p[:k])
				require.NoError(t, err)
				require.Equal(t, k, n)
				p = p[k:]
			}
			require.NoError(t, sw.Finish())
			got, err := os.ReadFile(f.Name())
			require.NoError(t, err)
			require.True(t, bytes.Equal(tt.data, got))
		})
	}
}
