package portal

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// InProcessTransport returns an http.RoundTripper that serves each
// request with h, the management API's handler, in the calling goroutine
// instead of sending it over the network. The request body streams into
// h as h reads it, so an upload is never held in memory; the answer is
// gathered in memory, which suits the API's JSON answers. A panic of h
// becomes an error of RoundTrip.
func InProcessTransport(h http.Handler) http.RoundTripper {
	return inProcess{h: h}
}

type inProcess struct {
	h http.Handler
}

// RoundTrip implements http.RoundTripper.
func (t inProcess) RoundTrip(req *http.Request) (resp *http.Response, err error) {
	// The request is the caller's; the handler gets a server-side copy.
	in := req.Clone(req.Context())
	in.RequestURI = req.URL.RequestURI()
	in.Host = req.URL.Host
	in.RemoteAddr = "in-process"
	in.Proto, in.ProtoMajor, in.ProtoMinor = "HTTP/1.1", 1, 1
	if in.Body == nil {
		in.Body = http.NoBody
	}
	if req.Body != nil {
		defer req.Body.Close()
	}
	rec := &recorder{header: http.Header{}}
	defer func() {
		if v := recover(); v != nil {
			resp, err = nil, fmt.Errorf("in-process %s %s: handler panicked: %v",
				req.Method, req.URL.Path, v)
		}
	}()
	t.h.ServeHTTP(rec, in)
	return rec.response(req), nil
}

// recorder is the http.ResponseWriter of an in-process request.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

// Flush implements http.Flusher; the answer is whole only at the end.
func (r *recorder) Flush() {}

func (r *recorder) response(req *http.Request) *http.Response {
	status := r.status
	if status == 0 {
		status = http.StatusOK
	}
	h := r.header.Clone()
	h.Set("Content-Length", strconv.Itoa(r.body.Len()))
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(r.body.Bytes())),
		ContentLength: int64(r.body.Len()),
		Request:       req,
	}
}
