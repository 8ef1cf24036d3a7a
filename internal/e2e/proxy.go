package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rotaupdate/rota/poll"
)

// maxReportBody caps the report bodies the proxy reads to inspect them;
// the device API caps a report far below it.
const maxReportBody = 1 << 20

// throttleChunk is the most bytes a throttled bundle body hands out at
// once, so that the rate holds over short spans too.
const throttleChunk = 32 << 10

// discardLog silences the proxy's HTTP server and reverse proxy: a power
// cut ends requests halfway, which is what the tests want.
var discardLog = log.New(io.Discard, "", 0)

// Proxy is an HTTP reverse proxy between a test machine and its server.
// It passes everything through, and on request holds a bundle download at
// a chosen byte of the file, or a report matching a condition, so that a
// test can cut the machine's power at that very moment. It can also slow
// bundle downloads down, and it records where each bundle download
// started and every report that went through.
type Proxy struct {
	ln  net.Listener
	srv *http.Server

	mu        sync.Mutex
	bundleAt  *hold // bundle bytes from this file offset on are held
	reportOf  *hold // reports matching its condition are held
	rate      int64 // bundle bytes per second; 0 means no limit
	downloads []int64
	reports   []poll.Report
}

// hold is a point where the proxy stops a request until released.
type hold struct {
	offset  int64
	match   func(poll.Report) bool
	reached chan struct{} // closed when a request reaches the point
	release chan struct{} // closed by Proxy.Release
	once    sync.Once
}

func newHold() *hold {
	return &hold{reached: make(chan struct{}), release: make(chan struct{})}
}

// reach records that a request is held here.
func (h *hold) reach() { h.once.Do(func() { close(h.reached) }) }

// NewProxy starts a proxy to the server at target on a loopback port.
func NewProxy(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("new proxy to %s: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("new proxy to %s: %w", target, err)
	}
	p := &Proxy{ln: ln}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		// Bytes reach the guest as the server sends them, so that a held
		// download stops exactly at its offset.
		FlushInterval:  -1,
		ModifyResponse: p.modifyResponse,
		ErrorLog:       discardLog,
	}
	p.srv = &http.Server{Handler: p.handler(rp), ErrorLog: discardLog}
	go p.srv.Serve(ln)
	return p, nil
}

// Port returns the port the proxy listens on, on 127.0.0.1.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Close stops the proxy.
func (p *Proxy) Close() error { return p.srv.Close() }

// HoldBundle makes bundle downloads stop before byte offset of the .rota
// file until Release. The returned channel is closed once a download is
// held there.
func (p *Proxy) HoldBundle(offset int64) <-chan struct{} {
	h := newHold()
	h.offset = offset
	p.mu.Lock()
	p.bundleAt = h
	p.mu.Unlock()
	return h.reached
}

// HoldReport makes reports of state wait before they reach the server
// until Release. The returned channel is closed once a report is held.
func (p *Proxy) HoldReport(state poll.ReportState) <-chan struct{} {
	return p.HoldReportIf(func(r poll.Report) bool { return r.State == state })
}

// HoldReportIf makes reports for which match returns true wait before
// they reach the server until Release. The returned channel is closed
// once a report is held.
func (p *Proxy) HoldReportIf(match func(poll.Report) bool) <-chan struct{} {
	h := newHold()
	h.match = match
	p.mu.Lock()
	p.reportOf = h
	p.mu.Unlock()
	return h.reached
}

// Release lets every held request go on and removes the holds.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range []*hold{p.bundleAt, p.reportOf} {
		if h != nil {
			close(h.release)
		}
	}
	p.bundleAt, p.reportOf = nil, nil
}

// SetBundleRate limits bundle downloads to bytesPerSecond, from the next
// read on; zero removes the limit.
func (p *Proxy) SetBundleRate(bytesPerSecond int64) {
	p.mu.Lock()
	p.rate = bytesPerSecond
	p.mu.Unlock()
}

// Downloads returns the file offset at which each bundle download began:
// 0 for a whole file, the start of the range for a resumed one.
func (p *Proxy) Downloads() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int64(nil), p.downloads...)
}

// Reports returns the reports that went through the proxy, in order,
// held ones included.
func (p *Proxy) Reports() []poll.Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]poll.Report(nil), p.reports...)
}

// handler records reports and holds those matching the held condition,
// then proxies.
func (p *Proxy) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/reports") {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxReportBody))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var rep poll.Report
		if json.Unmarshal(body, &rep) == nil {
			p.mu.Lock()
			p.reports = append(p.reports, rep)
			h := p.reportOf
			p.mu.Unlock()
			if h != nil && h.match(rep) {
				h.reach()
				select {
				case <-h.release:
				case <-r.Context().Done():
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// modifyResponse records bundle downloads and wraps their bodies so that
// they stop at a held offset and keep to the rate limit.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	if !strings.HasPrefix(resp.Request.URL.Path, poll.APIPath+"/bundles/") ||
		resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return nil
	}
	start, err := rangeStart(resp)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.downloads = append(p.downloads, start)
	p.mu.Unlock()
	resp.Body = &heldBody{p: p, rc: resp.Body, pos: start, done: resp.Request.Context().Done(),
		began: time.Now()}
	return nil
}

// rangeStart returns the file offset a bundle response starts at.
func rangeStart(resp *http.Response) (int64, error) {
	if resp.StatusCode != http.StatusPartialContent {
		return 0, nil
	}
	cr := resp.Header.Get("Content-Range")
	spec, ok := strings.CutPrefix(cr, "bytes ")
	first, _, ok2 := strings.Cut(spec, "-")
	start, err := strconv.ParseInt(first, 10, 64)
	if !ok || !ok2 || err != nil {
		return 0, fmt.Errorf("proxy: bad Content-Range %q", cr)
	}
	return start, nil
}

// errHeldDownloadEnded is returned by a held bundle body whose request
// ended, as when the machine lost power.
var errHeldDownloadEnded = errors.New("e2e: proxy: download ended while held")

// heldBody is a bundle response body that stops at the proxy's held
// offset until it is released or the request ends, and that keeps to the
// proxy's rate limit.
type heldBody struct {
	p     *Proxy
	rc    io.ReadCloser
	pos   int64
	done  <-chan struct{}
	began time.Time
	sent  int64 // bytes handed out by this body
}

func (b *heldBody) Read(buf []byte) (int, error) {
	for {
		b.p.mu.Lock()
		h, rate := b.p.bundleAt, b.p.rate
		b.p.mu.Unlock()
		if rate > 0 {
			if err := b.throttle(rate); err != nil {
				return 0, err
			}
			buf = buf[:min(len(buf), throttleChunk)]
		}
		if h == nil || b.pos+int64(len(buf)) <= h.offset {
			break
		}
		if b.pos < h.offset {
			buf = buf[:h.offset-b.pos]
			break
		}
		h.reach()
		select {
		case <-h.release:
		case <-b.done:
			return 0, errHeldDownloadEnded
		}
	}
	n, err := b.rc.Read(buf)
	b.pos += int64(n)
	b.sent += int64(n)
	return n, err
}

// throttle waits until the bytes sent so far fit rate.
func (b *heldBody) throttle(rate int64) error {
	due := b.began.Add(time.Duration(float64(b.sent) / float64(rate) * float64(time.Second)))
	wait := time.Until(due)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-b.done:
		return errHeldDownloadEnded
	}
}

func (b *heldBody) Close() error { return b.rc.Close() }
