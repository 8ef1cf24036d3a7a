package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/rotaupdate/rota/internal/cli"
	"github.com/rotaupdate/rota/internal/server"
	"github.com/rotaupdate/rota/internal/store"
)

// runToken creates a management API token directly in the database, for
// automation that must start before anyone has signed in: provisioning
// scripts, CI, the demo. It prints the secret, shown this once.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer,
	getenv func(string) string) error {
	if len(args) == 0 || args[0] != "create" {
		return fmt.Errorf("%w: rota-server token create --name NAME --role ROLE "+
			"[--expires DURATION] [--data DIR] [--database URL]", errUsage)
	}
	var c config
	fs := flag.NewFlagSet("rota-server token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.data, "data", "rota-data", "the server's data `directory`")
	fs.StringVar(&c.database, "database", "",
		"the server's database: a SQLite file `path` or a postgres:// URL (default DATA/rota.db)")
	name := fs.String("name", "", "what the token is for; required")
	role := fs.String("role", "", "admin, operator or viewer; required")
	expires := fs.Duration("expires", 0, "lifetime of the token; 0 means it never expires")
	asJSON := fs.Bool("json", false, "print the token as JSON, with its ID")
	if err := parseFlags(fs, args[1:], getenv); err != nil {
		return err
	}
	r := store.Role(*role)
	switch {
	case *name == "":
		return fmt.Errorf("%w: --name is required", errUsage)
	case r != store.RoleAdmin && r != store.RoleOperator && r != store.RoleViewer:
		return fmt.Errorf("%w: --role must be admin, operator or viewer", errUsage)
	case *expires < 0:
		return fmt.Errorf("%w: --expires is negative", errUsage)
	}
	if c.database == "" {
		c.database = c.data + "/rota.db"
	}
	if !c.postgres() && !exists(c.database) {
		return fmt.Errorf("no database at %s: start rota-server with this --data first",
			c.database)
	}

	st, err := openStore(ctx, &c, cli.NewLogger(stderr, "text", "warn"))
	if err != nil {
		return err
	}
	defer st.Close()
	var until time.Time
	if *expires > 0 {
		until = time.Now().Add(*expires).UTC()
	}
	secret, tok, err := server.NewAPIToken(*name, r, until)
	if err != nil {
		return err
	}
	audit := store.AuditEntry{Actor: "system:cli", Action: "token.create",
		Object: "token:" + tok.ID}
	audit.Details, _ = json.Marshal(map[string]any{"name": tok.Name, "role": tok.Role})
	tok, err = st.CreateToken(store.WithAudit(ctx, audit), tok)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{"id": tok.ID, "name": tok.Name,
			"role": tok.Role, "secret": secret})
	}
	fmt.Fprintln(stdout, secret)
	return nil
}
