// Package cli holds what ROTA's commands share: their logger set-up,
// flags that ROTA_* environment variables may set, and the address they
// say they listen on.
package cli

import (
	"io"
	"log/slog"
)

// NewLogger returns a logger writing to w in format "json" or, for any
// other value, "text", at level ("debug", "info", "warn", "error" or an
// offset such as "info+2"); an unknown level means info.
func NewLogger(w io.Writer, format, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
