package slot

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// DefaultUBootAttempts is the number of boot tries UBoot gives a slot marked
// good or active without Mark.Attempts, when UBootOptions.Attempts is zero.
const DefaultUBootAttempts = 3

// maxUBootAttempts bounds tries to one decimal digit. The boot script
// decrements with setexpr, which reads and prints hexadecimal, while its
// test command reads decimal; the two agree only on 0 to 9.
const maxUBootAttempts = 9

// Variables of the U-Boot scheme, as read by docs/bootloaders/boot.cmd.
const (
	// ubootOrderVar lists bootnames by preference, separated by spaces.
	ubootOrderVar = "BOOT_ORDER"

	// ubootLeftPrefix and ubootLeftSuffix frame BOOT_<bootname>_LEFT: the
	// boot tries the slot has left, in decimal.
	ubootLeftPrefix = "BOOT_"
	ubootLeftSuffix = "_LEFT"
)

// UBootOptions configures a UBoot backend.
type UBootOptions struct {
	// Env says where the environment is stored. When it has no copies,
	// the fw_env.config file at FWEnvConfig is read instead.
	Env UBootEnvConfig

	// FWEnvConfig is the fw_env.config file read when Env is empty;
	// DefaultFWEnvConfigPath when "".
	FWEnvConfig string

	// Bootnames are the slots as named in BOOT_ORDER: 1 to 32 ASCII
	// letters, digits and underscores, not starting with a digit.
	Bootnames []string

	// Attempts is the number of boot tries a slot gets when marked good or
	// active with Mark.Attempts zero: 1 to 9; DefaultUBootAttempts when
	// zero.
	Attempts int
}

// UBoot is a Bootloader for U-Boot using a counting scheme kept in the
// U-Boot environment (read and written like fw_printenv and fw_setenv do)
// and run by the script in docs/bootloaders/boot.cmd:
//
//   - BOOT_ORDER lists bootnames by preference, separated by spaces;
//   - BOOT_<bootname>_LEFT is the number of boot tries the slot has left.
//
// At every boot the script picks the first slot in BOOT_ORDER whose _LEFT
// is above zero, decrements it, saves the environment and boots the slot.
// A value that is not a decimal number counts as zero. Every boot spends a
// try, so the agent marks the booted slot good after each boot, which
// gives it its tries back.
//
// Mark writes:
//
//   - MarkActive: the slot moves to the front of BOOT_ORDER, _LEFT becomes
//     Mark.Attempts (the configured Attempts when zero) and
//     ROTA_<bootname>_TRIAL=1;
//   - MarkGood: _LEFT becomes Mark.Attempts (the configured Attempts when
//     zero), the trial variable is removed;
//   - MarkBad: _LEFT becomes 0, the trial variable is removed.
//
// MarkGood and MarkBad keep BOOT_ORDER, appending the slot when missing.
// The script never reads ROTA_<bootname>_TRIAL; it lets State tell a slot
// on trial from a confirmed one. State reports:
//
//   - Bad (AttemptsLeft 0) when the script would skip the slot: _LEFT is
//     zero or not a number, or the slot is not in BOOT_ORDER;
//   - on trial (neither Good nor Bad, AttemptsLeft = _LEFT) when its
//     trial variable is set;
//   - Good (AttemptsLeft -1) otherwise.
//
// Each call reads the environment and each change writes it with
// WriteUBootEnv. Several UBoot values must not share one environment.
type UBoot struct {
	env       UBootEnvConfig
	bootnames []string
	attempts  int
	mu        sync.Mutex
}

// NewUBoot returns a UBoot backend configured by opts. It reads the
// fw_env.config file when opts.Env is empty, but not the environment.
func NewUBoot(opts UBootOptions) (*UBoot, error) {
	u := &UBoot{env: opts.Env, bootnames: slices.Clone(opts.Bootnames), attempts: opts.Attempts}
	if u.attempts == 0 {
		u.attempts = DefaultUBootAttempts
	}
	if u.attempts < 1 || u.attempts > maxUBootAttempts {
		return nil, fmt.Errorf("new u-boot backend: attempts %d outside 1..%d",
			opts.Attempts, maxUBootAttempts)
	}
	if err := checkEnvBootnames(opts.Bootnames); err != nil {
		return nil, fmt.Errorf("new u-boot backend: %w", err)
	}

	if len(u.env.Copies) == 0 {
		cfg, err := ReadFWEnvConfig(opts.FWEnvConfig)
		if err != nil {
			return nil, fmt.Errorf("new u-boot backend: %w", err)
		}
		u.env = cfg
	}
	if err := u.env.Validate(); err != nil {
		return nil, fmt.Errorf("new u-boot backend: %w", err)
	}
	return u, nil
}

// EnvConfig returns where the backend's environment is stored.
func (u *UBoot) EnvConfig() UBootEnvConfig {
	return UBootEnvConfig{Copies: slices.Clone(u.env.Copies)}
}

// Primary returns the slot the boot script will boot next, or "" when no
// slot has tries left. It may name a slot listed in BOOT_ORDER but unknown
// to u.
func (u *UBoot) Primary(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("primary slot: %w", err)
	}

	u.mu.Lock()
	defer u.mu.Unlock()

	env, err := ReadUBootEnv(u.env)
	if err != nil {
		return "", fmt.Errorf("primary slot: %w", err)
	}
	return ubootSelect(env), nil
}

