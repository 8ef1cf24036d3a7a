package poll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Download is a file being downloaded. It reads like one uninterrupted
// body although it may be fetched by several requests: when a connection
// breaks, ends early or stalls, Read asks for the rest with a Range
// request and goes on. Read and Close must not be called concurrently;
// Offset and Size may be called from any goroutine.
//
// A server that ignores Range and sends the whole file again is
// tolerated: the bytes before the offset are read and discarded, which
// costs bandwidth but lets devices behind such servers update at all.
//
// Redirects are followed, with the Range header, and every resume asks
// the original URL again, so that a server may send each request to
// another place, such as a registry or a presigned storage URL that
// expires. The token never leaves the server's origin. Strong ETags are
// compared between answers of the same resource only: its URL after
// redirects, without the query.
type Download struct {
	c    *Client
	ctx  context.Context
	url  string
	auth bool // the URL is on the server's origin and takes the token

	offset atomic.Int64
	size   atomic.Int64      // -1 until known
	etags  map[string]string // the first strong ETag of each resource

	body  io.ReadCloser
	fails int   // interruptions in a row without progress
	done  bool  // the end of the file was reached
	err   error // the error that ended the download
}

// Download starts downloading the file at ref, an absolute URL or one
// relative to the server URL, from byte offset on: an agent that
// restarts passes the number of bytes it already holds. The token is
// sent only when ref is on the server's own origin. ctx governs the
// whole download, including later reads.
func (c *Client) Download(ctx context.Context, ref string, offset int64) (*Download, error) {
	const op = "download"
	u, same, err := c.resolve(ref)
	if err == nil && offset < 0 {
		err = invalid("negative offset %d", offset)
	}
	if err != nil {
		return nil, &Error{Op: op, URL: ref, Err: err}
	}

	d := &Download{c: c, ctx: ctx, url: u.String(), auth: same}
	d.offset.Store(offset)
	d.size.Store(-1)
	if err := d.reopen(); err != nil {
		return nil, err
	}
	return d, nil
}

// Offset returns the absolute position of the next byte Read returns.
func (d *Download) Offset() int64 { return d.offset.Load() }

// Size returns the size of the whole file, or -1 while it is unknown.
func (d *Download) Size() int64 { return d.size.Load() }

