package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/rotaupdate/rota/slot"
)

// Environment variables read by the slot commands (and "rota install").
const (
	// configEnv names the device configuration file when --config is not
	// given; slot.DefaultConfigPath when unset.
	configEnv = "ROTA_CONFIG"

	// cmdlineEnv names a file to read the kernel command line from instead
	// of /proc/cmdline, for chroots, containers and tests.
	cmdlineEnv = "ROTA_CMDLINE"
)

// Slot arguments with a meaning of their own; the configuration refuses
// them as slot names.
const (
	targetBooted = "booted"
	targetOther  = "other"
)

func init() {
	register("slot status", command{
		usage: "[--config PATH] [--json]",
		short: "show the device's slots, their boot state and what they hold",
		run:   runSlotStatus,
	})
	register("slot mark-good", command{
		usage: "[--config PATH] [booted|other|SLOT]",
		short: "confirm a slot (default: the booted one) so the boot loader keeps it",
		run: func(ctx context.Context, env *cliEnv, args []string) error {
			return runSlotMark(ctx, env, "mark-good", targetBooted, args)
		},
	})
	register("slot mark-bad", command{
		usage: "[--config PATH] [booted|other|SLOT]",
		short: "stop the boot loader from booting a slot (default: the booted one)",
		run: func(ctx context.Context, env *cliEnv, args []string) error {
			return runSlotMark(ctx, env, "mark-bad", targetBooted, args)
		},
	})
	register("slot mark-active", command{
		usage: "[--config PATH] [--attempts N] [booted|other|SLOT]",
		short: "boot a slot next, on trial (default: the other one)",
		run: func(ctx context.Context, env *cliEnv, args []string) error {
			return runSlotMark(ctx, env, "mark-active", targetOther, args)
		},
	})
}

// openSystem loads the device configuration from configPath (or $ROTA_CONFIG,
// or slot.DefaultConfigPath) and opens its System.
func openSystem(env *cliEnv, configPath string) (*slot.System, *slot.Config, error) {
	if configPath == "" {
		configPath = env.getenv(configEnv)
	}
	if configPath == "" {
		configPath = slot.DefaultConfigPath
	}
	cfg, err := slot.LoadConfig(configPath)
	if err != nil {
		return nil, nil, err
	}

	var opts []slot.Option
	if p := env.getenv(cmdlineEnv); p != "" {
		opts = append(opts, slot.WithCmdline(p))
	}
	sys, err := slot.Open(cfg, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", configPath, err)
	}
	return sys, cfg, nil
}

func runSlotStatus(ctx context.Context, env *cliEnv, args []string) error {
	const usage = "[--config PATH] [--json]"
	fs := newFlags(env, "slot status", usage)
	configPath := fs.String("config", "", "device configuration `file` "+
		"(default $"+configEnv+" or "+slot.DefaultConfigPath+")")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErr("unexpected argument %q", rest[0])
	}

	sys, _, err := openSystem(env, *configPath)
	if err != nil {
		return err
	}
	st, err := sys.Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return printStatus(env.stdout, st)
}

// printStatus writes st as a summary and a table, one row per slot.
func printStatus(w io.Writer, st *slot.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	booted := st.Booted
	if booted == "" {
		booted = "unknown (" + st.BootedError + ")"
	}
	fmt.Fprintf(tw, "compatible\t%s\n", st.Compatible)
	fmt.Fprintf(tw, "bootloader\t%s\n", st.Backend)
	fmt.Fprintf(tw, "booted\t%s\n", booted)
	fmt.Fprintf(tw, "primary\t%s\n", slotDash(st.Primary))
	fmt.Fprintf(tw, "rollback index\t%d\n", st.RollbackIndex)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tCLASS\tBOOTNAME\tDEVICE\tBOOTED\tPRIMARY\tBOOT\t"+
		"VERSION\tINSTALL\tINSTALLED\tCOUNT")
	for _, s := range st.Slots {
		boot := slotDash(s.Boot)
		if s.Boot == slot.BootTrying && s.AttemptsLeft >= 0 {
			boot = fmt.Sprintf("%s(%d)", s.Boot, s.AttemptsLeft)
		}
		version, state, installed, count := "-", "-", "-", "0"
		if rec := s.Install; rec != nil {
			version = slotDash(rec.Version)
			state = string(rec.State)
			if !rec.InstalledAt.IsZero() {
				installed = rec.InstalledAt.UTC().Format(time.RFC3339)
			}
			count = strconv.Itoa(rec.Count)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			s.Name, s.Class, slotDash(s.Bootname), s.Device,
			slotStar(s.Booted), slotStar(s.Primary), boot, version, state, installed, count)
	}
	return tw.Flush()
}

// slotDash shows an empty table cell as "-".
func slotDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// slotStar shows a flag as "*" or "-".
func slotStar(b bool) string {
	if b {
		return "*"
	}
	return "-"
}

// runSlotMark implements mark-good, mark-bad and mark-active; def is the
// slot argument used when none is given.
func runSlotMark(ctx context.Context, env *cliEnv, verb, def string, args []string) error {
	name := "slot " + verb
	usage := "[--config PATH] [booted|other|SLOT]"
	if verb == "mark-active" {
		usage = "[--config PATH] [--attempts N] [booted|other|SLOT]"
	}
	fs := newFlags(env, name, usage)
	configPath := fs.String("config", "", "device configuration `file` "+
		"(default $"+configEnv+" or "+slot.DefaultConfigPath+")")
	var attempts *int
	if verb == "mark-active" {
		attempts = fs.Int("attempts", 0, "boot tries the slot gets (default: boot-attempts "+
			"from the configuration)")
	}
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 1 {
		return usageErr("more than one slot given")
	}
	target := def
	if len(rest) == 1 {
		target = rest[0]
	}
	if attempts != nil && *attempts < 0 {
		return usageErr("--attempts %d is negative", *attempts)
	}

	sys, _, err := openSystem(env, *configPath)
	if err != nil {
		return err
	}
	s, err := resolveSlotArg(ctx, sys, target)
	if err != nil {
		return err
	}

	switch verb {
	case "mark-good":
		err = sys.MarkGood(ctx, s)
	case "mark-bad":
		err = sys.MarkBad(ctx, s)
	default:
		err = sys.MarkActive(ctx, s, *attempts)
	}
	if err != nil {
		return err
	}
	root := s.Root()
	fmt.Fprintf(env.stdout, "%s (%s) marked %s\n", root.Name(), root.Bootname(),
		verb[len("mark-"):])
	return nil
}

// resolveSlotArg turns "booted", "other" or a slot name into a slot.
// "other" is the passive slot of the booted slot's group class, such as
// the rootfs slot that is not running.
func resolveSlotArg(ctx context.Context, sys *slot.System, arg string) (*slot.Slot, error) {
	switch arg {
	case targetBooted:
		return sys.Booted(ctx)
	case targetOther:
		booted, err := sys.Booted(ctx)
		if err != nil {
			return nil, err
		}
		return sys.Passive(ctx, booted.Root().Class())
	}
	s, err := sys.Slot(arg)
	if errors.Is(err, slot.ErrUnknownSlot) {
		return nil, usageErr("unknown slot %q", arg)
	}
	return s, err
}
