// Command rota-server is the ROTA update server: it admits devices,
// stores signed releases, runs deployments with rollout strategies and
// records every device's state, behind the device API and the management
// API.
//
//	rota-server [serve] [flags]    run the server (the default)
//	rota-server token create ...   create a management API token offline
//
// With no flags it listens on :8080 and keeps everything under
// ./rota-data: a SQLite database, bundles in an OCI image layout and
// release signing keys in rota-data/keys. Every flag may also be set by a
// ROTA_* environment variable; see rota-server -h.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rotaupdate/rota/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "rota-server:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "rota-server:", err)
		os.Exit(1)
	}
}

// errUsage marks a mistake in the command line or the environment.
var errUsage = cli.ErrUsage

func run(ctx context.Context, args []string, stdout, stderr io.Writer,
	getenv func(string) string) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return runServe(ctx, args, stdout, stderr, getenv)
	case "token":
		return runToken(ctx, args, stdout, stderr, getenv)
	case "help":
		fmt.Fprintln(stdout, "usage: rota-server [serve|token] [flags]; see rota-server COMMAND -h")
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}