// State returns what the environment records for bootname; see UBoot for
// the mapping.
func (u *UBoot) State(ctx context.Context, bootname string) (BootState, error) {
	if err := ctx.Err(); err != nil {
		return BootState{}, fmt.Errorf("state of %q: %w", bootname, err)
	}
	if !slices.Contains(u.bootnames, bootname) {
		return BootState{}, fmt.Errorf("state of %q: %w", bootname, ErrUnknownBootname)
	}

	u.mu.Lock()
	defer u.mu.Unlock()

	env, err := ReadUBootEnv(u.env)
	if err != nil {
		return BootState{}, fmt.Errorf("state of %q: %w", bootname, err)
	}

	left := ubootLeft(env, bootname)
	switch {
	case left == 0 || !slices.Contains(ubootOrder(env), bootname):
		return BootState{Bad: true}, nil
	case ubootVar(env, trialVar(bootname)) == "1":
		return BootState{AttemptsLeft: left}, nil
	default:
		return BootState{Good: true, AttemptsLeft: -1}, nil
	}
}

// Mark records m for bootname and writes the environment durably. An
// environment with no valid copy is an error (ErrCorruptEnv), never
// replaced.
func (u *UBoot) Mark(ctx context.Context, bootname string, m Mark) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
	}
	if !slices.Contains(u.bootnames, bootname) {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, ErrUnknownBootname)
	}

	u.mu.Lock()
	defer u.mu.Unlock()

	env, err := ReadUBootEnv(u.env)
	if err != nil {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
	}
	if err := u.apply(env, bootname, m); err != nil {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
	}
	if err := WriteUBootEnv(u.env, env); err != nil {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
	}
	return nil
}

// apply changes env's variables for a mark of bootname.
func (u *UBoot) apply(env *UBootEnv, bootname string, m Mark) error {
	if m.Attempts < 0 || m.Attempts > maxUBootAttempts {
		return fmt.Errorf("attempts %d outside 0..%d", m.Attempts, maxUBootAttempts)
	}
	order := ubootOrder(env)
	left, trial := u.attempts, false
	if m.Attempts > 0 {
		left = m.Attempts
	}
	switch m.Kind {
	case MarkActive:
		trial = true
		order = slices.DeleteFunc(order, func(n string) bool { return n == bootname })
		order = append([]string{bootname}, order...)
	case MarkGood:
	case MarkBad:
		left = 0
	default:
		return fmt.Errorf("unknown mark kind %d", int(m.Kind))
	}
	if !slices.Contains(order, bootname) {
		order = append(order, bootname)
	}

	env.Unset(trialVar(bootname))
	if trial {
		if err := env.Set(trialVar(bootname), "1"); err != nil {
			return err
		}
	}
	if err := env.Set(ubootOrderVar, strings.Join(order, " ")); err != nil {
		return err
	}
	return env.Set(ubootLeftVar(bootname), strconv.Itoa(left))
}

// SimulateBoot does what docs/bootloaders/boot.cmd does at power-on: it
// picks the first slot in BOOT_ORDER with tries left, decrements its
// BOOT_<bootname>_LEFT, saves the environment and returns the bootname.
// When no slot has tries left it changes nothing and returns "" with
// ErrNoBootableSlot.
func (u *UBoot) SimulateBoot(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("simulate u-boot boot: %w", err)
	}

	u.mu.Lock()
	defer u.mu.Unlock()

	env, err := ReadUBootEnv(u.env)
	if err != nil {
		return "", fmt.Errorf("simulate u-boot boot: %w", err)
	}
	name := ubootSelect(env)
	if name == "" {
		return "", fmt.Errorf("simulate u-boot boot: no slot in %s %q has tries left: %w",
			ubootOrderVar, ubootVar(env, ubootOrderVar), ErrNoBootableSlot)
	}

	if err := env.Set(ubootLeftVar(name), strconv.Itoa(ubootLeft(env, name)-1)); err != nil {
		return "", fmt.Errorf("simulate u-boot boot: %w", err)
	}
	if err := WriteUBootEnv(u.env, env); err != nil {
		return "", fmt.Errorf("simulate u-boot boot: %w", err)
	}
	return name, nil
}

// ubootSelect returns the first bootname in BOOT_ORDER with tries left, or
// "". Names the script could not handle are skipped.
func ubootSelect(env *UBootEnv) string {
	for _, name := range ubootOrder(env) {
		if envNamePattern(name) && ubootLeft(env, name) > 0 {
			return name
		}
	}
	return ""
}

// ubootLeft returns BOOT_<name>_LEFT, or 0 when it is unset, negative or
// not a decimal number, as the script's test treats it.
func ubootLeft(env *UBootEnv, name string) int {
	n, err := strconv.Atoi(ubootVar(env, ubootLeftVar(name)))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// ubootLeftVar names BOOT_<name>_LEFT.
func ubootLeftVar(name string) string {
	return ubootLeftPrefix + name + ubootLeftSuffix
}

// ubootOrder returns BOOT_ORDER split as the script's for loop splits it.
func ubootOrder(env *UBootEnv) []string {
	return strings.Fields(ubootVar(env, ubootOrderVar))
}

// ubootVar returns a variable's value, "" when unset.
func ubootVar(env *UBootEnv, name string) string {
	v, _ := env.Get(name)
	return v
}
