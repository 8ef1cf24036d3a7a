package main

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress draws a byte progress bar on stderr when it is a terminal, and
// does nothing otherwise. Add may be called from several goroutines.
type progress struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

// newProgress returns a progress bar described by desc for total bytes
// (-1 when unknown).
func newProgress(env *cliEnv, desc string, total int64) *progress {
	f, ok := env.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetPredictTime(true),
	)}
}

// Add records n more bytes done.
func (p *progress) Add(n int64) {
	if p.bar == nil {
		return
	}
	p.mu.Lock()
	p.bar.Add64(n)
	p.mu.Unlock()
}

// SetTotal changes the total.
func (p *progress) SetTotal(n int64) {
	if p.bar == nil {
		return
	}
	p.mu.Lock()
	p.bar.ChangeMax64(n)
	p.mu.Unlock()
}

// Done removes the bar.
func (p *progress) Done() {
	if p.bar == nil {
		return
	}
	p.mu.Lock()
	p.bar.Finish()
	p.bar.Exit()
	p.mu.Unlock()
}

// Writer returns an io.Writer that counts written bytes as progress.
func (p *progress) Writer() io.Writer { return progressWriter{p} }

type progressWriter struct{ p *progress }

func (w progressWriter) Write(b []byte) (int, error) {
	w.p.Add(int64(len(b)))
	return len(b), nil
}

// SetTo sets the bytes done.
func (p *progress) SetTo(n int64) {
	if p.bar == nil {
		return
	}
	p.mu.Lock()
	p.bar.Set64(n)
	p.mu.Unlock()
}
