package rota

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// logTail keeps the last lines the agent logged, for failure reports.
type logTail struct {
	mu   sync.Mutex
	max  int
	kept []string
}

func newLogTail(max int) *logTail { return &logTail{max: max} }

func (t *logTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.kept = append(t.kept, line)
	if len(t.kept) > t.max {
		t.kept = append(t.kept[:0], t.kept[len(t.kept)-t.max:]...)
	}
}

// lines returns the kept lines, oldest first.
func (t *logTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.kept...)
}

// wrap returns a handler that records each record in t and passes it on
// to next.
func (t *logTail) wrap(next slog.Handler) slog.Handler {
	return &tailHandler{tail: t, next: next}
}

type tailHandler struct {
	tail  *logTail
	next  slog.Handler
	attrs []slog.Attr
}

func (h *tailHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *tailHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s %s", r.Time.UTC().Format(time.RFC3339), r.Level, r.Message)
		write := func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
			return true
		}
		for _, a := range h.attrs {
			write(a)
		}
		r.Attrs(write)
		h.tail.add(b.String())
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *tailHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &tailHandler{tail: h.tail, next: h.next.WithAttrs(as),
		attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *tailHandler) WithGroup(name string) slog.Handler {
	return &tailHandler{tail: h.tail, next: h.next.WithGroup(name), attrs: h.attrs}
}
