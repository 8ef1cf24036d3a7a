package bundlestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/rotaupdate/rota/bundle"
)

// rangeAttempts is how many requests a read of a registry blob makes
// before it fails: a response cut off midway is resumed from where it
// stopped.
const rangeAttempts = 3

// rangedBlob reads a registry blob with HTTP Range requests. One response
// serves consecutive reads; a read elsewhere in the blob starts a new
// request from there to the end of the blob.
type rangedBlob struct {
	ctx    context.Context
	client *http.Client
	url    string
	digest v1.Hash
	size   int64

	mu   sync.Mutex
	body io.ReadCloser
	pos  int64 // blob offset of the next byte of body
}

// ReadAt reads len(p) bytes of the blob at off, or fails: it never
// returns other bytes than the blob's at that offset.
func (b *rangedBlob) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read blob %s: negative offset %d", b.digest, off)
	}
	if off >= b.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), b.size-off))
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	var err error
	for attempt := 0; n < want && attempt < rangeAttempts; attempt++ {
		if b.body == nil || b.pos != off+int64(n) {
			b.closeBody()
			var final bool
			if final, err = b.request(off + int64(n)); err != nil {
				if final || b.ctx.Err() != nil {
					break
				}
				continue
			}
		}
		var k int
		k, err = io.ReadFull(b.body, p[n:want])
		n += k
		b.pos += int64(k)
		if err != nil {
			b.closeBody()
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: response ended at byte %d of %d", bundle.ErrTruncated, b.pos, b.size)
			}
			if b.ctx.Err() != nil {
				break
			}
		}
	}
	if n < want {
		if err == nil {
			err = bundle.ErrTruncated
		}
		return n, fmt.Errorf("read blob %s: %w", b.digest, err)
	}
	if want < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// request starts a GET of the blob from off to its end. It reports
// whether its error is final: a response that another request would not
// change.
func (b *rangedBlob) request(off int64) (final bool, err error) {
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return true, err
	}
	// Both ends are given: some registries do not understand "off-".
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, b.size-1))
	resp, err := b.client.Do(req)
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		var start, end, total int64
		_, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &start, &end, &total)
		if err != nil || start != off || end < start || end >= b.size || total != b.size {
			resp.Body.Close()
			return true, fmt.Errorf("range %d-%d: response has Content-Range %q",
				off, b.size-1, resp.Header.Get("Content-Range"))
		}
		b.body = &readCloser{io.LimitReader(resp.Body, end-start+1), resp.Body}
	case http.StatusOK:
		// The whole blob, the range ignored: skip to the offset.
		if resp.ContentLength >= 0 && resp.ContentLength != b.size {
			resp.Body.Close()
			return true, fmt.Errorf("%w: registry sends %d bytes, the descriptor says %d",
				bundle.ErrDigestMismatch, resp.ContentLength, b.size)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			resp.Body.Close()
			return false, fmt.Errorf("skip to byte %d: %w", off, err)
		}
		b.body = &readCloser{io.LimitReader(resp.Body, b.size-off), resp.Body}
	default:
		resp.Body.Close()
		return true, fmt.Errorf("GET %s: %s", b.url, resp.Status)
	}
	b.pos = off
	return false, nil
}

func (b *rangedBlob) closeBody() {
	if b.body != nil {
		b.body.Close()
		b.body = nil
	}
}

// Close ends the response under way, if any.
func (b *rangedBlob) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeBody()
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
