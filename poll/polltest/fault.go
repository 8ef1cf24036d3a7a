package polltest

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Fault describes how one request fails. The zero Fault fails nothing.
type Fault struct {
	// Status, if set, answers the request with this status and a problem
	// document instead of handling it.
	Status int

	// RetryAfter is sent as the Retry-After header with Status.
	RetryAfter string

	// Oversize, if set, answers the request with a 200 JSON body of this
	// many bytes instead of handling it.
	Oversize int64

	// After is the number of body bytes sent before Cut or Stall acts.
	After int64

	// Cut closes the connection abruptly once After body bytes are sent.
	Cut bool

	// Stall pauses the body for this long once After bytes are sent, or
	// until the client goes away.
	Stall time.Duration

	// RangeShift is added to the first byte announced in a Content-Range
	// header, making it wrong.
	RangeShift int64

	// IgnoreRange answers as if the request had no Range header.
	IgnoreRange bool
}

// Fault queues faults for the next requests to path, one per request, in
// order; requests after the queue is empty succeed.
func (s *Server) Fault(path string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[path] = append(s.faults[path], faults...)
}

func (s *Server) nextFault(path string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits[path]++
	q := s.faults[path]
	if len(q) == 0 {
		return Fault{}, false
	}
	s.faults[path] = q[1:]
	return q[0], true
}

func (s *Server) withFaults(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := s.nextFault(r.URL.Path)
		switch {
		case !ok:
			next.ServeHTTP(w, r)
		case f.Status != 0:
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			writeProblem(w, f.Status, "injected fault")
		case f.Oversize > 0:
			writeOversize(w, f.Oversize)
		default:
			if f.IgnoreRange {
				r.Header.Del("Range")
			}
			next.ServeHTTP(&faultWriter{ResponseWriter: w, r: r, f: f}, r)
		}
	})
}

// writeOversize streams a JSON document of n bytes without holding it.
func writeOversize(w http.ResponseWriter, n int64) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	chunk := []byte(strings.Repeat(" ", 32<<10))
	fmt.Fprint(w, "{")
	for left := n - 2; left > 0; left -= int64(len(chunk)) {
		if _, err := w.Write(chunk[:min(left, int64(len(chunk)))]); err != nil {
			return
		}
	}
	fmt.Fprint(w, "}")
}

// faultWriter applies a fault to a response as the handler writes it.
type faultWriter struct {
	http.ResponseWriter
	r       *http.Request
	f       Fault
	written int64
	stalled bool
}

func (w *faultWriter) WriteHeader(status int) {
	if cr := w.Header().Get("Content-Range"); w.f.RangeShift != 0 && cr != "" {
		w.Header().Set("Content-Range", shiftRange(cr, w.f.RangeShift))
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *faultWriter) Write(p []byte) (int, error) {
	acting := w.f.Cut || (w.f.Stall > 0 && !w.stalled)
	if !acting || w.written+int64(len(p)) <= w.f.After {
		n, err := w.ResponseWriter.Write(p)
		w.written += int64(n)
		return n, err
	}

	head := max(w.f.After-w.written, 0)
	n, err := w.ResponseWriter.Write(p[:head])
	w.written += int64(n)
	if err != nil {
		return n, err
	}
	http.NewResponseController(w.ResponseWriter).Flush()
	if w.f.Cut {
		// Tells net/http to drop the connection without logging.
		panic(http.ErrAbortHandler)
	}

	w.stalled = true
	t := time.NewTimer(w.f.Stall)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.r.Context().Done():
		return n, w.r.Context().Err()
	}
	m, err := w.ResponseWriter.Write(p[head:])
	w.written += int64(m)
	return n + m, err
}

// shiftRange moves the first byte of a "bytes first-last/total" header.
func shiftRange(cr string, by int64) string {
	var first, last int64
	var total string
	if _, err := fmt.Sscanf(cr, "bytes %d-%d/%s", &first, &last, &total); err != nil {
		return cr
	}
	return fmt.Sprintf("bytes %d-%d/%s", first+by, last+by, total)
}
