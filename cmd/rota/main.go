// Command rota manages ROTA signing keys, bundles and a device's slots.
//
//	rota key generate --out NAME
//	rota bundle create|sign|verify|inspect|push|pull|extract ...
//	rota slot status|mark-good|mark-bad|mark-active ...
//	rota install [--keyring PUB] SOURCE
//
// Run "rota help" for the full list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one "rota ..." subcommand.
type command struct {
	usage string // one line: the arguments after the command name
	short string // one line: what it does
	run   func(ctx context.Context, env *cliEnv, args []string) error
}

// cliEnv carries what commands read from and write to, so tests can run
// them in process.
type cliEnv struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// commands maps "group verb" (or a single word) to its implementation.
// Each file of this package registers its own commands in init.
var commands = map[string]command{}

func register(name string, c command) {
	if _, dup := commands[name]; dup {
		panic("rota: command registered twice: " + name)
	}
	commands[name] = c
}

// errUsage marks errors caused by wrong arguments; they exit with status 2.
var errUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &cliEnv{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
	}, os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit status:
// 0 on success, 1 on failure, 2 on a usage error.
func run(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printHelp(env.stdout)
		return 0
	}
	name, rest := lookup(args)
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(env.stderr, "rota: unknown command %q; run \"rota help\"\n",
			strings.Join(args[:min(2, len(args))], " "))
		return 2
	}
	err := c.run(ctx, env, rest)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(env.stderr, "rota %s: %v\nusage: rota %s %s\n", name, err, name, c.usage)
		return 2
	default:
		fmt.Fprintf(env.stderr, "rota %s: %v\n", name, err)
		return 1
	}
}

// lookup finds the longest registered command name that prefixes args.
func lookup(args []string) (string, []string) {
	if len(args) >= 2 {
		if _, ok := commands[args[0]+" "+args[1]]; ok {
			return args[0] + " " + args[1], args[2:]
		}
	}
	return args[0], args[1:]
}

func printHelp(w io.Writer) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "rota: keys, bundles and slots for ROTA over-the-air updates")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  rota %s %s\n      %s\n", n, c.usage, c.short)
	}
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(env *cliEnv, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("rota "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "usage: rota %s %s\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args allowing flags after positional arguments, as in
// "rota bundle verify IN.rota --keyring k.pub".
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