// Read reads the next bytes of the file, resuming as needed. It returns
// io.EOF at the end of the file, or an *Error once RetryMax resumes in a
// row made no progress.
func (d *Download) Read(p []byte) (int, error) {
	for {
		switch {
		case d.err != nil:
			return 0, d.err
		case d.done:
			return 0, io.EOF
		case d.body == nil:
			if err := d.reopen(); err != nil {
				d.err = err
				return 0, err
			}
			continue
		}

		n, err := d.body.Read(p)
		if n > 0 {
			d.offset.Add(int64(n))
			d.fails = 0
		}
		if err == nil {
			return n, nil
		}
		if errors.Is(err, io.EOF) {
			if err = d.atEnd(); err == nil {
				d.done = true
				d.closeBody()
				return n, io.EOF
			}
		}

		d.closeBody()
		if err := d.interrupted(err); err != nil {
			d.err = err
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// Close ends the download and releases its connection.
func (d *Download) Close() error {
	d.closeBody()
	if d.err == nil {
		d.err = &Error{Op: "download", URL: d.url, Err: errors.New("read after close")}
	}
	return nil
}

func (d *Download) closeBody() {
	if d.body != nil {
		d.body.Close()
		d.body = nil
	}
}

// atEnd checks, at the end of a body, that the file is complete.
func (d *Download) atEnd() error {
	size, off := d.size.Load(), d.offset.Load()
	switch {
	case size < 0 || off == size:
		return nil
	case off > size:
		return fmt.Errorf("%w: read %d bytes of a %d-byte file", ErrBadRange, off, size)
	}
	return fmt.Errorf("body ended at byte %d of %d: %w", off, size, io.ErrUnexpectedEOF)
}

// interrupted decides whether to resume after a body failed with cause,
// and returns the error that ends the download if not.
func (d *Download) interrupted(cause error) error {
	if d.ctx.Err() != nil {
		return &Error{Op: "download", URL: d.url, Err: d.ctx.Err()}
	}
	if errors.Is(cause, ErrBadRange) {
		return &Error{Op: "download", URL: d.url, Err: cause}
	}
	d.fails++
	if d.fails > d.c.cfg.RetryMax {
		return &Error{Op: "download", URL: d.url,
			Err: fmt.Errorf("giving up after %d interruptions: %w", d.fails, cause)}
	}
	d.c.log.Warn("download interrupted, resuming",
		"url", d.url, "offset", d.offset.Load(), "err", cause)
	return nil
}

// reopen requests the rest of the file, retrying temporary failures up
// to RetryMax times in a row.
func (d *Download) reopen() error {
	for {
		if d.fails > 0 {
			wait := backoff(d.c.cfg.RetryWaitMin, d.c.cfg.RetryWaitMax, d.fails-1, nil)
			if err := sleep(d.ctx, wait); err != nil {
				return &Error{Op: "download", URL: d.url, Err: err}
			}
		}
		err := d.open()
		if err == nil {
			return nil
		}
		var e *Error
		if !errors.As(err, &e) || !e.Temporary() || errors.Is(err, ErrPending) ||
			e.RetryAfter > d.c.cfg.MaxRetryAfter || d.fails >= d.c.cfg.RetryMax {
			return err
		}
		d.fails++
		d.c.log.Warn("download failed, retrying", "url", d.url, "err", err)
	}
}

// open sends one GET for the bytes from the current offset on.
func (d *Download) open() error {
	off := d.offset.Load()
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithCancel(d.ctx)
		req, err := retryablehttp.NewRequestWithContext(rctx, http.MethodGet, d.url, nil)
		if err != nil {
			cancel()
			return &Error{Op: "download", URL: d.url, Err: err}
		}
		// Ask for the bytes as stored, so that offsets count file bytes.
		req.Header.Set("Accept-Encoding", "identity")
		if off > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
		}
		var token string
		if d.auth {
			if token, err = d.c.bearer(d.ctx); err != nil {
				cancel()
				return err
			}
			req.Header.Set("Authorization", "Bearer "+token)
		}

		resp, err := d.c.dl.Do(req)
		if err != nil {
			cancel()
			e := &Error{Op: "download", URL: d.url, Err: err}
			if resp != nil {
				e.StatusCode = resp.StatusCode
				resp.Body.Close()
			}
			return e
		}
		if resp.StatusCode == http.StatusUnauthorized && d.auth && attempt == 0 &&
			d.fromServer(resp) {
			resp.Body.Close()
			cancel()
			d.c.dropToken(token)
			continue
		}
		if err := d.accept(resp, off, cancel); err != nil {
			resp.Body.Close()
			cancel()
			return err
		}
		return nil
	}
}

// accept checks an answer to a download request and makes its body the
// one Read continues from.
func (d *Download) accept(resp *http.Response, off int64, cancel context.CancelFunc) error {
	fail := func(err error) error {
		return &Error{Op: "download", URL: d.url, StatusCode: resp.StatusCode, Err: err}
	}

	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fail(err)
		}
		if start != off {
			return fail(fmt.Errorf("%w: asked for byte %d on, got %d on", ErrBadRange, off, start))
		}
		if err := d.setSize(total); err != nil {
			return fail(err)
		}
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			if err := d.setSize(resp.ContentLength); err != nil {
				return fail(err)
			}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		total := int64(-1)
		if _, t, ok := strings.Cut(resp.Header.Get("Content-Range"), "/"); ok {
			total, _ = strconv.ParseInt(t, 10, 64)
		}
		if total != off || d.setSize(total) != nil {
			return fail(fmt.Errorf("%w: byte %d on of a %d-byte file",
				ErrRangeNotSatisfiable, off, total))
		}
		// The file was complete already, as after a restart at its end.
		resp.Body.Close()
		cancel()
		d.done = true
		return nil
	default:
		body, _ := readCapped(resp.Body, maxProblemSize)
		e := statusError("download", d.url, resp.StatusCode, resp.Header, body)
		if d.auth && !d.fromServer(resp) {
			// Not the server's refusal of the device: where it sent it.
			e.Err = fmt.Errorf("redirected to %s: %s", resource(resp),
				strings.ToLower(http.StatusText(resp.StatusCode)))
		}
		return e
	}

	if err := d.sameFile(resource(resp), resp.Header.Get("ETag")); err != nil {
		return fail(err)
	}

	var body io.ReadCloser = cancelOnClose{resp.Body, cancel}
	if d.c.cfg.MinThroughput > 0 {
		body = watch(body, cancel, d.c.cfg.MinThroughput, d.c.cfg.ThroughputWindow)
	}
	d.body = body
	if resp.StatusCode == http.StatusOK && off > 0 {
		d.c.log.Debug("server ignored range, skipping", "url", d.url, "offset", off)
		if _, err := io.CopyN(io.Discard, body, off); err != nil {
			d.closeBody()
			return fail(fmt.Errorf("skip to byte %d: %w", off, err))
		}
	}
	return nil
}

// setSize records the file's size, failing if it changed.
func (d *Download) setSize(total int64) error {
	if total < 0 {
		return nil
	}
	if old := d.size.Load(); old >= 0 && old != total {
		return fmt.Errorf("%w: file size changed from %d to %d", ErrBadRange, old, total)
	}
	d.size.Store(total)
	return nil
}

// sameFile compares a resumed answer's strong ETag with the first one
// of the same resource. Different resources tag the same file
// differently, so those are not compared.
func (d *Download) sameFile(resource, etag string) error {
	if etag == "" || strings.HasPrefix(etag, "W/") {
		return nil
	}
	first, ok := d.etags[resource]
	if !ok {
		if d.etags == nil {
			d.etags = map[string]string{}
		}
		d.etags[resource] = etag
		return nil
	}
	if etag != first {
		return fmt.Errorf("%w: etag %s, was %s", ErrChanged, etag, first)
	}
	return nil
}

// fromServer reports whether resp came from the server's origin rather
// than from where a redirect led.
func (d *Download) fromServer(resp *http.Response) bool {
	if resp.Request == nil || resp.Request.URL == nil {
		return d.auth
	}
	return d.c.sameOrigin(resp.Request.URL)
}

// resource names what answered resp: the URL of the last request after
// redirects, without its query, which may hold an expiring signature.
func resource(resp *http.Response) string {
	if resp.Request == nil || resp.Request.URL == nil {
		return ""
	}
	u := *resp.Request.URL
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment, u.User = "", false, "", "", nil
	return u.String()
}

// parseContentRange parses "bytes first-last/total"; total is -1 for "*".
func parseContentRange(v string) (first, last, total int64, err error) {
	bad := fmt.Errorf("%w: content-range %.80q", ErrBadRange, v)
	spec, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, size, ok := strings.Cut(spec, "/")
	firstS, lastS, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return 0, 0, 0, bad
	}
	first, err1 := strconv.ParseInt(firstS, 10, 64)
	last, err2 := strconv.ParseInt(lastS, 10, 64)
	total = -1
	var err3 error
	if size != "*" {
		total, err3 = strconv.ParseInt(size, 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || first < 0 || last < first ||
		(total >= 0 && last >= total) {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
