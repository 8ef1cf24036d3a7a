package poll

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Sentinel errors. The client wraps them in an *Error, so test them with
// errors.Is.
var (
	// ErrRejected is returned when an operator refused the device, on
	// authentication or on any later request answered 403.
	ErrRejected = errors.New("poll: device rejected")

	// ErrPending is returned while the device waits for admission; the
	// *Error's RetryAfter says when to ask again, if the server said.
	ErrPending = errors.New("poll: admission pending")

	// ErrUnauthorized is returned when the server refuses the token even
	// right after a fresh authentication.
	ErrUnauthorized = errors.New("poll: unauthorized")

	// ErrTooLarge is returned when a response body is larger than
	// Config.MaxResponseSize.
	ErrTooLarge = errors.New("poll: response too large")

	// ErrInvalid is returned by the Validate methods, and by the client
	// for a malformed request or answer.
	ErrInvalid = errors.New("poll: invalid request")

	// ErrStalled is returned when a download stayed below
	// Config.MinThroughput and no resume succeeded.
	ErrStalled = errors.New("poll: download stalled")

	// ErrBadRange is returned when a download answer covers other bytes
	// than the ones asked for, or announces a size that changed.
	ErrBadRange = errors.New("poll: bad content range")

	// ErrRangeNotSatisfiable is returned when the server answers 416 to a
	// download that does not start exactly at the end of the file.
	ErrRangeNotSatisfiable = errors.New("poll: range not satisfiable")

	// ErrChanged is returned when a resumed download's ETag differs from
	// the first one: the file changed on the server.
	ErrChanged = errors.New("poll: file changed during download")
)

// Error is the error returned by every operation of a Client.
type Error struct {
	// Op is the operation: "authenticate", "check", "download",
	// "report" or "inventory".
	Op string

	// URL is the URL of the request.
	URL string

	// StatusCode is the HTTP status of the answer; zero if there was
	// none, as after a network failure.
	StatusCode int

	// RetryAfter is how long the server asked the device to wait; zero
	// if it did not say.
	RetryAfter time.Duration

	// Problem is the server's problem document; nil if it sent none.
	Problem *Problem

	// Err is the cause.
	Err error
}

// Error describes the failure by operation, URL, status and cause.
func (e *Error) Error() string {
	s := e.Op + " " + e.URL
	if e.StatusCode != 0 {
		s = fmt.Sprintf("%s: status %d", s, e.StatusCode)
	}
	if e.Err != nil {
		s = fmt.Sprintf("%s: %v", s, e.Err)
	}
	if e.Problem != nil && e.Problem.Detail != "" {
		s = fmt.Sprintf("%s (%s)", s, e.Problem.Detail)
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the same request may succeed later: after a
// network failure, a timeout, a stall, while admission is pending, or on
// status 408, 429 and 5xx other than 501. It is false for refusals,
// malformed or oversized answers, and cancellation by the caller.
func (e *Error) Temporary() bool {
	switch {
	case errors.Is(e.Err, context.Canceled):
		return false
	case errors.Is(e.Err, ErrPending), errors.Is(e.Err, ErrStalled):
		return true
	case errors.Is(e.Err, ErrRejected), errors.Is(e.Err, ErrTooLarge),
		errors.Is(e.Err, ErrInvalid), errors.Is(e.Err, ErrBadRange),
		errors.Is(e.Err, ErrChanged), errors.Is(e.Err, ErrRangeNotSatisfiable),
		errors.Is(e.Err, ErrUnauthorized):
		return false
	case e.StatusCode < 300:
		// No answer, or a good one whose body broke off.
		return true
	}
	return retryableStatus(e.StatusCode)
}

// retryableStatus reports whether a status is worth retrying: 408, 429
// and the 5xx family except 501.
func retryableStatus(code int) bool {
	switch {
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		return true
	case code >= 500 && code != http.StatusNotImplemented:
		return true
	}
	return false
}
