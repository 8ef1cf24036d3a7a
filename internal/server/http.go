package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/rotaupdate/rota/poll"
)

// readJSON decodes the request body, of at most MaxRequestSize bytes and
// holding one JSON value, into v. On failure it answers 400 or 413 and
// returns false. Unknown fields are ignored, so that newer devices may
// send more than this server knows.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeBody(w, r, v, false)
}

// readStrictJSON is readJSON for requests of people and their scripts,
// where a misspelt field must not pass silently: the body must be
// declared as JSON (415 otherwise), and a field v does not know is
// refused with 400. Requiring the media type also keeps cross-site HTML
// forms, which cannot send it, from posting to the API.
func readStrictJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if !isJSONType(r.Header.Get("Content-Type")) {
		writeProblem(w, http.StatusUnsupportedMediaType,
			"request body must be application/json")
		return false
	}
	return decodeBody(w, r, v, true)
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any, strict bool) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestSize))
	if strict {
		dec.DisallowUnknownFields()
	}
	err := dec.Decode(v)
	if err == nil && dec.Decode(new(json.RawMessage)) != io.EOF {
		err = errors.New("data after the JSON value")
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooBig):
		writeProblem(w, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("request body over %d bytes", MaxRequestSize))
	case errors.Is(err, io.EOF):
		writeProblem(w, http.StatusBadRequest, "decode request: empty body")
	default:
		writeProblem(w, http.StatusBadRequest, "decode request: "+err.Error())
	}
	return false
}

// isJSONType reports whether a Content-Type header names JSON:
// application/json or a type with the +json suffix, parameters allowed.
func isJSONType(header string) bool {
	mt, _, err := mime.ParseMediaType(header)
	return err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") &&
		strings.HasSuffix(mt, "+json"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// The wire types hold nothing that fails to marshal but JSON kept
		// by the store, which it wrote itself; a failure is a bug.
		writeProblem(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	body, _ := json.Marshal(poll.Problem{
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
	})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	w.Write(body)
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// etagMatch reports whether an If-None-Match header names etag.
func etagMatch(header, etag string) bool {
	for _, v := range strings.Split(header, ",") {
		v = strings.TrimSpace(v)
		if v == etag || v == "*" {
			return true
		}
	}
	return false
}
