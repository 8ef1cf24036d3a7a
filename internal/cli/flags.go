package cli

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// ErrUsage marks a mistake in a command's flags, arguments or ROTA_*
// variables; commands exit with status 2 for it rather than 1.
var ErrUsage = errors.New("usage")

// EnvName returns the environment variable that sets the flag name:
// "ROTA_" and the name in capitals with "-" as "_", so that
// --poll-interval is ROTA_POLL_INTERVAL.
func EnvName(name string) string {
	return "ROTA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// ParseFlags parses args into fs; a flag not given takes its value from
// its EnvName variable when getenv returns a non-empty value for it, so
// that flags win over the environment. A stray argument or a variable
// holding a bad value gives an error wrapping ErrUsage.
func ParseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := EnvName(f.Name)
		v := getenv(env)
		if set[f.Name] || v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s=%q: %v", ErrUsage, env, v, err))
		}
	})
	return errors.Join(errs...)
}
