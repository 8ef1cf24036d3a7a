// Command installbench is the server side of scripts/bench-install.sh: a
// static file server with Range support for `rota install http://...`,
// and a stub of the device API for rota-client.
//
//	installbench serve --dir DIR [--addr 127.0.0.1:0] [--addr-file FILE]
//	                   [--bundle NAME] [--poll SECONDS]
//
// Files under DIR are served at /files/NAME with http.ServeContent, so
// single byte ranges work as the device API requires. The device API stub
// admits every device, answers checks with no update until the update is
// offered (POST /bench/offer), then with the bundle NAME; it accepts
// reports and inventories. GET /bench/state returns the number of checks
// and the report states seen so far, as JSON, for the script to wait on;
// POST /bench/reset withdraws the offer and clears both.
//
// The stub checks no signature and keeps no devices: it exists to
// measure the agent, not to test the protocol (poll/polltest does that).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/poll"
)

// Defaults of the serve command.
const (
	// DefaultAddr is where the server listens: loopback, any free port.
	DefaultAddr = "127.0.0.1:0"

	// DefaultPollInterval is the poll interval, in seconds, sent with
	// every check; clients clamp it to at least poll.MinPollInterval.
	DefaultPollInterval = 5

	// tokenLifetime is the lifetime of the tokens the stub issues; long
	// enough that no benchmark renews one.
	tokenLifetime = 24 * time.Hour

	// maxRequestSize caps the request bodies the stub reads.
	maxRequestSize = 1 << 20

	// readHeaderTimeout bounds reading a request's headers.
	readHeaderTimeout = 10 * time.Second

	// shutdownTimeout bounds the graceful shutdown after SIGTERM.
	shutdownTimeout = 5 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "installbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "serve" {
		return errors.New("usage: installbench serve --dir DIR [flags]")
	}
	fs := flag.NewFlagSet("installbench serve", flag.ContinueOnError)
	dir := fs.String("dir", "", "`directory` of the files to serve; required")
	addr := fs.String("addr", DefaultAddr, "listen `address`")
	addrFile := fs.String("addr-file", "", "write the base URL to this `file` once listening")
	bundleName := fs.String("bundle", "", "bundle file `name` in DIR offered as the update")
	pollSecs := fs.Int("poll", DefaultPollInterval, "poll interval `seconds` sent to devices")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("serve: --dir is required")
	}

	st := &stub{dir: *dir, poll: *pollSecs}
	if *bundleName != "" {
		u, err := updateFor(*dir, *bundleName)
		if err != nil {
			return err
		}
		st.update = u
	}
	return serve(ctx, *addr, *addrFile, st.handler())
}

// updateFor describes the bundle NAME in dir as the update to offer.
func updateFor(dir, name string) (*poll.Update, error) {
	path := filepath.Join(dir, name)
	b, err := bundle.Open(path, bundle.Options{})
	if err != nil {
		return nil, fmt.Errorf("open bundle %s: %w", path, err)
	}
	defer b.Close()
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("stat bundle %s: %w", path, err)
	}
	return &poll.Update{
		DeploymentID: "bench-1",
		Version:      b.Config().Version,
		BundleURL:    "/files/" + name,
		Digest:       b.Digest(),
		Size:         fi.Size(),
	}, nil
}

// serve runs h on addr until ctx ends, writing the base URL to addrFile.
func serve(ctx context.Context, addr, addrFile string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	url := "http://" + ln.Addr().String()
	if addrFile != "" {
		if err := os.WriteFile(addrFile, []byte(url+"\n"), 0o644); err != nil {
			ln.Close()
			return fmt.Errorf("write address file: %w", err)
		}
	}
	slog.Info("serving", "url", url)

	srv := &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", url, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down %s: %w", url, err)
	}
	return nil
}

// stub is the device API stub and the file server.
type stub struct {
	dir  string
	poll int

	mu      sync.Mutex // guards the fields below
	update  *poll.Update
	offered bool
	checks  int
	reports []poll.ReportState
}

func (s *stub) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+poll.APIPath+"/auth", s.auth)
	mux.HandleFunc("POST "+poll.APIPath+"/check", s.check)
	mux.HandleFunc("POST "+poll.APIPath+"/deployments/{id}/reports", s.report)
	mux.HandleFunc("PUT "+poll.APIPath+"/inventory", s.inventory)
	mux.HandleFunc("GET /files/{name}", s.file)
	mux.HandleFunc("POST /bench/offer", s.offer)
	mux.HandleFunc("GET /bench/state", s.state)
	mux.HandleFunc("POST /bench/reset", s.reset)
	return mux
}

func (s *stub) auth(w http.ResponseWriter, r *http.Request) {
	var req poll.AuthRequest
	if !readJSON(w, r, &req) {
		return
	}
	writeJSON(w, http.StatusOK, poll.AuthResponse{
		Status:    poll.AuthAccepted,
		Token:     "bench-token",
		ExpiresAt: time.Now().Add(tokenLifetime).UTC().Truncate(time.Second),
	})
}

func (s *stub) check(w http.ResponseWriter, r *http.Request) {
	var req poll.CheckRequest
	if !readJSON(w, r, &req) {
		return
	}
	s.mu.Lock()
	s.checks++
	resp := poll.CheckResponse{PollInterval: s.poll}
	if s.offered {
		resp.Update = s.update
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, resp)
}

func (s *stub) report(w http.ResponseWriter, r *http.Request) {
	var rep poll.Report
	if !readJSON(w, r, &rep) {
		return
	}
	s.mu.Lock()
	s.reports = append(s.reports, rep.State)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *stub) inventory(w http.ResponseWriter, r *http.Request) {
	var req poll.InventoryRequest
	if !readJSON(w, r, &req) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// file serves a file of the directory with Range support.
func (s *stub) file(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !filepath.IsLocal(name) {
		http.Error(w, "bad file name", http.StatusBadRequest)
		return
	}
	f, err := os.Open(filepath.Join(s.dir, name))
	if err != nil {
		http.Error(w, "no such file", http.StatusNotFound)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.Error(w, "not a regular file", http.StatusNotFound)
		return
	}
	// A strong ETag from size and time lets a resuming client check that
	// the file did not change between its requests.
	w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

func (s *stub) offer(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.update == nil {
		http.Error(w, "no bundle to offer (start with --bundle)", http.StatusConflict)
		return
	}
	s.offered = true
	w.WriteHeader(http.StatusNoContent)
}

func (s *stub) reset(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offered, s.checks, s.reports = false, 0, nil
	w.WriteHeader(http.StatusNoContent)
}

// benchState is the answer of GET /bench/state.
type benchState struct {
	Checks  int                `json:"checks"`
	Reports []poll.ReportState `json:"reports"`
}

func (s *stub) state(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	st := benchState{Checks: s.checks, Reports: append([]poll.ReportState{}, s.reports...)}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, st)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestSize))
	if err := dec.Decode(v); err != nil {
		http.Error(w, "decode request: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
